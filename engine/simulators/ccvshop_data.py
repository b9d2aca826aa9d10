"""Deterministic CCV Shop order data: generator, fixture loader and CCV-style JSON writer.

The *fixture layout* (shared contract with the engine): a directory with one ``*.json`` file
per order, each holding the order object exactly as ``GET /api/rest/v1/orders/{id}`` returns
it, plus one extra key ``orderrows``: the list of row objects as
``GET /api/rest/v1/orders/{id}/orderrows`` returns them in ``items``.  Files are loaded
sorted by file name; JSON floats are parsed as ``Decimal``.

Totals follow ccvshop-api.md section 5 "Project choice" exactly (``Decimal``, half-up):

* row ``total_price`` = count x (price - discount + sum(attribute price)), rounded to cents
* ``total_orderrow_price`` = sum(row ``total_price``)
* ``total_price`` = total_orderrow_price + total_shipping + paymethod_costs + extra_costs
  - total_discounts - credit_point_discount
* ``total_tax`` = VAT contained in ``total_price``: rows at their ``tax``, all other amounts
  at ``shipping_tax_percentage``, rounded per rate
* ex-VAT B2B orders (``order_row_taxes_included: false``): the terms are excl. VAT, the tax
  per rate is round(net x r / 100) and ``total_price`` = sum(terms) + ``total_tax``.
"""
from __future__ import annotations

import datetime as _dt
import decimal
import json
import os
import random
import unicodedata
from decimal import ROUND_HALF_UP, Decimal
from json.encoder import encode_basestring_ascii as _enc_str
from pathlib import Path
from typing import Any, Iterator

__all__ = [
    "dumps_ccv",
    "load_fixture_dir",
    "generate_orders",
    "generate_fixture_dir",
    "order_totals",
    "q2",
    "DEFAULT_SHOP_URL",
]

DEFAULT_SHOP_URL = "https://demo-shop.ccvshop.nl"  # spec: our choice (fictitious shop host)
CENT = Decimal("0.01")


# --------------------------------------------------------------------------------------------
# Money helpers
# --------------------------------------------------------------------------------------------
def q2(value: Decimal | int | str) -> Decimal:
    """Round to cents, half-up (symmetric for negatives: -0.125 -> -0.13)."""
    return Decimal(value).quantize(CENT, rounding=ROUND_HALF_UP)


def _d(value: Any) -> Decimal:
    if isinstance(value, Decimal):
        return value
    if isinstance(value, float):  # never produced by us; be tolerant with hand-written data
        return Decimal(repr(value))
    return Decimal(value if value is not None else 0)


def order_totals(order: dict, rows: list[dict] | None = None) -> dict:
    """Recompute the section-5 totals of a fixture-layout order (returns Decimals).

    Keys: ``rows`` (list of row totals), ``total_orderrow_price``, ``total_price``,
    ``total_tax``, ``tax_by_rate`` ({rate: tax}), ``base_by_rate`` ({rate: amount}).
    """
    if rows is None:
        rows = order["orderrows"]
    row_totals = []
    groups: dict[Decimal, Decimal] = {}
    for row in rows:
        attr = sum((_d(a.get("price", 0)) for a in row.get("attributes") or []), Decimal(0))
        total = q2(_d(row["count"]) * (_d(row["price"]) - _d(row["discount"]) + attr))
        row_totals.append(total)
        rate = _d(row["tax"])
        groups[rate] = groups.get(rate, Decimal(0)) + total
    t_rows = sum(row_totals, Decimal(0))
    other = (
        _d(order["total_shipping"]) + _d(order["paymethod_costs"]) + _d(order["extra_costs"])
        - _d(order["total_discounts"]) - _d(order["credit_point_discount"])
    )
    ship_rate = _d(order["shipping_tax_percentage"])
    if other:
        groups[ship_rate] = groups.get(ship_rate, Decimal(0)) + other
    incl = bool(order.get("order_row_taxes_included", True))
    tax_by_rate = {}
    for rate, base in groups.items():
        if incl:
            tax_by_rate[rate] = q2(base * rate / (100 + rate))
        else:
            tax_by_rate[rate] = q2(base * rate / 100)
    total_tax = sum(tax_by_rate.values(), Decimal(0))
    total_price = t_rows + other if incl else t_rows + other + total_tax
    return {
        "rows": row_totals,
        "total_orderrow_price": t_rows,
        "total_price": total_price,
        "total_tax": total_tax,
        "tax_by_rate": tax_by_rate,
        "base_by_rate": groups,
    }


# --------------------------------------------------------------------------------------------
# CCV/PHP style JSON
# --------------------------------------------------------------------------------------------
def _num(d: Decimal) -> str:
    if not d.is_finite():
        raise ValueError(f"non-finite Decimal {d!r} cannot be written as JSON")
    if d == 0:
        return "0"
    return format(d.normalize(), "f")


def _str(s: str) -> str:
    # PHP json_encode default: "/" -> "\/", non-ASCII -> \uXXXX (surrogate pairs when needed)
    return _enc_str(s).replace("/", "\\/")


