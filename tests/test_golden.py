"""The default mapping over the fixture shop, compared byte for byte with reviewed files.

Two independent checks: the XML against tests/golden/ccvshop_asperion.xml (reviewed by
hand), and every amount, debtor number and date against tests/golden/expected_amounts.json,
which was calculated without the engine (arithmetic in tests/golden/README.md).
"""

import json

import pytest
from lxml import etree

from helpers import FIXTURES, GOLDEN, MAPPING
from helpers import load_order, run_preview

EXPECTED = json.loads((GOLDEN / "expected_amounts.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def preview(request):
    mp = pytest.MonkeyPatch()
    mp.setenv("MAPPER_NOW", "2026-11-26T21:00:00Z")
    try:
        xml, summary = run_preview(MAPPING, FIXTURES)
    finally:
        mp.undo()
    return xml, summary, etree.fromstring(xml)


def test_xml_matches_reviewed_golden_file(preview):
    xml, _, _ = preview
    golden = (GOLDEN / "ccvshop_asperion.xml").read_bytes()
    assert xml == golden, "output differs from tests/golden/ccvshop_asperion.xml: read the diff before changing it"


def test_whole_document_passes_the_xsd(preview):
    _, _, root = preview
    schema = etree.XMLSchema(etree.parse(str(MAPPING.parent.parent / "schemas" / "asperion_axml.xsd")))
    assert schema.validate(root), schema.error_log


def _orders_by_number(root):
    return {o.findtext("OrderNumber"): o for o in root.iter("Order")}


@pytest.mark.parametrize("fixture", sorted(EXPECTED))
def test_amounts_match_the_independent_calculation(preview, fixture):
    _, summary, root = preview
    want = EXPECTED[fixture]
    number = load_order(FIXTURES / fixture)["ordernumber_full"]
    order = _orders_by_number(root).get(number)
    if not want["included"]:
        assert order is None, f"{fixture} must not be in the file"
        quarantined = {q.number for q in summary.quarantined}
        assert (number in quarantined) == want["quarantined"]
        return
    assert order is not None, f"{fixture} is missing from the file"
    got = [{"label": l.findtext("Description"), "rate": l.findtext("VatPercentage"),
            "excl": l.findtext("AmountExclVat"), "vat": l.findtext("VatAmount"), "incl": l.findtext("AmountInclVat")}
           for l in order.findall("Orderline")]
    expected = [{"label": l.get("label_xml", l["label"]), "rate": l["rate"], "excl": l["excl"], "vat": l["vat"],
                 "incl": l["incl"]} for l in want["lines"]]
    assert got == expected
    assert {"excl": order.findtext("TotalExclVat"), "vat": order.findtext("TotalVatAmount"),
            "incl": order.findtext("TotalInclVat")} == want["totals"]
    assert order.findtext("Debtor/DebtorNumber") == want["debtor_number"]
    assert order.findtext("OrderDate") == want["order_date"]
    # the VAT class carries the reason, line kinds carry their own class
    kinds = [l["kind"] for l in want["lines"]]
    classes = [l.findtext("VatClass") for l in order.findall("Orderline")]
    for kind, vat_class in zip(kinds, classes):
        assert vat_class in {"Hoog", "Laag", "Nul", "Verlegd", "Export"}
        if kind == "rounding":
            assert vat_class == "Nul"


def test_filtered_and_quarantined_orders(preview):
    _, summary, root = preview
    numbers = set(_orders_by_number(root))
    assert "1012" not in numbers and "1013" not in numbers  # unpaid, cancelled
    assert sum(summary.excluded.values()) == 2
    assert summary.excluded == {"record.paid": 1, "record.status != 8": 1}
    reasons = {q.number: q.reason for q in summary.quarantined}
    assert set(reasons) == {"1014", "1"}
    assert "differs by €0.05" in reasons["1014"] and "€46.90" in reasons["1014"] and "€46.95" in reasons["1014"]
    assert "€585.00" in reasons["1"] and "€590.00" in reasons["1"]
    assert int(root.findtext("Header/OrderCount")) == len(root.findall("Orders/Order")) == 21


def test_order_numbers_in_descriptions_and_concept_status(preview):
    _, _, root = preview
    for order in root.iter("Order"):
        assert order.findtext("OrderNumber") in order.findtext("Description")
        assert order.findtext("Status") == "Concept"
    assert _orders_by_number(root)["WEB-1234"].findtext("Description") == "Bestelling WEB-1234 factuur 2026001"


def test_text_is_cleaned_and_escaped_by_the_library(preview):
    xml, _, root = preview
    assert "„".encode() not in xml and "“".encode() not in xml
    order = _orders_by_number(root)["1009"]
    assert order.findtext("Debtor/Name") == 'Bakkerij "De Zoete Inval" & Zonen <B.V.>'
    assert b"&amp; Zonen &lt;B.V.&gt;" in xml


def test_same_customer_same_debtor_number_in_one_file(preview):
    _, _, root = preview
    orders = _orders_by_number(root)
    assert orders["1016"].findtext("Debtor/DebtorNumber") == orders["1001"].findtext("Debtor/DebtorNumber")
    assert orders["1016"].findtext("Debtor/Email") == "sophie.fischer@example.nl"


def test_intra_community_and_export_classes(preview):
    _, summary, root = preview
    orders = _orders_by_number(root)
    assert {l.findtext("VatClass") for l in orders["1006"].findall("Orderline")} == {"Verlegd"}
    assert {l.findtext("VatClass") for l in orders["1007"].findall("Orderline")} == {"Export"}
    assert ("1007", "export outside the EU: keep the proof of exit") in summary.flags


def test_delivery_address_only_when_it_differs(preview):
    _, _, root = preview
    orders = _orders_by_number(root)
    assert [a.get("type") for a in orders["1021"].findall("Debtor/Address")] == ["invoice", "delivery"]
    assert [a.get("type") for a in orders["1001"].findall("Debtor/Address")] == ["invoice"]


def test_a_preview_lists_max_rows_rows_and_flags_and_counts_them_all(preview, monkeypatch):
    """A dry-run of a large back-fill keeps its table and flag list bounded (memory), while
    the counts and totals cover every order."""
    _, full, _ = preview
    assert full.converted == 21 and full.flag_count == len(full.flags) == 23
    monkeypatch.setenv("MAPPER_NOW", "2026-11-26T21:00:00Z")
    _, small = run_preview(MAPPING, FIXTURES, max_rows=2)
    assert small.converted == 21 and len(small.rows) == 2
    assert small.flag_count == 23 and small.flags == full.flags[:2]
    assert small.totals == full.totals
