"""Benchmark: many shops on procrastinate workers, against one PostgreSQL database.

One CCV Shop simulator serves S shops at once, each with its own key pair and its own rate
limit (150 GET per minute per resource, counted per key), and the same N paid orders. S shops
are registered, all due now, and W `mapper worker --until-idle` processes run them. Reported:
shops per minute, orders per second, p50/p95 of a shop's run (from the state's runs),
PostgreSQL connections used (peak, sampled), peak RSS per worker, that every shop delivered
each order exactly once, and the simulator's 429s (requests over a shop's limit).

    python bench/many_shops.py                       # S = 100 and 1,000, 20 orders, 2 workers
    python bench/many_shops.py --shops 100 --kill 10 # SIGKILL a worker 10 times during the run

With --kill, a worker is killed at random moments (and started again) K times; afterwards a
last `--until-idle` worker takes over what the dead ones left, and the same checks apply, plus
that no shop is left locked. Writes bench/results/many_shops.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402

from engine.hosted.crypto import SecretBox  # noqa: E402
from engine.hosted.shops import ShopRegistry  # noqa: E402
from engine.ops.state import open_state  # noqa: E402
from engine.simulators.ccvshop import CCVShopSimulator  # noqa: E402
from engine.simulators.ccvshop_data import generate_orders  # noqa: E402

ADMIN = os.environ.get("MAPPER_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
MASTER = secrets.token_urlsafe(32)


def sample(pids: dict[int, subprocess.Popen], db: str, stop: threading.Event, peaks: dict) -> None:
    while not stop.is_set():
        for pid in list(pids):
            try:
                text = Path(f"/proc/{pid}/status").read_text()
                rss = int(re.search(r"VmRSS:\s+(\d+)", text).group(1)) / 1024
                peaks["rss"][pid] = max(peaks["rss"].get(pid, 0), rss)
            except (OSError, AttributeError):
                pass
        try:
            with psycopg.connect(ADMIN, autocommit=True) as conn:
                n = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s",
                                 (db.rsplit("/", 1)[1],)).fetchone()[0]
            peaks["connections"] = max(peaks["connections"], n - 0)
        except psycopg.Error:
            pass
        stop.wait(0.25)


def one(shops: int, orders: int, workers: int, concurrency: int, kill: int) -> dict:
    name = f"mapper_bench_{os.getpid()}_{secrets.token_hex(2)}"
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    db = ADMIN.rsplit("/", 1)[0] + "/" + name
    tmp = Path(tempfile.mkdtemp(prefix="mapper-many-shops-"))
    keys = {f"pub-{i}": f"secret-{i}-{secrets.token_hex(4)}" for i in range(shops)}
    from datetime import date, datetime, timedelta, timezone
    recent = (date.today() - timedelta(days=30)).isoformat()     # inside the daily look-back
    sim = CCVShopSimulator(list(generate_orders(orders, seed=7, start_date=recent)), keys=keys)
    sim.start()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CCVSHOP_", "MAPPER_"))}
    env.update(MAPPER_DATABASE=db, MAPPER_MASTER_KEY=MASTER, MAPPER_OUTBOX=str(tmp / "out"),
               MAPPER_WORKER_STALLED_AFTER="3", PYTHONDONTWRITEBYTECODE="1")
    cli = [sys.executable, "-m", "engine.cli"]
    try:
        subprocess.run(cli + ["db", "upgrade"], env=env, check=True, capture_output=True)
        t = time.perf_counter()
        with open_state(db) as store:
            registry = ShopRegistry(store, SecretBox(MASTER))
            due = datetime.now(timezone.utc) - timedelta(minutes=1)
            ids = [registry.add(f"Shop {i}", sim.url, ccv_public=pub, ccv_secret=sec, now=due,
                                first_run_at=due).id for i, (pub, sec) in enumerate(keys.items())]
        register_s = time.perf_counter() - t

        peaks = {"rss": {}, "connections": 0}
        procs: dict[int, subprocess.Popen] = {}
        stop = threading.Event()
        sampler = threading.Thread(target=sample, args=(procs, db, stop, peaks), daemon=True)
        sampler.start()
        log = open(tmp / "workers.log", "w")

        def start() -> None:
            p = subprocess.Popen(cli + ["worker", "--until-idle", "--concurrency", str(concurrency)],
                                 env=env, stdout=log, stderr=subprocess.STDOUT)
            procs[p.pid] = p

        t0 = time.perf_counter()
        for _ in range(workers):
            start()
        kills = 0
        rng = random.Random(11)
        while any(p.poll() is None for p in procs.values()):
            if kills < kill:
                time.sleep(rng.uniform(0.5, 3.0))
                alive = [p for p in procs.values() if p.poll() is None]
                if alive:
                    victim = rng.choice(alive)
                    victim.send_signal(signal.SIGKILL)
                    victim.wait()
                    kills += 1
                    start()
            else:
                time.sleep(0.2)
        if kill:   # what the killed workers left: a last worker takes it over
            start()
            for p in procs.values():
                p.wait()
        wall = time.perf_counter() - t0
        stop.set()
        sampler.join()

        with psycopg.connect(db) as conn:
            runs = conn.execute("SELECT mapping, started_at, finished_at, outcome, counts FROM runs "
                                "WHERE finished_at IS NOT NULL").fetchall()
            per_shop = dict(conn.execute(
                "SELECT split_part(o.mapping, '/', 1), count(*) FROM batch_orders o JOIN batches b "
                "ON b.id = o.batch_id WHERE b.status = 'delivered' AND o.live = 1 GROUP BY 1").fetchall())
            locks = conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'").fetchone()[0]
            jobs_left = conn.execute("SELECT count(*) FROM procrastinate_jobs WHERE status IN "
                                     "('todo', 'doing') AND task_name = 'mapper.run_shop'").fetchone()[0]
            failures = conn.execute("SELECT count(*) FROM shops WHERE failures > 0").fetchone()[0]
        files_numbers: dict[str, list[str]] = {}
        for shop_id in ids:
            nums = []
            for f in (tmp / "out" / shop_id).glob("*.xml"):
                nums += re.findall(r"Bestelling (\S+)", f.read_text("utf-8"))
            files_numbers[shop_id] = nums
        from datetime import datetime as dt
        durations = sorted((dt.fromisoformat(r[2].replace("Z", "+00:00")) -
                            dt.fromisoformat(r[1].replace("Z", "+00:00"))).total_seconds() for r in runs)
        exactly_once = all(len(n) == orders and len(set(n)) == orders for n in files_numbers.values()) \
            and all(per_shop.get(i, 0) == orders for i in ids)
        return {
            "shops": shops, "orders_per_shop": orders, "workers": workers, "concurrency": concurrency,
            "kills": kills, "wall_s": round(wall, 1), "register_s": round(register_s, 2),
            "shops_per_minute": round(shops / wall * 60, 1),
            "orders_per_second": round(shops * orders / wall, 1),
            "run_p50_s": round(statistics.median(durations), 3) if durations else None,
            "run_p95_s": round(durations[int(len(durations) * 0.95) - 1], 3) if durations else None,
            "runs_recorded": len(runs),
            "db_connections_peak": peaks["connections"],
            "worker_rss_peak_mb": sorted(round(v, 1) for v in peaks["rss"].values()),
            "exactly_once": exactly_once,
            "duplicates": sum(len(n) - len(set(n)) for n in files_numbers.values()),
            "missing": sum(max(0, orders - len(set(n))) for n in files_numbers.values()),
            "requests": len(sim.request_log),
            "over_limit_429": sum(1 for _, _, s in sim.request_log if s == 429),
            "shops_failed": failures, "advisory_locks_left": locks, "run_jobs_left": jobs_left,
        }
    finally:
        sim.stop()
        shutil.rmtree(tmp, ignore_errors=True)
        with psycopg.connect(ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shops", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--orders", type=int, default=20)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=2, help="shops at once per worker")
    ap.add_argument("--kill", type=int, default=0, help="SIGKILL a worker this many times")
    args = ap.parse_args()
    results = []
    for s in args.shops:
        r = one(s, args.orders, args.workers, args.concurrency, args.kill)
        print(json.dumps(r), flush=True)
        results.append(r)
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "many_shops.json").write_text(json.dumps(results, indent=2))
    return 0 if all(r["exactly_once"] and not r["over_limit_429"] and not r["advisory_locks_left"]
                    for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
