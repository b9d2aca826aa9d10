"""Benchmark: the engine end to end against the hand-written baseline, at 1k, 10k and 100k orders.

    python bench/run.py            # 1,000 / 10,000 / 100,000 orders (about 5-8 minutes)
    python bench/run.py --quick    # 1,000 / 10,000 only
    python bench/run.py --instructions   # also instructions per order (valgrind), noise-free

For each size the orders are generated once (full-size CCV orders, fixed seed, cached under
$MAPPER_BENCH_CACHE or /tmp/mapper-bench-cache; see bench/generate.py). Each measurement is
a fresh process, exactly what a user runs:

    engine:    python cli.py dry-run mappings/ccvshop_asperion.yaml --fixtures DIR --out FILE
    baseline:  python bench/baseline.py --fixtures DIR --out FILE

so the time includes start-up, loading the mapping and the XSD, reading and parsing every
order, checks, debtor matching, VAT, rendering, per-order XSD validation and writing the
file; peak RSS is that process's own (``os.wait4``). Engine and baseline runs alternate and
take turns at going first, each after the order files were read once (page cache warm, see
``_warm_cache``); the medians are reported. Both outputs are compared byte for byte at every size. Also timed:
``mapper validate`` and ``mapper --help`` (median of 5).

Prints a table and writes bench/results/bench.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.generate import CACHE, SEED, fixture_dir  # noqa: E402

MAPPING = ROOT / "mappings" / "ccvshop_asperion.yaml"
RESULTS = ROOT / "bench" / "results" / "bench.json"
FROZEN_NOW = "2026-11-26T21:00:00Z"

TARGETS = {"ratio_100k": 1.3, "orders_per_s_100k": 2500, "rss_growth_mb": 40, "validate_s": 0.5, "help_s": 0.3}


#: How the engine is measured, every time (written to the results): the mapping's debtor
#: register is NOT consulted (MAPPER_DEBTOR_KEY unset -> dry-run matches in-file, exactly the
#: baseline's rule), and the state is a fresh path in this run's temp directory that nothing
#: creates (read-only open of a missing state = an empty in-memory store).
ENGINE_MODE = {"debtor_matching": "in_file (MAPPER_DEBTOR_KEY unset; the register is not consulted)",
               "state": "fresh temp path, never created (read-only, empty)"}


def _env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["MAPPER_NOW"] = FROZEN_NOW                 # same header bytes in both outputs
    env.pop("MAPPER_DEBTOR_KEY", None)             # dry-run matches debtors in-file, as the baseline does
    env["MAPPER_STATE"] = str(tmp / "no-state.sqlite")  # never created: read-only open of a missing state
    env["PYTHONHASHSEED"] = "0"
    env.pop("PYTHONPROFILEIMPORTTIME", None)
    # as installed: pip compiles the modules to bytecode once; a checkout caches it on first run
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.pop("PYTHONTRACEMALLOC", None)
    return env


def measure(cmd: list[str], env: dict[str, str], ok=(0,)) -> tuple[float, float, float]:
    """(wall seconds, peak RSS in MB, CPU seconds user+system) of one fresh process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if proc.returncode not in ok:
        raise SystemExit(f"{' '.join(cmd)} failed with exit code {proc.returncode}:\n{err}")
    return wall, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime  # ru_maxrss is in KiB on Linux


def _warm_cache(directory: Path) -> None:
    """Read every order file once, untimed, so both programs start with them in the page cache.

    This machine reclaims page cache that has not been touched for a while (DAMON): at
    100,000 orders (950 MB) the program that went first in a pair read many files from disk
    (98,000 voluntary context switches against 12,000, +9 s of waiting for the engine, which
    always went first). Reading them just before each run puts both on the same footing.
    """
    with os.scandir(directory) as entries:
        for entry in entries:
            with open(entry.path, "rb") as f:
                while f.read(1 << 20):
                    pass


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def bench_size(n: int, runs: int, tmp: Path, env: dict[str, str]) -> dict:
    directory = fixture_dir(n)
    engine_out, base_out = tmp / f"engine-{n}.xml", tmp / f"baseline-{n}.xml"
    engine_cmd = [sys.executable, "-m", "engine.cli", "dry-run", str(MAPPING), "--fixtures", str(directory),
                  "--out", str(engine_out)]
    base_cmd = [sys.executable, str(ROOT / "bench" / "baseline.py"), "--fixtures", str(directory),
                "--out", str(base_out)]
    engine, base = [], []
    for i in range(runs):  # alternate, so drift in the machine's load hits both alike
        order = [("engine", engine_cmd), ("baseline", base_cmd)]
        for who, cmd in order if i % 2 == 0 else order[::-1]:  # and take turns at going first
            _warm_cache(directory)
            (engine if who == "engine" else base).append(measure(cmd, env, ok=(0, 3)))  # 3: some quarantined
    identical = _digest(engine_out) == _digest(base_out)
    state = Path(env["MAPPER_STATE"])
    if state.exists():  # dry-run opens it read-only: it must never appear
        raise SystemExit(f"the engine created {state}: dry-run must not write state")
    size_mb = engine_out.stat().st_size / 1e6
    engine_out.unlink()
    base_out.unlink()

    def summary(samples):
        t = statistics.median(s[0] for s in samples)
        return {"seconds": round(t, 3), "orders_per_s": round(n / t), "rss_mb": round(statistics.median(s[1] for s in samples), 1),
                "cpu_seconds": round(statistics.median(s[2] for s in samples), 3),
                "runs": [{"seconds": round(w, 3), "rss_mb": round(r, 1), "cpu_seconds": round(c, 3)} for w, r, c in samples]}

    e, b = summary(engine), summary(base)
    return {"orders": n, "engine": e, "baseline": b, "ratio": round(e["seconds"] / b["seconds"], 3),
            "ratio_cpu": round(e["cpu_seconds"] / b["cpu_seconds"], 3),
            "identical_output": identical, "output_mb": round(size_mb, 1)}


