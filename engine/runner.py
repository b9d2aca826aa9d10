"""`mapper run`: intake -> convert -> deliver exactly once -> record.

Exactly once (design principle 5), with the state store and the outbox:

1. recover: a pending batch whose file is in the outbox was renamed into place before a
   crash -> mark it delivered; one whose file is missing never left -> discard it and
   re-fetch its orders by id (they become hints), so they go out in this run;
2. intake: the poll window (paid orders created in the look-back, or --since/--until), plus
   webhook hints and open quarantine, each re-fetched from the source by id;
3. skip what is delivered; convert the rest; quarantine what fails, with its reason;
4. per file (at most ``output.per_file`` orders): record the batch as pending, write the
   file to a temporary name, fsync, rename, then mark the batch delivered.

Two runs of one mapping never overlap (the store's run lock).
"""

from __future__ import annotations

import sys
import uuid
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import Any, Callable, Iterable, Iterator

from .clock import now as clock_now
from .document import BatchInfo, DocumentBuilder, Validator
from .errors import DeliveryError, MappingError
from .expressions import EvaluationError, Template
from .mapping import Mapping_
from .outbox import Outbox
from .pipeline import Converted, Converter, Excluded, Quarantined, in_window
from .sources.fixtures import BrokenRecord
from .state import OrderRef, StateStore
from .state.base import clean_reason

PLAN_LIMITS = {"basis": 250, "plus": None}


@dataclass
class RunResult:
    run_id: int | None = None
    outcome: str = "ok"
    counts: dict[str, int] = field(default_factory=lambda: {
        "fetched": 0, "delivered": 0, "already_delivered": 0, "quarantined": 0, "excluded": 0,
        "held_by_plan": 0, "files": 0, "recovered": 0, "redone": 0, "dropped_skipped": 0})
    files: list[str] = field(default_factory=list)
    quarantined: list[Quarantined] = field(default_factory=list)
    flags: list[tuple[str, str]] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)


def plan_limit(plan: str) -> int | None:
    if plan not in PLAN_LIMITS:
        raise MappingError(f"plan '{plan}' is not known", hint="use basis (250 invoices a year) or plus (unlimited)")
    return PLAN_LIMITS[plan]


