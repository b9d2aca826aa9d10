"""Evaluating a compiled expression or template for one record, failures named by field.

A failure becomes an :class:`OrderError` naming the mapping field ("invoice.total: …"),
so the record is quarantined with a reason that says where to look.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from engine.convert import money
from engine.errors import OrderError
from engine.expr.expressions import EvaluationError


def value(expr, ctx: dict[str, Any], what: str) -> Any:
    try:
        return expr._fn(ctx)  # noqa: SLF001 - the compiled function itself: one call less per value
    except EvaluationError as exc:
        raise OrderError(f"{what}: {exc}", field=what) from None


def call(fn, ctx: dict[str, Any], what: str) -> Any:
    """``fn(ctx)`` of a compiled function (generated code calls them so), failures named as in :func:`value`."""
    try:
        return fn(ctx)
    except EvaluationError as exc:
        raise OrderError(f"{what}: {exc}", field=what) from None


def amount(expr, ctx: dict[str, Any], what: str) -> Decimal:
    return as_amount(value(expr, ctx, what), what)


def as_amount(result: Any, what: str) -> Decimal:
    """``result`` as a Decimal amount; anything else is the record's fault, named by field."""
    try:
        return money.to_decimal(result, what)
    except (TypeError, ValueError) as exc:
        raise OrderError(f"{what}: {exc}", field=what) from None


def text(tmpl, ctx: dict[str, Any], what: str) -> str:
    if tmpl is None:
        return ""
    try:
        return tmpl._fn(ctx)  # noqa: SLF001
    except EvaluationError as exc:
        raise OrderError(f"{what}: {exc}", field=what) from None
