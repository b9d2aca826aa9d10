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
import string
import threading
import time
import types
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, MutableMapping, MutableSequence, MutableSet, Sequence
from contextlib import contextmanager
from decimal import Decimal
from typing import Any, Callable


import jinja2.compiler
import jinja2.filters
from jinja2 import StrictUndefined, TemplateRuntimeError, TemplateSyntaxError, Undefined, UndefinedError, nodes
from jinja2.parser import Parser
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError, safe_range
from jinja2.utils import _PassArg

from engine.expr.codegen import run_generated
from engine.errors import MappingError, in_words
from engine.expr.filters import FILTERS, MAX_TEXT, PLAIN_NUMBER_FILTERS, TESTS, NoMatch, check_printf, check_size

_PATH = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)\s*$")
_TEMPLATE_PATH = re.compile(r"^\{\{\s*([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)\s*\}\}$")
# ``self`` too: Jinja's code generator makes it the TemplateReference whatever the context holds
_KEYWORDS = {"true", "false", "none", "True", "False", "None", "and", "or", "not", "in", "is", "self"}


class EvaluationError(Exception):
    """A template failed on one record; the pipeline names the field and order."""


_NO_ATTR = re.compile(r"'[\w ]+ object' has no attribute '([^']+)'")


def _undefined(exc: Exception, source: str) -> EvaluationError:
    """Jinja's "'dict object' has no attribute 'email'" in words that name the field."""
    message = _NO_ATTR.sub(lambda m: f"no field '{m.group(1)}'", str(exc))
    return EvaluationError(f"{message} (in {source.strip()})")


#: Decimals in exponent form that would be written out with more digits than this are
#: refused: JSON like ``1e999999999`` would otherwise become a gigabyte of zeros. A number
#: without an exponent is written as it came (no longer than the input).
MAX_DECIMAL_DIGITS = 1000


def _finalize(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, Decimal):
        text = str(value)  # format(value, "f") unless it has an exponent: no longer than the input
        if "E" not in text and "e" not in text:
            return text
        if value.is_finite():
            exponent = value.as_tuple().exponent
            if value.adjusted() > MAX_DECIMAL_DIGITS or exponent < -MAX_DECIMAL_DIGITS:
                raise EvaluationError(f"number too long to write out: {value:.6e}")
        return format(value, "f")
    return value


#: Classes whose methods change their instances: ``dict.update(record, ...)`` would modify the
#: order through the class (the immutable sandbox only checks attributes of *instances*).
_MUTABLE_TYPES = (dict, list, set, bytearray, MutableMapping, MutableSequence, MutableSet, deque)

#: str methods whose integer argument is a length to pad to.
_PADDING_METHODS = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs"})

#: int ** int with a result of more bits than this is refused (a 4300-digit int, Python's
#: limit for writing one out, has about 14300 bits).
MAX_POWER_BITS = 16384


def _check_binop(operator: str, left: Any, right: Any) -> None:
    """Refuse, before computing it, a result that would take memory or time without bound."""
    check_time()
    if operator == "+":
        if isinstance(left, (str, list, tuple)) and isinstance(right, (str, list, tuple)):
            check_size(len(left) + len(right), "joined text or list")
    elif operator == "*":
        for seq, n in ((left, right), (right, left)):
            if isinstance(seq, (str, list, tuple, bytes)) and isinstance(n, int):
                check_size(len(seq) * n, "repeated text or list")
    elif operator == "**":
        if (isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1
                and right * abs(left).bit_length() > MAX_POWER_BITS):
            raise SecurityError(f"the power {left} ** {right} is too large for a mapping")
    elif operator == "%" and isinstance(left, str):
        check_printf(left, right)


def _str_format_of(fn: Any) -> str | None:
    """The format string if ``fn`` is ``str.format``/``format_map`` (bound, or Jinja's wrapper of it)."""
    fn = getattr(fn, "__wrapped__", fn)
    if (isinstance(fn, (types.MethodType, types.BuiltinMethodType)) and fn.__name__ in ("format", "format_map")
            and isinstance(fn.__self__, str)):
        return fn.__self__
    return None


