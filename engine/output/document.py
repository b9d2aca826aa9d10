"""Validated, streamed XML documents.

Each record's element is validated against the mapping's XSD on its own (so one bad
order is quarantined and the rest still go out), serialised, and spooled; when the
batch is complete the document is written around the spooled parts: declaration,
the elements before the records (with the final count known), the records, the rest.
Memory holds one record at a time, plus a spool that moves to disk past a few MB.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from typing import IO, Any, BinaryIO

from lxml import etree

from engine.errors import MappingError
from engine.config.mapping import Element, LoadedMapping
from engine.output.render import INDENT, render_text
from engine.output.xsd import RECORD_PARSER, Validator

DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>\n'

def _parse_part(data: bytes, name: str) -> etree._Element:
    try:
        return etree.fromstring(data, RECORD_PARSER)
    except etree.XMLSyntaxError as exc:  # pragma: no cover - the writer escapes every text
        raise MappingError(f"the document part <{name}> does not parse: {exc}") from None


def record_level(document: Element) -> int:
    """How deep the record elements sit in the document (the Orders' children: 2)."""
    return (_records_depth(document) or 0) + 1


def _records_depth(el: Element, depth: int = 0) -> int | None:
    if el.records:
        return depth
    for c in el.children:
        d = _records_depth(c, depth + 1)
        if d is not None:
            return d
    return None


def _contains_records(el: Element) -> bool:
    return el.records or any(_contains_records(c) for c in el.children)


class DocumentBuilder:
    """Collects validated record parts for one document, then writes the document."""

    def __init__(self, mapping: LoadedMapping, validator: Validator):
        self.mapping = mapping
        self.validator = validator
        assert mapping.document is not None  # a document is built for a mapping with output.document
        self._document = mapping.document
        self.record_level = record_level(self._document)
        self._spool: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=4 * 1024 * 1024)
        self._lead = b"\n" + INDENT.encode() * self.record_level
        self._pending: list[bytes] = []  # records not yet in the spool: written ~256 KB at a time
        self._pending_size = 0
        self.count = 0

    def add(self, xml: bytes) -> None:
        """A record's text, written for this document's record level and validated by the pipeline."""
        self._pending.append(self._lead)
        self._pending.append(xml)
        self._pending_size += len(xml)
        self.count += 1
        if self._pending_size >= 1 << 18:
            self._spool_pending()

    def _spool_pending(self) -> None:
        self._spool.write(b"".join(self._pending))
        self._pending.clear()
        self._pending_size = 0

    def write(self, out: BinaryIO, batch: dict[str, Any]) -> None:
        """Write the whole document to ``out``; parts outside the records are validated too."""
        ctx = {"batch": batch, "tables": self.mapping.tables}
        out.write(DECLARATION)
        with etree.xmlfile(out, encoding="UTF-8") as xf:
            self._write(xf, out, self._document, ctx, 0)
        out.write(b"\n")
        self._spool.close()

    def _write(self, xf, out: BinaryIO, spec: Element, ctx, depth: int) -> None:
        if not _contains_records(spec):
            for text in render_text(spec, ctx, self.mapping.replacements, depth):
                data = text.encode("utf-8")
                self._check_part(_parse_part(data, spec.name))
                xf.flush()
                out.write(data)  # as written: re-serialising a parsed <X></X> would give <X/>
            return
        attrib = {k: t(ctx) for k, t in spec.attributes}
        with xf.element(spec.name, attrib):
            if spec.records:
                xf.flush()
                self._spool_pending()
                self._spool.seek(0)
                while chunk := self._spool.read(1 << 16):
                    out.write(chunk)
            for child in spec.children:
                xf.write("\n" + INDENT * (depth + 1))
                self._write(xf, out, child, ctx, depth + 1)
            if spec.children or (spec.records and self.count):
                xf.write("\n" + INDENT * depth)

    def _check_part(self, el: etree._Element) -> None:
        # Header-like parts are validated when the XSD declares them as global elements.
        if self.validator.schema is None:
            return
        try:
            problems = self.validator.problems(el)
        except etree.XMLSchemaValidateError:  # pragma: no cover - not a global element
            return
        if problems and not problems[0].endswith("No matching global declaration available for the validation root."):
            raise MappingError(f"the document part <{el.tag}> does not pass the XSD: " + "; ".join(problems[:3]),
                               hint="check output.document in the mapping")


@dataclass
class BatchInfo:
    id: str
    created: str
    date: str
    seq: int
    count: int

    def as_context(self) -> dict[str, Any]:
        return {"id": self.id, "created": self.created, "date": self.date, "seq": self.seq, "count": self.count}
