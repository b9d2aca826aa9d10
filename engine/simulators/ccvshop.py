"""CCV Shop REST API simulator: a real HTTP server on loopback (stdlib only).

Contract: /work/shared/spec/ccvshop-api.md (sections referenced as §n).  Decisions where the
spec is silent are marked ``# spec: our choice``.

Usage in tests::

    with CCVShopSimulator(orders=load_fixture_dir(path)) as sim:
        requests.get(sim.url + "/api/rest/v1/orders", headers=signed_headers(...))

Invoices and returns (§9, read-only, for credit notes): ``sim.add_invoice({...})`` (``type``
debit or credit) and ``sim.add_return({...})`` seed ``GET /invoices`` and ``GET /returns``;
``sim.set_return_status(id, 8)`` credits a return and fires ``returns.updated``.

CLI::

    python -m engine.simulators.ccvshop --generate 500 --port 8765
    python -m engine.simulators.ccvshop --fixtures tests/fixtures/ccvshop
"""
from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import hmac
import json
import math
import re
import sys
import threading
import time
import urllib.parse
import urllib.request
from decimal import Decimal
from http.server import BaseHTTPRequestHandler
from typing import Any, Callable, Iterable

from engine.simulators._server import BaseFault, SimHandler, Simulator, drop_connection, read_body
from engine.simulators.ccvshop_appstore import RETURN_PATH, AppStoreMixin
from engine.simulators.ccvshop_data import dumps_ccv, generate_orders, load_fixture_dir

__all__ = ["CCVShopSimulator", "Fault", "sign", "main"]

API_PREFIX = "/api/rest/v1/"
DEFAULT_SIZE = 25  # spec: our choice (§6)
MAX_SIZE = 250  # spec: our choice (§6): larger sizes are clamped and echoed
WRITE_LIMIT_PER_MINUTE = 100  # §7 [likely]
FAULT_KINDS = ("5xx", "slow", "truncated", "429", "drop")
ORDER_SUBCOLLECTIONS = ("ordernotes", "ordermessages", "ordernotifications",
                        "orderaffiliatenetworks", "orderlabels", "invoices")
BILLING_COLLECTIONS = ("invoices", "returns")  # §9, read-only
INVOICE_TYPES = ("debit", "credit")
INVOICE_STATUSES = ("paid", "unpaid", "reimbursed")
RETURN_STATUS_COMPLETED, RETURN_STATUS_CREDITED = 7, 8
WEBHOOK_EVENTS = ("orders.created", "orders.updated.ispaid", "orders.updated.status",
                  "orders.updated.trackandtrace", "returns.created", "returns.updated",
                  "returns.deleted")

_DATE_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:?\d{2})$")
_ABS_HREF_RE = re.compile(r"^https?://[^/]+/api/rest/v1/")


def sign(secret: str, *fields: str) -> str:
    """``hex(HMAC-SHA512(secret, "|".join(fields)))`` (UTF-8; spec: our choice)."""
    msg = "|".join(fields).encode("utf-8")
    return hmac.new(secret.encode("utf-8"), msg, hashlib.sha512).hexdigest()


def _sign_bytes(secret: str, prefix: str, body: bytes, suffix: str) -> str:
    # body as raw bytes: the hash covers the exact bytes sent/received
    msg = prefix.encode("utf-8") + b"|" + body + b"|" + suffix.encode("utf-8")
    return hmac.new(secret.encode("utf-8"), msg, hashlib.sha512).hexdigest()


def parse_x_date(value: str) -> float | None:
    """Epoch seconds of an ``x-date`` header, or None if not an accepted form (§2:
    ``…Z``, ``…+00:00``, ``…+0000``, ``…54.123Z``; any other explicit offset too)."""
    m = _DATE_RE.match(value.strip())
    if not m:
        return None
    y, mo, d, hh, mi, ss, frac, tz = m.groups()
    try:
        dt = _dt.datetime(int(y), int(mo), int(d), int(hh), int(mi), int(ss),
                          tzinfo=_dt.timezone.utc)
    except ValueError:
        return None
    ts = dt.timestamp()
    if frac:
        ts += int(frac) / 10 ** len(frac)
    if tz != "Z":
        sign_ = 1 if tz[0] == "+" else -1
        digits = tz[1:].replace(":", "")
        ts -= sign_ * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)
    return ts


