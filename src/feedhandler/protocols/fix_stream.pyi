"""FIX 4.2 / 4.4 over reassembled TCP -> ticks, order events, gap records (native; see fix_stream.pyx)."""
import os
from typing import Any

import numpy as np

from feedhandler.framing.tcp import TcpStream

BUILTIN_MD: dict[str, dict[str, int]]
KIND_TYPES: tuple[str, ...]

def group_tables(dictionary_dir: str | os.PathLike | None = None,
                 builtin: bool = False) -> tuple[dict[str, dict[str, tuple[set[int], int | None]]], str]: ...

SYNTH_REFERENCE: tuple[tuple[bytes, bytes, bytes], ...]
SYNTH_SECDEF: tuple[bytes, bytes, bytes]

class FixStreamDecoder:
    stats: dict[str, int]
    orders: dict[Any, list[Any]]
    groups_source: str
    reference: dict[str, dict[str, Any]]
    def __init__(self, dictionary_dir: str | os.PathLike | None = None, symbols: dict[str, int] | None = None,
                 builtin_groups: bool = False) -> None: ...
    def symbol_map(self) -> dict[str, int]: ...
    def msg_type_counts(self) -> dict[str, int]: ...
    def frame_stream(self, s: TcpStream) -> np.ndarray: ...
    def decode_pair(self, client: TcpStream | None, server: TcpStream | None, conn: int = 0,
                    out: Any = None) -> np.ndarray: ...
    def decode_live_rows(self, parts: list[Any], rows: np.ndarray, conn: int) -> np.ndarray: ...

HOLD_MESSAGES: int
TRIM_BYTES: int

class FixLiveDecoder:
    dec: FixStreamDecoder
    trim_bytes: int
    trimmed: int
    records: int
    def __init__(self, symbols: dict[str, int] | None = None,
                 dictionary_dir: str | os.PathLike | None = None) -> None: ...
    def feed_marks(self, reassembler: Any, marks: list[tuple[TcpStream, int, int]]) -> np.ndarray: ...
    def finish(self, reassembler: Any) -> tuple[np.ndarray, dict[str, Any]]: ...
    def snapshot(self, reassembler: Any) -> dict[str, Any]: ...

def replay_stream(path: str | os.PathLike, protocol: str = "fix", *, symbols: dict[str, int] | None = None,
                  dictionary_dir: str | os.PathLike | None = None, max_ooo_segments: int = 1024,
                  max_ooo_bytes: int = ...) -> tuple[np.ndarray, dict[str, Any]]: ...
def decode_streams(reassembler: Any, *, symbols: dict[str, int] | None = None,
                   dictionary_dir: str | os.PathLike | None = None) -> tuple[np.ndarray, dict[str, Any]]: ...
def synth_messages(n: int, seed: int = 0, begin: bytes = b"FIX.4.4", t0: int = ...,
                   reference_data: bool = False) -> list[tuple[int, str, bytes]]: ...
def synth(path: str | os.PathLike, n: int = 1000, seed: int = 0, *, begin: bytes = b"FIX.4.4", mss: int = 1460,
          t0: int = ..., reference_data: bool = False) -> list[tuple[int, str, bytes]]: ...
