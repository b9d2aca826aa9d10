"""The commands as a user runs them: real files, real exit codes, nothing written but --out."""

import json
import shutil
import subprocess
import sys

from typer.testing import CliRunner

from engine import cli
from helpers import FIXTURES, GOLDEN, MAPPING, ROOT
from helpers import load_order, write_order

runner = CliRunner()


def _files(path):
    return sorted(p.relative_to(path) for p in path.rglob("*"))


def test_dry_run_prints_the_import_screen_and_writes_only_out(tmp_path, monkeypatch, frozen_clock):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(cli.app, ["dry-run", str(MAPPING), "--fixtures", str(FIXTURES), "--out", "preview.xml"])
    assert result.exit_code == 0, result.output
    assert result.output == (GOLDEN / "ccvshop_asperion.preview.txt").read_text(encoding="utf-8")
    assert (tmp_path / "preview.xml").read_bytes() == (GOLDEN / "ccvshop_asperion.xml").read_bytes()
    assert _files(tmp_path) == [type(_files(tmp_path)[0])("preview.xml")]


def test_preview_has_the_manual_columns_and_dutch_money(tmp_path, frozen_clock):
    result = runner.invoke(cli.app, ["dry-run", str(MAPPING), "--fixtures", str(FIXTURES)])
    header = result.output.splitlines()[0]
    for title in ("Betreft", "Periode", "Factuur datum", "Deb nr.", "Debiteur", "Bedrag excl. BTW",
                  "Bedrag incl. BTW", "Betaalwijze"):
        assert title in header
    assert "Totaal" in result.output and "€ 1.799,59" in result.output and "€ 2.090,59" in result.output
    assert "(no --out: XML validated, not written)" in result.output


def test_out_dash_writes_xml_to_stdout_and_the_table_elsewhere(frozen_clock):
    result = runner.invoke(cli.app, ["dry-run", str(MAPPING), "--fixtures", str(FIXTURES), "--out", "-"])
    assert result.exit_code == 0
    assert result.stdout_bytes.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    assert result.stdout_bytes == (GOLDEN / "ccvshop_asperion.xml").read_bytes()
    assert "Betreft" in result.stderr


def test_since_until_limit_by_creation_date(frozen_clock):
    result = runner.invoke(cli.app, ["dry-run", str(MAPPING), "--fixtures", str(FIXTURES), "--out", "-",
                                     "--since", "2026-07-01", "--until", "2026-08-31"])
    assert result.exit_code == 0
    numbers = [line.split("<OrderNumber>")[1].split("<")[0] for line in result.stdout.splitlines() if "<OrderNumber>" in line]
    assert numbers == ["1009", "1010", "WEB-1234"]
    assert "outside --since/--until" in result.stderr


def test_bad_date_option_exits_2():
    result = runner.invoke(cli.app, ["dry-run", str(MAPPING), "--fixtures", str(FIXTURES), "--since", "1-7-2026"])
    assert result.exit_code == 2 and "write YYYY-MM-DD" in result.output


