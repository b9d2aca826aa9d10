"""From a record to invoice lines and totals: VAT split, pro rata allocation, totals check.

The rules (shared/spec/bookkeeping.md): charged amounts are the truth and are only
split, never re-priced (2.5); VAT is derived from the charged side (2.4); charges follow
the goods' VAT, split pro rata over the rate groups (3.1, 3.2); order-level discounts
are split over goods and charges, one negative line per rate (4.2); VAT is rounded per
line or per rate total as the mapping declares (2.3); the lines must add up to what the
customer paid, a difference within tolerance becoming an explicit rounding line (6.2),
beyond it the order is quarantined (6.3).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from engine.convert import money
from engine.errors import OrderError
from engine.expr.evaluate import as_amount
from engine.expr.sandbox import allow_fields
from engine.convert.money import ZERO

if TYPE_CHECKING:   # the loader imports this module (credit notes): no import back at run time
    from engine.config.mapping import InvoiceSpec, RowLimits


@dataclass(slots=True)
class Line:
    kind: str  # row | charge | discount | rounding
    description: str
    article_code: str
    quantity: Decimal
    rate: Decimal
    excl: Decimal = ZERO
    vat: Decimal = ZERO
    incl: Decimal = ZERO
    vat_class: str = ""

    @property
    def unit_price_excl(self) -> Decimal:
        if self.quantity == 0:
            return self.excl
        return money.round_to(self.excl / self.quantity, 4)

    def __getitem__(self, key: str) -> Any:  # templates reach fields as line.excl or line['excl']
        return getattr(self, key)


@dataclass(slots=True)
class Invoice:
    description: str
    date: str
    payment_code: str
    currency: str
    lines: list[Line]
    total_excl: Decimal
    total_vat: Decimal
    total_incl: Decimal
    flags: list[str] = field(default_factory=list)

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)


allow_fields(Line, ("kind", "description", "article_code", "quantity", "rate", "excl", "vat", "incl", "vat_class",
                   "unit_price_excl"))
allow_fields(Invoice, ("description", "date", "payment_code", "currency", "lines", "total_excl", "total_vat",
                      "total_incl", "flags"))


def _euro(value: Decimal) -> str:
    return f"€{money.plain(value)}"


def _count(value: Decimal) -> str:
    return format(value.normalize(), "f")


def _check_row(number: int, description: str, quantity: Decimal, amount: Decimal,
               limits: RowLimits) -> None:
    """A goods row that makes no sense is not booked (``invoice.lines.limits`` declared)."""
    what = f"row {number} ({description})"
    if quantity == 0 and amount != 0:
        raise OrderError(f"{what}: quantity 0 but an amount of {_euro(amount)}", field="invoice.lines.quantity")
    if (quantity < 0 < amount) or (amount < 0 < quantity):
        raise OrderError(f"{what}: quantity {_count(quantity)} with an amount of {_euro(amount)}: one of them "
                         f"has the wrong sign (a return belongs in a credit note)", field="invoice.lines.quantity")
    if limits.max_quantity is not None and abs(quantity) > limits.max_quantity:
        raise OrderError(f"{what}: quantity {_count(quantity)} is beyond the declared limit of "
                         f"{_count(limits.max_quantity)} (invoice.lines.limits)", field="invoice.lines.quantity")
    if limits.max_amount is not None and abs(amount) > limits.max_amount:
        raise OrderError(f"{what}: an amount of {_euro(amount)} is beyond the declared limit of "
                         f"{_euro(limits.max_amount)} (invoice.lines.limits)", field="invoice.lines.amount")


def build_invoice(spec: InvoiceSpec, code, ctx: dict[str, Any], vat_classes) -> Invoice:
    """Compute the invoice for one record. ``code``: the spec's values as generated functions
    (engine/convert/stages.py, ``InvoiceCode``); ``vat_classes(rate, date) -> (class, flag)``."""
    include, date, items = code.head(ctx)
    include = bool(include)
    if not items:
        raise OrderError("the order has no rows (invoice.lines.each is empty)", field="invoice.lines.each")
    name = spec.lines.name
    basis_incl = spec.allocation_basis == "incl"

    def to_basis(amount: Decimal, rate: Decimal) -> Decimal:
        if include == basis_incl:
            return amount
        if include:  # charged incl, weigh excl
            return amount - money.vat_from_incl(amount, rate)
        return amount + money.vat_from_excl(amount, rate)

    lines: list[Line] = []
    weights: dict[Decimal, Decimal] = {}
    row_ctx = dict(ctx)
    row_values = code.row
    limits = spec.lines.limits
    for number, item in enumerate(items, start=1):
        row_ctx[name] = item
        amount, rate, description, article_code, quantity = row_values(row_ctx)
        if limits is not None:
            _check_row(number, description, quantity, amount, limits)
        line = Line("row", description, article_code, quantity, rate)
        line.incl = amount  # the charged amount, on whichever side; settled in _settle_vat
        lines.append(line)
        weights[rate] = weights.get(rate, ZERO) + to_basis(amount, rate)

    # Charges follow the goods: split pro rata over the goods' rate groups.
    rates = sorted(weights, reverse=True)
    # A declared surcharge rate books charges and discounts at that one rate, as the shop
    # charged them, instead of splitting them pro rata (bookkeeping 6.1, the alternative).
    fixed_rate = None if code.surcharge_rate is None else code.surcharge_rate(ctx)
    if fixed_rate is not None:  # a rate that is no number quarantines the order, like any amount
        fixed_rate = as_amount(fixed_rate, "invoice.surcharge_rate")

    def split(amount: Decimal, base: dict[Decimal, Decimal]) -> list[tuple[Decimal, Decimal]]:
        if fixed_rate is not None:
            return [(fixed_rate, amount)]
        return list(zip(rates, money.allocate(amount, [base.get(r, ZERO) for r in rates], rates)))

    for amount_of, label_of in code.charges:
        amount = money.round_cents(amount_of(ctx))
        if amount == 0:
            continue
        label = label_of(ctx)
        for rate, part in split(amount, weights):
            if part != 0:
                line = Line("charge", label, "", Decimal(1), rate)
                line.incl = part
                lines.append(line)
    # Discounts: split over goods and charges, one negative line per rate.
    for amount_of, label_of in code.discounts:
        amount = money.round_cents(amount_of(ctx))
        if amount == 0:
            continue
        label = label_of(ctx)
        base = _goods_weights(lines, to_basis, kinds=("row", "charge"))
        for rate, part in split(amount, base):
            if part != 0:
                line = Line("discount", label, "", Decimal(1), rate)
                line.incl = ZERO - part
                lines.append(line)

    _settle_vat(lines, include, spec.vat_rounding)
    total_excl = sum((l.excl for l in lines), ZERO)
    total_vat = sum((l.vat for l in lines), ZERO)
    total_incl = sum((l.incl for l in lines), ZERO)

    charged = money.round_cents(code.total(ctx))
    diff = charged - total_incl
    flags: list[str] = []
    if diff != 0:
        tolerance, rl = spec.tolerance, spec.rounding_line
        if abs(diff) > tolerance or rl is None:
            raise OrderError(f"lines {_euro(total_incl)}, charged {_euro(charged)}, difference {_euro(abs(diff))} "
                             f"exceeds tolerance {_euro(tolerance)}", field="invoice.total")
        line = Line("rounding", code.rounding_label(ctx), "", Decimal(1),
                    rl.rate, excl=diff, vat=ZERO, incl=diff, vat_class=rl.vat_class)
        lines.append(line)
        total_excl += diff
        total_incl += diff

    classes: dict[Decimal, tuple[str, str | None]] = {}  # one order, one date: a rate's class is the same
    for line in lines:
        if line.kind != "rounding":
            found = classes.get(line.rate)
            if found is None:
                found = classes[line.rate] = vat_classes(line.rate, date)
            line.vat_class, flag = found
            if flag and flag not in flags:
                flags.append(flag)

    if code.reported_vat is not None:
        shop_vat = money.round_cents(code.reported_vat(ctx))
        if shop_vat != total_vat:
            flags.append(f"booked VAT {_euro(total_vat)} differs from the shop's {_euro(shop_vat)} "
                         f"(reported, not quarantined)")

    description, payment_code, currency = code.tail(ctx)
    return Invoice(
        description=description, date=date, payment_code=payment_code,
        currency="EUR" if spec.currency is None else str(currency),
        lines=lines, total_excl=total_excl, total_vat=total_vat, total_incl=total_incl, flags=flags,
    )


def _goods_weights(lines: list[Line], to_basis, kinds=("row",)) -> dict[Decimal, Decimal]:
    out: dict[Decimal, Decimal] = {}
    for l in lines:
        if l.kind in kinds:
            out[l.rate] = out.get(l.rate, ZERO) + to_basis(l.incl, l.rate)
    return out


def _settle_vat(lines: list[Line], include: bool, rounding: str) -> None:
    """Turn each line's charged amount (kept in ``incl``) into excl, VAT and incl."""
    for l in lines:
        charged = l.incl
        if include:
            l.vat = money.vat_from_incl(charged, l.rate)
            l.excl = charged - l.vat
        else:
            l.excl = charged
            l.vat = money.vat_from_excl(charged, l.rate)
            l.incl = charged + l.vat
    if rounding != "per_rate":
        return
    groups: dict[Decimal, list[Line]] = {}
    for l in lines:
        groups.setdefault(l.rate, []).append(l)
    for rate, group in groups.items():
        if include:
            want = money.vat_from_incl(sum((l.incl for l in group), ZERO), rate)
        else:
            want = money.vat_from_excl(sum((l.excl for l in group), ZERO), rate)
        diff = want - sum((l.vat for l in group), ZERO)
        if diff:
            # The per-rate difference (a cent or two) goes on the group's largest line.
            big = max(group, key=lambda l: (abs(l.incl), l.kind == "row"))
            big.vat += diff
            if include:
                big.excl -= diff
            else:
                big.incl += diff
