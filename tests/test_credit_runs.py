"""Credit notes end to end (issue 14, item 1; bookkeeping.md 8.4): `mapper run` against the CCV
simulator over signed HTTP, files in a real outbox, the state in SQLite.

A delivered order that the shop later cancels (status 8), credits with a credit invoice, or
whose return it credits, gets exactly one concept credit note per credit: the original's lines
negated, or its VAT split pro rata for a partial credit, for the same debtor; never more than
was invoiced; a credit of an order that never went out is reported, not booked."""
from __future__ import annotations

from decimal import Decimal

import pytest
from lxml import etree
from typer.testing import CliRunner

from engine import cli
from helpers import FIXTURES, MAPPING
from helpers import load_order
from engine.simulators.ccvshop import CCVShopSimulator
from engine.ops.state import open_state

runner = CliRunner()
KEYS = {"pub-test": "secret-test-value"}
SINCE = "2026-01-01"


@pytest.fixture
def shop(tmp_path, monkeypatch):
    orders = [load_order(FIXTURES / name) for name in
              ("01_ideal_21_registered.json", "02_mixed_9_21_shipping.json", "03_coupon_mixed.json")]
    unpaid = load_order(FIXTURES / "12_unpaid.json")
    with CCVShopSimulator(orders + [unpaid], keys=KEYS) as sim:
        monkeypatch.setenv("CCVSHOP_URL", sim.url)
        monkeypatch.setenv("CCVSHOP_PUBLIC_KEY", "pub-test")
        monkeypatch.setenv("CCVSHOP_SECRET_KEY", "secret-test-value")
        monkeypatch.setenv("MAPPER_REPORTS", str(tmp_path / "reports"))
        monkeypatch.setenv("MAPPER_DEBTOR_KEY", "k" * 32)
        yield sim, {o["ordernumber_full"]: o for o in orders + [unpaid]}, tmp_path


def run(tmp_path, *extra):
    result = runner.invoke(cli.app, ["run", str(MAPPING), "--state", str(tmp_path / "state.sqlite"),
                                     "--outbox", str(tmp_path / "outbox"), "--since", SINCE, *extra])
    assert result.exit_code in (0, 3), result.output
    return result


def documents(tmp_path) -> list[etree._Element]:
    """Every <Order> in the outbox, oldest file first."""
    out = []
    for f in sorted((tmp_path / "outbox").glob("*.xml"), key=lambda p: p.stat().st_mtime_ns):
        out += etree.parse(str(f)).getroot().findall(".//Order")
    return out


def credit_notes(tmp_path) -> list[etree._Element]:
    return [o for o in documents(tmp_path) if o.find("CreditNote") is not None]


def invoice_of(tmp_path, number: str) -> etree._Element:
    [inv] = [o for o in documents(tmp_path) if o.findtext("OrderNumber") == number and o.find("CreditNote") is None]
    return inv


def amounts(order: etree._Element) -> tuple[Decimal, Decimal, Decimal]:
    return tuple(Decimal(order.findtext(t)) for t in ("TotalExclVat", "TotalVatAmount", "TotalInclVat"))


def lines(order: etree._Element) -> list[tuple[str, Decimal, Decimal, Decimal, Decimal, str]]:
    return [(l.findtext("Description"), Decimal(l.findtext("Quantity")), Decimal(l.findtext("AmountExclVat")),
             Decimal(l.findtext("VatAmount")), Decimal(l.findtext("AmountInclVat")), l.findtext("VatClass"))
            for l in order.findall("Orderline")]


def test_a_cancelled_order_gets_one_credit_note_mirroring_its_invoice(shop):
    sim, orders, tmp = shop
    first = run(tmp)
    assert credit_notes(tmp) == []
    assert "3 delivered" in first.output or '"delivered": 3' in first.output or "delivered" in first.output
    sim.set_status(orders["1001"]["id"], 8)

    # the dry-run rehearses the run: it previews the credit note and keeps nothing
    before = (tmp / "state.sqlite").read_bytes()
    preview = runner.invoke(cli.app, ["dry-run", str(MAPPING), "--state", str(tmp / "state.sqlite"),
                                      "--since", SINCE, "--out", str(tmp / "preview.xml")])
    assert preview.exit_code == 0, preview.output
    assert "0 orders and 1 credit note(s) in the preview" in preview.output
    [previewed] = [o for o in etree.parse(str(tmp / "preview.xml")).getroot().findall(".//Order")]
    assert (tmp / "state.sqlite").read_bytes() == before

    second = run(tmp)
    [note] = credit_notes(tmp)
    assert etree.tostring(previewed) == etree.tostring(note)
    original = invoice_of(tmp, "1001")
    assert note.findtext("OrderNumber") == "1001"
    assert note.findtext("Status") == "Concept"
    assert note.findtext("CreditNote/Reason") == "geannuleerd"
    assert note.findtext("CreditNote/OriginalOrderNumber") == "1001"
    assert note.findtext("CreditNote/OriginalInvoiceDate") == original.findtext("InvoiceDate") == "2026-01-12"
    assert note.findtext("CreditNote/OriginalDescription") == original.findtext("Description")
    assert note.find("CreditNote/OriginalInvoiceNumber") is None   # a file destination never learns it
    assert note.findtext("Description").startswith("Creditnota bestelling 1001 (geannuleerd), bij factuur van 12-01-2026")
    # the same debtor, every line negated, the totals exactly the original's negated
    assert note.findtext("Debtor/DebtorNumber") == original.findtext("Debtor/DebtorNumber")
    assert amounts(note) == tuple(-a for a in amounts(original)) == (Decimal("-37.85"), Decimal("-7.95"), Decimal("-45.80"))
    assert lines(note) == [(d, -q, -e, -v, -i, c) for d, q, e, v, i, c in lines(original)]
    assert "delivered 0 orders and 1 credit note(s)" in second.output

    third = run(tmp)   # exactly once: the credit is keyed by order + credit
    assert len(credit_notes(tmp)) == 1
    assert "credit note" not in third.output


