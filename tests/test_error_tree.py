"""One error tree (issue 13.6): every exception the engine raises for a person to read derives
from engine.errors.MapperError and carries its exit code; the command line reports them in one
place (cli.Commands). The few that do not are internal signals, caught inside the engine."""
from __future__ import annotations

import importlib
import inspect
import pkgutil

import engine
from engine.errors import ConfigError, MapperError

#: caught where they are raised and turned into a MapperError (or an HTTP answer) there
INTERNAL = {
    "engine.expr.sandbox.EvaluationError": "a template failed: becomes OrderError/MappingError naming the field",
    "engine.expr.sandbox.TimeBudgetExceeded": "a record's time budget: becomes an OrderError",
    "engine.expr.generator.Unsupported": "a node kind the code generator does not cover: Jinja evaluates it",
    "engine.expr.filters.NoMatch": "a lookup filter found nothing: becomes an EvaluationError",
    "engine.output.xsd_process.HelperStopped": "the XSD helper process died: the check runs in-process",
    "engine.ops.webhooks.HintRefused": "a hint past its bounds: answered 429",
    "engine.ops.webhooks.BadHint": "a webhook body that is no hint: answered 4xx",
    "engine.hosted.appstore.BadHandshake": "a handshake that is no handshake: answered 400",
    "engine.web.context.BodyTooLarge": "a request body past its bound: answered 413",
}


def _engine_exceptions():
    for info in pkgutil.walk_packages(engine.__path__, "engine."):
        if info.name.startswith("engine.simulators"):  # the simulators' HTTP errors are theirs
            continue
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == info.name \
                    and not name.startswith("_"):
                yield f"{info.name}.{name}", obj


def test_every_public_engine_exception_is_a_mapper_error_or_a_named_internal_signal():
    found = dict(_engine_exceptions())
    outside = {name for name, cls in found.items() if not issubclass(cls, MapperError)}
    assert outside == set(INTERNAL), f"outside the tree: {sorted(outside - set(INTERNAL))}"
    for name, cls in found.items():
        if issubclass(cls, MapperError):
            assert isinstance(cls.exit_code, int) and cls.exit_code in (1, 2, 4), name


def test_configuration_errors_exit_2_and_one_source_error():
    from engine.io.http.auth import AuthConfigError
    from engine.io.http.client import HttpConfigError, HttpError
    from engine.io.http.pagination import PaginationError
    from engine.errors import SourceError
    from engine.io.sources.http import ShapeError
    assert issubclass(HttpConfigError, ConfigError) and issubclass(AuthConfigError, ConfigError)
    assert HttpConfigError("x").exit_code == AuthConfigError("x").exit_code == 2
    assert HttpError("x").exit_code == 1
    assert issubclass(PaginationError, SourceError) and issubclass(ShapeError, SourceError)
    names = [name for name, _ in _engine_exceptions() if name.endswith(".SourceError")]
    assert names == ["engine.errors.SourceError"]


def test_the_command_line_has_one_handler():
    from engine import cli
    source = inspect.getsource(cli)
    assert source.count("except MapperError") == 1            # in cli.Commands
    assert "http_errors" not in source


def test_an_http_error_in_a_command_is_one_line_and_its_exit_code(tmp_path):
    """An engine error raised inside any command: `error: …` on stderr, exit 1, no traceback."""
    from typer.testing import CliRunner
    from engine import cli
    from helpers import MAPPING
    result = CliRunner().invoke(cli.app, ["run", str(MAPPING), "--state", str(tmp_path / "s.sqlite"),
                                          "--outbox", str(tmp_path / "out")],
                                env={"CCVSHOP_URL": "http://127.0.0.1:9", "CCVSHOP_PUBLIC_KEY": "p",
                                     "CCVSHOP_SECRET_KEY": "s" * 20})
    assert result.exit_code == 1, result.output
    assert result.output.startswith("error: ") and "Traceback" not in result.output
    assert "s" * 20 not in result.output
