"""The CCV Shop -> Asperion conversion written by hand: plain Python + lxml, no engine.

This is the yardstick for the engine's speed (bench/run.py) and an independent second
implementation of its output (tests/test_baseline.py checks the two are byte-identical).
It hard-codes what mappings/ccvshop_asperion.yaml declares: the same filter (paid,
completed, not cancelled), the same checks, the same VAT split (weights incl. VAT,
largest remainder with ties to the higher rate, VAT rounded per line, a rounding line
within the €0.02 tolerance), the same in-file debtor rule (the first order of an e-mail
address decides its debtor number), the same element tree and text cleaning, per-order
XSD validation, and the same document header (``MAPPER_NOW`` freezes Created/BatchId).
JSON is decoded as the engine decodes it (msgspec, numbers with a fraction as Decimal),
so the ratio measures the engine, not the parser.

    python bench/baseline.py --fixtures DIR --out FILE

It imports nothing from ``engine/`` on purpose.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import unicodedata
from datetime import datetime, timezone
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any, BinaryIO
from zoneinfo import ZoneInfo

import msgspec
from lxml import etree

ROOT = Path(__file__).resolve().parents[1]
XSD = ROOT / "schemas" / "asperion_axml.xsd"
MAPPING_NAME = "ccvshop-asperion"

CENT = Decimal("0.01")
FOUR = Decimal("0.0001")
ZERO = Decimal("0")
ONE = Decimal("1")
HUNDRED = Decimal("100")
TOLERANCE = Decimal("0.02")
AMSTERDAM = ZoneInfo("Europe/Amsterdam")

PAYMENT_CODES = {"iDEAL": "IDEAL", "Ideal": "IDEAL", "BankTransfer": "OVERBOEKING", "PayPal": "PAYPAL",
                 "CreditCard": "CREDITCARD", "Bancontact": "BANCONTACT", "Invoice": "Op factuur",
                 "AfterPay": "Op factuur", "Klarna": "KLARNA", "Cash": "CONTANT", "PIN": "PIN"}
EU = frozenset("AT BE BG CY CZ DE DK EE ES FI FR GR HR HU IE IT LT LU LV MT NL PL PT RO SE SI SK".split())

# ---------------------------------------------------------------------------- text

QUOTES = {"„": '"', "“": '"', "”": '"', "‟": '"', "‚": "'", "‘": "'", "’": "'", "‛": "'"}
_QUOTE_TABLE = str.maketrans(QUOTES)
_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_SPACES = re.compile(r"\s+")
_NL_POSTCODE = re.compile(r"^\s*(\d{4})\s*([A-Za-z]{2})\s*$")
_COMPACT = re.compile(r"[\s.\-]")


def xml_text(text: str) -> str:
    """Every output text: plain quotes, no XML-forbidden characters, trimmed."""
    return _FORBIDDEN.sub("", text.translate(_QUOTE_TABLE)).strip()


def clean(value: Any) -> str:
    """As xml_text, and runs of white space collapsed to one space."""
    if value is None:
        return ""
    return _SPACES.sub(" ", _FORBIDDEN.sub("", str(value).translate(_QUOTE_TABLE))).strip()


def show(value: Any) -> str:
    """A value as text: None is empty, a Decimal is written plainly."""
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value)


def postcode(value: Any, country: Any = "NL") -> str:
    text = "" if value is None else str(value)
    if (country or "NL") == "NL":
        m = _NL_POSTCODE.match(text)
        if m:
            return f"{m.group(1)} {m.group(2).upper()}"
    return _SPACES.sub(" ", text).strip().upper()


def compact(value: Any) -> str:
    return _COMPACT.sub("", "" if value is None else str(value)).upper()


def fold(value: Any) -> str:
    text = unicodedata.normalize("NFKD", "" if value is None else str(value))
    text = "".join(c for c in text if not unicodedata.combining(c))
    return _SPACES.sub(" ", text).strip().casefold()


# ---------------------------------------------------------------------------- money

def dec(value: Any) -> Decimal:
    if isinstance(value, Decimal):
        return value
    if isinstance(value, bool) or value is None or isinstance(value, float):
        raise ValueError(f"{value!r} is not an exact number")
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, str):
        result = Decimal(value.strip())  # InvalidOperation is an ArithmeticError
        if not result.is_finite():
            raise ValueError(f"{value!r} is not a finite number")
        return result
    raise ValueError(f"{value!r} is not a number")


def cents(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def money(value: Decimal) -> str:
    return f"{value.quantize(CENT, rounding=ROUND_HALF_UP):f}"


def unit_price(value: Decimal) -> str:
    text = f"{value.quantize(FOUR, rounding=ROUND_HALF_UP):f}"
    if "." in text:
        head, tail = text.split(".")
        return f"{head}.{tail.rstrip('0').ljust(2, '0')}"
    return text + ".00"


def quantity(value: Decimal) -> str:
    integral = value.to_integral_value()
    return f"{value.normalize():f}" if value != integral else f"{integral:f}"


def allocate(amount: Decimal, weights: list[Decimal], rates: list[Decimal]) -> list[Decimal]:
    """Whole cents over weights: truncated shares, then the largest remainders (ties: higher rate)."""
    total = sum(weights, ZERO)
    if total == 0:
        return [amount] + [ZERO] * (len(weights) - 1)
    negative = amount < 0
    size = -amount if negative else amount
    exact = [size * w / total for w in weights]
    parts = [e.quantize(CENT, rounding=ROUND_DOWN) for e in exact]
    left = int((size - sum(parts, ZERO)) / CENT)
    if left:
        order = sorted(range(len(weights)), key=lambda i: (parts[i] - exact[i], -rates[i], i))
        for i in order[:left]:
            parts[i] += CENT
    return [ZERO - p for p in parts] if negative else parts


# ---------------------------------------------------------------------------- conversion

class Refused(Exception):
    """The order is quarantined: not in the file."""


def local_date(value: Any) -> str:
    text = str(value).strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(AMSTERDAM).date().isoformat()


def quarter(day: str) -> str:
    return f"{day[:4]}-Q{(int(day[5:7]) - 1) // 3 + 1}"


def vat_class(rate: Decimal, day: str, intra: Any, country: str) -> tuple[str, str | None]:
    if rate == 21:
        return "Hoog", None
    if rate == 9:
        if day >= "2019-01-01":
            return "Laag", None
        return "Laag", "9% charged before 2019 (the low rate was 6% then)"
    if rate == 6 and day <= "2018-12-31":
        return "Laag", None
    if rate == 0:
        if intra:
            return "Verlegd", None
        if country not in EU:
            return "Export", "export outside the EU: keep the proof of exit"
        return "Nul", None
    raise Refused(f"VAT rate {rate:f}% on {day} has no VAT class")


class Line:
    __slots__ = ("description", "article_code", "quantity", "rate", "charged", "excl", "vat", "incl", "vat_class")

    def __init__(self, description: str, article_code: str, quantity: Decimal, rate: Decimal, charged: Decimal):
        self.description = description
        self.article_code = article_code
        self.quantity = quantity
        self.rate = rate
        self.charged = charged
        self.vat_class = "Nul"


def _sub(parent, tag: str, text: str) -> None:
    etree.SubElement(parent, tag).text = text


def _address(parent, kind: str, a: dict) -> None:
    el = etree.SubElement(parent, "Address", {"type": kind})
    _sub(el, "Street", clean(a["street"]))
    if text := xml_text(show(a["housenumber"])):
        _sub(el, "HouseNumber", text)
    if text := clean(a["housenumber_suffix"]):
        _sub(el, "HouseNumberSuffix", text)
    _sub(el, "PostalCode", xml_text(postcode(a["zipcode"], a["country_code"])))
    _sub(el, "City", clean(a["city"]))
    _sub(el, "CountryCode", xml_text(show(a["country_code"])))


class Converter:
    def __init__(self, schema: etree.XMLSchema):
        self.schema = schema
        self.debtors: dict[str, tuple[str, str]] = {}  # e-mail -> (debtor number, folded name)
        self.quarter_now = quarter(now().astimezone(AMSTERDAM).date().isoformat())

    def convert(self, o: dict) -> tuple[etree._Element, list[str], list[Any]] | None:
        """The Order element, flags and preview row; None when the order does not count."""
        if not o["paid"] or not o["is_completed"] or o["status"] == 8:
            return None
        customer = o["customer"]
        billing = customer["billingaddress"]
        delivery = customer["deliveryaddress"]
        has_delivery = (delivery["street"] or "") != "" and (
            (delivery["street"], delivery["housenumber"], postcode(delivery["zipcode"]))
            != (billing["street"], billing["housenumber"], postcode(billing["zipcode"])))
        country = (delivery["country_code"] if has_delivery else billing["country_code"]) or "NL"
        day = local_date(o["create_date"])
        rows = o["orderrows"]

        # checks: data that makes no sense (as the mapping declares them, in its order)
        if o["paid"] is not True and o["paid"] is not False:
            raise Refused("paid is not true or false")
        if o["total_price"] > 250000 or o["total_price"] < 0:
            raise Refused("beyond the limit, or negative")
        for r in rows:   # invoice.lines.limits
            count, price = Decimal(str(r["count"])), r["total_price"]
            if (count == 0 and price != 0) or count < 0 < price or price < 0 < count \
                    or abs(count) > 10000 or abs(price) > 100000:
                raise Refused("a row that makes no sense")
        # checks: how CCV composes the order's totals
        total_price, row_total = o["total_price"], o["total_orderrow_price"]
        shipping, pay_costs, extra = o["total_shipping"], o["paymethod_costs"], o["extra_costs"]
        discounts, points = o["total_discounts"], o["credit_point_discount"]
        include = o["order_row_taxes_included"]
        if sum(r["total_price"] for r in rows) != row_total:
            raise Refused("the rows do not add up to total_orderrow_price")
        parts = row_total + shipping + pay_costs + extra - discounts - points + (0 if include else o["total_tax"])
        if abs(total_price - parts) > TOLERANCE:
            raise Refused("total_price differs from its parts")
        if not o["is_intra_community_order"] and country in EU and country != "NL" \
                and o["total_tax"] == 0 and o["total_price"] != 0:
            raise Refused("0% VAT to a consumer in another EU country")
        flags = []
        if quarter(day) < self.quarter_now:
            flags.append(f"created in {quarter(day)}, booked in {self.quarter_now}: that quarter's VAT return "
                         f"is probably filed already")
        if (o["currency"] or "EUR") != "EUR":
            flags.append(f"an order in {o['currency']}: Asperion books in euros, check the amounts and the exchange rate")
        if (customer["btw"] or "") != "" and not o["is_intra_community_order"] and country != "NL":
            flags.append(f"a VAT number of a customer in {country} on an order charged with VAT: booked as a domestic sale")

        # debtor: by normalised e-mail; the CCV user id, or the order id for a guest
        email = customer["email"]
        key = "" if email is None else str(email).strip().lower()
        name = clean(billing["company"] or billing["full_name"])
        if not key:
            raise Refused("the customer has no e-mail address")
        user = o["user"]
        proposed = user["id"] if user else None
        if proposed is None or proposed == "":
            proposed = o["id"]
            if proposed is None or proposed == "":
                raise Refused("no debtor number")
        seen = self.debtors.get(key)
        if seen is None:
            debtor = str(proposed)
            self.debtors[key] = (debtor, fold(name))
        else:
            debtor, folded = seen
            if folded and fold(name) != folded:
                flags.append(f"e-mail shared with debtor {debtor} under another name")

        # lines: rows, charges split over the rates, discounts split over rows + charges
        include = bool(include)
        if not rows:
            raise Refused("the order has no rows")
        lines: list[Line] = []
        weights: dict[Decimal, Decimal] = {}
        for r in rows:
            amount = cents(dec(r["total_price"]))
            rate = dec(r["tax"])
            lines.append(Line(clean(r["product_name"]), show(r["product_number"]), dec(r["count"]), rate, amount))
            weights[rate] = weights.get(rate, ZERO) + (amount if include else amount + cents(amount * rate / HUNDRED))
        rates = sorted(weights, reverse=True)
        extra = dec(extra)
        charges = (("Verzendkosten", shipping), ("Betaalkosten", pay_costs),
                   (show(o["extra_costs_description"] or "Toeslag"), extra if extra > 0 else 0))
        # prices excl. VAT: costs and discounts at the shop's own rate, as charged
        fixed = None if include else dec(o["shipping_tax_percentage"])
        for label, amount in charges:
            amount = cents(dec(amount))
            if amount != 0:
                split = [(fixed, amount)] if fixed is not None else \
                    zip(rates, allocate(amount, [weights[r] for r in rates], rates))
                for rate, part in split:
                    if part != 0:
                        lines.append(Line(label, "", ONE, rate, part))
        coupon = o["discountcoupon"]
        discount_terms = (
            ("Korting" + (f" {show(coupon['code'])}" if coupon and coupon["code"] else ""), discounts),
            ("Spaarpunten", points),
            (show(o["extra_costs_description"] or "Korting"), -extra if extra < 0 else 0))
        base = None
        for label, amount in discount_terms:
            amount = cents(dec(amount))
            if amount != 0:
                if base is None:
                    base = {}
                    for l in lines:
                        c = l.charged
                        base[l.rate] = base.get(l.rate, ZERO) + (c if include else c + cents(c * l.rate / HUNDRED))
                shares = [(fixed, amount)] if fixed is not None else \
                    zip(rates, allocate(amount, [base.get(r, ZERO) for r in rates], rates))
                for rate, part in shares:
                    if part != 0:
                        lines.append(Line(label, "", ONE, rate, ZERO - part))

        # VAT per line, from the charged side
        total_excl = total_vat = total_incl = ZERO
        for l in lines:
            c = l.charged
            if include:
                l.vat = cents(c * l.rate / (HUNDRED + l.rate))
                l.excl = c - l.vat
                l.incl = c
            else:
                l.vat = cents(c * l.rate / HUNDRED)
                l.excl = c
                l.incl = c + l.vat
            total_excl += l.excl
            total_vat += l.vat
            total_incl += l.incl
        for l in lines:
            l.vat_class, flag = vat_class(l.rate, day, o["is_intra_community_order"], country)
            if flag and flag not in flags:
                flags.append(flag)
        diff = cents(dec(total_price)) - total_incl
        if diff != 0:
            if abs(diff) > TOLERANCE:
                raise Refused(f"lines €{money(total_incl)} differ from the charged total by €{money(abs(diff))}")
            r = Line("Afrondingsverschil", "", ONE, ZERO, diff)
            r.excl, r.vat, r.incl = diff, ZERO, diff
            lines.append(r)
            total_excl += diff
            total_incl += diff
        shop_vat = cents(dec(o["total_tax"]))
        if shop_vat != total_vat:
            flags.append(f"booked VAT €{money(total_vat)} differs from the shop's €{money(shop_vat)}")

        # the element
        invoice_number = o["invoicenumber"]
        description = f"Bestelling {show(o['ordernumber_full'])}" + (f" factuur {show(invoice_number)}" if invoice_number else "")
        payment_code = show(PAYMENT_CODES.get(o["paymethod"], o["paymethod_label"]))
        order = etree.Element("Order")
        _sub(order, "OrderNumber", xml_text(show(o["ordernumber_full"])))
        _sub(order, "OrderDate", day)
        _sub(order, "InvoiceDate", day)
        _sub(order, "Description", xml_text(description))
        _sub(order, "Status", "Concept")
        _sub(order, "PaymentCode", xml_text(payment_code))
        _sub(order, "Currency", xml_text(str(o["currency"])))
        d = etree.SubElement(order, "Debtor")
        _sub(d, "DebtorNumber", xml_text(debtor))
        _sub(d, "Name", name)
        if text := clean(billing["full_name"]):
            _sub(d, "ContactName", text)
        _sub(d, "Email", xml_text(key))
        if text := clean(billing["telephone"] or billing["mobile"]):
            _sub(d, "Phone", text)
        if text := compact(customer["btw"]):
            _sub(d, "VatNumber", xml_text(text))
        if text := compact(customer["kvk"]):
            _sub(d, "CocNumber", xml_text(text))
        _address(d, "invoice", billing)
        if has_delivery:
            _address(d, "delivery", delivery)
        for l in lines:
            el = etree.SubElement(order, "Orderline")
            _sub(el, "Description", xml_text(l.description))
            if text := xml_text(l.article_code):
                _sub(el, "ArticleCode", text)
            _sub(el, "Quantity", quantity(l.quantity))
            _sub(el, "UnitPriceExclVat", unit_price(l.excl if l.quantity == 0 else l.excl / l.quantity))
            _sub(el, "VatPercentage", quantity(l.rate))
            _sub(el, "VatClass", l.vat_class)
            _sub(el, "AmountExclVat", money(l.excl))
            _sub(el, "VatAmount", money(l.vat))
            _sub(el, "AmountInclVat", money(l.incl))
        _sub(order, "TotalExclVat", money(total_excl))
        _sub(order, "TotalVatAmount", money(total_vat))
        _sub(order, "TotalInclVat", money(total_incl))
        if not self.schema.validate(order):
            raise Refused("the XSD refuses it: " + str(self.schema.error_log.last_error))
        return order, flags, [total_excl, total_incl]


_DECODER = msgspec.json.Decoder(float_hook=Decimal)  # the same JSON parser as the engine


def _decode(data: bytes) -> Any:
    try:
        return _DECODER.decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return json.loads(data, parse_float=Decimal)  # a BOM, or an error to report


def read_orders(directory: Path):
    """(file name, order dict or None when unreadable) in file-name order."""
    names = sorted(e.name for e in os.scandir(directory) if e.name.endswith(".json") and e.is_file())
    for name in names:
        try:
            with open(os.path.join(directory, name), "rb") as f:
                data = _decode(f.read())
        except (OSError, ValueError):
            yield name, None
            continue
        yield name, data if isinstance(data, dict) else None


def now() -> datetime:
    frozen = os.environ.get("MAPPER_NOW")
    if frozen:
        value = datetime.fromisoformat(frozen.replace("Z", "+00:00"))
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    return datetime.now(timezone.utc)


def convert(directory: Path, out: BinaryIO | None) -> dict[str, Any]:
    """Convert every order in ``directory``; write the document to ``out``; a summary."""
    schema = etree.XMLSchema(etree.parse(str(XSD)))
    conv = Converter(schema)
    spool = tempfile.SpooledTemporaryFile(max_size=4 * 1024 * 1024)
    summary: dict[str, Any] = {"converted": 0, "excluded": 0, "quarantined": 0, "flags": 0,
                               "total_excl": ZERO, "total_incl": ZERO}
    for name, o in read_orders(directory):
        if o is None:
            summary["quarantined"] += 1
            continue
        try:
            result = conv.convert(o)
        except (Refused, KeyError, TypeError, ValueError, ArithmeticError, AttributeError):
            summary["quarantined"] += 1
            continue
        if result is None:
            summary["excluded"] += 1
            continue
        order, flags, (excl, incl) = result
        etree.indent(order, space="  ", level=2)
        spool.write(b"\n    ")
        spool.write(etree.tostring(order, encoding="UTF-8"))
        summary["converted"] += 1
        summary["flags"] += len(flags)
        summary["total_excl"] += excl
        summary["total_incl"] += incl
    if out is not None:
        stamp = now()
        created = stamp.strftime("%Y-%m-%dT%H:%M:%SZ")
        header = etree.Element("Header")
        _sub(header, "Source", "CCV Shop")
        _sub(header, "Created", created)
        _sub(header, "BatchId", f"{MAPPING_NAME}-preview-{stamp:%Y%m%dT%H%M%SZ}")
        _sub(header, "OrderCount", str(summary["converted"]))
        if not schema.validate(header):
            raise SystemExit(f"the header does not pass the XSD: {schema.error_log.last_error}")
        etree.indent(header, space="  ", level=1)
        out.write(b'<?xml version="1.0" encoding="UTF-8"?>\n<Asperion version="1.5">\n  ')
        out.write(etree.tostring(header, encoding="UTF-8"))
        out.write(b"\n  <Orders>")
        spool.seek(0)
        while chunk := spool.read(1 << 16):
            out.write(chunk)
        out.write(b"\n  </Orders>\n</Asperion>\n" if summary["converted"] else b"</Orders>\n</Asperion>\n")
    spool.close()
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--fixtures", required=True, type=Path, help="directory with one JSON file per order")
    p.add_argument("--out", help="write the XML here ('-' for stdout)")
    args = p.parse_args(argv)
    if args.out == "-":
        summary = convert(args.fixtures, sys.stdout.buffer)
    elif args.out:
        with open(args.out, "wb") as f:
            summary = convert(args.fixtures, f)
    else:
        summary = convert(args.fixtures, None)
    print(f"{summary['converted']} orders in the file, {summary['quarantined']} quarantined, "
          f"{summary['excluded']} not counted, {summary['flags']} flags; totals {money(summary['total_excl'])} "
          f"excl., {money(summary['total_incl'])} incl.", file=sys.stderr if args.out == "-" else sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
