"""feedhandler.scapy: layers generated from the project's field tables, read the shipped captures
and agree field by field with the project's own decoders (itch50_codec, native records, ouch42 /
ouch50_spec, the native TCP reassembly + SoupBinTCP framer); crafting gives the encoders' bytes."""
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("scapy", reason="scapy is not installed (pip install 'feedhandler[scapy]')")

from scapy.all import IP, TCP, UDP, Ether, raw, rdpcap  # noqa: E402

from feedhandler import records  # noqa: E402
from feedhandler import scapy as fs  # noqa: E402
from feedhandler.capture.pcapwriter import build_moldudp64  # noqa: E402
from feedhandler.protocols import itch50_codec, itch50_spec, ouch42, ouch50_spec, soupbintcp  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PCAPS = ROOT / "pcaps"
DATA = ROOT.parent / "shared" / "data"


def _assert_itch_equal(layer, data: bytes):
    """Every field of the scapy layer equals the reference decoder's value for the same bytes."""
    ref = itch50_codec.decode(data)
    spec = itch50_spec.BY_TYPE[ref["message_type"]]
    assert type(layer) is fs.ITCH_LAYERS[spec.type.encode()]
    assert [f.name for f in layer.fields_desc] == [f.name for f in spec.fields]
    for f in spec.fields:
        got = getattr(layer, f.name)
        want = ref[f.name].encode() if f.name == "message_type" else ref[f.name]
        assert got == want, (spec.name, f.name, got, want)
    assert raw(layer) == data


# ---- the layers are the tables ------------------------------------------------------------------------
def test_every_itch_message_has_a_layer_built_from_the_table():
    assert set(fs.ITCH_LAYERS) == {m.type.encode() for m in itch50_spec.MESSAGES}
    rng = random.Random(14)
    for m in itch50_spec.MESSAGES:
        cls = fs.ITCH_LAYERS[m.type.encode()]
        assert cls.__name__ == "Itch" + "".join(p.capitalize() for p in m.name.split("_"))
        assert getattr(fs, cls.__name__) is cls
        assert len(raw(cls())) == m.length == itch50_spec.SPEC_LENGTHS[m.type]
        for _ in range(20):
            data = itch50_codec.random_message(m.type, rng)
            layer = fs.ItchMessage(data)  # dispatches on the type byte
            _assert_itch_equal(layer, data)


def test_import_names_from_the_issue():
    from feedhandler.scapy import ItchAddOrder, MoldUDP64, Ouch42EnterOrder, Ouch50OrderAccepted, SoupBinTCP
    assert ItchAddOrder.wire_length == 36
    for cls in (MoldUDP64, SoupBinTCP, Ouch42EnterOrder, Ouch50OrderAccepted):
        assert getattr(fs, cls.__name__) is cls and cls.__name__ in fs.__all__


def test_every_ouch_message_has_a_layer_built_from_the_tables():
    for spec, layers, prefix in ((ouch42, fs.OUCH42_LAYERS, "Ouch42"), (ouch50_spec, fs.OUCH50_LAYERS, "Ouch50")):
        assert set(layers) == set(spec.TABLE)
        for key, (name, fields) in spec.TABLE.items():
            cls = layers[key]
            assert cls.__name__ == prefix + "".join(p.capitalize() for p in name.split("_"))
            assert len(raw(cls())) == spec.SPEC_SIZES[name]
            want = ["message_type"] + [f for f, k, _ in fields if k != "a"]
            if fields and fields[-1][1] == "a":
                want += ["appendage_length", "appendages"]
            assert [f.name for f in cls.fields_desc] == want


def test_soupbintcp_login_layouts_match_the_encoders():
    pkt = fs.SoupBinTCP(soupbintcp.login_request("trader", "secret", "SESS1", 42))
    body = pkt.payload_msg
    assert isinstance(body, fs.SoupLoginRequest)
    assert (body.username.strip(), body.password.strip(), body.requested_session.strip(),
            body.requested_sequence) == (b"trader", b"secret", b"SESS1", 42)
    assert soupbintcp.parse_login_request(raw(body)) == ("trader", "secret", "SESS1", 42)
    acc = fs.SoupBinTCP(soupbintcp.login_accepted("SESS1", 1001))
    assert (acc.payload_msg.session.strip(), acc.payload_msg.sequence) == (b"SESS1", 1001)
    crafted = fs.SoupBinTCP(packet_type="A", payload_msg=fs.SoupLoginAccepted(session="SESS1", sequence=1001))
    assert raw(crafted) == soupbintcp.login_accepted("SESS1", 1001)
    rej = fs.SoupBinTCP(soupbintcp.login_rejected(soupbintcp.REJECT_NOT_AUTHORIZED))
    assert rej.payload_msg.reject_reason_code == b"A"


