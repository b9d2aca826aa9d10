"""WebhookListener with real POSTs on loopback (and real deliveries from the simulator)."""

from __future__ import annotations

import http.client
import json
import logging
import socket
import threading
from pathlib import Path

import pytest

from engine.ops.webhooks import WebhookListener

SAMPLES = Path("/work/shared/spec/ccvshop-samples")
ISPAID = {"triggered_at": "2022-11-17T14:40:41Z",
          "href": "https://bonapp1.ccvshop.nl/api/rest/v1/orders/340377945", "id": 340377945,
          "order_number": 24, "ordernumber_prefix": None, "ordernumber_full": "24",
          "total_price": 590, "paid": True, "customer_email": "redacted@example.invalid",
          "customer_mobile": ""}


def _sample(name: str, fallback: dict) -> bytes:
    path = SAMPLES / name
    return path.read_bytes() if path.exists() else json.dumps(fallback).encode()


class Hints:
    def __init__(self):
        self.items: list[tuple[str, str]] = []
        self.event = threading.Event()

    def __call__(self, rid: str, event: str) -> None:
        self.items.append((rid, event))
        self.event.set()


@pytest.fixture
def hints():
    return Hints()


@pytest.fixture
def listener(hints):
    lst = WebhookListener("127.0.0.1", 0, hints)
    lst.start()
    yield lst
    lst.stop()


def post(lst: WebhookListener, path: str, body: bytes, ctype: str = "application/json",
         headers: dict | None = None, method: str = "POST") -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", lst.port, timeout=5)
    try:
        h = {"Content-Type": ctype, **(headers or {})}
        conn.request(method, path, body=body, headers=h)
        resp = conn.getresponse()
        raw = resp.read()
        return resp.status, (json.loads(raw) if raw else {})
    finally:
        conn.close()


def test_real_ispaid_sample_without_event_key(listener, hints):
    body = _sample("webhook_orders_updated_ispaid_bon_2022_redacted.json", ISPAID)
    assert b'"event"' not in body
    assert post(listener, "/hooks", body) == (200, {"ok": True})
    assert hints.items == [("340377945", "orders.updated.ispaid")]
    assert listener.counts["accepted"] == 1


def test_event_from_path_body_and_header(hints):
    with WebhookListener("127.0.0.1", 0, hints, event_header="X-Event") as lst:
        body = json.dumps({"id": 7}).encode()
        assert post(lst, "/hooks/orders.created", body)[0] == 200
        assert post(lst, "/hooks/", body)[0] == 200
        assert post(lst, "/hooks", json.dumps({"id": "8", "event": "orders.created"}).encode())[0] == 200
        assert post(lst, "/hooks", body, headers={"X-Event": "orders.created"})[0] == 200
        # the body's event key wins over the path
        assert post(lst, "/hooks/orders.updated.status",
                    json.dumps({"id": 9, "event": "orders.updated.ispaid"}).encode())[0] == 200
    assert hints.items == [("7", "orders.created"), ("7", "orders.updated.ispaid"),
                           ("8", "orders.created"), ("7", "orders.created"),
                           ("9", "orders.updated.ispaid")]


def test_unknown_event_is_ignored_with_202(listener, hints):
    body = _sample("webhook_orders_updated_status_bon_2022_redacted.json", dict(ISPAID, id=1))
    status, reply = post(listener, "/hooks/orders.updated.status", body)
    assert status == 202 and reply == {"ok": True, "ignored": "orders.updated.status"}
    assert hints.items == []
    assert listener.counts["ignored"] == 1


