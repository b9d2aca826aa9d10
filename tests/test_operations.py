"""Operating `mapper run`: quarantine, plans, disable/enable, dry-run, the run report.

Real processes (`python cli.py ...`), real fixture files, a real SQLite state; the checks
read the outbox, the state and the report back.
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
from decimal import Decimal
from pathlib import Path

import pytest

from helpers import FIXTURES
from helpers import load_order, write_order
from engine.simulators.ccvshop_data import generate_fixture_dir
from engine.io.outbox import LOCK_NAME
from helpers import run_preview
from test_delivery import (NAME, assert_exactly_once, base_env, make_mapping, mapper, mapper_cmd,
                           mapper_here, outbox_contents, report_of, run_cmd, status_json)


@pytest.fixture(scope="module")
def shop_template(tmp_path_factory) -> Path:
    shop = tmp_path_factory.mktemp("opsshop") / "shop"
    generate_fixture_dir(shop, 40, seed=11, unpaid_share=0.1, cancelled_share=0.1)
    return shop


@pytest.fixture
def shop(tmp_path, shop_template) -> Path:
    copy = tmp_path / "shop"
    shutil.copytree(shop_template, copy)
    return copy


@pytest.fixture
def ctx(tmp_path):
    class Ctx:
        mapping = make_mapping(tmp_path, per_file=10)
        env = base_env(tmp_path)
        state = tmp_path / "state.sqlite"
        outbox = tmp_path / "outbox"
        reports = tmp_path / "reports"

        def run(self, shop, *extra, env=None):
            return mapper(run_cmd(self.mapping, self.state, self.outbox, *extra, fixtures=shop),
                          env or self.env, tmp_path)

        def cli(self, *args, env=None):
            return mapper_here(*args, env=env)

        def quarantine(self):
            out = self.cli("quarantine", "list", self.mapping, "--state", self.state, "--json")
            assert out.returncode == 0, out.stderr
            return {q["order_id"]: q for q in json.loads(out.stdout)}

        def status(self, env=None):
            return status_json(self.mapping, self.state, env=env)

    return Ctx()


def countable_files(shop: Path) -> list[tuple[str, Path, dict]]:
    """(shop id, file, order) of every countable order, in file order."""
    out = []
    for path in sorted(shop.glob("*.json")):
        order = load_order(path)
        if order["paid"] and order["is_completed"] and order["status"] != 8:
            out.append((str(order["id"]), path, order))
    return out


def delivered_numbers(outbox: Path) -> list[str]:
    return [n for numbers in outbox_contents(outbox).values() for n in numbers]


# --------------------------------------------------------------------------- 7. quarantine lifecycle


def test_quarantine_lifecycle_retry_fix_drop_and_retry_again(tmp_path, ctx, shop):
    first = ctx.run(shop)
    assert first.returncode == 0, "the generated shop should have nothing to quarantine"
    # Two new orders arrive, and the parts of both no longer add up to what was paid.
    fresh = tmp_path / "fresh"
    generate_fixture_dir(fresh, 6, seed=99, start_id=500000000, start_ordernumber=9001)
    new = countable_files(fresh)[:2]
    assert len(new) == 2
    (sid, path, order), (sid2, path2, order2) = new
    good = {p.name: p.read_bytes() for _, p, _ in new}
    for s, p, o in new:
        o["total_price"] = o["total_price"] + Decimal("5.00")   # the parts no longer add up
        write_order(shop, p.name, o)

    attempts = []
    for _ in range(2):   # quarantined, and tried again on every run
        result = ctx.run(shop)
        assert result.returncode == 3, result.stdout + result.stderr
        assert f"quarantined: order {order['ordernumber_full']} (id {sid}): total_price" in result.stdout
        q = ctx.quarantine()
        assert set(q) == {sid, sid2}
        assert "differs by €5.00" in q[sid]["reason"] and q[sid]["number"] == order["ordernumber_full"]
        attempts.append(q[sid]["attempts"])
    assert attempts == [1, 2]
    assert order["ordernumber_full"] not in delivered_numbers(ctx.outbox)

    # Fixed in the shop: delivered once, out of the quarantine.
    (shop / path.name).write_bytes(good[path.name])
    fixed = ctx.run(shop)
    assert fixed.returncode == 3            # the other one is still broken
    assert delivered_numbers(ctx.outbox).count(order["ordernumber_full"]) == 1
    assert set(ctx.quarantine()) == {sid2}

    # Dropped: recorded with its reason, no longer tried, the run is clean again.
    dropped = ctx.cli("quarantine", "drop", ctx.mapping, order2["ordernumber_full"],
                      "--reason", "test order, never invoiced", "--state", ctx.state)
    assert dropped.returncode == 0 and "dropped 1 order(s): test order, never invoiced" in dropped.stdout
    assert ctx.quarantine() == {}
    db = sqlite3.connect(f"{ctx.state.as_uri()}?mode=ro", uri=True)
    row = db.execute("SELECT status, reason, attempts, dropped_at FROM quarantine WHERE mapping = ? "
                     "AND shop_id = ?", (NAME, sid2)).fetchone()
    db.close()
    assert row[0] == "dropped" and row[1] == "test order, never invoiced" and row[3]
    attempts_at_drop = row[2]
    after_drop = ctx.run(shop)
    assert after_drop.returncode == 0, after_drop.stdout
    assert report_of(ctx.reports)["counts"]["dropped_skipped"] == 1
    assert order2["ordernumber_full"] not in delivered_numbers(ctx.outbox)
    # the dry-run reads its records through the run's intake: with the state, it previews
    # what the next run would deliver (nothing: all delivered or dropped) and says why
    preview = ctx.cli("dry-run", ctx.mapping, "--fixtures", shop, "--state", ctx.state, "--out", "-")
    assert preview.returncode == 0, preview.stderr
    assert "1 dropped orders are left out (never delivered)" in preview.stderr
    assert re.search(r"\d+ orders already delivered by earlier runs are left out", preview.stderr)
    assert order2["ordernumber_full"] not in preview.stdout and "0 orders in the preview" in preview.stderr

    # Retried (by shop id: a dropped order is no longer listed): back in, tried, quarantined.
    retried = ctx.cli("quarantine", "retry", ctx.mapping, sid2, "--state", ctx.state)
    assert retried.returncode == 0, retried.stderr
    assert set(ctx.quarantine()) == {sid2}
    again = ctx.run(shop)
    assert again.returncode == 3
    assert ctx.quarantine()[sid2]["attempts"] == attempts_at_drop + 1
    (shop / path2.name).write_bytes(good[path2.name])
    done = ctx.run(shop)
    assert done.returncode == 0, done.stdout
    assert ctx.quarantine() == {}
    assert_exactly_once(shop, ctx.state, ctx.outbox)


def test_quarantine_retry_by_order_number_of_a_dropped_order(ctx, shop):
    from engine.clock import now
    from engine.ops.state import open_state
    sid, number = "400000042", "WEB-1042"
    with open_state(ctx.state) as store:
        store.quarantine(NAME, sid, number, "the parts do not add up", now())
    assert ctx.cli("quarantine", "drop", ctx.mapping, number, "--reason", "x", "--state", ctx.state).returncode == 0
    assert ctx.cli("quarantine", "retry", ctx.mapping, number, "--state", ctx.state).returncode == 0
    assert set(ctx.quarantine()) == {sid}


def test_an_order_cancelled_while_in_quarantine_leaves_the_quarantine(ctx, shop):
    sid, path, order = countable_files(shop)[0]
    order["total_price"] = order["total_price"] + Decimal("5.00")
    write_order(shop, path.name, order)
    assert ctx.run(shop).returncode == 3 and set(ctx.quarantine()) == {sid}
    order["status"] = 8                    # cancelled in the shop: nothing left to fix
    write_order(shop, path.name, order)
    result = ctx.run(shop)
    assert result.returncode == 0, result.stdout
    assert ctx.quarantine() == {}
    assert order["ordernumber_full"] not in delivered_numbers(ctx.outbox)


# --------------------------------------------------------------------------- 8. plans


def test_basis_plan_holds_what_is_over_250_and_plus_delivers_it(tmp_path, ctx):
    shop = tmp_path / "plan-shop"
    generate_fixture_dir(shop, 275, seed=3)
    xml, _ = run_preview(ctx.mapping, shop)
    deliverable = set(re.findall(r"<OrderNumber>([^<]+)</OrderNumber>", xml.decode("utf-8")))
    keep = 0
    for path in sorted(shop.glob("*.json")):   # exactly 260 deliverable orders, nothing else
        if load_order(path)["ordernumber_full"] in deliverable and keep < 260:
            keep += 1
        else:
            path.unlink()
    assert keep == 260

    basis = ctx.env | {"MAPPER_PLAN": "basis"}
    # rehearsed first: the plan's limit is reached within the preview, as within the run
    first_preview = ctx.cli("dry-run", ctx.mapping, "--fixtures", shop, "--state", ctx.state, env=basis)
    assert first_preview.returncode == 0, first_preview.stderr
    assert "250 orders in the preview" in first_preview.stdout
    assert "10 held by the plan (a run would keep them for later)" in first_preview.stdout
    held = ctx.run(shop, env=basis)
    assert held.returncode == 0, held.stdout + held.stderr   # held is not quarantined
    assert "delivered 250 orders" in held.stdout and "held by plan 10" in held.stdout
    assert "plan basis: 250 invoices a year reached; 10 paid orders are held (not lost)" in held.stdout
    report = report_of(ctx.reports)
    assert report["counts"]["held_by_plan"] == 10 and report["counts"]["delivered"] == 250
    assert report["quarantined"] == [] and ctx.quarantine() == {}
    assert any("10 paid orders are held" in m for m in report["messages"])
    assert len(delivered_numbers(ctx.outbox)) == 250
    plan = ctx.status(env={"MAPPER_PLAN": "basis"})["plan"]
    assert plan["name"] == "basis" and plan["limit"] == 250 and plan["delivered"] == 250
    # the dry-run is the run rehearsed: the held orders are looked up again and held again
    before = ctx.state.read_bytes()
    rehearsed = ctx.cli("dry-run", ctx.mapping, "--fixtures", shop, "--state", ctx.state, env=basis)
    assert rehearsed.returncode == 0, rehearsed.stderr
    assert "0 orders in the preview" in rehearsed.stdout
    assert "10 held by the plan (a run would keep them for later)" in rehearsed.stdout
    assert "plan basis: 250 invoices a year reached; 10 paid orders are held" in rehearsed.stdout
    on_plus = ctx.cli("dry-run", ctx.mapping, "--fixtures", shop, "--state", ctx.state, env=plus_env(ctx))
    assert "10 orders in the preview" in on_plus.stdout and "held by the plan" not in on_plus.stdout
    assert ctx.state.read_bytes() == before

    still = ctx.run(shop, env=basis)        # still basis: still held, nothing delivered
    assert still.returncode == 0 and "delivered 0 orders" in still.stdout and "held by plan 10" in still.stdout

    plus = ctx.env | {"MAPPER_PLAN": "plus"}
    more = ctx.run(shop, env=plus)
    assert more.returncode == 0, more.stdout + more.stderr
    assert "delivered 10 orders" in more.stdout and "held by plan 0" in more.stdout
    assert sorted(delivered_numbers(ctx.outbox)) == sorted(deliverable_kept(shop))
    assert_exactly_once(shop, ctx.state, ctx.outbox)
    plan = ctx.status(env={"MAPPER_PLAN": "plus"})["plan"]
    assert plan["name"] == "plus" and plan["limit"] is None and plan["delivered"] == 260


def plus_env(ctx) -> dict:
    return ctx.env | {"MAPPER_PLAN": "plus"}


def deliverable_kept(shop: Path) -> list[str]:
    return [load_order(p)["ordernumber_full"] for p in shop.glob("*.json")]


def test_unknown_plan_is_a_configuration_error(ctx, shop):
    result = ctx.run(shop, env=ctx.env | {"MAPPER_PLAN": "gold"})
    assert result.returncode == 2 and "plan" in result.stderr and "basis, plus" in result.stderr
    assert "Traceback" not in result.stderr
    assert not ctx.outbox.exists() or not [p for p in ctx.outbox.iterdir() if p.name != LOCK_NAME]


# --------------------------------------------------------------------------- 9. disable / enable


def test_disabled_mapping_does_nothing_keeps_its_state_and_enable_resumes(tmp_path, ctx, shop):
    later = sorted(shop.glob("*.json"))[25:]
    parked = tmp_path / "parked"
    parked.mkdir()
    for p in later:                           # half the shop now, the rest later
        p.rename(parked / p.name)
    first = ctx.run(shop)
    assert first.returncode == 0, first.stdout + first.stderr
    delivered_before = delivered_numbers(ctx.outbox)
    assert delivered_before

    off = ctx.cli("disable", ctx.mapping, "--reason", "bookkeeper on holiday", "--state", ctx.state)
    assert off.returncode == 0, off.stderr
    for p in later:
        (parked / p.name).rename(shop / p.name)
    runs_before = len(ctx.status()["runs"])
    idle = ctx.run(shop)
    assert idle.returncode == 0, idle.stderr
    assert f"{NAME} is disabled: bookkeeper on holiday" in idle.stdout and "nothing done" in idle.stdout
    assert "enable" in idle.stdout
    assert delivered_numbers(ctx.outbox) == delivered_before
    status = ctx.status()
    assert status["enabled"] is False and len(status["runs"]) == runs_before
    assert status["plan"]["delivered"] == len(delivered_before)     # the state is kept

    on = ctx.cli("enable", ctx.mapping, "--state", ctx.state)
    assert on.returncode == 0, on.stderr
    resumed = ctx.run(shop)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    new = [n for n in delivered_numbers(ctx.outbox) if n not in delivered_before]
    assert new and f"already delivered {len(delivered_before)}" in resumed.stdout
    assert ctx.status()["enabled"] is True
    assert_exactly_once(shop, ctx.state, ctx.outbox)


# --------------------------------------------------------------------------- 10. dry-run stays pure


def test_dry_run_writes_no_state_no_outbox_no_report(tmp_path, ctx, shop):
    work = tmp_path / "work"
    work.mkdir()
    fresh = tmp_path / "nowhere" / "state.sqlite"
    env = ctx.env | {"MAPPER_STATE": str(fresh), "MAPPER_OUTBOX": str(tmp_path / "outbox-env")}
    before = sorted(p for p in tmp_path.rglob("*"))
    result = mapper(mapper_cmd("dry-run", ctx.mapping, "--fixtures", shop), env, work)
    assert result.returncode == 0, result.stderr
    assert "orders in the preview" in result.stdout
    out = mapper(mapper_cmd("dry-run", ctx.mapping, "--fixtures", shop, "--out", tmp_path / "preview.xml"),
                 env, work)
    assert out.returncode == 0, out.stderr
    after = sorted(p for p in tmp_path.rglob("*"))
    assert set(after) - set(before) == {tmp_path / "preview.xml"}
    assert not fresh.parent.exists()
    assert list(work.iterdir()) == []


def test_dry_run_rehearses_the_run_quarantine_looked_up_again_state_unchanged(tmp_path, ctx, shop):
    orders = countable_files(shop)
    sid, path, order = orders[0]
    good = path.read_bytes()
    order["total_price"] = order["total_price"] + Decimal("5.00")
    write_order(shop, path.name, order)
    assert ctx.run(shop).returncode == 3 and set(ctx.quarantine()) == {sid}
    path.write_bytes(good)                     # fixed in the shop
    later = max(o["create_date"][:10] for _, _, o in orders)
    assert order["create_date"][:10] < later
    before = ctx.state.read_bytes()
    # a window that no longer lists the order: the run would look it up by id, so does the preview
    preview = ctx.cli("dry-run", ctx.mapping, "--fixtures", shop, "--state", ctx.state, "--since", later,
                      "--out", "-")
    assert preview.returncode == 0, preview.stderr
    assert f"<OrderNumber>{order['ordernumber_full']}</OrderNumber>" in preview.stdout
    assert ctx.state.read_bytes() == before and set(ctx.quarantine()) == {sid}
    fixed = ctx.run(shop, "--since", later)
    assert fixed.returncode == 0 and ctx.quarantine() == {}
    assert order["ordernumber_full"] in delivered_numbers(ctx.outbox)


# --------------------------------------------------------------------------- 11. the run report


def test_run_report_has_counts_files_and_reasons_but_no_customer_data(ctx, shop):
    orders = countable_files(shop)
    sid, path, order = orders[0]
    order["total_price"] = order["total_price"] + Decimal("5.00")
    write_order(shop, path.name, order)

    result = ctx.run(shop)
    assert result.returncode == 3, result.stdout + result.stderr
    reports = list(ctx.reports.glob("*.json"))
    assert len(reports) == 1 and reports[0].name.endswith("-run1.json")
    text = reports[0].read_text("utf-8")
    report = json.loads(text)
    assert report["mapping"] == NAME and report["run_id"] == 1 and report["outcome"] == "quarantined"
    files = outbox_contents(ctx.outbox)
    assert sorted(report["files"]) == sorted(files) and report["outbox"] == str(ctx.outbox)
    counts = report["counts"]
    assert counts["delivered"] == sum(len(v) for v in files.values()) == len(orders) - 1
    assert counts["files"] == len(files) and counts["quarantined"] == 1
    assert counts["excluded"] == len(list(shop.glob("*.json"))) - len(orders)
    assert counts["fetched"] == len(list(shop.glob("*.json")))
    assert report["quarantined"] == [{"order_id": sid, "number": order["ordernumber_full"],
                                      "reason": report["quarantined"][0]["reason"]}]
    assert "differs by €5.00" in report["quarantined"][0]["reason"]
    assert_no_customer_data(text, shop)


def assert_no_customer_data(text: str, shop: Path) -> None:
    """No e-mail address (nor its local part), name, company or street of any customer."""
    for path in shop.glob("*.json"):
        c = load_order(path)["customer"]
        email = c.get("email") or ""
        words = {email, email.split("@")[0].strip()}
        for address in (c["billingaddress"], c["deliveryaddress"]):
            words |= {address.get(k) for k in ("full_name", "last_name", "company", "street")}
        for w in words:
            if w and len(w.strip()) >= 4:
                assert not re.search(rf"(?<!\w){re.escape(w.strip())}(?!\w)", text), \
                    f"{w!r} ({path.name}) is in the run report"


def test_run_report_does_not_quote_a_refused_email_address(ctx, shop):
    _, path, order = countable_files(shop)[1]
    order["customer"]["email"] = order["customer"]["email"].replace("@", " @", 1)
    write_order(shop, path.name, order)
    assert ctx.run(shop).returncode == 3
    text = next(ctx.reports.glob("*.json")).read_text("utf-8")
    assert "Email" in text
    assert_no_customer_data(text, shop)


def test_the_plan_year_turns_at_midnight_in_amsterdam_not_in_utc(tmp_path, ctx):
    shop = tmp_path / "newyear-shop"
    shutil.copytree(FIXTURES, shop)
    # 23:30 on 31 December in Amsterdam (22:30Z): this year's invoices
    before = ctx.run(shop, env=ctx.env | {"MAPPER_NOW": "2026-12-31T22:30:00Z"})
    assert before.returncode in (0, 3), before.stdout + before.stderr
    delivered = report_of(ctx.reports)["counts"]["delivered"]
    assert delivered > 0
    plan = ctx.status(env={"MAPPER_NOW": "2026-12-31T22:45:00Z"})["plan"]
    assert (plan["year"], plan["delivered"]) == (2026, delivered)
    # 00:30 on 1 January in Amsterdam is still 31 December in UTC (23:30Z): a new plan year
    plan = ctx.status(env={"MAPPER_NOW": "2026-12-31T23:30:00Z"})["plan"]
    assert (plan["year"], plan["delivered"]) == (2027, 0)
