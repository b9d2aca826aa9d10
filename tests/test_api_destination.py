"""The Asperion REST API as the destination, against the Asperion simulator on loopback."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from decimal import Decimal

import pytest
from typer.testing import CliRunner

from engine import cli
from helpers import FIXTURES, ROOT
from engine.simulators.asperion import AsperionSimulator
from engine.simulators.ccvshop_data import generate_fixture_dir

pytestmark = pytest.mark.slow  # real processes end to end: -m 'not slow' skips them

API_MAPPING = ROOT / "mappings" / "ccvshop_asperion_api.yaml"
runner = CliRunner()
CLIENT, SECRET, REFRESH, TENANT = "client-t", "client-secret-value-t", "refresh-token-value-t", "tenant-t"


@pytest.fixture
def asperion(tmp_path):
    sim = AsperionSimulator(clients={CLIENT: SECRET}, refresh_tokens={REFRESH: CLIENT}, tenants={TENANT})
    with sim:
        yield sim


@pytest.fixture
def env(asperion, tmp_path, monkeypatch):
    values = {"ASPERION_URL": asperion.url, "ASPERION_TOKEN_URL": asperion.url + "/connect/token",
              "ASPERION_CLIENT_ID": CLIENT, "ASPERION_CLIENT_SECRET": SECRET, "ASPERION_REFRESH_TOKEN": REFRESH,
              "ASPERION_TENANT_ID": TENANT, "ASPERION_TOKEN_FILE": str(tmp_path / "token.json")}
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    return {"state": str(tmp_path / "state.sqlite"), **values}


def _run(env, fixtures=FIXTURES, mapping=API_MAPPING, expect=(0, 3)):
    result = runner.invoke(cli.app, ["run", str(mapping), "--fixtures", str(fixtures), "--since", "2000-01-01",
                                     "--state", env["state"]])
    assert result.exit_code in expect, result.output
    for secret in (SECRET, REFRESH):
        assert secret not in result.output
    return result


def _descriptions(sim):
    return [i["description"] for i in sim.created_invoices]


def test_fixture_shop_becomes_concept_invoices(asperion, env):
    result = _run(env)
    assert result.exit_code == 3  # two orders are quarantined by the mapping's checks
    invoices = asperion.created_invoices
    assert len(invoices) == 21 and len(set(_descriptions(asperion))) == 21
    assert all(i["status"] == 1 and i["invoiceNumber"] is None for i in invoices)
    by_desc = {i["description"]: i for i in invoices}
    assert "Bestelling WEB-1234 factuur 2026001" in by_desc
    icp = by_desc["Bestelling 1006"]
    assert {l["vatCode"] for l in icp["lines"]["_data"]} == {"VICP"}
    assert {l["vatCode"] for l in by_desc["Bestelling 1007"]["lines"]["_data"]} == {"VEX"}
    mixed = by_desc["Bestelling 1003"]["lines"]["_data"]
    assert sum(Decimal(str(l["vatAmount"])) for l in mixed) == Decimal("5.58")
    # one debtor per customer: order 1016 is 1001's customer (e-mail in other case)
    assert by_desc["Bestelling 1016"]["debtorCustomerNumber"] == by_desc["Bestelling 1001"]["debtorCustomerNumber"]
    assert len(asperion.created_debtors) == 20
    # a second run creates nothing new
    _run(env)
    assert len(asperion.created_invoices) == 21 and len(asperion.created_debtors) == 20


def test_existing_debtor_is_used_and_never_changed(asperion, env):
    asperion.add_debtor({"customerNumber": "2269322", "name": "Sophie Fischer-de Vries",
                         "emailAddress": "Sophie.Fischer@example.nl", "countryCode": "NL"}, TENANT)
    # a "contains" search also returns this one: it must not count
    asperion.add_debtor({"customerNumber": "7777", "name": "Other", "emailAddress": "x.sophie.fischer@example.nl.test",
                         "countryCode": "NL"}, TENANT)
    result = _run(env)
    by_desc = {i["description"]: i for i in asperion.created_invoices}
    assert by_desc["Bestelling 1001"]["debtorCustomerNumber"] == "2269322"
    assert by_desc["Bestelling 1016"]["debtorCustomerNumber"] == "2269322"
    assert "another name" in result.output  # "Sophie Fischer" vs "Sophie Fischer-de Vries": flagged
    assert [d for d in asperion.debtors(TENANT) if d["customerNumber"] == "2269322"][0]["name"] == "Sophie Fischer-de Vries"


def test_expired_token_is_renewed(asperion, env):
    asperion.inject("expire_token", count=1, path_contains="/v1/salesinvoiceswithlines")
    _run(env)
    assert len(asperion.created_invoices) == 21


def test_rotated_refresh_token_is_kept_for_the_next_run(asperion, env, tmp_path):
    _run(env)
    saved = json.loads((tmp_path / "token.json").read_text())
    assert saved["refresh_token"] != REFRESH  # the simulator rotates; the old one is dead now
    assert oct((tmp_path / "token.json").stat().st_mode & 0o777) == "0o600"
    _run(env)  # would fail with invalid_grant if the rotated token had been lost


def test_a_new_refresh_token_wins_over_a_dead_saved_one(asperion, env, tmp_path, monkeypatch):
    # a run killed between a renewal and saving its rotated token leaves a dead token in the
    # token file; the operator authorises again and sets the new token: the next run uses it
    _run(env)  # REFRESH is rotated away: dead from now on
    assert REFRESH not in asperion.refresh_tokens
    (tmp_path / "token.json").write_text(json.dumps({"client_id": CLIENT, "refresh_token": "rt_dead"}))
    dead = runner.invoke(cli.app, ["run", str(API_MAPPING), "--fixtures", str(FIXTURES), "--since", "2000-01-01",
                                   "--state", env["state"]])
    assert dead.exit_code == 1 and "refused the refresh token (invalid_grant)" in dead.output
    assert "newly set refresh token is used" in dead.output and REFRESH not in dead.output
    fresh = asperion.grant_refresh_token(CLIENT)
    monkeypatch.setenv("ASPERION_REFRESH_TOKEN", fresh)
    _run(env)
    assert len(asperion.created_invoices) == 21  # the second good run delivered nothing twice
    saved = json.loads((tmp_path / "token.json").read_text())["refresh_token"]
    assert saved not in ("rt_dead", fresh) and saved in asperion.refresh_tokens  # the rotated one, alive


def test_lost_response_is_adopted_not_created_twice(asperion, env):
    asperion.inject("lost_response", count=3, path_contains="/v1/salesinvoiceswithlines")
    _run(env)
    descriptions = _descriptions(asperion)
    assert len(descriptions) == len(set(descriptions)) == 21


def test_503_and_429_back_off(asperion, env):
    asperion.inject("503", count=2, path_contains="/v1/salesinvoiceswithlines")
    asperion.inject("429", count=1, path_contains="/v1/debtors", retry_after=0)
    _run(env)
    assert len(set(_descriptions(asperion))) == 21 == len(asperion.created_invoices)


def test_field_errors_quarantine_the_order_with_asperion_messages(asperion, env, tmp_path):
    child = tmp_path / "bad_ledger.yaml"
    child.write_text(f"extends: {API_MAPPING}\nname: bad-ledger\ntables:\n  asperion:\n    ledger_accounts:\n"
                     "      row: {Hoog: 110, Laag: 102, Verlegd: 103, Export: 104, Nul: 101}\n", encoding="utf-8")
    result = _run(env, mapping=child, expect=(3,))
    assert "the API refused it" in result.output and "LedgerAccountId" in result.output
    assert "Bestelling 1006" in _descriptions(asperion)  # 0% orders have no Hoog row: delivered


def test_dry_run_posts_nothing_and_shows_the_bodies(asperion, env):
    result = runner.invoke(cli.app, ["dry-run", str(API_MAPPING), "--fixtures", str(FIXTURES), "--out", "-"])
    assert result.exit_code == 0, result.output
    # only the token endpoint is posted to (a read needs a token); nothing is created
    assert {path for path, n in asperion.post_counts.items() if n} <= {"/connect/token"}
    assert asperion.created_invoices == [] and asperion.created_debtors == []
    bodies = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(bodies) == 21 and bodies[0]["description"] == "Bestelling 1001"
    assert "Betreft" in result.stderr


def test_sandbox_dry_run_for_the_api_mapping():
    result = runner.invoke(cli.app, ["dry-run", str(API_MAPPING), "--sandbox"])
    assert result.exit_code == 0, result.output
    assert "21 orders in the preview" in result.output


def test_kill_test_against_the_asperion_simulator(asperion, env, tmp_path):
    shop = tmp_path / "shop"
    generate_fixture_dir(shop, 60, seed=5)
    envp = dict(os.environ, **{k: v for k, v in env.items() if k != "state"})
    cmd = [sys.executable, "-m", "engine.cli", "run", str(API_MAPPING), "--fixtures", str(shop),
           "--since", "2000-01-01", "--state", env["state"]]
    rng = random.Random(7)
    for trial in range(12):
        proc = subprocess.Popen(cmd, env=envp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.05, 1.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    final = subprocess.run(cmd, env=envp, capture_output=True, text=True, timeout=120)
    if "refused the refresh token (invalid_grant)" in final.stderr:
        # a kill landed between a renewal and saving the rotated token (the documented limit of
        # rotating refresh tokens): the operator authorises again and sets the new token
        envp["ASPERION_REFRESH_TOKEN"] = asperion.grant_refresh_token(CLIENT)
        final = subprocess.run(cmd, env=envp, capture_output=True, text=True, timeout=120)
    assert final.returncode in (0, 3), final.stdout + final.stderr
    descriptions = _descriptions(asperion)
    assert len(descriptions) == len(set(descriptions)), "an order was invoiced twice"
    invoiced = [d.split()[1] for d in descriptions]  # "Bestelling 1049 factuur 6" -> 1049
    assert len(invoiced) == len(set(invoiced))
    quarantined = {line.split("order ")[1].split(" ")[0] for line in final.stdout.splitlines()
                   if "quarantined: order" in line}
    every = {json.loads(p.read_text())["ordernumber_full"] for p in shop.glob("*.json")}
    assert set(invoiced) | quarantined == every, "an order is missing"
    assert not set(invoiced) & quarantined


def test_new_debtors_carry_kind_and_vat_number(asperion, env):
    _run(env)
    by_mail = {d["emailAddress"]: d for d in asperion.created_debtors}
    icp = by_mail["inkoop@fietsenjanssens.example.be"]
    assert (icp["debtorKindId"], icp["vatNumber"], icp["countryCode"]) == (2, "BE0412345678", "BE")
    consumer = by_mail["sophie.fischer@example.nl"]
    assert consumer["debtorKindId"] == 1 and "vatNumber" not in consumer or consumer.get("vatNumber") in (None, "")
