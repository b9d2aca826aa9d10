"""Paid-order intake against the CCV simulator: the poll window and webhook hints.

CCV Shop has no paid-at date: an order created weeks ago can become paid today. The run
re-checks paid orders over a look-back window, and `mapper listen` turns webhooks into
hints that the next run re-fetches through the signed API before they count.
"""

import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import pytest
import requests
from typer.testing import CliRunner

from engine import cli
from helpers import MAPPING
from engine.simulators.ccvshop import CCVShopSimulator
from engine.simulators.ccvshop_data import generate_orders

runner = CliRunner()
KEYS = {"pub-test": "secret-test-value"}


def _days_ago(days: int) -> str:
    return (datetime.now(timezone.utc) - timedelta(days=days)).strftime("%Y-%m-%d")


@pytest.fixture
def shop():
    recent = list(generate_orders(6, seed=11, start_id=600000000, start_date=_days_ago(5)))
    old = list(generate_orders(1, seed=12, start_id=610000000, start_date=_days_ago(200), start_ordernumber=5001))
    recent[2]["paid"] = False  # becomes paid after creation, within the window
    old[0]["paid"] = False     # toggled to paid long after creation: outside the window
    with CCVShopSimulator(recent + old, keys=KEYS) as sim:
        yield sim, recent, old


@pytest.fixture
def env(shop, tmp_path, monkeypatch):
    sim, _, _ = shop
    monkeypatch.setenv("CCVSHOP_URL", sim.url)
    monkeypatch.setenv("CCVSHOP_PUBLIC_KEY", "pub-test")
    monkeypatch.setenv("CCVSHOP_SECRET_KEY", "secret-test-value")
    monkeypatch.setenv("MAPPER_REPORTS", str(tmp_path / "reports"))
    return {"state": str(tmp_path / "state.sqlite"), "outbox": str(tmp_path / "outbox")}


def _run(env):
    result = runner.invoke(cli.app, ["run", str(MAPPING), "--state", env["state"], "--outbox", env["outbox"]])
    assert result.exit_code in (0, 3), result.output
    assert "secret-test-value" not in result.output
    return result


def _delivered_numbers(outbox):
    from pathlib import Path
    numbers = []
    for f in sorted(Path(outbox).glob("*.xml")):
        text = f.read_text(encoding="utf-8")
        numbers += [line.split("<OrderNumber>")[1].split("<")[0] for line in text.splitlines() if "<OrderNumber>" in line]
    return numbers


def _countable(order):
    return order["paid"] and order["is_completed"] and order["status"] != 8


def test_order_paid_after_creation_is_picked_up_by_the_window(shop, env):
    sim, recent, _ = shop
    _run(env)
    first = _delivered_numbers(env["outbox"])
    assert recent[2]["ordernumber_full"] not in first
    assert sorted(first) == sorted(o["ordernumber_full"] for o in recent if _countable(o))
    sim.set_paid(recent[2]["id"])
    _run(env)
    second = _delivered_numbers(env["outbox"])
    assert second.count(recent[2]["ordernumber_full"]) == 1
    assert len(second) == len(set(second))  # nothing twice


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def listener(env):
    """`mapper listen` with one subscription; yields its secret address without the event."""
    port = _free_port()
    added = runner.invoke(cli.app, ["hooks", "add", str(MAPPING), "orders.updated.ispaid",
                                    "--base-url", f"http://127.0.0.1:{port}", "--state", env["state"]])
    assert added.exit_code == 0, added.output
    address = added.output.strip().splitlines()[-1]
    assert address.startswith(f"http://127.0.0.1:{port}/hooks/") and address.endswith("/orders.updated.ispaid")
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "listen", str(MAPPING), "--port", str(port),
                             "--state", env["state"]], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            requests.post(f"http://127.0.0.1:{port}/hooks/x/y", data=b"{}",
                          headers={"Content-Type": "application/json"}, timeout=1)
            break
        except requests.ConnectionError:
            time.sleep(0.1)
    yield address.rsplit("/", 1)[0]
    proc.terminate()
    proc.wait(timeout=10)


