"""Generated fixture directories for the benchmark, cached by size and seed.

    python bench/generate.py 10000            # prints the directory

Each directory holds ``n`` full-size orders (``engine.simulators.ccvshop_data.generate_orders``)
in the fixture layout; a ``.complete`` marker is written last, so an interrupted
generation is redone, not reused.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SEED = 20261126
CACHE = Path(os.environ.get("MAPPER_BENCH_CACHE", Path(tempfile.gettempdir()) / "mapper-bench-cache"))


def fixture_dir(n: int, seed: int = SEED, cache: Path = CACHE) -> Path:
    """The directory with ``n`` generated orders (seed ``seed``), generating it if needed."""
    from engine.simulators.ccvshop_data import generate_fixture_dir

    target = cache / f"ccvshop-n{n}-seed{seed}"
    if (target / ".complete").exists():
        return target
    if target.exists():
        shutil.rmtree(target)
    work = cache / f".{target.name}.tmp"
    if work.exists():
        shutil.rmtree(work)
    generate_fixture_dir(work, n, seed=seed)
    (work / ".complete").write_text(f"{n} orders, seed {seed}\n")
    work.rename(target)
    return target


if __name__ == "__main__":
    for arg in sys.argv[1:] or ["1000"]:
        print(fixture_dir(int(arg)))
