"""Small helpers shared by the engine tests."""

import io
import json
import os
from decimal import Decimal
from pathlib import Path

from engine.config.mapping import load_mapping
from engine.simulators.ccvshop_data import dumps_ccv
from engine.ops.preview_run import dry_run
from engine.io.sources.fixtures import FixtureSource

ROOT = Path(__file__).resolve().parent.parent  # the checkout: mappings, fixtures, golden files
MAPPING = ROOT / "mappings" / "ccvshop_asperion.yaml"
FIXTURES = ROOT / "tests" / "fixtures" / "ccvshop"
GOLDEN = ROOT / "tests" / "golden"
FROZEN_NOW = "2026-11-26T21:00:00Z"


def pg_admin_url() -> str:
    """The PostgreSQL server the tests make their databases on (MAPPER_TEST_POSTGRES names another)."""
    return os.environ.get("MAPPER_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


def run_preview(mapping_path, fixtures_dir, **kw):
    """Dry-run a mapping over a fixture directory: (xml bytes, summary)."""
    m = load_mapping(mapping_path)
    out = io.BytesIO()
    summary = dry_run(m, FixtureSource(fixtures_dir), out, **kw)
    return out.getvalue(), summary


def write_order(directory: Path, name: str, order: dict) -> Path:
    path = directory / name
    path.write_text(dumps_ccv(order), encoding="utf-8")
    return path


def load_order(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"), parse_float=Decimal)
