"""numpy dtypes and Python names for the matching engine's records (derived from csrc/include/fh/order.h).

``REQ_DTYPE`` (64 bytes, ``fh_order_req``): one input. ``EXEC_DTYPE`` (80 bytes, ``fh_exec``): one event.
``ORDER_DTYPE`` (48 bytes, ``fh_order``): one resting order in a snapshot. Offsets come from the C
descriptor table (``engine.matching.order_layouts()``), never typed here.

The string <-> code tables below are the one place where the dict API's strings meet the C constants;
tests/test_matching_layout.py checks them against the header.
"""
from __future__ import annotations

import numpy as np

from engine.matching import REASONS, order_layouts
from feedhandler.records import dtype_from_fields

LAYOUTS = {name: (size, fields) for name, size, fields in order_layouts()}
REQ_DTYPE: np.dtype = dtype_from_fields(LAYOUTS["order_req"][1], LAYOUTS["order_req"][0])
EXEC_DTYPE: np.dtype = dtype_from_fields(LAYOUTS["exec"][1], LAYOUTS["exec"][0])
ORDER_DTYPE: np.dtype = dtype_from_fields(LAYOUTS["order"][1], LAYOUTS["order"][0])

# ---- codes (values of fh/order.h) ----------------------------------------------------------------
KIND = {"new": 1, "cancel": 2, "amend": 3, "eod": 4}
ORDER_TYPE = {"limit": 1, "market": 2}
TIF = {"day": 1, "gtc": 2, "ioc": 3, "fok": 4}
FLAG_POST_ONLY = 0x01
FLAG_REPRICE = 0x02
STP = {"none": 0, "cancel_newest": 1, "cancel_oldest": 2, "cancel_both": 3}
EXEC_TYPE = {"accepted": 1, "rejected": 2, "fill": 3, "canceled": 4, "replaced": 5, "expired": 6}
LIQUIDITY = {"": 0, "maker": 1, "taker": 2}
REASON = {name: code for code, name in enumerate(REASONS)}
MAX_QTY = 0x7FFFFFFF
UNDEF_PRICE = np.iinfo(np.int64).max

EXEC_TYPE_NAME = {v: k for k, v in EXEC_TYPE.items()}
LIQUIDITY_NAME = {v: k for k, v in LIQUIDITY.items()}
TIF_NAME = {v: k for k, v in TIF.items()}
KIND_NAME = {v: k for k, v in KIND.items()}


def empty_requests(n: int) -> np.ndarray:
    """A zeroed batch of n requests."""
    return np.zeros(n, dtype=REQ_DTYPE)
