"""Bookkeeping rules declared in the mapping (bookkeeping spec 7.3 and the field failures):
reverse charge only with proof, no 0% to EU consumers, data that makes no sense quarantined
with a reason a bookkeeper understands, other currencies flagged. Each variant is one of the
demo shop's orders with one thing changed, run through the real dry-run."""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from helpers import FIXTURES, MAPPING
from helpers import load_order, write_order

ICP = "06_icp_b2b_belgium.json"            # BE0412345678, delivered in BE, 0%: Verlegd
CONSUMER_BE = "08_eu_consumer_belgium_nl21.json"
PLAIN = "01_ideal_21_registered.json"


def dry_run(tmp_path: Path, name: str, change) -> tuple[str, str]:
    shop = tmp_path / "shop"
    shop.mkdir(parents=True)
    order = load_order(FIXTURES / name)
    change(order)
    write_order(shop, name, order)
    out = subprocess.run([sys.executable, "-m", "engine.cli", "dry-run", str(MAPPING), "--fixtures", str(shop),
                          "--out", "-"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    return out.stdout + out.stderr, str(order["id"])       # the XML, then the report (on stderr)


def quarantined(stdout: str, order_id: str) -> str:
    lines = [l for l in stdout.splitlines() if l.startswith("  order ") and f"(id {order_id})" in l]
    return lines[0] if lines else ""


def billing(order, **values):
    order["customer"]["billingaddress"].update(values)


@pytest.mark.parametrize("change, reason", [
    (lambda o: o["customer"].update(btw=""), "no VAT number"),
    (lambda o: o["customer"].update(btw="DE123456789"), "a VAT number of DE, not of the delivery country BE"),
    (lambda o: o["customer"].update(btw="BE12345"), "the VAT number is not well-formed for BE"),
    (lambda o: billing(o, country_code="NL"), "delivered in NL, not in another EU country"),
    (lambda o: billing(o, country_code="US"), "delivered in US, not in another EU country"),
])
def test_reverse_charge_needs_proof(tmp_path, change, reason):
    stdout, order_id = dry_run(tmp_path, ICP, change)
    line = quarantined(stdout, order_id)
    assert "intra-community order (0% VAT) without proof for reverse charge" in line and reason in line, line
    assert "<VatClass>Verlegd</VatClass>" not in stdout


def test_reverse_charge_with_proof_is_booked_verlegd_and_greece_is_el(tmp_path):
    stdout, order_id = dry_run(tmp_path, ICP, lambda o: None)
    assert quarantined(stdout, order_id) == "" and "<VatClass>Verlegd</VatClass>" in stdout
    greek, gid = dry_run(tmp_path / "gr", ICP, lambda o: (billing(o, country_code="GR"),
                                                            o["customer"].update(btw="EL123456789")))
    assert quarantined(greek, gid) == "" and "<VatClass>Verlegd</VatClass>" in greek


def test_zero_vat_to_a_consumer_in_another_eu_country_is_quarantined(tmp_path):
    def zero(o):
        for row in o["orderrows"]:
            row["tax"] = 0
        o["total_tax"] = 0
    stdout, order_id = dry_run(tmp_path, CONSUMER_BE, zero)
    assert "0% VAT to a consumer in BE: the shop should charge VAT or OSS" in quarantined(stdout, order_id)


def _rows(order, **values):
    for row in order["orderrows"]:
        row.update(values)


@pytest.mark.parametrize("change, reason", [
    (lambda o: o.update(paid="yes"), "paid flag is yes (text)"),
    (lambda o: o["orderrows"][0].update(count=0), "row 1 (T-shirt basic wit): quantity 0 but an amount of €"),
    (lambda o: o["orderrows"][0].update(count="0"), "quantity 0 but an amount"),          # text, as CCV may send
    (lambda o: o["orderrows"][0].update(count=-1), "quantity -1 with an amount of €29.90: one of them has the wrong sign"),
    (lambda o: o["orderrows"][0].update(count=Decimal(10) ** 6), "quantity 1000000 is beyond the declared limit of 10000"),
    (lambda o: o.update(total_price=Decimal("-10.00")), "order total is negative (€-10.00)"),
    (lambda o: o.update(total_price=Decimal("1e400")), "beyond the declared limit"),
    (lambda o: o["orderrows"][0].update(total_price="NaN"), "a number and text"),
    (lambda o: o.update(total_shipping=Decimal("1e400")), "a number that cannot be computed with"),
    (lambda o: o.update(total_price="NaN"), "an amount is not a number (total_price NaN)"),
    (lambda o: o.update(total_price="Infinity"), "an amount is not a number (total_price Infinity)"),
])
def test_data_that_makes_no_sense_is_quarantined_in_words(tmp_path, change, reason):
    stdout, order_id = dry_run(tmp_path, PLAIN, change)
    line = quarantined(stdout, order_id)
    assert reason in line, line
    for python in ("InvalidOperation", "TypeError", "decimal.", "<class"):
        assert python not in line


def test_an_order_in_another_currency_is_flagged(tmp_path):
    stdout, _ = dry_run(tmp_path, PLAIN, lambda o: o.update(currency="USD"))
    assert "an order in USD: Asperion books in euros" in stdout


def test_a_name_over_the_declared_length_is_quarantined_not_cut(tmp_path):
    stdout, order_id = dry_run(tmp_path, PLAIN, lambda o: billing(o, full_name="Jansen " * 30))
    line = quarantined(stdout, order_id)
    assert "Name" in line and ("length" in line or "long" in line), line
    assert "Jansen Jansen" not in line                      # the value itself is not shown


@pytest.mark.parametrize("created, now, flagged", [
    ("2026-03-31T21:59:00Z", "2026-04-02T08:00:00Z", "created in 2026-Q1, booked in 2026-Q2"),
    ("2026-03-31T22:30:00Z", "2026-04-02T08:00:00Z", None),      # 00:30 on 1 April in Amsterdam: Q2
    ("2026-11-02T10:00:00Z", "2026-11-26T21:00:00Z", None),
    ("2025-12-20T10:00:00Z", "2026-01-05T08:00:00Z", "created in 2025-Q4, booked in 2026-Q1"),
])
def test_an_order_from_an_earlier_vat_quarter_is_flagged(tmp_path, monkeypatch, created, now, flagged):
    monkeypatch.setenv("MAPPER_NOW", now)
    stdout, _ = dry_run(tmp_path, PLAIN, lambda o: o.update(create_date=created))
    late = [l for l in stdout.splitlines() if "VAT return is probably filed" in l]
    if flagged:
        assert len(late) == 1 and flagged in late[0], late
    else:
        assert late == []
