"""Templates are sandboxed and strict: no Python internals, no silent blanks."""

import pytest

from engine.errors import MappingError
from engine.expr.expressions import EvaluationError, Expression, Template, compile_expression, compile_template

CTX = {"record": {"a": {"b": 3}, "items": [1, 2], "name": "Zoë", "empty": None}, "tables": {"t": {"x": "y"}}}


@pytest.mark.parametrize("source", [
    "record.__class__",
    "record.a.__class__.__mro__",
    "record.get.__globals__",
    "record.a.items.__self__",
    "().__class__.__bases__[0].__subclasses__()",
    "record.a.update({'b': 4})",  # immutable sandbox: no mutation of the order
    "lipsum.__globals__",
    "cycler.__init__.__globals__",
])
def test_expressions_cannot_reach_python_internals(source):
    with pytest.raises(EvaluationError):
        Expression(source)(CTX)
    assert CTX["record"]["a"] == {"b": 3}


@pytest.mark.parametrize("source", [
    "{{ record.__class__.__mro__ }}",
    "{{ self.__init__.__globals__ }}",
    "{{ range.__globals__ }}",
    "{% for c in ().__class__.__base__.__subclasses__() %}{{ c }}{% endfor %}",
    "{{ config }}{{ request }}",
])
def test_templates_cannot_reach_python_internals(source):
    with pytest.raises(EvaluationError):
        Template(source)(CTX)


def test_no_file_or_environment_access():
    # Neither open() nor os is reachable: names that are not in the context are undefined.
    for source in ("open('/etc/passwd').read()", "os.environ", "__import__('os')"):
        with pytest.raises(EvaluationError):
            Expression(source)(CTX)


@pytest.mark.parametrize("source", ["record.missing", "record.a.missing", "record.missing + 1", "nothing"])
def test_undefined_is_an_error_not_a_blank(source):
    with pytest.raises(EvaluationError, match="undefined|no field"):
        Expression(source)(CTX)
    with pytest.raises(EvaluationError):
        Template("x {{ " + source + " }} y")(CTX)


def test_null_in_a_path_names_where_it_stopped():
    with pytest.raises(EvaluationError, match="'record.empty' is empty"):
        Expression("record.empty.x")(CTX)


def test_plain_paths_and_jinja_agree():
    assert Expression("record.a.b")(CTX) == Expression("(record.a.b)")(CTX) == 3
    assert Template("{{ record.name }}")(CTX) == Template("{{ record.name ~ '' }}")(CTX) == "Zoë"
    # on a mapping, a.b means the key first (plain Jinja would give the dict method)
    assert Expression("record.items")(CTX) == [1, 2] == Expression("(record.items)")(CTX)


def test_none_renders_empty():
    assert Template("[{{ record.empty }}]")(CTX) == "[]"


def test_syntax_errors_fail_at_load_with_position():
    with pytest.raises(MappingError, match=r"m.yaml:7:3: f: expression does not parse"):
        compile_expression("record.a ==", file="m.yaml", line=7, column=3, field="f")
    with pytest.raises(MappingError, match=r"m.yaml:9:.*template does not parse"):
        compile_template("{{ record.a }", file="m.yaml", line=9, column=3, field="f")


@pytest.mark.parametrize("source, expected", [
    ("{{ '1234ab' | postcode }}", "1234 AB"),
    ("{{ 'B-1000' | postcode('BE') }}", "B-1000"),
    ("{{ '  Jan@Example.NL ' | normalise_email }}", "jan@example.nl"),
    ("{{ '„Quote“ \x01x' | clean }}", '"Quote" x'),
    ("{{ '2026-12-31T23:30:00Z' | local_date }}", "2027-01-01"),
    ("{{ '2026-06-30T22:30:00Z' | local_date }}", "2026-07-01"),
    ("{{ '2014-12-21' | date_format('%m-%Y') }}", "12-2014"),
    ("{{ '1043.45' | decimal | dutch_money }}", "€ 1.043,45"),
    ("{{ ' nl 8583.74.659 b01 ' | compact }}", "NL858374659B01"),
    ("{{ 'JAN de  Vries' | fold_name == 'Jan de Vries' | fold_name }}", "True"),
])
def test_filters(source, expected):
    # (a float literal would be refused by | decimal: amounts are never floats)
    assert Template(source)({}) == expected
