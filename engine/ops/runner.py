"""`mapper run`: intake -> convert -> deliver exactly once -> record.

Exactly once (design principle 5), with the state store and a sink:

1. recover: the sink finishes or redoes what a crashed run left pending
   (:mod:`engine.io.sinks.directory`, :mod:`engine.io.sinks.api`);
2. intake: the poll window (paid orders created in the look-back, or --since/--until), plus
   webhook hints and open quarantine, each re-fetched from the source by id;
3. skip what is delivered; convert the rest; quarantine what fails, with its reason;
4. deliver through the sink: every order recorded as pending before it leaves, and as
   delivered once it has (a whole file in the outbox, or an object created by the API).

Two runs of one mapping never overlap (the store's run lock).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import Any, Callable, Iterable, Iterator
from zoneinfo import ZoneInfo

from engine.clock import now as clock_now
from engine.ops.credit_run import CreditRun, credits_of_record
from engine.convert.credits import is_credit_id
from engine.output.xsd import Validator
from engine.errors import MappingError, OrderError
from engine.expr.expressions import EvaluationError
from engine.config.mapping import Mapping_
from engine.io.outbox import Outbox
from engine.convert.pipeline import Converter, Excluded, Quarantined, in_window
from engine.io.sources.fixtures import BrokenRecord
from engine.ops.state import OrderRef, StateStore
from engine.ops.state.base import clean_reason

PLAN_LIMITS = {"basis": 250, "plus": None}
DEFAULT_HINT_LOOKUPS = 500


@dataclass
class RunResult:
    run_id: int | None = None
    outcome: str = "failed"        # until the run says otherwise: a run that broke off is no success
    counts: dict[str, int] = field(default_factory=lambda: {
        "fetched": 0, "delivered": 0, "already_delivered": 0, "quarantined": 0, "excluded": 0,
        "held_by_plan": 0, "files": 0, "recovered": 0, "redone": 0, "dropped_skipped": 0,
        "duplicates": 0, "hints_refused": 0, "hints_deferred": 0, "credited": 0, "credits_unbooked": 0})
    files: list[str] = field(default_factory=list)
    quarantined: list[Quarantined] = field(default_factory=list)
    flags: list[tuple[str, str]] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)


#: The plans count invoices per calendar year where the shops are (CCV Shop and Asperion are
#: Dutch): an order delivered at 00:30 on 1 January counts in the new year, not the old.
PLAN_YEAR_ZONE = "Europe/Amsterdam"


def plan_year(stamp: datetime) -> int:
    """The plan year of a moment."""
    return stamp.astimezone(ZoneInfo(PLAN_YEAR_ZONE)).year


def plan_limit(plan: str) -> int | None:
    if plan not in PLAN_LIMITS:
        raise MappingError(f"plan '{plan}' is not known", hint="use basis (250 invoices a year) or plus (unlimited)")
    return PLAN_LIMITS[plan]


class Runner:
    def __init__(self, mapping: Mapping_, source: Any, store: StateStore, outbox: Outbox | None = None, *,
                 plan: str = "plus", since: date | None = None, until: date | None = None,
                 progress: Callable[[dict[str, int]], None] | None = None, chunk: int = 200,
                 matcher: Any = None, destination: Any = None):
        """``outbox`` for a file mapping; ``destination`` (an ApiDestination) for an API one."""
        self.m = mapping
        self.source = source
        self.store = store
        self.limit = plan_limit(plan)
        self.plan = plan
        self.since, self.until = since, until
        self.progress = progress
        self.chunk = chunk
        self.validator = Validator(mapping.xsd_path)
        self.converter = Converter(mapping, matcher=matcher, validator=self.validator)
        self.result = RunResult()
        self._stamp = clock_now()
        self._delivered_this_year = 0
        self._outbox, self._destination = outbox, destination
        self._duplicates: list[str] = []   # ids the intake listed more than once
        self._webhooks = (mapping.raw.get("intake") or {}).get("webhooks") or {}
        self.accepted: set[str] = set()      # ids handed to the sink by this run
        self.record_credits: list[Any] = []  # (Credit, record): what delivered orders seen again say

    def _sink(self) -> Any:
        if self._destination is not None:
            from engine.io.sinks.api import ApiSink
            return ApiSink(self._destination, self.store, self.m.name, clock_now, self.result.run_id)
        from engine.io.sinks.directory import DirectorySink
        return DirectorySink(self.m, self.store, self._outbox, self.validator, self._stamp, clock_now,
                             self.result.run_id)

    # -- the run ----------------------------------------------------------------------------
    def run(self) -> RunResult:
        name = self.m.name
        r = self.result
        r.run_id = self.store.begin_run(name, self._stamp, "backfill" if self.since else "daily")
        sink = self._sink()
        save_debtors = self.converter.matcher.flush
        sink.before_delivery = save_debtors
        try:
            self._close_interrupted_runs()
            sink.prepare()
            for key, n in sink.recover().items():
                r.counts[key] += n
            self._delivered_this_year = self.store.delivered_count(name, plan_year(self._stamp), PLAN_YEAR_ZONE)
            window = self._window()
            for outcome in self._outcomes():
                if self.limit is not None and self._delivered_this_year + sink.pending >= self.limit:
                    r.counts["held_by_plan"] += 1      # kept: re-fetched by every run until it goes
                    self.store.hold(name, [OrderRef(outcome.shop_id, outcome.number, outcome.invoice.date)],
                                    clock_now())
                    continue
                self._accept(sink, outcome)
            if self.m.credit is not None:
                CreditRun(self, sink, window).book()
            self._delivered(sink.finish())
            save_debtors(before_delivery=False)  # those of orders quarantined or held by the plan
            if r.counts["held_by_plan"]:
                r.messages.append(
                    f"plan {self.plan}: {self.limit} invoices a year reached; {r.counts['held_by_plan']} paid "
                    f"orders are held (not lost) and go out when the plan changes or the year turns "
                    f"(kept in the state: `mapper status` lists them)")
            if r.counts["hints_refused"]:
                r.messages.append(f"{r.counts['hints_refused']} webhook hint(s) refused: `mapper hints "
                                  f"list` shows them and why, `mapper hints drop` removes them")
            if r.counts["hints_deferred"]:
                r.messages.append(f"{r.counts['hints_deferred']} hinted order(s) wait for the next run "
                                  f"(intake.webhooks.max_lookups_per_run)")
            if self._duplicates:
                shown = ", ".join(self._duplicates[:10]) + (" …" if len(self._duplicates) > 10 else "")
                r.messages.append(f"{len(self._duplicates)} order id(s) came twice in the intake and were "
                                  f"taken once: {shown}")
            r.outcome = "quarantined" if r.counts["quarantined"] else "ok"
        except BaseException as exc:
            r.outcome = "failed"
            r.messages.append(str(exc))
            raise
        finally:
            r.messages.extend(getattr(sink, "messages", ()))
            r.files = list(sink.files)
            r.counts["files"] = len(r.files)
            sink.close()
            self.store.finish_run(r.run_id, r.outcome, r.counts, finished_at=clock_now())
        return r

    def _accept(self, sink: Any, outcome: Any) -> bool:
        """Hand a converted order or credit note to the sink; False if it refused it."""
        try:
            delivered = sink.accept(outcome)
        except OrderError as exc:
            self._quarantine(Quarantined(outcome.shop_id, outcome.number, exc.reason, exc.field))
            return False
        self.accepted.add(outcome.shop_id)
        self.result.flags.extend((outcome.number, f) for f in outcome.flags)
        self._delivered(delivered)
        return True

    def _delivered(self, shop_ids: list[str]) -> None:
        if not shop_ids:
            return
        self.store.release(self.m.name, shop_ids)
        self.store.clear_hints(self.m.name, shop_ids)
        self.store.unhold(self.m.name, shop_ids)
        credits = sum(1 for i in shop_ids if is_credit_id(i))  # credit notes are no invoices of the plan
        self.result.counts["delivered"] += len(shop_ids) - credits
        self.result.counts["credited"] += credits
        self._delivered_this_year += len(shop_ids) - credits

    def _quarantine(self, outcome: Quarantined) -> None:
        # the run's output and report say no more than the state keeps (e-mail redacted)
        outcome = replace(outcome, reason=clean_reason(outcome.reason))
        self.result.counts["quarantined"] += 1
        self.result.quarantined.append(outcome)
        self.store.quarantine(self.m.name, outcome.shop_id, outcome.number, outcome.reason, clock_now())

    # -- stages -----------------------------------------------------------------------------
    def _close_interrupted_runs(self) -> None:
        """Earlier runs that never finished were killed (the caller holds the run lock): say so,
        instead of showing them as running for ever."""
        for run in self.store.last_runs(self.m.name, 100):
            if run.finished_at is None and run.id != self.result.run_id:
                self.store.finish_run(run.id, "interrupted", run.counts, finished_at=clock_now())

    def _window(self) -> dict[str, str]:
        """The poll window: the look-back (or --since/--until), as the source's templates see it."""
        return {"start": self.since.isoformat() if self.since else
                (self._stamp.date() - timedelta(days=self.m.look_back_days)).isoformat(),
                "end": self.until.isoformat() if self.until else ""}

    def _records(self) -> Iterator[Any]:
        """The window's records, then hints and open quarantine re-fetched by id."""
        seen: set[str] = set()
        window = self._window()
        for record in self.source.records(window):
            if not isinstance(record, BrokenRecord):
                created = self._created(record)
                if created is not None and not in_window(created, date.fromisoformat(window["start"]), self.until):
                    continue
                shop_id = self._id(record)
                if shop_id and shop_id in seen:   # listed twice (a page shifted, a copied file): once is enough
                    self.result.counts["duplicates"] += 1
                    self._duplicates.append(shop_id)
                    continue
                seen.add(shop_id)
            yield record
        start = self._start_date(date.fromisoformat(window["start"]))
        hinted = [h.shop_id for h in self.store.hints(self.m.name) if h.shop_id not in seen]
        budget = int(self._webhooks.get("max_lookups_per_run", DEFAULT_HINT_LOOKUPS))
        if len(hinted) > budget:       # hints take at most this share of a run's requests
            self.result.counts["hints_deferred"] = len(hinted) - budget
            hinted = hinted[:budget]
        # a credit note in quarantine is tried again from its credit (credit.from), not looked up
        quarantined = [q.shop_id for q in self.store.open_quarantine(self.m.name) if not is_credit_id(q.shop_id)]
        held = [ref.shop_id for ref, _ in self.store.held(self.m.name)]
        for shop_id in dict.fromkeys(hinted + held + quarantined):
            if shop_id in seen:
                continue
            is_hint = shop_id in hinted
            record = self._lookup(shop_id, is_hint)
            if record is None:
                continue
            if is_hint and shop_id not in quarantined and shop_id not in held \
                    and not self._after_start(record, start):
                continue
            seen.add(shop_id)
            yield record

    def _start_date(self, window_start: date) -> date:
        """The earliest creation date this connector considers on its own: the first run's
        window start, recorded then. A hint for an older order is refused unless this run is a
        back-fill that covers it (the operator said --since)."""
        return self.store.start_date(self.m.name) or \
            self.store.record_start_date(self.m.name, window_start, clock_now())

    def _after_start(self, record: Any, start: date) -> bool:
        created = self._created(record)
        day = date.fromisoformat(created[:10]) if created else None
        if day is None or day >= start or (self.since is not None and day >= self.since):
            return True
        self.result.counts["hints_refused"] += 1
        self.store.refuse_hint(self.m.name, self._id(record),
                               f"created {day}, before this connector's start {start}: a webhook "
                               f"does not deliver such an order (book it by hand, or back-fill with "
                               f"--since)", clock_now())
        return False

    def _lookup(self, shop_id: str, is_hint: bool) -> Any:
        """One record by id; a hint or quarantine entry the shop refuses to show (a 4xx other
        than 404) is set aside with the answer instead of failing every run from now on."""
        from engine.io.http.client import HttpError
        try:
            record = self.source.lookup(shop_id)
        except HttpError as exc:
            if exc.status is None or not 400 <= exc.status < 500 or exc.status in (404, 408, 429):
                raise
            reason = f"the shop refused to show this order: {exc}"
            if is_hint:
                self.result.counts["hints_refused"] += 1
                self.store.refuse_hint(self.m.name, shop_id, reason, clock_now())
            else:
                self._quarantine(Quarantined(shop_id, shop_id, reason))
            return None
        if record is None:     # gone from the shop: nothing to wait for
            self.store.clear_hints(self.m.name, [shop_id])
            self.store.unhold(self.m.name, [shop_id])
        return record

    def _outcomes(self) -> Iterator[Any]:
        """Converted records not yet delivered; quarantine recorded as it happens."""
        r = self.result
        name = self.m.name
        in_quarantine = {q.shop_id for q in self.store.open_quarantine(name)}
        for outcome in self.converter.convert_all(self._to_convert()):
            if isinstance(outcome, Excluded):
                r.counts["excluded"] += 1
                self.store.clear_hints(name, [outcome.shop_id])
                self.store.unhold(name, [outcome.shop_id])   # cancelled since: nothing to hold
                if outcome.shop_id in in_quarantine:  # cancelled or unpaid since: nothing to fix
                    self.store.release(name, [outcome.shop_id])
            elif isinstance(outcome, Quarantined):
                self._quarantine(outcome)
            else:
                yield outcome

    def _to_convert(self) -> Iterator[Any]:
        """The records to convert: neither delivered nor dropped (counted as they are read)."""
        r = self.result
        name = self.m.name
        dropped = self.store.dropped(name)
        hinted = {h.shop_id for h in self.store.hints(name)}
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
                    if self.m.credit is not None:  # cancelled since? (credit.from ... when:)
                        self.record_credits.extend(credits_of_record(self, rec, shop_id))
                    continue
                if shop_id in dropped:
                    r.counts["dropped_skipped"] += 1
                    continue
                yield rec
            if self.progress:
                self.progress(r.counts)

    # -- helpers ----------------------------------------------------------------------------
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
