"""Broken mappings: each error names FILE:LINE:COL, says what is wrong, and exits 2."""

import json
import re

import pytest
from typer.testing import CliRunner

from engine import cli
from helpers import MAPPING
from engine.errors import MappingError, MappingErrors
from engine.config.mapping import load_mapping

BASE = MAPPING.read_text(encoding="utf-8")

# (id, old text, new text, expected message regex, text on the line the error must point at)
CASES = [
    ("unknown top-level key", "\npreview:\n", "\npreveiw:\n", r"unknown key 'preveiw'.*did you mean 'preview'\?", "preveiw:"),
    ("unknown nested key", "  vat_rounding: per_line", "  vat_roundng: per_line",
     r"unknown key 'vat_roundng' in invoice \(did you mean 'vat_rounding'\?\)", "vat_roundng:"),
    ("missing required key", "name: ccvshop-asperion\n", "", r"\(top level\): missing required key 'name'", None),
    ("wrong type", "per_file: 500", "per_file: many", r"output\.per_file: expected a whole number, got \"many\"", "per_file: many"),
    ("not in enum", "vat_rounding: per_line", "vat_rounding: per_invoice",
     r"invoice\.vat_rounding: must be one of: per_line, per_rate; got \"per_invoice\"", "vat_rounding: per_invoice"),
    ("template syntax", '{% if record.invoicenumber %} factuur', '{% if record.invoicenumber %} factuur {{ record.x }',
     r"invoice\.description: template does not parse", "description: \"Bestelling"),
    ("expression syntax", "  - record.paid   ", "  - record.paid ==  ", r"where\[0\]: expression does not parse", "record.paid =="),
    # a forgotten operator: Jinja reads "record.paid" and refuses the rest; never the first half alone
    ("text after an expression", "  - record.is_completed ", "  - record.is_completed record.paid ",
     r"where\[1\]: expression does not parse", "record.is_completed record.paid"),
    ("braces around an expression", "  - record.status != 8 ", "  - record.status != 8 }} ",
     r"where\[2\]: expression does not parse", "record.status != 8 }}"),
    ("bad attribute name", "attributes: {type: invoice}", "attributes: {ty pe: invoice}",
     r"attributes.*does not have the expected form|ty pe", "ty pe"),
    ("unset environment variable", "path: ${MAPPER_OUTBOX:-./outbox}", "path: ${MAPPER_NO_SUCH_DIR}/x",
     r"environment variable MAPPER_NO_SUCH_DIR is not set \(export MAPPER_NO_SUCH_DIR=", "MAPPER_NO_SUCH_DIR"),
    ("bad YAML", "  records:\n    path: /api/rest/v1/orders", "  records:\n    path: [/api/rest/v1/orders",
     r"not valid YAML", None),
    ("duplicate key", "  look_back_days: 90", "  look_back_days: 90\n  look_back_days: 30",
     r"duplicate key 'look_back_days'", "look_back_days: 30"),
    ("wrong version", "version: 1", "version: 2", r"version: must be 1; got 2", "version: 2"),
    ("bad date in VAT rule", "from: 2019-01-01}", "from: 2019-13-01}", r"vat\.classes\[1\]\.from: .*2019-13-01.*does not have|not a valid date",
     "2019-13-01"),
    ("bad element name", "element: Orderline", "element: Order line", r"output\.record\.children\[9\]\.element: .*does not have the expected form", "element: Order line"),
    ("XSD missing", "xsd: ../schemas/asperion_axml.xsd", "xsd: ../schemas/nope.xsd", r"XSD file not found: \.\./schemas/nope\.xsd", "nope.xsd"),
    ("no records element", "- {element: Orders, records: true}", "- {element: Orders}",
     r"output\.document needs exactly one element with records: true", "document:"),
    ("tolerance without rounding line", "  rounding_line: {label: Afrondingsverschil, rate: 0, vat_class: Nul}\n", "",
     r"a tolerance needs invoice\.rounding_line", "tolerance:"),
    ("unknown auth kind", "kind: hmac", "kind: oauth", r"source\.http\.auth\.kind: must be one of: hmac, bearer, none", "kind: oauth"),
    ("mapping expected", "intake:\n  look_back_days: 90", "intake: 90\nintake_was:\n  look_back_days: 90", r"intake: expected a mapping of keys, got 90", "intake: 90"),
    ("bad mapping name", "name: ccvshop-asperion", "name: CCV Shop", r"name: \"CCV Shop\" does not have the expected form", "name: CCV Shop"),
    ("text and children", "      - element: Debtor\n", "      - element: Debtor\n        text: oops\n",
     r"element Debtor has both text and children", "element: Debtor"),
    ("records in the record element", "    element: Order\n    children:", "    element: Order\n    records: true\n    children:",
     r"records: true belongs in output\.document", "records: true"),
    ("condition on the records element", "- {element: Orders, records: true}", "- {element: Orders, records: true, when: 'true'}",
     r"when cannot be used on <Orders>: it holds the records", "element: Orders"),
    ("unset variable in an enum key", "plan: ${MAPPER_PLAN:-plus}", "plan: ${MAPPER_NO_SUCH_PLAN}",
     r"environment variable MAPPER_NO_SUCH_PLAN is not set", "plan: ${MAPPER_NO_SUCH_PLAN}"),
    ("vat section missing", "\nvat:\n  classes:", "\nvat_was:\n  classes:", r"missing required key 'vat'", None),
    ("expression in an element condition", "when: has_delivery_address", "when: has_delivery_address and",
     r"when: expression does not parse", "when: has_delivery_address and"),
]