# ---- crafting gives the project's encoders' bytes ------------------------------------------------------
def test_craft_itch_and_moldudp64_equal_the_encoders():
    a = fs.ItchAddOrder(stock_locate=3, timestamp=34_200_000_000_123, order_reference_number=77,
                        buy_sell_indicator="B", shares=100, stock="AAPL", price=1_890_000)
    enc = itch50_codec.encode("A", stock_locate=3, timestamp=34_200_000_000_123, order_reference_number=77,
                              buy_sell_indicator="B", shares=100, stock="AAPL", price=1_890_000)
    assert raw(a) == enc
    d = fs.ItchOrderDelete(order_reference_number=77)
    mold = fs.MoldUDP64(session="000010059B", sequence=9, messages=[a, d])
    assert raw(mold) == build_moldudp64(b"000010059B", 9, [enc, raw(d)])
    back = fs.MoldUDP64(raw(mold))
    assert back.count == 2 and [type(m) for m in back.messages] == [fs.ItchAddOrder, fs.ItchOrderDelete]
    assert back.messages[0].stock == b"AAPL    " and back.messages[0].price == 1_890_000
    assert "189.0000" in a.show(dump=True)  # prices print with their implied decimals
    assert "MoldUDP64 b'000010059B' seq=9 count=2" in mold.summary()
    # heartbeat and end of session: no messages, whatever follows
    assert fs.MoldUDP64(build_moldudp64(b"S", 5, [], count=0)).messages == []
    assert fs.MoldUDP64(build_moldudp64(b"S", 5, [], count=0xFFFF)).messages == []


def test_craft_ouch_equals_the_encoders():
    m42 = fs.Ouch42EnterOrder(order_token="TOK1", side="B", shares=100, stock="AAPL", price=1_890_000,
                              time_in_force=99998, firm="FIRM", display="Y", capacity="A",
                              intermarket_sweep="N", cross_type="N", customer_type="R")
    assert raw(m42) == ouch42.encode("enter_order", order_token="TOK1", side="B", shares=100, stock="AAPL",
                                     price=1_890_000, time_in_force=99998, firm="FIRM", display="Y",
                                     capacity="A", intermarket_sweep="N", cross_type="N", customer_type="R")
    apps = [("firm", "ABCD"), ("min_qty", 300), ("discretion_price", -1234500)]
    m50 = fs.Ouch50EnterOrder(user_ref_num=5, side="S", quantity=10, symbol="MSFT", price=-1234500,
                              appendages=[fs.Ouch50Appendage(tag=2, value=b"ABCD"),
                                          fs.Ouch50Appendage(tag=3, value=(300).to_bytes(4, "big")),
                                          fs.Ouch50Appendage(tag=9, value=(-1234500).to_bytes(8, "big", signed=True))])
    enc = ouch50_spec.encode("enter_order", appendages=apps, user_ref_num=5, side="S", quantity=10,
                             symbol="MSFT", price=-1234500)
    assert raw(m50) == enc
    back = fs.ouch_layer(enc, "in")
    assert dict(a.decoded() for a in back.appendages) == {"firm": b"ABCD", "min_qty": 300, "discretion_price": -1234500}
    soup = fs.SoupBinTCP(packet_type="U", payload_msg=m50)
    assert raw(soup) == soupbintcp.unsequenced(enc)


# ---- the shipped ITCH sample, every message ----------------------------------------------------------------
@pytest.fixture(scope="module")
def itch_sample():
    path = PCAPS / "itch50_sample.pcap"
    if not path.exists():
        pytest.skip(f"{path} is absent (pcaps/make_samples.sh writes it)")
    return rdpcap(str(path))


def test_itch_sample_every_message_matches_the_reference_decoder(itch_sample):
    n = 0
    blocks = []
    for pkt in itch_sample:
        assert UDP in pkt and pkt[UDP].dport in fs.MOLD_PORTS
        mold = pkt[fs.MoldUDP64]
        # the raw blocks, cut with the project's own definition of the framing
        payload = raw(pkt[UDP].payload)[:pkt[UDP].len - 8]
        assert raw(mold) == payload
        pos, count = 20, mold.count
        for _ in range(0 if count == 0xFFFF else count):
            ln = int.from_bytes(payload[pos:pos + 2], "big")
            blocks.append(payload[pos + 2:pos + 2 + ln])
            pos += 2 + ln
        assert pos == len(payload)
        for m in mold.messages:
            _assert_itch_equal(m, blocks[n])
            n += 1
    assert n == len(blocks) == 20000
    # and the same messages, in the same order, as the BinaryFILE twin of the sample
    bf = PCAPS / "itch50_sample.bin.gz"
    if bf.exists():
        import gzip
        assert list(itch50_codec.iter_binaryfile(gzip.decompress(bf.read_bytes()))) == blocks


