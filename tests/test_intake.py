"""Paid-order intake against the CCV simulator: the poll window and webhook hints.

CCV Shop has no paid-at date: an order created weeks ago can become paid today. The run
re-checks paid orders over a look-back window, and `mapper listen` turns webhooks into
hints that the next run re-fetches through the signed API before they count.
"""

import copy
import json
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import pytest
import requests
from typer.testing import CliRunner

import cli
from conftest import MAPPING, ROOT
from simulators.ccvshop import CCVShopSimulator
from simulators.ccvshop_data import generate_orders

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
    port = _free_port()
    proc = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "listen", str(MAPPING), "--port", str(port),
                             "--state", env["state"]], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/hooks"
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            requests.post(url + "/ping", data=b"{}", headers={"Content-Type": "application/json"}, timeout=1)
            break
        except requests.ConnectionError:
            time.sleep(0.1)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def test_old_order_toggled_to_paid_arrives_through_a_webhook_hint(shop, env, listener):
    sim, _, old = shop
    _run(env)
    assert old[0]["ordernumber_full"] not in _delivered_numbers(env["outbox"])
    sim.subscribe("orders.updated.ispaid", listener + "/orders.updated.ispaid")
    sim.set_paid(old[0]["id"])  # 200 days old: outside the 90-day window
    sim.wait_webhooks()
    result = _run(env)
    assert _delivered_numbers(env["outbox"]).count(old[0]["ordernumber_full"]) == 1
    assert "delivered 1 orders" in result.output
    # the hint is used up: a further run delivers nothing
    assert "delivered 0 orders" in _run(env).output


def test_forged_webhook_for_an_unpaid_order_is_ignored(shop, env, listener):
    sim, _, old = shop
    _run(env)
    forged = {"id": old[0]["id"], "order_number": 5001, "paid": True, "total_price": 1}
    answer = requests.post(listener + "/orders.updated.ispaid", json=forged, timeout=5)
    assert answer.status_code == 200  # recorded as a hint ...
    result = _run(env)
    assert old[0]["ordernumber_full"] not in _delivered_numbers(env["outbox"])  # ... but the shop says unpaid
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
    fault = sim.inject("5xx", status=404, path_contains=f"/orders/{victim['id']}/orderrows")
    result = _run(env)
    assert result.exit_code == 3
    assert f"quarantined: order {victim['id']} (id {victim['id']}): record {victim['id']}:" in result.output
    delivered = _delivered_numbers(env["outbox"])
    assert victim["ordernumber_full"] not in delivered and len(delivered) == 4
    sim.clear_faults()
    _run(env)  # retried from quarantine by id: now it goes out, once
    assert _delivered_numbers(env["outbox"]).count(victim["ordernumber_full"]) == 1
