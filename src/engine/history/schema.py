"""Versioned schema migrations: ``migrations/NNNN_name.sql``, applied in order, each once.

``schema_version(version, name, applied_ns)`` records what was applied; a database whose newest version
is above the newest file here was written by a newer feedhandler and is refused (never downgraded). Each
migration runs in one transaction with its schema_version row, so a crash half way applies none of it.
The SQL is one dialect for SQLite and PostgreSQL (the files say which subset).
"""
from __future__ import annotations

import re
import time
from importlib import resources

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

CREATE_VERSION_TABLE = ("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
                        "applied_ns BIGINT NOT NULL)")


class SchemaError(Exception):
    """The database's schema cannot be used (written by a newer version, a migration failed)."""


def migrations() -> list[tuple[int, str, list[str]]]:
    """(version, name, statements) of every migration file, in version order."""
    out = []
    for f in resources.files("engine.history").joinpath("migrations").iterdir():
        m = _NAME.match(f.name)
        if not m:
            continue
        out.append((int(m.group(1)), m.group(2), split_sql(f.read_text())))
    out.sort()
    versions = [v for v, _, _ in out]
    if len(set(versions)) != len(versions):
        raise SchemaError(f"two migrations with the same version: {versions}")
    return out


def split_sql(text: str) -> list[str]:
    """The statements of a migration file (``--`` comments dropped; no ``;`` inside literals)."""
    lines = [ln.split("--", 1)[0] for ln in text.splitlines()]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def latest_version() -> int:
    return max(v for v, _, _ in migrations())


def pending(applied: set[int]) -> list[tuple[int, str, list[str]]]:
    """The migrations not yet applied; SchemaError for a database of a newer version."""
    all_ = migrations()
    if applied and max(applied) > all_[-1][0]:
        raise SchemaError(f"the history database has schema version {max(applied)}, newer than this feedhandler's "
                          f"{all_[-1][0]}: upgrade feedhandler or use another database")
    return [m for m in all_ if m[0] not in applied]


def now_ns() -> int:
    return time.time_ns()
