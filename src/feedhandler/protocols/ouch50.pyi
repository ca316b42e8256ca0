"""OUCH 5.0 TagValue appendages decoded natively per batch (see ouch50.pyx)."""
from typing import Any

import numpy as np

OK: int
NO_APPENDAGES: int
BAD_BLOCK: int
APPENDAGE_DTYPE: np.dtype

def parse(buf: Any, offsets: np.ndarray, lengths: np.ndarray, from_server: np.ndarray) -> np.ndarray: ...
def parse_one(msg: bytes, from_server: bool) -> dict[str, Any]: ...
