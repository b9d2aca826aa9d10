"""Jinja2 expressions and templates, sandboxed, strict, compiled at load time.

Two kinds of values appear in a mapping:

* an **expression** computes a value: ``record.total_price``, ``record.status != 8``;
* a **template** renders text: ``Bestelling {{ record.ordernumber_full }}``.

Plain dotted paths (``record.customer.email``) skip Jinja entirely: a call of a
compiled Jinja template costs ~15 µs for its context alone, a path walk well under 1 µs.
Both give the same answers and the same errors.

Other expressions and templates are compiled twice at load: by Jinja, and from Jinja's own
parse tree into one plain Python function each (:class:`_Gen`) for the node kinds a
mapping uses (names, attributes, items, literals, comparisons, and/or/not, if-else,
arithmetic, ``~``, filters, tests, safe method calls, ``{% if %}``). Dict keys are read
inline; every other attribute, item and call goes through the same sandbox functions Jinja
uses (``ENV.getattr``, ``ENV.getitem``, ``ENV.is_safe_callable``). Whenever the generated
code meets anything unusual (a missing name or field, an unsafe attribute, any exception)
it gives up and the Jinja template runs instead, so every error, message and sandbox
refusal is Jinja's own; the generated code only ever returns what Jinja would have returned.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Callable


from jinja2 import StrictUndefined, TemplateSyntaxError, Undefined, UndefinedError, nodes
from jinja2.parser import Parser
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError
from jinja2.utils import _PassArg

from .errors import MappingError
from .filters import FILTERS, TESTS, NoMatch

_PATH = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)\s*$")
_TEMPLATE_PATH = re.compile(r"^\{\{\s*([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)\s*\}\}$")
_KEYWORDS = {"true", "false", "none", "True", "False", "None", "and", "or", "not", "in", "is"}


class EvaluationError(Exception):
    """A template failed on one record; the pipeline names the field and order."""


_NO_ATTR = re.compile(r"'[\w ]+ object' has no attribute '([^']+)'")


def _undefined(exc: Exception, source: str) -> EvaluationError:
    """Jinja's "'dict object' has no attribute 'email'" in words that name the field."""
    message = _NO_ATTR.sub(lambda m: f"no field '{m.group(1)}'", str(exc))
    return EvaluationError(f"{message} (in {source.strip()})")


