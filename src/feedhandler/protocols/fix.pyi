"""FIX tag=value framing and field splitting (native; see fix.pyx)."""
import numpy as np

OK: int
INCOMPLETE: int
GARBLED: int
BAD_BODY_LENGTH: int
BAD_CHECKSUM: int
STATUS_NAMES: tuple[str, ...]

def frame(buf: bytes | bytearray | memoryview, start: int = 0) -> tuple[int, int, int]:
    """(status, msg_start, msg_end) of the first message at or after ``start``."""
def split(buf: bytes | bytearray | memoryview, out: np.ndarray) -> tuple[int, int]:
    """Frame every complete message; rows (status, start, end) into ``out`` (int64, (m, 3)); (n_rows, consumed)."""
def fields(buf: bytes | bytearray | memoryview, start: int, end: int, out: np.ndarray) -> int:
    """Rows (tag, value_start, value_end) into ``out`` (int32, (m, 3)); count, or -(k+1) if field k is malformed."""
def checksum(buf: bytes | bytearray | memoryview) -> int: ...
def parse(buf: bytes | bytearray | memoryview) -> tuple[int, list[tuple[int, bytes]]]: ...
