"""Benchmark: fetch paid orders with their rows from the CCV Shop simulator under a rate limit.

Both sides enforce the same per-resource GET limit: the simulator with fixed (UTC-minute)
windows, the client with its own sliding-window limiter. Time is scaled (default x10): the
simulator and the client share a clock that runs ten times faster than real time, so the
spec's 150 requests per minute becomes 1,500 per real minute and the run takes about a
minute and a half instead of a quarter of an hour.

    python bench/ccv_fetch.py                 # 2,000 orders, 150/min at x10
    python bench/ccv_fetch.py --orders 500 --scale 20

Prints a JSON summary and writes it to bench/results/ccv_fetch.json: total requests,
requests per order, the achieved request rate as a fraction of the allowed rate (overall and
in steady state, i.e. over the full server windows), 429s received and wall time.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jinja2  # noqa: E402

from engine.io.sources.http import HttpSource  # noqa: E402
from engine.simulators import ccvshop as sim_mod  # noqa: E402
from engine.simulators.ccvshop_data import generate_orders  # noqa: E402


class ScaledClock:
    """Epoch-like seconds that run ``scale`` times faster than real time."""

    def __init__(self, scale: float):
        self.scale = scale
        self.t0 = time.time()
        self.p0 = time.perf_counter()

    def __call__(self) -> float:
        return self.t0 + (time.perf_counter() - self.p0) * self.scale

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds / self.scale)


def config(url: str, limit: int) -> dict:
    return {
        "http": {
            "base_url": url,
            "headers": {"Accept": "application/vnd.verto.webshop+json"},
            "timeout": {"connect": 5, "read": 30},
            "retries": {"attempts": 4, "backoff": 0.5, "max_backoff": 20},
            "auth": {"kind": "hmac", "algorithm": "sha512", "public": "demo", "secret": "demo",
                     "sign": "{public}|{method}|{uri}|{body}|{date}",
                     "headers": {"x-public": "{public}", "x-date": "{date}",
                                 "x-hash": "{signature}"},
                     "verify_response": True},
            "rate_limit": {"requests": limit, "per_seconds": 60,
                           "resource_prefix": "/api/rest/v1/"},
            "on_429": {"wait": "next_window", "attempts": 3},
            "not_found": {"status": [404], "codes": ["500.24"]},
            "error_body": {"code": "code", "message": "developermessage"},
        },
        "records": {
            "path": "/api/rest/v1/orders",
            "params": {"is_paid": "true", "min_create_date": "{{ window.start }}",
                       "max_create_date": "{{ window.end }}", "orderby": "id"},
            "items": "items",
            "paginate": {"kind": "next_link", "next": "next", "size_param": "size", "size": 250,
                         "max_pages": 10000},
            "expand": {"orderrows": {
                "path": "/api/rest/v1/orders/{{ record.id }}/orderrows", "items": "items",
                "paginate": {"kind": "next_link", "next": "next", "size_param": "size",
                             "size": 250}}},
        },
        "lookup": {"path": "/api/rest/v1/orders/{{ id }}"},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--orders", type=int, default=2000)
    ap.add_argument("--limit", type=int, default=150, help="GET per (scaled) minute, both sides")
    ap.add_argument("--scale", type=float, default=10.0, help="time scale (default x10)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "ccv_fetch.json"))
    a = ap.parse_args(argv)

    notes = []
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    render = lambda t, c: env.from_string(t).render(**c)  # noqa: E731
    orders = list(generate_orders(a.orders, seed=1))
    clock = ScaledClock(a.scale)
    stamps: list[float] = []
    lock = threading.Lock()

    with sim_mod.CCVShopSimulator(orders=orders, rate_limit_per_minute=a.limit, clock=clock) as sim:
        src = HttpSource(config(sim.url, a.limit), render, clock=clock, sleep=clock.sleep)

        def stamp(resp, *args, **kwargs):
            with lock:
                stamps.append(clock())
        src.client.session.hooks["response"].append(stamp)

        wall0 = time.perf_counter()
        scaled0 = clock()
        n_orders = n_rows = 0
        for rec in src.records({}):
            n_orders += 1
            n_rows += len(rec["orderrows"])
        wall = time.perf_counter() - wall0
        scaled = clock() - scaled0
        stats = src.stats
        server_429 = sum(1 for _, _, s in sim.request_log if s == 429)

    requests_total = stats["requests"]
    allowed_per_s = a.limit / 60.0
    # steady state: full server windows (fixed minutes) strictly between the first and last
    per_window = Counter(int(t // 60) for t in stamps)
    windows = sorted(per_window)
    full = windows[1:-1]
    steady = (sum(per_window[w] for w in full) / (len(full) * a.limit)) if full else None
    # the strongest check of the client limiter: any rolling window of 60 s
    max_rolling = 0
    j = 0
    for i, t in enumerate(stamps):
        while stamps[j] <= t - 60:
            j += 1
        max_rolling = max(max_rolling, i - j + 1)
    # overall: the limit allows `limit` requests in each started window of the run
    overall_capacity = a.limit * math.ceil(scaled / 60.0 - 1e-9)

    result = {
        "orders_expected": a.orders,
        "orders_fetched": n_orders,
        "rows_fetched": n_rows,
        "total_requests": requests_total,
        "requests_per_order": round(requests_total / max(1, n_orders), 4),
        "allowed_rate_per_real_minute": a.limit * a.scale,
        "limit_per_scaled_minute": a.limit,
        "time_scale": a.scale,
        "achieved_rate_per_real_minute": round(requests_total / wall * 60, 1),
        "achieved_fraction_overall": round(requests_total / (allowed_per_s * scaled), 4),
        "achieved_fraction_of_window_capacity": round(requests_total / overall_capacity, 4),
        "achieved_fraction_steady_state": None if steady is None else round(steady, 4),
        "requests_per_server_window": [per_window[w] for w in windows],
        "max_requests_in_any_rolling_window": max_rolling,
        "responses_429": stats["responses_429"],
        "responses_429_server_log": server_429,
        "retries": stats["retries"],
        "client_limiter_waits": stats["rate_limit_waits"],
        "wall_time_s": round(wall, 2),
        "scaled_time_s": round(scaled, 1),
        "notes": notes,
    }
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    ok = (n_orders == a.orders and result["responses_429"] == 0
          and (steady is None or steady >= 0.9))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
