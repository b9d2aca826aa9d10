"""Tests of the CCV Shop simulator and order generator (real HTTP on 127.0.0.1)."""
from __future__ import annotations

import decimal
import hashlib
import hmac
import json
import threading
import time
from decimal import ROUND_HALF_UP, Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from engine.simulators.ccvshop import CCVShopSimulator, parse_x_date
from engine.simulators.ccvshop_data import (dumps_ccv, generate_fixture_dir, generate_orders,
                                     load_fixture_dir)

T0 = 1_790_000_040.0  # 2026-09-21T... a fixed instant, 0 s into a UTC minute
API = "/api/rest/v1"


# ---------------------------------------------------------------- helpers
class FakeClock:
    def __init__(self, t: float = T0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def hmac512(secret: str, msg: bytes) -> str:
    return hmac.new(secret.encode(), msg, hashlib.sha512).hexdigest()


def xdate(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def signed_headers(method: str, target: str, body: bytes = b"", *, ts: float = T0,
                   public: str = "demo", secret: str = "demo", date: str | None = None) -> dict:
    d = date or xdate(ts)
    signed_body = body if method in ("POST", "PATCH", "PUT") else b""
    msg = f"{public}|{method}|{target}|".encode() + signed_body + f"|{d}".encode()
    return {"x-public": public, "x-date": d, "x-hash": hmac512(secret, msg),
            "Accept": "application/vnd.verto.webshop+json"}


def call(sim, method: str, target: str, body: bytes = b"", *, ts: float | None = None,
         timeout: float = 5, **kw) -> requests.Response:
    ts = sim.clock() if ts is None else ts
    headers = signed_headers(method, target, body, ts=ts, **kw)
    if body:
        headers["Content-Type"] = "application/json"
    return requests.request(method, sim.url + target, data=body or None, headers=headers,
                            timeout=timeout)


def jload(resp: requests.Response):
    return json.loads(resp.content, parse_float=Decimal)


def verify_response(resp: requests.Response, method: str, target: str, secret="demo",
                    public="demo") -> bool:
    d = resp.headers["x-date"]
    msg = f"{public}|{method}|{target}|".encode() + resp.content + f"|{d}".encode()
    return hmac.compare_digest(hmac512(secret, msg), resp.headers["x-hash"])


def q2(x) -> Decimal:
    return Decimal(x).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


@pytest.fixture(scope="module")
def orders():
    return list(generate_orders(60, seed=7, unpaid_share=0.1, cancelled_share=0.05))


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def sim(orders, clock):
    with CCVShopSimulator(orders=orders, clock=clock) as s:
        yield s


# ---------------------------------------------------------------- §2 vectors
VECTORS = [
    ("demo|GET|/api/rest/v1/orders?is_paid=true&start=0&size=25||2022-11-26T00:45:54Z",
     "e82a812bd65cbf8d19f63522f79db6778f0f10f9beb1250f847e92fce2964efb065a01305d034326823b34f2a51ee74d55a2ad201170d0e124e1ba761218e17b"),
    ("demo|GET|/api/rest/v1/orders/339323562/orderrows||2022-11-26T00:45:54Z",
     "c554eab3dd72c97359eed212ee462a1914ed983df453c6ea41190a137b50dcae6acf176fe03e49229b8906d667b20b3a635c164547448900ce82d5a5cd724b46"),
    ('demo|PATCH|/api/rest/v1/orders/339323562|{"paid":true}|2022-11-26T00:45:54+00:00',
     "40cda2326d40646afe8f393305a95bca6641c9b93f633acb21856de003218e6a6a01a92dbe190df5d94e1999b18171e70987037c57632727ddf27c8daa978f99"),
]


@pytest.mark.parametrize("msg,expected", VECTORS)
def test_spec_vectors(msg, expected):
    assert hmac512("demo", msg.encode()) == expected


@pytest.mark.parametrize("msg,expected", VECTORS)
def test_simulator_accepts_spec_vectors(msg, expected):
    """The simulator accepts exactly the vector requests at their own date."""
    public, method, target, body, date = msg.split("|")
    ts = parse_x_date(date)
    o = next(generate_orders(1, seed=3, start_id=339323562))
    o["paid"] = False
    with CCVShopSimulator(orders=[o], clock=lambda: ts) as s:
        headers = {"x-public": public, "x-date": date, "x-hash": expected}
        r = requests.request(method, s.url + target, data=body.encode() or None,
                             headers=headers, timeout=5)
        assert r.status_code in (200, 204), r.text
        assert verify_response(r, method, target)


def test_x_date_forms():
    base = parse_x_date("2022-11-26T00:45:54Z")
    assert parse_x_date("2022-11-26T00:45:54+00:00") == base
    assert parse_x_date("2022-11-26T00:45:54+0000") == base
    assert parse_x_date("2022-11-26T00:45:54.123Z") == pytest.approx(base + 0.123)
    assert parse_x_date("2022-11-26T01:45:54+01:00") == base
    assert parse_x_date("26-11-2022 00:45") is None


# ---------------------------------------------------------------- auth
def test_auth_failures(sim, clock):
    target = f"{API}/orders"
    cases = {
        "bad hash": dict(headers=dict(signed_headers("GET", target), **{"x-hash": "0" * 128})),
        "date skew": dict(headers=signed_headers("GET", target, ts=T0 - 301)),
        "unknown public key": dict(headers=signed_headers("GET", target, public="nope", secret="x")),
        "missing header": dict(headers={k: v for k, v in signed_headers("GET", target).items()
                                        if k != "x-hash"}),
        "x-date": dict(headers=signed_headers("GET", target, date="yesterday")),
    }
    for reason, c in cases.items():
        r = requests.get(sim.url + target, headers=c["headers"], timeout=5)
        assert r.status_code == 401, reason
        body = r.json()
        assert body["code"] == "401.10" and body["status"] == 401
        assert reason in body["developermessage"], (reason, body)
        if reason == "unknown public key" or reason == "missing header":
            assert "x-hash" not in r.headers  # unknown key: errors are not signed
        else:
            assert verify_response(r, "GET", target)  # key known: errors signed too
    # signed for another target: bad hash
    r = requests.get(sim.url + target + "?start=0", headers=signed_headers("GET", target), timeout=5)
    assert r.status_code == 401 and "bad hash" in r.json()["developermessage"]
    # within skew: fine, both directions
    assert call(sim, "GET", target, ts=T0 + 299).status_code == 200
    assert call(sim, "GET", target, ts=T0 - 299).status_code == 200


def test_response_signature(sim):
    for target in (f"{API}/orders?size=3", f"{API}/orders/{sim.order_ids[0]}/",
                   f"{API}/orders/{sim.order_ids[0]}/orderrows"):
        r = call(sim, "GET", target)
        assert r.status_code == 200
        assert r.headers["x-date"] == xdate(T0)
        assert len(r.headers["x-hash"]) == 128
        assert verify_response(r, "GET", target)
        assert r.headers["Content-Type"].startswith("application/json")
    # a tampered body would not verify
    r = call(sim, "GET", f"{API}/orders?size=1")
    r._content = r.content.replace(b'"start":0', b'"start":1')
    assert not verify_response(r, "GET", f"{API}/orders?size=1")


# ---------------------------------------------------------------- paging
def test_paging_absolute_links_and_end(sim, orders):
    visible = [o["id"] for o in orders if o["is_completed"]]
    target = f"{API}/orders?is_paid=true&orderby=id&size=7&start=0"
    paid = [o["id"] for o in orders if o["paid"]]
    seen, pages = [], 0
    url = sim.url + target
    while url:
        assert url.startswith(sim.url + API + "/orders?")
        t = url[len(sim.url):]
        r = call(sim, "GET", t)
        assert r.status_code == 200, r.text
        page = jload(r)
        assert list(page)[:7] == ["href", "start", "size", "first", "previous", "next", "items"]
        assert page["href"] == url and page["size"] == 7
        assert "total" not in page and "count" not in page
        assert page["first"] == sim.url + f"{API}/orders?is_paid=true&orderby=id&size=7&start=0"
        if page["start"] == 0:
            assert page["previous"] is None
        else:
            assert page["previous"] == sim.url + f"{API}/orders?is_paid=true&orderby=id&size=7&start={page['start'] - 7}"
        assert page["items"], "no empty last page"
        seen += [o["id"] for o in page["items"]]
        for o in page["items"]:
            assert o["orderrows"] == {"href": f"{sim.url}{API}/orders/{o['id']}/orderrows/"}
        url = page["next"]
        pages += 1
    assert seen == sorted(paid) and len(seen) < len(visible)
    assert pages == -(-len(paid) // 7)


def test_paging_defaults_clamp_and_bad_values(sim, orders):
    r = jload(call(sim, "GET", f"{API}/orders"))
    assert r["start"] == 0 and r["size"] == 25 and len(r["items"]) == 25
    assert r["next"] == f"{sim.url}{API}/orders?start=25&size=25"
    r = jload(call(sim, "GET", f"{API}/orders/?size=1000"))
    assert r["size"] == 250 and r["next"] is None and len(r["items"]) == len(orders)
    assert r["first"] == f"{sim.url}{API}/orders/?size=250&start=0"
    for bad in ("size=0", "start=-1", "is_paid=maybe", "min_create_date=gisteren", "orderby=price"):
        r = call(sim, "GET", f"{API}/orders?{bad}")
        assert r.status_code == 400 and r.json()["code"] == "400.10", bad


def test_filters(sim, orders):
    def ids(query):
        r = call(sim, "GET", f"{API}/orders?{query}&size=250")
        assert r.status_code == 200, r.text
        return [o["id"] for o in jload(r)["items"]]

    all_ids = sorted(o["id"] for o in orders)
    assert ids("is_paid=true") == [o["id"] for o in orders if o["paid"]]
    assert ids("is_paid=0") == [o["id"] for o in orders if not o["paid"]]
    assert ids("status=8") == [o["id"] for o in orders if o["status"] == 8]
    assert ids("status=8")  # the share produced at least one
    assert ids("orderby=id_desc") == all_ids[::-1]
    assert ids("orderby=create_date") == all_ids
    o = orders[10]
    assert ids(f"ordernumber={o['ordernumber']}") == [o["id"]]
    assert ids(f"paymethod_id={o['paymethod_id']}") == [x["id"] for x in orders if x["paymethod_id"] == o["paymethod_id"]]
    day = o["create_date"][:10]
    exp = [x["id"] for x in orders if x["create_date"][:10] == day]
    assert ids(f"min_create_date={day}&max_create_date={day}") == exp  # inclusive whole day
    exact = o["create_date"]
    assert ids(f"min_create_date={exact}&max_create_date={exact}") == [o["id"]]
    assert ids("is_completed=false") == []
    assert ids("unknown_param=1") == all_ids


def test_single_order_rows_and_errors(sim, orders):
    o = orders[5]
    r = call(sim, "GET", f"{API}/orders/{o['id']}")
    assert r.status_code == 200
    got = jload(r)
    # byte-identical to the fixture, except API hrefs point at the simulator
    expected = dict(o, orderrows={"href": f"{sim.url}{API}/orders/{o['id']}/orderrows/"})
    exp_json = dumps_ccv(expected).replace(
        "https:\\/\\/demo-shop.ccvshop.nl\\/api", sim.url.replace("/", "\\/") + "\\/api")
    assert r.content.decode() == exp_json
    assert list(got) == list(o)  # same key order as the fixture
    assert got["href"] == f"{sim.url}{API}/orders/{o['id']}/"
    assert b"\\/" in r.content and b"/" not in r.content.replace(b"\\/", b"")
    # trailing slash and rows
    rr = call(sim, "GET", f"{API}/orders/{o['id']}/orderrows/")
    page = jload(rr)
    assert [x["id"] for x in page["items"]] == [x["id"] for x in o["orderrows"]]
    assert all(x["order_id"] == o["id"] for x in page["items"])
    assert all(x["parent"]["href"] == f"{sim.url}{API}/orders/{o['id']}" for x in page["items"])
    assert page["items"][0]["total_price"] == o["orderrows"][0]["total_price"]
    rows_small = jload(call(sim, "GET", f"{API}/orders/{o['id']}/orderrows?size=1"))
    assert len(rows_small["items"]) == 1
    assert (rows_small["next"] is None) == (len(o["orderrows"]) == 1)
    row = o["orderrows"][-1]
    one = jload(call(sim, "GET", f"{API}/orderrows/{row['id']}/"))
    assert one["id"] == row["id"] and one["order_id"] == o["id"]
    # errors
    for target, status, code in [(f"{API}/orders/1", 500, "500.24"),
                                 (f"{API}/orders/1/orderrows", 500, "500.24"),
                                 (f"{API}/orderrows/1", 500, "500.24"),
                                 (f"{API}/products", 404, "404.20"),
                                 ("/favicon.ico", 404, "404.20")]:
        r = call(sim, "GET", target)
        assert (r.status_code, r.json()["code"]) == (status, code), target
        assert set(r.json()) == {"code", "status", "developermessage"}
    for method, target in [("POST", f"{API}/orders"), ("DELETE", f"{API}/orders/{o['id']}"),
                           ("PUT", f"{API}/orders/{o['id']}/orderrows"),
                           ("PATCH", f"{API}/orderrows/{row['id']}")]:
        r = call(sim, method, target, b'{"x":1}')
        assert (r.status_code, r.json()["code"]) == (405, "405.10"), (method, target)
    assert [e for e in sim.request_log if e[2] == 405]


def test_serves_verbatim_sample_like_order():
    """An order with an `orderrows` row from another order: order_id/parent rewritten."""
    o = next(generate_orders(1, seed=11, start_id=339323562))
    row = dict(o["orderrows"][0], id=648228528, order_id=339493812,
               parent={"href": "https://bonapp1.ccvshop.nl/api/rest/v1/orders/339493812"})
    o["orderrows"] = [row]
    with CCVShopSimulator(orders=[o], clock=lambda: T0) as s:
        page = jload(call(s, "GET", f"{API}/orders/339323562/orderrows"))
        (item,) = page["items"]
        assert item["order_id"] == 339323562
        assert item["parent"]["href"] == f"{s.url}{API}/orders/339323562"
        assert page["next"] is None


# ---------------------------------------------------------------- rate limits
def test_rate_limit_fixed_minute(orders, clock):
    with CCVShopSimulator(orders=orders[:3], clock=clock, rate_limit_per_minute=5,
                          retry_after=True) as s:
        for _ in range(5):
            assert call(s, "GET", f"{API}/orders").status_code == 200
        r = call(s, "GET", f"{API}/orders")
        assert r.status_code == 429 and r.json()["code"] == "429.10"
        assert r.headers["Retry-After"] == "60"
        # other resource has its own counter
        assert call(s, "GET", f"{API}/orderrows/{orders[0]['orderrows'][0]['id']}").status_code == 200
        clock.t += 59
        assert call(s, "GET", f"{API}/orders").status_code == 429
        clock.t += 1  # next UTC minute
        assert call(s, "GET", f"{API}/orders").status_code == 200
    with CCVShopSimulator(orders=orders[:3], clock=clock, rate_limit_per_minute=None,
                          total_limit=3) as s:
        for _ in range(3):
            assert call(s, "GET", f"{API}/orders").status_code == 200
        r = call(s, "GET", f"{API}/orderrows/1")
        assert r.status_code == 429 and r.json()["code"] == "429.11"
        assert "Retry-After" not in r.headers


# ---------------------------------------------------------------- faults
def test_fault_injection(sim):
    t = f"{API}/orders?size=2"
    f = sim.inject("5xx", count=1)
    r = call(sim, "GET", t)
    assert r.status_code == 500 and r.json()["code"].startswith("500")
    assert call(sim, "GET", t).status_code == 200 and f.hits == 1

    sim.inject("429", count=2)
    assert [call(sim, "GET", t).status_code for _ in range(3)] == [429, 429, 200]

    sim.inject("slow", count=1, delay=0.6)
    with pytest.raises(requests.exceptions.ReadTimeout):
        call(sim, "GET", t, timeout=0.2)
    sim.inject("slow", count=1, delay=0.2)
    t0 = time.monotonic()
    assert call(sim, "GET", t).status_code == 200 and time.monotonic() - t0 >= 0.2

    sim.inject("truncated", count=1)
    with pytest.raises((requests.exceptions.ChunkedEncodingError,
                        requests.exceptions.ConnectionError)):
        call(sim, "GET", t)
    sim.inject("truncated", count=1, mode="cut")
    r = call(sim, "GET", t)
    with pytest.raises(ValueError):
        json.loads(r.content)

    sim.inject("drop", count=1, path_contains="/orderrows")
    assert call(sim, "GET", t).status_code == 200  # path does not match
    with pytest.raises(requests.exceptions.ConnectionError):
        call(sim, "GET", f"{API}/orders/{sim.order_ids[0]}/orderrows")
    assert sim.request_log[-1][2] == 0

    sim.inject("5xx", rate=0.5)
    codes = [call(sim, "GET", t).status_code for _ in range(20)]
    assert 0 < codes.count(500) < 20 and set(codes) <= {200, 500}
    sim.clear_faults()
    assert call(sim, "GET", t).status_code == 200


# ---------------------------------------------------------------- webhooks
class _Receiver:
    def __init__(self):
        self.received: list[tuple[dict, bytes]] = []
        self.event = threading.Event()
        rec = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                rec.received.append((dict(self.headers), body, self.path))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()
                rec.event.set()

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_patch_paid_fires_webhook(sim, orders):
    rec = _Receiver()
    try:
        body = json.dumps({"event": "orders.updated.ispaid", "address": rec.url,
                           "is_active": True}).encode()
        r = call(sim, "POST", f"{API}/webhooks", body)
        assert r.status_code == 201, r.text
        hook = r.json()
        assert set(hook) == {"href", "id", "createdate", "event", "address", "key",
                             "is_active", "parent"}
        unpaid = next(o for o in orders if not o["paid"])
        target = f"{API}/orders/{unpaid['id']}"
        r = call(sim, "PATCH", target, b'{"paid":true}')
        assert r.status_code == 204 and verify_response(r, "PATCH", target)
        assert rec.event.wait(5)
        sim.wait_webhooks()
        assert len(rec.received) == 1  # delivered once
        headers, raw, path = rec.received[0]
        payload = json.loads(raw, parse_float=Decimal)
        assert path == "/hook"
        assert payload["id"] == unpaid["id"] and payload["paid"] is True
        assert payload["order_number"] == unpaid["ordernumber"]
        assert payload["total_price"] == unpaid["total_price"]
        assert list(payload)[:7] == ["triggered_at", "href", "id", "order_number",
                                     "ordernumber_prefix", "ordernumber_full", "total_price"]
        assert payload["triggered_at"] == xdate(T0)
        xh = {k.lower(): v for k, v in headers.items()}["x-hash"]
        assert xh == hmac512(hook["key"], rec.url.encode() + b"|" + raw)
        # the change is visible through the API
        assert jload(call(sim, "GET", target))["paid"] is True
        # no change -> no webhook; set_paid(False) -> a second one
        call(sim, "PATCH", target, b'{"paid":true}')
        sim.wait_webhooks()
        assert len(rec.received) == 1
        sim.set_paid(unpaid["id"], False)
        sim.wait_webhooks()
        assert len(rec.received) == 2 and json.loads(rec.received[1][1])["paid"] is False
        assert sim.webhook_log[-1]["status"] == 200
        # bad body
        r = call(sim, "PATCH", target, b'{"paid":"yes"}')
        assert r.status_code == 400 and r.json()["code"] == "400.10"
    finally:
        rec.close()


# ---------------------------------------------------------------- generator
def test_generator_deterministic(tmp_path):
    a = [dumps_ccv(o) for o in generate_orders(40, seed=5)]
    b = [dumps_ccv(o) for o in generate_orders(40, seed=5)]
    c = [dumps_ccv(o) for o in generate_orders(40, seed=6)]
    assert a == b and a != c
    files = generate_fixture_dir(tmp_path, 12, seed=5)
    assert [f.name for f in files] == sorted(f.name for f in files)
    loaded = load_fixture_dir(tmp_path)
    assert [dumps_ccv(o) for o in loaded] == a[:12]
    assert loaded == list(generate_orders(12, seed=5))
    assert files[0].read_text() == a[0]


def test_dumps_ccv():
    assert dumps_ccv({"a": "x/y é", "n": [Decimal("590.00"), Decimal("102.40"),
                                            Decimal("14.95"), Decimal("-0.00"), 3, None, True]}) \
        == '{"a":"x\\/y \\u00e9","n":[590,102.4,14.95,0,3,null,true]}'
    assert dumps_ccv(Decimal("1E+3")) == "1000"


def _recompute(o):
    groups: dict = {}
    t_rows = Decimal(0)
    for r in o["orderrows"]:
        attr = sum((Decimal(a["price"]) for a in r["attributes"]), Decimal(0))
        tp = q2(Decimal(r["count"]) * (Decimal(r["price"]) - Decimal(r["discount"]) + attr))
        assert tp == r["total_price"], (o["id"], r["id"])
        t_rows += tp
        groups[r["tax"]] = groups.get(r["tax"], 0) + tp
    other = (Decimal(o["total_shipping"]) + o["paymethod_costs"] + o["extra_costs"]
             - o["total_discounts"] - o["credit_point_discount"])
    groups[o["shipping_tax_percentage"]] = groups.get(o["shipping_tax_percentage"], 0) + other
    if o["order_row_taxes_included"]:
        tax = sum(q2(Decimal(b) * r / (100 + r)) for r, b in groups.items())
        total = t_rows + other
    else:
        tax = sum(q2(Decimal(b) * r / 100) for r, b in groups.items())
        total = t_rows + other + tax
    return t_rows, total, tax, groups


def test_generator_totals_and_mix():
    orders = list(generate_orders(300, seed=2))
    seen = set()
    emails: dict = {}
    for o in orders:
        t_rows, total, tax, groups = _recompute(o)
        assert o["total_orderrow_price"] == t_rows
        assert o["total_price"] == total, o["id"]
        assert o["total_tax"] == tax, o["id"]
        assert o["taxes_included"] is True
        assert o["total_discounts"] + o["credit_point_discount"] < t_rows
        assert all(b >= 0 for b in groups.values())
        assert o["paid"] is True and o["is_completed"] is True and 1 <= o["status"] <= 7
        assert 1 <= len(o["orderrows"]) <= 8
        rates = {r["tax"] for r in o["orderrows"]}
        if rates == {21}:
            seen.add("21only")
        if rates == {9, 21}:
            seen.add("mixed")
        if o["total_shipping"]:
            seen.add("shipping")
        if o["paymethod_costs"]:
            seen.add("paycost")
        if o["extra_costs"] > 0:
            seen.add("extra+")
        if o["extra_costs"] < 0:
            seen.add("extra-")
        if o["discountcoupon"]["code"]:
            seen.add("coupon")
            assert o["total_discounts"] > 0
        if o["credit_point_discount"]:
            seen.add("credit")
        cust = o["customer"]
        cc = cust["billingaddress"]["country_code"]
        if cust["customertype"] == "b2b" and cust["kvk"] and cust["btw"].startswith("NL"):
            seen.add("b2b")
        if o["is_intra_community_order"]:
            seen.add("icp")
            assert rates == {0} and cust["btw"].startswith(cc) and cc != "NL"
        if rates == {0} and cc in ("US", "CH", "NO", "GB"):
            seen.add("export")
        if cc in ("BE", "DE") and rates & {21} and cust["customertype"] == "b2c":
            seen.add("eu_consumer")
        if any(Decimal(r["count"]) % 1 for r in o["orderrows"]):
            seen.add("fractional")
        if o["ordernumber_prefix"]:
            seen.add("prefix")
            assert o["ordernumber_full"] == f"{o['ordernumber_prefix']}-{o['ordernumber']}"
        if o["user"] is None:
            seen.add("guest")
        else:
            assert isinstance(o["user"]["id"], str)
        if not o["order_row_taxes_included"]:
            seen.add("exvat")
        if any(r["attributes"] for r in o["orderrows"]):
            seen.add("attributes")
        name = cust["billingaddress"]["full_name"] + cust["billingaddress"]["company"]
        if any(ord(ch) > 127 for ch in name):
            seen.add("accent")
        if "&" in cust["billingaddress"]["company"] or '"' in cust["billingaddress"]["company"]:
            seen.add("amp_quote")
        key = o["customer"]["email"].strip().lower()
        emails.setdefault(key, set()).add(o["customer"]["email"])
    assert any(len(v) > 1 for v in emails.values())  # repeat customers, case/whitespace
    assert len(emails) < len(orders)
    want = {"21only", "mixed", "shipping", "paycost", "extra+", "extra-", "coupon", "credit",
            "b2b", "icp", "export", "eu_consumer", "fractional", "prefix", "guest", "exvat",
            "attributes", "accent", "amp_quote"}
    assert want <= seen, want - seen
    ids = [o["id"] for o in orders]
    dates = [o["create_date"] for o in orders]
    assert ids == sorted(set(ids)) and ids[0] == 400000000
    assert dates == sorted(dates) and all(d.endswith("Z") and len(d) == 20 for d in dates)
    assert dates[0].startswith("2026-01-01")


def test_generator_size_and_full_fields():
    orders = list(generate_orders(100, seed=3))
    sizes = [len(dumps_ccv(o).encode()) for o in orders]
    avg = sum(sizes) / len(sizes)
    assert 8 * 1024 <= avg <= 14 * 1024, avg
    sample_order_keys = {
        "href", "id", "ordernumber_prefix", "ordernumber", "ordernumber_full", "invoicenumber",
        "transaction_id", "create_date", "deliver_method", "deliver_date", "take_out_window",
        "is_platform_sale", "orderedinlng", "status", "is_completed", "paid",
        "safety_deposit_returned", "paymethod_id", "paymethod", "paymethod_label",
        "taxes_included", "order_row_taxes_included", "shipping_taxes_included",
        "shipping_tax_percentage", "is_intra_community_order", "total_orderrow_price",
        "total_shipping", "total_discounts", "total_price", "currency", "total_tax",
        "total_weight", "extra_payment_option", "extra_payment_option_price",
        "extra_payment_option_no_sentprice", "extra_payment_option_pay_on_pickup",
        "extra_price", "paymethod_costs", "credit_point_discount", "extra_costs",
        "extra_costs_description", "track_and_trace_code", "track_and_trace_carrier",
        "track_and_trace_deeplink", "reservationnumber", "delivery_option", "user",
        "discountcoupon", "customer", "pickup_address", "packing_slip_deeplink", "orderrows",
        "ordernotes", "ordermessages", "ordernotifications", "orderaffiliatenetworks",
        "orderlabels", "invoices"}
    row_keys = {
        "href", "id", "order_id", "product_type", "product_name", "product_name_google",
        "product_number", "sub_product_number", "sub_sku_number", "sub_ean_number",
        "product_id", "product_href", "count", "price", "product_purchase_price", "discount",
        "custom_price", "tax", "unit", "weight", "memo", "package_id", "package_name",
        "stock_location", "supplier", "user_discount", "original_price", "selling_price",
        "price_without_discount", "price_without_discount_with_attributes", "total_price",
        "total_extra_option_price", "price_with_attributes", "total_price_with_attributes",
        "attributes", "uploads", "parent"}
    for o in orders:
        assert set(o) == sample_order_keys
        assert len(o["customer"]) == 39 and len(o["customer"]["billingaddress"]) == 20
        for r in o["orderrows"]:
            assert set(r) == row_keys and r["order_id"] == o["id"]


def test_shares():
    orders = list(generate_orders(200, seed=4, unpaid_share=0.1, cancelled_share=0.05))
    unpaid = [o for o in orders if not o["paid"]]
    cancelled = [o for o in orders if o["status"] == 8]
    assert 5 <= len(unpaid) <= 40 and 1 <= len(cancelled) <= 25
    # shares use their own random stream: the other orders are unchanged
    base = list(generate_orders(200, seed=4))
    same = [a for a, b in zip(orders, base) if a["paid"] and a["status"] != 8]
    assert all(a == b for a, b in zip(orders, base) if a["paid"] and a["status"] != 8)
    assert len(same) == 200 - len(unpaid) - len(cancelled)


def test_load_fixture_dir_decimal(tmp_path):
    (tmp_path / "b.json").write_text('{"id": 2, "total_price": 14.95, "orderrows": []}')
    (tmp_path / "a.json").write_text('{"id": 1, "total_price": 590, "orderrows": [{"id": 3, "count": 1.5}]}')
    (tmp_path / "notes.txt").write_text("ignored")
    got = load_fixture_dir(tmp_path)
    assert [o["id"] for o in got] == [1, 2]
    assert got[1]["total_price"] == Decimal("14.95") and isinstance(got[1]["total_price"], Decimal)
    assert isinstance(got[0]["orderrows"][0]["count"], decimal.Decimal)
