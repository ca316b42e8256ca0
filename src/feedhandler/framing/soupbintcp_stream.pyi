"""SoupBinTCP framing over reassembled TCP streams with session sequence tracking (native; see .pyx)."""
from typing import Any

import numpy as np

from feedhandler.framing.tcp import TcpStream

OK: int
BAD_TYPE: int
BAD_LENGTH: int
TRUNCATED: int
REASONS: tuple[str, ...]
RESYNC_CHAIN: int
MSG_DTYPE: np.dtype
F_DUP: int
F_AFTER_GAP: int
F_NO_LOGIN: int

def split(buf: bytes | bytearray | memoryview, start: int, end: int, from_server: bool,
          resync_first: bool = False, final: bool = True) -> tuple[np.ndarray, int]: ...
def packet_status(buf: bytes | bytearray | memoryview, i: int, end: int, from_server: bool) -> int: ...

class SoupSessions:
    streams: list[TcpStream]
    counters: dict[str, int]
    sessions: dict[str, dict[str, Any]]
    logins: list[tuple[int, str | None, int | None, str | None, int]]
    def add_pair(self, client: TcpStream | None, server: TcpStream | None) -> np.ndarray: ...
    def messages(self) -> np.ndarray: ...
    def payload(self, row: Any) -> bytes: ...
