"""Loopback simulators of the systems mapper talks to, for tests, demos and `--sandbox`.

A mapping's ``sandbox.simulator`` names one of :data:`SANDBOXES`; nothing else can be
started from a mapping.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def ccvshop_sandbox(fixtures_dir: Path) -> Iterator[dict[str, str]]:
    """The demo shop served by the CCV Shop simulator; yields url, public and secret."""
    from engine.simulators.ccvshop import CCVShopSimulator
    from engine.simulators.ccvshop_data import load_fixture_dir

    public, secret = "sandbox-public", "sandbox-secret"
    sim = CCVShopSimulator(load_fixture_dir(fixtures_dir), keys={public: secret})
    sim.start()
    try:
        yield {"url": sim.url, "public": public, "secret": secret}
    finally:
        sim.stop()


@contextmanager
def asperion_sandbox_values(_fixtures_dir: Path) -> Iterator[dict[str, str]]:
    """The Asperion simulator with demo credentials; values prefixed ``asperion_``."""
    from engine.simulators.asperion import asperion_sandbox

    with asperion_sandbox() as values:
        yield {f"asperion_{k}": v for k, v in values.items() if k != "simulator"} | {"asperion_simulator": values["simulator"]}


SANDBOXES = {"ccvshop": ccvshop_sandbox, "asperion": asperion_sandbox_values}
