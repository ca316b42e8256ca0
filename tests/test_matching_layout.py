"""The engine's numpy dtypes are derived from fh/order.h and cover every byte of each struct."""
from pathlib import Path

import numpy as np

from engine import orders
from engine.matching import REASONS, order_layouts

ROOT = Path(__file__).resolve().parents[1]


def test_layouts_cover_every_byte():
    for name, size, fields in order_layouts():
        covered = np.zeros(size, dtype=int)
        for _fname, off, fsize, count, _kind in fields:
            covered[off : off + fsize * count] += 1
        assert (covered == 1).all(), f"{name}: bytes not covered exactly once: {np.nonzero(covered != 1)[0]}"


def test_dtype_sizes():
    assert orders.REQ_DTYPE.itemsize == 64
    assert orders.EXEC_DTYPE.itemsize == 80
    assert orders.ORDER_DTYPE.itemsize == 48
    assert orders.REQ_DTYPE.fields["user_tag"][1] == 56
    assert orders.EXEC_DTYPE.fields["reason"][1] == 75


def _header_defines():
    header = ROOT / "csrc" / "include" / "fh" / "order.h"
    out = {}
    for line in open(header):
        parts = line.split()
        if len(parts) >= 3 and parts[0] == "#define" and parts[2][0].isdigit():
            out[parts[1]] = int(parts[2].rstrip("uUlL"), 0)
    return out


def test_code_tables_match_header():
    d = _header_defines()
    reasons = {k[5:].lower(): v for k, v in d.items() if k.startswith("FH_R_") and k != "FH_R_COUNT"}
    assert len(REASONS) == d["FH_R_COUNT"] == len(reasons)
    for name, code in reasons.items():
        assert REASONS[code] == ("" if name == "none" else name)
    assert orders.KIND == {k[7:].lower(): v for k, v in d.items() if k.startswith("FH_ORD_") and k not in ("FH_ORD_BUY", "FH_ORD_SELL")}
    assert orders.TIF == {k[7:].lower(): v for k, v in d.items() if k.startswith("FH_TIF_")}
    assert orders.ORDER_TYPE == {k[6:].lower(): v for k, v in d.items() if k.startswith("FH_OT_")}
    assert orders.EXEC_TYPE == {k[6:].lower(): v for k, v in d.items() if k.startswith("FH_EX_")}
    assert {k: v for k, v in orders.STP.items() if v} == {k[7:].lower(): v for k, v in d.items() if k.startswith("FH_STP_")}
    assert orders.FLAG_POST_ONLY == d["FH_OF_POST_ONLY"] and orders.FLAG_REPRICE == d["FH_OF_REPRICE"]
    assert orders.MAX_QTY == d["FH_MAX_QTY"]


def test_pxd_view_matches_header():
    """The Cython field lists in matching.pxd name exactly the non-padding fields of the C structs."""
    pxd = ROOT / "src" / "engine" / "matching.pxd"
    structs, cur = {}, None
    for line in open(pxd):
        s = line.strip()
        if line.startswith("    ctypedef struct "):
            cur = structs.setdefault(s.split()[2].rstrip(":"), [])
        elif cur is not None and line.startswith("        ") and s and not s.startswith("#"):
            cur.append(s.split()[-1].lstrip("*"))
        elif not line.startswith("        "):
            cur = None
    names = {"fh_order_req": "order_req", "fh_exec": "exec", "fh_order": "order"}
    layouts = {name: [f[0] for f in fields if f[4] != "V"] for name, _size, fields in order_layouts()}
    for cname, lname in names.items():
        assert structs[cname] == layouts[lname], cname
