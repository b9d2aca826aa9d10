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
from simulators.ccvshop_data import generate_fixture_dir
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