def test_a_partial_credit_invoice_is_split_over_the_rates_pro_rata(shop):
    sim, orders, tmp = shop
    run(tmp)
    o2 = orders["1002"]
    # 1002: 30.00 at 9% and 20.00 at 21%, shipping 6.95 split over both: total 56.95
    sim.add_invoice({"id": 501, "order_id": o2["id"], "type": "credit",
                     "total_price_inc_tax": Decimal("-10.00"), "total_price_exc_tax": Decimal("-8.81")})
    run(tmp)
    [note] = credit_notes(tmp)
    original = invoice_of(tmp, "1002")
    assert note.findtext("CreditNote/Reason") == "creditfactuur F-501"
    # independent arithmetic: the invoice holds at 9%: 30.00 + shipping 6.95*30/50 = 4.17 -> 34.17,
    # at 21%: 20.00 + 2.78 = 22.78. The credit 10.00 * 34.17/56.95 = 6.0000 -> 6.00 at 9%
    # (VAT 6.00*9/109 = 0.4954 -> 0.50), the rest 4.00 at 21% (VAT 4.00*21/121 = 0.6942 -> 0.69)
    by_class = {c: (e, v, i) for d, q, e, v, i, c in lines(note)}
    assert by_class == {"Laag": (Decimal("-5.50"), Decimal("-0.50"), Decimal("-6.00")),
                        "Hoog": (Decimal("-3.31"), Decimal("-0.69"), Decimal("-4.00"))}
    assert [d for d, *_ in lines(note)] == ["Creditering 9% btw", "Creditering 21% btw"]
    assert all(q == -1 for _, q, *_ in lines(note))
    assert amounts(note) == (Decimal("-8.81"), Decimal("-1.19"), Decimal("-10.00"))
    assert amounts(original)[2] == Decimal("56.95")


def test_a_credited_return_without_an_amount_takes_what_is_left(shop):
    sim, orders, tmp = shop
    run(tmp)
    o2 = orders["1002"]
    sim.add_invoice({"id": 501, "order_id": o2["id"], "type": "credit",
                     "total_price_inc_tax": Decimal("-10.00"), "total_price_exc_tax": Decimal("-8.81")})
    sim.add_return({"id": 91, "order_id": o2["id"]})
    sim.set_return_status(91, 8)
    run(tmp)
    notes = credit_notes(tmp)
    assert [n.findtext("CreditNote/Reason") for n in notes] == ["creditfactuur F-501", "retour 91"]
    assert sum(amounts(n)[2] for n in notes) == Decimal("-56.95")   # the whole order, not more
    assert amounts(notes[1])[2] == Decimal("-46.95")
    # the order is cancelled too now: nothing is left, so nothing more is booked or reported
    sim.set_status(o2["id"], 8)
    again = run(tmp)
    assert len(credit_notes(tmp)) == 2
    assert "not credited" not in again.output


