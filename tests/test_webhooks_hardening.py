"""Webhooks and hints under attack (issue: nothing lost, nothing let in, 2, 4 and 8): secret
addresses, signatures, bounds on hints, connections and time, hints the shop refuses, and log
lines an attacker cannot forge. Real listeners on loopback, the real CLI, the CCV simulator."""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import logging
import socket
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine import cli
from helpers import MAPPING
from engine.ops.webhooks import HintRefused, WebhookListener, token_hash
from engine.simulators.ccvshop import CCVShopSimulator
from engine.simulators.ccvshop_data import generate_orders

runner = CliRunner()
TOKEN = "s3cret-token-0123456789abcdef"


def post(port: int, path: str, body: bytes, headers: dict | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


class Hints(list):
    def __call__(self, rid, event):
        self.append((rid, event))


def authorize(token, event):
    return hmac.compare_digest(token_hash(token), token_hash(TOKEN)) and event == "orders.updated.ispaid"


@pytest.fixture
def hints():
    return Hints()


@pytest.fixture
def listener(hints):
    with WebhookListener("127.0.0.1", 0, hints, authorize=authorize) as lst:
        yield lst


@pytest.mark.parametrize("path", [
    "/hooks/orders.updated.ispaid",                              # the old, open address
    "/hooks/wrong-token/orders.updated.ispaid",
    f"/hooks/{TOKEN}/orders.created",                            # a token is for its own event
    f"/hooks/{TOKEN}",
    f"/hooks/{TOKEN}/orders.updated.ispaid/extra",
    "/hooks/../hooks/x/y",
])
def test_only_a_known_token_for_its_event_is_let_in(listener, hints, path):
    status, body = post(listener.port, path, b'{"id": 1}')
    assert status == 404 and json.loads(body) == {"ok": False, "error": "not found"}
    assert hints == []
    assert post(listener.port, f"/hooks/{TOKEN}/orders.updated.ispaid", b'{"id": 1}')[0] == 200
    assert hints == [("1", "orders.updated.ispaid")]


def test_the_body_cannot_name_another_event_than_the_tokens(listener, hints):
    body = json.dumps({"id": 3, "event": "orders.created"}).encode()
    assert post(listener.port, f"/hooks/{TOKEN}/orders.updated.ispaid", body)[0] == 404
    assert hints == []


@pytest.mark.parametrize("rid", [".", "..", "./1", "-1x", "_"])
def test_ids_like_dot_and_dotdot_are_refused(listener, hints, rid):
    status, _ = post(listener.port, f"/hooks/{TOKEN}/orders.updated.ispaid", json.dumps({"id": rid}).encode())
    assert status == 400 and hints == []


def test_a_signature_is_checked_when_the_key_is_known(hints):
    key = "webhook-key-from-ccv"
    body = b'{"id": 42}'
    good = hmac.new(key.encode(), body, hashlib.sha512).hexdigest()
    with WebhookListener("127.0.0.1", 0, hints, authorize=authorize, signature_key=key) as lst:
        path = f"/hooks/{TOKEN}/orders.updated.ispaid"
        assert post(lst.port, path, body)[0] == 401
        assert post(lst.port, path, body, {"x-hash": "0" * 128})[0] == 401
        assert post(lst.port, path, b'{"id": 43}', {"x-hash": good})[0] == 401     # another body
        assert post(lst.port, path, body, {"x-hash": good.upper()})[0] == 200
    assert hints == [("42", "orders.updated.ispaid")]


def test_a_refused_hint_is_429(hints):
    def full(rid, event):
        raise HintRefused("1000 hints in 24 hours (intake.webhooks.max_per_day); try later")
    with WebhookListener("127.0.0.1", 0, full, authorize=authorize) as lst:
        status, body = post(lst.port, f"/hooks/{TOKEN}/orders.updated.ispaid", b'{"id": 1}')
    assert status == 429 and b"max_per_day" in body


def test_control_bytes_are_escaped_and_deep_nesting_is_one_line(listener, caplog):
    with caplog.at_level(logging.DEBUG, logger="engine.ops.webhooks"):
        for line in (b"POST /hooks/x/\x1b[2J\x07forged HTTP/1.1", b"POST /hooks/x/a\rfake HTTP/1.1"):
            sock = socket.create_connection(("127.0.0.1", listener.port), timeout=5)
            sock.sendall(line + b"\r\nContent-Length: 2\r\n\r\n{}")
            sock.recv(1000)
            sock.close()
        deep = b"[" * 30000 + b"]" * 30000
        status, _ = post(listener.port, f"/hooks/{TOKEN}/orders.updated.ispaid", b'{"id": ' + deep + b"}")
    assert status == 400
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "\x1b" not in text and "\x07" not in text and "\r" not in text
    assert "/hooks/<token>/\\x1b[2J\\x07forged refused: 404" in text
    assert "nested too deeply" in text
    assert not any(r.exc_info for r in caplog.records), "a traceback was logged"
    assert TOKEN not in text and "/hooks/<token>/orders.updated.ispaid" in text   # never the secret


def test_connections_are_capped_and_a_slow_request_is_cut(hints):
    with WebhookListener("127.0.0.1", 0, hints, authorize=authorize, max_connections=2,
                         request_seconds=1.0) as lst:
        idle = [socket.create_connection(("127.0.0.1", lst.port), timeout=5) for _ in range(2)]
        time.sleep(0.2)
        third = socket.create_connection(("127.0.0.1", lst.port), timeout=5)
        assert third.recv(100).startswith(b"HTTP/1.1 503")            # at once, no thread for it
        third.close()
        slow = idle[0]
        started = time.monotonic()
        slow.sendall(b"POST /hooks/")
        while True:                                                      # trickle, one byte at a time
            try:
                slow.sendall(b"x")
                if slow.recv(1, socket.MSG_DONTWAIT) == b"":
                    break
            except BlockingIOError:
                pass
            except OSError:
                break
            if time.monotonic() - started > 10:
                pytest.fail("a trickling request was not cut")
            time.sleep(0.2)
        assert time.monotonic() - started < 5
        for s in idle:
            s.close()
        time.sleep(1.5)                                                  # the slots are free again
        assert post(lst.port, f"/hooks/{TOKEN}/orders.updated.ispaid", b'{"id": 7}')[0] == 200


# --------------------------------------------------------------------------- the CLI and runs

@pytest.fixture
def shop_env(tmp_path, monkeypatch):
    from datetime import datetime, timedelta, timezone
    start = (datetime.now(timezone.utc) - timedelta(days=3)).strftime("%Y-%m-%d")
    orders = list(generate_orders(4, seed=3, start_id=700000000, start_date=start))
    with CCVShopSimulator(orders, keys={"pub": "sec-value"}) as sim:
        monkeypatch.setenv("CCVSHOP_URL", sim.url)
        monkeypatch.setenv("CCVSHOP_PUBLIC_KEY", "pub")
        monkeypatch.setenv("CCVSHOP_SECRET_KEY", "sec-value")
        yield sim, orders, {"state": str(tmp_path / "s.sqlite"), "outbox": str(tmp_path / "out")}


def run(env, *extra):
    result = runner.invoke(cli.app, ["run", str(MAPPING), "--state", env["state"], "--outbox", env["outbox"], *extra])
    return result


def test_a_hint_the_shop_refuses_is_set_aside_and_the_run_goes_on(shop_env):
    from engine.clock import now
    from engine.ops.state import open_state
    sim, orders, env = shop_env
    assert run(env).exit_code in (0, 3)
    with open_state(env["state"]) as store:
        store.add_hint("ccvshop-asperion", "123456789", "orders.updated.ispaid", now())
    sim.inject("5xx", status=403, path_contains="/orders/123456789")
    for _ in range(2):                                                # before: exit 1, every day
        result = run(env)
        assert result.exit_code in (0, 3), result.output
    listed = runner.invoke(cli.app, ["hints", "list", str(MAPPING), "--state", env["state"], "--json"]).output
    [hint] = json.loads(listed)
    assert hint["status"] == "refused" and "403" in hint["reason"] and "sec-value" not in hint["reason"]
    dropped = runner.invoke(cli.app, ["hints", "drop", str(MAPPING), "123456789", "--state", env["state"]])
    assert "dropped 1 hint(s)" in dropped.output
    assert json.loads(runner.invoke(cli.app, ["hints", "list", str(MAPPING), "--state", env["state"],
                                              "--json"]).output) == []


def test_a_run_looks_up_at_most_its_share_of_hints(shop_env, tmp_path):
    from engine.clock import now
    from engine.ops.state import open_state
    sim, orders, env = shop_env
    text = MAPPING.read_text("utf-8").replace("max_lookups_per_run: 500", "max_lookups_per_run: 1")
    text = text.replace("xsd: ../schemas/", f"xsd: {MAPPING.parent.parent / 'schemas'}/")
    mapping = tmp_path / "m.yaml"
    mapping.write_text(text, "utf-8")
    runner.invoke(cli.app, ["run", str(mapping), "--state", env["state"], "--outbox", env["outbox"]])
    with open_state(env["state"]) as store:
        for i in range(3):
            store.add_hint("ccvshop-asperion", f"99990{i}", "orders.updated.ispaid", now())
    sim.request_log.clear()
    result = runner.invoke(cli.app, ["run", str(mapping), "--state", env["state"], "--outbox", env["outbox"]])
    assert "2 hinted order(s) wait for the next run" in result.output
    assert sum(1 for _, target, _ in sim.request_log if "/orders/99990" in target) == 1


def test_hooks_add_list_remove_and_listen_refuses_what_is_not_subscribed(shop_env, tmp_path):
    sim, orders, env = shop_env
    added = runner.invoke(cli.app, ["hooks", "add", str(MAPPING), "orders.updated.ispaid", "--base-url",
                                    "https://hooks.example.nl", "--state", env["state"], "--subscribe"])
    assert added.exit_code == 0, added.output
    address = added.output.strip().splitlines()[-1]
    token = address.split("/hooks/")[1].split("/")[0]
    assert len(token) >= 32 and "subscribed at the shop" in added.output
    assert [(h["event"], h["address"]) for h in sim._webhooks.values()] == [("orders.updated.ispaid", address)]
    state_bytes = b"".join(p.read_bytes() for p in Path(env["state"]).parent.glob("s.sqlite*"))
    assert token.encode() not in state_bytes and token_hash(token).encode() in state_bytes
    listed = runner.invoke(cli.app, ["hooks", "list", str(MAPPING), "--state", env["state"]]).output
    sub = listed.split()[0]
    assert token_hash(token).startswith(sub) and "orders.updated.ispaid" in listed
    removed = runner.invoke(cli.app, ["hooks", "remove", str(MAPPING), sub, "--state", env["state"]])
    assert "removed 1 subscription(s)" in removed.output
