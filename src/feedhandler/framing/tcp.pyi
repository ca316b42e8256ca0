"""TCP stream reassembly from captures (native; see tcp.pyx)."""
import os
from typing import Any

import numpy as np

TCP_FIN: int
TCP_SYN: int
TCP_RST: int
TCP_PSH: int
TCP_ACK: int
REASONS: tuple[str, ...]

class TcpStream:
    key: tuple[int, int, int, int]
    conn: int
    is_client: bool | None
    data: bytearray
    holes: list[tuple[int, int]]
    pending_bytes: int
    next_seq: int
    syn: bool
    fin: bool
    rst: bool
    first_ts: int
    packets: int
    retrans_segments: int
    retrans_bytes: int
    overlap_segments: int
    overlap_bytes: int
    overlap_conflicts: int
    ooo_segments: int
    hole_bytes: int
    after_fin_bytes: int
    @property
    def src(self) -> tuple[int, int]: ...
    @property
    def dst(self) -> tuple[int, int]: ...
    def ts_at(self, offsets: Any) -> np.ndarray: ...
    def pieces(self) -> list[tuple[int, int]]: ...
    def stats(self) -> dict[str, Any]: ...

class Reassembler:
    max_ooo_segments: int
    max_ooo_bytes: int
    streams: list[TcpStream]
    frames: int
    def __init__(self, max_ooo_segments: int = 1024, max_ooo_bytes: int = ...) -> None: ...
    def feed(self, ts_ns: int, frame: bytes | bytearray | memoryview, linktype: int = 1) -> None: ...
    def feed_file(self, path: str | os.PathLike) -> Reassembler: ...
    def finish(self) -> list[TcpStream]: ...
    @property
    def stats(self) -> dict[str, Any]: ...

def reassemble_file(path: str | os.PathLike, **kw: Any) -> tuple[list[TcpStream], dict[str, Any]]: ...
def pair_streams(streams: list[TcpStream]) -> list[tuple[TcpStream | None, TcpStream | None]]: ...
def build_tcp_frame(payload: bytes, src: str = ..., dst: str = ..., sport: int = ..., dport: int = ..., seq: int = 0,
                    ack: int = 0, flags: int = ..., *, window: int = 65535, ident: int = 0) -> bytes: ...

class TcpConversation:
    frames: list[tuple[int, bytes]]
    mss: int
    def __init__(self, client: tuple[str, int] = ..., server: tuple[str, int] = ..., isn_c: int = 1000,
                 isn_s: int = 500000, mss: int = 1460) -> None: ...
    def handshake(self, ts: int) -> None: ...
    def send(self, ts: int, side: str, data: bytes) -> None: ...
    def close(self, ts: int) -> None: ...

class TcpSessionFramer:
    failure: BaseException | None
    reassembler: Reassembler
    def __init__(self, decode: Any, *, max_ooo_segments: int = 1024, max_ooo_bytes: int = ...) -> None: ...
    @property
    def decoded(self) -> bool: ...
    @property
    def result(self) -> dict[str, Any] | None: ...
    def stats(self) -> dict[str, Any]: ...
    def sessions(self) -> list[str]: ...