def test_a_credit_beyond_what_is_left_is_reported_not_booked(shop):
    sim, orders, tmp = shop
    run(tmp)
    o1 = orders["1001"]
    sim.add_invoice({"id": 601, "order_id": o1["id"], "type": "credit",
                     "total_price_inc_tax": Decimal("-45.80"), "total_price_exc_tax": Decimal("-37.85")})
    sim.add_invoice({"id": 602, "order_id": o1["id"], "type": "credit",
                     "total_price_inc_tax": Decimal("-5.00"), "total_price_exc_tax": Decimal("-4.13")})
    out = run(tmp).output
    [note] = credit_notes(tmp)
    assert note.findtext("CreditNote/Reason") == "creditfactuur F-601"
    assert "not credited: creditfactuur F-602: credits €5.00, but only €0.00" in out
    with open_state(str(tmp / "state.sqlite")) as st:
        status = {e.credit_id.split("/credit/")[1]: e.status for e in st.credits("ccvshop-asperion")}
    assert status == {"invoice-601": "booked", "invoice-602": "flagged"}
    again = run(tmp).output        # reported once, not every night
    assert "F-602" not in again and len(credit_notes(tmp)) == 1
    status = runner.invoke(cli.app, ["status", str(MAPPING), "--state", str(tmp / "state.sqlite")]).output
    assert "credit notes: 1 booked, 1 not booked (more than was left to credit), 0 for orders never booked" in status
    assert f"{o1['id']}/credit/invoice-602: creditfactuur F-602: credits €5.00, but only €0.00" in status


def test_a_credit_of_an_order_that_never_went_out_is_reported_not_booked(shop):
    sim, orders, tmp = shop
    unpaid = orders[next(n for n, o in orders.items() if not o["paid"])]
    sim.add_invoice({"id": 701, "order_id": unpaid["id"], "type": "credit",
                     "total_price_inc_tax": Decimal("-3.00"), "total_price_exc_tax": Decimal("-2.48")})
    out = run(tmp).output
    assert credit_notes(tmp) == []
    assert f"order {unpaid['id']} was never booked by this connector" in out
    assert f"order {unpaid['id']} was never booked" not in run(tmp).output   # once


def test_credit_notes_do_not_count_against_the_plan(shop, monkeypatch):
    sim, orders, tmp = shop
    monkeypatch.setenv("MAPPER_PLAN", "basis")
    run(tmp)
    sim.set_status(orders["1001"]["id"], 8)
    run(tmp)
    assert len(credit_notes(tmp)) == 1
    from datetime import datetime, timezone
    with open_state(str(tmp / "state.sqlite")) as st:
        assert st.delivered_count("ccvshop-asperion", datetime.now(timezone.utc).year, "Europe/Amsterdam") == 3


def test_a_credit_note_is_redone_not_doubled_after_a_crash_before_the_file(shop, monkeypatch):
    sim, orders, tmp = shop
    run(tmp)
    sim.set_status(orders["1001"]["id"], 8)
    import engine.io.outbox as outbox

    def crash(*a, **k):
        raise KeyboardInterrupt("power cut")
    monkeypatch.setattr(outbox, "_rename_no_replace", crash, raising=True)
    crashed = runner.invoke(cli.app, ["run", str(MAPPING), "--state", str(tmp / "state.sqlite"),
                                      "--outbox", str(tmp / "outbox"), "--since", SINCE])
    assert crashed.exit_code != 0
    monkeypatch.undo()
    monkeypatch.setenv("CCVSHOP_URL", sim.url)
    monkeypatch.setenv("CCVSHOP_PUBLIC_KEY", "pub-test")
    monkeypatch.setenv("CCVSHOP_SECRET_KEY", "secret-test-value")
    monkeypatch.setenv("MAPPER_REPORTS", str(tmp / "reports"))
    monkeypatch.setenv("MAPPER_DEBTOR_KEY", "k" * 32)
    run(tmp)
    run(tmp)
    assert len(credit_notes(tmp)) == 1


# ----------------------------------------------------------------------------- the API destination

