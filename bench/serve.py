"""Benchmark: `mapper serve` with many shops, against one PostgreSQL database.

S shops are registered, each with a day's run on record (some failed, some with quarantine) and
a webhook subscription; one `serve` process (uvicorn, one worker) answers. Reported: the
operator's shops page, the "needs attention" filter, the morning summary in JSON and /metrics
(median and worst of R requests each), and webhook deliveries per second with C clients at
once (each a real POST through the token look-up into the shop's hints). Writes
bench/results/serve.json.

    python bench/serve.py                     # S = 1,000 shops, 20 requests a page, 2,000 webhooks, 8 clients
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import psycopg  # noqa: E402
import requests  # noqa: E402

from engine.hosted.crypto import SecretBox  # noqa: E402
from engine.hosted.runs import ShopState  # noqa: E402
from engine.hosted.shops import ShopRegistry  # noqa: E402
from engine.ops.state import open_state  # noqa: E402
from engine.ops.webhooks import new_token  # noqa: E402
from serving import ADMIN_PASSWORD, MASTER, start_serve, stop_serve  # noqa: E402

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
MAPPING = "ccvshop-asperion"


def populate(database: str, shops: int) -> list[str]:
    """S shops with a run each (every tenth failed, every seventh with quarantine) and a token."""
    now = datetime.now(timezone.utc)
    tokens = []
    with open_state(database) as store:
        reg = ShopRegistry(store, SecretBox(MASTER))
        for i in range(shops):
            shop = reg.add(f"Shop {i:04d}", f"https://shop{i}.example.test", ccv_public=f"pub-{i}",
                           ccv_secret=f"sec-{i}", now=now, plan="basis" if i % 3 else "plus")
            state = ShopState(store, shop.id)
            run = state.begin_run(MAPPING, now - timedelta(hours=5), "daily")
            outcome = "failed" if i % 10 == 0 else ("quarantined" if i % 7 == 0 else "ok")
            state.finish_run(run, outcome, {"fetched": 20, "delivered": 20}, finished_at=now - timedelta(hours=5))
            if i % 7 == 0:
                state.quarantine(MAPPING, f"9{i}", f"Q{i}", "the rows do not add up", now)
            if i % 10 == 0:
                reg.record_run(shop.id, ok=False, now=now, error="the shop answered 401")
            token, hashed = new_token()
            state.add_webhook_token(MAPPING, hashed, "orders.updated.ispaid", now)
            tokens.append(token)
    return tokens


def timed(fn, repeat: int) -> dict:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"median_ms": round(statistics.median(times) * 1000, 1), "worst_ms": round(max(times) * 1000, 1)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shops", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--hooks", type=int, default=2000)
    ap.add_argument("--clients", type=int, default=8)
    args = ap.parse_args()
    name = f"mapper_bench_serve_{secrets.token_hex(3)}"
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(ADMIN)
    database = f"{parts.scheme}://{parts.netloc}/{name}"
    tmp = Path(tempfile.mkdtemp())
    served = start_serve(tmp, database)
    try:
        t0 = time.perf_counter()
        tokens = populate(database, args.shops)
        setup = time.perf_counter() - t0
        login = requests.post(served.url + "/admin/login", data={"password": ADMIN_PASSWORD}, allow_redirects=False)
        cookie = {"Cookie": login.headers["set-cookie"].split(";")[0]}

        def get(path):
            def go():
                r = requests.get(served.url + path, headers=cookie, timeout=60)
                assert r.status_code == 200, (path, r.status_code)
            return go
        pages = {p: timed(get(p), args.repeat) for p in
                 ("/admin", "/admin?filter=attention", "/admin/summary.json", "/metrics")}
        session = requests.Session()

        def hook(i):
            r = session.post(f"{served.url}/hooks/{tokens[i % len(tokens)]}/orders.updated.ispaid",
                             json={"id": 100000 + i}, timeout=30)
            return r.status_code
        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            statuses = list(pool.map(hook, range(args.hooks)))
        elapsed = time.perf_counter() - t0
        with psycopg.connect(database) as conn:
            kept = conn.execute("SELECT COUNT(*) FROM hints").fetchone()[0]
        result = {"shops": args.shops, "setup_s": round(setup, 1), "pages": pages,
                  "webhooks": {"sent": args.hooks, "clients": args.clients, "per_s": round(args.hooks / elapsed),
                               "ok": statuses.count(200), "hints_kept": kept}}
        print(json.dumps(result, indent=2))
        out = ROOT / "bench" / "results"
        out.mkdir(parents=True, exist_ok=True)
        (out / "serve.json").write_text(json.dumps(result, indent=2) + "\n")
    finally:
        stop_serve(served)
        with psycopg.connect(ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return 0


if __name__ == "__main__":
    sys.exit(main())
