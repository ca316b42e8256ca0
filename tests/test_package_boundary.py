"""The feed handler does not depend on the exchange: nothing under src/feedhandler/ imports ``engine``
except the command line (cli.py, which dispatches the exchange's subcommands, and shell.py, whose
``--exchange`` attaches to a running exchange through its client library): ARCHITECTURE.md, dependency rules."""
import ast
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PKG = os.path.join(ROOT, "src", "feedhandler")
# the command line: cli.py dispatches the exchange's subcommands; shell.py (`feedhandler shell --exchange`)
# attaches an interactive session to a running exchange through its client library (imported only then)
ALLOWED = {os.path.join(PKG, "cli.py"), os.path.join(PKG, "shell.py")}
# Cython files are not Python syntax; their import lines are.
CYTHON_IMPORT = re.compile(r"^\s*(?:from\s+(engine)(?:\.|\s)|c?import\s+(engine)\b)", re.M)


def _sources():
    for dirpath, _dirs, files in os.walk(PKG):
        for f in files:
            if f.endswith((".py", ".pyx", ".pxd")):
                yield os.path.join(dirpath, f)


def _engine_imports(path):
    text = open(path, encoding="utf-8").read()
    if not path.endswith(".py"):
        return [m.group(0).strip() for m in CYTHON_IMPORT.finditer(text)]
    found = []
    for node in ast.walk(ast.parse(text, path)):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name == "engine" or a.name.startswith("engine.")]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "engine" or node.module.startswith("engine."):
                found.append(node.module)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module":
            if node.args and isinstance(node.args[0], ast.Constant) and str(node.args[0].value).startswith("engine"):
                found.append(node.args[0].value)
    return found


def test_no_feedhandler_module_imports_engine():
    offenders = {}
    for path in _sources():
        if path in ALLOWED:
            continue
        hits = _engine_imports(path)
        if hits:
            offenders[os.path.relpath(path, ROOT)] = hits
    assert offenders == {}, f"feedhandler modules importing the exchange package: {offenders}"


def test_the_checker_sees_an_engine_import(tmp_path):
    """The scan above is not vacuous: it finds each form of import it claims to find."""
    for text in ("import engine\n", "from engine.exchange import Exchange\n", "import engine.journal as j\n",
                 "import importlib\nimportlib.import_module('engine.exchange')\n"):
        p = tmp_path / "m.py"
        p.write_text(text)
        assert _engine_imports(str(p)), text
    p = tmp_path / "m.pyx"
    p.write_text("from engine.matching cimport Engine\n")
    assert _engine_imports(str(p))


def test_importing_the_feed_side_loads_no_engine_module():
    """At run time too: importing every feed module (the books, replay, live, outputs) pulls in no
    ``engine`` module."""
    code = (
        "import sys, importlib\n"
        "mods = ['feedhandler', 'feedhandler.books', 'feedhandler.replay', 'feedhandler.live',\n"
        "        'feedhandler.book_view', 'feedhandler.output.dbn', 'feedhandler.records']\n"
        "for m in mods: importlib.import_module(m)\n"
        "bad = sorted(m for m in sys.modules if m == 'engine' or m.startswith('engine.'))\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
