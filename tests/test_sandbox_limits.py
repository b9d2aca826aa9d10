"""The template sandbox has a clock and a ceiling, and ${VAR} reads only what it may (issue:
nothing lost, nothing let in, 6). A template that loops too long, a pattern that would backtrack
for ever, a text that doubles itself: each quarantines its order and the run goes on."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import FIXTURES, MAPPING, ROOT
from engine.errors import MappingError, MappingErrors
from engine.config.mapping import load_mapping

DESCRIPTION = ('  description: "Bestelling {{ record.ordernumber_full }}{% if record.invoicenumber %} factuur '
               '{{ record.invoicenumber }}{% endif %}"')
VICTIM = "500000001"


def variant(tmp_path: Path, description: str | None = None, extra: str = "", name: str = "m.yaml") -> Path:
    text = MAPPING.read_text("utf-8")
    assert DESCRIPTION in text
    if description is not None:
        text = text.replace(DESCRIPTION, f"  description: >-\n    {description}")
    text = text.replace("xsd: ../schemas/", f"xsd: {ROOT / 'schemas'}/") + extra
    path = tmp_path / name
    path.write_text(text, "utf-8")
    return path


def run(tmp_path: Path, mapping: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.cli", "run", str(mapping), "--fixtures", str(FIXTURES),
                           "--state", str(tmp_path / "s.sqlite"), "--outbox", str(tmp_path / "out"),
                           "--since", "2020-01-01"], capture_output=True, text=True, timeout=300)


def quarantine_line(result: subprocess.CompletedProcess) -> str:
    return next(l for l in result.stdout.splitlines() if f"(id {VICTIM})" in l)


def test_nested_loops_run_out_of_time_and_only_their_order_is_quarantined(tmp_path):
    slow = (f"{{% if record.id == {VICTIM} %}}{{% for i in range(100000) %}}{{% for j in range(100000) %}}"
            f"{{% endfor %}}{{% endfor %}}{{% endif %}}Bestelling {{{{ record.ordernumber_full }}}}")
    mapping = variant(tmp_path, slow, "\nlimits: {seconds_per_record: 0.5}\n")
    started = time.monotonic()
    result = run(tmp_path, mapping)
    assert time.monotonic() - started < 60, "the run hung"
    assert result.returncode == 3 and "Traceback" not in result.stderr, result.stderr
    line = quarantine_line(result)
    assert "time budget of 0.5 s" in line and "limits.seconds_per_record" in line
    assert list((tmp_path / "out").glob("*.xml"))                       # the others went out


def test_a_catastrophic_pattern_does_not_backtrack(tmp_path):
    test = (f"{{% if record.id == {VICTIM} and ('a' * 5000 ~ 'b') is matching('(a+)+$') %}}x{{% endif %}}"
            f"Bestelling {{{{ record.ordernumber_full }}}}")
    started = time.monotonic()
    result = run(tmp_path, variant(tmp_path, test))
    assert time.monotonic() - started < 60
    assert result.returncode in (0, 3), result.stderr
    assert f"(id {VICTIM})" not in result.stdout                        # it simply does not match


def test_a_pattern_re2_cannot_run_quarantines_in_words(tmp_path):
    test = (f"{{% if record.id == {VICTIM} and record.ordernumber_full is matching('(1)\\\\1') %}}x{{% endif %}}"
            f"Bestelling {{{{ record.ordernumber_full }}}}")
    result = run(tmp_path, variant(tmp_path, test))
    assert result.returncode == 3, result.stdout + result.stderr
    line = quarantine_line(result)
    assert "back-references and look-arounds are not supported" in line
    assert "re2" not in result.stderr.lower()                           # no library log noise


@pytest.mark.parametrize("grow", [
    "{% set s = s ~ s %}",
    "{% set s = s + s %}",
    "{% set s = [s, s] | join %}",
    "{% set s = s | replace('x', 'xx') %}",
])
def test_a_text_that_doubles_itself_hits_the_ceiling(tmp_path, grow):
    # before: 2 ** 64 characters asked for, memory exhausted, a traceback, no run
    template = (f"{{% if record.id == {VICTIM} %}}{{% set s = 'x' %}}{grow * 64}{{% endif %}}"
                f"Bestelling {{{{ record.ordernumber_full }}}}")
    result = run(tmp_path, variant(tmp_path, template, "\nlimits: {seconds_per_record: 5}\n"))
    assert result.returncode == 3 and "Traceback" not in result.stderr, result.stderr
    line = quarantine_line(result)
    assert "longer than a mapping may build (1000000)" in line, line


def test_a_variable_the_mapping_may_not_read_is_a_load_error(tmp_path):
    mapping = variant(tmp_path, 'Bestelling {{ record.ordernumber_full }} ${HOME}')
    with pytest.raises(MappingError) as err:
        load_mapping(mapping)
    assert re.search(r"m\.yaml:\d+:\d+: \$\{HOME\} is not a variable this mapping may read", str(err.value))
    declared = variant(tmp_path, 'Bestelling {{ record.ordernumber_full }} ${SHOP_LABEL:-x}',
                       "\nvariables: {plain: [SHOP_LABEL]}\n", name="ok.yaml")
    assert load_mapping(declared).name == "ccvshop-asperion"


@pytest.mark.parametrize("name", ["CCVSHOP_SECRET_KEY", "ASPERION_CLIENT_SECRET", "MAPPER_ADMIN_PASSWORD"])
def test_a_secret_outside_an_auth_block_is_a_load_error(tmp_path, name, monkeypatch):
    monkeypatch.setenv(name, "do-not-print-me")
    mapping = variant(tmp_path, f"Bestelling {{{{ record.ordernumber_full }}}} ${{{name}}}")
    with pytest.raises((MappingError, MappingErrors)) as err:
        load_mapping(mapping)
    assert f"${{{name}}} holds a secret and may only be used in source.http.auth" in str(err.value)
    assert "do-not-print-me" not in str(err.value)


@pytest.mark.parametrize("walked", ["'x' * 100000", "[1] * 100000"])
def test_nested_loops_over_a_text_or_list_run_out_of_time_too(tmp_path, walked):
    # before: a for loop over a text or list asked the sandbox nothing (no call, no range),
    # so the time budget was never checked and the run hung, holding the lock
    slow = (f"{{% if record.id == {VICTIM} %}}{{% set l = {walked} %}}{{% for a in l %}}{{% for b in l %}}"
            f"{{% endfor %}}{{% endfor %}}{{% endif %}}Bestelling {{{{ record.ordernumber_full }}}}")
    mapping = variant(tmp_path, slow, "\nlimits: {seconds_per_record: 0.5}\n")
    try:
        result = run(tmp_path, mapping)
    except subprocess.TimeoutExpired:
        pytest.fail("the run hung: a for loop over a list is not on the clock")
    assert result.returncode == 3 and "Traceback" not in result.stderr, result.stderr
    line = quarantine_line(result)
    assert "time budget of 0.5 s" in line and "limits.seconds_per_record" in line
    assert list((tmp_path / "out").glob("*.xml"))                       # the others went out
