"""The generated stage functions (engine/convert/stages.py) against the same stages without inlining.

Without inlining, every value is the template's own function called through
``evaluate``'s rules, in the pipeline's order: the reference. With inlining, each
template's fast-path code runs in the stage function and falls back to that function when
it raises. The two must give the same outcome for every record: the same values, the same
quarantine reason and field, the same flags. Random mappings are drawn from pools of
expressions that succeed, fail, reach for Python internals or return Jinja's Undefined.
"""

from __future__ import annotations

import copy
import dataclasses
import random
from decimal import Decimal

import pytest

from helpers import FIXTURES, MAPPING
from engine.io import jsondecode
from engine.expr.expressions import compile_expression, compile_template
from engine.convert.invoice import Line
from engine.config.mapping import Check, Flag, load_mapping
from engine.convert.pipeline import Converted, Converter, Excluded, Quarantined
from engine.convert.stages import compile_stages

EXPRESSIONS = [
    "record.total_price", "record.nope", "record.customer.email | upper", "record.orderrows | length",
    "record.user.id if record.user else none", "record.total_price * 2", "record.missing.deeper",
    "record.__class__", "record.orderrows[0].total_price", "record.paid and record.status != 8",
    "'x' ~ record.id", "record.customer | attr('email')", "record.customer | attr('nope')",
    "record.create_date | local_date('Europe/Amsterdam')", "(record.total_tax or 0) + 1",
    "record.discountcoupon.code", "none", "0", "'12.5'", "record.currency", "record.id / 0",
    "record.orderrows | map(attribute='total_price') | sum", "tables.payment_codes.get(record.paymethod, 'x')",
    "record.total_price > 100", "not record.paid", "record.customer.email.__class__", "billing.city",
    "record.total_shipping", "-record.extra_costs", "record.paymethod_costs", "1e999999999",
    "record.total_price | money", "record.orderrows[99]", "range(3) | list", "record.items()",
]
ROW_EXPRESSIONS = [
    "row.total_price", "row.count", "row.tax", "row.nope", "row.count * 2", "row.price", "'abc'",
    "row.total_price | abs", "row | attr('count')", "row.__class__", "none", "'3.5'", "row.tax + record.id",
]
TEMPLATES = [
    "{{ record.ordernumber_full }}", "Order {{ record.nope }}", "{{ record.customer.email | clean }}",
    "{% if record.paid %}yes{% else %}no{% endif %}", "{{ record.__class__ }}", "{{ record.total_price | money }}",
    "Plain text", "{{ billing.full_name }} ({{ record.id }})", "{{ record | attr('nope') }}", "{{ 1 / 0 }}",
    "{{ record.invoicenumber or '' }}", "{{ '%s' % record.id }}",
]
ROW_TEMPLATES = ["{{ row.product_name | clean }}", "{{ row.product_number }}", "{{ row.nope }}", "Item",
                 "{{ row.product_name | upper }} x{{ row.count }}", "{{ row.__class__ }}"]


def _records() -> list[dict]:
    records = [jsondecode.loads(p.read_bytes()) for p in sorted(FIXTURES.glob("*.json"))]
    first = records[0]
    broken = []
    for change in ({"total_price": None}, {"total_price": "12,50"}, {"orderrows": []}, {"customer": None},
                   {"orderrows": [{**first["orderrows"][0], "count": "two", "tax": None}]},
                   {"paid": "yes", "status": None}, {"create_date": "not a date"}):
        broken.append({**copy.deepcopy(first), **change})
    return records + broken


RECORDS = _records()


