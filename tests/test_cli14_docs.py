"""Every ```python example of docs/api.md and README.md runs as written (from a directory where
``pcaps/`` is the checkout's samples), each block in a fresh namespace."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytest.importorskip("feedhandler.pipeline", reason="feedhandler.pipeline not built")
pytest.importorskip("feedhandler.books.mbo", reason="feedhandler.books.mbo not built")


def python_blocks(path: Path) -> list[tuple[int, str]]:
    """(line number, code) of every ```python block of a Markdown file."""
    text = path.read_text()
    out = []
    for m in re.finditer(r"^```python\n(.*?)^```", text, re.S | re.M):
        out.append((text.count("\n", 0, m.start()) + 1, m.group(1)))
    return out


BLOCKS = [(doc, line, code) for doc in ("docs/api.md", "README.md") for line, code in python_blocks(REPO / doc)]


def test_the_api_page_exists_and_is_linked():
    assert (REPO / "docs" / "api.md").exists()
    assert "docs/api.md" in (REPO / "README.md").read_text()
    page = (REPO / "docs" / "api.md").read_text()
    for topic in ("## Feed", "## Records", "## Books", "## Ring", "outputs", "## Tables", 'books.bbo("AAPL")',
                  "books.depth(\"AAPL\", 5)", "to_pandas", "to_polars", "to_arrow", "Ring.attach"):
        assert topic in page, topic
    assert len(python_blocks(REPO / "docs" / "api.md")) >= 7


@pytest.mark.parametrize("doc,line,code", BLOCKS, ids=[f"{d}:{ln}" for d, ln, _ in BLOCKS])
def test_python_example_runs(doc, line, code, tmp_path, monkeypatch, capsys):
    if "frames." in code or "ParquetWriter" in code:
        pytest.importorskip("pyarrow", reason="the frames examples need pyarrow ([frames] extra)")
        pytest.importorskip("pandas", reason="the frames examples need pandas ([frames] extra)")
        pytest.importorskip("polars", reason="the frames examples need polars ([frames] extra)")
    if "scapy" in code:
        pytest.importorskip("scapy", reason="the scapy example needs scapy ([scapy] extra)")
    (tmp_path / "pcaps").symlink_to(REPO / "pcaps")
    monkeypatch.chdir(tmp_path)
    ns: dict = {"__name__": "__docs__"}
    exec(compile(code, f"{doc}:{line}", "exec"), ns)
    out = capsys.readouterr().out
    assert out.strip(), f"{doc}:{line} printed nothing"