def test_itch_sample_matches_the_native_records(itch_sample):
    """Adds seen through scapy (A, F, and the new order of U) == the MBO add records of the native
    pipeline (ids, prices in 1e-9, sizes, sides, event times) in the same order."""
    from feedhandler.pipeline import Feed

    feed = Feed(str(PCAPS / "itch50_sample.pcap"))
    ticks = feed.read_all()
    mbo = records.view(ticks[ticks["rtype"] == records.RTYPE["mbo"]], "mbo")
    adds = mbo[mbo["action"] == b"A"]
    side_of, want = {}, []
    for _, m in fs.itch_messages(itch_sample):
        if isinstance(m, (fs.ItchAddOrder, fs.ItchAddOrderMpid)):
            side = itch50_codec._add_side(m.buy_sell_indicator)  # ITCH B/S -> book side B/A
            side_of[m.order_reference_number] = side
            want.append((m.order_reference_number, m.price * 100_000, m.shares, side, m.timestamp))
        elif isinstance(m, fs.ItchOrderReplace):
            # the decoder leaves the side of a replacement to the book, which knows the original order
            side_of[m.new_order_reference_number] = side_of.pop(m.original_order_reference_number)
            want.append((m.new_order_reference_number, m.price * 100_000, m.shares, b"N", m.timestamp))
    assert len(want) == len(adds) > 8000
    got = list(zip(adds["order_id"].tolist(), adds["price"].tolist(), adds["size"].tolist(),
                   adds["side"].tolist(), (adds["ts_event"] - feed.midnight_ns).tolist()))
    assert got == want
    deletes = mbo[mbo["action"] == b"C"]  # DBN: a delete is a cancel of the whole order
    mine_d = [m.order_reference_number for _, m in fs.itch_messages(itch_sample) if isinstance(m, fs.ItchOrderDelete)]
    assert set(mine_d) <= set(deletes["order_id"].tolist())


# ---- the shipped OUCH samples, every message ----------------------------------------------------------------
def _soup_layers(path):
    for pkt, soup in fs.soup_messages(rdpcap(str(path))):
        yield pkt, soup


@pytest.mark.parametrize("name,spec", [("ouch42_sample.pcap", ouch42), ("ouch50_sample.pcap", ouch50_spec)])
def test_ouch_sample_every_message_matches_the_decoders(name, spec):
    from feedhandler.framing.soupbintcp_stream import SoupSessions
    from feedhandler.framing.tcp import Reassembler, pair_streams

    path = PCAPS / name
    if not path.exists():
        pytest.skip(f"{path} is absent (pcaps/make_samples.sh writes it)")
    # the project's framing: native TCP reassembly + SoupBinTCP framer
    r = Reassembler()
    r.feed_file(str(path))
    sess = SoupSessions()
    for c, s in pair_streams(r.finish()):
        sess.add_pair(c, s)
    native = [("out" if row["from_server"] else "in", sess.payload(row))
              for row in sess.messages() if row["ptype"] in (b"S", b"U")]
    n = 0
    mine = []
    for pkt, soup in _soup_layers(path):
        d = fs._direction(soup.packet_type)
        if d is None:
            continue
        body = raw(soup)[3:]
        mine.append((d, body))
        layer = soup.payload_msg
        assert layer.ouch_version == ("4.2" if spec is ouch42 else "5.0")
        assert layer.ouch_direction == d
        ref_name, ref = spec.decode(body, d)
        assert layer.spec_name == ref_name
        for f, kind, _ in spec.LAYOUTS[(d, body[:1])].fields:
            if kind == "a":
                assert dict(a.decoded() for a in layer.appendages) == ref["appendages"]
                continue
            got = getattr(layer, f)
            assert (got.rstrip(b" ") if kind == "s" else got) == ref[f], (ref_name, f)
        assert raw(layer) == body
        n += 1
    assert n > 250
    assert native == mine  # same messages, directions and order as the native framing


def test_ouch_sample_segments_dissect_without_reassembly():
    """rdpcap alone: in the samples each TCP segment holds whole SoupBinTCP packets."""
    path = PCAPS / "ouch50_sample.pcap"
    if not path.exists():
        pytest.skip(f"{path} is absent")
    pkts = rdpcap(str(path))
    accepted = [p[fs.Ouch50OrderAccepted] for p in pkts if fs.Ouch50OrderAccepted in p]
    assert len(accepted) > 20
    assert all(p.symbol.strip() and p.price > 0 for p in accepted)


