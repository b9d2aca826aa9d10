"""The intake: which records a run (or a dry-run) converts, in which order, each once.

1. the source's records of the poll window, those created outside it left out (a shop's list
   filters on another date than the creation date, fixtures are not filtered at all);
2. an id listed twice (a page that shifted, a copied file) is taken once;
3. webhook hints, orders held by the plan and open quarantine, each re-fetched from the
   source by id;
4. what earlier runs delivered, or the operator dropped, is left out (counted).

``mapper run`` and ``mapper dry-run`` both read their records from here, so a preview shows
what a run would convert.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any, Callable, Iterator

from engine.batching import chunks
from engine.clock import now as clock_now
from engine.convert.credits import is_credit_id
from engine.convert.pipeline import in_window
from engine.expr.expressions import EvaluationError
from engine.io.sources import BrokenRecord, Source
from engine.ops.state.rehearsal import RunState

#: what the intake counts (a run's report carries them; ``fetched`` includes what was delivered
#: or dropped before)
COUNTS = ("fetched", "already_delivered", "dropped_skipped", "outside_window", "duplicates",
          "hints_refused", "hints_deferred")


def poll_window(mapping: Any, since: date | None, until: date | None, today: date | None) -> dict[str, str]:
    """The window the source's templates see (``start``, ``end``: ISO dates, "" for open):
    --since/--until, else the mapping's look-back from ``today`` (None: no look-back, as for
    a folder of fixtures)."""
    if since is None and today is not None:
        since = today - timedelta(days=mapping.look_back_days)
    return {"start": since.isoformat() if since else "", "end": until.isoformat() if until else ""}


class Intake:
    """The records to convert. ``start``/``until`` bound the creation date (None: open);
    ``window`` is what the source's templates see; ``store``: a run's state, or a
    rehearsal's (engine.ops.state.rehearsal).
    ``counts``: the dict to count in (a run's, so that its progress shows them as they grow)."""

    def __init__(self, mapping: Any, source: Source, store: RunState, *, window: dict[str, str],
                 start: date | None, until: date | None, since: date | None = None,
                 chunk: int = 200, counts: dict[str, int] | None = None,
                 on_delivered: Callable[[Any, str], None] | None = None,
                 on_refused: Callable[[str, str], None] | None = None,
                 progress: Callable[[], None] | None = None):
        self.m = mapping
        self.source = source
        self.store = store
        self.window = window
        self.start, self.until, self.since = start, until, since
        self.chunk = chunk
        self.counts = counts if counts is not None else {}
        for key in COUNTS:
            self.counts.setdefault(key, 0)
        self.duplicates: list[str] = []   # ids listed more than once: taken once
        #: called with each record an earlier run delivered (the run looks for credits in it)
        self.on_delivered = on_delivered
        #: called with (id, reason) for a quarantined order the shop refuses to show
        self.on_refused = on_refused
        self.progress = progress
        self._max_lookups = mapping.webhooks.max_lookups_per_run

    # -- what to convert -------------------------------------------------------------------
    def records(self) -> Iterator[Any]:
        """The records to convert: neither delivered nor dropped (counted as they are read)."""
        name = self.m.name
        dropped = self.store.dropped(name)
        hinted = {h.shop_id for h in self.store.hints(name)}
        for chunk in chunks(self._listed(), self.chunk):
            ids = [self.record_id(rec) for rec in chunk]
            done = self.store.delivered(name, [i for i in ids if i])
            # a hint for an order that is delivered or dropped has done its work: without this
            # it stays, and every later run fetches that order again
            settled = [i for i in ids if i in hinted and (i in done or i in dropped)]
            if settled:
                self.store.clear_hints(name, settled)
            for rec, shop_id in zip(chunk, ids):
                self.counts["fetched"] += 1
                if shop_id in done:
                    self.counts["already_delivered"] += 1
                    if self.on_delivered is not None:
                        self.on_delivered(rec, shop_id)
                    continue
                if shop_id in dropped:
                    self.counts["dropped_skipped"] += 1
                    continue
                yield rec
            if self.progress:
                self.progress()

    def _listed(self) -> Iterator[Any]:
        """The window's records, then hints, held orders and open quarantine by id."""
        seen: set[str] = set()
        for record in self.source.records(self.window):
            if not isinstance(record, BrokenRecord):
                if self.start or self.until:
                    created = self.created(record)
                    if created is not None and not in_window(created, self.start, self.until):
                        self.counts["outside_window"] += 1
                        continue
                shop_id = self.record_id(record)
                if shop_id and shop_id in seen:
                    self.counts["duplicates"] += 1
                    self.duplicates.append(shop_id)
                    continue
                seen.add(shop_id)
            yield record
        yield from self._refetched(seen)

    def _refetched(self, seen: set[str]) -> Iterator[Any]:
        name = self.m.name
        start = self._start_date(self.start or clock_now().date())
        hinted = [h.shop_id for h in self.store.hints(name) if h.shop_id not in seen]
        budget = self._max_lookups
        if len(hinted) > budget:       # hints take at most this share of a run's requests
            self.counts["hints_deferred"] = len(hinted) - budget
            hinted = hinted[:budget]
        # a credit note in quarantine is tried again from its credit (credit.from), not looked up
        quarantined = [q.shop_id for q in self.store.open_quarantine(name) if not is_credit_id(q.shop_id)]
        held = [ref.shop_id for ref, _ in self.store.held(name)]
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
        created = self.created(record)
        day = date.fromisoformat(created[:10]) if created else None
        if day is None or day >= start or (self.since is not None and day >= self.since):
            return True
        self.counts["hints_refused"] += 1
        self.store.refuse_hint(self.m.name, self.record_id(record),
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
                self.counts["hints_refused"] += 1
                self.store.refuse_hint(self.m.name, shop_id, reason, clock_now())
            elif self.on_refused is not None:
                self.on_refused(shop_id, reason)
            return None
        if record is None:     # gone from the shop: nothing to wait for
            self.store.clear_hints(self.m.name, [shop_id])
            self.store.unhold(self.m.name, [shop_id])
        return record

    # -- a record's id and creation time ---------------------------------------------------
    def record_id(self, record: Any) -> str:
        """The record's id; a broken record's source name; "" where it has none (the
        converter quarantines it with the reason)."""
        if isinstance(record, BrokenRecord):
            return record.source_name
        if not isinstance(record, dict):
            return ""
        try:
            return str(self.m.record_id({"record": record}))
        except EvaluationError:
            return ""

    def created(self, record: Any) -> str | None:
        if not isinstance(record, dict):
            return None
        try:
            return str(self.m.record_created({"record": record, "tables": self.m.tables}))
        except EvaluationError:
            return None

