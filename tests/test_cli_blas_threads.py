"""The command line starts no OpenBLAS threads: numpy's spin after import and, on a 2-core machine, take
the core a pipelined replay's second thread needs (feedhandler.cli sets OPENBLAS_NUM_THREADS=1 unless the
user set it)."""
import os
import subprocess
import sys

import pytest

PROBE = "import os, {first}; import numpy; print(len(os.listdir('/proc/self/task')))"


def _threads(first: str, **env) -> int:
    e = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}
    e.update(env)
    out = subprocess.run([sys.executable, "-c", PROBE.format(first=first)], env=e, capture_output=True,
                         text=True, check=True)
    return int(out.stdout.strip())


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux /proc")
def test_cli_process_has_one_thread_after_numpy():
    assert _threads("feedhandler.cli") == 1


@pytest.mark.skipif((os.cpu_count() or 1) < 2 or not os.path.isdir("/proc/self/task"),
                    reason="OpenBLAS starts no threads on one core")
def test_numpy_alone_starts_blas_threads_and_the_users_choice_stays():
    """The probe can tell: numpy imported without the CLI starts its BLAS threads; a value the user set
    is kept by the CLI."""
    assert _threads("sys") > 1
    assert _threads("feedhandler.cli", OPENBLAS_NUM_THREADS="2") == 2
