"""FIX FileStore after a crash between its two writes (issue 10, durability): ``save`` appends the message
to the log, then rewrites the sequence file. A SIGKILL between the two left the sequence file one behind,
so the restarted session gave the next message the MsgSeqNum of a stored one: the stored message vanished
from resends (last record of a number wins) and the order application counted its report a second time
after the next restart (test_fixouch_durability's "journal and reports differ ... CumQty 20 != 10")."""
from __future__ import annotations

from engine.fix.store import FileStore


def _crash_after_log(st: FileStore, seq: int, raw: bytes) -> None:
    """What a SIGKILL between the log write and the sequence file write leaves on disk."""
    st.save(seq, raw)                     # the log has it; set_seqnums never ran
    st._seq_f.close()
    st._body_f.close()


def test_sender_number_not_reused_after_crash_between_log_and_seqnums(tmp_path):
    st = FileStore(tmp_path, "S")
    for seq in (1, 2, 3):
        st.save(seq, b"m%d" % seq)
        st.set_seqnums(seq + 1, 7)
    _crash_after_log(st, 4, b"report-4")
    st = FileStore(tmp_path, "S")
    assert st.get(4, 4) == [(4, b"report-4")]
    assert st.next_sender == 5, "the next message would overwrite stored message 4"
    assert st.next_target == 7
    st.save(st.next_sender, b"m5")
    st.close()
    st = FileStore(tmp_path, "S")
    assert [s for s, _ in st.get(1, 0x7FFFFFFF)] == [1, 2, 3, 4, 5]
    assert st.get(4, 4) == [(4, b"report-4")]
    st.close()


def test_crash_after_reset_record_restarts_at_one(tmp_path):
    st = FileStore(tmp_path, "S")
    for seq in (1, 2):
        st.save(seq, b"m%d" % seq)
        st.set_seqnums(seq + 1, 3)
    # a reset (ResetOnLogon): the reset record is written, the crash comes before the numbers
    st._body_f.write(b"0 0\n\n")
    st._body_f.flush()
    st._seq_f.close()
    st._body_f.close()
    st = FileStore(tmp_path, "S")
    assert st.next_sender == 1 and st.get(1, 0x7FFFFFFF) == []
    assert st.history() == [b"m1", b"m2"]
    st.close()


def test_clean_store_numbers_unchanged(tmp_path):
    st = FileStore(tmp_path, "S")
    st.save(1, b"a")
    st.set_seqnums(2, 1)
    st.set_seqnums(2, 9)       # received messages move only the target number
    st.close()
    st = FileStore(tmp_path, "S")
    assert (st.next_sender, st.next_target) == (2, 9)
    st.close()


def _torn(path, tail: bytes) -> None:
    with open(path, "ab") as f:
        f.write(tail)


import pytest  # noqa: E402


@pytest.mark.parametrize("tail", [b"4 200\n8=FIX.4.4|torn", b"4 2", b"4 5\nabcde", b"\x00" * 4096])
def test_messages_stored_after_a_torn_record_survive_the_next_restart(tmp_path, tail):
    """A crash in the middle of ``save`` leaves a cut record at the end of the log. It was kept, and the
    records the restarted session appended after it were read as its rest at the next restart: every
    message sent after the crash vanished from resends. The cut record is now cut off at load."""
    st = FileStore(tmp_path, "S")
    for seq in (1, 2, 3):
        st.save(seq, b"m%d|" % seq * 5)
        st.set_seqnums(seq + 1, 1)
    st.close()
    _torn(st.body_path, tail)
    st = FileStore(tmp_path, "S")
    assert [s for s, _ in st.get(1, 100)] == [1, 2, 3] and st.next_sender == 4
    for seq in (4, 5, 6):
        st.save(seq, b"report-%d|" % seq * 3)
        st.set_seqnums(seq + 1, 1)
    st.close()
    st = FileStore(tmp_path, "S")
    assert st.get(1, 100) == [(s, b"m%d|" % s * 5) for s in (1, 2, 3)] + \
        [(s, b"report-%d|" % s * 3) for s in (4, 5, 6)]
    assert st.next_sender == 7
    st.close()


@pytest.mark.parametrize("tail", [b"\x00", b"\x00\x30abc", b"\x00\x00" * 100])
def test_ouch_stream_after_a_torn_message_keeps_later_sequence_numbers(tmp_path, tail):
    """The OUCH acceptor's sequenced-message log (SoupBinTCP numbers are positions in it): a message cut by
    a crash shifted every message appended after the restart, at the next restart."""
    from engine.ouch.acceptor import SoupStream

    path = tmp_path / "u.soup"
    s = SoupStream("S", path)
    for i in range(3):
        s.append(b"A" + bytes([i]) * 40)
    s.close()
    _torn(path, tail)
    s = SoupStream("S", path)
    assert s.next_seq == 4
    for i in range(3, 6):
        s.append(b"E" + bytes([i]) * 30)
    s.close()
    s = SoupStream("S", path)
    assert s.msgs == [b"A" + bytes([i]) * 40 for i in range(3)] + [b"E" + bytes([i]) * 30 for i in range(3, 6)]
    s.close()
