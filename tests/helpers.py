"""Small helpers shared by the engine tests."""

import io
import json
from decimal import Decimal
from pathlib import Path

from engine.mapping import load_mapping
from simulators.ccvshop_data import dumps_ccv
from engine.preview_run import dry_run
from engine.sources.fixtures import FixtureSource


def run_preview(mapping_path, fixtures_dir, **kw):
    """Dry-run a mapping over a fixture directory: (xml bytes, summary)."""
    m = load_mapping(mapping_path)
    out = io.BytesIO()
    summary = dry_run(m, FixtureSource(fixtures_dir).records(), out, **kw)
    return out.getvalue(), summary


def write_order(directory: Path, name: str, order: dict) -> Path:
    path = directory / name
    path.write_text(dumps_ccv(order), encoding="utf-8")
    return path


def load_order(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"), parse_float=Decimal)
