import numpy as np
import numpy.typing as npt

ACTIONS: str
SCHED_CROSS: int
SCHED_NOII: int

def simulate(
    seed: int, ts: npt.NDArray[np.uint64], inst_of: npt.NDArray[np.int32], fv0: npt.NDArray[np.int64],
    mix: npt.NDArray[np.float64], sched_ts: npt.NDArray[np.uint64], sched_kind: npt.NDArray[np.uint8],
    sched_inst: npt.NDArray[np.int32], sched_flag: npt.NDArray[np.uint8], first_ref: int, first_match: int,
    n_mpids: int, o_type: npt.NDArray[np.uint8], o_inst: npt.NDArray[np.int32], o_ts: npt.NDArray[np.uint64],
    o_ref: npt.NDArray[np.uint64], o_ref2: npt.NDArray[np.uint64], o_side: npt.NDArray[np.uint8],
    o_shares: npt.NDArray[np.uint32], o_price: npt.NDArray[np.uint32], o_match: npt.NDArray[np.uint64],
    o_aux: npt.NDArray[np.uint64], o_flag: npt.NDArray[np.uint8],
    near_share: float = ..., near_mean: float = ..., deep_mean: float = ..., max_ticks: int = ...,
) -> tuple[int, int, int, int]: ...
def bulk_times(seed: int, n: int, bounds: npt.NDArray[np.uint64], weights: npt.NDArray[np.float64],
               burst: float = ...) -> npt.NDArray[np.uint64]: ...
def pick_instruments(seed: int, n: int, cum_weights: npt.NDArray[np.float64],
                     ts: npt.NDArray[np.uint64] | None = ..., burst_gap_ns: int = ...,
                     stick: float = ...) -> npt.NDArray[np.int32]: ...
def scatter_rows(out: npt.NDArray[np.uint8], offsets: npt.NDArray[np.int64], rows: npt.NDArray[np.uint8]) -> None: ...
def pack_packets(starts: npt.NDArray[np.int64], times: npt.NDArray[np.uint64], max_payload: int,
                 max_span_ns: int) -> npt.NDArray[np.int64]: ...
def pcap_records(out: npt.NDArray[np.uint8], template: npt.NDArray[np.uint8], ip_off: int,
                 session: npt.NDArray[np.uint8], ts: npt.NDArray[np.int64], seq: npt.NDArray[np.uint64],
                 count: npt.NDArray[np.int32], body_a: npt.NDArray[np.int64], body_b: npt.NDArray[np.int64],
                 framed: npt.NDArray[np.uint8]) -> int: ...
