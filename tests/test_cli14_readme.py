"""The README works as written for a stranger: a copy of the checkout, a fresh venv, then every ```bash
block of the README run in order (the first one is `pip install . && feedhandler replay <sample>`), each as
one `bash -e -o pipefail` script with a time limit, each exiting 0.

Slow (it builds the package from source in a fresh venv: minutes): runs with FH_RUN_SLOW=1, as CI does.
```sh blocks are not run (the README says why next to each); this test checks every shell block is one or
the other, so a new command cannot slip in unmarked.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BLOCK_LIMIT_S = 180            # every block (README: "a time limit of 180 s")
INSTALL_LIMIT_S = 2400         # the block with `pip install .` builds the native extensions


def blocks(text: str) -> list[tuple[str, int, str]]:
    """(language, line, body) of every fenced block."""
    out = []
    for m in re.finditer(r"^```([A-Za-z0-9_+-]*)\n(.*?)^```\s*$", text, re.S | re.M):
        out.append((m.group(1), text.count("\n", 0, m.start()) + 1, m.group(2)))
    return out


README = (REPO / "README.md").read_text()


def test_every_block_is_marked_and_the_first_command_installs_and_replays():
    bl = blocks(README)
    unmarked = [line for lang, line, _ in bl if not lang]
    assert not unmarked, f"README code blocks without a language (bash: run by this test; sh: not run): {unmarked}"
    bash = [b for lang, _, b in bl if lang == "bash"]
    first = next(ln for ln in bash[0].splitlines() if ln.strip() and not ln.startswith("#"))
    assert first.startswith("pip install . && feedhandler replay pcaps/"), first
    sample = first.split("feedhandler replay ")[1].split()[0]
    assert (REPO / sample).exists()
    # shell commands never hide in another kind of block
    for lang, line, body in bl:
        if lang not in ("bash", "sh"):
            assert not re.search(r"^\s*(feedhandler|pip|curl) ", body, re.M), f"README:{line}: commands in a {lang} block"


def _copy_checkout(dst: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True,
                           check=True).stdout.decode().split("\0")
    for f in files:
        if not f or f.startswith((".venv", "bench/out")):
            continue
        src = REPO / f
        if not src.is_file():
            continue
        (dst / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst / f)


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("FH_RUN_SLOW", "0") in ("", "0"),
                    reason="builds the package in a fresh venv (minutes); FH_RUN_SLOW=1 runs it (CI does)")
def test_readme_commands_run_as_written(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("git is needed to copy the checkout")
    src, env_dir = tmp_path / "feedhandler", tmp_path / "venv"
    _copy_checkout(src)
    venv.EnvBuilder(with_pip=True).create(env_dir)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(PATH=f"{env_dir / 'bin'}{os.pathsep}{env['PATH']}", VIRTUAL_ENV=str(env_dir),
               PIP_DISABLE_PIP_VERSION_CHECK="1")
    results = []
    for lang, line, body in blocks(README):
        if lang != "bash":
            continue
        limit = INSTALL_LIMIT_S if re.search(r"^pip install \.", body, re.M) else BLOCK_LIMIT_S
        # its own process group: a block that overruns is stopped with everything it started (`&` jobs too)
        p = subprocess.Popen(["bash", "-e", "-o", "pipefail", "-c", body], cwd=src, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            out, err = p.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            out, err = p.communicate()
            pytest.fail(f"README:{line}: still running after {limit} s:\n{body}\n{out[-3000:]}\n{err[-3000:]}")
        finally:
            try:
                os.killpg(p.pid, signal.SIGKILL)     # nothing of the block outlives it
            except ProcessLookupError:
                pass
        results.append((line, p.returncode))
        assert p.returncode == 0, f"README:{line} exited {p.returncode}:\n{body}\n--- stdout\n{out[-3000:]}\n" \
                                  f"--- stderr\n{err[-3000:]}"
    assert len(results) >= 6, results
    # the install was the checkout's own code, not something else on the path
    r = subprocess.run([str(env_dir / "bin" / "python"), "-c", "import feedhandler, sys; print(feedhandler.__file__)"],
                       capture_output=True, text=True, env=env, cwd=tmp_path)
    assert str(env_dir) in r.stdout, r.stdout + r.stderr
    assert sys.executable not in r.stdout