def _check_call(fn: Any, args: tuple, kwargs: dict) -> None:
    name = getattr(fn, "__name__", None)
    if name in _PADDING_METHODS and isinstance(getattr(fn, "__self__", None), str):
        for arg in (*args, *kwargs.values()):
            if isinstance(arg, int):
                check_size(arg * (8 if name == "expandtabs" else 1), "padded text")
    elif name in ("format", "format_map"):
        fmt = _str_format_of(fn)
        if fmt is not None:  # '{0:>999999999}'.format(x): a width Jinja's sandbox does not bound
            for _, _, spec, _ in string.Formatter().parse(fmt):
                if spec and ("{" in spec or any(int(n) > MAX_TEXT for n in re.findall(r"\d+", spec))):
                    raise SecurityError("a format width or precision that long (or nested) is not allowed")


class TimeBudgetExceeded(Exception):
    """One record's templates ran past their time budget (a loop too long): it is quarantined."""


_budget = threading.local()


@contextmanager
def time_budget(seconds: float | None):
    """Every template evaluated inside has until ``seconds`` from now (per thread), then
    :class:`TimeBudgetExceeded`. Checked wherever the sandbox is asked something (a call, an
    attribute, an operator), per 1,024 steps of ``range`` and at every ``~`` join."""
    previous = getattr(_budget, "deadline", None)
    _budget.deadline = None if seconds is None else time.monotonic() + seconds
    _budget.seconds = seconds
    try:
        yield
    finally:
        _budget.deadline = previous


def check_time() -> None:
    deadline = getattr(_budget, "deadline", None)
    if deadline is not None and time.monotonic() > deadline:
        raise TimeBudgetExceeded(f"its templates took longer than the time budget of {_budget.seconds:g} s "
                                 f"(limits.seconds_per_record): a loop too long, or a pattern too slow")


class _BoundedRange(Sequence):
    """``range(...)`` in a template: Jinja's sandboxed range (at most MAX_RANGE items) whose
    iteration keeps to the time budget."""

    def __init__(self, *args: int):
        self._r = safe_range(*args)

    def __len__(self) -> int:
        return len(self._r)

    def __getitem__(self, i):
        return self._r[i]

    def __iter__(self):
        for i, value in enumerate(self._r):
            if not i & 1023:
                check_time()
            yield value

    def __repr__(self) -> str:
        return repr(self._r)


def join_bounded(parts: Iterable[Any]) -> str:
    """``a ~ b``: refuses a text longer than MAX_TEXT before building it."""
    texts = [p if type(p) is str else str(p) for p in parts]
    check_size(sum(map(len, texts)), "joined text")
    check_time()
    return "".join(texts)


def timed_iter(iterable: Any) -> Iterator[Any]:
    """What a ``{% for %}`` loop walks: ``iterable``, with the time budget checked at every
    step (a loop over a list or a text has no call the sandbox would see)."""
    for value in iterable:
        check_time()
        yield value


