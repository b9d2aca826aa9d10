"""The credit stage of a run: from the credits the shop shows to credit notes, exactly once.

After the run's orders, before its delivery is finished (a credit note goes in the same file,
or through the same API, as the invoices): every credit of ``credit.from`` is checked against
the state, and a credit of a delivered order that is neither booked nor settled becomes a
credit note (engine/convert/pipeline.py ``convert_credit``), handed to the same sink as an invoice. The
sink's pending/delivered bookkeeping makes it exactly once; the ``credits`` table remembers what
each credit took off its order, so that the next never takes more than is left.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

from engine.clock import now as clock_now
from engine.convert.credits import Credit, from_lists, from_record
from engine.errors import OrderError
from engine.convert.money import ZERO
from engine.convert.pipeline import Converted, Quarantined, Unbooked
from engine.io.sources import BrokenRecord
from engine.ops.state.base import CreditEntry

if TYPE_CHECKING:
    from engine.ops.runner import Runner

#: statuses after which a credit is not looked at again (``waiting`` is: its order may go out)
FINAL = ("settled", "flagged")


def credits_of_record(runner: "Runner", record: dict, order_id: str) -> list[tuple[Credit, dict]]:
    """What a delivered order seen again says of itself (``when:`` sources); a condition that
    cannot be evaluated is reported, not the run's end."""
    ctx = {"record": record, "tables": runner.m.tables, "now": runner.converter.now}
    try:
        assert runner.m.credit is not None  # asked only of a mapping with a credit section
        return [(c, record) for c in from_record(runner.m.credit, ctx, order_id)]
    except OrderError as exc:
        runner.result.messages.append(f"order {order_id}: {exc.reason}")
        return []


class CreditRun:
    def __init__(self, runner: "Runner", sink: Any, window: dict[str, str]):
        self.r = runner
        self.sink = sink
        self.window = window
        self.name = runner.m.name
        self._records: dict[str, Any] = {}

    def book(self) -> None:
        r = self.r
        found = list(r.record_credits)
        base = {"tables": r.m.tables, "now": r.converter.now}
        assert r.m.credit is not None  # a credit run runs only for a mapping with a credit section
        if hasattr(r.source, "list_items"):
            for c in from_lists(r.m.credit, r.source, self.window, base):
                if isinstance(c, str):
                    r.result.messages.append(c)
                else:
                    found.append((c, None))
        # amounts first: a credit of "what is left" (a return without an amount, a cancellation)
        # comes after the credit invoices of the same order
        found.sort(key=lambda pair: pair[0].amount is None)
        found = list({c.id: (c, rec) for c, rec in reversed(found)}.items())[::-1]
        credits = [pair for _, pair in found]
        if not credits:
            return
        ids = [c.id for c, _ in credits]
        delivered = r.store.delivered(self.name, ids)
        known = {e.credit_id: e for e in r.store.credits(self.name, {c.order_id for c, _ in credits})}
        orders_out = r.store.delivered(self.name, {c.order_id for c, _ in credits}) | r.accepted
        for credit, record in credits:
            if credit.id in delivered or credit.id in r.accepted:
                continue
            entry = known.get(credit.id)
            if entry is not None and entry.status in FINAL:
                continue
            if credit.order_id not in orders_out:
                if record is None and (entry is None or entry.status != "waiting"):
                    self._unbooked(credit, "waiting", f"{credit.reference}: order {credit.order_id} was never "
                                   f"booked by this connector, so there is no invoice to credit; check it in the "
                                   f"shop and book by hand if it was invoiced elsewhere", known)
                continue
            self._book(credit, record, known)

    def _book(self, credit: Credit, record: Any, known: dict[str, CreditEntry]) -> None:
        r = self.r
        if record is None:
            record = self._lookup(credit.order_id)
            if record is None or isinstance(record, BrokenRecord):
                why = record.reason if isinstance(record, BrokenRecord) else "the shop no longer has it"
                r.result.messages.append(f"{credit.reference} of order {credit.order_id}: not credited now, "
                                         f"the order cannot be read ({why}); tried again next run")
                return
        before = self._credited(credit, known)
        outcome = r.converter.convert_credit(record, credit, before,
                                             getattr(r._destination, "original_invoice", None))
        if isinstance(outcome, Unbooked):
            self._unbooked(credit, outcome.status, outcome.reason, known, outcome.number)
        elif isinstance(outcome, Quarantined):
            r._quarantine(outcome)
        elif isinstance(outcome, Converted):
            assert outcome.context is not None  # a credit note's outcome carries its context
            amount = outcome.context["credit"]["amount"]
            entry = CreditEntry(credit.id, credit.order_id, amount, "booked", credit.reference, clock_now())
            r.store.record_credit(self.name, entry)   # before the sink: the next credit sees it
            known[credit.id] = entry
            if not r._accept(self.sink, outcome):
                known.pop(credit.id)

    def _credited(self, credit: Credit, known: dict[str, CreditEntry]) -> Decimal:
        """What the order's other credit notes took, those delivered or handed to the sink now."""
        others = [e for e in known.values()
                  if e.order_id == credit.order_id and e.status == "booked" and e.credit_id != credit.id]
        out = self.r.store.delivered(self.name, [e.credit_id for e in others]) | self.r.accepted
        return sum((e.amount for e in others if e.credit_id in out), ZERO)

    def _unbooked(self, credit: Credit, status: str, reason: str, known: dict[str, CreditEntry],
                  number: str | None = None) -> None:
        r = self.r
        entry = CreditEntry(credit.id, credit.order_id, credit.amount or ZERO, status, reason, clock_now())
        r.store.record_credit(self.name, entry)
        known[credit.id] = entry
        if status != "settled":   # nothing left to credit: the earlier credits said it all
            r.result.counts["credits_unbooked"] += 1
            r.flag(number or credit.id, f"not credited: {reason}")

    def _lookup(self, order_id: str) -> Any:
        if order_id not in self._records:
            self._records[order_id] = self.r.source.lookup(order_id)
        return self._records[order_id]
