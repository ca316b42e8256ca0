"""The tick record: numpy dtypes derived from the C header agree with C and with DBN's own layouts."""
import numpy as np
import pytest

from feedhandler import records
from feedhandler._records import record_layouts


def test_every_layout_fits_one_slot_and_is_fully_described():
    for name, rtype, size, dbn_length, fields in record_layouts():
        assert size <= records.TICK_DTYPE.itemsize == 64, name
        covered = np.zeros(size, dtype=int)
        for fname, offset, fsize, count, kind in fields:
            covered[offset : offset + fsize * count] += 1
        # only the MBO extension union (match_number / attribution) overlays itself
        overlaid = set(np.nonzero(covered > 1)[0])
        if name == "mbo":
            assert overlaid == set(range(56, 64))
        else:
            assert not overlaid, name
        assert (covered > 0).all(), f"{name}: bytes {np.nonzero(covered == 0)[0]} not described"


def test_rtypes_are_unique_and_header_is_dbn():
    seen = {}
    for name, rtype, *_ in record_layouts():
        assert rtype not in seen, (name, seen.get(rtype))
        seen[rtype] = name
    for name, dt in records.DTYPES.items():
        assert dt.itemsize == 64
        assert dt.fields["length"][1] == 0 and dt.fields["rtype"][1] == 1
        assert dt.fields["publisher_id"][1] == 2 and dt.fields["instrument_id"][1] == 4
        assert dt.fields["ts_event"][1] == 8


def _packed_offsets(dbn_dtypes):
    off, out = 0, {}
    for name, fmt in dbn_dtypes:
        dt = np.dtype(fmt)
        out[name] = (off, dt.itemsize, dt.kind)
        off += dt.itemsize
    return out, off


@pytest.mark.parametrize("ours, cls_name", [("mbo", "MBOMsg"), ("trade", "TradeMsg")])
def test_dbn_compatible_prefix_matches_databento(ours, cls_name):
    dbn = pytest.importorskip("databento_dbn")
    cls = getattr(dbn, cls_name)
    offsets, size = _packed_offsets(cls._dtypes)
    assert size == cls.size_hint == records.DBN_LENGTH[ours]
    dt = records.DTYPES[ours]
    for name, (off, itemsize, kind) in offsets.items():
        fdt, foff = dt.fields[name][:2]
        assert foff == off, name
        assert fdt.itemsize == itemsize, name
        assert fdt.kind == kind, name


def test_view_and_empty_are_zero_copy_and_aligned():
    t = records.empty(8)
    assert t.ctypes.data % 64 == 0
    m = records.view(t, "mbo")
    m["price"][3] = 123
    assert m.ctypes.data == t.ctypes.data
    assert records.view(t, "mbo")["price"][3] == 123
    assert int(t["raw"][3][24]) == 123  # little-endian low byte of price at offset 24


def test_concat_keeps_64_byte_records():
    a = records.empty(3)
    b = records.empty(2)
    records.view(a, "mbo")["order_id"] = [1, 2, 3]
    records.view(b, "mbo")["order_id"] = [4, 5]
    c = records.concat([a, b])
    assert c.dtype.itemsize == 64 and len(c) == 5
    assert list(records.view(c, "mbo")["order_id"]) == [1, 2, 3, 4, 5]