def test_api_destination_posts_credit_notes_naming_the_processed_invoice_number(tmp_path, monkeypatch):
    """The Asperion REST API gets the credit note as a concept invoice with negative lines; the
    description names the original's number once Asperion processed it, and a credit of an
    invoice that is still a concept is flagged (bookkeeping 8.4)."""
    import json
    from engine.simulators.asperion import AsperionSimulator
    from helpers import ROOT
    api_mapping = ROOT / "mappings" / "ccvshop_asperion_api.yaml"
    shop = tmp_path / "shop"
    shop.mkdir()
    for name in ("01_ideal_21_registered.json", "02_mixed_9_21_shipping.json"):
        (shop / name).write_text((FIXTURES / name).read_text(encoding="utf-8"), encoding="utf-8")
    client, secret, refresh, tenant = "client-c", "client-secret-c", "refresh-c", "tenant-c"
    with AsperionSimulator(clients={client: secret}, refresh_tokens={refresh: client}, tenants={tenant}) as sim:
        for k, v in {"ASPERION_URL": sim.url, "ASPERION_TOKEN_URL": sim.url + "/connect/token",
                     "ASPERION_CLIENT_ID": client, "ASPERION_CLIENT_SECRET": secret,
                     "ASPERION_REFRESH_TOKEN": refresh, "ASPERION_TENANT_ID": tenant,
                     "ASPERION_TOKEN_FILE": str(tmp_path / "token.json")}.items():
            monkeypatch.setenv(k, v)

        def api_run():
            result = runner.invoke(cli.app, ["run", str(api_mapping), "--fixtures", str(shop), "--since", SINCE,
                                             "--state", str(tmp_path / "state.sqlite")])
            assert result.exit_code in (0, 3), result.output
            assert secret not in result.output and refresh not in result.output
            return result.output

        api_run()
        by_desc = {i["description"]: i for i in sim.invoices(tenant)}
        sim.process_invoice(by_desc["Bestelling 1001"]["id"], "2026-0042", tenant)
        for name in ("01_ideal_21_registered.json", "02_mixed_9_21_shipping.json"):   # both cancelled
            order = json.loads((shop / name).read_text(encoding="utf-8"))
            order["status"] = 8
            (shop / name).write_text(json.dumps(order), encoding="utf-8")
        # the dry-run asks the API what the run would (read only): the same descriptions, nothing posted
        posted = len(sim.invoices(tenant))
        preview = runner.invoke(cli.app, ["dry-run", str(api_mapping), "--fixtures", str(shop), "--since", SINCE,
                                          "--state", str(tmp_path / "state.sqlite"), "--out", "-"])
        assert preview.exit_code == 0, preview.output
        assert "0 orders and 2 credit note(s) in the preview" in preview.output
        assert "Creditnota bestelling 1001 (geannuleerd), bij factuur 2026-0042" in preview.output
        assert "order 1002 cancelled: credits an invoice that is still a concept" in preview.output
        assert len(sim.invoices(tenant)) == posted
        out = api_run()
        notes = [i for i in sim.invoices(tenant) if i["description"].startswith("Creditnota")]
        assert sorted(n["description"] for n in notes) == [
            "Creditnota bestelling 1001 (geannuleerd), bij factuur 2026-0042",
            "Creditnota bestelling 1002 (geannuleerd), bij factuur van 03-02-2026"]
        for note in notes:
            number = note["description"].split()[2]
            original = by_desc[f"Bestelling {number}"]
            assert note["status"] == 1 and note["debtorCustomerNumber"] == original["debtorCustomerNumber"]
            assert Decimal(str(note["totalAmountInclVat"])) == -Decimal(str(original["totalAmountInclVat"]))
            assert [Decimal(str(l["amount"])) for l in note["lines"]["_data"]] == \
                [-Decimal(str(l["amount"])) for l in original["lines"]["_data"]]
            assert [l["vatCode"] for l in note["lines"]["_data"]] == [l["vatCode"] for l in original["lines"]["_data"]]
        assert "order 1002 cancelled: credits an invoice that is still a concept" in out
        assert "order 1001 cancelled: credits an invoice that is still a concept" not in out
        api_run()   # exactly once
        assert len([i for i in sim.invoices(tenant) if i["description"].startswith("Creditnota")]) == 2


# ----------------------------------------------------------------------------- webhooks are hints

def test_a_status_webhook_credits_a_cancelled_order_outside_the_poll_window(shop):
    """`orders.updated.status` is a hint like `ispaid`: the shop cancels an order delivered long
    ago (outside the 90-day look-back), its webhook reaches `mapper listen`, and the next run
    re-fetches the order through the signed API and credits it, once."""
    import socket
    import subprocess
    import sys
    import time
    import requests
    sim, orders, tmp = shop
    state = str(tmp / "state.sqlite")
    run(tmp)                      # --since 2026-01-01: 1001, created 2026-01-12, is invoiced
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    added = runner.invoke(cli.app, ["hooks", "add", str(MAPPING), "orders.updated.status",
                                    "--base-url", f"http://127.0.0.1:{port}", "--state", state])
    assert added.exit_code == 0, added.output
    address = added.output.strip().splitlines()[-1]
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "listen", str(MAPPING), "--port", str(port),
                             "--state", state], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                requests.post(f"http://127.0.0.1:{port}/hooks/x/y", data=b"{}", timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        sim.subscribe("orders.updated.status", address)
        sim.set_status(orders["1001"]["id"], 8)
        sim.wait_webhooks()
        assert [e["status"] for e in sim.webhook_log if e["event"] == "orders.updated.status"] == [200]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    # a daily run: the window (90 days back from today) no longer reaches January
    daily = runner.invoke(cli.app, ["run", str(MAPPING), "--state", state, "--outbox", str(tmp / "outbox")])
    assert daily.exit_code in (0, 3), daily.output
    [note] = credit_notes(tmp)
    assert note.findtext("OrderNumber") == "1001" and note.findtext("CreditNote/Reason") == "geannuleerd"
    again = runner.invoke(cli.app, ["run", str(MAPPING), "--state", state, "--outbox", str(tmp / "outbox")])
    assert "credit note" not in again.output and len(credit_notes(tmp)) == 1