def _dump(obj: Any, out: list) -> None:
    if isinstance(obj, str):
        out.append(_str(obj))
    elif obj is None:
        out.append("null")
    elif obj is True:
        out.append("true")
    elif obj is False:
        out.append("false")
    elif isinstance(obj, Decimal):
        out.append(_num(obj))
    elif isinstance(obj, int):
        out.append(int.__repr__(obj))
    elif isinstance(obj, float):
        out.append(_num(Decimal(repr(obj))))
    elif isinstance(obj, dict):
        if not obj:
            out.append("{}")
            return
        out.append("{")
        first = True
        for k, v in obj.items():
            if not first:
                out.append(",")
            first = False
            out.append(_str(str(k)))
            out.append(":")
            _dump(v, out)
        out.append("}")
    elif isinstance(obj, (list, tuple)):
        if not obj:
            out.append("[]")
            return
        out.append("[")
        first = True
        for v in obj:
            if not first:
                out.append(",")
            first = False
            _dump(v, out)
        out.append("]")
    else:
        raise TypeError(f"cannot serialise {type(obj).__name__} as CCV JSON")


def dumps_ccv(obj: Any) -> str:
    """Serialise like CCV (PHP ``json_encode``): compact, ``\\/``, ``\\uXXXX`` for non-ASCII,
    ``Decimal`` as a plain JSON number in normalized form (``590``, ``102.4``, ``14.95``)."""
    out: list[str] = []
    _dump(obj, out)
    return "".join(out)


