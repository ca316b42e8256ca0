"""Prometheus text exposition (format 0.0.4) of the exchange as the HTTP gateway sees it.

Latency histograms come from :class:`engine.latency.LatencyMonitor` (the pipeline's stage histograms, and
the HTTP gateway's own ``http_*`` ones), re-bucketed at fixed boundaries: each ``le`` bucket counts the
log-buckets whose highest value is <= the boundary (exact, since the boundaries are chosen below the
histogram's resolution only at their own precision)."""
from __future__ import annotations

import numpy as np

from engine.latency import bucket_high

#: histogram boundaries in seconds
BOUNDS_S = (0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
            0.1, 0.25, 0.5, 1.0)


def _name(s: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in s)


def histogram_lines(metric: str, label: str, hist) -> list[str]:
    counts = np.asarray(hist.counts)
    highs = bucket_high(np.arange(counts.size))
    cum = np.cumsum(counts)
    out = []
    for b in BOUNDS_S:
        ns = int(b * 1e9)
        k = int(np.searchsorted(highs, ns, side="right")) - 1
        n = int(cum[k]) if k >= 0 else 0
        out.append(f'{metric}_bucket{{{label},le="{b:g}"}} {n}')
    out.append(f'{metric}_bucket{{{label},le="+Inf"}} {int(hist.total)}')
    out.append(f"{metric}_sum{{{label}}} {hist.sum / 1e9:.9f}")
    out.append(f"{metric}_count{{{label}}} {int(hist.total)}")
    return out


def render(counters: dict[str, tuple[str, dict]], gauges: dict[str, tuple[str, dict]], histograms) -> str:
    """counters/gauges: name -> (help, {label string or "": value}); histograms: [(name, help, label, hist)]."""
    lines: list[str] = []
    for kind, table in (("counter", counters), ("gauge", gauges)):
        for name, (help_, values) in table.items():
            lines.append(f"# HELP {name} {help_}")
            lines.append(f"# TYPE {name} {kind}")
            for label, v in values.items():
                lines.append(f"{name}{{{label}}} {v}" if label else f"{name} {v}")
    seen = set()
    for name, help_, label, hist in histograms:
        if name not in seen:
            seen.add(name)
            lines.append(f"# HELP {name} {help_}")
            lines.append(f"# TYPE {name} histogram")
        lines.extend(histogram_lines(name, label, hist))
    return "\n".join(lines) + "\n"


def label(**kw) -> str:
    return ",".join(f'{k}="{_name(str(v))}"' for k, v in kw.items())
