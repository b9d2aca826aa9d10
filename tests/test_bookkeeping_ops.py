"""Bookkeeping beyond the happy path, the operations side: orders held by the Basis plan are
kept until they can go, the debtor register's key is checked, and what `status` and the
quarantine commands print is what is true. Real `mapper` runs on fixture files."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pytest

from helpers import load_order, run_preview
from engine.simulators.ccvshop_data import generate_fixture_dir
from test_delivery import base_env, make_mapping, mapper, mapper_cmd, outbox_contents


def cmd(mapping: Path, state: Path, outbox: Path, shop: Path, *extra: str) -> list[str]:
    return mapper_cmd("run", mapping, "--state", state, "--outbox", outbox, "--fixtures", shop, *extra)


def delivered(outbox: Path) -> list[str]:
    return [n for numbers in outbox_contents(outbox).values() for n in numbers]


@pytest.fixture(scope="module")
def shop_260(tmp_path_factory) -> Path:
    """Exactly 260 deliverable orders, created in October and November 2026."""
    shop = tmp_path_factory.mktemp("basis") / "shop"
    generate_fixture_dir(shop, 275, seed=3, start_date="2026-10-01")
    mapping = make_mapping(tmp_path_factory.mktemp("m"))
    xml, _ = run_preview(mapping, shop)
    deliverable = set(re.findall(r"<OrderNumber>([^<]+)</OrderNumber>", xml.decode("utf-8")))
    keep = 0
    for path in sorted(shop.glob("*.json")):
        if load_order(path)["ordernumber_full"] in deliverable and keep < 260:
            keep += 1
        else:
            path.unlink()
    assert keep == 260
    return shop


def test_held_orders_are_kept_and_go_out_when_the_year_turns_after_the_window(tmp_path, shop_260):
    """Before: the 10 orders past the Basis limit were remembered nowhere; by the time the year
    turned they were outside the 90-day look-back, and lost."""
    mapping = make_mapping(tmp_path, per_file=100)
    state, outbox = tmp_path / "s.sqlite", tmp_path / "out"
    basis = base_env(tmp_path, MAPPER_PLAN="basis", MAPPER_NOW="2026-12-20T10:00:00Z")
    first = mapper(cmd(mapping, state, outbox, shop_260), basis, tmp_path)
    assert first.returncode == 0 and "held by plan 10" in first.stdout, first.stdout + first.stderr
    status = json.loads(mapper(mapper_cmd("status", mapping, "--state", state, "--json"), basis, tmp_path).stdout)
    held = status["held_by_plan"]
    assert held["count"] == 10 and held["since"].startswith("2026-12-20")
    assert {"order_id", "number", "order_date"} == set(held["orders"][0])
    text = mapper(mapper_cmd("status", mapping, "--state", state), basis, tmp_path).stdout
    assert "held by the plan: 10 paid order(s) since 2026-12-20" in text

    # March 2027: a new plan year; the held orders (from October/November) are outside the window
    spring = base_env(tmp_path, MAPPER_PLAN="basis", MAPPER_NOW="2027-03-01T10:00:00Z")
    second = mapper(cmd(mapping, state, outbox, shop_260), spring, tmp_path)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "delivered 10 orders" in second.stdout
    numbers = delivered(outbox)
    assert len(numbers) == 260 and len(set(numbers)) == 260
    status = json.loads(mapper(mapper_cmd("status", mapping, "--state", state, "--json"), spring, tmp_path).stdout)
    assert status["held_by_plan"]["count"] == 0 and status["plan"]["delivered"] == 10


def test_a_plan_change_delivers_the_held_orders_whatever_their_age(tmp_path, shop_260):
    mapping = make_mapping(tmp_path, per_file=100)
    state, outbox = tmp_path / "s.sqlite", tmp_path / "out"
    mapper(cmd(mapping, state, outbox, shop_260), base_env(tmp_path, MAPPER_PLAN="basis",
                                                           MAPPER_NOW="2026-12-20T10:00:00Z"), tmp_path)
    plus = mapper(cmd(mapping, state, outbox, shop_260),
                  base_env(tmp_path, MAPPER_PLAN="plus", MAPPER_NOW="2027-06-30T10:00:00Z"), tmp_path)
    assert "delivered 10 orders" in plus.stdout, plus.stdout
    assert len(set(delivered(outbox))) == 260


def test_another_register_key_stops_the_run_unless_the_register_is_rekeyed(tmp_path, shop_260):
    mapping = make_mapping(tmp_path, per_file=100)
    state, outbox = tmp_path / "s.sqlite", tmp_path / "out"
    env = base_env(tmp_path)
    assert mapper(cmd(mapping, state, outbox, shop_260, "--since", "2026-01-01"), env, tmp_path).returncode == 0
    db = sqlite3.connect(state)
    [(check,)] = db.execute("SELECT check_value FROM register_check").fetchall()
    db.close()
    assert check.startswith("hmac-sha256:") and env["MAPPER_DEBTOR_KEY"] not in check

    other = base_env(tmp_path, MAPPER_DEBTOR_KEY="another-register-key-0123456789")
    refused = mapper(cmd(mapping, state, outbox, shop_260, "--since", "2026-01-01"), other, tmp_path)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "MAPPER_DEBTOR_KEY is not the key the debtor register" in refused.stderr
    assert "another-register-key" not in refused.stderr and "Traceback" not in refused.stderr
    dry = mapper(mapper_cmd("dry-run", mapping, "--state", state, "--fixtures", shop_260), other, tmp_path)
    assert dry.returncode == 2 and "debtors rekey" in dry.stderr

    not_sure = mapper(mapper_cmd("debtors", "rekey", mapping, "--state", state), other, tmp_path)
    assert not_sure.returncode == 2 and "--yes" in not_sure.stderr
    rekeyed = mapper(mapper_cmd("debtors", "rekey", mapping, "--state", state, "--yes"), other, tmp_path)
    assert rekeyed.returncode == 0 and "entries deleted" in rekeyed.stdout, rekeyed.stderr
    again = mapper(cmd(mapping, state, outbox, shop_260, "--since", "2026-01-01"), other, tmp_path)
    assert again.returncode == 0, again.stderr


def _fixture_with_user(tmp_path: Path) -> tuple[Path, str, str]:
    """The demo shop's first order: its customer's proposed debtor number and e-mail."""
    import shutil
    from helpers import FIXTURES
    shop = tmp_path / "shop"
    shutil.copytree(FIXTURES, shop)
    order = load_order(shop / "01_ideal_21_registered.json")
    return shop, str(order["user"]["id"]), order["customer"]["email"]


def test_a_debtor_number_is_never_shared_by_two_e_mail_addresses(tmp_path):
    """After `debtors import`, the register holds number N for another e-mail; a new customer
    whose proposed number is N was booked on it (two customers on one debtor)."""
    shop, number, email = _fixture_with_user(tmp_path)
    mapping = make_mapping(tmp_path, per_file=100)
    state, outbox = tmp_path / "s.sqlite", tmp_path / "out"
    env = base_env(tmp_path)
    csv = tmp_path / "debiteuren.csv"
    csv.write_text(f"Debiteurnummer;Naam;E-mail\n{number};Iemand Anders;iemand.anders@example.nl\n", "utf-8")
    assert mapper(mapper_cmd("debtors", "import", mapping, csv, "--state", state), env, tmp_path).returncode == 0
    ran = mapper(cmd(mapping, state, outbox, shop, "--since", "2020-01-01"), env, tmp_path)
    assert ran.returncode == 3, ran.stdout + ran.stderr
    assert f"debtor number {number} is already another customer's" in ran.stdout
    assert f"<DebtorNumber>{number}</DebtorNumber>" not in "".join(
        p.read_text("utf-8") for p in outbox.glob("*.xml"))

    # (her other order, 16, had given her her own number already: she keeps it)
    text = "".join(p.read_text("utf-8") for p in outbox.glob("*.xml"))
    assert f"<DebtorNumber>{number}</DebtorNumber>" not in text

    # with a declared spare range a new customer gets the next free number there instead
    (shop / "16_repeat_customer_email_case.json").unlink()
    state, outbox = tmp_path / "s2.sqlite", tmp_path / "out2"
    assert mapper(mapper_cmd("debtors", "import", mapping, csv, "--state", state), env, tmp_path).returncode == 0
    spare = Path(str(mapping).replace(".yaml", "-spare.yaml"))
    spare.write_text(mapping.read_text("utf-8").replace(
        "    key_env: MAPPER_DEBTOR_KEY", "    key_env: MAPPER_DEBTOR_KEY\n    numbering: {collisions: {from: 990000, to: 990099}}", 1), "utf-8")
    again = mapper(cmd(spare, state, outbox, shop, "--since", "2020-01-01"), env, tmp_path)
    assert again.returncode in (0, 3), again.stderr
    text = "".join(p.read_text("utf-8") for p in outbox.glob("*.xml"))
    numbers_of_her = set(re.findall(r"<DebtorNumber>(\d+)</DebtorNumber>\s*<Name>[^<]*</Name>\s*(?:<ContactName>"
                                    r"[^<]*</ContactName>\s*)?<Email>" + re.escape(email), text))
    assert numbers_of_her == {"990000"}, numbers_of_her          # one customer, one (spare) number
    db = sqlite3.connect(state)
    shared = db.execute("SELECT debtor_number, COUNT(*) FROM debtors GROUP BY 1 HAVING COUNT(*) > 1").fetchall()
    db.close()
    assert shared == []


def test_operations_say_what_is_true(tmp_path):
    """drop refuses an order that is not in quarantine (it would silently never be delivered),
    the run says when it skipped a dropped order, retry says what it did per order, and a run
    killed mid-way is shown as interrupted, not running for ever."""
    import signal
    from test_delivery import crashing

    shop, _, _ = _fixture_with_user(tmp_path)
    mapping = make_mapping(tmp_path, per_file=100)
    state, outbox = tmp_path / "s.sqlite", tmp_path / "out"
    env = base_env(tmp_path)
    good = load_order(shop / "02_mixed_9_21_shipping.json")
    number = good["ordernumber_full"]

    refused = mapper(mapper_cmd("quarantine", "drop", mapping, number, "--reason", "typo", "--state", state),
                     env, tmp_path)
    assert refused.returncode == 2 and f"not in quarantine: {number}" in refused.stderr
    forced = mapper(mapper_cmd("quarantine", "drop", mapping, str(good["id"]), "--reason", "booked by hand",
                               "--force", "--state", state), env, tmp_path)
    assert forced.returncode == 0 and "dropped with --force" in forced.stdout
    ran = mapper(cmd(mapping, state, outbox, shop, "--since", "2020-01-01"), env, tmp_path)
    assert "skipped 1 dropped order(s): never delivered" in ran.stdout, ran.stdout

    retry = mapper(mapper_cmd("quarantine", "retry", mapping, str(good["id"]), "999999", "--state", state),
                   env, tmp_path)
    assert f"order {good['id']}: was dropped, now back in quarantine" in retry.stdout
    assert "order 999999: not in quarantine" in retry.stdout
    assert "2 order(s) will be fetched again by the next run (1 of them reopened after a drop)" in retry.stdout

    killed = mapper(crashing("after_create_batch", 1, cmd(mapping, tmp_path / "k.sqlite", tmp_path / "out-k", shop, "--since", "2020-01-01")), env, tmp_path)
    assert killed.returncode == -signal.SIGKILL
    status = json.loads(mapper(mapper_cmd("status", mapping, "--state", tmp_path / "k.sqlite", "--json"),
                               env, tmp_path).stdout)
    assert status["runs"][0]["outcome"] == "interrupted" and status["runs"][0]["finished"] is None
