"""Validating a mapping against schemas/mapping.schema.json, with positions and hints."""

from __future__ import annotations

import difflib
import json
from functools import lru_cache
from pathlib import Path

import jsonschema
from jsonschema.exceptions import ValidationError

from engine.errors import MappingError
from engine.io.http.auth import auth_schema, registered_auth_kinds
from engine.io.http.pagination import paginate_schema, registered_paginator_kinds
from engine.resources import mapping_schema_path
from engine.config.yamlpos import Located, dotted

_TYPE_NAMES = {"string": "text", "object": "a mapping of keys", "array": "a list", "integer": "a whole number",
               "number": "a number", "boolean": "true or false", "null": "empty"}


@lru_cache(maxsize=4)
def _validator(path: str, kinds: tuple[tuple[str, ...], tuple[str, ...]]) -> jsonschema.Draft202012Validator:
    """The schema at ``path`` with its auth and paginate blocks made of the registries as they
    are now (``kinds`` keys the cache: a kind registered since gives a new validator)."""
    schema = json.loads(Path(path).read_text(encoding="utf-8"))
    defs = schema.setdefault("$defs", {})
    defs["auth"], defs["paginate"] = auth_schema(), paginate_schema()
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


def check(located: Located, schema_path: Path | None = None) -> list[MappingError]:
    kinds = (tuple(registered_auth_kinds()), tuple(registered_paginator_kinds()))
    validator = _validator(str(schema_path or mapping_schema_path()), kinds)
    errors = []
    for err in sorted(validator.iter_errors(located.data), key=lambda e: list(map(str, e.absolute_path))):
        errors.extend(_explain(err, located))
    # one message per position is enough
    seen, unique = set(), []
    for e in errors:
        key = (e.line, e.column, e.message)
        if key not in seen:
            seen.add(key)
            unique.append(e)
    return sorted(unique, key=lambda e: (e.line or 0, e.column or 0))


def _kinds(alternatives) -> list[str]:
    """The 'kind' constants of oneOf alternatives, when every alternative has one."""
    out = []
    for alt in alternatives:
        const = ((alt.get("properties") or {}).get("kind") or {}).get("const")
        if const is None:
            return []
        out.append(const)
    return out


def _dotted(path) -> str:
    return dotted(path) or "(top level)"


def _describe(value, path, located: Located) -> str:
    if tuple(path) in located.from_env:
        return "the value from the environment"  # may be a secret: never shown
    text = json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


def _explain(err: ValidationError, located: Located) -> list[MappingError]:
    path = tuple(err.absolute_path)
    if path in located.missing_env:  # "not set" says more than "not one of …"
        return [located.missing_env[path]]
    where = _dotted(path)
    v = err.validator
    if v in ("oneOf", "anyOf") and isinstance(err.instance, dict) and _kinds(err.validator_value):
        kinds = _kinds(err.validator_value)
        kind = err.instance.get("kind")
        if kind not in kinds:
            return [located.error(path + ("kind",) if "kind" in err.instance else path,
                                  f"{where}.kind: must be one of: {', '.join(kinds)}; got {_describe(kind, path + ('kind',), located)}")]
        chosen = kinds.index(kind)
        inner = [c for c in err.context if c.relative_schema_path and c.relative_schema_path[0] == chosen]
        return [e for c in inner for e in _explain(c, located)]
    if v in ("oneOf", "anyOf") and err.context:
        # Prefer the alternative that matched the 'kind'/'const' discriminator, if any.
        best = jsonschema.exceptions.best_match(err.context)
        deeper = [c for c in err.context if c.validator != "const" and len(c.absolute_path) > len(path)]
        if deeper:
            return _explain(min(deeper, key=lambda c: len(c.absolute_path)), located)
        if best is not None and best.validator != "const":
            return _explain(best, located)
        kinds = [c.instance if False else c.validator_value for c in err.context if c.validator == "const"]
        if kinds:
            return [located.error(path, f"{where}: must be one of: {', '.join(map(str, kinds))}")]
    if v == "additionalProperties":
        allowed = sorted((err.schema.get("properties") or {}).keys())
        out = []
        for key in sorted(set(err.instance) - set(allowed), key=str):
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f"did you mean '{close[0]}'?" if close else (f"allowed here: {', '.join(allowed)}" if allowed else None)
            out.append(located.error(path + (key,), f"unknown key '{key}' in {where}", hint, key=True))
        return out
    if v == "required":
        missing = err.message.split("'")[1] if "'" in err.message else err.message
        return [located.error(path, f"{where}: missing required key '{missing}'")]
    if v == "type":
        want = err.validator_value if isinstance(err.validator_value, list) else [err.validator_value]
        names = " or ".join(_TYPE_NAMES.get(w, str(w)) for w in want)
        return [located.error(path, f"{where}: expected {names}, got {_describe(err.instance, path, located)}")]
    if v == "enum":
        return [located.error(path, f"{where}: must be one of: {', '.join(map(str, err.validator_value))}; "
                                    f"got {_describe(err.instance, path, located)}")]
    if v == "const":
        return [located.error(path, f"{where}: must be {json.dumps(err.validator_value)}; got {_describe(err.instance, path, located)}")]
    if v == "pattern":
        return [located.error(path, f"{where}: {_describe(err.instance, path, located)} does not have the expected form",
                              f"it must match {err.validator_value}")]
    if v in ("minimum", "exclusiveMinimum", "minItems", "minLength"):
        return [located.error(path, f"{where}: {_describe(err.instance, path, located)} is too small ({v} {err.validator_value})")]
    if v == "format":
        return [located.error(path, f"{where}: {_describe(err.instance, path, located)} is not a valid {err.validator_value}",
                              "write dates as YYYY-MM-DD" if err.validator_value == "date" else None)]
    return [located.error(path, f"{where}: {err.message if tuple(path) not in located.from_env else v + ' failed'}")]
