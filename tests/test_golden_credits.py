"""Credit notes of the default mapping, compared byte for byte with a reviewed file.

The fixture shop runs once against the CCV simulator (every paid order invoiced), then the shop
cancels, credits and takes back some of them; the second run's credit notes are compared with
tests/golden/ccvshop_asperion.credits.xml (reviewed by hand), and every amount with
tests/golden/expected_credit_amounts.json, calculated without the engine (arithmetic in
tests/golden/README.md, "Credit notes")."""
from __future__ import annotations

import json
from decimal import Decimal

import pytest
from lxml import etree
from typer.testing import CliRunner

from engine import cli
from helpers import FIXTURES, GOLDEN, MAPPING
from helpers import load_order
from engine.simulators.ccvshop import CCVShopSimulator

runner = CliRunner()
NOW = "2026-11-26T21:00:00Z"
EXPECTED = json.loads((GOLDEN / "expected_credit_amounts.json").read_text(encoding="utf-8"))


def scenario(sim: CCVShopSimulator, ids: dict[str, int]) -> None:
    """What the shop does after the first run (the same every time)."""
    sim.set_status(ids["1001"], 8)                                       # cancelled: a full credit
    sim.add_invoice({"id": 501, "order_id": ids["1002"], "type": "credit", "create_date": "2026-11-20T10:00:00Z",
                     "total_price_inc_tax": Decimal("-10"), "total_price_exc_tax": Decimal("-8.81")})
    sim.add_return({"id": 91, "order_id": ids["1003"], "create_date": "2026-11-21T10:00:00Z"})
    sim.set_return_status(91, 8)                                         # credited, no amount: the rest
    sim.add_invoice({"id": 502, "order_id": ids["1006"], "type": "credit", "create_date": "2026-11-22T10:00:00Z",
                     "total_price_inc_tax": Decimal("-100"), "total_price_exc_tax": Decimal("-100")})
    sim.add_invoice({"id": 503, "order_id": ids["1018"], "type": "credit", "create_date": "2026-11-23T10:00:00Z",
                     "total_price_inc_tax": Decimal("-121"), "total_price_exc_tax": Decimal("-100")})
    sim.set_status(ids["1019"], 8)                                       # with its rounding line


@pytest.fixture(scope="module")
def credits(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("golden-credits")
    orders = [load_order(p) for p in sorted(FIXTURES.glob("*.json"))]
    mp = pytest.MonkeyPatch()
    try:
        with CCVShopSimulator(orders, keys={"pub-g": "secret-g"}) as sim:
            for k, v in {"CCVSHOP_URL": sim.url, "CCVSHOP_PUBLIC_KEY": "pub-g", "CCVSHOP_SECRET_KEY": "secret-g",
                         "MAPPER_NOW": NOW, "MAPPER_REPORTS": str(tmp / "reports"),
                         "MAPPER_DEBTOR_KEY": "g" * 32}.items():
                mp.setenv(k, v)
            args = ["run", str(MAPPING), "--state", str(tmp / "state.sqlite"), "--since", "2000-01-01"]
            first = runner.invoke(cli.app, args + ["--outbox", str(tmp / "first")])
            assert first.exit_code in (0, 3), first.output
            scenario(sim, {o["ordernumber_full"]: o["id"] for o in orders})
            second = runner.invoke(cli.app, args + ["--outbox", str(tmp / "second")])
            assert second.exit_code in (0, 3), second.output
    finally:
        mp.undo()
    [file] = (tmp / "second").glob("*.xml")
    root = etree.parse(str(file)).getroot()
    orders_el = root.find("Orders")
    return etree.tostring(orders_el, encoding="utf-8", pretty_print=True), orders_el, second.output


def test_credit_notes_match_the_reviewed_golden_file(credits):
    text, _, _ = credits
    golden = (GOLDEN / "ccvshop_asperion.credits.xml").read_bytes()
    assert text == golden, "output differs from tests/golden/ccvshop_asperion.credits.xml: read the diff first"


def test_six_credit_notes_and_no_invoice(credits):
    _, orders, output = credits
    notes = orders.findall("Order")
    assert len(notes) == 6 and all(n.find("CreditNote") is not None for n in notes)
    assert "delivered 0 orders and 6 credit note(s)" in output


@pytest.mark.parametrize("number", sorted(EXPECTED))
def test_credit_amounts_match_the_independent_calculation(credits, number):
    _, orders, _ = credits
    want = EXPECTED[number]
    [note] = [o for o in orders.findall("Order") if o.findtext("OrderNumber") == number]
    got = [{"label": l.findtext("Description"), "rate": l.findtext("VatPercentage"), "class": l.findtext("VatClass"),
            "excl": l.findtext("AmountExclVat"), "vat": l.findtext("VatAmount"), "incl": l.findtext("AmountInclVat")}
           for l in note.findall("Orderline")]
    assert got == want["lines"]
    assert [note.findtext(t) for t in ("TotalExclVat", "TotalVatAmount", "TotalInclVat")] == want["totals"]
    assert note.findtext("InvoiceDate") == want["date"]
    assert note.findtext("CreditNote/Reason") == want["reason"]
