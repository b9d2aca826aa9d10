"""The preview table: the columns of Asperion's import screen, in Dutch money format."""

from __future__ import annotations

from decimal import Decimal
from typing import Sequence, cast

from engine.config.mapping import Column
from engine.convert.money import ZERO, dutch


def table(columns: Sequence[Column], rows: Sequence[Sequence[object]], total_label: str = "Totaal") -> str:
    """A plain-text table with a total row under the amount columns."""
    if not columns:
        return ""
    is_amount = [c.amount is not None for c in columns]
    cells = [[dutch(cast(Decimal, v)) if is_amount[i] else str(v) for i, v in enumerate(row)] for row in rows]
    totals = []
    for i, col in enumerate(columns):
        if is_amount[i]:
            totals.append(dutch(sum((Decimal(cast(Decimal, r[i])) for r in rows), ZERO)))
        else:
            totals.append(total_label if i == 0 else "")
    header = [c.title for c in columns]
    widths = [max(len(x[i]) for x in [header, totals, *cells]) for i in range(len(columns))]

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(widths[i]) if is_amount[i] else v.ljust(widths[i]) for i, v in enumerate(values)]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(c) for c in cells), rule, line(totals)])
