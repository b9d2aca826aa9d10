"""YAML loading that remembers where every value stood (line and column).

The mapping's errors must say ``FILE:LINE:COL``; PyYAML's node marks carry that,
so we compose the node tree and build plain Python data from it ourselves, keeping
a map from each value's path (a tuple of keys and indexes) to its position.
Duplicate keys are errors, and ``${VAR}`` / ``${VAR:-default}`` is substituted in
scalars from the environment.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Mapping

import yaml

from engine.errors import MappingError

Path = tuple  # of str | int

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
#: what is left of a "${" once the well-formed ones are taken out: ${A:-b (no brace), ${A-B}, ${A:b}
_MALFORMED = re.compile(r"\$\{[^}]{0,40}\}?")


@dataclass
class Located:
    """Data from a YAML file plus the position of every value and key in it."""

    data: Any
    file: str
    values: dict[Path, tuple[int, int]] = field(default_factory=dict)
    keys: dict[Path, tuple[int, int]] = field(default_factory=dict)
    from_env: set[Path] = field(default_factory=set)
    #: path -> the names of the variables its ``${…}`` read (checked against what may be read)
    env_names: dict[Path, list[str]] = field(default_factory=dict)
    #: ``${VAR}`` without default whose variable is unset: path -> error. The loader
    #: raises those outside the source at once, and the source's when it is used.
    missing_env: dict[Path, MappingError] = field(default_factory=dict)
    collections: set[Path] = field(default_factory=set)
    #: path -> file, for values that came from another file (``extends:``)
    origins: dict[Path, str] = field(default_factory=dict)

    def file_of(self, path: Path) -> str:
        p = tuple(path)
        while p and p not in self.values:
            p = p[:-1]
        return self.origins.get(p, self.file)

    def where(self, path: Path, *, key: bool = False) -> tuple[int | None, int | None]:
        """Line and column (1-based) of the value at ``path``, or of its nearest parent."""
        # A whole mapping or list is best pointed at by its key ("document:").
        key = key or (tuple(path) in self.collections)
        table = self.keys if key and tuple(path) in self.keys else self.values
        p = tuple(path)
        while p and p not in table:
            p = p[:-1]
        line, col = table.get(p, (None, None)) if p in table else self.values.get((), (None, None))
        return line, col

    def error(self, path: Path, message: str, hint: str | None = None, *, key: bool = False) -> MappingError:
        line, col = self.where(path, key=key)
        return MappingError(message, file=self.file_of(path), line=line, column=col, hint=hint)


def substitute_env(text: str, environ: Mapping[str, str], on_missing) -> str:
    def repl(m: re.Match) -> str:
        name, default = m.group(1), m.group(2)
        value = environ.get(name)
        if value is None or (value == "" and default is not None):
            if default is not None:
                return default
            on_missing(name)
            return ""
        return value

    return _ENV.sub(repl, text)


#: libyaml's composer when PyYAML was built with it (the wheels are): the same nodes, tags and
#: marks as the pure-Python one (tests/test_yamlpos... compares them), in ~1 ms instead of ~20.
_FAST_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_yaml(text: str, file: str, environ: Mapping[str, str] | None = None) -> Located:
    environ = os.environ if environ is None else environ
    try:
        try:
            root = yaml.compose(text, Loader=_FAST_LOADER)  # libyaml: ~20x faster, same nodes
        except yaml.YAMLError:
            root = yaml.compose(text, Loader=yaml.SafeLoader)  # its messages are the familiar ones
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise MappingError(f"not valid YAML: {exc.problem or exc.context}", file=file,
                           line=mark.line + 1 if mark else None,
                           column=mark.column + 1 if mark else None,
                           hint="check the indentation and the quoting around this point") from None
    if root is None:
        raise MappingError("the mapping file is empty", file=file, line=1, column=1)
    located = Located(data=None, file=file)
    constructor = yaml.SafeLoader("")

    def build(node: yaml.Node, path: Path) -> Any:
        located.values[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
        if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)):
            located.collections.add(path)
        if isinstance(node, yaml.MappingNode):
            result: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    raise MappingError("YAML merge keys (<<) are not supported", file=file,
                                       line=key_node.start_mark.line + 1, column=key_node.start_mark.column + 1,
                                       hint="write the keys out, or use 'extends:'")
                key = constructor.construct_object(key_node, deep=True)
                if isinstance(key, (list, dict)):
                    raise MappingError("a key must be a plain value", file=file,
                                       line=key_node.start_mark.line + 1, column=key_node.start_mark.column + 1)
                if key in result:
                    raise MappingError(f"duplicate key '{key}'", file=file,
                                       line=key_node.start_mark.line + 1, column=key_node.start_mark.column + 1,
                                       hint="YAML would silently keep only the last one")
                located.keys[path + (key,)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
                result[key] = build(value_node, path + (key,))
            return result
        if isinstance(node, yaml.SequenceNode):
            return [build(item, path + (i,)) for i, item in enumerate(node.value)]
        try:
            value = constructor.construct_object(node, deep=True)
        except ValueError:  # e.g. 2019-13-01 looks like a date but is none: keep the text
            value = node.value
        if isinstance(value, (date, datetime)):
            value = value.isoformat()  # JSON Schema and the engine see text, as written
        if isinstance(value, str) and "${" in value:
            def on_missing(name: str) -> None:
                line, col = located.values[path]
                located.missing_env[path] = (MappingError(f"environment variable {name} is not set", file=file,
                                            line=line, column=col,
                                            hint=f"export {name}=…, or write ${{{name}:-default}}"))
            located.env_names[path] = [m.group(1) for m in _ENV.finditer(value)]
            bad = _MALFORMED.search(_ENV.sub("", value))
            if bad:
                line, col = located.values[path]
                raise MappingError(f"malformed variable {bad.group(0)!r}", file=file, line=line, column=col,
                                   hint="write ${NAME} or ${NAME:-default}")
            value = substitute_env(value, environ, on_missing)
            located.from_env.add(path)
            if not node.style and value != "":  # plain (libyaml says "", PyYAML None)
                # An unquoted ${VAR} takes the YAML type of what it holds (a number, true/false).
                value = yaml.safe_load(value) if _looks_scalar(value) else value
        return value

    located.data = build(root, ())
    return located


def _looks_scalar(text: str) -> bool:
    return re.fullmatch(r"-?\d+(\.\d+)?|true|false", text) is not None


def _under(path: Path, prefixes: set[Path]) -> bool:
    return any(path[: len(p)] == p for p in prefixes)


def merge(base: Located, child: Located) -> Located:
    """``child`` laid over ``base``: mappings merge key by key, anything else is replaced,
    and a key set to null in the child removes it. Positions keep their own file."""
    replaced: set[Path] = set()

    def rec(b: Any, c: Any, path: Path) -> Any:
        if isinstance(b, dict) and isinstance(c, dict):
            result = {}
            for k, v in b.items():
                if k not in c:
                    result[k] = v
                elif c[k] is None:
                    replaced.add(path + (k,))
                else:
                    result[k] = rec(v, c[k], path + (k,))
            for k, v in c.items():
                if k not in b and v is not None:
                    result[k] = v
            return result
        replaced.add(path)
        return c

    data = rec(base.data, child.data, ())
    out = Located(data=data, file=child.file)
    for table in ("values", "keys", "missing_env", "env_names"):
        merged = {p: v for p, v in getattr(base, table).items() if not _under(p, replaced)}
        merged.update(getattr(child, table))
        setattr(out, table, merged)
    for table in ("from_env", "collections"):
        setattr(out, table, {p for p in getattr(base, table) if not _under(p, replaced)} | getattr(child, table))
    out.origins = {p: base.origins.get(p, base.file) for p in out.values
                   if p in base.values and p not in child.values}
    out.origins.update({p: child.origins[p] for p in child.origins})
    return out


def dotted(path: Path) -> str:
    """A path as people write it: ``invoice.lines[0].amount`` (empty for the top level)."""
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out