def _instructions(cmd: list[str], env: dict[str, str]) -> tuple[int, int]:
    """Instructions (all processes, the first process) a command executes, its children (the
    engine's XSD helper) included, counted by callgrind: the same count every time. Each
    process logs to a file of its own: the helper's stderr is not the caller's."""
    with tempfile.TemporaryDirectory(prefix="callgrind-") as logs:
        proc = subprocess.run(["valgrind", "--tool=callgrind", "--trace-children=yes", "--callgrind-out-file=/dev/null",
                               f"--log-file={logs}/%p.log", *cmd], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
        counts, own = [], 0
        for log in Path(logs).glob("*.log"):
            text = log.read_text(errors="replace")
            found = re.search(r"Collected : (\d+)", text)
            if found:
                counts.append(int(found.group(1)))
                if f"Parent PID: {os.getpid()}\n" in text:  # the command's own process, not a child of it
                    own = counts[-1]
    if proc.returncode not in (0, 3) or not counts or not own:
        raise SystemExit(f"callgrind failed on {' '.join(cmd)}:\n{proc.stderr[-2000:]}")
    return sum(counts), own


def bench_instructions(tmp: Path, env: dict[str, str], n: int = 500) -> dict | None:
    """Instructions per order (n orders minus n/2 orders, divided by n/2) for engine and baseline.

    Both sizes are past the point where the engine starts its XSD helper process (200
    records), so the helper's start-up is counted with the start-up, not per order.

    Wall time on a shared machine moves by 30% from one minute to the next; instruction
    counts do not. They are not time (cache misses, branch misses), but they show the
    engine's own overhead per order with no noise, and the start-up cost apart.
    """
    if shutil.which("valgrind") is None:
        print("valgrind not found: no instruction counts", file=sys.stderr)
        return None
    source = fixture_dir(1000)
    names = sorted(p.name for p in source.glob("*.json"))
    counts = {}
    half = n // 2
    for size in (half, n):
        subset = tmp / f"subset-{size}"
        subset.mkdir()
        for name in names[:size]:
            (subset / name).symlink_to(source / name)
        out = tmp / "instructions.xml"
        counts[size] = {
            "engine": _instructions([sys.executable, "-m", "engine.cli", "dry-run", str(MAPPING), "--fixtures",
                                     str(subset), "--out", str(out)], env),
            "baseline": _instructions([sys.executable, str(ROOT / "bench" / "baseline.py"), "--fixtures",
                                       str(subset), "--out", str(out)], env)}
    per = {k: (counts[n][k][0] - counts[half][k][0]) / (n - half) for k in ("engine", "baseline")}
    main = (counts[n]["engine"][1] - counts[half]["engine"][1]) / (n - half)
    return {"orders": n, "per_order_millions": {k: round(v / 1e6, 3) for k, v in per.items()},
            "engine_main_process_per_order_millions": round(main / 1e6, 3),
            "start_millions": {k: round((counts[half][k][0] - half * per[k]) / 1e6) for k in per},
            "ratio_per_order": round(per["engine"] / per["baseline"], 3)}


def bench_cli(args: list[str], env: dict[str, str], runs: int = 5) -> dict:
    times = [measure([sys.executable, "-m", "engine.cli", *args], env)[0] for _ in range(runs)]
    return {"seconds": round(statistics.median(times), 3), "runs": [round(t, 3) for t in times]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="engine vs hand-written baseline, end to end")
    p.add_argument("--quick", action="store_true", help="only 1,000 and 10,000 orders")
    p.add_argument("--sizes", type=int, nargs="+", help="order counts (default 1000 10000 100000)")
    p.add_argument("--runs", type=int, default=3, help="runs per size below 100,000 (default 3)")
    p.add_argument("--runs-large", type=int, default=2, help="runs at 100,000 and above (default 2)")
    p.add_argument("--out", type=Path, default=RESULTS, help="where the JSON goes")
    p.add_argument("--instructions", action="store_true",
                   help="also count instructions per order with valgrind (noise-free ratio; ~90 s)")
    args = p.parse_args(argv)
    sizes = args.sizes or ([1000, 10000] if args.quick else [1000, 10000, 100000])

    started = time.perf_counter()
    results: dict = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                                 "load_avg_at_start": [round(x, 2) for x in os.getloadavg()]},
                     "seed": SEED, "cache": str(CACHE), "targets": TARGETS, "engine_mode": ENGINE_MODE,
                     "sizes": []}
    with tempfile.TemporaryDirectory(prefix="mapper-bench-") as t:
        tmp = Path(t)
        env = _env(tmp)
        print(f"engine: debtors {ENGINE_MODE['debtor_matching']}; MAPPER_STATE={env['MAPPER_STATE']} "
              f"({ENGINE_MODE['state']})", file=sys.stderr)
        measure([sys.executable, "-m", "engine.cli", "validate", str(MAPPING)], env)  # warm-up: bytecode cached
        for n in sizes:
            t0 = time.perf_counter()
            fixture_dir(n)
            gen = time.perf_counter() - t0
            if gen > 1:
                print(f"generated {n:,} orders in {gen:.0f} s", file=sys.stderr)
            row = bench_size(n, args.runs_large if n >= 100000 else args.runs, tmp, env)
            results["sizes"].append(row)
            print(f"{n:>7,} orders: engine {row['engine']['orders_per_s']:>6,}/s {row['engine']['rss_mb']:>6.1f} MB | "
                  f"baseline {row['baseline']['orders_per_s']:>6,}/s {row['baseline']['rss_mb']:>6.1f} MB | "
                  f"ratio {row['ratio']:.2f}", file=sys.stderr)
        results["validate"] = bench_cli(["validate", str(MAPPING)], env)
        results["help"] = bench_cli(["--help"], env)
        if args.instructions:
            results["instructions"] = bench_instructions(tmp, env)

    rows = results["sizes"]
    small, large = rows[0], rows[-1]
    results["rss_growth_mb"] = {
        "from": small["orders"], "to": large["orders"],
        "engine": round(large["engine"]["rss_mb"] - small["engine"]["rss_mb"], 1),
        "baseline": round(large["baseline"]["rss_mb"] - small["baseline"]["rss_mb"], 1)}
    results["wall_seconds"] = round(time.perf_counter() - started, 1)
    at_100k = next((r for r in rows if r["orders"] == 100000), None)
    results["targets_met"] = {
        "ratio_100k": at_100k and at_100k["ratio"] <= TARGETS["ratio_100k"],
        "orders_per_s_100k": at_100k and at_100k["engine"]["orders_per_s"] >= TARGETS["orders_per_s_100k"],
        "rss_growth_mb": results["rss_growth_mb"]["engine"] <= TARGETS["rss_growth_mb"] if at_100k else None,
        "validate_s": results["validate"]["seconds"] < TARGETS["validate_s"],
        "help_s": results["help"]["seconds"] < TARGETS["help_s"],
        "identical_output": all(r["identical_output"] for r in rows),
    }

    print()
    print(f"{'orders':>8} | {'engine/s':>8} {'RSS MB':>7} | {'baseline/s':>10} {'RSS MB':>7} | {'ratio':>5} "
          f"{'cpu ratio':>9} | same bytes")
    print("-" * 82)
    for r in rows:
        print(f"{r['orders']:>8,} | {r['engine']['orders_per_s']:>8,} {r['engine']['rss_mb']:>7.1f} | "
              f"{r['baseline']['orders_per_s']:>10,} {r['baseline']['rss_mb']:>7.1f} | {r['ratio']:>5.2f} "
              f"{r['ratio_cpu']:>9.2f} | {'yes' if r['identical_output'] else 'NO'}")
    g = results["rss_growth_mb"]
    print(f"RSS({g['to']:,}) - RSS({g['from']:,}): engine {g['engine']:+.1f} MB, baseline {g['baseline']:+.1f} MB")
    print(f"mapper validate: {results['validate']['seconds']:.3f} s   mapper --help: {results['help']['seconds']:.3f} s "
          f"(median of 5)")
    if results.get("instructions"):
        ins = results["instructions"]
        print(f"instructions per order (callgrind, {ins['orders']} orders): engine "
              f"{ins['per_order_millions']['engine']:.2f} M, baseline {ins['per_order_millions']['baseline']:.2f} M, "
              f"ratio {ins['ratio_per_order']:.3f} (the engine's own process "
              f"{ins['engine_main_process_per_order_millions']:.2f} M, its XSD helper the rest); start-up engine {ins['start_millions']['engine']:,} M, "
              f"baseline {ins['start_millions']['baseline']:,} M")
    print("targets: " + ", ".join(f"{k} {'ok' if v else ('n/a' if v is None else 'MISSED')}"
                                   for k, v in results["targets_met"].items()))
    print(f"total {results['wall_seconds']:.0f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"-> {args.out}")
    return 0 if results["targets_met"]["identical_output"] else 1


if __name__ == "__main__":
    sys.exit(main())