def _fmt_date(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _parse_bool(v: str) -> bool:
    lv = v.strip().lower()
    if lv in ("true", "1"):  # spec: our choice — true/false, also 1/0
        return True
    if lv in ("false", "0"):
        return False
    raise ValueError(f"not a boolean: {v!r}")


def _parse_filter_date(v: str, end_of_day: bool) -> float:
    """``YYYY-MM-DD`` (inclusive whole day, UTC), ``YYYY-MM-DD HH:MM:SS`` or ISO 8601."""
    s = v.strip()
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", s):
        d = _dt.datetime.strptime(s, "%Y-%m-%d").replace(tzinfo=_dt.timezone.utc)
        ts = d.timestamp()
        return ts + 86399 if end_of_day else ts
    parsed = parse_x_date(s)
    if parsed is not None:
        return parsed
    s2 = s.replace(" ", "T")
    try:
        d = _dt.datetime.fromisoformat(s2.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"not a date: {v!r}") from None
    if d.tzinfo is None:
        d = d.replace(tzinfo=_dt.timezone.utc)  # spec: our choice — naive = UTC
    return d.timestamp()


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str,
                 signer: tuple[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.signer = signer  # (public, secret) when the key is known: the error is signed


class Fault(BaseFault):
    """An injected fault rule.  ``count``: apply to the next N matching requests (then
    expire); ``rate``: apply with this probability (seeded); neither: every matching request
    until ``clear_faults()``; both: with probability ``rate`` until it fired ``count`` times."""

    KINDS = FAULT_KINDS


class _Handler(SimHandler):
    disable_nagle_algorithm = True  # see SimHandler: no ~40 ms delayed-ACK wait per request
    server_version = "CCVShopSimulator/1.0"


class CCVShopSimulator(AppStoreMixin, Simulator):
    """In-process CCV Shop API on loopback.  See the module docstring and the spec."""

    handler_class = _Handler  # served by LoopbackServer: start/stop/with/url
    thread_name = "ccvshop-sim"

    def __init__(self, orders: Iterable[dict] = (), *, keys: dict[str, str] | None = None,
                 rate_limit_per_minute: int | None = 150,
                 write_rate_limit_per_minute: int | None = WRITE_LIMIT_PER_MINUTE,
                 total_limit: int | None = None, clock: Callable[[], float] = time.time,
                 skew: float = 300, retry_after: bool = False, host: str = "127.0.0.1",
                 port: int = 0, seed: int = 0, rewrite_hrefs: bool = True,
                 sign_errors: bool = True, webhook_timeout: float = 5.0):
        super().__init__(host, port, seed)
        self.keys = dict(keys if keys is not None else {"demo": "demo"})
        self.rate_limit_per_minute = rate_limit_per_minute
        self.write_rate_limit_per_minute = write_rate_limit_per_minute
        self.total_limit = total_limit
        self.clock = clock
        self.skew = skew
        self.retry_after = retry_after
        self.rewrite_hrefs = rewrite_hrefs
        self.sign_errors = sign_errors  # spec: our choice — also sign errors when key known
        self.webhook_timeout = webhook_timeout
        self.webhook_log: list[dict] = []
        self._counters: dict[tuple, int] = {}
        self._orders: dict[int, dict] = {}  # id -> order without the rows list
        self._rows: dict[int, list[dict]] = {}  # order id -> rows
        self._row_index: dict[int, tuple[int, int]] = {}  # row id -> (order id, position)
        self._cache: dict[tuple[int, str], str] = {}  # (order id, base) -> JSON
        self._webhooks: dict[int, dict] = {}
        self._next_webhook_id = 1
        self._webhook_threads: list[threading.Thread] = []
        self._invoices: dict[int, dict] = {}  # §9: id -> invoice (debit or credit)
        self._returns: dict[int, dict] = {}  # §9: id -> return (read-only in the API)
        self._init_appstore()
        for o in orders:
            self.add_order(o)

    # ------------------------------------------------------------------ data
    def add_order(self, order: dict) -> None:
        """Add (or replace) an order in the fixture layout (``orderrows`` = list of rows)."""
        o = _copy(order)
        rows = o.get("orderrows")
        if not isinstance(rows, list):
            rows = []
        o["orderrows"] = None  # keeps the key's position; served as the link object
        oid = int(o["id"])
        with self._lock:
            old = self._rows.get(oid)
            if old:
                for r in old:
                    self._row_index.pop(int(r["id"]), None)
            self._orders[oid] = o
            self._rows[oid] = rows
            for i, r in enumerate(rows):
                self._row_index[int(r["id"])] = (oid, i)
            self._invalidate(oid)

    def get_order(self, order_id: int) -> dict:
        """A deep copy of the stored order in the fixture layout."""
        with self._lock:
            o = _copy(self._orders[int(order_id)])
            o["orderrows"] = _copy(self._rows[int(order_id)])  # same key position
            return o

    @property
    def order_ids(self) -> list[int]:
        with self._lock:
            return sorted(self._orders)

    def add_invoice(self, invoice: dict) -> dict:
        """Add (or replace) an invoice of §9: needs ``id``, ``order_id``, ``type`` (debit or
        credit), ``total_price_inc_tax`` and ``total_price_exc_tax``; ``ordernumber`` is taken
        from the order, ``status`` defaults to paid (credit: reimbursed), ``create_date`` to the
        clock, ``invoicenumber_full`` to ``"<prefix>-<id>"``.  Returns the stored copy."""
        inv = _copy(invoice)
        if inv.get("type") not in INVOICE_TYPES:
            raise ValueError(f"invoice type must be one of {INVOICE_TYPES}, got {inv.get('type')!r}")
        oid = int(inv["order_id"])
        with self._lock:
            order = self._orders.get(oid)
            if order is None:
                raise ValueError(f"invoice {inv.get('id')!r}: no order {oid} in the simulator")
            inv.setdefault("ordernumber", order.get("ordernumber"))
            inv.setdefault("status", "reimbursed" if inv["type"] == "credit" else "paid")
            if inv["status"] not in INVOICE_STATUSES:
                raise ValueError(f"invoice status must be one of {INVOICE_STATUSES}")
            inv.setdefault("create_date", _fmt_date(self.clock()))
            prefix = order.get("invoicenumber_prefix") or "F"
            inv.setdefault("invoicenumber_full", f"{prefix}-{inv['id']}")
            self._invoices[int(inv["id"])] = inv
            return _copy(inv)

    def add_return(self, ret: dict) -> dict:
        """Add (or replace) a return of §9: needs ``id`` and ``order_id``; ``status`` 7
        (Completed) or 8 (Credited), default 7; ``create_date`` defaults to the clock."""
        r = _copy(ret)
        oid = int(r["order_id"])
        with self._lock:
            if oid not in self._orders:
                raise ValueError(f"return {r.get('id')!r}: no order {oid} in the simulator")
            r.setdefault("status", RETURN_STATUS_COMPLETED)
            r.setdefault("create_date", _fmt_date(self.clock()))
            self._returns[int(r["id"])] = r
            return _copy(r)

    def set_return_status(self, return_id: int, status: int) -> None:
        """Change a return's status (e.g. to 8, Credited) and fire ``returns.updated``."""
        with self._lock:
            r = self._returns[int(return_id)]
            r["status"] = status
            order = dict(self._orders[int(r["order_id"])])
        self._fire("returns.updated", order, {"return_id": r["id"], "status": status})

    def _invalidate(self, oid: int) -> None:
        for k in [k for k in self._cache if k[0] == oid]:
            del self._cache[k]

    # ------------------------------------------------------------------ lifecycle
    @property
    def api_root(self) -> str:
        return self.url + "/api/rest/v1"

    # ------------------------------------------------------------------ faults
    def inject(self, kind: str, count: int | None = None, rate: float | None = None,
               path_contains: str | None = None, **params: Any) -> Fault:
        """Inject a fault.  Kinds: ``"5xx"`` (500 with a CCV error body; ``status`` param
        for 502/503…), ``"slow"`` (sleep ``delay`` s, default 5, then answer normally),
        ``"truncated"`` (``mode="short"``: Content-Length larger than the body sent, then
        close; ``mode="cut"``: a cut JSON body with a matching Content-Length),
        ``"429"`` (429 ``429.10`` burst), ``"drop"`` (close the connection without answer)."""
        return self._faults.add(Fault(kind, count, rate, path_contains, params))

    # ------------------------------------------------------------------ webhooks
    def subscribe(self, event: str, address: str, is_active: bool = True) -> dict:
        """Register a webhook (as ``POST /webhooks``); returns the webhook object incl. key."""
        if event not in WEBHOOK_EVENTS:
            raise ValueError(f"unknown event {event!r}")
        with self._lock:
            wid = self._next_webhook_id
            self._next_webhook_id += 1
            key = "%064x" % self._rng.getrandbits(256)
            hook = {"href": f"{{base}}/api/rest/v1/webhooks/{wid}", "id": wid,
                    "createdate": _fmt_date(self.clock()), "event": event, "address": address,
                    "key": key, "is_active": bool(is_active),
                    "parent": {"href": "{base}/api/rest/v1/apps"}}
            self._webhooks[wid] = hook
            return self._hook_view(hook, self.url if self._server else "")

    @staticmethod
    def _hook_view(hook: dict, base: str) -> dict:
        h = _copy(hook)
        h.pop("owner", None)
        h["href"] = h["href"].replace("{base}", base)
        h["parent"]["href"] = h["parent"]["href"].replace("{base}", base)
        return h

    def set_paid(self, order_id: int, paid: bool = True) -> None:
        """Change the paid flag (as the shop owner would); fires ``orders.updated.ispaid``."""
        self._patch_order(int(order_id), {"paid": bool(paid)})

    def set_status(self, order_id: int, status: int) -> None:
        self._patch_order(int(order_id), {"status": int(status)})

    def wait_webhooks(self, timeout: float = 10.0) -> None:
        """Wait until every webhook delivery started so far has finished."""
        deadline = time.monotonic() + timeout
        with self._lock:
            threads = list(self._webhook_threads)
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))

    def _patch_order(self, oid: int, changes: dict) -> None:
        events = []
        with self._lock:
            if oid not in self._orders:
                raise ApiError(500, "500.24", f"Order {oid} not found")
            o = self._orders[oid]
            # spec: our choice — a webhook only on an actual change of the value
            if "paid" in changes and bool(changes["paid"]) != bool(o.get("paid")):
                o["paid"] = bool(changes["paid"])
                events.append(("orders.updated.ispaid", {"paid": o["paid"]}))
            if "status" in changes and changes["status"] != o.get("status"):
                prev = o.get("status")
                o["status"] = changes["status"]
                events.append(("orders.updated.status",
                               {"previous_status": prev, "status": o["status"]}))
            tt_changed = False
            if "track_and_trace_code" in changes and changes["track_and_trace_code"] != o.get("track_and_trace_code"):
                o["track_and_trace_code"] = changes["track_and_trace_code"]
                tt_changed = True
            if "track_and_trace_carrier" in changes and changes["track_and_trace_carrier"] != o.get("track_and_trace_carrier"):
                o["track_and_trace_carrier"] = changes["track_and_trace_carrier"]
                tt_changed = True
            if tt_changed:
                events.append(("orders.updated.trackandtrace",
                               {"track_and_trace_code": o.get("track_and_trace_code"),
                                "track_and_trace_carrier": o.get("track_and_trace_carrier")}))
            self._invalidate(oid)
            snapshot = _copy(o)
        for event, extra in events:
            self._fire(event, snapshot, extra)

    def _fire(self, event: str, order: dict, extra: dict) -> None:
        base = self.url if self._server else ""
        # thin payload, key order as in the real samples (note "order_number")
        payload: dict[str, Any] = {
            "triggered_at": _fmt_date(self.clock()),
            "href": f"{base}/api/rest/v1/orders/{order['id']}",
            "id": order["id"],
            "order_number": order.get("ordernumber"),
            "ordernumber_prefix": order.get("ordernumber_prefix"),
            "ordernumber_full": order.get("ordernumber_full"),
            "total_price": order.get("total_price"),
        }
        payload.update(extra)
        cust = order.get("customer") or {}
        billing = cust.get("billingaddress") or {}
        payload["customer_email"] = cust.get("email", "")
        payload["customer_mobile"] = billing.get("mobile", "") or ""
        # spec: our choice — webhook body serialised like the API (PHP style, "\/")
        body = dumps_ccv(payload).encode("utf-8")
        with self._lock:
            hooks = [dict(h) for h in self._webhooks.values()
                     if h["event"] == event and h["is_active"]]
        for hook in hooks:
            t = threading.Thread(target=self._deliver, args=(hook, event, body), daemon=True)
            with self._lock:
                self._webhook_threads.append(t)
            t.start()

    def _deliver(self, hook: dict, event: str, body: bytes) -> None:
        address = hook["address"]
        # GUESS (spec §8: signing is unknown): x-hash = hex(HMAC-SHA512(key, address|body))
        xhash = hmac.new(hook["key"].encode("utf-8"), address.encode("utf-8") + b"|" + body,
                         hashlib.sha512).hexdigest()
        req = urllib.request.Request(address, data=body, method="POST", headers={
            "Content-Type": "application/json",
            "x-hash": xhash,
            "x-simulator-note": "x-hash scheme is a guess (ccvshop-api.md section 8)",
        })
        entry: dict[str, Any] = {"event": event, "address": address, "body": body,
                                 "status": None, "error": None}
        try:  # delivered once, no retries (spec: our choice)
            with urllib.request.urlopen(req, timeout=self.webhook_timeout) as resp:
                entry["status"] = resp.status
        except urllib.error.HTTPError as e:
            entry["status"] = e.code
        except Exception as e:  # noqa: BLE001 - record any delivery failure
            entry["error"] = f"{type(e).__name__}: {e}"
        with self._lock:
            self.webhook_log.append(entry)

    # ------------------------------------------------------------------ request handling
    def _base_for(self, handler: BaseHTTPRequestHandler) -> str:
        host = handler.headers.get("Host")
        # spec: our choice — absolute links use the Host the client used (else our url)
        return f"http://{host}" if host else self.url

    def _order_json(self, oid: int, base: str) -> str:
        key = (oid, base)
        with self._lock:
            s = self._cache.get(key)
            if s is None:
                o = self._orders[oid]
                o = _rewrite(o, base) if self.rewrite_hrefs else dict(o)  # both copy the top level
                # list/single responses carry the link object instead of the rows list
                o["orderrows"] = {"href": f"{base}/api/rest/v1/orders/{oid}/orderrows/"}
                s = dumps_ccv(o)
                self._cache[key] = s
            return s

    def _row_obj(self, oid: int, row: dict, base: str) -> dict:
        r = _rewrite(row, base) if self.rewrite_hrefs else dict(row)  # top-level copy
        r["order_id"] = oid
        r["parent"] = {"href": f"{base}/api/rest/v1/orders/{oid}"}
        return r

    def _rate_check(self, public: str, method: str, segment: str) -> None:
        now = self.clock()
        window = int(now // 60)  # fixed UTC-minute windows (spec: our choice, §7)
        write = method != "GET"
        limit = self.write_rate_limit_per_minute if write else self.rate_limit_per_minute
        if self.rate_limit_per_minute is None:
            limit = None  # rate_limit_per_minute=None switches all per-resource limits off
        with self._lock:
            if len(self._counters) > 10000:
                self._counters = {k: v for k, v in self._counters.items() if k[1] == window}
            k_res = ("res", window, public, method, segment)
            k_tot = ("tot", window, public)
            if limit is not None and self._counters.get(k_res, 0) >= limit:
                raise _RateLimited("429.10", f"Rate limit of {limit} {method} requests per minute "
                                   f"on resource '{segment}' exceeded", now)
            if self.total_limit is not None and self._counters.get(k_tot, 0) >= self.total_limit:
                raise _RateLimited("429.11", f"Total rate limit of {self.total_limit} requests "
                                   "per minute exceeded", now)
            # only admitted requests count (spec: our choice)
            self._counters[k_res] = self._counters.get(k_res, 0) + 1
            self._counters[k_tot] = self._counters.get(k_tot, 0) + 1

    def _authenticate(self, h: BaseHTTPRequestHandler, method: str, target: str,
                      body: bytes) -> tuple[str, str]:
        # spec: our choice — check order: headers, public key, x-date form, skew, hash
        missing = [n for n in ("x-public", "x-date", "x-hash") if not h.headers.get(n)]
        if missing:
            raise ApiError(401, "401.10", f"Authentication failed: missing header(s) {', '.join(missing)}")
        public = h.headers["x-public"]
        if public not in self.keys:
            raise ApiError(401, "401.10", f"Authentication failed: unknown public key {public!r}")
        secret = self.keys[public]
        xdate = h.headers["x-date"]
        ts = parse_x_date(xdate)
        if ts is None:
            raise ApiError(401, "401.10", f"Authentication failed: x-date {xdate!r} is not an "
                           "ISO 8601 UTC date-time (e.g. 2022-11-26T00:45:54Z)", (public, secret))
        now = self.clock()
        if abs(now - ts) > self.skew:
            raise ApiError(401, "401.10", f"Authentication failed: date skew, x-date {xdate!r} "
                           f"differs {abs(now - ts):.0f} s from server time {_fmt_date(now)} "
                           f"(max {self.skew:g} s)", (public, secret))
        # §2: hash over public|METHOD|raw target|raw body (GET/DELETE: empty)|x-date
        signed_body = body if method in ("POST", "PATCH", "PUT") else b""
        expected = _sign_bytes(secret, f"{public}|{method}|{target}", signed_body, xdate)
        given = h.headers["x-hash"].strip()
        # exact compare of the lowercase hex digest (spec: our choice — strict)
        if not hmac.compare_digest(expected.encode("ascii"), given.encode("utf-8", "replace")):
            raise ApiError(401, "401.10", "Authentication failed: bad hash (x-hash does not match "
                           "HMAC-SHA512 of public|METHOD|uri|body|x-date)", (public, secret))
        return public, secret

    def handle(self, h: "_Handler", method: str) -> None:
        target = h.path
        body = read_body(h)
        # spec: our choice — faults act before auth (like a proxy/infrastructure failure);
        # "slow" and "truncated" then answer the real response
        fault = self._faults.pick(method, target)
        if fault is not None and fault.kind == "drop":
            self._log(method, target, 0)  # 0 = no answer (spec: our choice)
            drop_connection(h)
            return
        if fault is not None and fault.kind == "slow":
            time.sleep(float(fault.params.get("delay", 5.0)))  # real time, not the clock

        if target.split("?")[0] == RETURN_PATH and method == "GET":   # the owner's browser, back from an app
            self._serve_return_page(h)
            return
        public = secret = None
        try:
            if fault is not None and fault.kind == "5xx":
                st = int(fault.params.get("status", 500))
                raise ApiError(st, f"{st}.10", "Injected fault: internal server error")
            if fault is not None and fault.kind == "429":
                raise _RateLimited("429.10", "Injected fault: rate limit exceeded", self.clock())
            public, secret = self._authenticate(h, method, target, body)
            path, _, query = target.partition("?")
            if not path.startswith(API_PREFIX):  # spec: our choice — 404.20 outside the API
                raise ApiError(404, "404.20", f"Unknown resource {path!r}")
            parts = [p for p in path[len(API_PREFIX):].split("/") if p != ""]
            segment = parts[0] if parts else ""
            if segment not in ("orders", "orderrows", "webhooks", "apps") + BILLING_COLLECTIONS:
                raise ApiError(404, "404.20", f"Unknown resource {segment!r}")
            self._rate_check(public, method, segment)
            if segment == "apps":
                status, payload = self._route_apps(method, parts, public, body, target)
            elif segment in BILLING_COLLECTIONS:
                status, payload = self._route_billing(h, method, parts, target, query)
            else:
                status, payload = self._route(h, method, parts, target, query, body, public)
        except _RateLimited as e:
            headers = {}
            if self.retry_after:  # simulator extension, never sent by CCV
                headers["Retry-After"] = str(max(1, math.ceil(60 - (e.now % 60))))
            self._send_error(h, method, target, 429, e.code, e.message, public, secret, headers)
            return
        except ApiError as e:
            if e.signer is not None and secret is None:
                public, secret = e.signer
            self._send_error(h, method, target, e.status, e.code, e.message, public, secret)
            return
        data = payload.encode("utf-8") if isinstance(payload, str) else payload
        self._send(h, method, target, status, data, public, secret, fault)

    def _send_error(self, h, method, target, status, code, message, public, secret,
                    headers=None) -> None:
        data = dumps_ccv({"code": code, "status": status, "developermessage": message}).encode()
        sign_ok = secret is not None and self.sign_errors
        self._send(h, method, target, status, data, public if sign_ok else None,
                   secret if sign_ok else None, None, headers)

    def _send(self, h, method, target, status, data: bytes, public, secret, fault,
              headers=None) -> None:
        self._log(method, target, status)
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        if secret is not None:
            xdate = _fmt_date(self.clock())
            h.send_header("x-date", xdate)
            h.send_header("x-hash", _sign_bytes(secret, f"{public}|{method}|{target}", data, xdate))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        if fault is not None and fault.kind == "truncated":
            if fault.params.get("mode", "short") == "cut":
                cut = data[: max(1, len(data) // 2)]
                h.send_header("Content-Length", str(len(cut)))
                h.send_header("Connection", "close")
                h.end_headers()
                h.wfile.write(cut)
            else:
                h.send_header("Content-Length", str(len(data)))
                h.send_header("Connection", "close")
                h.end_headers()
                h.wfile.write(data[: len(data) // 2])
            h.wfile.flush()
            drop_connection(h)
            return
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        if method != "HEAD":
            h.wfile.write(data)

    # ------------------------------------------------------------------ routing
    def _route(self, h, method: str, parts: list[str], target: str, query: str,
               body: bytes, public: str | None = None) -> tuple[int, str]:
        base = self._base_for(h)
        seg = parts[0]
        if seg == "orders":
            if len(parts) == 1:
                if method == "GET":
                    return 200, self._list_orders(base, target, query)
                raise _not_allowed(method, target)
            oid = _parse_id(parts[1], "Order")
            if len(parts) == 2:
                if method == "GET":
                    with self._lock:
                        if oid not in self._orders:
                            raise ApiError(500, "500.24", f"Order {parts[1]} not found")
                    return 200, self._order_json(oid, base)
                if method == "PATCH":
                    self._patch_from_body(oid, body)
                    return 204, ""  # spec: our choice — 204 No Content, signed empty body
                raise _not_allowed(method, target)
            if len(parts) == 3 and parts[2] == "orderrows":
                if method != "GET":
                    raise _not_allowed(method, target)
                with self._lock:
                    if oid not in self._orders:
                        raise ApiError(500, "500.24", f"Order {parts[1]} not found")
                    rows = list(self._rows[oid])
                return 200, self._paged(base, target, query,
                                        [dumps_ccv(self._row_obj(oid, r, base)) for r in rows])
            if len(parts) == 3 and parts[2] in ORDER_SUBCOLLECTIONS:
                if method != "GET":
                    raise _not_allowed(method, target)
                with self._lock:
                    if oid not in self._orders:
                        raise ApiError(500, "500.24", f"Order {parts[1]} not found")
                return 200, self._paged(base, target, query, [])  # spec: our choice — empty
            raise ApiError(404, "404.20", f"Unknown resource {'/'.join(parts)!r}")
        if seg == "orderrows":
            if len(parts) != 2:
                if len(parts) == 1 and method != "GET":
                    raise _not_allowed(method, target)
                raise ApiError(404, "404.20", f"Unknown resource {'/'.join(parts)!r}")
            if method != "GET":
                raise _not_allowed(method, target)
            rid = _parse_id(parts[1], "Orderrow")
            with self._lock:
                loc = self._row_index.get(rid)
                if loc is None:
                    raise ApiError(500, "500.24", f"Orderrow {parts[1]} not found")
                oid, pos = loc
                row = self._rows[oid][pos]
            return 200, dumps_ccv(self._row_obj(oid, row, base))
        # webhooks (§8)
        if len(parts) == 1:
            if method == "GET":
                with self._lock:   # an install sees its own webhooks (and those made by the test)
                    hooks = [self._hook_view(x, base) for x in self._webhooks.values()
                             if x.get("owner") in (None, public)]
                return 200, self._paged(base, target, query, [dumps_ccv(x) for x in hooks])
            if method == "POST":
                data = _json_body(body)
                event, address = data.get("event"), data.get("address")
                if event not in WEBHOOK_EVENTS or not isinstance(address, str) or not address:
                    raise ApiError(400, "400.10", "Webhook needs a known 'event' and an 'address'")
                hook = self.subscribe(event, address, data.get("is_active", True))
                with self._lock:
                    if public in self._installs:
                        self._webhooks[hook["id"]]["owner"] = public
                hook = self._hook_view(self._webhooks[hook["id"]], base)
                return 201, dumps_ccv(hook)  # spec: our choice — 201 Created
            raise _not_allowed(method, target)
        if len(parts) == 2:
            wid = _parse_id(parts[1], "Webhook")
            with self._lock:
                if wid not in self._webhooks:
                    raise ApiError(500, "500.24", f"Webhook {parts[1]} not found")
                if method == "GET":
                    return 200, dumps_ccv(self._hook_view(self._webhooks[wid], base))
                if method == "DELETE":
                    del self._webhooks[wid]
                    return 204, ""
                if method == "PATCH":
                    data = _json_body(body)
                    for k in ("address", "is_active", "event"):
                        if k in data:
                            self._webhooks[wid][k] = data[k]
                    return 204, ""
            raise _not_allowed(method, target)
        raise ApiError(404, "404.20", f"Unknown resource {'/'.join(parts)!r}")

    def _route_billing(self, h, method: str, parts: list[str], target: str,
                       query: str) -> tuple[int, str]:
        """§9: ``GET /invoices`` and ``GET /returns`` (lists with filters), and one by id."""
        base = self._base_for(h)
        seg = parts[0]
        if method != "GET":
            raise _not_allowed(method, target)
        store = self._invoices if seg == "invoices" else self._returns
        what = "Invoice" if seg == "invoices" else "Return"
        if len(parts) == 2:
            iid = _parse_id(parts[1], what)
            with self._lock:
                if iid not in store:
                    raise ApiError(500, "500.24", f"{what} {parts[1]} not found")
                item = _copy(store[iid])
            return 200, dumps_ccv(self._billing_view(seg, item, base))
        if len(parts) != 1:
            raise ApiError(404, "404.20", f"Unknown resource {'/'.join(parts)!r}")
        q = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
        try:
            dmin = _parse_filter_date(q["min_create_date"], False) if "min_create_date" in q else None
            dmax = _parse_filter_date(q["max_create_date"], True) if "max_create_date" in q else None
            status: str | int | None = q.get("status")
            if seg == "returns" and status is not None:
                status = int(status)
        except ValueError as e:
            raise ApiError(400, "400.10", f"Bad query value: {e}") from None
        if seg == "invoices" and status is not None and status not in INVOICE_STATUSES:
            raise ApiError(400, "400.10", f"Bad query value: status={status!r}")
        with self._lock:
            items = [_copy(store[k]) for k in sorted(store)]
        sel = []
        for it in items:
            if status is not None and it.get("status") != status:
                continue
            if "ordernumber" in q and str(it.get("ordernumber")) != q["ordernumber"].strip():
                continue
            if "invoicenumber_full" in q and it.get("invoicenumber_full") != q["invoicenumber_full"]:
                continue
            if "type" in q and it.get("type") != q["type"]:
                continue
            if "order_id" in q and str(it.get("order_id")) != q["order_id"].strip():
                continue
            ts = parse_x_date(str(it.get("create_date") or ""))
            if dmin is not None and (ts is None or ts < dmin):
                continue
            if dmax is not None and (ts is None or ts > dmax):
                continue
            sel.append(dumps_ccv(self._billing_view(seg, it, base)))
        return 200, self._paged(base, target, query, sel)

    @staticmethod
    def _billing_view(seg: str, item: dict, base: str) -> dict:
        view: dict[str, Any] = {"href": f"{base}/api/rest/v1/{seg}/{item['id']}"}
        view.update(item)
        view["order"] = {"href": f"{base}/api/rest/v1/orders/{item['order_id']}"}
        return view

    def _patch_from_body(self, oid: int, body: bytes) -> None:
        data = _json_body(body)
        changes: dict[str, Any] = {}
        if "paid" in data:
            if not isinstance(data["paid"], bool):
                raise ApiError(400, "400.10", "'paid' must be a boolean")
            changes["paid"] = data["paid"]
        if "status" in data:
            st = data["status"]
            if isinstance(st, bool) or not isinstance(st, int) or not 1 <= st <= 14:
                raise ApiError(400, "400.10", "'status' must be an integer 1..14")
            changes["status"] = st
        for k in ("track_and_trace_code", "track_and_trace_carrier"):
            if k in data:
                if data[k] is not None and not isinstance(data[k], str):
                    raise ApiError(400, "400.10", f"'{k}' must be a string")
                changes[k] = data[k]
        if not changes:
            raise ApiError(400, "400.10", "Nothing to update: expected paid, status or "
                           "track_and_trace_code")
        self._patch_order(oid, changes)

    def _list_orders(self, base: str, target: str, query: str) -> str:
        params = urllib.parse.parse_qsl(query, keep_blank_values=True)
        q: dict[str, str] = {}
        for k, v in params:
            q[k] = v  # last wins; unknown parameters are ignored (spec: our choice)
        try:
            is_completed = _parse_bool(q["is_completed"]) if "is_completed" in q else True
            is_paid = _parse_bool(q["is_paid"]) if "is_paid" in q else None
            status = int(q["status"]) if "status" in q else None
            paymethod_id = int(q["paymethod_id"]) if "paymethod_id" in q else None
            dmin = _parse_filter_date(q["min_create_date"], False) if "min_create_date" in q else None
            dmax = _parse_filter_date(q["max_create_date"], True) if "max_create_date" in q else None
        except ValueError as e:
            raise ApiError(400, "400.10", f"Bad query value: {e}") from None  # spec: our choice
        orderby = q.get("orderby", "id") or "id"
        desc = orderby.endswith("_desc")
        field = orderby[:-5] if desc else orderby
        if field not in ("id", "ordernumber", "create_date", "deliver_date"):
            raise ApiError(400, "400.10", f"Bad query value: orderby={orderby!r}")
        ordernumber = q.get("ordernumber")
        transaction_id = q.get("transaction_id")
        deliver_date = q.get("deliver_date")
        with self._lock:
            orders = list(self._orders.values())
        sel = []
        for o in orders:
            if bool(o.get("is_completed")) != is_completed:
                continue
            if is_paid is not None and bool(o.get("paid")) != is_paid:
                continue
            if status is not None and o.get("status") != status:
                continue
            if paymethod_id is not None and o.get("paymethod_id") != paymethod_id:
                continue
            if ordernumber is not None and str(o.get("ordernumber")) != ordernumber.strip():
                continue
            if transaction_id is not None and str(o.get("transaction_id")) != transaction_id:
                continue
            if deliver_date is not None and not str(o.get("deliver_date") or "").startswith(deliver_date[:10]):
                continue
            if dmin is not None or dmax is not None:
                ts = parse_x_date(str(o.get("create_date") or ""))
                if ts is None:
                    continue
                if dmin is not None and ts < dmin:
                    continue
                if dmax is not None and ts > dmax:
                    continue
            sel.append(o)

        def key(o):
            v = o.get(field)
            return (v is None, v if v is not None else 0, o["id"])
        sel.sort(key=key, reverse=desc)
        ids = [o["id"] for o in sel]
        return self._paged(base, target, query, ids, lazy=lambda oid: self._order_json(oid, base))

    def _paged(self, base: str, target: str, query: str, items: list,
               lazy: Callable[[Any], str] | None = None) -> str:
        """§6 collection: items are JSON strings (or keys rendered by ``lazy``)."""
        params = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
        try:
            start = int(params.get("start", 0))
            size = int(params.get("size", DEFAULT_SIZE))
        except ValueError:
            raise ApiError(400, "400.10", "Bad query value: start and size must be integers") from None
        if start < 0:
            raise ApiError(400, "400.10", f"Bad query value: start={start} (must be >= 0)")
        if size < 1:
            raise ApiError(400, "400.10", f"Bad query value: size={size} (must be >= 1)")
        size = min(size, MAX_SIZE)
        page = items[start:start + size]
        if lazy is not None:
            page = [lazy(x) for x in page]
        path = target.partition("?")[0]

        def link(s: int) -> str:
            return base + path + "?" + _replace_paging(query, s, size)

        nxt = link(start + size) if start + size < len(items) else None
        prev = link(max(0, start - size)) if start > 0 else None
        head = {"href": base + target, "start": start, "size": size, "first": link(0),
                "previous": prev, "next": nxt}
        head_json = dumps_ccv(head)
        return head_json[:-1] + ',"items":[' + ",".join(page) + "]}"


class _RateLimited(Exception):
    def __init__(self, code: str, message: str, now: float):
        super().__init__(message)
        self.code, self.message, self.now = code, message, now


def _not_allowed(method: str, target: str) -> ApiError:
    # spec: our choice — every write other than PATCH /orders/:id and the webhook calls
    return ApiError(405, "405.10", f"Method {method} not allowed on {target.partition('?')[0]}")


def _parse_id(s: str, what: str) -> int:
    try:
        return int(s)
    except ValueError:
        # spec: our choice — a non-numeric id is an unknown id
        raise ApiError(500, "500.24", f"{what} {s!r} not found") from None


def _json_body(body: bytes) -> dict:
    try:
        data = json.loads(body.decode("utf-8") or "null", parse_float=Decimal)
    except (UnicodeDecodeError, ValueError):
        raise ApiError(400, "400.10", "Request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ApiError(400, "400.10", "Request body must be a JSON object")
    return data


def _replace_paging(query: str, start: int, size: int) -> str:
    """Keep parameter order and raw encoding; replace start/size in place, append if absent."""
    out, seen_start, seen_size = [], False, False
    for piece in query.split("&") if query else []:
        name = urllib.parse.unquote_plus(piece.partition("=")[0])
        if name == "start":
            if seen_start:
                continue
            out.append(f"start={start}")
            seen_start = True
        elif name == "size":
            if seen_size:
                continue
            out.append(f"size={size}")
            seen_size = True
        else:
            out.append(piece)
    if not seen_start:
        out.append(f"start={start}")
    if not seen_size:
        out.append(f"size={size}")
    return "&".join(out)


def _copy(obj: Any) -> Any:
    """Deep copy of JSON-like data (faster than copy.deepcopy; scalars are immutable)."""
    if isinstance(obj, dict):
        return {k: _copy(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_copy(v) for v in obj]
    return obj


def _rewrite(obj: Any, base: str) -> Any:
    """Point API hrefs (``https://shop/api/rest/v1/…``) at this simulator (spec: our choice);
    other URLs (packing slip, track & trace) stay verbatim."""
    if isinstance(obj, str):
        return _ABS_HREF_RE.sub(base + "/api/rest/v1/", obj, count=1) if "/api/rest/v1/" in obj else obj
    if isinstance(obj, dict):
        return {k: _rewrite(v, base) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_rewrite(v, base) for v in obj]
    return obj


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m engine.simulators.ccvshop",
                                 description="CCV Shop REST API simulator (loopback)")
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--fixtures", metavar="DIR", help="serve the orders of a fixture directory")
    src.add_argument("--generate", metavar="N", type=int, help="serve N generated orders")
    ap.add_argument("--seed", type=int, default=1, help="generator seed (default 1)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="port (default 0 = ephemeral)")
    ap.add_argument("--public", default="demo", help="public key (default demo)")
    ap.add_argument("--secret", default="demo", help="secret key (default demo)")
    ap.add_argument("--rate-limit", type=int, default=150, help="GET per minute; 0 = off")
    ap.add_argument("--total-limit", type=int, default=None)
    ap.add_argument("--retry-after", action="store_true", help="send Retry-After on 429 (extension)")
    a = ap.parse_args(argv)
    if a.fixtures:
        orders = load_fixture_dir(a.fixtures)
    else:
        orders = list(generate_orders(a.generate if a.generate is not None else 100, seed=a.seed))
    sim = CCVShopSimulator(orders=orders, keys={a.public: a.secret},
                           rate_limit_per_minute=a.rate_limit or None, total_limit=a.total_limit,
                           retry_after=a.retry_after, host=a.host, port=a.port)
    sim.start()
    print(f"CCV Shop simulator serving {len(orders)} orders at {sim.url}", flush=True)
    print(f"  api root: {sim.api_root}/", flush=True)
    print(f"  public key: {a.public}   secret key: {a.secret}", flush=True)
    sim.serve_until_interrupted()
    return 0


if __name__ == "__main__":
    sys.exit(main())
