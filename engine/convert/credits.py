"""Credit notes (bookkeeping.md 8.4): what says an order was refunded, and the arithmetic.

A delivered order that the shop later credits gets one concept credit invoice per credit:
the original invoice's lines negated (a full credit), or its rate split negated pro rata (a
partial one). What counts as a credit is declared in the mapping's ``credit.from``:

* a list the source serves (``list:``, e.g. the shop's credit invoices or credited returns),
  each item naming its order, a key, the amount credited incl. VAT and when;
* a condition on a delivered order seen again (``when:``, e.g. ``record.status == 8``).

A credit is identified by order + key (``<order id>/credit/<key>``): that id is delivered once,
as an invoice is, through the same sink and state. A credit without an amount takes what is
left of the order; a credit never takes more than is left (what was booked before counts),
and a credit of an order that never went out is reported, not booked.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Iterator

from engine.expr import evaluate

from engine.config.specs import ListSpec
from engine.convert import money
from engine.errors import OrderError
from engine.expr.evaluate import as_amount
from engine.expr.expressions import Expression, Template
from engine.convert.invoice import Invoice, Line
from engine.convert.money import ZERO

#: what joins an order id and a credit key into the id a credit is delivered under
SEPARATOR = "/credit/"


@dataclass
class CreditSource:
    """One entry of ``credit.from``, compiled."""

    name: str
    request: ListSpec | None         # list: the request that lists the credits
    when: Expression | None          # or: a condition on a delivered order
    order: Expression | None         # list: the item's order id
    key: Template
    amount: Expression | None        # incl. VAT, positive; none: what is left of the order
    created: Expression | None       # a timestamp; the credit's date
    reference: Template | None       # what the credit note says it is (its Reason)


@dataclass
class CreditSpec:
    """The mapping's ``credit`` section, compiled."""

    sources: list[CreditSource]
    description: Template
    date: Template
    partial_line: Template


@dataclass
class Credit:
    """One credit the shop shows for one order."""

    order_id: str
    key: str
    amount: Decimal | None
    created: str
    reference: str
    source: str

    @property
    def id(self) -> str:
        return credit_id(self.order_id, self.key)


def credit_id(order_id: str, key: str) -> str:
    return f"{order_id}{SEPARATOR}{key}"


def is_credit_id(shop_id: str) -> bool:
    return SEPARATOR in shop_id


def order_of(shop_id: str) -> str:
    """The order id of a credit id (the id itself for an order)."""
    return shop_id.split(SEPARATOR, 1)[0]


# ----------------------------------------------------------------------------- evidence

def from_lists(spec: CreditSpec, source: Any, window: dict[str, str], base_ctx: dict[str, Any]) -> Iterator[Credit | str]:
    """The credits the source's lists show, in declared order; a string for an item that
    cannot be read (it names the list, the item and the field)."""
    for src in spec.sources:
        if src.request is None:
            continue
        for item in source.list_items(src.request, window):
            ctx = dict(base_ctx, item=item)
            try:
                order_id = evaluate.value(src.order, ctx, f"credit.from '{src.name}' order")
                if order_id in (None, ""):
                    raise OrderError("names no order", field=f"credit.from '{src.name}' order")
                yield _credit(src, ctx, str(order_id))
            except OrderError as exc:
                ident = item.get("id", "?") if isinstance(item, dict) else "?"
                yield f"credit.from '{src.name}': item {ident}: {exc.reason}"
            except Exception as exc:  # noqa: BLE001 - one unreadable item is reported, not the run's end
                ident = item.get("id", "?") if isinstance(item, dict) else "?"
                yield f"credit.from '{src.name}': item {ident}: {exc}"


def from_record(spec: CreditSpec, ctx: dict[str, Any], order_id: str) -> list[Credit]:
    """The credits a delivered order's own state says (``when:`` sources)."""
    out = []
    for src in spec.sources:
        if src.when is not None and evaluate.value(src.when, ctx, f"credit.from '{src.name}' when"):
            out.append(_credit(src, ctx, order_id))
    return out


def _credit(src: CreditSource, ctx: dict[str, Any], order_id: str) -> Credit:
    what = f"credit.from '{src.name}'"
    key = evaluate.text(src.key, ctx, f"{what} key").strip()
    if not key or SEPARATOR in key or len(key) > 100:
        raise OrderError(f"the key {key!r} is empty, too long or holds {SEPARATOR!r}", field=f"{what} key")
    amount = None
    if src.amount is not None:
        value = evaluate.value(src.amount, ctx, f"{what} amount")
        if value is not None:
            amount = money.round_cents(as_amount(value, f"{what} amount"))
            if amount <= 0:
                raise OrderError(f"credits {money.plain(amount)}: a credit is a positive amount incl. VAT",
                                 field=f"{what} amount")
    created = evaluate.value(src.created, ctx, f"{what} created") if src.created is not None else ctx.get("now")
    reference = evaluate.text(src.reference, ctx, f"{what} reference") if src.reference is not None else src.name
    return Credit(order_id, key, amount, str(created or ctx.get("now") or ""), reference.strip() or src.name,
                  src.name)


# ----------------------------------------------------------------------------- arithmetic

def credit_amount(credit: Credit, original_total: Decimal, credited_before: Decimal) -> tuple[Decimal, str | None]:
    """What this credit books, or ``(0, why not)``: never more than is left of the order."""
    left = original_total - credited_before
    if credit.amount is None:
        if left <= 0:
            return ZERO, f"nothing left to credit: {_euro(credited_before)} of {_euro(original_total)} is credited already"
        return left, None
    if credit.amount > left:
        return ZERO, (f"credits {_euro(credit.amount)}, but only {_euro(left)} of the invoice's "
                      f"{_euro(original_total)} is left to credit; check the credits in the shop and book by hand")
    return credit.amount, None


def credit_invoice(original: Invoice, amount: Decimal, description: str, date: str,
                   partial_label) -> Invoice:
    """The credit invoice: the original's lines negated when ``amount`` is its whole total,
    else one line per VAT rate (and class) of the original, the amount split pro rata over
    what each rate holds incl. VAT (``partial_label(rate, vat_class) -> text``)."""
    if amount == original.total_incl:
        lines = [Line(l.kind, l.description, l.article_code, ZERO - l.quantity, l.rate,
                      excl=ZERO - l.excl, vat=ZERO - l.vat, incl=ZERO - l.incl, vat_class=l.vat_class)
                 for l in original.lines]
    else:
        groups: dict[tuple[Decimal, str], Decimal] = {}
        for l in original.lines:
            groups[(l.rate, l.vat_class)] = groups.get((l.rate, l.vat_class), ZERO) + l.incl
        keys = [k for k, v in groups.items() if v > 0] or list(groups)
        parts = money.allocate(amount, [groups[k] for k in keys], [k[0] for k in keys])
        lines = []
        for (rate, vat_class), part in zip(keys, parts):
            if part == 0:
                continue
            vat = money.vat_from_incl(part, rate)
            lines.append(Line("credit", partial_label(rate, vat_class), "", Decimal(-1), rate,
                              excl=ZERO - (part - vat), vat=ZERO - vat, incl=ZERO - part, vat_class=vat_class))
    return Invoice(description=description, date=date, payment_code=original.payment_code,
                   currency=original.currency, lines=lines,
                   total_excl=sum((l.excl for l in lines), ZERO), total_vat=sum((l.vat for l in lines), ZERO),
                   total_incl=sum((l.incl for l in lines), ZERO))


def _euro(value: Decimal) -> str:
    return f"€{money.plain(value)}"
