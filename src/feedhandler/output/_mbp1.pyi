"""mbp_update records -> DBN Mbp1Msg bytes (native; see _mbp1.pyx)."""
import numpy as np

MBP1_SIZE: int
RTYPE_MBP1: int

class Mbp1Converter:
    table_full: int
    bad_level: int
    written: int
    skipped_implied: int
    unchanged: int
    def __init__(self) -> None: ...
    def convert(self, ticks: np.ndarray) -> np.ndarray: ...
    def bbo(self, instrument_id: int) -> tuple[int, int, int, int]: ...
