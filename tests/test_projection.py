"""Decoding records to the shape the mapping reads (engine/expr/projection.py).

The projected record must give every template what the full record gives it: the same
outcome for every record and mapping. Random mappings (tests/test_stages.py) reach the
record in the ways a mapping can: paths, aliases, methods, filters, subscripts, ``attr``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import random

import msgspec
import pytest

from helpers import FIXTURES, MAPPING, ROOT
from engine.io import jsondecode
from engine.expr.expressions import compile_expression, compile_template
from engine.config.mapping import Flag, load_mapping
from engine.convert.pipeline import Converter
from engine.expr.projection import WHOLE, decoder, record_shape
from engine.io.sources.fixtures import FixtureSource
from test_stages import RECORDS, _outcome, _random_mapping

#: The fixture shop's files and the broken variants of test_stages, as JSON (numbers as numbers).
DOCUMENTS = [p.read_bytes() for p in sorted(FIXTURES.glob("*.json"))] + [
    msgspec.json.Encoder(decimal_format="number").encode(r) for r in RECORDS[-7:]]


def _both(m, data: bytes, converter: Converter | None = None):
    """(outcome from the projected record, outcome from the full record)."""
    c = converter or Converter(m)
    return _outcome(c, decoder(m)(data)), _outcome(c, jsondecode.loads(data))


def _with(m, **lets):
    return dataclasses.replace(m, let=list(m.let) + [(k, compile_expression(v)) for k, v in lets.items()])


def _reading(m, source: str):
    """``m`` with a flag that reads ``source``."""
    return dataclasses.replace(m, flags=list(m.flags) + [Flag(compile_expression(source), compile_template("x"))])


def test_the_default_mapping_reads_a_sixth_of_an_order():
    shape = record_shape(load_mapping(MAPPING))
    assert shape["orderrows"] == {"[]": {k: WHOLE for k in ("product_name", "product_number", "count",
                                                             "total_price", "tax")}}
    assert shape["customer"]["email"] is WHOLE and shape["user"] is WHOLE
    assert set(shape["customer"]["deliveryaddress"]) == {"street", "housenumber", "housenumber_suffix", "zipcode",
                                                         "city", "country_code",
                                                         "full_name"}   # privacy.redact reads it
    assert "ordernotes" not in shape and "href" not in shape and "price" not in shape["orderrows"]["[]"]
    order = jsondecode.loads((FIXTURES / "01_ideal_21_registered.json").read_bytes())
    projected = decoder(load_mapping(MAPPING))((FIXTURES / "01_ideal_21_registered.json").read_bytes())
    assert len(json.dumps(projected, default=str)) * 2 < len(json.dumps(order, default=str))
    assert projected["orderrows"][0]["total_price"] == order["orderrows"][0]["total_price"]


@pytest.mark.parametrize("seed", range(40))
def test_random_mappings_see_the_same_record(seed):
    m = _random_mapping(load_mapping(MAPPING), random.Random(1000 + seed))
    converter = Converter(m)
    for data in DOCUMENTS:
        got, want = _both(m, data, converter)
        assert got == want, (seed, data[:80])


@pytest.mark.parametrize("source", [
    "record[record.currency | lower]", "record", "record | list", "record.orderrows[0:1]",
    "record | attr('customer')", "record.items() | list", "record.get('total_price')",
])
def test_what_the_analysis_cannot_follow_keeps_the_whole_record(source):
    assert record_shape(_reading(load_mapping(MAPPING), source)) is None


@pytest.mark.parametrize("source, kept", [
    ("record.customer | tojson", ("customer",)),
    ("record.customer.get('kvk')", ("customer",)),
    ("record.customer.keys() | list", ("customer",)),
    ("billing | dictsort", ("customer", "billingaddress")),
    ("record.orderrows | map(attribute='price') | list", ("orderrows", "[]", "price")),
    ("record.orderrows[1].unit", ("orderrows", "[]", "unit")),
    ("record['ordernotes']", ("ordernotes",)),
    ("record.orderrows | selectattr('price') | list", ("orderrows",)),
])
def test_a_value_used_as_a_whole_is_kept_whole(source, kept):
    shape = record_shape(_reading(load_mapping(MAPPING), source))
    node = shape
    for step in kept[:-1]:
        node = node[step]
    assert node[kept[-1]] is WHOLE


def test_a_name_bound_in_two_places_reads_through_both():
    m = load_mapping(MAPPING)
    m = _with(m, a="record.customer.billingaddress")
    m = dataclasses.replace(m, let=list(m.let) + [("a", compile_expression("record.user"))],
                            flags=[Flag(compile_expression("a.nickname"), compile_template("x"))])
    shape = record_shape(m)
    assert shape["customer"]["billingaddress"]["nickname"] is WHOLE
    assert shape["user"] is WHOLE


def test_a_name_bound_to_the_record_reads_through_it():
    m = _with(load_mapping(MAPPING), x="record")
    assert record_shape(m)["orderrows"]  # x unread: nothing more to keep
    assert record_shape(_reading(m, "x.ordernotes"))["ordernotes"] is WHOLE
    assert record_shape(_reading(m, "x | length")) is None


def test_rebinding_record_or_an_alias_in_a_template_keeps_the_whole_record():
    m = load_mapping(MAPPING)
    assert record_shape(_with(m, record="record.customer")) is None
    m = dataclasses.replace(m, flags=[Flag(compile_expression("true"),
                                           compile_template("{% set billing = record %}{{ billing.x }}"))])
    assert record_shape(m) is None


def test_an_api_destination_keeps_the_whole_record():
    m = load_mapping(ROOT / "mappings" / "ccvshop_asperion_api.yaml")
    assert m.has_api and record_shape(m) is None
    assert record_shape(load_mapping(MAPPING)) is not None


@pytest.mark.parametrize("change", [
    {"customer": None}, {"customer": "a text"}, {"orderrows": {"0": 1}}, {"orderrows": [1, 2]},
    {"orderrows": None}, {"user": [1]}, {"ordernotes": {"deep": [[[{"x": 1}]]]}},
])
def test_a_value_of_another_shape_is_decoded_in_full(change):
    order = {**json.loads((FIXTURES / "01_ideal_21_registered.json").read_text()), **change}
    data = json.dumps(order).encode()
    m = load_mapping(MAPPING)
    got, want = _both(m, data)
    assert got == want


@pytest.mark.parametrize("data", [
    b'{"id": 1, "unread": "\xff"}', b'\xef\xbb\xbf{"id": 1}', b'[{"id": 1}]', b'{"id": 1, "x": NaN}',
    b'{"id": 1', b'{"id": 1, "x": ' + b"[" * 5000 + b"]" * 5000 + b"}", b'{"id": 1}{"id": 2}', b"",
])
def test_a_document_the_typed_decode_refuses_gets_the_full_decoders_answer(data):
    loads = decoder(load_mapping(MAPPING))

    def answer(fn):
        try:
            return ("ok", repr(fn(data)))
        except BaseException as exc:  # noqa: BLE001
            return (type(exc).__name__, str(exc))

    assert answer(loads) == answer(jsondecode.loads)


def test_the_fixture_source_quarantines_broken_files_as_before(tmp_path):
    (tmp_path / "a.json").write_bytes(b'{"id": 1, "unread": "\xff"}')
    (tmp_path / "b.json").write_bytes(b'{"id": ')
    m = load_mapping(MAPPING)
    projected = list(FixtureSource(tmp_path, decode=decoder(m)).records())
    full = list(FixtureSource(tmp_path).records())
    assert projected == full and len(full) == 2


def test_projected_records_keep_the_order_of_their_keys():
    data = (FIXTURES / "01_ideal_21_registered.json").read_bytes()
    projected = decoder(load_mapping(MAPPING))(data)
    full = jsondecode.loads(data)
    assert list(projected) == [k for k in full if k in projected]
    assert copy.deepcopy(projected) == {k: _pruned(full[k], projected[k]) for k in projected}


def _pruned(full, projected):
    if isinstance(projected, dict) and isinstance(full, dict):
        return {k: _pruned(full[k], v) for k, v in projected.items()}
    if isinstance(projected, list) and isinstance(full, list):
        return [_pruned(f, p) for f, p in zip(full, projected)]
    return full


# ---------------------------------------------------------------- found in review

def _order(**change) -> bytes:
    order = json.loads((FIXTURES / "01_ideal_21_registered.json").read_text())
    return json.dumps({**order, **change}).encode()


def _element(m, **spec):
    """``m`` with one more element in the record, built from ``spec`` (no XSD check)."""
    from engine.config.mapping import Element
    el = Element(name="X", attributes=[], text=compile_template(spec.pop("text", "x")), children=[], **spec)
    record = dataclasses.replace(m.record_element, children=list(m.record_element.children) + [el])
    return dataclasses.replace(m, record_element=record, xsd_path=None)


@pytest.mark.parametrize("build", [
    lambda m: _with(m, unused="record.ordernotes"),
    lambda m: _element(m, bindings=[("w", compile_expression("record.ordernotes"))]),
    lambda m: _element(m, for_each=compile_expression("record.tags"), item_name="it"),
    lambda m: _element(m, for_each=compile_expression("record.tags"), item_name="it", text="{{ it.n }}"),
    lambda m: dataclasses.replace(m, invoice=dataclasses.replace(m.invoice, lines=dataclasses.replace(
        m.invoice.lines, each=compile_expression("record.tags"), amount=compile_expression("1"),
        rate=compile_expression("21"), quantity=compile_expression("1"),
        description=compile_template("x"), article_code=compile_template("y")))),
])
def test_a_value_bound_to_a_name_exists_even_when_nothing_reads_it(build):
    m = build(load_mapping(MAPPING))
    for data in (_order(tags=[{"n": 1}, {"n": 2}]), _order(tags=["a"]), _order(tags={"n": 1}), _order()):
        got, want = _both(m, data)
        assert got == want


@pytest.mark.parametrize("template", [
    "{% set f = record.customer.get %}{{ f('phone_number') }}",
    "{% set k = record.customer.keys %}{{ k() | list | length }}",
    "{{ record.customer['values']() | list | length }}",
    "{{ (record.orderrows | map(attribute='values') | first)() | list | length }}",
])
def test_a_dict_method_reached_through_a_path_sees_the_whole_dict(template):
    m = load_mapping(MAPPING)
    m = dataclasses.replace(m, flags=[Flag(compile_expression("true"), compile_template(template))])
    got, want = _both(m, _order(customer={**json.loads(_order())["customer"], "phone_number": "06"}))
    assert got == want and got[0] == "converted"


def test_an_unread_number_no_python_value_holds_is_skipped(tmp_path):
    """The one deliberate difference: decoded in full, the whole file is refused."""
    data = _order(junk=0).replace(b'"junk": 0', b'"junk": ' + b"9" * 4400)
    (tmp_path / "a.json").write_bytes(data)
    m = load_mapping(MAPPING)
    [projected] = FixtureSource(tmp_path, decode=decoder(m)).records()
    [full] = FixtureSource(tmp_path).records()
    assert isinstance(projected, dict) and "junk" not in projected
    assert "4300" in full.reason


def test_an_exponent_no_decimal_holds_makes_a_broken_record_not_a_crash(tmp_path):
    (tmp_path / "a.json").write_bytes(b'{"id": 1, "total_price": 1e9999999999999999999}')
    [record] = FixtureSource(tmp_path).records()
    assert "a number too large" in record.reason
