"""A FIX / OUCH replay decodes the whole capture at once: when that would not fit in the memory available,
it says so before it starts (and in the summary), naming ``run --file``, which decodes in bounded memory."""
import os

import pytest

from feedhandler import replay as replay_mod
from feedhandler.replay import ReplayOptions, replay, whole_capture_warning

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "pcaps", "fix44_sample.pcap")
OUCH = os.path.join(ROOT, "pcaps", "ouch50_sample.pcap")


def test_estimate_against_the_memory_available():
    size = os.path.getsize(FIX)
    need = int(size * replay_mod.WHOLE_CAPTURE_BYTES_PER_BYTE)
    assert whole_capture_warning(FIX, False, available=need) is None
    w = whole_capture_warning(FIX, False, available=need - 1)
    assert w and "run --file" in w and FIX in w and "bounded memory" in w
    # gzip: the capture is larger than the file
    assert whole_capture_warning(FIX, True, available=need) is not None
    assert replay_mod._mem_available() is None or replay_mod._mem_available() > 0


@pytest.mark.parametrize("path", [FIX, OUCH])
def test_replay_warns_before_decoding(monkeypatch, path):
    monkeypatch.setattr(replay_mod, "_mem_available", lambda: 1000)
    told = []
    real_feed = replay_mod.__dict__.get("Feed")

    def on_warning(w):
        told.append((w, len(opened)))
    opened = []
    import feedhandler.pipeline as pipeline
    orig = pipeline.Feed

    class Spy(orig):
        def __init__(self, *a, **k):
            opened.append(1)
            super().__init__(*a, **k)
    monkeypatch.setattr(pipeline, "Feed", Spy)
    s = replay(path, ReplayOptions(on_warning=on_warning))
    assert real_feed is None            # (replay imports Feed where it runs: the spy is what it gets)
    assert len(told) == 1 and told[0][1] == 0, told      # said before the capture was opened for decoding
    assert told[0][0] in s["warnings"]
    assert s["messages"] > 0            # a warning, not a refusal


def test_no_warning_with_memory_to_spare(monkeypatch):
    monkeypatch.setattr(replay_mod, "_mem_available", lambda: 1 << 40)
    told = []
    s = replay(FIX, ReplayOptions(on_warning=told.append))
    assert not told and not any("whole" in w for w in s["warnings"])