def test_a_hint_delivers_an_order_paid_after_the_window_passed_it(shop, env, listener):
    """The connector started 150 days ago (its first window reached back 240 days); an order
    created 200 days ago, unpaid then, is paid today: the poll window (90 days) no longer sees
    it, its hint delivers it."""
    sim, _, old = shop
    then = (datetime.now(timezone.utc) - timedelta(days=150)).strftime("%Y-%m-%dT%H:%M:%SZ")
    first = runner.invoke(cli.app, ["run", str(MAPPING), "--state", env["state"], "--outbox", env["outbox"]],
                          env={"MAPPER_NOW": then})
    assert first.exit_code in (0, 3), first.output
    assert old[0]["ordernumber_full"] not in _delivered_numbers(env["outbox"])
    sim.subscribe("orders.updated.ispaid", listener + "/orders.updated.ispaid")
    sim.set_paid(old[0]["id"])
    sim.wait_webhooks()
    result = _run(env)
    assert _delivered_numbers(env["outbox"]).count(old[0]["ordernumber_full"]) == 1, result.output
    assert "delivered 0 orders" in _run(env).output             # the hint is used up


def test_an_order_from_before_the_connector_started_is_not_delivered_by_a_hint(shop, env, listener):
    """Webhooks cannot deliver history: a (forged or real) hint for an order created before the
    first run's window is refused and shown; the operator back-fills it with --since."""
    sim, _, old = shop
    _run(env)
    sim.subscribe("orders.updated.ispaid", listener + "/orders.updated.ispaid")
    sim.set_paid(old[0]["id"])  # 200 days old: before the connector's start
    sim.wait_webhooks()
    result = _run(env)
    assert old[0]["ordernumber_full"] not in _delivered_numbers(env["outbox"])
    assert "1 webhook hint(s) refused" in result.output
    listed = runner.invoke(cli.app, ["hints", "list", str(MAPPING), "--state", env["state"]]).output
    assert f"order id {old[0]['id']}" in listed and "refused: created" in listed
    assert "before this connector's start" in listed
    assert "delivered 0 orders" in _run(env).output             # refused stays refused, no lookup
    backfill = runner.invoke(cli.app, ["run", str(MAPPING), "--state", env["state"], "--outbox", env["outbox"],
                                       "--since", _days_ago(210)])
    assert backfill.exit_code in (0, 3), backfill.output
    assert _delivered_numbers(env["outbox"]).count(old[0]["ordernumber_full"]) == 1


def test_forged_webhook_for_an_unpaid_order_is_ignored(shop, env, listener):
    sim, recent, _ = shop
    _run(env)
    unpaid = recent[2]
    forged = {"id": unpaid["id"], "order_number": 5001, "paid": True, "total_price": 1}
    answer = requests.post(listener + "/orders.updated.ispaid", json=forged, timeout=5)
    assert answer.status_code == 200  # recorded as a hint ...
    result = _run(env)
    assert unpaid["ordernumber_full"] not in _delivered_numbers(env["outbox"])  # ... but the shop says unpaid
    assert "not counted 1" in result.output


@pytest.mark.parametrize("body, status", [
    (b"not json", 400), (b"[1, 2]", 400), (b'{"no_id": 1}', 400), (b"{" + b" " * 70000 + b"}", 413),
])
def test_malformed_webhooks_get_4xx_and_the_listener_survives(listener, body, status):
    answer = requests.post(listener + "/orders.updated.ispaid", data=body,
                           headers={"Content-Type": "application/json"}, timeout=5)
    assert answer.status_code == status
    ok = requests.post(listener + "/orders.updated.ispaid", json={"id": 1}, timeout=5)
    assert ok.status_code == 200


def test_rows_missing_for_one_order_quarantine_it_and_the_rest_go_out(shop, env):
    sim, recent, _ = shop
    victim = recent[0]
    sim.inject("5xx", status=404, path_contains=f"/orders/{victim['id']}/orderrows")
    result = _run(env)
    assert result.exit_code == 3
    assert f"quarantined: order {victim['id']} (id {victim['id']}): record {victim['id']}:" in result.output
    delivered = _delivered_numbers(env["outbox"])
    assert victim["ordernumber_full"] not in delivered and len(delivered) == 4
    sim.clear_faults()
    _run(env)  # retried from quarantine by id: now it goes out, once
    assert _delivered_numbers(env["outbox"]).count(victim["ordernumber_full"]) == 1
