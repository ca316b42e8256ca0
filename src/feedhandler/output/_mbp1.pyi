"""mbp_update records -> DBN Mbp1Msg bytes (native; see _mbp1.pyx)."""
import numpy as np

MBP1_SIZE: int
RTYPE_MBP1: int

class Mbp1Converter:
    written: int
    skipped_implied: int
    unchanged: int
    rejected: int
    def __init__(self, max_instruments: int = 32768) -> None: ...
    @property
    def table_full(self) -> int: ...
    def book_counters(self) -> dict[str, int]: ...
    def convert(self, ticks: np.ndarray) -> np.ndarray: ...
    def bbo(self, instrument_id: int) -> tuple[int, int, int, int]: ...