class _CodeGenerator(jinja2.compiler.CodeGenerator):
    """Jinja's code generator with ``~`` bounded (:func:`join_bounded`) and every
    ``{% for %}`` loop on the clock (:func:`timed_iter`)."""

    def visit_For(self, node: nodes.For, frame) -> None:
        it = node.iter
        if not (isinstance(it, nodes.Call) and isinstance(it.node, nodes.EnvironmentAttribute)
                and it.node.name == "timed_iter"):
            node.iter = nodes.Call(nodes.EnvironmentAttribute("timed_iter", lineno=it.lineno), [it], [], None, None,
                                   lineno=it.lineno)
        super().visit_For(node, frame)

    def visit_Concat(self, node: nodes.Concat, frame) -> None:
        self.write("environment.join_bounded((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class _Environment(ImmutableSandboxedEnvironment):
    """Sandbox in which ``a.b`` on a mapping means the key ``b`` first.

    Plain Jinja tries the attribute first, so ``page.items`` would be the dict method.

    On top of Jinja's sandbox: no attribute of a mutable class (``dict.update``), and ``*``,
    ``**`` and ``%`` and the str padding methods refuse results beyond :data:`MAX_TEXT`
    characters before building them (Jinja leaves these unbounded). Intercepted operators
    are also never folded at load time, so ``'a' * 10**10`` cannot hang the loading either.
    """

    intercepted_binops = frozenset({"*", "**", "%", "+"})
    code_generator_class = _CodeGenerator
    join_bounded = staticmethod(join_bounded)
    timed_iter = staticmethod(timed_iter)

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if isinstance(obj, type) and issubclass(obj, _MUTABLE_TYPES):
            return False
        return super().is_safe_attribute(obj, attr, value)

    def getitem(self, obj: Any, argument: Any) -> Any:
        # Jinja returns obj[argument] unchecked when it succeeds. For an object that is no
        # mapping, a text key is an attribute in disguise (Invoice['__setattr__'] is
        # getattr(...)): it must be as safe as the attribute. Mapping keys stay plain data.
        if isinstance(argument, str) and not isinstance(obj, (Mapping, str)):
            try:
                value = obj[argument]
            except Exception:  # noqa: BLE001 - as Jinja: fall through to its own handling
                pass
            else:
                if not self.is_safe_attribute(obj, argument, value):
                    return self.unsafe_undefined(obj, argument)
                return value
        return super().getitem(obj, argument)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _check_binop(operator, left, right)
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 - Jinja's
        check_time()
        _check_call(__obj, args, kwargs)
        # Jinja >= 3.1.5 sandboxes str.format at attribute access only; a bound one that came
        # another way (a context value) is sandboxed here (older Jinja does it in call itself)
        wrap = getattr(__self, "wrap_str_format", None)
        if wrap is not None:
            __obj = wrap(__obj) or __obj
        return super().call(__context, __obj, *args, **kwargs)

    def getattr(self, obj: Any, attribute: str) -> Any:  # noqa: A003 - Jinja's name
        check_time()
        if isinstance(obj, Mapping):
            try:
                return obj[attribute]
            except (KeyError, TypeError):
                pass
        return super().getattr(obj, attribute)


def _new_dict(*args: Any, **kwargs: Any) -> dict:
    """The ``dict(...)`` global: a function, so ``dict.update`` & co. are not reachable."""
    return dict(*args, **kwargs)


def make_environment() -> _Environment:
    env = _Environment(undefined=StrictUndefined, autoescape=False, finalize=_finalize,
                       keep_trailing_newline=False)
    env.filters.update(FILTERS)
    # Jinja's list filters (sum, map, select, ...) are async-aware wrappers that look at
    # env.is_async on every call; in this synchronous environment their sync functions are
    # the same filters without that detour (same arguments, same sandboxed attribute access).
    for name, func in list(env.filters.items()):
        sync = getattr(jinja2.filters, f"sync_do_{name}", None)
        if sync is not None and func is getattr(jinja2.filters, f"do_{name}", None):
            env.filters[name] = sync
    env.tests.update(TESTS)
    env.globals.clear()
    # range: Jinja's sandbox range, at most MAX_RANGE (100000) items, within the time budget
    env.globals.update({"range": _BoundedRange, "dict": _new_dict})
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
    fields = _PLAIN_FIELDS.get(type(obj))
    if fields is not None and key in fields:  # line['excl']: a declared (safe) name, so no check to make
        return obj[key]
    value = ENV.getitem(obj, key)
    if isinstance(value, Undefined):
        raise _GiveUp
    return value


def _h_call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    # only what Context.call would call plainly: safe, no context/environment injection, and
    # never str.format/format_map (the sandbox formats those itself: '{0.__class__}'.format)
    if (_str_format_of(fn) is not None or not ENV.is_safe_callable(fn) or _PassArg.from_obj(fn) is not None
            or (hasattr(fn, "__call__") and _PassArg.from_obj(fn.__call__) is not None)):
        raise _GiveUp
    _check_call(fn, args, kwargs)
    return fn(*args, **kwargs)


_NUMBERS = frozenset({int, Decimal, float})
_NUMBER_OPS = {"*": lambda a, b: a * b, "**": lambda a, b: a ** b, "%": lambda a, b: a % b,
               "+": lambda a, b: a + b}


def _h_binop(operator: str, left: Any, right: Any) -> Any:
    if type(left) in _NUMBERS and type(right) in _NUMBERS and operator != "**":
        return _NUMBER_OPS[operator](left, right)  # numbers times numbers: nothing to bound
    return ENV.call_binop(None, operator, left, right)


def _summed_key(func: Any, node) -> str | None:
    """``key`` if ``node`` is Jinja's ``x | sum(attribute='key')`` with a plain key (no dots, not
    a number, which Jinja would take as a path or an index)."""
    if (func is not jinja2.filters.sync_do_sum or node.args or len(node.kwargs) != 1
            or node.kwargs[0].key != "attribute" or type(node.kwargs[0].value) is not nodes.Const):
        return None
    key = node.kwargs[0].value.value
    return key if type(key) is str and key and "." not in key and not key.isdigit() else None


def _h_sum_key(items: Any, key: str) -> Any:
    """``items | sum(attribute=key)`` where every item is a dict holding ``key``: what Jinja
    sums (each ``item[key]``, from 0), without a sandbox call per item; anything else gives up."""
    if type(items) is not list and type(items) is not tuple:
        raise _GiveUp  # before reading from it: a generator is Jinja's to read
    values = []
    for item in items:
        if type(item) is not dict or key not in item:
            raise _GiveUp
        values.append(item[key])
    return sum(values, 0)


def _h_text(value: Any) -> str:
    """What ``{{ value }}`` writes: str(finalize(value))."""
    return str(_finalize(value))


_HELPERS = {"__builtins__": {}, "type": type, "_ga": _h_getattr, "_gi": _h_getitem, "_call": _h_call, "_text": _h_text,
            "_str": str, "_dict": dict, "_Exc": Exception, "_binop": _h_binop, "_join": join_bounded,
            "isinstance": isinstance, "_sum_key": _h_sum_key}
_COMPARE_OPS = {"eq": "==", "ne": "!=", "gt": ">", "gteq": ">=", "lt": "<", "lteq": "<=", "in": "in",
                "notin": "not in"}
_BINARY_OPS = {nodes.Add: "+", nodes.Sub: "-", nodes.Mul: "*", nodes.Div: "/", nodes.FloorDiv: "//",
               nodes.Mod: "%"}
#: Names Jinja's code generator gives a meaning of its own (``self`` is the TemplateReference,
#: whatever the context holds): only Jinja evaluates them.
_SPECIAL_NAMES = frozenset({"self", "loop", "caller", "varargs", "kwargs"})
#: Keyword arguments Jinja's Context.call removes before calling.
_CALL_INTERNAL_KWARGS = frozenset({"_loop_vars", "_block_vars"})


class _Gen:
    """Python source for a Jinja parse tree, evaluated against a context dict ``c``.

    Dict keys are read inline (``type(x) is dict``, as _Environment.getattr: the key first);
    everything else goes through the sandbox's own functions (``_ga``, ``_gi``, ``_call``).
    A missing name is a KeyError, which, like every other exception, makes the caller run
    the Jinja template instead.
    """

    def __init__(self, ctx: str = "c"):
        self.ns: dict[str, Any] = dict(_HELPERS)
        self.n = 0
        self.ctx = ctx  # the name the generated code reads the context from

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
            if node.name in _SPECIAL_NAMES:
                raise _Unsupported(node.name)
            return f"{self.ctx}[{node.name!r}]"
        if t is nodes.Getattr and node.ctx == "load":
            tmp, key = self.temp(), repr(node.attr)
            # a declared data field of a type known now is read directly, as _ga would read it
            owners = frozenset(cls for cls, names in _PLAIN_FIELDS.items() if node.attr in names)
            field = (f"{tmp}.{node.attr} if type({tmp}) in {self.const(owners)} else "
                     if owners and node.attr.isidentifier() else "")
            return (f"({tmp}[{key}] if type({tmp} := {self.expr(node.node)}) is _dict and {key} in {tmp} "
                    f"else {field}_ga({tmp}, {key}))")
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
            op = _BINARY_OPS[t]
            if op in ENV.intercepted_binops:
                return f"_binop({op!r}, {self.expr(node.left)}, {self.expr(node.right)})"
            return f"({self.expr(node.left)} {_BINARY_OPS[t]} {self.expr(node.right)})"
        if t is nodes.Concat:
            return "_join((" + ", ".join(f"_str({self.expr(n)})" for n in node.nodes) + ",))"
        if t is nodes.CondExpr and node.expr2 is not None:
            return f"({self.expr(node.expr1)} if {self.expr(node.test)} else {self.expr(node.expr2)})"
        if t is nodes.Filter and node.node is not None:
            return self.apply(ENV.filters.get(node.name), node)
        if t is nodes.Test:
            return self.apply(ENV.tests.get(node.name), node)
        if t is nodes.Call:
            if (node.dyn_args is not None or node.dyn_kwargs is not None
                    or any(k.key in _CALL_INTERNAL_KWARGS for k in node.kwargs)):
                raise _Unsupported("call")
            if (type(node.node) is nodes.Getattr and node.node.attr == "get" and node.node.ctx == "load"
                    and not node.kwargs and 1 <= len(node.args) <= 2):
                # a table lookup, tables.codes.get(key, default): dict.get on a dict without a
                # key "get" (a key would come first), else the sandbox's attribute and call
                tmp = self.temp()
                args = ", ".join(self.expr(a) for a in node.args)
                return (f"({tmp}.get({args}) if type({tmp} := {self.expr(node.node.node)}) is _dict "
                        f"and 'get' not in {tmp} else _call(_ga({tmp}, 'get'), {args}))")
            return f"_call({self.args(self.expr(node.node), node)})"
        raise _Unsupported(t.__name__)

    def args(self, first: str, node) -> str:
        parts = [first] + [self.expr(a) for a in node.args] + [f"{k.key}={self.expr(k.value)}" for k in node.kwargs]
        return ", ".join(parts)

    def apply(self, func: Any, node) -> str:
        if func is None or node.dyn_args is not None or node.dyn_kwargs is not None:
            raise _Unsupported(node.name)
        key = _summed_key(func, node)
        if key is not None:
            return f"_sum_key({self.expr(node.node)}, {self.const(key)})"
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
                        parts.append(f"({tmp} if type({tmp} := {self.expr(child)}) is _str else _text({tmp}))")
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
        self.ns["_Undef"] = Undefined
        # an Undefined result (a filter such as attr() can return one) is Jinja's error to raise
        src = (f"def _fast(c):\n    try:\n        _r = {code}\n    except _Exc:\n        return _slow(c)\n"
               f"    return _slow(c) if isinstance(_r, _Undef) else _r\n")
        run_generated(src, "expression", self.ns)
        return self.ns["_fast"]


@functools.lru_cache(maxsize=4096)
def parse_expression(source: str) -> nodes.Expr | None:
    """Jinja's parse tree of an expression, or None when text follows it ("a b": Jinja refuses
    the rest); raises TemplateSyntaxError. Parsed once for every reader (the fast path, the
    stages, the writer, the record shape): the trees are read, never changed."""
    parser = Parser(ENV, source, state="variable")
    node = parser.parse_expression()
    return node if parser.stream.eos else None


@functools.lru_cache(maxsize=4096)
def parse_template(source: str) -> list[nodes.Node]:
    """Jinja's parse tree of a template's body, as :func:`parse_expression`."""
    return ENV.parse(source).body


def _fast_expression(source: str, slow: Callable) -> Callable:
    """``slow`` (Jinja) made fast: generated Python when every node is covered, else ``slow``."""
    try:
        node = parse_expression(source)
        if node is None:
            return slow
        gen = _Gen()
        return gen.function(gen.expr(node), slow)
    except Exception:  # noqa: BLE001 - _Unsupported, or anything the generator did not foresee
        return slow


def _fast_template(source: str, slow: Callable) -> Callable:
    try:
        gen = _Gen()
        return gen.function(gen.output(parse_template(source)), slow)
    except Exception:  # noqa: BLE001 - _Unsupported, or anything the generator did not foresee
        return slow


class InlineCode:
    """Generated code of many templates in one namespace, for a function that inlines them.

    :meth:`text` gives a Python expression computing a template's text from the context
    variable named ``ctx`` (the same code its own fast path runs), or None where only the
    template's own function can (Jinja alone, a constant). Like the fast path, the code may
    raise on anything unusual; the caller then calls the template's function, which gives
    Jinja's answer or error. The result is always a str: ``_text`` writes every other value.
    """

    def __init__(self):
        self._gen = _Gen()
        self.ns = self._gen.ns
        self.ns["_Undef"] = Undefined

    def const(self, value: Any) -> str:
        """A global name in :attr:`ns` holding ``value``."""
        return self._gen.const(value)

    def text(self, template: "Template", ctx: str) -> str | None:
        if template.constant is not None:
            return None
        self._gen.ctx = ctx
        try:
            code = self._gen.output(parse_template(template.source))
            compile(code, "<template>", "eval")  # Python's own limits: a keyword argument `in=`, deep nesting
        except Exception:  # noqa: BLE001 - _Unsupported, SyntaxError, or anything the generator did not foresee
            return None
        return code

    def value(self, expression: "Expression", ctx: str) -> str | None:
        """A Python expression computing ``expression``'s value from ``ctx``, as its fast path
        does, or None where only its own function can. The value may be Jinja's Undefined
        (a filter such as ``attr()`` returns one): the caller then calls the function too."""
        self._gen.ctx = ctx
        try:
            node = parse_expression(expression.source)
            if node is None:
                return None
            code = self._gen.expr(node)
            compile(code, "<expression>", "eval")
        except Exception:  # noqa: BLE001 - _Unsupported, SyntaxError, or anything the generator did not foresee
            return None
        return code

    def assignment(self, var: str, compiled: "Expression | Template", ctx: str, where: str,
                   inline: bool = True) -> list[str]:
        """Lines of Python giving ``var`` the value (an Expression) or text (a Template) of
        ``compiled`` in the context named ``ctx``: its inlined code, and where that raises (or
        an expression's gives Jinja's Undefined) or none could be generated, its own function,
        called as ``_value(fn, ctx, where)`` (which the caller's namespace must hold)."""
        own = compiled._fn  # noqa: SLF001
        is_template = isinstance(compiled, Template)
        code = None
        if inline:
            code = self.text(compiled, ctx) if is_template else self.value(compiled, ctx)
        if code is None:
            return [f"{var} = _value({self.const(own)}, {ctx}, {where!r})"]
        # where the inlined code gave up, so would the same code in the template's function: its
        # Jinja is called straight away (a generator in the context is not read from twice)
        jinja = self.const(getattr(own, "jinja", own))
        check = [] if is_template else [f"    if isinstance({var}, _Undef): raise _Exc"]
        return ["try:", f"    {var} = {code}", *check, "except _Exc:", f"    {var} = _value({jinja}, {ctx}, {where!r})"]

    def writes_plain_number(self, template: "Template") -> bool:
        """Whether the template is one number filter, ``{{ x | money }}``: its text is a plain
        number (:data:`PLAIN_NUMBER_FILTERS`), or it fails."""
        if template.constant is not None:
            return False
        body = parse_template(template.source)
        if len(body) != 1 or type(body[0]) is not nodes.Output or len(body[0].nodes) != 1:
            return False
        node = body[0].nodes[0]
        return (type(node) is nodes.Filter and node.name in PLAIN_NUMBER_FILTERS
                and ENV.filters.get(node.name) is FILTERS[node.name])


def how_it_runs(compiled: "Expression | Template") -> tuple[str, str | None]:
    """How a compiled value is evaluated, for `mapper explain`: ``("constant", None)``,
    ``("field path", path)``, ``("generated Python", code)`` or ``("Jinja", why not generated)``.
    The code is the fast path's, as the stages and the writer inline it."""
    source = compiled.source
    if isinstance(compiled, Template):
        if compiled.constant is not None:
            return "constant", None
        match = _TEMPLATE_PATH.match(source)
    else:
        match = _PATH.match(source) if compiled.is_path else None
    if match and not (set(match.group(1).split(".")) & _KEYWORDS):
        return "field path", match.group(1)
    gen = _Gen()
    try:
        if isinstance(compiled, Template):
            code = gen.output(parse_template(source))
        else:
            node = parse_expression(source)
            if node is None:
                return "Jinja", "text follows the expression"
            code = gen.expr(node)
        compile(code, "<explain>", "eval")
    except _Unsupported as exc:
        return "Jinja", f"the code generator does not cover {exc}"
    except Exception as exc:  # noqa: BLE001 - said in words
        return "Jinja", f"no code generated ({type(exc).__name__})"
    return "generated Python", code


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
            self._fn = _fast_or_jinja(_fast_expression, _jinja_expression, source)
            self.is_path = False

    def __call__(self, context: Mapping[str, Any]) -> Any:
        return self._fn(context)

    def __repr__(self) -> str:
        return f"Expression({self.source!r})"


def _failure(exc: Exception, source: str) -> Exception:
    """The EvaluationError for an exception Jinja raised, or ``exc`` itself if unforeseen."""
    if isinstance(exc, UndefinedError):
        return _undefined(exc, source)
    if isinstance(exc, SecurityError):
        return EvaluationError(f"not allowed in a mapping: {exc}")
    if isinstance(exc, NoMatch):
        return EvaluationError(str(exc))
    if isinstance(exc, (TypeError, ValueError, ArithmeticError, LookupError, AttributeError)):
        return EvaluationError(in_words(exc))
    if isinstance(exc, TemplateRuntimeError):  # e.g. {% set record.x = 1 %}
        return EvaluationError(f"not allowed in a mapping: {exc}")
    if isinstance(exc, RecursionError):  # e.g. a macro calling itself
        return EvaluationError("too deeply nested (recursion)")
    return exc


_FAILURES = (UndefinedError, SecurityError, NoMatch, TypeError, ValueError, ArithmeticError, LookupError,
             AttributeError, TemplateRuntimeError, RecursionError)


def _fast_or_jinja(fast: Callable, jinja: Callable[[str], Callable], source: str) -> Callable:
    """The generated function, with Jinja compiled on first use as its fallback; or, when no
    code could be generated, Jinja compiled now (its errors are then load errors)."""
    slow = _compiled_on_first_use(jinja, source)
    fn = fast(source, slow)
    if fn is slow:
        return jinja(source)
    fn.jinja = slow  # what code inlining this one's calls when it gives up (InlineCode.assignment)
    return fn


def _compiled_on_first_use(compile_: Callable[[str], Callable], source: str) -> Callable[[Mapping[str, Any]], Any]:
    """``compile_(source)``, done when first called: the fallback of a generated fast path.

    The fast path was generated from Jinja's own parse of ``source`` (so it parses), and it
    covers only nodes Jinja compiles without complaint; the fallback runs only where the fast
    path gives up (an undefined name, an error to word). Compiling every fallback up front was
    a third of loading the default mapping.
    """
    compiled: Callable | None = None

    def jinja_fallback(context: Mapping[str, Any]) -> Any:
        nonlocal compiled
        if compiled is None:
            try:
                compiled = compile_(source)
            except TemplateSyntaxError as exc:  # not expected (see above): a quarantine, not a crash
                raise EvaluationError(f"does not compile: {exc.message}") from None
        return compiled(context)

    return jinja_fallback


def _jinja_expression(source: str) -> Callable[[Mapping[str, Any]], Any]:
    """The expression evaluated by Jinja alone (no generated code): the reference behaviour."""
    compiled = ENV.compile_expression(source, undefined_to_none=False)
    return _jinja_call(compiled._template, source)  # noqa: SLF001 - the stable way to reuse it


def _jinja_call(template: Any, source: str) -> Callable[[Mapping[str, Any]], Any]:
    """Evaluate a compiled expression template, returning the value (not text)."""
    root = template.root_render_func
    new_context = template.new_context

    def call(context: Mapping[str, Any]) -> Any:
        ctx = new_context(dict(context), shared=True)
        try:
            for _ in root(ctx):
                pass
        except _FAILURES as exc:
            raise _failure(exc, source) from None
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
        self._fn = _fast_or_jinja(_fast_template, _jinja_template, source)

    def __call__(self, context: Mapping[str, Any]) -> str:
        return self._fn(context)

    def __repr__(self) -> str:
        return f"Template({self.source!r})"


def _jinja_template(source: str) -> Callable[[Mapping[str, Any]], str]:
    """The template rendered by Jinja alone (no generated code): the reference behaviour."""
    render = ENV.from_string(source).render

    def call(context: Mapping[str, Any]) -> str:
        try:
            return render(context)
        except _FAILURES as exc:
            raise _failure(exc, source) from None

    return call


def compile_expression(source: Any, *, file: str | None = None, line: int | None = None,
                       column: int | None = None, field: str = "") -> Expression:
    """Compile at load time; a syntax error becomes a MappingError at the value's position."""
    if isinstance(source, bool) or isinstance(source, (int, Decimal)):
        source = str(source).lower() if isinstance(source, bool) else str(source)
    try:
        return Expression(str(source))
    except RecursionError:
        raise MappingError(f"{field}: expression is nested too deeply", file=file, line=line, column=column) from None
    except TemplateSyntaxError as exc:
        raise MappingError(f"{field}: expression does not parse: {exc.message}",
                           file=file, line=line, column=column,
                           hint="write a Jinja expression without {{ }}, e.g. record.total_price") from None


def compile_template(source: Any, *, file: str | None = None, line: int | None = None,
                     column: int | None = None, field: str = "") -> Template:
    try:
        return Template(str(source))
    except RecursionError:
        raise MappingError(f"{field}: template is nested too deeply", file=file, line=line, column=column) from None
    except TemplateSyntaxError as exc:
        at_line = (line or 0) + (exc.lineno or 1) - 1 if line else None
        raise MappingError(f"{field}: template does not parse: {exc.message}",
                           file=file, line=at_line, column=column if exc.lineno in (None, 1) else None,
                           hint="check the {{ }} and {% %} pairs") from None