def _random_mapping(m, rng: random.Random):
    """The default mapping with some of its values (none to a third) drawn from the pools."""
    rate = rng.choice([0.0, 0.03, 0.1, 0.3])

    def e(original=None, pool=EXPRESSIONS):
        return original if original is not None and rng.random() >= rate else compile_expression(rng.choice(pool))

    def t(original=None, pool=TEMPLATES):
        return original if original is not None and rng.random() >= rate else compile_template(rng.choice(pool))

    inv, rows = m.invoice, m.invoice.lines
    changed: dict = {"lines": dataclasses.replace(
        rows, amount=e(rows.amount, ROW_EXPRESSIONS), rate=e(rows.rate, ROW_EXPRESSIONS),
        quantity=e(rows.quantity, ROW_EXPRESSIONS), description=t(rows.description, ROW_TEMPLATES),
        article_code=t(rows.article_code, ROW_TEMPLATES))}
    for key in ("description", "payment_code", "date"):
        changed[key] = t(getattr(inv, key))
    for key in ("currency", "total", "reported_vat", "surcharge_rate"):
        changed[key] = e(getattr(inv, key)) if key == "total" or rng.random() >= rate else None
    changed["charges"] = [dataclasses.replace(c, amount=e(c.amount), label=t(c.label)) for c in inv.charges]
    changed["discounts"] = [dataclasses.replace(c, amount=e(c.amount), label=t(c.label)) for c in inv.discounts]
    invoice = dataclasses.replace(inv, **changed)
    return dataclasses.replace(
        m,
        where=[e(w) for w in m.where] + [e() for _ in range(rng.random() < rate)],
        let=[(name, e(expr)) for name, expr in m.let] + [(name, e()) for name in rng.sample(["a", "b"], 2 * (rng.random() < rate))],
        checks=[dataclasses.replace(c, when=e(c.when), expect=e(c.expect), message=t(c.message)) for c in m.checks]
        + [Check("extra", rng.choice([None, e()]), e(), t()) for _ in range(rng.random() < rate)],
        flags=[dataclasses.replace(f, when=e(f.when), message=t(f.message)) for f in m.flags]
        + [Flag(e(), t()) for _ in range(rng.random() < rate)],
        customer_key=e(m.customer_key), customer_name=t(m.customer_name), record_created=e(m.record_created),
        columns=[dataclasses.replace(c, amount=e(c.amount, ["record.total_price", "record.nope", "'x'", "1"])
                                     if c.amount is not None else None,
                                     text=t(c.text) if c.text is not None else None) for c in m.columns],
        invoice=invoice)


def _line(line: Line) -> tuple:
    return tuple(getattr(line, f) for f in ("kind", "description", "article_code", "quantity", "rate", "excl", "vat",
                                            "incl", "vat_class"))


def _outcome(converter: Converter, record: dict):
    try:
        o = converter.convert(copy.deepcopy(record))
    except Exception as exc:  # noqa: BLE001 - an unforeseen error must be the same error too
        return ("raised", type(exc).__name__, str(exc))
    if isinstance(o, Converted):
        inv = o.invoice
        return ("converted", o.shop_id, o.number, o.created, o.xml, o.preview, o.flags, inv.description, inv.date,
                inv.payment_code, inv.currency, [_line(li) for li in inv.lines], inv.total_excl, inv.total_vat,
                inv.total_incl)
    if isinstance(o, Quarantined):
        return ("quarantined", o.shop_id, o.number, o.reason, o.field)
    assert isinstance(o, Excluded)
    return ("excluded", o.shop_id, o.number, o.condition)


def _pair(m):
    fast, reference = Converter(m), Converter(m)
    reference._stages = compile_stages(m, inline=False)
    return fast, reference


def test_the_default_mapping_inlines_its_templates():
    m = load_mapping(MAPPING)
    fast, reference = _pair(m)
    assert fast._stages.prelude is not reference._stages.prelude
    outcomes = [_outcome(fast, r) for r in RECORDS]
    assert outcomes == [_outcome(reference, r) for r in RECORDS]
    assert {o[0] for o in outcomes} == {"converted", "quarantined", "excluded"}


@pytest.mark.parametrize("seed", range(40))
def test_random_mappings_give_the_same_outcomes_inlined_or_not(seed):
    rng = random.Random(seed)
    m = _random_mapping(load_mapping(MAPPING), rng)
    fast, reference = _pair(m)
    for record in RECORDS:
        assert _outcome(fast, record) == _outcome(reference, record), (seed, record.get("id"))