# ---- the real NASDAQ captures (reference data, when present) -------------------------------------------------
def test_real_itch_captures():
    d = DATA / "itch50"
    if not d.is_dir():
        pytest.skip(f"{d} (real ITCH 5.0 captures) is absent")
    n = 0
    for f in sorted(d.glob("*.pcap")):
        for pkt in rdpcap(str(f)):
            mold = pkt[fs.MoldUDP64]
            assert mold.session == b"000010059B"
            payload = raw(mold)
            pos = 20
            for m in mold.messages:
                ln = int.from_bytes(payload[pos:pos + 2], "big")
                _assert_itch_equal(m, payload[pos + 2:pos + 2 + ln])
                pos += 2 + ln
                n += 1
    assert n == 7 + 39


def test_real_ouch50_captures():
    d = DATA / "ouch50"
    if not d.is_dir():
        pytest.skip(f"{d} (real OUCH 5.0 captures) is absent")
    seen = {}
    assert 8003 not in fs.SOUP_PORTS  # common ports are not bound by default
    fs.bind_soupbintcp(8001, protocol="ouch50")
    fs.bind_soupbintcp(8003, protocol="ouch50")
    try:
        pkts = {f: rdpcap(str(f)) for f in sorted(d.glob("*.pcap"))}
    finally:
        fs.unbind_soupbintcp(8001)
        fs.unbind_soupbintcp(8003)
    for f, ps in pkts.items():
        for pkt in ps:
            soup = pkt[fs.SoupBinTCP]
            seen[f.stem] = soup
            dirn = fs._direction(soup.packet_type)
            if dirn:
                name, ref = ouch50_spec.decode(raw(soup)[3:3 + soup.length - 1], dirn)
                assert soup.payload_msg.spec_name == name
    acc = seen["OrderAcceptedMessage"].payload_msg
    assert isinstance(acc, fs.Ouch50OrderAccepted)
    assert (acc.symbol, acc.price, acc.quantity) == (b"ADBE    ", 4_777_800, 40)
    assert dict(a.decoded() for a in acc.appendages) == {"firm": b"MLRO", "bbo_weight_indicator": b"0"}
    assert seen["ServerHeartbeatPacket"].packet_type == b"H"
    assert isinstance(seen["EnterOrderMessage"].payload_msg, fs.Ouch50EnterOrder)


# ---- binding and malformed input stays visible -----------------------------------------------------------------
def test_bind_other_ports():
    payload = build_moldudp64(b"S", 1, [itch50_codec.encode("D", order_reference_number=5)])
    frame = raw(Ether() / IP() / UDP(sport=1, dport=31337) / payload)
    assert fs.MoldUDP64 not in Ether(frame)
    fs.bind_moldudp64(31337)
    try:
        assert Ether(frame)[fs.ItchOrderDelete].order_reference_number == 5
    finally:
        fs.unbind_moldudp64(31337)
    assert fs.MoldUDP64 not in Ether(frame)
    enc = soupbintcp.sequenced(ouch42.encode("system_event", timestamp=5, event_code="S"))
    fs.bind_soupbintcp(31338, protocol="ouch42")
    try:
        p = Ether(raw(Ether() / IP() / TCP(sport=31338, dport=40000) / enc))
        assert isinstance(p[fs.SoupBinTCP].payload_msg, fs.Ouch42SystemEvent)
    finally:
        fs.unbind_soupbintcp(31338)
    assert 31338 not in fs.SOUP_PORTS
    with pytest.raises(ValueError, match="protocol must be one of ouch, ouch42, ouch50, itch50"):
        fs.bind_soupbintcp(1, protocol="ouch41")
    # TotalView-ITCH over SoupBinTCP: sequenced packets hold ITCH messages
    add = itch50_codec.encode("A", order_reference_number=7, stock="MSFT", price=4_000_000)
    fs.bind_soupbintcp(31339, protocol="itch50")
    try:
        seg = raw(Ether() / IP() / TCP(sport=31339, dport=40000) / (soupbintcp.sequenced(add) + soupbintcp.packet(b"H")))
        p = Ether(seg)
        _assert_itch_equal(p[fs.ItchAddOrder], add)
        assert p[fs.SoupBinTCP:2].packet_type == b"H"
    finally:
        fs.unbind_soupbintcp(31339)