def _finalize(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return format(value, "f")
    return value


class _Environment(ImmutableSandboxedEnvironment):
    """Sandbox in which ``a.b`` on a mapping means the key ``b`` first.

    Plain Jinja tries the attribute first, so ``page.items`` would be the dict method.
    """

    def getattr(self, obj: Any, attribute: str) -> Any:  # noqa: A003 - Jinja's name
        if isinstance(obj, Mapping):
            try:
                return obj[attribute]
            except (KeyError, TypeError):
                pass
        return super().getattr(obj, attribute)


def make_environment() -> _Environment:
    env = _Environment(undefined=StrictUndefined, autoescape=False, finalize=_finalize,
                       keep_trailing_newline=False)
    env.filters.update(FILTERS)
    env.tests.update(TESTS)
    env.globals.clear()
    env.globals.update({"range": range, "dict": dict})
    return env


ENV = make_environment()


#: Types whose listed attributes templates may read directly (plain data fields): for these
#: names the sandbox's getattr returns exactly ``getattr(obj, name)``, at a fraction of the cost.
_PLAIN_FIELDS: dict[type, frozenset[str]] = {}


def allow_fields(cls: type, names) -> None:
    """Declare public data attributes of ``cls`` (no leading underscore, no methods)."""
    names = frozenset(names)
    bad = [n for n in names if n.startswith("_") or callable(getattr(cls, n, None))]
    if bad:
        raise ValueError(f"not plain data fields: {bad}")
    _PLAIN_FIELDS[cls] = names


def _walker(path: str) -> Callable[[Mapping[str, Any]], Any]:
    parts = path.split(".")
    head, rest = parts[0], tuple(parts[1:])
    full = _full_walker(parts)
    plain = _PLAIN_FIELDS

    def walk(context: Mapping[str, Any]) -> Any:
        # the common case: dicts and declared data fields all the way; anything else
        # (a missing key, None, another type) takes the full walk with its messages
        try:
            value = context[head]
        except KeyError:
            return full(context)
        for part in rest:
            if type(value) is dict:
                try:
                    value = value[part]
                    continue
                except KeyError:
                    return full(context)
            fields = plain.get(type(value))
            if fields is None or part not in fields:
                return full(context)
            value = getattr(value, part)
        return value

    return walk


def _full_walker(parts: list[str]) -> Callable[[Mapping[str, Any]], Any]:
    head, rest = parts[0], parts[1:]

    def walk(context: Mapping[str, Any]) -> Any:
        try:
            value = context[head]
        except KeyError:
            raise EvaluationError(f"'{head}' is undefined") from None
        for i, part in enumerate(rest):
            if isinstance(value, Mapping):
                try:
                    value = value[part]
                    continue
                except KeyError:
                    pass
            if value is None:
                where = ".".join(parts[: i + 1])
                raise EvaluationError(f"'{where}' is empty (null), so it has no '{part}'")
            try:
                value = ENV.getattr(value, part)
            except SecurityError as exc:
                raise EvaluationError(str(exc)) from None
            if isinstance(value, Undefined):
                raise EvaluationError(f"'{'.'.join(parts[: i + 2])}' is undefined")
        return value

    return walk


# ------------------------------------------------------------------------------ fast path

class _GiveUp(Exception):
    """Raised by a helper: let Jinja evaluate this value (and raise its own error)."""


class _Unsupported(Exception):
    """At compile time: a node kind the generated code does not cover; Jinja alone evaluates it."""


def _h_getattr(obj: Any, attr: str) -> Any:
    """``obj.attr`` as _Environment.getattr gives it (the sandbox's), giving up on undefined."""
    fields = _PLAIN_FIELDS.get(type(obj))
    if fields is not None and attr in fields:
        return getattr(obj, attr)
    value = ENV.getattr(obj, attr)
    if isinstance(value, Undefined):
        raise _GiveUp
    return value


def _h_getitem(obj: Any, key: Any) -> Any:
    value = ENV.getitem(obj, key)
    if isinstance(value, Undefined):
        raise _GiveUp
    return value


def _h_call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    # only what Context.call would call plainly: safe, no context/environment injection
    if (not ENV.is_safe_callable(fn) or _PassArg.from_obj(fn) is not None
            or (hasattr(fn, "__call__") and _PassArg.from_obj(fn.__call__) is not None)):
        raise _GiveUp
    return fn(*args, **kwargs)


def _h_text(value: Any) -> str:
    """What ``{{ value }}`` writes: str(finalize(value))."""
    return str(_finalize(value))


_HELPERS = {"__builtins__": {}, "type": type, "_ga": _h_getattr, "_gi": _h_getitem, "_call": _h_call, "_text": _h_text,
            "_str": str, "_dict": dict, "_Exc": Exception}
_COMPARE_OPS = {"eq": "==", "ne": "!=", "gt": ">", "gteq": ">=", "lt": "<", "lteq": "<=", "in": "in",
                "notin": "not in"}
_BINARY_OPS = {nodes.Add: "+", nodes.Sub: "-", nodes.Mul: "*", nodes.Div: "/", nodes.FloorDiv: "//",
               nodes.Mod: "%"}


class _Gen:
    """Python source for a Jinja parse tree, evaluated against a context dict ``c``.

    Dict keys are read inline (``type(x) is dict``, as _Environment.getattr: the key first);
    everything else goes through the sandbox's own functions (``_ga``, ``_gi``, ``_call``).
    A missing name is a KeyError, which, like every other exception, makes the caller run
    the Jinja template instead.
    """

    def __init__(self):
        self.ns: dict[str, Any] = dict(_HELPERS)
        self.n = 0

    def const(self, value: Any) -> str:
        self.n += 1
        name = f"_k{self.n}"
        self.ns[name] = value
        return name

    def temp(self) -> str:
        self.n += 1
        return f"_t{self.n}"

    def expr(self, node: nodes.Node) -> str:
        t = type(node)
        if t is nodes.Const:
            return self.const(node.value)
        if t is nodes.Name and node.ctx == "load":
            return f"c[{node.name!r}]"
        if t is nodes.Getattr and node.ctx == "load":
            tmp, key = self.temp(), repr(node.attr)
            return (f"({tmp}[{key}] if type({tmp} := {self.expr(node.node)}) is _dict and {key} in {tmp} "
                    f"else _ga({tmp}, {key}))")
        if t is nodes.Getitem and node.ctx == "load" and not isinstance(node.arg, nodes.Slice):
            return f"_gi({self.expr(node.node)}, {self.expr(node.arg)})"
        if t is nodes.Tuple and node.ctx == "load":
            return "(" + "".join(self.expr(n) + ", " for n in node.items) + ")"
        if t is nodes.List:
            return "[" + ", ".join(self.expr(n) for n in node.items) + "]"
        if t is nodes.Compare:
            return "(" + self.expr(node.expr) + "".join(
                f" {_COMPARE_OPS[o.op]} {self.expr(o.expr)}" for o in node.ops) + ")"
        if t is nodes.And:
            return f"({self.expr(node.left)} and {self.expr(node.right)})"
        if t is nodes.Or:
            return f"({self.expr(node.left)} or {self.expr(node.right)})"
        if t is nodes.Not:
            return f"(not {self.expr(node.node)})"
        if t is nodes.Neg:
            return f"(-{self.expr(node.node)})"
        if t is nodes.Pos:
            return f"(+{self.expr(node.node)})"
        if t in _BINARY_OPS:
            return f"({self.expr(node.left)} {_BINARY_OPS[t]} {self.expr(node.right)})"
        if t is nodes.Concat:
            return "''.join([" + ", ".join(f"_str({self.expr(n)})" for n in node.nodes) + "])"
        if t is nodes.CondExpr and node.expr2 is not None:
            return f"({self.expr(node.expr1)} if {self.expr(node.test)} else {self.expr(node.expr2)})"
        if t is nodes.Filter and node.node is not None:
            return self.apply(ENV.filters.get(node.name), node)
        if t is nodes.Test:
            return self.apply(ENV.tests.get(node.name), node)
        if t is nodes.Call:
            if node.dyn_args is not None or node.dyn_kwargs is not None:
                raise _Unsupported("call")
            return f"_call({self.args(self.expr(node.node), node)})"
        raise _Unsupported(t.__name__)

    def args(self, first: str, node) -> str:
        parts = [first] + [self.expr(a) for a in node.args] + [f"{k.key}={self.expr(k.value)}" for k in node.kwargs]
        return ", ".join(parts)

    def apply(self, func: Any, node) -> str:
        if func is None or node.dyn_args is not None or node.dyn_kwargs is not None:
            raise _Unsupported(node.name)
        if any(not k.key.isidentifier() for k in node.kwargs):
            raise _Unsupported(node.name)
        pass_arg = _PassArg.from_obj(func)
        if pass_arg is _PassArg.environment:
            func = functools.partial(func, ENV)
        elif pass_arg is not None:
            raise _Unsupported(node.name)
        return f"{self.const(func)}({self.args(self.expr(node.node), node)})"

    def output(self, body: list[nodes.Node]) -> str:
        """A template body (text, ``{{ }}``, ``{% if %}``) as an expression giving the text."""
        parts: list[str] = []
        for node in body:
            if type(node) is nodes.Output:
                for child in node.nodes:
                    if type(child) is nodes.TemplateData:
                        parts.append(self.const(child.data))
                    else:
                        tmp = self.temp()
                        parts.append(f"({tmp} if ({tmp} := {self.expr(child)}).__class__ is _str else _text({tmp}))")
            elif type(node) is nodes.If:
                text = self.output(node.else_) if node.else_ else self.const("")
                for branch in reversed([node, *node.elif_]):
                    text = f"({self.output(branch.body)} if {self.expr(branch.test)} else {text})"
                parts.append(text)
            else:
                raise _Unsupported(type(node).__name__)
        if not parts:
            return self.const("")
        if len(parts) == 1:
            return parts[0]
        return "''.join([" + ", ".join(parts) + "])"

    def function(self, code: str, slow: Callable) -> Callable:
        self.ns["_slow"] = slow
        src = f"def _fast(c):\n    try:\n        return {code}\n    except _Exc:\n        return _slow(c)\n"
        exec(compile(src, "<mapping expression>", "exec"), self.ns)  # noqa: S102 - generated from Jinja's parse tree
        return self.ns["_fast"]


def _fast_expression(source: str, slow: Callable) -> Callable:
    """``slow`` (Jinja) made fast: generated Python when every node is covered, else ``slow``."""
    try:
        gen = _Gen()
        parser = Parser(ENV, source, state="variable")
        return gen.function(gen.expr(parser.parse_expression()), slow)
    except (_Unsupported, TemplateSyntaxError, SyntaxError, RecursionError):
        return slow


def _fast_template(source: str, slow: Callable) -> Callable:
    try:
        gen = _Gen()
        return gen.function(gen.output(ENV.parse(source).body), slow)
    except (_Unsupported, TemplateSyntaxError, SyntaxError, RecursionError):
        return slow


class Expression:
    """A compiled expression: ``expr(context) -> value``."""

    __slots__ = ("source", "_fn", "is_path")

    def __init__(self, source: str):
        self.source = source
        match = _PATH.match(source)
        if match and not (set(match.group(1).split(".")) & _KEYWORDS):
            self._fn = _walker(match.group(1))
            self.is_path = True
        else:
            compiled = ENV.compile_expression(source, undefined_to_none=False)
            slow = _jinja_call(compiled._template, source)  # noqa: SLF001 - the stable way to reuse it
            self._fn = _fast_expression(source, slow)
            self.is_path = False

    def __call__(self, context: Mapping[str, Any]) -> Any:
        return self._fn(context)

    def __repr__(self) -> str:
        return f"Expression({self.source!r})"


def _jinja_call(template: Any, source: str) -> Callable[[Mapping[str, Any]], Any]:
    """Evaluate a compiled expression template, returning the value (not text)."""
    root = template.root_render_func
    new_context = template.new_context

    def call(context: Mapping[str, Any]) -> Any:
        ctx = new_context(dict(context), shared=True)
        try:
            for _ in root(ctx):
                pass
        except UndefinedError as exc:
            raise _undefined(exc, source) from None
        except SecurityError as exc:
            raise EvaluationError(f"not allowed in a mapping: {exc}") from None
        except NoMatch as exc:
            raise EvaluationError(str(exc)) from None
        except (TypeError, ValueError, ArithmeticError, LookupError, AttributeError) as exc:
            raise EvaluationError(f"{type(exc).__name__}: {exc}") from None
        value = ctx.vars["result"]
        if isinstance(value, Undefined):
            raise _undefined(value._undefined_message, source)  # noqa: SLF001 - Jinja's own wording
        return value

    return call


class Template:
    """A compiled text template: ``template(context) -> str``."""

    __slots__ = ("source", "_fn", "constant")

    def __init__(self, source: str):
        self.source = source
        self.constant: str | None = None
        if "{{" not in source and "{%" not in source and "{#" not in source:
            self.constant = source
            self._fn = lambda context, _s=source: _s
            return
        match = _TEMPLATE_PATH.match(source)
        if match and not (set(match.group(1).split(".")) & _KEYWORDS):
            walk = _walker(match.group(1))
            self._fn = lambda context: str(_finalize(walk(context)))
            return
        template = ENV.from_string(source)
        render = template.render

        def call(context: Mapping[str, Any]) -> str:
            try:
                return render(context)
            except UndefinedError as exc:
                raise _undefined(exc, source) from None
            except SecurityError as exc:
                raise EvaluationError(f"not allowed in a mapping: {exc}") from None
            except NoMatch as exc:
                raise EvaluationError(str(exc)) from None
            except (TypeError, ValueError, ArithmeticError, LookupError, AttributeError) as exc:
                raise EvaluationError(f"{type(exc).__name__}: {exc}") from None

        self._fn = _fast_template(source, call)

    def __call__(self, context: Mapping[str, Any]) -> str:
        return self._fn(context)

    def __repr__(self) -> str:
        return f"Template({self.source!r})"


def compile_expression(source: Any, *, file: str | None = None, line: int | None = None,
                       column: int | None = None, field: str = "") -> Expression:
    """Compile at load time; a syntax error becomes a MappingError at the value's position."""
    if isinstance(source, bool) or isinstance(source, (int, Decimal)):
        source = str(source).lower() if isinstance(source, bool) else str(source)
    try:
        return Expression(str(source))
    except TemplateSyntaxError as exc:
        raise MappingError(f"{field}: expression does not parse: {exc.message}",
                           file=file, line=line, column=column,
                           hint="write a Jinja expression without {{ }}, e.g. record.total_price") from None


def compile_template(source: Any, *, file: str | None = None, line: int | None = None,
                     column: int | None = None, field: str = "") -> Template:
    try:
        return Template(str(source))
    except TemplateSyntaxError as exc:
        at_line = (line or 0) + (exc.lineno or 1) - 1 if line else None
        raise MappingError(f"{field}: template does not parse: {exc.message}",
                           file=file, line=at_line, column=column if exc.lineno in (None, 1) else None,
                           hint="check the {{ }} and {% %} pairs") from None
