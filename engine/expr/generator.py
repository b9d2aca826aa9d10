"""The code generator: Python source from Jinja's parse tree, for the node kinds a mapping
uses, one ``visit_<Node>`` per kind (as Jinja's own compiler is written). What it does not
cover raises :class:`Unsupported` at compile time, and Jinja alone evaluates that value;
what goes wrong at run time (a missing name, an unsafe attribute, any exception) makes the
generated function call Jinja instead, so every answer and error is Jinja's own.
"""

from __future__ import annotations

import functools
from decimal import Decimal
from typing import Any, Callable

import jinja2.compiler
import jinja2.filters
from jinja2 import Undefined, nodes
from jinja2.parser import Parser
from jinja2.utils import _PassArg

from engine.expr.codegen import run_generated
from engine.expr.sandbox import ENV, PLAIN_FIELDS, _check_call, _finalize, _str_format_of, join_bounded


class _GiveUp(Exception):
    """Raised by a helper: let Jinja evaluate this value (and raise its own error)."""


class Unsupported(Exception):
    """At compile time: a node kind the generated code does not cover; Jinja alone evaluates it."""


def _h_getattr(obj: Any, attr: str) -> Any:
    """``obj.attr`` as _Environment.getattr gives it (the sandbox's), giving up on undefined."""
    fields = PLAIN_FIELDS.get(type(obj))
    if fields is not None and attr in fields:
        return getattr(obj, attr)
    value = ENV.getattr(obj, attr)
    if isinstance(value, Undefined):
        raise _GiveUp
    return value


def _h_getitem(obj: Any, key: Any) -> Any:
    fields = PLAIN_FIELDS.get(type(obj))
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


