"""`mapper validate` checks every template and variable, in every section that holds one
(the part of issue "a house a newcomer can live in" about the validator), and configuration
errors exit 2. Table-driven: one broken value per section, through the real CLI."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import FIXTURES, MAPPING, ROOT

BASE = MAPPING.read_text("utf-8")


def cli(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=120, env=env)


def broken(tmp_path: Path, old: str, new: str) -> Path:
    assert old in BASE, f"{old!r} no longer in the default mapping"
    path = tmp_path / "broken.yaml"
    path.write_text(BASE.replace(old, new, 1).replace("xsd: ../schemas/", f"xsd: {ROOT / 'schemas'}/"), "utf-8")
    return path


@pytest.mark.parametrize("section, old, new", [
    ("source.records.params", 'min_create_date: "{{ window.start }}"', 'min_create_date: "{{ window.start }"'),
    ("source.records.path", "path: /api/rest/v1/orders\n", 'path: "/api/rest/v1/orders{% if %}"\n'),
    ("source.records.expand.orderrows.path", 'path: "/api/rest/v1/orders/{{ record.id }}/orderrows"',
     'path: "/api/rest/v1/orders/{{ record.id }/orderrows"'),
    ("source.lookup.path", 'lookup: {path: "/api/rest/v1/orders/{{ id }}"}', 'lookup: {path: "/api/rest/v1/orders/{{ id"}'),
    ("sink.directory.name", 'name: "ccvshop-asperion-{{ batch.date }}-{{ batch.seq }}.xml"',
     'name: "ccvshop-asperion-{{ batch.date }}-{{ batch.seq }.xml"'),
    ("sink.report", 'report: "${MAPPER_REPORTS:-./reports}/{{ run.started }}-run{{ run.id }}.json"',
     'report: "${MAPPER_REPORTS:-./reports}/{{ run.started }-run{{ run.id }}.json"'),
])
def test_a_broken_template_in_any_section_fails_validate_with_its_position(tmp_path, section, old, new):
    path = broken(tmp_path, old, new)
    result = cli("validate", path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert re.search(rf"broken\.yaml:\d+:\d+: .*{re.escape(section)}", result.stderr), result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("value", ["${MAPPER_OUTBOX:-./outbox", "${MAPPER_OUTBOX-x}", "${MAPPER_OUTBOX:x}"])
def test_a_malformed_variable_is_a_load_error(tmp_path, value):
    path = broken(tmp_path, "path: ${MAPPER_OUTBOX:-./outbox}", f'path: "{value}"')
    result = cli("validate", path)
    assert result.returncode == 2 and "malformed variable" in result.stderr, result.stderr
    assert re.search(r"broken\.yaml:\d+:\d+:", result.stderr)


def test_configuration_errors_exit_2(tmp_path):
    env = dict(os.environ, CCVSHOP_URL="http://shop.example.nl", CCVSHOP_PUBLIC_KEY="p", CCVSHOP_SECRET_KEY="s")
    plain = cli("dry-run", MAPPING, env=env)
    assert plain.returncode == 2 and "plain http" in plain.stderr, plain.stderr
    missing = cli("dry-run", MAPPING, "--fixtures", tmp_path / "nowhere")
    assert missing.returncode == 2 and "fixture directory not found" in missing.stderr, missing.stderr


def test_a_report_name_that_fails_at_run_time_is_a_warning_not_a_failed_run(tmp_path):
    path = broken(tmp_path, 'report: "${MAPPER_REPORTS:-./reports}/{{ run.started }}-run{{ run.id }}.json"',
                  'report: "${MAPPER_REPORTS:-./reports}/{{ run.nope.deeper }}.json"')
    result = cli("run", path, "--fixtures", FIXTURES, "--state", tmp_path / "s.sqlite", "--outbox",
                 tmp_path / "out", "--since", "2020-01-01")
    assert result.returncode in (0, 3), result.stderr              # the delivery stands
    assert "warning: could not name the run report" in result.stderr
    assert list((tmp_path / "out").glob("*.xml"))
