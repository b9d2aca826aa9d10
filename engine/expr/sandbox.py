"""The sandbox every expression and template runs in: Jinja's immutable sandbox, strict
about undefined values, with bounds (text size, number size, range length, a time budget per
record) and the filters and tests a mapping may use (engine/expr/filters.py). ``ENV`` is the
one environment; the generated code (engine/expr/generator.py) calls the same functions.
"""

from __future__ import annotations

import re
import string
import threading
import time
import types
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, MutableMapping, MutableSequence, MutableSet, Sequence
from contextlib import contextmanager
from decimal import Decimal
from typing import Any, cast

import jinja2.compiler
import jinja2.filters
from jinja2 import StrictUndefined, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError, safe_range

from engine.expr.filters import FILTERS, MAX_TEXT, TESTS, check_printf, check_size


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
            exponent = value.as_tuple().exponent   # an int: the value is finite
            if value.adjusted() > MAX_DECIMAL_DIGITS or cast(int, exponent) < -MAX_DECIMAL_DIGITS:
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
PLAIN_FIELDS: dict[type, frozenset[str]] = {}


def allow_fields(cls: type, names) -> None:
    """Declare public data attributes of ``cls`` (no leading underscore, no methods)."""
    names = frozenset(names)
    bad = [n for n in names if n.startswith("_") or callable(getattr(cls, n, None))]
    if bad:
        raise ValueError(f"not plain data fields: {bad}")
    PLAIN_FIELDS[cls] = names