def _ccv_numbers(obj: Any) -> Any:
    """Make in-memory values equal to what ``json.load(parse_float=Decimal)`` returns for
    ``dumps_ccv(obj)``: integral Decimals -> int, others -> normalized Decimal."""
    if isinstance(obj, Decimal):
        if obj == obj.to_integral_value():
            return int(obj)
        return Decimal(_num(obj))
    if isinstance(obj, dict):
        return {k: _ccv_numbers(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_ccv_numbers(v) for v in obj]
    return obj


# --------------------------------------------------------------------------------------------
# Fixture layout
# --------------------------------------------------------------------------------------------
def load_fixture_dir(path: str | os.PathLike) -> list[dict]:
    """Load all ``*.json`` order files of a fixture directory, sorted by file name."""
    p = Path(path)
    orders = []
    for f in sorted(p.glob("*.json"), key=lambda x: x.name):
        with open(f, "r", encoding="utf-8") as fh:
            order = json.load(fh, parse_float=decimal.Decimal)
        if not isinstance(order, dict):
            raise ValueError(f"{f}: expected a JSON object")
        order.setdefault("orderrows", [])
        if not isinstance(order["orderrows"], list):
            # an order exported straight from the API carries the link object instead
            order["orderrows"] = []
        orders.append(order)
    return orders


def generate_fixture_dir(path: str | os.PathLike, n: int, seed: int = 1, **kwargs) -> list[Path]:
    """Write ``n`` generated orders as ``order_<id>.json`` (CCV serialisation) into ``path``."""
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    written = []
    for order in generate_orders(n, seed=seed, **kwargs):
        f = p / f"order_{order['id']}.json"
        f.write_text(dumps_ccv(order), encoding="utf-8")
        written.append(f)
    return written


# --------------------------------------------------------------------------------------------
# Generator data
# --------------------------------------------------------------------------------------------
# (name, product number, price incl. VAT (NL 21%/9%), tax, unit, fractional?, attribute sets)
_ATTR_SIZE = ("Maat", [("S", "0"), ("M", "0"), ("L", "0"), ("XL", "2.50")])
_ATTR_COLOR = ("Kleur", [("Zwart", "0"), ("Wit", "0"), ("Bordeauxrood", "1.00"), ("Crème", "0")])
_ATTR_ENGRAVE = ("Gravure", [("Geen", "0"), ("Naam (max. 12 tekens)", "4.95")])
_ATTR_WRAP = ("Verpakking", [("Standaard", "0"), ("Cadeauverpakking", "1.95")])
_ATTR_GRIND = ("Maling", [("Bonen", "0"), ("Filter", "0"), ("Espresso", "0.50")])

_PRODUCTS_21 = [
    ("T-shirt \"Amsterdam\" biologisch katoen", "TS-AMS-01", "24.95", "stuk", False, [_ATTR_SIZE, _ATTR_COLOR]),
    ("Hoodie Zoë oversized", "HD-ZOE-02", "59.95", "stuk", False, [_ATTR_SIZE, _ATTR_COLOR]),
    ("Crème brûlée brander RVS", "KK-CBB-10", "34.50", "stuk", False, [_ATTR_WRAP]),
    ("Café-servies \"Délice\" 18-delig", "SV-DEL-18", "129.00", "stuk", False, [_ATTR_COLOR, _ATTR_WRAP]),
    ("Bluetooth speaker Søren mini", "EL-SOR-03", "49.99", "stuk", False, [_ATTR_COLOR]),
    ("USB-C kabel 2 m (gevlochten)", "EL-USBC-2", "12.95", "stuk", False, []),
    ("Leren portemonnee 'Classic'", "LW-CLS-07", "39.95", "stuk", False, [_ATTR_COLOR, _ATTR_ENGRAVE]),
    ("Katoenen stof per meter – Ruit", "ST-RUIT-M", "12.99", "meter", True, [_ATTR_COLOR]),
    ("Fietsketting 1/2\" x 3/32\"", "FT-KET-01", "17.49", "stuk", False, []),
    ("Gereedschapsset Jürgen 42-delig", "GS-JUR-42", "89.00", "stuk", False, []),
    ("Tuinslang per meter 19 mm", "TU-SL-19", "2.49", "meter", True, []),
    ("Kerstbal glas Ø 8 cm", "KB-GL-08", "3.95", "stuk", False, [_ATTR_COLOR]),
    ("Koffie & Thee opbergblik", "KT-BLK-01", "14.95", "stuk", False, [_ATTR_COLOR]),
    ("Sokken 3-pack Renée", "SK-REN-3", "9.95", "stuk", False, [_ATTR_SIZE]),
    ("Espressomachine \"Barista Pro\"", "EM-BAR-PR", "595.00", "stuk", False, [_ATTR_COLOR]),
    ("Wollen plaid 130×170 cm", "PL-WOL-13", "69.00", "stuk", False, [_ATTR_COLOR, _ATTR_WRAP]),
]
_PRODUCTS_9 = [
    ("Koffiebonen Ethiopië Yirgacheffe 1 kg", "KF-ETH-1K", "27.50", "stuk", False, [_ATTR_GRIND]),
    ("Thee \"Earl Grey Crème\" 100 g", "TH-EGC-100", "6.95", "stuk", False, []),
    ("Kookboek 'Één pan, duizend smaken'", "BK-EPD-01", "29.99", "stuk", False, [_ATTR_WRAP]),
    ("Belgische pralines 250 g", "CH-PRA-250", "17.50", "stuk", False, [_ATTR_WRAP]),
    ("Stroopwafels & karamel (12 st.)", "SW-KAR-12", "4.49", "stuk", False, []),
    ("Kaas Oude Gouda per kg", "KS-OG-KG", "21.90", "kg", True, []),
    ("Roman \"De Zoon van Anaïs\"", "BK-ZVA-02", "22.99", "stuk", False, []),
    ("Olijfolie extra vierge 0,5 l", "OL-EV-05", "11.25", "stuk", False, []),
]

_FIRST = ["Jan", "Zoë", "Renée", "Jürgen", "François", "Anaïs", "Søren", "Sébastien", "José",
          "Eva", "Daan", "Fleur", "Mohammed", "Sanne", "Björn", "Chloé", "Pieter", "Ilse",
          "Noah", "Émilie", "Lars", "Ingrid", "Thijs", "Maëlle"]
_LAST = [("", "Vries", "de"), ("", "Hof", "van 't"), ("", "O'Brien", ""), ("", "Müller", ""),
         ("", "Çelik", ""), ("", "Janssen", ""), ("", "Bakker", ""), ("", "Berg", "van den"),
         ("", "Dijk", "van"), ("", "Smit", ""), ("", "Lefèvre", ""), ("", "Núñez", ""),
         ("", "Visser", ""), ("", "Meijer", ""), ("", "Jansen-Ødegård", ""), ("", "Brouwer", "")]
_STREETS = {
    "NL": ["Prinsengracht", "Dorpsstraat", "Kerkstraat", "Stationsweg", "Molenlaan", "Ceintuurbaan"],
    "BE": ["Rue de la Loi", "Meir", "Kouter", "Grote Markt", "Avenue Louise"],
    "DE": ["Hauptstraße", "Schloßallee", "Königsallee", "Bahnhofstraße"],
    "FR": ["Rue de Rivoli", "Boulevard Saint-Germain", "Rue Émile Zola"],
    "AT": ["Mariahilfer Straße", "Kärntner Straße"],
    "ES": ["Calle Mayor", "Gran Vía"],
    "US": ["Main Street", "5th Avenue", "Elm Street"],
    "CH": ["Bahnhofstrasse", "Rue du Rhône"],
    "NO": ["Karl Johans gate", "Bryggen"],
    "GB": ["Baker Street", "High Street"],
}
_CITIES = {
    "NL": [("Amsterdam", "1017"), ("Utrecht", "3511"), ("Rotterdam", "3011"), ("Groningen", "9711"),
           ("'s-Hertogenbosch", "5211"), ("Den Haag", "2511"), ("Zwolle", "8011")],
    "BE": [("Brussel", "1000"), ("Antwerpen", "2000"), ("Gent", "9000"), ("Liège", "4000")],
    "DE": [("Düsseldorf", "40213"), ("Köln", "50667"), ("München", "80331"), ("Berlin", "10115")],
    "FR": [("Paris", "75001"), ("Lille", "59000")],
    "AT": [("Wien", "1010")],
    "ES": [("Madrid", "28013"), ("Málaga", "29015")],
    "US": [("New York, NY", "10001"), ("Austin, TX", "73301")],
    "CH": [("Zürich", "8001"), ("Genève", "1201")],
    "NO": [("Oslo", "0150"), ("Bergen", "5003")],
    "GB": [("London", "NW1 6XE"), ("Manchester", "M1 1AE")],
}
_COUNTRY_NL = {"NL": "Nederland", "BE": "België", "DE": "Duitsland", "FR": "Frankrijk",
               "AT": "Oostenrijk", "ES": "Spanje", "US": "Verenigde Staten",
               "CH": "Zwitserland", "NO": "Noorwegen", "GB": "Verenigd Koninkrijk"}
_PHONE_PREFIX = {"NL": "06", "BE": "+32 4", "DE": "+49 151", "FR": "+33 6", "AT": "+43 664",
                 "ES": "+34 6", "US": "+1 512", "CH": "+41 79", "NO": "+47 9", "GB": "+44 7700"}
_COMPANIES = {
    "NL": ["Bakkerij De Vries & Zn.", "\"De Gouden Draad\" B.V.", "Café 't Hoekje V.O.F.",
           "Smit & Visser Installatietechniek B.V.", "Studio Renée", "Brouwer's Bloemen"],
    "BE": ["L'Atelier Crème BV", "Brasserie \"Le Coq\" SRL"],
    "DE": ["Müller & Söhne GmbH", "Café Größenwahn UG"],
    "FR": ["Boulangerie Lefèvre SARL", "Éditions du Quai SAS"],
    "AT": ["Kärntner Kaffeerösterei GmbH"],
    "ES": ["Núñez y Hermanos S.L."],
    "US": ["Smith & Wesson Crafts Inc.", "O'Brien Trading LLC"],
    "CH": ["Zürcher Feinkost AG"],
    "NO": ["Ødegård Design AS"],
    "GB": ["Baker & Sons Ltd"],
}

# (paymethod, label, id, fee incl.)  ids are invented (spec: our choice); BankTransfer=3 as
# in the real sample
_PAYMETHODS = [
    ("Ideal", "iDEAL", 1, "0.29"),
    ("BankTransfer", "Vooraf overmaken", 3, "0"),
    ("PayPal", "PayPal", 7, "0.35"),
    ("CreditCard", "Creditcard", 9, "1.95"),
    ("Bancontact", "Bancontact", 11, "0.25"),
    ("AfterPay", "Achteraf betalen", 14, "1.50"),
]
# spec: our choice — coupon "type" values "percentage"/"price" (CCV's values unknown)
_COUPONS = [("ZOMER10", "percentage", "10"), ("WELKOM5", "price", "5"),
            ("VIP15", "percentage", "15"), ("KERST-2026", "price", "10"), ("BLACKFRIDAY", "percentage", "20")]
_LINKS = ["orderrows", "ordernotes", "ordermessages", "ordernotifications",
          "orderaffiliatenetworks", "orderlabels", "invoices"]
_EU = ["BE", "DE", "FR", "AT", "ES"]


def _vat_number(rng: random.Random, cc: str) -> str:
    digits = lambda k: "".join(str(rng.randrange(10)) for _ in range(k))  # noqa: E731
    if cc == "NL":
        return f"NL{digits(9)}B0{rng.randrange(1, 4)}"
    if cc == "BE":
        return f"BE0{digits(9)}"
    if cc == "DE":
        return f"DE{digits(9)}"
    if cc == "FR":
        return f"FR{digits(2)}{digits(9)}"
    if cc == "AT":
        return f"ATU{digits(8)}"
    if cc == "ES":
        return f"ESB{digits(8)}"
    if cc == "CH":
        return f"CHE-{digits(3)}.{digits(3)}.{digits(3)} MWST"
    if cc == "NO":
        return f"NO{digits(9)}MVA"
    if cc == "GB":
        return f"GB{digits(9)}"
    return ""  # US: no VAT number


def _zipcode(rng: random.Random, cc: str, base: str) -> str:
    if cc == "NL":
        letters = rng.choice("ABCDEGHJKLMNPRSTVWXZ") + rng.choice("ABCDEGHJKLMNPRSTVWXZ")
        # "as typed": upper/lower case, with or without space
        return rng.choice([f"{base}{letters}", f"{base} {letters}", f"{base}{letters.lower()}"])
    return base


def _address(rng: random.Random, cc: str, first: str, last: str, company: str) -> dict:
    city, base_zip = rng.choice(_CITIES[cc])
    street = rng.choice(_STREETS[cc])
    nr = rng.randrange(1, 240)
    suffix = rng.choice(["", "", "", "", "A", "bis", "-3", "hs"]) if cc in ("NL", "BE") else ""
    line1 = f"{street} {nr}{(' ' if suffix and not suffix.startswith('-') else '') + suffix if suffix else ''}"
    phone = f"{_PHONE_PREFIX[cc]}{rng.randrange(10**7, 10**8)}"
    return {
        "gender": rng.choice([None, None, "male", "female"]),
        "initials": first[0] + ".",
        "first_name": first,
        "last_name": last,
        "full_name": f"{first} {last}",
        "company": company,
        "address_line_1": line1,
        "address_line_2": rng.choice(["", "", "", "", "2e verdieping", "t.a.v. inkoop"]),
        "street": street,
        "housenumber": nr,
        "housenumber_suffix": suffix,
        "zipcode": _zipcode(rng, cc, base_zip),
        "city": city,
        "province": {"US": "Texas", "CH": "Zürich"}.get(cc, ""),
        "telephone": phone,
        "fax": "",
        "mobile": phone if cc == "NL" and rng.random() < 0.3 else "",
        "comment": rng.choice(["", "", "", "", "Graag bij de buren afgeven als ik niet thuis ben.",
                               "Bel aan bij \"Receptie\" & vraag naar José"]),
        "country": _COUNTRY_NL[cc],
        "country_code": cc,
    }


def _empty_delivery() -> dict:
    # real sample: all ""/null when equal to billing (note: no first/last name keys)
    return {"gender": None, "full_name": "", "initials": "", "company": "", "address_line_1": "",
            "address_line_2": "", "street": "", "housenumber": None, "housenumber_suffix": "",
            "zipcode": "", "city": "", "province": "", "telephone": "", "mobile": "",
            "comment": "", "country": "", "country_code": None}


def _delivery_from(addr: dict) -> dict:
    d = _empty_delivery()
    for k in d:
        if k in addr:
            d[k] = addr[k]
    return d


class _Customer:
    __slots__ = ("kind", "cc", "first", "last", "company", "email", "user_id", "btw", "kvk",
                 "billing", "iban", "ex_vat", "orders")

    # set one by one in _make_customer (annotations only: no class values, so __slots__ holds)
    kind: str  # "nl_b2c", "eu_b2c", "nl_b2b", "icp_b2b" or "export"
    cc: str
    first: str
    last: str
    company: str
    email: str
    user_id: int | None  # None: guest
    btw: str
    kvk: str
    billing: dict[str, Any]
    iban: str
    ex_vat: bool
    orders: int


def _make_customer(rng: random.Random, idx: int, user_ids: Iterator[int]) -> _Customer:
    c = _Customer()
    r = rng.random()
    # kinds: NL consumer, EU consumer (NL VAT), NL B2B, intra-EU B2B (0%), export (0%)
    if r < 0.58:
        c.kind, c.cc = "nl_b2c", "NL"
    elif r < 0.70:
        c.kind, c.cc = "eu_b2c", rng.choice(["BE", "BE", "DE", "DE", "FR"])
    elif r < 0.82:
        c.kind, c.cc = "nl_b2b", "NL"
    elif r < 0.91:
        c.kind, c.cc = "icp_b2b", rng.choice(_EU)
    else:
        c.kind, c.cc = "export", rng.choice(["US", "CH", "NO", "GB"])
    c.first = rng.choice(_FIRST)
    _, last, tussen = rng.choice(_LAST)
    c.last = f"{tussen} {last}".strip()
    is_company = c.kind in ("nl_b2b", "icp_b2b") or (c.kind == "export" and rng.random() < 0.4)
    c.company = rng.choice(_COMPANIES[c.cc]) if is_company else ""
    plain = unicodedata.normalize("NFKD", f"{c.first}.{last}".replace("ø", "o").replace("Ø", "O"))
    local = "".join(ch for ch in plain.lower() if ch.isascii() and (ch.isalnum() or ch == "."))
    domain = rng.choice(["example.nl", "example.com", "example.be", "example.de", "mail.example.org"])
    c.email = f"{local}{idx}@{domain}"
    c.user_id = None if rng.random() < 0.3 else next(user_ids)  # guests: user null
    c.btw = _vat_number(rng, c.cc) if is_company and c.kind != "export" or (
        c.kind == "export" and is_company and c.cc != "US") else ""
    c.kvk = str(rng.randrange(10**7, 10**8)) if c.kind == "nl_b2b" else ""
    c.billing = _address(rng, c.cc, c.first, c.last, c.company)
    c.iban = f"NL{rng.randrange(10, 99)}INGB{rng.randrange(10**9, 10**10)}" if c.kind == "nl_b2b" else ""
    c.ex_vat = c.kind == "nl_b2b" and rng.random() < 0.35  # a few ex-VAT B2B customers
    c.orders = 0
    return c


def _email_variant(rng: random.Random, email: str) -> str:
    r = rng.random()
    if r < 0.12:
        return email.upper()
    if r < 0.24:
        local, domain = email.split("@")
        return local[:1].upper() + local[1:] + "@" + domain.capitalize()
    if r < 0.32:
        return f" {email} "
    if r < 0.38:
        return email + " "
    return email


def _pick_count(rng: random.Random, fractional: bool) -> Decimal:
    if fractional:
        return Decimal(rng.choice(["0.5", "0.75", "1.5", "2", "2.25", "3.5", "1.25", "4"]))
    return Decimal(rng.choices([1, 1, 1, 2, 2, 3, 4, 6, 10], k=1)[0])


def _gross_to_net(price: Decimal, rate: int) -> Decimal:
    return q2(price * 100 / (100 + rate))


def _row(rng: random.Random, row_id: int, order_id: int, shop: str, product: tuple, tax: int,
         rate_for_price: int, zero_rated: bool, ex_vat: bool) -> dict:
    name, number, price_s, unit, fractional, attr_sets = product
    price = Decimal(price_s)
    # catalogue prices are consumer prices incl. NL VAT; 0% and ex-VAT orders use the net price
    if zero_rated or ex_vat:
        price = _gross_to_net(price, rate_for_price)
    count = _pick_count(rng, fractional)
    discount = Decimal(0)
    if rng.random() < 0.12:
        discount = q2(price * Decimal(rng.choice(["0.05", "0.10", "0.25"])))
    elif rng.random() < 0.05 and price > 20:
        discount = Decimal(rng.choice(["2", "5", "10"]))
    attributes = []
    for opt_name, values in attr_sets:
        if rng.random() < 0.6:
            vname, vprice = rng.choice(values)
            vprice = Decimal(vprice)
            if vprice and (zero_rated or ex_vat):
                vprice = _gross_to_net(vprice, rate_for_price)
            attributes.append({"option_name": opt_name, "value_name": vname, "price": vprice})
    attr_sum = sum((a["price"] for a in attributes), Decimal(0))
    unit_net = price - discount + attr_sum
    total = q2(count * unit_net)
    product_id = 800000000 + (abs(hash_str(number)) % 99999999)
    slug = "".join(ch if ch.isascii() and ch.isalnum() else "-" for ch in name).strip("-")
    while "--" in slug:
        slug = slug.replace("--", "-")
    return {
        "href": f"{shop}/api/rest/v1/orderrows/{row_id}/",
        "id": row_id,
        "order_id": order_id,
        "product_type": "product",
        "product_name": name,
        "product_name_google": slug,
        "product_number": number if rng.random() < 0.85 else "",
        "sub_product_number": "",
        "sub_sku_number": "",
        "sub_ean_number": f"87{rng.randrange(10**10, 10**11)}" if rng.random() < 0.5 else "",
        "product_id": product_id,
        "product_href": f"{shop}/api/rest/v1/products/{product_id}",
        "count": count,
        "price": price,
        "product_purchase_price": q2(price * Decimal("0.45")),
        "discount": discount,
        "custom_price": False,
        "tax": tax,
        "unit": unit,
        "weight": Decimal(rng.choice(["0", "0.25", "0.5", "1.2", "2"])),
        "memo": rng.choice(["", "", "", "", "Graag met kaartje: \"Gefeliciteerd!\"", "Levering na 17:00 u."]),
        "package_id": rng.choice([1664901, 1664902, 1664907]),
        "package_name": rng.choice(["Kartonnen doos", "Brievenbuspakket", "Envelop"]),
        "stock_location": rng.choice(["", "A-01-3", "B-12-1"]),
        "supplier": rng.choice(["", "", "Groothandel Jansen & Co."]),
        "user_discount": 0,
        "original_price": price - discount,
        "selling_price": price - discount,
        "price_without_discount": price,
        "price_without_discount_with_attributes": price + attr_sum,
        "total_price": total,
        "total_extra_option_price": q2(count * attr_sum),
        "price_with_attributes": unit_net,
        "total_price_with_attributes": total,
        "attributes": attributes,
        "uploads": [],
        "parent": {"href": f"{shop}/api/rest/v1/orders/{order_id}"},
    }


def hash_str(s: str) -> int:
    """Stable (process-independent) string hash."""
    h = 1469598103934665603
    for ch in s.encode("utf-8"):
        h = ((h ^ ch) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return h


def _deeplink(rng: random.Random, shop: str) -> str:
    token = "def50200" + "".join(rng.choice("0123456789abcdef") for _ in range(440))
    return f"{shop}/onderhoud/AdminItems/StandaloneObjects/PackingSlip.php?OrderId={token}"


def _iso(ts: int) -> str:
    return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def generate_orders(n: int, seed: int = 1, start_id: int = 400000000,
                    start_date: str = "2026-01-01", *, unpaid_share: float = 0.0,
                    cancelled_share: float = 0.0, non_eur_share: float = 0.0,
                    shop_url: str = DEFAULT_SHOP_URL, start_ordernumber: int = 1001) -> Iterator[dict]:
    """Yield ``n`` realistic, full-size CCV orders in the fixture layout, deterministic by seed.

    All orders are ``paid: true``, ``is_completed: true`` with ``status`` 1..7, except a
    declared share: ``unpaid_share`` (paid false, status 4 "wait for payment") and
    ``cancelled_share`` (status 8; still ``paid: true`` — a paid-then-cancelled order, the
    case a paid-order scan must cope with; spec: our choice).  ``non_eur_share`` is the share of
    *export* orders billed in USD/CHF/NOK/GBP (default 0: all EUR).  The share decisions use their own random
    stream, so changing a share does not change the other orders.

    Ids start exactly at ``start_id`` and increase with small gaps (CCV ids are global across
    shops; spec: our choice); ``create_date`` increases with the id from ``start_date``.
    """
    rng = random.Random(f"ccv-orders:{seed}")
    share_rng = random.Random(f"ccv-shares:{seed}")
    shop = shop_url.rstrip("/")
    t = int(_dt.datetime.fromisoformat(start_date[:10]).replace(tzinfo=_dt.timezone.utc).timestamp())
    t += rng.randrange(6 * 3600, 9 * 3600)
    order_id = start_id
    row_id = 700000000 + (start_id % 1000000) * 10
    ordernumber = start_ordernumber
    invoicenumber = 1
    user_counter = iter(range(24000000 + seed % 1000 * 1000, 10**9))
    customers: list[_Customer] = []
    prefixes = [None] * 7 + ["WEB", "2026", "NL"]

    for i in range(n):
        # ---- customer: ~40% repeat customers
        if customers and rng.random() < 0.4:
            cust = rng.choice(customers)
            email = _email_variant(rng, cust.email)
        else:
            cust = _make_customer(rng, len(customers) + 1, user_counter)
            customers.append(cust)
            email = cust.email
        cust.orders += 1
        zero_rated = cust.kind in ("icp_b2b", "export")
        ex_vat = cust.ex_vat and rng.random() < 0.8

        # ---- rows
        nrows = rng.choices(range(1, 9), weights=[6, 10, 13, 14, 14, 14, 15, 14], k=1)[0]
        mix = rng.random()
        if mix < 0.58:
            pools = [(_PRODUCTS_21, 21)]
        elif mix < 0.9:
            pools = [(_PRODUCTS_21, 21), (_PRODUCTS_9, 9)]
        else:
            pools = [(_PRODUCTS_9, 9)]
        if len(pools) == 2 and nrows == 1:
            nrows = 2
        rows = []
        for k in range(nrows):
            pool, rate = pools[k % len(pools)] if k < len(pools) else rng.choice(pools)
            product = rng.choice(pool)
            row_id += rng.randrange(1, 4)
            rows.append(_row(rng, row_id, order_id, shop, product, 0 if zero_rated else rate,
                             rate, zero_rated, ex_vat))
        goods = sum((r["total_price"] for r in rows), Decimal(0))

        # ---- order level amounts
        ship_rate = 0 if zero_rated else 21  # spec: our choice (0% orders ship at 0%)
        deliver_method = "shipping" if rng.random() < 0.88 else "pickup"
        if deliver_method == "pickup":
            shipping = Decimal(0)
        elif zero_rated or cust.cc != "NL":
            shipping = Decimal(rng.choice(["12.50", "14.95", "24.95", "9.95"]))
        else:
            shipping = Decimal(rng.choice(["4.95", "6.95", "5.95", "4.95", "0"])) if goods < 75 else Decimal(0)
        if shipping and (zero_rated or ex_vat):
            shipping = _gross_to_net(shipping, 21)
        pm_pool = _PAYMETHODS if cust.cc in ("NL", "BE") else [p for p in _PAYMETHODS if p[0] in ("PayPal", "CreditCard", "BankTransfer")]
        paymethod, pm_label, pm_id, fee = rng.choice(pm_pool)
        paymethod_costs = Decimal(0)
        if Decimal(fee) and rng.random() < 0.35:
            paymethod_costs = Decimal(fee)
            if zero_rated or ex_vat:
                paymethod_costs = _gross_to_net(paymethod_costs, 21)
        extra_costs, extra_desc = Decimal(0), ""
        er = rng.random()
        if er < 0.05:
            extra_costs, extra_desc = Decimal(rng.choice(["2.50", "1.95", "3.00"])), rng.choice(
                ["Cadeauverpakking", "Handling & verzekering", "Toeslag kleine order"])
        elif er < 0.09 and sum((r["total_price"] for r in rows if r["tax"] == ship_rate),
                               Decimal(0)) + shipping + paymethod_costs > 6:
            # negative handling cost only where it fits the shipping-rate group
            extra_costs, extra_desc = -Decimal(rng.choice(["2.50", "5.00", "1.00"])), rng.choice(
                ["Korting afhalen", "Vaste klant korting", "Korting \"retour verpakking\""])

        # spec: our choice — discounts never make a rate group negative and stay < goods
        # amount at the shipping rate before discounts (must stay >= 0 after discounts)
        at_ship_rate = sum((r["total_price"] for r in rows if r["tax"] == ship_rate), Decimal(0))
        budget = min(goods / 2, at_ship_rate + shipping + paymethod_costs + extra_costs) - 1
        coupon = {"code": "", "discount": 0, "type": "", "enddate": None, "onetimeuse": False,
                  "minimumprice": 0, "givesfreeshipping": False}
        total_discounts = Decimal(0)
        if rng.random() < 0.14 and budget > 2:
            code, ctype, amount_s = rng.choice(_COUPONS)
            amount = Decimal(amount_s)
            disc = q2(goods * amount / 100) if ctype == "percentage" else amount
            if disc > budget:
                ctype, amount = "price", Decimal(int(budget))
                disc = amount
            if disc > 0:
                total_discounts = disc
                coupon = {"code": code, "discount": amount, "type": ctype,
                          "enddate": rng.choice([None, "2026-12-31T23:59:59Z"]),
                          "onetimeuse": rng.random() < 0.3,
                          "minimumprice": rng.choice([0, 25, 50]) if ctype == "price" else 0,
                          "givesfreeshipping": False}
                budget -= disc
        credit_point_discount = Decimal(0)
        if rng.random() < 0.04 and budget > 3:
            credit_point_discount = min(Decimal(rng.choice(["2.50", "5", "1.25"])), q2(budget))

        # ---- identifiers, dates, status
        t += rng.randrange(60, 3600)
        prefix = rng.choice(prefixes)
        number = ordernumber
        ordernumber += 1
        status = rng.choices([1, 2, 3, 5, 6, 7], weights=[12, 6, 2, 20, 10, 50], k=1)[0]
        shipped = status in (5, 6, 7) and deliver_method == "shipping"
        tt_code = f"3S{rng.randrange(10**11, 10**12)}"
        paid = True
        is_completed = True
        sr = share_rng.random()
        if sr < unpaid_share:
            paid, status = False, 4
        elif sr < unpaid_share + cancelled_share:
            status = 8
        currency = "EUR"
        if cust.kind == "export" and share_rng.random() < non_eur_share:
            currency = {"US": "USD", "CH": "CHF", "NO": "NOK", "GB": "GBP"}[cust.cc]
        inv = None
        if rng.random() < 0.2:
            inv = invoicenumber
            invoicenumber += 1

        order = {
            "href": f"{shop}/api/rest/v1/orders/{order_id}/",
            "id": order_id,
            "ordernumber_prefix": prefix,
            "ordernumber": number,
            "ordernumber_full": f"{prefix}-{number}" if prefix else str(number),
            "invoicenumber": inv,
            "transaction_id": None if paymethod == "BankTransfer" else f"tr_{hash_str(f'{seed}:{order_id}') % 16**10:010x}",
            "create_date": _iso(t),
            "deliver_method": deliver_method,
            "deliver_date": None,
            "take_out_window": {"start": None, "end": None},
            "is_platform_sale": False,
            "orderedinlng": {"NL": "nl", "BE": rng.choice(["nl", "fr"]), "DE": "de", "FR": "fr"}.get(cust.cc, "en"),
            "status": status,
            "is_completed": is_completed,
            "paid": paid,
            "safety_deposit_returned": False,
            "paymethod_id": pm_id,
            "paymethod": paymethod,
            "paymethod_label": pm_label,
            "taxes_included": True,
            "order_row_taxes_included": not ex_vat,
            "shipping_taxes_included": not ex_vat,  # spec: our choice (shipping follows rows)
            "shipping_tax_percentage": ship_rate,
            "is_intra_community_order": cust.kind == "icp_b2b",
            "total_orderrow_price": goods,
            "total_shipping": shipping,
            "total_discounts": total_discounts,
            "total_price": Decimal(0),  # filled below
            "currency": currency,
            "total_tax": Decimal(0),  # filled below
            "total_weight": sum((r["weight"] * r["count"] for r in rows), Decimal(0)).quantize(Decimal("0.001")),
            "extra_payment_option": "",
            "extra_payment_option_price": 0,
            "extra_payment_option_no_sentprice": False,
            "extra_payment_option_pay_on_pickup": False,
            "extra_price": 0,
            "paymethod_costs": paymethod_costs,
            "credit_point_discount": credit_point_discount,
            "extra_costs": extra_costs,
            "extra_costs_description": extra_desc,
            "track_and_trace_code": tt_code if shipped else "",
            "track_and_trace_carrier": ("PostNL" if cust.cc == "NL" else "DHL") if shipped else None,
            "track_and_trace_deeplink": "",
            "reservationnumber": "",
            "delivery_option": None,
            "user": None if cust.user_id is None else {
                "id": str(cust.user_id),  # a string in real output
                "discount_percentage": 0,
                "href": f"{shop}/api/rest/v1/users/{cust.user_id}",
            },
            "discountcoupon": coupon,
            "customer": None,  # filled below
            "pickup_address": None,
            "packing_slip_deeplink": _deeplink(rng, shop),
        }
        if order["track_and_trace_code"]:
            order["track_and_trace_deeplink"] = (
                f"https://jouw.postnl.nl/track-and-trace/{order['track_and_trace_code']}-{cust.cc}-"
                f"{cust.billing['zipcode'].replace(' ', '').upper()}")
        for link in _LINKS:
            order[link] = {"href": f"{shop}/api/rest/v1/orders/{order_id}/{link}/"}

        billing = dict(cust.billing)
        delivery = _empty_delivery()
        if rng.random() < 0.12:  # gift to someone else
            first = rng.choice(_FIRST)
            last = rng.choice(_LAST)[1]
            delivery = _delivery_from(_address(rng, cust.cc, first, last, ""))
        order["customer"] = {
            "billingaddress": billing,
            "deliveryaddress": delivery,
            "email_invoice": email.strip() if cust.company and rng.random() < 0.3 else "",
            "email_invoice_company": "",
            "email_invoice_union": "",
            "email": email,
            "customertype": "b2b" if cust.company else "b2c",
            "bankaccount": "",
            "iban": cust.iban,
            "bic": "INGBNL2A" if cust.iban else "",
            "bank": "ING" if cust.iban else "",
            "tenname": "",
            "bankname": "",
            "btw": cust.btw,
            "kvk": cust.kvk,
            "reference": rng.choice(["", "", "PO-2026-0" + str(rng.randrange(100, 999))]) if cust.company else "",
            "reservationnumber": "",
            "income": "",
            "branche": "",
            "branch": "",
            "website": "",
            "clubcity": "",
            "clubcomment": "",
            "clubname": "",
            "beurs": "",
            "fair": "",
            "stand": "",
            "booth": "",
            "carbrand": "",
            "cartype": "",
            "carweight": "",
            "birthdate": None,
            "birthplace": "",
            "birthtime": None,
            "cardnumber": "",
            "findus": rng.choice(["", "", "Google", "Instagram", "Via via"]),
            "ssnnumber": "",
            "zzppass": "",
            "costcentre": "",
        }

        tot = order_totals(order, rows)
        assert tot["total_orderrow_price"] == goods
        order["total_price"] = tot["total_price"]
        order["total_tax"] = tot["total_tax"]
        order["orderrows"] = rows
        yield _ccv_numbers(order)

        order_id += rng.randrange(1, 8)
