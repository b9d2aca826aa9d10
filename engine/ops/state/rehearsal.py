"""What a run asks of the state, and the state of a rehearsal (``mapper dry-run``).

:class:`RunState` is the part of :class:`~engine.ops.state.StateStore` that the runner, its
intake and its credit stage use: the reads that decide what to convert and the writes that
record what happened. Every store has it. :class:`RehearsalState` has it too, over a store
opened read-only: it answers the reads from that store and takes the writes without keeping
them, so that ``dry-run`` is the runner itself, with the preview sink, and shows what a run
would do (delivered and dropped orders left out, hinted, held and quarantined orders looked
up again, the plan's limit applied) while the state stays as it was.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Iterable, Mapping, Protocol

from engine.ops.state.base import CreditEntry, Hint, OrderRef, QuarantineEntry, Run, StateStore


class RunState(Protocol):
    """The state operations of a run (engine.ops.runner, engine.ops.intake, engine.ops.credit_run)."""

    # -- reads: what to convert
    def delivered(self, mapping: str, shop_ids: Iterable[str]) -> set[str]: ...
    def dropped(self, mapping: str) -> set[str]: ...
    def hints(self, mapping: str) -> list[Hint]: ...
    def held(self, mapping: str) -> list[tuple[OrderRef, datetime]]: ...
    def open_quarantine(self, mapping: str) -> list[QuarantineEntry]: ...
    def delivered_count(self, mapping: str, year: int, zone: str = "UTC") -> int: ...
    def last_runs(self, mapping: str, limit: int = 10) -> list[Run]: ...
    def credits(self, mapping: str, order_ids: Iterable[str] | None = None) -> list[CreditEntry]: ...
    def start_date(self, mapping: str) -> date | None: ...

    # -- writes: what happened
    def begin_run(self, mapping: str, started_at: datetime, mode: str) -> int: ...
    def finish_run(self, run_id: int, outcome: str, counts: Mapping[str, int],
                   report_path: str | None = None, finished_at: datetime | None = None) -> None: ...
    def quarantine(self, mapping: str, shop_id: str, number: str | None, reason: str,
                   seen_at: datetime) -> object: ...
    def release(self, mapping: str, shop_ids: Iterable[str]) -> int: ...
    def hold(self, mapping: str, orders: Iterable[OrderRef], at: datetime) -> int: ...
    def unhold(self, mapping: str, shop_ids: Iterable[str]) -> int: ...
    def clear_hints(self, mapping: str, shop_ids: Iterable[str]) -> int: ...
    def refuse_hint(self, mapping: str, shop_id: str, reason: str, at: datetime) -> None: ...
    def record_start_date(self, mapping: str, day: date, at: datetime) -> date: ...
    def record_credit(self, mapping: str, entry: CreditEntry) -> None: ...


class RehearsalState:
    """A run's state that reads from ``store`` (opened read-only) and keeps none of its writes."""

    def __init__(self, store: StateStore):
        self.store = store
        self.location = store.location

    def delivered(self, mapping: str, shop_ids: Iterable[str]) -> set[str]:
        return self.store.delivered(mapping, shop_ids)

    def dropped(self, mapping: str) -> set[str]:
        return self.store.dropped(mapping)

    def hints(self, mapping: str) -> list[Hint]:
        return self.store.hints(mapping)

    def held(self, mapping: str) -> list[tuple[OrderRef, datetime]]:
        return self.store.held(mapping)

    def open_quarantine(self, mapping: str) -> list[QuarantineEntry]:
        return self.store.open_quarantine(mapping)

    def delivered_count(self, mapping: str, year: int, zone: str = "UTC") -> int:
        return self.store.delivered_count(mapping, year, zone)

    def last_runs(self, mapping: str, limit: int = 10) -> list[Run]:
        return []    # a rehearsal closes no interrupted run: it is not one

    def credits(self, mapping: str, order_ids: Iterable[str] | None = None) -> list[CreditEntry]:
        return self.store.credits(mapping, order_ids)

    def start_date(self, mapping: str) -> date | None:
        return self.store.start_date(mapping)

    # -- the writes of a run: taken, not kept
    def begin_run(self, mapping: str, started_at: datetime, mode: str) -> int:
        return 0

    def finish_run(self, run_id: int, outcome: str, counts: Mapping[str, int],
                   report_path: str | None = None, finished_at: datetime | None = None) -> None:
        pass

    def quarantine(self, mapping: str, shop_id: str, number: str | None, reason: str,
                   seen_at: datetime) -> None:
        pass

    def release(self, mapping: str, shop_ids: Iterable[str]) -> int:
        return 0

    def hold(self, mapping: str, orders: Iterable[OrderRef], at: datetime) -> int:
        return 0

    def unhold(self, mapping: str, shop_ids: Iterable[str]) -> int:
        return 0

    def clear_hints(self, mapping: str, shop_ids: Iterable[str]) -> int:
        return 0

    def refuse_hint(self, mapping: str, shop_id: str, reason: str, at: datetime) -> None:
        pass

    def record_start_date(self, mapping: str, day: date, at: datetime) -> date:
        return day    # what a first run would record

    def record_credit(self, mapping: str, entry: CreditEntry) -> None:
        pass
