"""Generated code you can read (issue 13.4): `mapper explain` says how each expression and
template runs and shows the code; a traceback through generated code shows its lines."""
from __future__ import annotations

import traceback

from typer.testing import CliRunner

from engine import cli
from helpers import MAPPING

runner = CliRunner()


def test_explain_lists_every_value_with_how_it_runs():
    out = runner.invoke(cli.app, ["explain", str(MAPPING)])
    assert out.exit_code == 0, out.output
    head = out.output.splitlines()[0]
    assert "169 expressions and templates" in head and "generated Python" in head and "2 Jinja" in head
    lines = out.output.splitlines()[1:]
    assert any("invoice.lines.amount" in line and "field path: row.total_price" in line for line in lines)
    assert any("invoice.description" in line and line.rstrip().endswith("generated Python") for line in lines)
    jinja = [line for line in lines if line.rstrip().endswith("does not cover Assign")]
    assert len(jinja) == 2 and all("checks[" in line for line in jinja)   # the {% set %} of two messages
    numbers = [int(line.split()[0]) for line in lines if line.split()[0].isdigit()]
    assert numbers == sorted(numbers)                                        # in the file's order


def test_explain_code_shows_the_generated_python():
    out = runner.invoke(cli.app, ["explain", str(MAPPING), "--code"]).output
    assert "def _stage1(c, flags, credit=False):" in out
    assert "# the writer of output.record" in out and "def _write(c, out):" in out
    assert "c['record']" in out or 'c["record"]' in out


def test_a_traceback_through_generated_code_shows_its_line():
    from engine.config.mapping import load_mapping
    from engine.convert.stages import compile_stages
    stages = compile_stages(load_mapping(MAPPING))

    class Boom(dict):
        def __getitem__(self, key):
            raise KeyError(key)
    try:
        stages.prelude(Boom(), [])
    except Exception:   # noqa: BLE001 - the traceback is what is looked at
        text = traceback.format_exc()
    assert "<mapper stages of ccvshop-asperion #" in text
    frame = [line for line in text.splitlines() if "<mapper stages of" in line][-1]
    shown = text.splitlines()[text.splitlines().index(frame) + 1].strip()
    assert shown and shown != "???"                  # linecache holds the generated source
