"""The values a record's conversion evaluates before writing, as generated Python.

The pipeline evaluates some forty expressions and templates per order before the writer
runs: ``where``, ``let``, ``checks``, ``flags``, the customer, the invoice and its rows,
the preview columns. Called one by one (``evaluate.value`` -> the compiled function -> its
fast path) each costs three Python calls; here each stage is one generated function with
every template's fast-path code inlined, as the writer is (render.py). Where the inlined
code raises, or yields Jinja's Undefined, the template's own function runs instead, through
the same ``evaluate`` functions, so values, errors and the field they name are the same, in
the same order. A template the generator does not cover is simply called.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Callable

from engine.expr.codegen import run_generated
from engine.errors import MappingError, OrderError
from engine.expr.evaluate import as_amount, call
from engine.expr.expressions import Expression, InlineCode, Template
from engine.config.mapping import LoadedMapping
from engine.convert.money import round_cents


@dataclass
class InvoiceCode:
    """The invoice's values, for :func:`engine.convert.invoice.build_invoice`."""

    head: Callable  # ctx -> (prices_include_vat, date, items)
    row: Callable  # row ctx -> (amount in cents, rate, description, article_code, quantity)
    charges: list[tuple[Callable, Callable]]  # (amount, label), each ctx -> value
    discounts: list[tuple[Callable, Callable]]
    surcharge_rate: Callable | None
    total: Callable
    rounding_label: Callable | None
    reported_vat: Callable | None
    tail: Callable  # ctx -> (description, payment_code, currency)


@dataclass
class StageCode:
    """A mapping's generated stage functions."""

    prelude: Callable  # (ctx, flags, credit) -> index of the first false where, or -1; lets, checks, flags
    #                    (credit=True: no where, no flags)
    customer: Callable  # ctx -> (key, name)
    invoice: InvoiceCode
    outcome: Callable  # ctx -> (created, preview values)
    source: str = ""  # the generated Python of all of them (`mapper explain --code`)


def compile_stages(mapping: LoadedMapping, inline: bool = True) -> StageCode:
    """The stage functions of ``mapping``; each template called, not inlined, where Python
    cannot compile the inlined code (or with ``inline=False``: the reference the tests use)."""
    for inline in (True, False) if inline else (False,):
        try:
            return _StageWriter(inline).stages(mapping)
        except (SyntaxError, RecursionError, MemoryError, ValueError, OverflowError) as exc:
            failure = exc
    raise MappingError(f"the mapping is too large to compile ({failure})")