class Runner:
    def __init__(self, mapping: Mapping_, source: Any, store: StateStore, outbox: Outbox, *,
                 plan: str = "plus", since: date | None = None, until: date | None = None,
                 progress: Callable[[dict[str, int]], None] | None = None, chunk: int = 200,
                 matcher: Any = None):
        self.m = mapping
        self.source = source
        self.store = store
        self.outbox = outbox
        self.limit = plan_limit(plan)
        self.plan = plan
        self.since, self.until = since, until
        self.progress = progress
        self.chunk = chunk
        self.validator = Validator(mapping.xsd_path)
        self.converter = Converter(mapping, matcher=matcher, validator=self.validator)
        self.result = RunResult()
        self._file_template = Template(((mapping.sink or {}).get("directory") or {}).get(
            "name", f"{mapping.name}-{{{{ batch.date }}}}-{{{{ batch.seq }}}}.xml"))
        self._stamp = clock_now()
        self._seq = 0
        self._delivered_this_year = 0

    # -- the run ----------------------------------------------------------------------------
    def run(self) -> RunResult:
        name = self.m.name
        r = self.result
        r.run_id = self.store.begin_run(name, self._stamp, "backfill" if self.since else "daily")
        try:
            self._close_interrupted_runs()
            self.outbox.prepare()
            self._recover()
            self._delivered_this_year = self.store.delivered_count(name, self._stamp.year)
            builder = self._new_builder()
            batch_refs: list[OrderRef] = []
            for outcome in self._outcomes():
                if isinstance(outcome, Converted):
                    if self.limit is not None and self._delivered_this_year + len(batch_refs) >= self.limit:
                        r.counts["held_by_plan"] += 1
                        continue
                    builder.add(outcome.element)
                    batch_refs.append(OrderRef(outcome.shop_id, outcome.number, outcome.invoice.date))
                    r.flags.extend((outcome.number, f) for f in outcome.flags)
                    if len(batch_refs) >= self.m.per_file:
                        self._deliver(builder, batch_refs)
                        builder, batch_refs = self._new_builder(), []
            if batch_refs:
                self._deliver(builder, batch_refs)
            if r.counts["held_by_plan"]:
                r.messages.append(
                    f"plan {self.plan}: {self.limit} invoices a year reached; {r.counts['held_by_plan']} paid "
                    f"orders are held (not lost) and go out when the plan changes or the year turns")
            r.outcome = "quarantined" if r.counts["quarantined"] else "ok"
        except BaseException as exc:
            r.outcome = "failed"
            r.messages.append(str(exc))
            raise
        finally:
            self.store.finish_run(r.run_id, r.outcome, r.counts, finished_at=clock_now())
        return r

    # -- stages -----------------------------------------------------------------------------
    def _close_interrupted_runs(self) -> None:
        """Earlier runs that never finished were killed (the caller holds the run lock): say so,
        instead of showing them as running for ever."""
        for run in self.store.last_runs(self.m.name, 100):
            if run.finished_at is None and run.id != self.result.run_id:
                self.store.finish_run(run.id, "interrupted", run.counts, finished_at=clock_now())

    def _recover(self) -> None:
        for batch in self.store.pending_batches(self.m.name):
            # file_name is the absolute path the batch was written to (a plain name in older
            # states): a run with another --outbox must not redo a file that made it elsewhere
            if self.outbox.exists(batch.file_name):
                self.store.mark_delivered(batch.id, self.outbox.checksum(batch.file_name), clock_now())
                self.store.release(self.m.name, [o.shop_id for o in batch.orders])
                self.result.counts["recovered"] += 1
            else:
                self.store.discard_batch(batch.id, clock_now())
                for ref in batch.orders:
                    self.store.add_hint(self.m.name, ref.shop_id, "redo", clock_now())
                self.result.counts["redone"] += 1

    def _records(self) -> Iterator[Any]:
        """The window's records, then hints and open quarantine re-fetched by id."""
        seen: set[str] = set()
        window = {"start": self.since.isoformat() if self.since else
                  (self._stamp.date() - timedelta(days=self.m.look_back_days)).isoformat(),
                  "end": self.until.isoformat() if self.until else ""}
        for record in self.source.records(window):
            if not isinstance(record, BrokenRecord):
                created = self._created(record)
                if created is not None and not in_window(created, date.fromisoformat(window["start"]), self.until):
                    continue
                shop_id = self._id(record)
                if shop_id and shop_id in seen:   # listed twice (a page shifted, a copied file): once is enough
                    continue
                seen.add(shop_id)
            yield record
        extra = [h.shop_id for h in self.store.hints(self.m.name)]
        extra += [q.shop_id for q in self.store.open_quarantine(self.m.name)]
        for shop_id in dict.fromkeys(extra):
            if shop_id in seen:
                continue
            record = self.source.lookup(shop_id)
            if record is None:
                self.store.clear_hints(self.m.name, [shop_id])
                continue
            seen.add(shop_id)
            yield record

    def _outcomes(self) -> Iterator[Any]:
        """Converted records not yet delivered; quarantine recorded as it happens."""
        r = self.result
        name = self.m.name
        dropped = self.store.dropped(name)
        hinted = {h.shop_id for h in self.store.hints(name)}
        in_quarantine = {q.shop_id for q in self.store.open_quarantine(name)}
        for chunk in _chunks(self._records(), self.chunk):
            ids = [self._id(rec) for rec in chunk]
            done = self.store.delivered(name, [i for i in ids if i])
            # a hint for an order that is delivered or dropped has done its work: without this
            # it stays, and every later run fetches that order again
            settled = [i for i in ids if i in hinted and (i in done or i in dropped)]
            if settled:
                self.store.clear_hints(name, settled)
            for rec, shop_id in zip(chunk, ids):
                r.counts["fetched"] += 1
                if shop_id in done:
                    r.counts["already_delivered"] += 1
                    continue
                if shop_id in dropped:
                    r.counts["dropped_skipped"] += 1
                    continue
                outcome = self.converter.convert(rec)
                if isinstance(outcome, Excluded):
                    r.counts["excluded"] += 1
                    self.store.clear_hints(name, [outcome.shop_id])
                    if outcome.shop_id in in_quarantine:  # cancelled or unpaid since: nothing to fix
                        self.store.release(name, [outcome.shop_id])
                elif isinstance(outcome, Quarantined):
                    # the run's output and report say no more than the state keeps (e-mail redacted)
                    outcome = replace(outcome, reason=clean_reason(outcome.reason))
                    r.counts["quarantined"] += 1
                    r.quarantined.append(outcome)
                    self.store.quarantine(name, outcome.shop_id, outcome.number, outcome.reason, clock_now())
                else:
                    yield outcome
            if self.progress:
                self.progress(r.counts)

    def _deliver(self, builder: DocumentBuilder, refs: list[OrderRef]) -> None:
        r = self.result
        self._seq += 1
        info = self._batch_info(builder.count)
        file_name = self._file_name(info)
        while self.outbox.exists(file_name):  # an earlier run's file of the same day
            self._seq += 1
            info = self._batch_info(builder.count)
            file_name = self._file_name(info)
        self.store.create_batch(self.m.name, info.id, str(self.outbox.path(file_name).absolute()), refs,
                                created_at=clock_now(), run_id=r.run_id)
        with self.outbox.write(file_name) as f:
            builder.write(f, info.as_context())
        self.store.mark_delivered(info.id, self.outbox.checksum(file_name), clock_now())
        ids = [ref.shop_id for ref in refs]
        self.store.release(self.m.name, ids)
        self.store.clear_hints(self.m.name, ids)
        r.counts["delivered"] += len(refs)
        r.counts["files"] += 1
        r.files.append(file_name)
        self._delivered_this_year += len(refs)

    # -- helpers ----------------------------------------------------------------------------
    def _new_builder(self) -> DocumentBuilder:
        return DocumentBuilder(self.m, self.validator)

    def _batch_info(self, count: int) -> BatchInfo:
        stamp = self._stamp
        return BatchInfo(id=f"{self.m.name}-{stamp:%Y%m%dT%H%M%SZ}-{self._seq}-{uuid.uuid4().hex[:8]}",
                         created=stamp.strftime("%Y-%m-%dT%H:%M:%SZ"), date=stamp.strftime("%Y-%m-%d"),
                         seq=self._seq, count=count)

    def _file_name(self, info: BatchInfo) -> str:
        try:
            return self._file_template({"batch": info.as_context(), "tables": self.m.tables}).strip()
        except EvaluationError as exc:
            raise MappingError(f"sink.directory.name: {exc}", file=str(self.m.file)) from None

    def _id(self, record: Any) -> str:
        if isinstance(record, BrokenRecord):
            return record.source_name
        try:
            return str(self.m.record_id({"record": record}))
        except EvaluationError:
            return ""

    def _created(self, record: dict) -> str | None:
        try:
            return str(self.m.record_created({"record": record, "tables": self.m.tables}))
        except EvaluationError:
            return None


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
