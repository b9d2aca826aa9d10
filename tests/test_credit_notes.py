"""Credit notes (issue 14, item 1), first part: the CCV Shop simulator serves the §9 invoices
(debit and credit) and returns (status 8, Credited) over real, signed HTTP on 127.0.0.1, so
the credit intake can be built and tested against it."""
from __future__ import annotations

from decimal import Decimal

import pytest

from helpers import load_order
from test_ccvshop_simulator import API, FakeClock, call, jload

from pathlib import Path

from engine.simulators.ccvshop import CCVShopSimulator

FIXTURES = Path(__file__).parent / "fixtures" / "ccvshop"


@pytest.fixture
def sim():
    o1 = load_order(FIXTURES / "01_ideal_21_registered.json")
    o2 = load_order(FIXTURES / "02_mixed_9_21_shipping.json")
    s = CCVShopSimulator([o1, o2], clock=FakeClock())
    s.add_invoice({"id": 71, "order_id": o1["id"], "type": "debit",
                   "total_price_inc_tax": 45.8, "total_price_exc_tax": 37.85})
    s.add_invoice({"id": 72, "order_id": o1["id"], "type": "credit",
                   "total_price_inc_tax": -45.8, "total_price_exc_tax": -37.85})
    s.add_invoice({"id": 73, "order_id": o2["id"], "type": "debit",
                   "total_price_inc_tax": 10, "total_price_exc_tax": 8.26})
    s.add_return({"id": 91, "order_id": o2["id"]})
    with s:
        yield s, o1, o2


def test_invoices_list_both_types_with_ordernumber_and_full_number(sim):
    s, o1, o2 = sim
    r = call(s, "GET", f"{API}/invoices")
    assert r.status_code == 200, r.text
    items = jload(r)["items"]
    assert [(i["id"], i["type"], i["order_id"]) for i in items] == [
        (71, "debit", o1["id"]), (72, "credit", o1["id"]), (73, "debit", o2["id"])]
    credit = items[1]
    assert credit["ordernumber"] == o1["ordernumber"]
    assert credit["status"] == "reimbursed"
    assert credit["invoicenumber_full"].endswith("-72")
    assert credit["total_price_inc_tax"] == Decimal("-45.8")
    assert credit["order"]["href"].endswith(f"/orders/{o1['id']}")


def test_invoices_filters_ordernumber_status_and_type(sim):
    s, o1, _ = sim
    by_number = jload(call(s, "GET", f"{API}/invoices?ordernumber={o1['ordernumber']}"))["items"]
    assert [i["id"] for i in by_number] == [71, 72]
    reimbursed = jload(call(s, "GET", f"{API}/invoices?status=reimbursed"))["items"]
    assert [i["id"] for i in reimbursed] == [72]
    credits = jload(call(s, "GET", f"{API}/invoices?type=credit"))["items"]
    assert [i["id"] for i in credits] == [72]
    bad = call(s, "GET", f"{API}/invoices?status=refunded")
    assert bad.status_code == 400 and "status" in bad.text


def test_invoice_by_id_and_unknown_id(sim):
    s, _, _ = sim
    one = jload(call(s, "GET", f"{API}/invoices/72"))
    assert one["type"] == "credit" and one["id"] == 72
    missing = call(s, "GET", f"{API}/invoices/999")
    assert missing.status_code == 500 and "500.24" in missing.text


def test_returns_credited_status_filter_and_webhook_hint(sim):
    s, _, o2 = sim
    s.subscribe("returns.updated", "http://127.0.0.1:9/hook")  # nobody listens: logged, not lost
    assert jload(call(s, "GET", f"{API}/returns?status=8"))["items"] == []
    s.set_return_status(91, 8)
    credited = jload(call(s, "GET", f"{API}/returns?status=8"))["items"]
    assert [(r["id"], r["order_id"], r["status"]) for r in credited] == [(91, o2["id"], 8)]
    one = jload(call(s, "GET", f"{API}/returns/91"))
    assert one["status"] == 8
    s.wait_webhooks()
    [hint] = [e for e in s.webhook_log if e["event"] == "returns.updated"]
    assert b'"return_id":91' in hint["body"] and f'"id":{o2["id"]}'.encode() in hint["body"]


def test_invoices_and_returns_are_read_only(sim):
    s, _, _ = sim
    assert call(s, "POST", f"{API}/invoices", b'{"type":"credit"}').status_code == 405
    assert call(s, "DELETE", f"{API}/returns/91").status_code == 405


def test_add_invoice_refuses_unknown_type_and_order():
    s = CCVShopSimulator([load_order(FIXTURES / "01_ideal_21_registered.json")])
    with pytest.raises(ValueError, match="type"):
        s.add_invoice({"id": 1, "order_id": 500000001, "type": "refund"})
    with pytest.raises(ValueError, match="no order 42"):
        s.add_invoice({"id": 1, "order_id": 42, "type": "credit"})