def test_missing_fixture_dir_is_a_configuration_error(tmp_path):
    result = runner.invoke(cli.app, ["dry-run", str(MAPPING), "--fixtures", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "fixture directory not found" in result.output


def test_a_broken_order_file_is_quarantined_and_the_rest_delivered(tmp_path, frozen_clock):
    shop = tmp_path / "shop"
    shutil.copytree(FIXTURES, shop)
    (shop / "02_mixed_9_21_shipping.json").write_text('{"id": 1, "orderrows": [', encoding="utf-8")
    order = load_order(shop / "04_paymethod_costs_paypal.json")
    del order["customer"]["email"]
    write_order(shop, "04_paymethod_costs_paypal.json", order)
    order = load_order(shop / "05_handling_costs_mixed.json")
    order["orderrows"][0]["tax"] = 6  # 6% in 2026: no VAT class
    write_order(shop, "05_handling_costs_mixed.json", order)
    result = runner.invoke(cli.app, ["dry-run", str(MAPPING), "--fixtures", str(shop), "--out", str(tmp_path / "p.xml")])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "02_mixed_9_21_shipping.json: not valid JSON at line 1 column" in out
    assert "order 1004 (id 500000004): customer.key: no field 'email' (in record.customer.email | normalise_email)" in out
    assert "order 1005 (id 500000005): VAT rate 6% on 2026-03-20 (country NL) has no VAT class" in out
    assert "Quarantined (5)" in out and "18 orders in the preview" in out
    assert (tmp_path / "p.xml").read_bytes().count(b"<Order>") == 18


def test_guest_without_email_is_quarantined_with_advice(tmp_path, frozen_clock):
    order = load_order(FIXTURES / "17_guest_new_customer.json")
    order["customer"]["email"] = "  "
    write_order(tmp_path, "o.json", order)
    result = runner.invoke(cli.app, ["dry-run", str(MAPPING), "--fixtures", str(tmp_path)])
    assert "has no e-mail address" in result.output and "customer.without_key" in result.output


def test_an_edit_to_the_yaml_changes_the_output(tmp_path, frozen_clock):
    """Description text and VAT class are data: a YAML edit, no code change."""
    text = MAPPING.read_text(encoding="utf-8")
    text = text.replace('description: "Bestelling {{ record.ordernumber_full }}', 'description: "Webshop order {{ record.ordernumber_full }}')
    text = text.replace("- {rate: 21, class: Hoog}", "- {rate: 21, class: OSS}")
    edited = tmp_path / "mappings" / "edited.yaml"
    edited.parent.mkdir()
    edited.write_text(text, encoding="utf-8")
    (tmp_path / "schemas").mkdir()
    shutil.copy(ROOT / "schemas" / "asperion_axml.xsd", tmp_path / "schemas")
    result = runner.invoke(cli.app, ["dry-run", str(edited), "--fixtures", str(FIXTURES), "--out", "-"])
    assert result.exit_code == 0, result.stderr
    assert "<Description>Webshop order WEB-1234 factuur 2026001</Description>" in result.stdout
    assert "<VatClass>Hoog</VatClass>" not in result.stdout and "<VatClass>OSS</VatClass>" in result.stdout


def test_per_rate_rounding_is_a_yaml_choice(tmp_path, frozen_clock):
    text = MAPPING.read_text(encoding="utf-8").replace("vat_rounding: per_line", "vat_rounding: per_rate")
    edited = tmp_path / "per_rate.yaml"
    edited.write_text(text.replace("xsd: ../schemas/", f"xsd: {ROOT}/schemas/"), encoding="utf-8")
    shop = tmp_path / "shop"
    shop.mkdir()
    shutil.copy(FIXTURES / "03_coupon_mixed.json", shop)
    result = runner.invoke(cli.app, ["dry-run", str(edited), "--fixtures", str(shop), "--out", "-"])
    expected = json.loads((GOLDEN / "expected_amounts.json").read_text())["03_coupon_mixed.json"]["per_rate_totals"]
    assert f"<TotalVatAmount>{expected['vat']}</TotalVatAmount>" in result.stdout  # 5.59, not 5.58 per line
    assert f"<TotalExclVat>{expected['excl']}</TotalExclVat>" in result.stdout


def test_installed_console_script_or_module_runs_validate():
    exe = shutil.which("mapper")
    cmd = [exe] if exe else [sys.executable, "-m", "engine.cli"]
    proc = subprocess.run(cmd + ["validate", "mappings/ccvshop_asperion.yaml"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "ok" in proc.stdout


def test_sandbox_runs_over_real_http_and_gives_the_golden_file(frozen_clock):
    """The README's first command: the demo shop on a loopback simulator, no credentials."""
    result = runner.invoke(cli.app, ["dry-run", str(MAPPING), "--sandbox", "--out", "-"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout_bytes == (GOLDEN / "ccvshop_asperion.xml").read_bytes()
    # the unpaid order is filtered by the shop (is_paid=true), the cancelled one by the mapping
    assert "1 not counted (1 failing 'record.status != 8')" in result.stderr


def test_live_source_without_credentials_says_which_variable(tmp_path):
    result = runner.invoke(cli.app, ["dry-run", str(MAPPING)])
    assert result.exit_code == 2
    assert "environment variable CCVSHOP_URL is not set" in result.output


def test_ex_vat_order_books_costs_at_the_shops_rate(tmp_path, frozen_clock):
    """Prices excl. VAT: CCV adds 21% to shipping whatever the goods; the customer paid
    that, so the invoice books shipping at 21% (invoice.surcharge_rate), not pro rata at 9%."""
    from engine.simulators.ccvshop_data import order_totals
    order = load_order(FIXTURES / "18_exvat_b2b_domestic.json")
    for row in order["orderrows"]:
        row["tax"] = 9
    totals = order_totals(order)
    order["total_tax"], order["total_price"] = totals["total_tax"], totals["total_price"]
    write_order(tmp_path, "o.json", order)
    result = runner.invoke(cli.app, ["dry-run", str(MAPPING), "--fixtures", str(tmp_path), "--out", "-"])
    assert result.exit_code == 0 and "1 orders in the preview" in result.stderr, result.stderr
    xml = result.stdout
    shipping = xml.split("<Description>Verzendkosten</Description>")[1].split("</Orderline>")[0]
    assert "<VatPercentage>21</VatPercentage>" in shipping
    assert f"<TotalInclVat>{totals['total_price']:.2f}</TotalInclVat>" in xml


def test_guest_without_email_on_a_declared_collective_debtor(tmp_path, frozen_clock):
    order = load_order(FIXTURES / "17_guest_new_customer.json")
    order["customer"]["email"] = ""
    shop = tmp_path / "shop"
    shop.mkdir()
    write_order(shop, "o.json", order)
    text = MAPPING.read_text(encoding="utf-8").replace("  without_key: quarantine ", '  without_key: {number: "9999"} ')
    text = text.replace("xsd: ../schemas/", f"xsd: {ROOT}/schemas/")
    # the XSD requires an e-mail: a collective debtor gets the shop's own address (recipe in the reference)
    text = text.replace('{element: Email, text: "{{ customer.key }}"}', '{element: Email, text: "{{ customer.key or \'kassa@demo-shop.example\' }}"}')
    mapping = tmp_path / "collective.yaml"
    mapping.write_text(text, encoding="utf-8")
    result = runner.invoke(cli.app, ["dry-run", str(mapping), "--fixtures", str(shop), "--out", "-"])
    assert result.exit_code == 0, result.stderr
    assert "<DebtorNumber>9999</DebtorNumber>" in result.stdout
