"""dry-run: every stage but delivery; the document goes to a preview file or stdout.

No state is written and no outbox is touched: there is no writer here to call.
"""

from __future__ import annotations

import gc
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any, BinaryIO, Iterable, Iterator

from engine.clock import now
from engine.output.document import BatchInfo, DocumentBuilder
from engine.output.xsd import Validator
from engine.config.mapping import Mapping_
from engine.convert.money import ZERO
from engine.errors import OrderError
from engine.convert.pipeline import Converted, Converter, Excluded, Quarantined, in_window


@dataclass
class Summary:
    seen: int = 0
    converted: int = 0
    excluded: dict[str, int] = field(default_factory=dict)
    quarantined: list[Quarantined] = field(default_factory=list)
    flags: list[tuple[str, str]] = field(default_factory=list)  # (order number, message), up to max_rows
    flag_count: int = 0
    rows: list[list[Any]] = field(default_factory=list)  # preview rows, up to max_rows
    totals: list[Decimal | None] = field(default_factory=list)
    outside_window: int = 0
    duplicates: list[str] = field(default_factory=list)  # ids listed more than once: taken once


def dry_run(mapping: Mapping_, records: Iterable[Any], out: BinaryIO | None, *,
            since: date | None = None, until: date | None = None, max_rows: int = 500,
            converter: Converter | None = None, bodies: Any = None) -> Summary:
    """``bodies``: for a mapping without XML output, renders what would be posted (JSON lines)."""
    validator = Validator(mapping.xsd_path)
    converter = converter or Converter(mapping, validator=validator)
    builder = DocumentBuilder(mapping, validator) if bodies is None else bodies
    s = Summary(totals=[ZERO if c.amount is not None else None for c in mapping.columns])
    with _streaming_gc():
        _convert_all(mapping, records, since, until, max_rows, converter, builder, bodies, s)
    if out is not None:
        stamp = now()
        batch = BatchInfo(id=f"{mapping.name}-preview-{stamp:%Y%m%dT%H%M%SZ}",
                          created=stamp.strftime("%Y-%m-%dT%H:%M:%SZ"), date=stamp.strftime("%Y-%m-%d"),
                          seq=1, count=builder.count)
        builder.write(out, batch.as_context())
    return s


#: Young-generation threshold while records stream. Each record allocates many short-lived
#: containers (the parsed order, contexts, invoice lines, preview rows) that reference
#: counting frees; at the default (700) the collector ran ~55 times per 1,000 orders, promoted
#: whatever was alive at that moment, and every full collection walked the ~50,000 objects
#: the mapping, Jinja, lxml and typer had loaded (bench at 10,000 orders: ~12% less time).
STREAM_GC_THRESHOLD = 20000


@contextmanager
def _streaming_gc() -> Iterator[None]:
    """While records stream: loaded objects frozen out of the collector, fewer young collections.

    The mapping, its compiled templates and every imported module live for the whole run and
    hold no garbage: ``gc.freeze()`` moves them to the permanent generation, so a full
    collection no longer walks them. Cyclic garbage is still collected (only less often),
    and the previous thresholds and frozen set are restored afterwards.
    """
    if not gc.isenabled():
        yield
        return
    old = gc.get_threshold()
    frozen_before = gc.get_freeze_count()
    gc.freeze()
    gc.set_threshold(max(old[0], STREAM_GC_THRESHOLD), *old[1:])
    try:
        yield
    finally:
        gc.set_threshold(*old)
        if frozen_before == 0:
            gc.unfreeze()


def _convert_all(mapping, records, since, until, max_rows, converter, builder, bodies, s: Summary) -> None:
    for outcome in converter.convert_all(_in_window(mapping, records, since, until, s)):
        if isinstance(outcome, Excluded):
            s.excluded[outcome.condition] = s.excluded.get(outcome.condition, 0) + 1
        elif isinstance(outcome, Quarantined):
            s.quarantined.append(outcome)
        elif isinstance(outcome, Converted):
            try:
                builder.add(outcome.xml if bodies is None else outcome)
            except OrderError as exc:
                s.quarantined.append(Quarantined(outcome.shop_id, outcome.number, exc.reason, exc.field))
                continue
            s.converted += 1
            for i, v in enumerate(outcome.preview):
                if s.totals[i] is not None:
                    s.totals[i] += v
            if len(s.rows) < max_rows:
                s.rows.append(outcome.preview)
            s.flag_count += len(outcome.flags)
            if len(s.flags) < max_rows:
                s.flags.extend((outcome.number, f) for f in outcome.flags)


def _in_window(mapping: Mapping_, records: Iterable[Any], since: date | None, until: date | None,
               s: Summary) -> Iterator[Any]:
    seen: set[str] = set()
    for record in records:
        if since or until:
            created = _created(mapping, record)
            if created is not None and not in_window(created, since, until):
                s.outside_window += 1
                continue
        if isinstance(record, dict):   # listed twice (a copied file, a page that shifted): once, as a run
            try:
                shop_id = str(mapping.record_id({"record": record}))
            except Exception:  # noqa: BLE001 - the converter reports it properly
                shop_id = ""
            if shop_id and shop_id in seen:
                s.duplicates.append(shop_id)
                continue
            seen.add(shop_id)
        s.seen += 1
        yield record


def _created(mapping: Mapping_, record: Any) -> str | None:
    if not isinstance(record, dict):
        return None
    try:
        return str(mapping.record_created({"record": record, "tables": mapping.tables}))
    except Exception:  # noqa: BLE001 - the converter reports it properly
        return None
