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
from datetime import date, datetime
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping
from zoneinfo import ZoneInfo

from engine.clock import now as clock_now
from engine.ops.credit_run import CreditRun, credits_of_record
from engine.convert.credits import is_credit_id
from engine.output.xsd import Validator
from engine.errors import MappingError, OrderError
from engine.config.mapping import LoadedMapping
from engine.io.outbox import Outbox
from engine.convert.pipeline import Converter, Excluded, Quarantined
from engine.ops.intake import Intake, poll_window
from engine.io.sinks import Sink
from engine.ops.state import OrderRef
from engine.ops.state.base import clean_reason
from engine.ops.state.rehearsal import RunState

PLAN_LIMITS = {"basis": 250, "plus": None}
DEFAULT_PLAN = "plus"
DEFAULT_OUTBOX = "outbox"


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
    #: the orders not counted, by the ``where`` condition they fail
    excluded_by: dict[str, int] = field(default_factory=dict)
    flags: list[tuple[str, str]] = field(default_factory=list)   # (number, message): up to the runner's flags_kept
    flag_count: int = 0
    messages: list[str] = field(default_factory=list)


#: The plans count invoices per calendar year where the shops are (CCV Shop and Asperion are
#: Dutch): an order delivered at 00:30 on 1 January counts in the new year, not the old.
PLAN_YEAR_ZONE = "Europe/Amsterdam"


def plan_year(stamp: datetime) -> int:
    """The plan year of a moment."""
    return stamp.astimezone(ZoneInfo(PLAN_YEAR_ZONE)).year


def resolve_plan(mapping: LoadedMapping, environ: Mapping[str, str], shop_plan: str | None = None) -> str:
    """The plan a run counts against: a hosted shop's, else MAPPER_PLAN, else the mapping's."""
    return shop_plan or environ.get("MAPPER_PLAN") or mapping.plan or DEFAULT_PLAN


def resolve_outbox(mapping: LoadedMapping, option: str | Path | None, environ: Mapping[str, str]) -> Path:
    """Where the files go: --outbox, else MAPPER_OUTBOX, else the mapping's sink.directory.path."""
    return Path(option or environ.get("MAPPER_OUTBOX") or mapping.sink.directory.path or DEFAULT_OUTBOX)


def plan_limit(plan: str) -> int | None:
    if plan not in PLAN_LIMITS:
        raise MappingError(f"plan '{plan}' is not known", hint="use basis (250 invoices a year) or plus (unlimited)")
    return PLAN_LIMITS[plan]


class Runner:
    def __init__(self, mapping: LoadedMapping, source: Any, store: RunState, outbox: Outbox | None = None, *,
                 plan: str = "plus", since: date | None = None, until: date | None = None,
                 progress: Callable[[dict[str, int]], None] | None = None, chunk: int = 200,
                 matcher: Any = None, destination: Any = None, sink: Sink | None = None,
                 window: dict[str, str] | None = None, validator: Validator | None = None,
                 flags_kept: int | None = None):
        """``outbox`` for a file mapping; ``destination`` (an ApiDestination) for an API one;
        ``sink`` instead of both (the dry-run's preview, with a :class:`RehearsalState`).
        ``window``: what the source's templates see (default: the poll window); ``flags_kept``:
        at most this many flags listed (a preview's table; a run's report lists them all)."""
        self.m = mapping
        self.source = source
        self.store = store
        self.limit = plan_limit(plan)
        self.plan = plan
        self.since, self.until = since, until
        self.progress = progress
        self.chunk = chunk
        self.validator = validator or Validator(mapping.xsd_path)
        self.converter = Converter(mapping, matcher=matcher, validator=self.validator)
        self.result = RunResult()
        self.flags_kept = flags_kept
        self._stamp = clock_now()
        self._delivered_this_year = 0
        self._outbox, self._destination, self._given_sink = outbox, destination, sink
        window = window or poll_window(mapping, since, until, self._stamp.date())
        start = date.fromisoformat(window["start"]) if window["start"] else None
        self.intake = Intake(mapping, source, store, window=window, start=start, until=until,
                             since=since, chunk=chunk, counts=self.result.counts,
                             on_delivered=self._delivered_seen_again,
                             on_refused=lambda shop_id, reason: self._quarantine(Quarantined(shop_id, shop_id, reason)),
                             progress=(lambda: progress(self.result.counts)) if progress else None)
        self.accepted: set[str] = set()      # ids handed to the sink by this run
        self.record_credits: list[Any] = []  # (Credit, record): what delivered orders seen again say

    def _sink(self) -> Any:
        if self._given_sink is not None:
            return self._given_sink
        # a delivering sink records its batches in the store (a StateStore, or a hosted
        # shop's view of one: engine.hosted.runs.ShopState)
        if self._destination is not None:
            from engine.io.sinks.api import ApiSink
            return ApiSink(self._destination, self.store, self.m.name, clock_now, self.result.run_id)
        from engine.io.sinks.directory import DirectorySink
        assert self._outbox is not None  # a file mapping is run with an outbox
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
            window = self.intake.window
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
            duplicates = self.intake.duplicates
            if duplicates:
                shown = ", ".join(duplicates[:10]) + (" …" if len(duplicates) > 10 else "")
                r.messages.append(f"{len(duplicates)} order id(s) came twice in the intake and were "
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
        for message in outcome.flags:
            self.flag(outcome.number, message)
        self._delivered(delivered)
        return True

    def flag(self, number: str, message: str) -> None:
        """A flag for the bookkeeper on an order or credit note in the delivery."""
        r = self.result
        r.flag_count += 1
        if self.flags_kept is None or len(r.flags) < self.flags_kept:
            r.flags.append((number, message))

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

    def _delivered_seen_again(self, record: Any, shop_id: str) -> None:
        if self.m.credit is not None:  # cancelled since? (credit.from ... when:)
            self.record_credits.extend(credits_of_record(self, record, shop_id))

    # -- stages -----------------------------------------------------------------------------
    def _close_interrupted_runs(self) -> None:
        """Earlier runs that never finished were killed (the caller holds the run lock): say so,
        instead of showing them as running for ever."""
        for run in self.store.last_runs(self.m.name, 100):
            if run.finished_at is None and run.id != self.result.run_id:
                self.store.finish_run(run.id, "interrupted", run.counts, finished_at=clock_now())


    def _outcomes(self) -> Iterator[Any]:
        """Converted records not yet delivered; quarantine recorded as it happens."""
        r = self.result
        name = self.m.name
        in_quarantine = {q.shop_id for q in self.store.open_quarantine(name)}
        for outcome in self.converter.convert_all(self.intake.records()):
            if isinstance(outcome, Excluded):
                r.counts["excluded"] += 1
                r.excluded_by[outcome.condition] = r.excluded_by.get(outcome.condition, 0) + 1
                self.store.clear_hints(name, [outcome.shop_id])
                self.store.unhold(name, [outcome.shop_id])   # cancelled since: nothing to hold
                if outcome.shop_id in in_quarantine:  # cancelled or unpaid since: nothing to fix
                    self.store.release(name, [outcome.shop_id])
            elif isinstance(outcome, Quarantined):
                self._quarantine(outcome)
            else:
                yield outcome
