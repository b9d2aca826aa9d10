"""HttpClient against real servers on loopback: the CCV Shop simulator and tiny stdlib servers.

No HTTP library is patched. Time-dependent paths (429 waits, backoff) run on a fake clock
shared by client and simulator, so they are fast.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import threading
import time
import traceback
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from engine.io.http.client import (AuthenticationError, HttpClient, HttpConfigError, HttpError,
                                NotFound, RateLimitExceeded, ResponseSignatureError,
                                build_query, is_loopback_host, wire_target)
from engine.io.http.ratelimit import SlidingWindowLimiter, resource_of

sim_mod = pytest.importorskip("engine.simulators.ccvshop")
data_mod = pytest.importorskip("engine.simulators.ccvshop_data")
CCVShopSimulator = sim_mod.CCVShopSimulator

SECRET = "S3cr3t-Do-Not-Leak-7f1c"
PUBLIC = "pub-key-1"
ORDER_ID = 400000000


class FakeClock:
    """Wall-clock-like time that only moves when someone sleeps (thread-safe enough)."""

    def __init__(self, start: float | None = None):
        self.t = float(start if start is not None else time.time())
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self.t += max(0.0, seconds)


@pytest.fixture(scope="module")
def orders():
    return list(data_mod.generate_orders(5, seed=3))


def http_config(url, **over):
    cfg = {
        "base_url": url,
        "headers": {"Accept": "application/vnd.verto.webshop+json"},
        "timeout": {"connect": 2, "read": 5},
        "retries": {"attempts": 4, "backoff": 0.01, "max_backoff": 0.05},
        "auth": {"kind": "hmac", "algorithm": "sha512", "public": PUBLIC, "secret": SECRET,
                 "sign": "{public}|{method}|{uri}|{body}|{date}",
                 "headers": {"x-public": "{public}", "x-date": "{date}", "x-hash": "{signature}"},
                 "verify_response": True},
        "rate_limit": {"requests": 150, "per_seconds": 60, "resource_prefix": "/api/rest/v1/"},
        "on_429": {"wait": "next_window", "attempts": 3},
        "not_found": {"status": [404], "codes": ["500.24"]},
        "error_body": {"code": "code", "message": "developermessage"},
    }
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(cfg.get(k), dict):
            cfg[k] = {**cfg[k], **v}
        else:
            cfg[k] = v
    return cfg


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def sim(orders, clock):
    s = CCVShopSimulator(orders=orders, keys={PUBLIC: SECRET}, clock=clock, seed=1)
    s.start()
    yield s
    s.stop()


@pytest.fixture
def client(sim, clock):
    c = HttpClient(http_config(sim.url), clock=clock, sleep=clock.sleep)
    yield c
    c.close()


def assert_no_secret(exc: BaseException, *extra: str) -> None:
    texts = [str(exc), repr(exc), "".join(traceback.format_exception(exc))]
    for text in texts:
        for secret in (SECRET, *extra):
            assert secret not in text, f"secret leaked into: {text[:500]}"
        # no full HMAC signature either
        assert not any(len(w) >= 64 and all(c in "0123456789abcdef" for c in w)
                       for w in text.replace("'", " ").replace('"', " ").split())


# -- pure helpers ---------------------------------------------------------------------------

def test_build_query_keeps_order_drops_none_and_lowercases_bools():
    assert build_query({"is_paid": True, "x": None, "orderby": "id", "d": "2026-01-01 10:00"}) \
        == "is_paid=true&orderby=id&d=2026-01-01%2010%3A00"
    assert build_query([("b", 1), ("a", "é/&")]) == "b=1&a=%C3%A9%2F%26"
    assert build_query(None) == ""


@pytest.mark.parametrize("target,wire", [
    ("/api/rest/v1/orders?is_paid=true&start=0&size=25", "/api/rest/v1/orders?is_paid=true&start=0&size=25"),
    ("/a/b/", "/a/b/"),
    ("/a?", "/a"),
    ("/a?x=%2f", "/a?x=%2F"),
    ("/a b?q=é", "/a%20b?q=%C3%A9"),
    ("/a?x=100%", "/a?x=100%25"),
    ("/a#frag", "/a"),
])
def test_wire_target(target, wire):
    assert wire_target(target) == wire


@pytest.mark.parametrize("host,loop", [("127.0.0.1", True), ("127.9.9.9", True), ("::1", True),
                                       ("[::1]", True), ("localhost", True), ("10.0.0.1", False),
                                       ("shop.example", False), ("127.0.0.1.nip.io", False)])
def test_is_loopback_host(host, loop):
    assert is_loopback_host(host) is loop


def test_plain_http_with_credentials_is_refused_off_loopback():
    with pytest.raises(HttpConfigError) as info:
        HttpClient(http_config("http://shop.example"))
    msg = str(info.value)
    assert "plain http" in msg and "https://" in msg and SECRET not in msg
    with pytest.raises(HttpConfigError, match="plain http"):
        HttpClient({"base_url": "http://10.1.2.3:8080", "auth": {"kind": "bearer", "token": SECRET}})
    # allowed: https anywhere, http on loopback, http without credentials
    HttpClient(http_config("https://shop.example"))
    HttpClient(http_config("http://127.0.0.1:1"))
    HttpClient(http_config("http://[::1]:1"))
    HttpClient(http_config("http://localhost:1"))
    HttpClient({"base_url": "http://shop.example", "auth": {"kind": "none"}})
    with pytest.raises(HttpConfigError, match="absolute http"):
        HttpClient({"base_url": "shop.example"})


def test_client_repr_has_no_secret():
    c = HttpClient(http_config("https://shop.example"))
    assert SECRET not in repr(c) and PUBLIC in repr(c)
    c = HttpClient({"base_url": "https://shop.example", "auth": {"kind": "bearer", "token": SECRET}})
    assert SECRET not in repr(c)


# -- rate limiter (pure, fake time) -------------------------------------------------------------

def test_resource_of():
    assert resource_of("/api/rest/v1/orders/1/orderrows", "/api/rest/v1/") == "orders"
    assert resource_of("/api/rest/v1/orders", "/api/rest/v1/") == "orders"
    assert resource_of("/api/rest/v1/orderrows/7", "/api/rest/v1/") == "orderrows"
    assert resource_of("/other/x", "/api/rest/v1/") == "other"


def test_sliding_window_never_exceeds_n_in_any_window():
    clock = FakeClock(1000.0)
    lim = SlidingWindowLimiter(5, 10, clock=clock, sleep=clock.sleep)
    starts = []
    for _ in range(23):
        slot = lim.acquire("orders")
        starts.append(clock())
        clock.t += 0.25  # latency
        slot.done()
    # any interval of 10 s holds at most 5 starts -- and the limit is actually used
    for i, t in enumerate(starts):
        assert sum(1 for s in starts if t <= s < t + 10) <= 5, (i, starts)
    assert starts[5] - starts[0] >= 10
    assert starts[-1] - starts[0] < 4 * 10.25 + 1
    # other resources are independent
    before = clock()
    lim.acquire("products").done()
    assert clock() == before


def test_limiter_block_until():
    clock = FakeClock(0.0)
    lim = SlidingWindowLimiter(100, 60, clock=clock, sleep=clock.sleep)
    lim.block_until("orders", 61.0)
    lim.acquire("orders").done()
    assert clock() == pytest.approx(61.0)


# -- against the simulator ------------------------------------------------------------------

def test_signed_get_parses_decimals(client, sim):
    order = client.get(f"/api/rest/v1/orders/{ORDER_ID}")
    assert order["id"] == ORDER_ID
    assert isinstance(order["total_price"], (Decimal, int))
    assert not any(isinstance(v, float) for v in order.values())
    assert sim.request_log[-1] == ("GET", f"/api/rest/v1/orders/{ORDER_ID}", 200)
    assert client.stats["requests"] == 1


def test_query_is_signed_exactly_as_sent(client, sim):
    page = client.get("/api/rest/v1/orders", {"is_paid": True, "min_create_date": "2025-01-01 00:00:00",
                                               "orderby": "id", "size": 2})
    assert len(page["items"]) == 2
    target = sim.request_log[-1][1]
    assert target == "/api/rest/v1/orders?is_paid=true&min_create_date=2025-01-01%2000%3A00%3A00&orderby=id&size=2"
    # the next link is used exactly as given (and signed as given: the simulator checked it)
    nxt = client.get(page["next"])
    assert sim.request_log[-1][1] == page["next"].split(sim.url, 1)[1]
    assert nxt["start"] == 2


def test_trailing_slash_and_absolute_url(client, sim):
    assert client.get(f"{sim.url}/api/rest/v1/orders/{ORDER_ID}/")["id"] == ORDER_ID
    assert sim.request_log[-1][1] == f"/api/rest/v1/orders/{ORDER_ID}/"


def test_absolute_url_on_another_host_is_refused(client):
    with pytest.raises(HttpError, match="only the configured base_url host"):
        client.get("https://evil.example/api/rest/v1/orders")


@pytest.mark.parametrize("case,expect", [
    ("wrong_secret", "bad hash"),
    ("skew", "date skew"),
    ("unknown_key", "unknown public key"),
])
def test_auth_failures_are_fatal_and_clear(sim, clock, case, expect):
    auth = http_config(sim.url)["auth"]
    client_clock = clock
    if case == "wrong_secret":
        auth = dict(auth, secret="not-the-" + SECRET)
    elif case == "unknown_key":
        auth = dict(auth, public="nobody")
    else:
        client_clock = lambda: clock() - 600  # noqa: E731 - ten minutes behind
    c = HttpClient(http_config(sim.url, auth=auth), clock=client_clock, sleep=clock.sleep)
    with pytest.raises(AuthenticationError) as info:
        c.get(f"/api/rest/v1/orders/{ORDER_ID}")
    msg = str(info.value)
    assert expect in msg
    assert "refused the credentials" in msg and "http.auth" in msg
    assert info.value.status == 401 and info.value.code == "401.10"
    if case == "skew":
        assert re.search(r"clock is (599|600|601) s behind the server's", msg)
    assert len(sim.request_log) == 1, "401 must not be retried"
    assert c.stats["retries"] == 0
    assert_no_secret(info.value, "not-the-" + SECRET)


def test_not_found_code_gives_none_or_notfound(client, sim):
    assert client.get("/api/rest/v1/orders/1", allow_missing=True) is None
    with pytest.raises(NotFound) as info:
        client.get("/api/rest/v1/orders/1")
    assert info.value.code == "500.24"
    assert len(sim.request_log) == 2, "not found is not retried"
    with pytest.raises(NotFound):
        client.get("/api/rest/v1/nosuchresource")  # 404 404.20
    assert_no_secret(info.value)


def test_5xx_is_retried_then_succeeds(client, sim):
    sim.inject("5xx", count=2, status=503)
    assert client.get(f"/api/rest/v1/orders/{ORDER_ID}")["id"] == ORDER_ID
    assert client.stats["retries"] == 2
    assert [s for _, _, s in sim.request_log] == [503, 503, 200]


def test_5xx_persisting_gives_a_clear_error(client, sim, caplog):
    sim.inject("5xx")
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(HttpError) as info:
            client.get("/api/rest/v1/orders", {"is_paid": True, "api_key": SECRET})
    msg = str(info.value)
    assert msg.startswith("GET http://127.0.0.1:")
    assert "/api/rest/v1/orders?is_paid=true&api_key=***" in msg
    assert "failed after 4 attempt(s): HTTP 500, code 500.10: Injected fault" in msg
    assert info.value.status == 500 and info.value.code == "500.10"
    assert len(sim.request_log) == 4
    assert_no_secret(info.value)
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("engine"))
    assert SECRET not in ours and "retry 1 of 3" in ours


def test_drop_and_truncated_bodies_are_retried(client, sim):
    sim.inject("drop", count=1)
    sim.inject("truncated", count=1, mode="short")
    sim.inject("truncated", count=1, mode="cut")
    assert client.get(f"/api/rest/v1/orders/{ORDER_ID}")["id"] == ORDER_ID
    assert client.stats["retries"] == 3


def test_truncated_body_persisting_gives_a_clear_error(client, sim):
    sim.inject("truncated", mode="cut")
    with pytest.raises(HttpError) as info:
        client.get(f"/api/rest/v1/orders/{ORDER_ID}")
    assert "truncated or invalid JSON body" in str(info.value)
    assert_no_secret(info.value)
    sim.clear_faults()
    sim.inject("truncated", mode="short")
    with pytest.raises(HttpError) as info:
        client.get(f"/api/rest/v1/orders/{ORDER_ID}")
    assert "body cut short" in str(info.value)
    assert_no_secret(info.value)


def test_slow_response_beyond_read_timeout_is_retried(sim, clock):
    c = HttpClient(http_config(sim.url, timeout={"connect": 1, "read": 0.2}), clock=clock,
                   sleep=clock.sleep)
    sim.inject("slow", count=1, delay=0.6)
    assert c.get(f"/api/rest/v1/orders/{ORDER_ID}")["id"] == ORDER_ID
    assert c.stats["retries"] == 1


def test_429_waits_for_the_next_window_without_failing(client, sim, clock):
    clock.t = 1_800_000_000 + 12.5  # 12.5 s into a minute
    sim.inject("429", count=2)
    assert client.get(f"/api/rest/v1/orders/{ORDER_ID}")["id"] == ORDER_ID
    assert client.stats["responses_429"] == 2
    assert client.stats["retries"] == 0
    # first wait: to the next minute + 1 s; second: the minute after that + 1 s
    assert clock() == pytest.approx(1_800_000_000 + 120 + 1)


def test_429_persisting_stops_resumably(client, sim, clock):
    sim.inject("429")
    with pytest.raises(RateLimitExceeded) as info:
        client.get(f"/api/rest/v1/orders/{ORDER_ID}")
    assert "still rate limited" in str(info.value) and "resumed" in str(info.value)
    assert client.stats["responses_429"] == 4  # the first answer + 3 waits
    assert len(sim.request_log) == 4
    assert_no_secret(info.value)


def test_connection_refused_is_retried_then_clear(clock):
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    c = HttpClient(http_config(f"http://127.0.0.1:{port}"), clock=clock, sleep=clock.sleep)
    with pytest.raises(HttpError) as info:
        c.get("/api/rest/v1/orders")
    assert "failed after 4 attempt(s): connection failed" in str(info.value)
    assert_no_secret(info.value)


# -- response signing, with a tiny server that signs with the wrong secret -----------------------

class _TinyServer:
    """A loopback server answering every request with ``respond(handler) -> (status, headers, body)``."""

    def __init__(self, respond):
        outer = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def do_GET(self):  # noqa: N802
                outer.requests.append(self.path)
                status, headers, body = respond(self)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.requests: list[str] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def _signed(secret, method, path, body, date="2030-01-01T00:00:00Z"):
    sig = hmac.new(secret.encode(), f"{PUBLIC}|{method}|{path}|".encode() + body
                   + f"|{date}".encode(), hashlib.sha512).hexdigest()
    return {"Content-Type": "application/json; charset=utf-8", "x-date": date, "x-hash": sig}


@pytest.mark.parametrize("server_secret,ok", [(SECRET, True), ("wrong-server-secret", False)])
def test_response_signature_is_verified(server_secret, ok, clock):
    body = b'{"id": 1, "total": 1.10}'
    srv = _TinyServer(lambda h: (200, _signed(server_secret, "GET", h.path, body), body))
    try:
        c = HttpClient(http_config(srv.url), clock=clock, sleep=clock.sleep)
        if ok:
            assert c.get("/x", {"a": 1}) == {"id": 1, "total": Decimal("1.10")}
        else:
            with pytest.raises(ResponseSignatureError) as info:
                c.get("/x", {"a": 1})
            assert "response signature does not match" in str(info.value)
            assert len(srv.requests) == 1, "a signature mismatch is not retried"
            assert_no_secret(info.value, "wrong-server-secret")
    finally:
        srv.close()


def test_unsigned_response_is_rejected_and_non_json_is_an_error(clock):
    srv = _TinyServer(lambda h: (200, {"Content-Type": "application/json"}, b'{"id":1}'))
    try:
        c = HttpClient(http_config(srv.url), clock=clock, sleep=clock.sleep)
        with pytest.raises(ResponseSignatureError):
            c.get("/x")
        # verification off: accepted
        cfg = http_config(srv.url)
        cfg["auth"] = dict(cfg["auth"], verify_response=False)
        assert HttpClient(cfg, clock=clock, sleep=clock.sleep).get("/x") == {"id": 1}
    finally:
        srv.close()
    srv = _TinyServer(lambda h: (200, {"Content-Type": "text/html"}, b"<html>proxy</html>"))
    try:
        c = HttpClient({"base_url": srv.url, "retries": {"attempts": 2, "backoff": 0.01}},
                       clock=clock, sleep=clock.sleep)
        with pytest.raises(HttpError, match="content type 'text/html' instead of JSON"):
            c.get("/x")
    finally:
        srv.close()


def test_bearer_token_never_leaks(clock):
    srv = _TinyServer(lambda h: (401 if h.headers.get("Authorization") != "Bearer ok" else 200,
                                 {"Content-Type": "application/json"},
                                 json.dumps({"message": "token " + h.headers.get("Authorization", "")
                                             + " rejected"}).encode()))
    try:
        c = HttpClient({"base_url": srv.url, "auth": {"kind": "bearer", "token": SECRET},
                        "name": "The shop", "auth_hint": "check SHOP_TOKEN",
                        "error_body": {"code": "code", "message": "message"}},
                       clock=clock, sleep=clock.sleep)
        with pytest.raises(AuthenticationError) as info:
            c.get("/x")
        assert "rejected" in str(info.value)  # the server's message, with the token scrubbed
        assert str(info.value).startswith("The shop refused the credentials (auth bearer")
        assert str(info.value).endswith("; check SHOP_TOKEN")
        assert_no_secret(info.value)
        assert SECRET not in (info.value.detail or "")
    finally:
        srv.close()