def _load(tmp_path, text):
    path = tmp_path / "broken.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_broken_mapping_is_reported_with_position(tmp_path, case):
    name, old, new, pattern, line_text = case
    assert old in BASE, f"test case {name!r} no longer matches the default mapping"
    text = BASE.replace(old, new, 1)
    path = _load(tmp_path, text)
    with pytest.raises((MappingError, MappingErrors)) as info:
        load_mapping(path)
    errors = info.value.errors if isinstance(info.value, MappingErrors) else [info.value]
    matching = [e for e in errors if re.search(pattern, e.format())]
    assert matching, f"no error matches {pattern!r}: {[e.format() for e in errors]}"
    err = matching[0]
    assert err.file == str(path) and err.line is not None and err.column is not None
    assert err.format().startswith(f"{path}:{err.line}:{err.column}: ")
    if line_text is not None:
        assert line_text in text.splitlines()[err.line - 1], f"points at line {err.line}: {text.splitlines()[err.line - 1]!r}"


def test_empty_file(tmp_path):
    with pytest.raises(MappingError, match=r"broken\.yaml:1:1: the mapping file is empty"):
        load_mapping(_load(tmp_path, "# nothing\n"))


def test_missing_file_names_the_path():
    with pytest.raises(MappingError, match="mapping file not found: nowhere/x.yaml"):
        load_mapping("nowhere/x.yaml")


def test_validate_exits_2_with_the_message(tmp_path):
    path = _load(tmp_path, BASE.replace("per_file: 500", "per_file: many"))
    result = CliRunner().invoke(cli.app, ["validate", str(path)])
    assert result.exit_code == 2
    assert re.search(rf"{re.escape(str(path))}:\d+:\d+: output\.per_file: expected a whole number", result.output)
    assert "Traceback" not in result.output


def test_several_errors_are_reported_together(tmp_path):
    text = BASE.replace("per_file: 500", "per_file: many").replace("vat_rounding: per_line", "vat_rounding: x")
    with pytest.raises(MappingErrors) as info:
        load_mapping(_load(tmp_path, text))
    assert len(info.value.errors) == 2


def test_secret_from_the_environment_is_never_echoed(tmp_path, monkeypatch):
    monkeypatch.setenv("MAPPER_SECRET_PAGE_SIZE", "hunter2-topsecret")
    text = BASE.replace("look_back_days: 90", "look_back_days: ${MAPPER_SECRET_PAGE_SIZE}")
    with pytest.raises(MappingError) as info:
        load_mapping(_load(tmp_path, text))
    assert "hunter2" not in info.value.format()
    assert "the value from the environment" in info.value.format()


def test_default_mapping_is_valid():
    result = CliRunner().invoke(cli.app, ["validate", str(MAPPING)])
    assert result.exit_code == 0, result.output
    assert "ok" in result.output


def test_schema_json_is_built_from_build_schema_py():
    import runpy
    built = runpy.run_path(str(MAPPING.parent.parent / "schemas" / "build_schema.py"))["schema"]
    on_disk = json.loads((MAPPING.parent.parent / "schemas" / "mapping.schema.json").read_text(encoding="utf-8"))
    assert built == on_disk, "run python schemas/build_schema.py"
