"""A mapping may extend another: what the two share is written once."""

import pytest

from helpers import MAPPING
from engine.errors import MappingError, MappingErrors
from engine.config.mapping import load_mapping


def _child(tmp_path, body: str):
    (tmp_path / "base.yaml").write_text(MAPPING.read_text(encoding="utf-8").replace(
        "xsd: ../schemas/asperion_axml.xsd", f"xsd: {MAPPING.parent.parent / 'schemas' / 'asperion_axml.xsd'}"), encoding="utf-8")
    child = tmp_path / "child.yaml"
    child.write_text("extends: base.yaml\n" + body, encoding="utf-8")
    return child


def test_child_overrides_keys_and_keeps_the_rest(tmp_path):
    m = load_mapping(_child(tmp_path, "name: child-shop\ninvoice:\n  description: \"Order {{ record.ordernumber_full }}\"\n"))
    assert m.name == "child-shop"
    assert m.invoice.description.source == "Order {{ record.ordernumber_full }}"
    assert m.invoice.vat_rounding == "per_line"  # from the base
    assert len(m.vat_rules) == 7


def test_null_removes_a_key(tmp_path):
    m = load_mapping(_child(tmp_path, "flags: null\n"))
    assert m.flags == []


def test_errors_point_into_the_file_that_holds_the_value(tmp_path):
    with pytest.raises(MappingError) as info:
        load_mapping(_child(tmp_path, "invoice:\n  vat_rounding: per_invoice\n"))
    assert info.value.file.endswith("child.yaml") and info.value.line == 3
    base_text = (tmp_path / "base.yaml").read_text(encoding="utf-8")
    (tmp_path / "base.yaml").write_text(base_text.replace("  - record.paid   ", "  - record.paid ==  "), encoding="utf-8")
    (tmp_path / "child.yaml").write_text("extends: base.yaml\nname: child-shop\n", encoding="utf-8")
    with pytest.raises((MappingError, MappingErrors)) as info:
        load_mapping(tmp_path / "child.yaml")
    err = info.value if isinstance(info.value, MappingError) else info.value.errors[0]
    assert err.file.endswith("base.yaml")
    assert "record.paid ==" in base_text.replace("  - record.paid   ", "  - record.paid ==  ").splitlines()[err.line - 1]


def test_an_extends_loop_is_refused(tmp_path):
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n", encoding="utf-8")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n", encoding="utf-8")
    with pytest.raises(MappingError, match="a loop"):
        load_mapping(tmp_path / "a.yaml")


def test_missing_parent(tmp_path):
    (tmp_path / "a.yaml").write_text("extends: nope.yaml\n", encoding="utf-8")
    with pytest.raises(MappingError, match=r"a.yaml:1:\d+: extends: cannot read nope.yaml"):
        load_mapping(tmp_path / "a.yaml")


def test_api_destination_needs_api_debtors(tmp_path):
    api = MAPPING.parent / "ccvshop_asperion_api.yaml"
    child = tmp_path / "c.yaml"
    child.write_text(f"extends: {api}\nname: c\ncustomer:\n  directory: {{kind: register}}\n", encoding="utf-8")
    with pytest.raises(MappingError, match=r"c.yaml:4:\d+: with destination.api the debtors must come from the API"):
        load_mapping(child)
    child.write_text(f"extends: {MAPPING}\nname: c\ncustomer:\n  directory: {{kind: api}}\n", encoding="utf-8")
    with pytest.raises(MappingError, match="kind api needs destination.api"):
        load_mapping(child)
