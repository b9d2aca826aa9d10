"""The hand-written baseline (bench/baseline.py) and the engine write the same bytes.

Two independent implementations of the CCV -> Asperion conversion: the engine driven by
mappings/ccvshop_asperion.yaml, and plain Python + lxml. They must agree byte for byte on
the golden fixtures and on generated full-size orders (with unpaid, cancelled and
out-of-tolerance orders among them), so the benchmark compares like with like.
"""

import io
import sys

import pytest

from helpers import FIXTURES, FROZEN_NOW, GOLDEN, MAPPING, ROOT
from helpers import run_preview

sys.path.insert(0, str(ROOT / "bench"))
import baseline  # noqa: E402


def _both(directory, monkeypatch):
    monkeypatch.setenv("MAPPER_NOW", FROZEN_NOW)
    engine_xml, summary = run_preview(MAPPING, directory)
    out = io.BytesIO()
    counts = baseline.convert(directory, out)
    return engine_xml, out.getvalue(), summary, counts


def test_golden_fixtures_byte_identical(monkeypatch):
    engine_xml, base_xml, summary, counts = _both(FIXTURES, monkeypatch)
    assert base_xml == engine_xml
    assert base_xml == (GOLDEN / "ccvshop_asperion.xml").read_bytes()
    assert counts["converted"] == summary.converted
    assert counts["quarantined"] == len(summary.quarantined)
    assert counts["excluded"] == sum(summary.excluded.values())


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    from engine.simulators.ccvshop_data import generate_fixture_dir
    directory = tmp_path_factory.mktemp("generated")
    generate_fixture_dir(directory, 300, seed=7301, unpaid_share=0.03, cancelled_share=0.03, non_eur_share=0.3)
    return directory


def test_generated_orders_byte_identical(generated, monkeypatch):
    engine_xml, base_xml, summary, counts = _both(generated, monkeypatch)
    assert summary.converted > 250  # the comparison covers real work, not an empty file
    assert sum(summary.excluded.values()) > 0
    assert base_xml == engine_xml
    assert counts["converted"] == summary.converted
    assert counts["quarantined"] == len(summary.quarantined)
    assert counts["excluded"] == sum(summary.excluded.values())
    assert counts["flags"] == len(summary.flags)
