"""HttpSource and the paginators, against the CCV Shop simulator and tiny loopback servers."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jinja2
import pytest

from engine.io.http.pagination import (NextLinkPaginator, OffsetPaginator, PagePaginator,
                                    PageRequest, PaginationError, build_paginator, dig,
                                    register_paginator, registered_paginator_kinds)
from engine.io.sources.http import HttpSource

sim_mod = pytest.importorskip("engine.simulators.ccvshop")
data_mod = pytest.importorskip("engine.simulators.ccvshop_data")
CCVShopSimulator = sim_mod.CCVShopSimulator

_env = jinja2.Environment(undefined=jinja2.StrictUndefined)


def render(template: str, context: dict) -> str:
    return _env.from_string(template).render(**context)


class FakeClock:
    def __init__(self, start: float | None = None):
        self.t = float(start if start is not None else time.time())
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.t += max(0.0, seconds)


def source_config(url, *, size=25, row_size=250, rate=150, **http_over):
    http = {
        "base_url": url,
        "headers": {"Accept": "application/vnd.verto.webshop+json"},
        "timeout": {"connect": 2, "read": 5},
        "retries": {"attempts": 4, "backoff": 0.01, "max_backoff": 0.05},
        "auth": {"kind": "hmac", "algorithm": "sha512", "public": "demo", "secret": "demo",
                 "sign": "{public}|{method}|{uri}|{body}|{date}",
                 "headers": {"x-public": "{public}", "x-date": "{date}", "x-hash": "{signature}"},
                 "verify_response": True},
        "rate_limit": {"requests": rate, "per_seconds": 60, "resource_prefix": "/api/rest/v1/"},
        "on_429": {"wait": "next_window", "attempts": 3},
        "not_found": {"status": [404], "codes": ["500.24"]},
        "error_body": {"code": "code", "message": "developermessage"},
    }
    http.update(http_over)
    return {
        "http": http,
        "records": {
            "path": "/api/rest/v1/orders",
            "params": {"is_paid": "true", "min_create_date": "{{ window.start }}",
                       "max_create_date": "{{ window.end }}", "orderby": "id"},
            "items": "items",
            "paginate": {"kind": "next_link", "next": "next", "size_param": "size", "size": size,
                         "max_pages": 10000},
            "expand": {"orderrows": {
                "path": "/api/rest/v1/orders/{{ record.id }}/orderrows", "items": "items",
                "paginate": {"kind": "next_link", "next": "next", "size_param": "size",
                             "size": row_size}}},
        },
        "lookup": {"path": "/api/rest/v1/orders/{{ id }}"},
    }


@pytest.fixture(scope="module")
def orders60():
    return list(data_mod.generate_orders(60, seed=7))


def _strip(order):
    """Compare shape-independent content: hrefs are rewritten by the simulator."""
    return {k: v for k, v in order.items() if k not in ("orderrows", "href")}


# -- paginators (pure) ------------------------------------------------------------------------

def test_dig():
    assert dig({"a": {"b": [1, {"c": 2}]}}, "a.b.1.c") == 2
    assert dig({"a": 1}, "") == {"a": 1}
    assert dig({"a": 1}, "x.y") is None


def test_next_link_paginator_stops_and_guards():
    p = build_paginator({"kind": "next_link", "next": "links.next", "size_param": "size",
                         "size": 2, "max_pages": 3}, origin="https://shop.example")
    req = p.first("/o", [("a", "1"), ("size", "9")])
    assert req == PageRequest(path="/o", params=(("a", "1"), ("size", "2")))
    req2 = p.next({"links": {"next": "https://shop.example/o?a=1&start=2"}}, req, [1, 2])
    assert req2.url == "https://shop.example/o?a=1&start=2"
    assert p.next({"links": {"next": None}}, req2, [1]) is None
    assert p.next({}, req2, [1]) is None
    assert p.next({"links": {"next": "https://shop.example/o?z"}}, req2, []) is None  # empty page
    # repeated link
    with pytest.raises(PaginationError, match="a second time"):
        p.next({"links": {"next": "https://shop.example/o?a=1&start=2"}}, req2, [1])
    # relative links are resolved against the origin
    q = build_paginator({"kind": "next_link"}, origin="https://shop.example")
    r = q.first("/o")
    assert q.next({"next": "/o?start=5"}, r, [1]).url == "https://shop.example/o?start=5"


def test_next_link_to_another_host_is_an_error():
    p = build_paginator({"kind": "next_link"}, origin="https://shop.example")
    r = p.first("/o")
    for bad in ("https://evil.example/o?start=2", "http://shop.example/o?start=2",
                "https://shop.example:8443/o"):
        with pytest.raises(PaginationError, match="refusing to follow a next link"):
            p.next({"next": bad}, r, [1])


def test_page_cap():
    p = build_paginator({"kind": "next_link", "max_pages": 2}, origin="https://s.example")
    r = p.first("/o")
    r = p.next({"next": "https://s.example/o?p=2"}, r, [1])
    with pytest.raises(PaginationError, match="page cap of 2"):
        p.next({"next": "https://s.example/o?p=3"}, r, [1])


def test_offset_and_page_paginators():
    p = build_paginator({"kind": "offset", "start_param": "offset", "size_param": "limit",
                         "size": 2})
    assert isinstance(p, OffsetPaginator)
    r = p.first("/o", [("q", "x")])
    assert r.params == (("q", "x"), ("offset", "0"), ("limit", "2"))
    r = p.next({}, r, [1, 2])
    assert r.params == (("q", "x"), ("offset", "2"), ("limit", "2"))
    assert p.next({}, r, [3]) is None  # short page
    p = build_paginator({"kind": "page", "page_param": "p", "size_param": "n", "size": 2,
                         "first_page": 0, "stop_on_short_page": False})
    assert isinstance(p, PagePaginator)
    r = p.first("/o")
    assert r.params == (("p", "0"), ("n", "2"))
    r = p.next({}, r, [1])  # short, but told not to stop on short pages
    assert r.params == (("p", "1"), ("n", "2"))
    assert p.next({}, r, []) is None


@pytest.mark.parametrize("cfg,message", [
    ({"kind": "cursor"}, "unknown paginate kind 'cursor'; known kinds:"),
    ({"kind": "offset"}, "needs 'size'"),
    ({"kind": "page", "size": 0}, "at least 1"),
    ({"kind": "next_link", "max_pages": 0}, "max_pages must be at least 1"),
])
def test_paginator_config_errors(cfg, message):
    with pytest.raises(PaginationError) as info:
        build_paginator(cfg)
    assert message in str(info.value)


def test_register_paginator():
    class Cursor(NextLinkPaginator):
        kind = "cursor"

    register_paginator("cursor", Cursor)
    try:
        assert "cursor" in registered_paginator_kinds()
        assert isinstance(build_paginator({"kind": "cursor"}), Cursor)
    finally:
        from engine.io.http import pagination
        pagination._REGISTRY.pop("cursor", None)


# -- against the simulator -------------------------------------------------------------------

def test_multi_page_orders_and_rows(orders60):
    with CCVShopSimulator(orders=orders60) as sim:
        src = HttpSource(source_config(sim.url, size=25, row_size=3), render)
        got = list(src.records({}))
        assert [o["id"] for o in got] == sorted(o["id"] for o in orders60)
        by_id = {o["id"]: o for o in orders60}
        for rec in got:
            want = by_id[rec["id"]]
            assert isinstance(rec["orderrows"], list)
            assert [r["id"] for r in rec["orderrows"]] == [r["id"] for r in want["orderrows"]]
            assert rec["total_price"] == want["total_price"]
            assert set(want) <= set(rec)  # same shape as the fixture layout
        targets = [t for _, t, _ in sim.request_log]
        assert targets[0] == "/api/rest/v1/orders?is_paid=true&orderby=id&size=25"
        order_pages = [t for t in targets if t.startswith("/api/rest/v1/orders?")]
        assert len(order_pages) == 3  # 25 + 25 + 10, no empty last page
        multi_row = [o for o in orders60 if len(o["orderrows"]) > 3]
        assert any("orderrows?size=3&start=3" in t for t in targets) and multi_row
        stats = src.stats
        assert stats["records"] == 60 and stats["responses_429"] == 0
        assert stats["requests"] == len(sim.request_log)


def test_window_params_render_and_empty_ones_are_dropped(orders60):
    with CCVShopSimulator(orders=orders60) as sim:
        src = HttpSource(source_config(sim.url, size=250), render)
        first_day = list(src.records({"start": "2026-01-01", "end": "2026-01-01"}))
        assert 0 < len(first_day) < 60
        assert all(o["create_date"].startswith("2026-01-01") for o in first_day)
        assert sim.request_log[0][1] == ("/api/rest/v1/orders?is_paid=true&min_create_date=2026-01-01"
                                         "&max_create_date=2026-01-01&orderby=id&size=250")
        # the same source dedupes by id across calls within one run
        again = list(src.records({"start": "2026-01-01"}))
        assert {o["id"] for o in again}.isdisjoint({o["id"] for o in first_day})
        assert src.stats["duplicates"] == len(first_day)


def test_lookup(orders60):
    with CCVShopSimulator(orders=orders60) as sim:
        src = HttpSource(source_config(sim.url), render)
        oid = orders60[5]["id"]
        rec = src.lookup(oid)
        assert rec["id"] == oid and len(rec["orderrows"]) == len(orders60[5]["orderrows"])
        assert src.lookup(123) is None
        assert src.lookup("not-a-number") is None
        # an id from outside cannot change the path it is put in
        assert src.lookup(f"{oid}/orderrows") is None
        assert sim.request_log[-1][1] == f"/api/rest/v1/orders/{oid}%2Forderrows"
        assert src.stats["not_found"] == 3


def test_429_from_a_small_server_limit_is_handled_without_failure(orders60):
    clock = FakeClock(1_800_000_000.0)
    with CCVShopSimulator(orders=orders60[:30], rate_limit_per_minute=20, clock=clock) as sim:
        # the client believes it may do 40/min: the server will say 429 and we wait it out
        src = HttpSource(source_config(sim.url, size=10, rate=40), render, clock=clock,
                         sleep=clock.sleep)
        got = list(src.records({}))
        assert len(got) == 30
        assert src.stats["responses_429"] > 0
        assert all(len(o["orderrows"]) > 0 for o in got)


def test_client_limit_keeps_clear_of_429s(orders60):
    clock = FakeClock(1_800_000_000.0 + 33.3)
    with CCVShopSimulator(orders=orders60[:30], rate_limit_per_minute=20, clock=clock) as sim:
        src = HttpSource(source_config(sim.url, size=10, rate=20), render, clock=clock,
                         sleep=clock.sleep)
        got = list(src.records({}))
        assert len(got) == 30
        assert src.stats["responses_429"] == 0
        assert src.stats["rate_limit_waits"] > 0
        assert src.stats["requests"] == 33


def test_5xx_and_slow_responses_every_order_still_fetched(orders60):
    clock = FakeClock()
    with CCVShopSimulator(orders=orders60, clock=clock, seed=5) as sim:
        sim.inject("5xx", rate=0.05)
        sim.inject("slow", count=3, delay=0.5)
        sim.inject("truncated", count=1, mode="short")
        cfg = source_config(sim.url, size=25, timeout={"connect": 2, "read": 0.25},
                            retries={"attempts": 6, "backoff": 0.01, "max_backoff": 0.05})
        src = HttpSource(cfg, render, clock=clock, sleep=clock.sleep)
        got = list(src.records({}))
        assert sorted(o["id"] for o in got) == sorted(o["id"] for o in orders60)
        assert sum(len(o["orderrows"]) for o in got) == sum(len(o["orderrows"]) for o in orders60)
        assert src.stats["retries"] >= 4  # 3 slow + 1 truncated + the random 5xx
        assert any(s == 500 for _, _, s in sim.request_log)


# -- tiny servers for misbehaving APIs ----------------------------------------------------------

class _PagedServer:
    """Serves ``pages[path_and_query] -> JSON object`` (``{base}`` is replaced by our URL)."""

    def __init__(self, pages: dict):
        outer = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def do_GET(self):  # noqa: N802
                outer.hits.append(self.path)
                page = pages.get(self.path)
                if page is None:
                    body, status = b'{"code":"404.20","status":404,"developermessage":"no"}', 404
                else:
                    body, status = json.dumps(page).replace("{base}", outer.url).encode(), 200
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.hits: list[str] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def _plain_config(url, paginate=None):
    return {"http": {"base_url": url, "retries": {"attempts": 2, "backoff": 0.01}},
            "records": {"path": "/items", "items": "items",
                        "paginate": paginate or {"kind": "next_link", "next": "next"}}}


def test_repeated_next_link_is_a_loop_error():
    pages = {
        "/items": {"items": [{"id": 1}], "next": "{base}/items?start=1"},
        "/items?start=1": {"items": [{"id": 2}], "next": "{base}/items?start=1"},
    }
    with _PagedServer(pages) as srv:
        src = HttpSource(_plain_config(srv.url), render)
        got = []
        with pytest.raises(PaginationError) as info:
            for rec in src.records({}):
                got.append(rec["id"])
        assert "a second time" in str(info.value) and "/items?start=1" in str(info.value)
        assert got == [1, 2]
        assert srv.hits == ["/items", "/items?start=1"]


def test_next_link_to_a_foreign_host_is_refused_and_dupes_are_skipped():
    pages = {
        "/items": {"items": [{"id": 1}, {"id": 2}], "next": "{base}/items?p=2"},
        "/items?p=2": {"items": [{"id": 2}, {"id": "3"}], "next": "https://evil.example/items?p=3"},
    }
    with _PagedServer(pages) as srv:
        src = HttpSource(_plain_config(srv.url), render)
        got = []
        with pytest.raises(PaginationError, match="evil.example"):
            for rec in src.records({}):
                got.append(rec["id"])
        assert got == [1, 2, "3"]
        assert src.stats["duplicates"] == 1
        assert srv.hits == ["/items", "/items?p=2"]


def test_offset_pagination_over_http():
    pages = {
        "/items?start=0&size=2": {"items": [{"id": 1}, {"id": 2}]},
        "/items?start=2&size=2": {"items": [{"id": 3}, {"id": 4}]},
        "/items?start=4&size=2": {"items": [{"id": 5}]},
    }
    with _PagedServer(pages) as srv:
        src = HttpSource(_plain_config(srv.url, {"kind": "offset", "size": 2}), render)
        assert [r["id"] for r in src.records({})] == [1, 2, 3, 4, 5]


def test_malformed_pages_give_clear_errors():
    from engine.errors import SourceError
    pages = {"/items": {"items": {"id": 1}}}
    with _PagedServer(pages) as srv:
        with pytest.raises(SourceError, match="not a list"):
            list(HttpSource(_plain_config(srv.url), render).records({}))
    pages = {"/items": {"items": [{"name": "no id"}]}}
    with _PagedServer(pages) as srv:
        with pytest.raises(SourceError, match="has no 'id' field"):
            list(HttpSource(_plain_config(srv.url), render).records({}))
