"""dry-run: every stage but delivery; the document goes to a preview file or stdout.

The records come through the run's intake (engine.ops.intake: window, dedup, and with a
state, what was delivered or dropped left out); the outcomes go to the preview sink. No state
is written (the store, if any, is opened read-only) and no outbox is touched.
"""

from __future__ import annotations

import gc
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any, BinaryIO, Iterable, Iterator

from engine.config.mapping import LoadedMapping
from engine.convert.money import ZERO
from engine.convert.pipeline import Converted, Converter, Excluded, Quarantined
from engine.errors import OrderError
from engine.io.sinks.preview import PreviewSink
from engine.io.sources import Source
from engine.ops.intake import Intake, poll_window
from engine.ops.state import StateStore
from engine.output.xsd import Validator


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
    already_delivered: int = 0   # with a state: left out, as a run would
    dropped: int = 0


#: records per state lookup of a dry-run with a state: every record of a chunk is held (parsed,
#: ~30 KB each) until the chunk's lookup is done; 200 kept ~7 MB of orders alive and made them
#: survive into the collector's older generations. 50 costs 2,000 lookups per 100,000 orders.
PREVIEW_CHUNK = 50


def dry_run(mapping: LoadedMapping, source: Source, out: BinaryIO | None, *, store: StateStore | None = None,
            window: dict[str, str] | None = None, since: date | None = None, until: date | None = None,
            max_rows: int = 500, converter: Converter | None = None, bodies: Any = None) -> Summary:
    """Convert what a run would, into ``out`` (None: built and checked, not written).
    ``window``: what the source's templates see (default: --since/--until); ``store``: a
    read-only state (delivered and dropped orders left out); ``bodies``: for a mapping without
    XML output, renders what would be posted (JSON lines)."""
    validator = Validator(mapping.xsd_path)
    converter = converter or Converter(mapping, validator=validator)
    window = window or poll_window(mapping, since, until, today=None)
    intake = Intake(mapping, source, store, window=window, start=since, until=until, chunk=PREVIEW_CHUNK)
    sink = PreviewSink(mapping, validator, out, bodies)
    s = Summary(totals=[ZERO if c.amount is not None else None for c in mapping.columns])
    with _streaming_gc():
        _convert_all(converter.convert_all(intake.records()), sink, max_rows, s)
    sink.finish()
    counts = intake.counts
    s.seen, s.outside_window, s.duplicates = counts["fetched"], counts["outside_window"], intake.duplicates
    s.already_delivered, s.dropped = counts["already_delivered"], counts["dropped_skipped"]
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


def _convert_all(outcomes: Iterable[Any], sink: PreviewSink, max_rows: int, s: Summary) -> None:
    for outcome in outcomes:
        if isinstance(outcome, Excluded):
            s.excluded[outcome.condition] = s.excluded.get(outcome.condition, 0) + 1
        elif isinstance(outcome, Quarantined):
            s.quarantined.append(outcome)
        elif isinstance(outcome, Converted):
            try:
                sink.accept(outcome)
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
