"""Time: PTP (IEEE 1588 v2/v2.1) messages, an ordinary-clock slave that measures offset and path delay,
and PTP hardware clock (PHC) reads."""
from feedhandler.time.phc import phc_clock_id, phc_devices, read_phc
from feedhandler.time.ptp import PtpDecodeError, PtpMessage, decode

__all__ = ["PtpDecodeError", "PtpMessage", "decode", "phc_clock_id", "phc_devices", "read_phc"]
