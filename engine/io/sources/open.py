"""Choosing a mapping's source: the fixture directory, or the declared HTTP API."""

from __future__ import annotations

import contextlib
import os
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Iterator

from engine.config.specs import SandboxSpec
from engine.errors import MappingError, SourceError
from engine.expr.expressions import EvaluationError, Template
from engine.io.sources.fixtures import FixtureSource


@lru_cache(maxsize=256)
def _template(source: str) -> Template:
    return Template(source)


def render(source: str, context: dict) -> str:
    """Render a source template (path, parameter) for the HTTP source."""
    try:
        return _template(source)(context)
    except EvaluationError as exc:
        raise SourceError(f"source template {source!r}: {exc}") from None


def open_source(mapping, fixtures: str | Path | None = None):
    """A source with ``records(window)`` and ``lookup(id)``."""
    if fixtures is not None:
        from engine.expr.projection import decoder
        return FixtureSource(fixtures, id_of=lambda record: str(mapping.record_id({"record": record})),
                             decode=decoder(mapping))
    spec = mapping.source_spec()
    if spec.http is None:
        raise MappingError("this mapping declares no source.http: give --fixtures DIR", file=str(mapping.file))
    from engine.io.sources.http import HttpSource
    from engine.io.http.auth import AuthConfigError
    from engine.io.http.client import HttpConfigError, HttpError
    try:
        return HttpSource(spec, render)
    except (HttpConfigError, AuthConfigError) as exc:   # the configuration is wrong: exit 2
        raise MappingError(f"source: {exc}", file=str(mapping.file)) from None
    except HttpError as exc:
        raise SourceError(f"cannot use the shop API: {exc}") from None
    except ValueError as exc:
        raise MappingError(f"source: {exc}", file=str(mapping.file)) from None


@contextlib.contextmanager
def sandbox_environment(spec: SandboxSpec | None, file: str) -> Iterator[dict[str, str]]:
    """Start the simulator a mapping's ``sandbox`` declares; yield the environment to load it with."""
    from engine.resources import demo_fixtures_dir
    if spec is None:
        raise MappingError("this mapping declares no sandbox", file=file,
                           hint="add sandbox: {simulator: ccvshop, env: {...}} or use --fixtures DIR")
    try:
        from engine.simulators import SANDBOXES
    except ImportError:  # pragma: no cover - installed without the simulators
        raise MappingError("the simulators are not installed, so --sandbox cannot run") from None
    start = SANDBOXES.get(spec.simulator)
    if start is None:
        raise MappingError(f"unknown sandbox simulator '{spec.simulator}'", file=file,
                           hint=f"one of: {', '.join(SANDBOXES)}")
    with contextlib.ExitStack() as stack:
        values = dict(stack.enter_context(start(demo_fixtures_dir())))
        if spec.also:
            values.update(stack.enter_context(SANDBOXES[spec.also](demo_fixtures_dir())))
        values["tmpdir"] = stack.enter_context(tempfile.TemporaryDirectory(prefix="mapper-sandbox-"))
        env = dict(os.environ)
        for k, v in spec.env.items():
            try:
                env[k] = v.format(**values)
            except (KeyError, IndexError, ValueError) as exc:
                raise MappingError(f"sandbox.env.{k}: unknown placeholder {exc} in {v!r}", file=file,
                                   hint=f"known: {', '.join('{' + n + '}' for n in sorted(values))}") from None
        yield env