class _StageWriter:
    def __init__(self, inline: bool):
        self.code = InlineCode()
        self.inline = inline
        self.ns = self.code.ns
        self.ns.update({"_value": call, "_as_amount": as_amount, "_Decimal": Decimal,
                        "_OrderError": OrderError, "_round_cents": round_cents})
        self.lines: list[str] = []
        self.n = 0

    def emit(self, depth: int, line: str) -> None:
        self.lines.append("    " * depth + line)

    def name(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}{self.n}"

    def value(self, var: str, expr: Expression, what: str, depth: int, amount: bool = False) -> None:
        """Emit ``var = value of expr`` (``amount``: as a Decimal, as evaluate.amount)."""
        for line in self.code.assignment(var, expr, "c", what, self.inline):
            self.emit(depth, line)
        if amount:
            self.emit(depth, f"if type({var}) is not _Decimal: {var} = _as_amount({var}, {what!r})")

    def text(self, var: str, tmpl: Template | None, what: str, depth: int) -> None:
        """Emit ``var = text of tmpl`` (as evaluate.text: '' for no template)."""
        if tmpl is None:
            self.emit(depth, f"{var} = ''")
            return
        if tmpl.constant is not None:
            self.emit(depth, f"{var} = {self.code.const(tmpl.constant)}")
            return
        for line in self.code.assignment(var, tmpl, "c", what, self.inline):
            self.emit(depth, line)

    def function(self, signature: str, write: Callable[[], str]) -> str:
        """Emit ``def name(signature):`` with the body ``write`` emits; returns the name."""
        name = self.name("_stage")
        self.emit(0, f"def {name}({signature}):")
        self.emit(1, f"return {write()}")
        return name

    def one_value(self, expr: Expression | None, what: str, amount: bool = False) -> str | None:
        if expr is None:
            return None

        def write() -> str:
            self.value("v", expr, what, 1, amount)
            return "v"

        return self.function("c", write)

    def one_text(self, tmpl: Template | None, what: str) -> str:
        def write() -> str:
            self.text("v", tmpl, what, 1)
            return "v"

        return self.function("c", write)

    def stages(self, m: LoadedMapping) -> StageCode:
        names = {
            "prelude": self.function("c, flags, credit=False", lambda: self.prelude(m)),
            "customer": self.function("c", lambda: self.customer(m)),
            "outcome": self.function("c", lambda: self.outcome(m)),
        }
        inv = m.invoice
        rows = inv.lines
        invoice: dict[str, Any] = {  # InvoiceCode's fields: a name, None, or (for charges, discounts) pairs of them
            "head": self.function("c", lambda: self.values(
                ("value", inv.prices_include_vat, "invoice.prices_include_vat"),
                ("text", inv.date, "invoice.date"),
                ("value", rows.each, "invoice.lines.each"))),
            "row": self.function("c", lambda: self.values(
                ("cents", rows.amount, "invoice.lines.amount"),
                ("amount", rows.rate, "invoice.lines.rate"),
                ("text", rows.description, "invoice.lines.description"),
                ("text", rows.article_code, "invoice.lines.article_code"),
                ("amount", rows.quantity, "invoice.lines.quantity"))),
            "charges": [(self.one_value(t.amount, f"invoice.charges[{i}].amount", amount=True),
                         self.one_text(t.label, f"invoice.charges[{i}].label")) for i, t in enumerate(inv.charges)],
            "discounts": [(self.one_value(t.amount, f"invoice.discounts[{i}].amount", amount=True),
                           self.one_text(t.label, f"invoice.discounts[{i}].label"))
                          for i, t in enumerate(inv.discounts)],
            "surcharge_rate": self.one_value(inv.surcharge_rate, "invoice.surcharge_rate"),
            "total": self.one_value(inv.total, "invoice.total", amount=True),
            "rounding_label": (None if inv.rounding_line is None
                               else self.one_text(inv.rounding_line.label, "invoice.rounding_line.label")),
            "reported_vat": self.one_value(inv.reported_vat, "invoice.reported_vat", amount=True),
            "tail": self.function("c", lambda: self.values(
                ("text", inv.description, "invoice.description"),
                ("text", inv.payment_code, "invoice.payment_code"),
                ("value", inv.currency, "invoice.currency"))),
        }
        source = "\n".join(self.lines) + "\n"
        run_generated(source, f"stages of {m.name}", self.ns)

        def fn(name):  # the generated function of that name (None: none was needed)
            return None if name is None else self.ns[name]

        invoice = {k: [(fn(a), fn(b)) for a, b in v] if k in ("charges", "discounts") else fn(v)
                   for k, v in invoice.items()}
        return StageCode(**{k: fn(v) for k, v in names.items()}, invoice=InvoiceCode(**invoice), source=source)

    def values(self, *specs: tuple[str, Any, str]) -> str:
        """Emit each value in order; the tuple of them. A value of no expression is None."""
        out = []
        for kind, source, what in specs:
            var = self.name("v")
            if kind == "text":
                self.text(var, source, what, 1)
            elif source is None:
                self.emit(1, f"{var} = None")
            else:
                self.value(var, source, what, 1, amount=kind in ("amount", "cents"))
                if kind == "cents":
                    self.emit(1, f"{var} = _round_cents({var})")
            out.append(var)
        return "(" + "".join(v + ", " for v in out) + ")"

    def prelude(self, m: LoadedMapping) -> str:
        if m.where:  # a credit note is for a delivered order, whatever the filter says of it now
            self.emit(1, "if not credit:")
        for i, cond in enumerate(m.where):
            self.value("v", cond, f"where[{i}]", 2)
            self.emit(2, f"if not v: return {i}")
        for name, expr in m.let:
            self.value("v", expr, f"let.{name}", 1)
            self.emit(1, f"c[{name!r}] = v")
        for check in m.checks:
            depth = 1
            if check.when is not None:
                self.value("v", check.when, f"checks '{check.name}' when", 1)
                self.emit(1, "if v:")
                depth = 2
            self.value("v", check.expect, f"checks '{check.name}'", depth)
            self.emit(depth, "if not v:")
            self.text("t", check.message, f"checks '{check.name}' message", depth + 1)
            field = f"checks '{check.name}'"
            self.emit(depth + 1, f"raise _OrderError(t, field={field!r})")
        if m.flags:  # told when the order was booked; a credit note has its own
            self.emit(1, "if not credit:")
        for i, flag in enumerate(m.flags):
            self.value("v", flag.when, f"flags[{i}].when", 2)
            self.emit(2, "if v:")
            self.text("t", flag.message, f"flags[{i}].message", 3)
            self.emit(3, "flags.append(t)")
        return "-1"

    def customer(self, m: LoadedMapping) -> str:
        return self.values(("value", m.customer_key, "customer.key"), ("text", m.customer_name, "customer.name"))

    def outcome(self, m: LoadedMapping) -> str:
        self.value("created", m.record_created, "record.created", 1)
        self.emit(1, "preview = []")
        for col in m.columns:
            if col.amount is not None:
                self.value("v", col.amount, f"preview '{col.title}'", 1)
                self.emit(1, "preview.append(_Decimal(v))")
            else:
                self.text("v", col.text, f"preview '{col.title}'", 1)
                self.emit(1, "preview.append(v)")
        return "created, preview"
