"""The README's Python examples run as written."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _blocks():
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


def test_readme_python_example_runs(monkeypatch, capsys):
    blocks = _blocks()
    assert blocks, "the README has a Python example"
    monkeypatch.chdir(ROOT)
    exec(compile(blocks[0], "README.md", "exec"), {})
    out = capsys.readouterr().out
    fills = int(out.split()[0])
    assert fills > 0


def test_readme_every_python_block_runs(monkeypatch, capsys):
    """Each further block stands alone (its own imports) and prints something."""
    monkeypatch.chdir(ROOT)
    for i, code in enumerate(_blocks()[1:], 1):
        exec(compile(code, f"README.md python block {i}", "exec"), {})
        assert capsys.readouterr().out.strip(), f"block {i} printed nothing"
