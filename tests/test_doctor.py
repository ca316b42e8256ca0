"""doctor: its ioctl readings agree with ethtool's, and its backend verdicts follow the facts."""
from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from feedhandler import doctor
from feedhandler.capture import live as backends
from feedhandler.capture.live.vethpair import VethPair, veth_unavailable_reason


@pytest.mark.skipif(shutil.which("ethtool") is None, reason="needs ethtool to cross-check")
def test_ts_info_matches_ethtool():
    out = subprocess.run(["ethtool", "-T", "lo"], capture_output=True, text=True).stdout
    info = doctor.ts_info("lo")
    assert ("software-receive" in out) == ("rx_software" in info["so_timestamping"])
    assert ("hardware-receive" in out) == ("rx_hardware" in info["so_timestamping"])
    phc = "none" if info["phc_index"] < 0 else str(info["phc_index"])
    assert f"PTP Hardware Clock: {phc}" in out


@pytest.mark.skipif(veth_unavailable_reason() is not None, reason=str(veth_unavailable_reason()))
def test_veth_driver_and_hwtstamp():
    with VethPair(tag="fhd") as v:
        d = doctor.diagnose(v.host_if)
        assert d["iface"]["driver"]["driver"] == "veth"
        assert d["iface"]["xdp_native"] is True and d["iface"]["xdp_zerocopy"] is False
        # veth has no hardware stamping: SIOCGHWTSTAMP is refused
        assert d["iface"]["hwtstamp"]["ok"] is False
        assert d["backends"]["afpacket"]["usable"] is True
        json.dumps(d)        # the --json schema is serializable
        text = doctor.format_report(d)
        assert v.host_if in text and "afpacket  usable" in text


def test_missing_iface(capsys):
    assert doctor.doctor_main(["--iface", "fhnosuch0"]) == 2   # usage / unreadable input (feedhandler.exitcodes)
    assert "does not exist" in capsys.readouterr().out
    why = backends.probe("afpacket", "fhnosuch0")
    assert why and "no interface" in why


def test_select_explicit_and_env(monkeypatch):
    with pytest.raises(backends.BackendUnavailable, match="no capture file"):
        backends.select("pcap", None)
    monkeypatch.setenv(backends.ENV, "pcap")
    assert backends.select(None, None, pcap_file="x.pcap").backend == "pcap"
    with pytest.raises(ValueError):
        backends.select("nosuch", "lo")


def test_auto_falls_back_with_reasons():
    sel = backends.select("auto", None, pcap_file="x.pcap")
    assert sel.backend == "pcap"
    # every faster backend is listed with a reason
    assert set(sel.skipped) == {"afxdp", "dpdk", "afpacket"}
    assert all(sel.skipped.values())
