"""dry-run: the runner (engine.ops.runner) with a rehearsal state and the preview sink.

The runner's intake, conversion, plan and credit stages run as they would: delivered and
dropped orders are left out, hinted, held and quarantined ones looked up again. The state
(opened read-only) is answered from and never written (engine.ops.state.rehearsal); the
preview sink writes the document to a file or stdout and delivers nothing.
"""

from __future__ import annotations

import gc
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any, BinaryIO, Iterator

from engine.config.mapping import LoadedMapping
from engine.convert.pipeline import Quarantined
from engine.io.sinks.preview import PreviewSink
from engine.io.sources import Source
from engine.ops.runner import Runner
from engine.ops.state import StateStore
from engine.ops.state.rehearsal import RehearsalState
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
    held_by_plan: int = 0        # over the plan's limit: a run would hold them
    credited: int = 0            # credit notes in the preview
    messages: list[str] = field(default_factory=list)   # what the run would say


#: records per state lookup of a dry-run with a state: every record of a chunk is held (parsed,
#: ~30 KB each) until the chunk's lookup is done; 200 kept ~7 MB of orders alive and made them
#: survive into the collector's older generations. 50 costs 2,000 lookups per 100,000 orders.
PREVIEW_CHUNK = 50


def dry_run(mapping: LoadedMapping, source: Source, out: BinaryIO | None, *, store: StateStore | None = None,
            window: dict[str, str] | None = None, since: date | None = None, until: date | None = None,
            max_rows: int = 500, matcher: Any = None, bodies: Any = None, plan: str = "plus",
            destination: Any = None) -> Summary:
    """Run the mapping without delivering: the document into ``out`` (None: built and checked,
    not written). ``store``: the state, opened read-only (None: an empty one); ``window``: what
    the source's templates see (default: --since/--until, without a look-back); ``bodies``: for
    a mapping without XML output, renders what would be posted (JSON lines); ``destination``:
    the API destination it would be posted to (read, never written: a credit note names the
    invoice it credits as the API knows it)."""
    from engine.ops.intake import poll_window
    validator = Validator(mapping.xsd_path)
    sink = PreviewSink(mapping, validator, out, bodies, max_rows=max_rows)
    with _state_or_empty(store) as state:
        runner = Runner(mapping, source, RehearsalState(state), plan=plan, since=since, until=until,
                        chunk=PREVIEW_CHUNK, matcher=matcher, destination=destination, sink=sink, validator=validator,
                        window=window or poll_window(mapping, since, until, today=None), flags_kept=max_rows)
        with _streaming_gc():
            result = runner.run()
    c = result.counts
    return Summary(seen=c["fetched"], converted=sink.invoices, excluded=result.excluded_by,
                   quarantined=result.quarantined, flags=result.flags, flag_count=result.flag_count,
                   rows=sink.rows, totals=sink.totals, outside_window=c["outside_window"],
                   duplicates=runner.intake.duplicates, already_delivered=c["already_delivered"],
                   dropped=c["dropped_skipped"], held_by_plan=c["held_by_plan"], credited=sink.credit_notes,
                   messages=result.messages)


@contextmanager
def _state_or_empty(store: StateStore | None) -> Iterator[StateStore]:
    """``store``, or an empty state: a read-only store over a file that does not exist is
    an empty one in memory (engine.ops.state.sqlite), and nothing is created."""
    if store is not None:
        yield store
        return
    import tempfile
    from pathlib import Path
    from engine.ops.state.sqlite import SQLiteStateStore
    with tempfile.TemporaryDirectory(prefix="mapper-dry-run-") as tmp, \
            SQLiteStateStore(Path(tmp) / "none.sqlite", readonly=True) as empty:
        yield empty


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