class PythonGenerator:
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
        """Python source computing ``node``'s value: its ``visit_<kind>``; raises Unsupported
        for a kind (or a use of one) the generator does not cover."""
        visit = getattr(self, f"visit_{type(node).__name__}", None)
        if visit is None:
            raise Unsupported(type(node).__name__)
        return visit(node)

    def visit_Const(self, node: nodes.Const) -> str:
        return self.const(node.value)

    def visit_Name(self, node: nodes.Name) -> str:
        if node.ctx != "load" or node.name in _SPECIAL_NAMES:
            raise Unsupported(node.name)
        return f"{self.ctx}[{node.name!r}]"

    def visit_Getattr(self, node: nodes.Getattr) -> str:
        if node.ctx != "load":
            raise Unsupported("Getattr")
        tmp, key = self.temp(), repr(node.attr)
        # a declared data field of a type known now is read directly, as _ga would read it
        owners = frozenset(cls for cls, names in PLAIN_FIELDS.items() if node.attr in names)
        field = (f"{tmp}.{node.attr} if type({tmp}) in {self.const(owners)} else "
                 if owners and node.attr.isidentifier() else "")
        return (f"({tmp}[{key}] if type({tmp} := {self.expr(node.node)}) is _dict and {key} in {tmp} "
                f"else {field}_ga({tmp}, {key}))")

    def visit_Getitem(self, node: nodes.Getitem) -> str:
        if node.ctx != "load" or isinstance(node.arg, nodes.Slice):
            raise Unsupported("Getitem")
        return f"_gi({self.expr(node.node)}, {self.expr(node.arg)})"

    def visit_Tuple(self, node: nodes.Tuple) -> str:
        if node.ctx != "load":
            raise Unsupported("Tuple")
        return "(" + "".join(self.expr(n) + ", " for n in node.items) + ")"

    def visit_List(self, node: nodes.List) -> str:
        return "[" + ", ".join(self.expr(n) for n in node.items) + "]"

    def visit_Compare(self, node: nodes.Compare) -> str:
        return "(" + self.expr(node.expr) + "".join(
            f" {_COMPARE_OPS[o.op]} {self.expr(o.expr)}" for o in node.ops) + ")"

    def visit_And(self, node: nodes.And) -> str:
        return f"({self.expr(node.left)} and {self.expr(node.right)})"

    def visit_Or(self, node: nodes.Or) -> str:
        return f"({self.expr(node.left)} or {self.expr(node.right)})"

    def visit_Not(self, node: nodes.Not) -> str:
        return f"(not {self.expr(node.node)})"

    def visit_Neg(self, node: nodes.Neg) -> str:
        return f"(-{self.expr(node.node)})"

    def visit_Pos(self, node: nodes.Pos) -> str:
        return f"(+{self.expr(node.node)})"

    def _binary(self, node: nodes.BinExpr) -> str:
        op = _BINARY_OPS[type(node)]
        if op in ENV.intercepted_binops:
            return f"_binop({op!r}, {self.expr(node.left)}, {self.expr(node.right)})"
        return f"({self.expr(node.left)} {op} {self.expr(node.right)})"

    visit_Add = visit_Sub = visit_Mul = visit_Div = visit_FloorDiv = visit_Mod = _binary

    def visit_Concat(self, node: nodes.Concat) -> str:
        return "_join((" + ", ".join(f"_str({self.expr(n)})" for n in node.nodes) + ",))"

    def visit_CondExpr(self, node: nodes.CondExpr) -> str:
        if node.expr2 is None:   # `a if b` alone: Jinja's undefined-else
            raise Unsupported("CondExpr")
        return f"({self.expr(node.expr1)} if {self.expr(node.test)} else {self.expr(node.expr2)})"

    def visit_Filter(self, node: nodes.Filter) -> str:
        if node.node is None:    # a {% filter %} block
            raise Unsupported("Filter")
        return self.apply(ENV.filters.get(node.name), node)

    def visit_Test(self, node: nodes.Test) -> str:
        return self.apply(ENV.tests.get(node.name), node)

    def visit_Call(self, node: nodes.Call) -> str:
        if (node.dyn_args is not None or node.dyn_kwargs is not None
                or any(k.key in _CALL_INTERNAL_KWARGS for k in node.kwargs)):
            raise Unsupported("call")
        callee = node.node
        if (type(callee) is nodes.Getattr and callee.attr == "get" and callee.ctx == "load"
                and not node.kwargs and 1 <= len(node.args) <= 2):
            # a table lookup, tables.codes.get(key, default): dict.get on a dict without a
            # key "get" (a key would come first), else the sandbox's attribute and call
            tmp = self.temp()
            args = ", ".join(self.expr(a) for a in node.args)
            return (f"({tmp}.get({args}) if type({tmp} := {self.expr(callee.node)}) is _dict "
                    f"and 'get' not in {tmp} else _call(_ga({tmp}, 'get'), {args}))")
        return f"_call({self.args(self.expr(callee), node)})"

    def args(self, first: str, node) -> str:
        parts = [first] + [self.expr(a) for a in node.args] + [f"{k.key}={self.expr(k.value)}" for k in node.kwargs]
        return ", ".join(parts)

    def apply(self, func: Any, node) -> str:
        if func is None or node.dyn_args is not None or node.dyn_kwargs is not None:
            raise Unsupported(node.name)
        key = _summed_key(func, node)
        if key is not None:
            return f"_sum_key({self.expr(node.node)}, {self.const(key)})"
        if any(not k.key.isidentifier() for k in node.kwargs):
            raise Unsupported(node.name)
        pass_arg = _PassArg.from_obj(func)
        if pass_arg is _PassArg.environment:
            func = functools.partial(func, ENV)
        elif pass_arg is not None:
            raise Unsupported(node.name)
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
                raise Unsupported(type(node).__name__)
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


def fast_expression(source: str, slow: Callable) -> Callable:
    """``slow`` (Jinja) made fast: generated Python when every node is covered, else ``slow``."""
    try:
        node = parse_expression(source)
        if node is None:
            return slow
        gen = PythonGenerator()
        return gen.function(gen.expr(node), slow)
    except Exception:  # noqa: BLE001 - Unsupported, or anything the generator did not foresee
        return slow


def fast_template(source: str, slow: Callable) -> Callable:
    try:
        gen = PythonGenerator()
        return gen.function(gen.output(parse_template(source)), slow)
    except Exception:  # noqa: BLE001 - Unsupported, or anything the generator did not foresee
        return slow
