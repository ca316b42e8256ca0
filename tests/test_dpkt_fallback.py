"""The dpkt fallback reader: the FEEDHANDLER_READER switch, the messages when a piece is missing, and
its batches decoded by the native MDP3 decoder give the same records as the native reader's."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("dpkt", reason="dpkt is not installed (pip install 'feedhandler[dpkt]')")

from feedhandler.capture import fallback  # noqa: E402
from feedhandler.framing.udp import UdpBatches as NativeUdpBatches  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MDP3 = ROOT / "pcaps" / "mdp3_sample.pcap"


@pytest.mark.parametrize("env,want", [(None, NativeUdpBatches), ("auto", NativeUdpBatches),
                                      ("native", NativeUdpBatches), ("dpkt", fallback.UdpBatches),
                                      (" DPKT ", fallback.UdpBatches)])
def test_env_switch(monkeypatch, env, want):
    if env is None:
        monkeypatch.delenv(fallback.ENV, raising=False)
    else:
        monkeypatch.setenv(fallback.ENV, env)
    r = fallback.udp_batches(str(MDP3))
    assert type(r) is want
    r.close()


def test_env_switch_rejects_unknown_value(monkeypatch):
    monkeypatch.setenv(fallback.ENV, "fast")
    with pytest.raises(ValueError, match="expected native, dpkt or auto"):
        fallback.udp_batches(str(MDP3))


def test_missing_file_is_a_clear_error():
    with pytest.raises(FileNotFoundError, match="no such file"):
        fallback.UdpBatches("/nonexistent/x.pcap")


def test_fallback_batches_decode_like_the_native_ones():
    """The native MDP3 decoder consumes the dpkt reader's batches: records equal to the native reader's."""
    from feedhandler.protocols.mdp3 import Mdp3Decoder

    if not MDP3.exists():
        pytest.skip(f"{MDP3} is absent")
    out = []
    for cls in (NativeUdpBatches, fallback.UdpBatches):
        dec = Mdp3Decoder()
        recs = []
        with cls(str(MDP3), batch_packets=64) as u:
            while (b := u.read()) is not None:
                recs.append(dec.decode_buffer(*b).copy())
        out.append(np.concatenate([r.view(np.uint8).reshape(-1, 64) for r in recs]))
    assert out[0].shape[0] > 200
    assert np.array_equal(out[0], out[1])


_BLOCK = ("import sys, warnings\n"
          "class Block:\n"
          "    def __init__(self, names): self.names = names\n"
          "    def find_spec(self, name, path=None, target=None):\n"
          "        if any(name == n or name.startswith(n + '.') for n in self.names):\n"
          "            raise ImportError('No module named ' + repr(name) + ' (blocked by the test)')\n")


def _run(code, env_value=None):
    import os
    env = dict(os.environ)
    env.pop(fallback.ENV, None)
    if env_value is not None:
        env[fallback.ENV] = env_value
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)


def test_without_the_native_extension_auto_falls_back_with_a_warning():
    code = _BLOCK + (
        "sys.meta_path.insert(0, Block(['feedhandler.framing.udp']))\n"
        "from feedhandler.capture import fallback\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        f"    r = fallback.udp_batches({str(MDP3)!r})\n"
        "print(type(r).__module__, type(r).__name__)\n"
        "print(w[0].message)\n"
        "n = 0\n"
        "while (b := r.read()) is not None: n += len(b[1])\n"
        "print(n)\n")
    out = _run(code)
    lines = out.stdout.splitlines()
    assert lines[0] == "feedhandler.capture.fallback UdpBatches", out.stderr
    assert "native extension is not built" in lines[1] and "pip install -e ." in lines[1]
    assert int(lines[2]) == 256


def test_without_the_native_extension_native_is_an_import_error():
    code = _BLOCK + (
        "sys.meta_path.insert(0, Block(['feedhandler.framing.udp']))\n"
        "from feedhandler.capture import fallback\n"
        "try:\n"
        f"    fallback.udp_batches({str(MDP3)!r})\n"
        "except ImportError as e:\n"
        "    print(e)\n")
    out = _run(code, "native")
    assert "FEEDHANDLER_READER=native but the native extension is not built" in out.stdout, out.stderr
    assert "FEEDHANDLER_READER=dpkt" in out.stdout


def test_without_dpkt_the_import_error_names_the_extra():
    code = _BLOCK + (
        "sys.meta_path.insert(0, Block(['dpkt']))\n"
        "try:\n"
        "    import feedhandler.capture.fallback\n"
        "except ImportError as e:\n"
        "    print(e)\n")
    out = _run(code)
    assert "pip install 'feedhandler[dpkt]'" in out.stdout, out.stderr
