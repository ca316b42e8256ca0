"""Type stubs for feedhandler.protocols.itch50 (native ITCH 5.0 decoder)."""
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["Itch50Decoder", "Itch50FramingError", "MAX_RECORDS_PER_MSG"]

MAX_RECORDS_PER_MSG: int

class Itch50FramingError(ValueError): ...

class Itch50Decoder:
    def __init__(self, midnight_ns: int = 0, publisher_id: int = 0, channel_id: int = 0) -> None: ...
    midnight_ns: int
    @property
    def publisher_id(self) -> int: ...
    @property
    def channel_id(self) -> int: ...
    @property
    def last_calls(self) -> int: ...
    def counters(self) -> dict[str, Any]: ...
    def reset_counters(self) -> None: ...
    def decode_messages(
        self,
        messages: Sequence[bytes | bytearray | memoryview],
        ts_recv: int | Sequence[int] = 0,
        first_sequence: int = 1,
        flags: int | Sequence[int] = 0,
        channel: int = 0,
        out_cap: int | None = None,
    ) -> np.ndarray: ...
    def decode_binaryfile(
        self,
        data: bytes | bytearray | memoryview,
        ts_recv: int = 0,
        first_sequence: int = 1,
        flags: int = 0,
        channel: int = 0,
    ) -> np.ndarray: ...
    def bench_decode(
        self, data: bytes | bytearray | memoryview, repeats: int = 1, batch: int = 1024
    ) -> tuple[int, int, float]: ...

def _native_constants() -> dict[str, int]: ...
def _native_lengths() -> dict[str, int]: ...
