"""Hypothesis fuzzing of the native ITCH 5.0 decoder: random bytes, valid messages with random
truncation or extension, and corrupt BinaryFILE buffers. The decoder must never crash, every input
message must be either decoded or counted under exactly one reject reason, and every decoded record
must equal the pure-Python reference."""
from __future__ import annotations

from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feedhandler.protocols import itch50_codec as codec
from feedhandler.protocols import itch50_spec as spec
from feedhandler.protocols.itch50 import Itch50Decoder, Itch50FramingError

ALL_TYPES = "SRHYLVWKJhAFECXDUPQBINO"
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check_against_reference(msgs, flags, cfg):
    """Decode natively; compare records and counters with what the reference says for each message."""
    dec = Itch50Decoder(**cfg)
    got = dec.decode_messages(msgs, ts_recv=77, first_sequence=1, flags=flags)
    want, reasons = [], Counter()
    per_type = {"unknown": Counter(), "bad_length": Counter()}
    decoded = Counter()
    for i, m in enumerate(msgs):
        try:
            want += codec.to_records(m, ts_recv=77, sequence=1 + i, msg_flags=flags, **cfg)
            decoded[chr(m[0])] += 1
        except codec.Itch50Error as e:
            reasons[e.reason] += 1
            if e.reason in per_type:
                per_type[e.reason][chr(m[0])] += 1
    want = codec.records_array(want)
    assert got.tobytes() == want.tobytes()
    c = dec.counters()
    assert c["decoded"] + c["unknown"] + c["bad_length"] + c["empty"] == len(msgs)
    assert c["messages"] == dict(decoded)
    assert (c["unknown"], c["bad_length"], c["empty"]) == (reasons["unknown"], reasons["bad_length"], reasons["empty"])
    assert c["unknown_by_type"] == dict(per_type["unknown"])
    assert c["bad_length_by_type"] == dict(per_type["bad_length"])
    assert c["records"] == len(got)
    return c


config = st.fixed_dictionaries({
    "midnight_ns": st.integers(0, 2**64 - 1),
    "publisher_id": st.integers(0, 2**16 - 1),
    "channel_id": st.integers(0, 255),
})


@SETTINGS
@given(st.lists(st.binary(min_size=0, max_size=60), max_size=40), st.integers(0, 7), config)
def test_random_bytes(msgs, flags, cfg):
    check_against_reference(msgs, flags, cfg)


@st.composite
def valid_then_mangled(draw):
    """A valid message of a random type (random field bytes), then cut, extended or left alone."""
    t = draw(st.sampled_from(ALL_TYPES))
    n = spec.LENGTH[t]
    body = draw(st.binary(min_size=n - 1, max_size=n - 1))
    m = t.encode() + body
    how = draw(st.sampled_from(["keep", "keep", "cut", "extend"]))
    if how == "cut":
        m = m[: draw(st.integers(0, n - 1))]
    elif how == "extend":
        m = m + draw(st.binary(min_size=1, max_size=20))
    return m


@SETTINGS
@given(st.lists(valid_then_mangled(), max_size=60), st.integers(0, 7), config)
def test_valid_messages_with_random_truncation(msgs, flags, cfg):
    c = check_against_reference(msgs, flags, cfg)
    assert c["unknown"] == 0  # every type byte was a real one (a cut to 0 bytes counts as empty)


@SETTINGS
@given(st.binary(max_size=400))
def test_random_binaryfile(buf):
    dec = Itch50Decoder()
    try:
        out = dec.decode_binaryfile(buf)
    except Itch50FramingError:
        try:
            list(codec.iter_binaryfile(buf))
        except ValueError:
            return
        raise AssertionError("native framing rejected a buffer the reference accepts")
    msgs = list(codec.iter_binaryfile(buf))
    c = dec.counters()
    assert c["decoded"] + c["unknown"] + c["bad_length"] + c["empty"] == len(msgs)
    assert out.tobytes() == Itch50Decoder().decode_messages(msgs).tobytes()


@SETTINGS
@given(st.lists(valid_then_mangled(), min_size=1, max_size=30), st.integers(2, 9))
def test_any_output_capacity_gives_the_same_records(msgs, out_cap):
    whole = Itch50Decoder().decode_messages(msgs)
    assert Itch50Decoder().decode_messages(msgs, out_cap=out_cap).tobytes() == whole.tobytes()
