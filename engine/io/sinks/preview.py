"""The dry-run's sink: every converted record goes into one document (aXML, or the API's
bodies as JSON lines), written to ``out`` at the end, and into the preview table; nothing is
delivered, so ``accept`` and ``finish`` report no order as delivered."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, BinaryIO, Callable

from engine.clock import now
from engine.convert.credits import is_credit_id
from engine.convert.money import ZERO
from engine.output.document import BatchInfo, DocumentBuilder
from engine.output.xsd import Validator


class PreviewSink:
    def __init__(self, mapping: Any, validator: Validator, out: BinaryIO | None, bodies: Any = None,
                 max_rows: int = 500):
        """``bodies``: for a mapping without XML output, what renders the API's bodies;
        ``max_rows``: the preview table's rows kept (its totals count every record)."""
        self.m = mapping
        self.out = out
        self.before_delivery: Callable[[], None] = lambda: None
        self.files: list[str] = []
        self.messages: list[str] = []
        self._xml = bodies is None
        self._builder = DocumentBuilder(mapping, validator) if bodies is None else bodies
        self.max_rows = max_rows
        #: the preview table: rows (up to max_rows), the column totals; invoices and credit notes in it
        self.rows: list[list[Any]] = []
        self.totals: list[Decimal | None] = [ZERO if c.amount is not None else None for c in mapping.columns]
        self.invoices = 0
        self.credit_notes = 0

    @property
    def pending(self) -> int:
        """The invoices accepted and not delivered: all of them (the plan's limit counts them)."""
        return self.invoices

    def prepare(self) -> None:
        pass

    def recover(self) -> dict[str, int]:
        return {"recovered": 0, "redone": 0}

    def accept(self, outcome: Any) -> list[str]:
        self._builder.add(outcome.xml if self._xml else outcome)
        if is_credit_id(outcome.shop_id):
            self.credit_notes += 1
        else:
            self.invoices += 1
        for i, value in enumerate(outcome.preview):
            total = self.totals[i]
            if total is not None:
                self.totals[i] = total + value
        if len(self.rows) < self.max_rows:
            self.rows.append(outcome.preview)
        return []

    def finish(self) -> list[str]:
        if self.out is not None:
            stamp = now()
            batch = BatchInfo(id=f"{self.m.name}-preview-{stamp:%Y%m%dT%H%M%SZ}",
                              created=stamp.strftime("%Y-%m-%dT%H:%M:%SZ"), date=stamp.strftime("%Y-%m-%d"),
                              seq=1, count=self._builder.count)
            self._builder.write(self.out, batch.as_context())
        return []

    def close(self) -> None:
        pass