def test_malformed_input_dissects_without_raising():
    add = itch50_codec.encode("A", order_reference_number=1, stock="AAPL")
    # a truncated message stays an ItchMessage holding the bytes
    m = fs.MoldUDP64(build_moldudp64(b"S", 1, [add[:20]]))
    assert type(m.messages[0]) is fs.ItchMessage and m.messages[0].message_type == b"A"
    # unknown type
    m = fs.MoldUDP64(build_moldudp64(b"S", 1, [b"z0123456789"]))
    assert type(m.messages[0]) is fs.ItchMessage and m.messages[0].data == b"0123456789"
    # count larger than the blocks present: the list stops, nothing invented
    m = fs.MoldUDP64(build_moldudp64(b"S", 1, [add], count=3))
    assert len(m.messages) == 1 and m.count == 3
    # a block whose length runs past the datagram: left as raw bytes after the header
    bad = build_moldudp64(b"S", 1, [add])[:-5]
    m = fs.MoldUDP64(bad)
    assert m.messages == [] and raw(m.payload) == bad[20:]
    # OUCH: unknown type and short message
    assert type(fs.ouch_layer(b"~abc", "out")) is fs.Ouch50Message
    assert type(fs.ouch_layer(ouch42.encode("executed")[:-3], "out", "4.2")) is fs.Ouch42Message


def test_import_error_names_the_extra():
    code = ("import sys\n"
            "class Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'scapy' or name.startswith('scapy.'):\n"
            "            raise ImportError('No module named ' + repr(name))\n"
            "sys.meta_path.insert(0, Block())\n"
            "try:\n"
            "    import feedhandler.scapy\n"
            "except ImportError as e:\n"
            "    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "pip install 'feedhandler[scapy]'" in out.stdout, out.stdout + out.stderr


def test_readme_scapy_example_runs(monkeypatch, capsys):
    import re
    text = (ROOT / "README.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", text, flags=re.S) if "feedhandler.scapy" in b)
    monkeypatch.chdir(ROOT)
    exec(compile(block, "README.md", "exec"), {})
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("8604 b'") and out[1].startswith("b'")


def test_soup_messages_reassembles_packets_split_across_segments(tmp_path):
    """With a 40-byte MSS most SoupBinTCP packets span several segments: rdpcap alone sees pieces,
    soup_messages gives every packet whole, equal to the native reassembly + SoupBinTCP framing."""
    from feedhandler.framing.soupbintcp_stream import SoupSessions
    from feedhandler.framing.tcp import Reassembler, pair_streams
    from feedhandler.protocols import ouch_events

    path = tmp_path / "split.pcap"
    ouch_events.synth(str(path), n=200, seed=5, version="5.0", mss=40)
    r = Reassembler()
    r.feed_file(str(path))
    sess = SoupSessions()
    for c, s in pair_streams(r.finish()):
        sess.add_pair(c, s)
    native = [("out" if row["from_server"] else "in", sess.payload(row))
              for row in sess.messages() if row["ptype"] in (b"S", b"U")]
    mine = [(fs._direction(s.packet_type), raw(s)[3:]) for _, s in fs.soup_messages(rdpcap(str(path)))
            if fs._direction(s.packet_type)]
    assert len(native) > 150
    assert mine == native
    for d, body in mine:
        assert fs.ouch_layer(body, d).spec_name == ouch50_spec.decode(body, d)[0]


# ---- any bytes dissect, and build back to the same bytes ---------------------------------------------------
from hypothesis import given, settings, strategies as st  # noqa: E402


@settings(max_examples=500, deadline=None)
@given(st.binary(min_size=20, max_size=300))
def test_any_moldudp64_bytes_round_trip(b):
    assert raw(fs.MoldUDP64(b)) == b


@settings(max_examples=500, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=60), st.sampled_from(sorted(fs.ITCH_LAYERS)).map(
    lambda t: itch50_codec.random_message(t.decode(), random.Random(len(t))))), max_size=8),
       st.integers(0, 0xFFFF))
def test_moldudp64_with_any_blocks_and_count_round_trips(msgs, count):
    b = build_moldudp64(b"S", 1, msgs, count=count)
    m = fs.MoldUDP64(b)
    assert raw(m) == b
    assert len(m.messages) <= min(len(msgs), count if count != 0xFFFF else 0)


@settings(max_examples=500, deadline=None)
@given(st.binary(min_size=3, max_size=200), st.booleans())
def test_any_soupbintcp_segment_round_trips(b, to_server):
    tcp = TCP(sport=40000, dport=15000) if to_server else TCP(sport=15000, dport=40000)
    frame = raw(Ether() / IP() / tcp / b)
    assert raw(Ether(frame)) == frame
