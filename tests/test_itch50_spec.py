"""The ITCH 5.0 field table, the generated header and the native decoder agree with each other and
with the specification's published message lengths."""
from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from feedhandler.protocols import itch50, itch50_codec, itch50_spec

ROOT = Path(__file__).resolve().parents[1]
GEN = ROOT / "tools" / "gen_itch50.py"

ALL_TYPES = "SRHYLVWKJhAFECXDUPQBINO"


def _load_gen():
    spec = importlib.util.spec_from_file_location("_gen_itch50", GEN)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_generated_files_are_fresh():
    r = subprocess.run([sys.executable, str(GEN), "--check"], capture_output=True, text=True)
    assert r.returncode == 0, f"generated ITCH files are stale:\n{r.stderr}"


def test_check_detects_stale_header(tmp_path, monkeypatch):
    gen = _load_gen()
    fresh = gen.outputs()
    header_text, pxd_text = fresh[gen.HEADER_OUT], fresh[gen.PXD_OUT]
    header = tmp_path / "itch50_wire.h"
    pxd = tmp_path / "itch50_wire.pxd"
    header.write_text(header_text)
    pxd.write_text(pxd_text)
    monkeypatch.setattr(gen, "HEADER_OUT", header)
    monkeypatch.setattr(gen, "PXD_OUT", pxd)
    monkeypatch.setattr(gen, "ROOT", tmp_path)
    assert gen.main(["--check"]) == 0
    assert "FH_ITCH50_ADD_ORDER_LEN 36\n" in header_text
    header.write_text(header_text.replace("FH_ITCH50_ADD_ORDER_LEN 36", "FH_ITCH50_ADD_ORDER_LEN 37"))
    assert gen.main(["--check"]) == 1
    assert gen.main([]) == 0  # regenerates
    assert header.read_text() == header_text
    pxd.unlink()
    assert gen.main(["--check"]) == 1  # a missing file is stale too


def test_every_message_type_is_in_the_table():
    assert "".join(sorted(m.type for m in itch50_spec.MESSAGES)) == "".join(sorted(ALL_TYPES))
    assert len({m.name for m in itch50_spec.MESSAGES}) == len(ALL_TYPES)


def test_table_lengths_match_the_specification():
    for m in itch50_spec.MESSAGES:
        assert m.length == itch50_spec.SPEC_LENGTHS[m.type], m.name
        assert itch50_spec.STRUCTS[m.type].size == m.length, m.name
        assert m.fields[:4] == itch50_spec.HEADER


def test_native_decoder_uses_the_table_lengths():
    assert itch50._native_lengths() == itch50_spec.LENGTH


def test_reference_constants_match_the_c_headers():
    native = itch50._native_constants()
    for name, value in native.items():
        assert getattr(itch50_codec, name) == value, name
    assert itch50.MAX_RECORDS_PER_MSG == 2


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc not installed")
def test_generated_header_compiles_and_offsets_match(tmp_path):
    # Print every generated offset from C (the _Static_asserts check the packed structs against the
    # same defines) and compare with the table.
    lines = ['#include <stdio.h>', '#include "fh/itch50_wire.h"', '#include "fh/itch50.h"', "int main(void) {"]
    for m in itch50_spec.MESSAGES:
        up = m.name.upper()
        lines.append(f'printf("{m.type} LEN %d\\n", (int)sizeof(fh_itch50_{m.name}));')
        for f in m.fields:
            lines.append(f'printf("{m.type} {f.name} %d\\n", (int)FH_ITCH50_{up}_OFF_{f.name.upper()});')
    lines += ["return 0;", "}"]
    src = tmp_path / "offsets.c"
    src.write_text("\n".join(lines))
    exe = tmp_path / "offsets"
    subprocess.run(
        ["gcc", "-std=gnu11", "-Wall", "-Wextra", "-Werror", "-I", str(ROOT / "csrc" / "include"), str(src), "-o",
         str(exe)],
        check=True,
    )
    got = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.split("\n")
    want = []
    for m in itch50_spec.MESSAGES:
        want.append(f"{m.type} LEN {m.length}")
        want += [f"{m.type} {name} {off}" for name, off in m.offsets().items()]
    assert got[:-1] == want
