"""engine.config.yamlpos composes with libyaml when it can: the result must not depend on it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from helpers import ROOT
from engine.config import yamlpos
from engine.errors import MappingError

SNIPPETS = {
    "anchors and quoting": """
a: &x
  - {element: A, text: "{{ x }}"}
  - {element: B, text: 'plain', optional: true}
b: *x
c: ${NUM}
d: "${NUM}"
e: ${FLAG:-true}
f: '${MISSING:-}'
""",
    "block scalars and dates": """
msg: >-
  folded
  text
lit: |
  keep
   this
day: 2019-01-01
bad_day: 2019-13-01
n: 0.02
s: "0.02"
empty:
nothing: null
""",
}


def _mappings() -> list[Path]:
    return sorted((ROOT / "mappings").glob("*.yaml"))


@pytest.mark.parametrize("text", [p.read_text("utf-8") for p in _mappings()] + list(SNIPPETS.values()),
                         ids=[p.name for p in _mappings()] + list(SNIPPETS))
def test_libyaml_and_pure_python_load_the_same(text, monkeypatch):
    env = {"NUM": "42", "FLAG": ""}
    fast = yamlpos.load_yaml(text, "m.yaml", environ=env)
    monkeypatch.setattr(yamlpos, "_FAST_LOADER", yaml.SafeLoader)
    pure = yamlpos.load_yaml(text, "m.yaml", environ=env)
    assert fast.data == pure.data
    assert fast.values == pure.values and fast.keys == pure.keys
    assert fast.collections == pure.collections and fast.from_env == pure.from_env


def test_unquoted_variable_takes_its_yaml_type_quoted_stays_text():
    loaded = yamlpos.load_yaml(SNIPPETS["anchors and quoting"], "m.yaml", environ={"NUM": "42", "FLAG": ""})
    assert loaded.data["c"] == 42 and loaded.data["d"] == "42" and loaded.data["e"] is True
    assert loaded.data["f"] == ""


def test_a_yaml_error_keeps_pyyaml_wording_and_position():
    with pytest.raises(MappingError) as info:
        yamlpos.load_yaml("a: 1\nb: [1, 2\nc: 3\n", "m.yaml", environ={})
    err = info.value
    assert "not valid YAML" in str(err) and err.line is not None and err.line >= 2
    assert "expected ',' or ']', but got ':'" in str(err)  # PyYAML's words, not libyaml's