@pytest.mark.parametrize("path,body,ctype,status,reason", [
    ("/hooks", b"{not json", "application/json", 400, "not valid JSON"),
    ("/hooks", b"\xff\xfe", "application/json", 400, "not valid JSON"),
    ("/hooks", b"[1, 2]", "application/json", 400, "not a JSON object"),
    ("/hooks", b'{"order": 1}', "application/json", 400, "no usable 'id'"),
    ("/hooks", b'{"id": null}', "application/json", 400, "no usable 'id'"),
    ("/hooks", b'{"id": true}', "application/json", 400, "no usable 'id'"),
    ("/hooks", b'{"id": {"x": 1}}', "application/json", 400, "no usable 'id'"),
    ("/hooks", b'{"id": "1; DROP TABLE"}', "application/json", 400, "not a plain identifier"),
    ("/hooks", b'{"id": 1, "event": "../../etc"}', "application/json", 400, "not a plain name"),
    ("/hooks", b'{"id": 1}', "text/plain", 415, "content type must be JSON"),
    ("/hooks", b'{"id": 1}', "", 415, "content type must be JSON"),
    ("/elsewhere", b'{"id": 1}', "application/json", 404, "unknown path"),
    ("/hooks/a/b", b'{"id": 1}', "application/json", 404, "unknown path"),
])
def test_bad_requests_get_4xx_and_a_log_line(listener, hints, caplog, path, body, ctype,
                                             status, reason):
    with caplog.at_level(logging.WARNING, logger="engine.ops.webhooks"):
        got, reply = post(listener, path, body, ctype)
    assert got == status
    assert reply["ok"] is False and reason in reply["error"]
    assert hints.items == []
    assert any(reason in r.getMessage() for r in caplog.records)
    # still alive
    assert post(listener, "/hooks", b'{"id": 5}')[0] == 200


def test_oversized_body_is_413_without_reading_it(hints):
    with WebhookListener("127.0.0.1", 0, hints, max_body=100) as lst:
        status, reply = post(lst, "/hooks", json.dumps({"id": 1, "pad": "x" * 200}).encode())
        assert status == 413 and "exceeds the limit of 100" in reply["error"]
        assert post(lst, "/hooks", b'{"id": 1}')[0] == 200
    assert hints.items == [("1", "orders.updated.ispaid")]


def test_not_post_and_missing_length(listener, hints):
    assert post(listener, "/hooks", b"", method="GET")[0] == 405
    # chunked / no Content-Length
    with socket.create_connection(("127.0.0.1", listener.port), timeout=5) as s:
        s.sendall(b"POST /hooks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n9\r\n{\"id\": 1}\r\n0\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 411")
    assert hints.items == []
    assert post(listener, "/hooks", b'{"id": 5}')[0] == 200


def test_failing_on_hint_is_500_and_the_listener_survives(caplog):
    calls = []

    def on_hint(rid, event):
        calls.append(rid)
        if rid == "1":
            raise RuntimeError("database is locked")

    with WebhookListener("127.0.0.1", 0, on_hint) as lst:
        assert post(lst, "/hooks", b'{"id": 1}')[0] == 500
        assert post(lst, "/hooks", b'{"id": 2}') == (200, {"ok": True})
    assert calls == ["1", "2"]


def test_custom_id_field_and_events(hints):
    with WebhookListener("127.0.0.1", 0, hints, events=("returns.created",),
                         id_field="return_id", default_event="returns.created") as lst:
        assert post(lst, "/hooks", b'{"return_id": "R-1"}')[0] == 200
        assert post(lst, "/hooks", b'{"id": "R-2"}')[0] == 400
    assert hints.items == [("R-1", "returns.created")]


def test_simulator_delivers_ispaid_hint(hints):
    sim_mod = pytest.importorskip("engine.simulators.ccvshop")
    data_mod = pytest.importorskip("engine.simulators.ccvshop_data")
    orders = list(data_mod.generate_orders(2, seed=2, unpaid_share=1.0))
    assert not orders[0]["paid"]
    with WebhookListener("127.0.0.1", 0, hints) as lst, \
            sim_mod.CCVShopSimulator(orders=orders) as sim:
        sim.subscribe("orders.updated.ispaid", lst.url)
        sim.subscribe("orders.updated.status", lst.url + "/orders.updated.status")
        sim.set_paid(orders[0]["id"])
        sim.set_status(orders[1]["id"], 5)
        sim.wait_webhooks()
        assert hints.event.wait(5)
        assert sorted(e["status"] for e in sim.webhook_log) == [200, 202]
    assert hints.items == [(str(orders[0]["id"]), "orders.updated.ispaid")]