def test_the_fuzzed_mappings_reach_every_kind_of_outcome():
    """Not a vacuous comparison: the random mappings convert, exclude and quarantine."""
    seen = set()
    reasons = set()
    for seed in range(40):
        fast, _ = _pair(_random_mapping(load_mapping(MAPPING), random.Random(seed)))
        for record in RECORDS:
            o = _outcome(fast, record)
            seen.add(o[0])
            if o[0] == "quarantined":
                reasons.add(o[4])
    assert {"converted", "quarantined", "excluded"} <= seen
    assert {"invoice.lines.amount", "invoice.total", "customer.key"} & reasons


def test_a_value_the_inlined_code_cannot_give_is_the_templates_own():
    """attr() of a missing field is Jinja's Undefined: the template's own function decides."""
    m = load_mapping(MAPPING)
    m = dataclasses.replace(m, let=list(m.let) + [("x", compile_expression("record | attr('nope')"))])
    fast, reference = _pair(m)
    got = _outcome(fast, RECORDS[0])
    assert got == _outcome(reference, RECORDS[0])
    assert got[0] == "quarantined" and got[4] == "let.x" and "nope" in got[3]


@pytest.mark.parametrize("source", ["record.__class__.__mro__", "record.items.__self__", "record.update",
                                    "().__class__.__base__.__subclasses__()"])
def test_python_internals_stay_out_of_reach(source):
    m = load_mapping(MAPPING)
    m = dataclasses.replace(m, let=list(m.let) + [("x", compile_expression(source))])
    fast, reference = _pair(m)
    got = _outcome(fast, RECORDS[0])
    assert got == _outcome(reference, RECORDS[0])
    assert got[0] == "quarantined" and got[4] == "let.x"
    assert "is undefined" in got[3] or "not allowed in a mapping" in got[3]


def test_the_stages_keep_the_pipelines_order_of_evaluation():
    """A record failing two fields is quarantined for the first one the pipeline evaluates."""
    m = load_mapping(MAPPING)
    bad = compile_expression("record.nope")
    m = dataclasses.replace(m, invoice=dataclasses.replace(
        m.invoice, total=bad, lines=dataclasses.replace(m.invoice.lines, quantity=bad)))
    got = _outcome(Converter(m), RECORDS[0])
    assert got[0] == "quarantined" and got[4] == "invoice.lines.quantity"


def test_amounts_are_decimals_whatever_the_json_gave():
    """Rates and quantities as text or ints: every line holds Decimals."""
    record = copy.deepcopy(RECORDS[0])
    for row in record["orderrows"]:
        row.update(count=str(row["count"]), tax=f" {row['tax']} ")
    fast, reference = _pair(load_mapping(MAPPING))
    got = _outcome(fast, record)
    assert got == _outcome(reference, record) == _outcome(fast, RECORDS[0])
    assert got[0] == "converted"
    assert all(type(v) is Decimal for line in got[11] for v in (line[3], line[4], line[5]))


def test_a_surcharge_rate_that_is_no_number_quarantines_the_order():
    """It raised a ValueError out of convert, which stopped the whole run."""
    m = load_mapping(MAPPING)
    m = dataclasses.replace(m, invoice=dataclasses.replace(m.invoice, surcharge_rate=compile_expression("'ZOMER10'")))
    got = _outcome(Converter(m), RECORDS[0])
    assert got == ("quarantined", str(RECORDS[0]["id"]), RECORDS[0]["ordernumber_full"],
                   "invoice.surcharge_rate: invoice.surcharge_rate is 'ZOMER10', not a number", "invoice.surcharge_rate")


def test_a_generator_in_the_context_is_read_as_the_reference_reads_it():
    """Where the inlined code gives up, Jinja runs, not the same code a second time."""
    m = load_mapping(MAPPING)
    m = dataclasses.replace(m, let=list(m.let) + [("g", compile_expression("record.orderrows | selectattr('id')"))],
                            checks=[Check("c", None, compile_expression("(g | first).special != 7"),
                                          compile_template("special"))])
    record = copy.deepcopy(RECORDS[0])
    record["orderrows"] = [dict(record["orderrows"][0], id=i) for i in (1, 2, 3)]
    record["orderrows"][2]["special"] = 7
    fast, reference = _pair(m)
    assert _outcome(fast, record) == _outcome(reference, record)
