"""The offline source: a directory with one JSON file per record.

Each file holds a record exactly as the shop's API returns it, plus its expansions
(for CCV: the order plus ``orderrows``). A file that cannot be read is not lost: it
comes through as a :class:`BrokenRecord` and is quarantined under its file name.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

from engine.io import jsondecode
from engine.errors import ConfigError, SourceError
from engine.io.sources import BrokenRecord


def _read(path: str) -> bytes:
    """The file's bytes: ``open(path, "rb").read()`` without the file object (half the time
    for a 10 KB order: no buffer, no size probing, no context manager)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class FixtureSource:
    def __init__(self, directory: str | Path, id_of=None, decode=None):
        self.directory = Path(directory)
        self.id_of = id_of or (lambda record: str(record.get("id")))
        self.decode = decode or jsondecode.loads  # the mapping's projected decoder (engine/expr/projection.py)
        if not self.directory.is_dir():
            raise ConfigError(f"fixture directory not found: {directory}",
                              hint="give --fixtures a directory of order .json files")

    def close(self) -> None:
        pass

    def records(self, window: dict | None = None) -> Iterator[dict | BrokenRecord]:
        """Every file's record; the window is applied by the pipeline, by creation date."""
        # Names, not Path objects: at 100,000 orders the list of Paths alone took ~35 MB.
        # Same selection and order as sorted(directory.glob("*.json")).
        with os.scandir(self.directory) as entries:
            names = sorted(e.name for e in entries if e.name.endswith(".json"))
        if not names:
            raise SourceError(f"no .json files in {self.directory}")
        directory = str(self.directory)
        for name in names:
            path = os.path.join(directory, name)  # a str: a Path per file costs more than reading it
            try:
                data = self.decode(_read(path))
            except jsondecode.JSONDecodeError as exc:
                yield BrokenRecord(name, f"{path}: not valid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}")
                continue
            except (OSError, UnicodeDecodeError) as exc:
                yield BrokenRecord(name, f"{path}: cannot be read: {exc}")
                continue
            except (ValueError, ArithmeticError, RecursionError) as exc:  # an int over 4,300 digits, an
                # exponent no Decimal holds (1e9999999999999999999), nesting too deep
                reason = ("nested too deeply" if isinstance(exc, RecursionError)
                          else "a number too large" if isinstance(exc, ArithmeticError) else str(exc))
                yield BrokenRecord(name, f"{path}: not valid JSON: {reason}")
                continue
            if not isinstance(data, dict):
                yield BrokenRecord(name, f"{path}: holds {type(data).__name__}, not one record object")
                continue
            try:
                if not self.id_of(data):
                    raise ValueError("it is empty")
            except Exception as exc:  # noqa: BLE001 - the record's id expression failed on it
                yield BrokenRecord(name, f"{path}: the record has no id ({exc}); it cannot be "
                                         f"delivered or tracked without one")
                continue
            yield data

    def list_items(self, request: dict, window: dict | None = None) -> Iterator[dict]:
        """Fixture files hold orders only: no other list (credit invoices, returns) is served."""
        return iter(())

    def lookup(self, shop_id: str) -> dict | None:
        """One record by id (webhook hints, quarantine retries): a scan, fine for fixtures."""
        for record in self.records():
            if isinstance(record, BrokenRecord):
                if record.source_name == shop_id:
                    return None
                continue
            if self.id_of(record) == str(shop_id):
                return record
        return None
