"""Versioned schema migrations, one directory per backend dialect.

A migration is a file ``NNNN_description.sql`` in ``common/`` (SQL both back-ends run as it
is) or in ``<dialect>/`` (where SQLite and PostgreSQL differ: the same version in both dialect
folders). Versions start at 1 and have no gaps. Each is applied once, in its own transaction,
and recorded in ``schema_version``. Migrations are append-only: never edit one that has
shipped, add the next number instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

__all__ = ["Migration", "load"]


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


@lru_cache(maxsize=None)
def load(dialect: str) -> tuple[Migration, ...]:
    """The migrations of one dialect (its own and the common ones), in order; checks that
    versions run 1..N without gaps and that no version is both common and the dialect's."""
    found = []
    for folder in ("common", dialect):
        for entry in resources.files(__name__).joinpath(folder).iterdir():
            m = re.fullmatch(r"(\d{4})_([a-z0-9_]+)\.sql", entry.name)
            if m:
                found.append(Migration(int(m.group(1)), m.group(2), entry.read_text("utf-8")))
    found.sort(key=lambda mig: mig.version)
    versions = [mig.version for mig in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"{dialect} migrations: a version is both in common/ and in {dialect}/")
    for expected, mig in enumerate(found, start=1):
        if mig.version != expected:
            raise RuntimeError(f"{dialect} migrations: expected version {expected}, "
                               f"found {mig.version} ({mig.name})")
    return tuple(found)
