"""JSON request bodies declared in a mapping, like the XML element tree.

In a body tree:

* a mapping is a JSON object, a list a JSON array, a number or true/false itself;
* a string is a **template** (text): ``"Bestelling {{ record.ordernumber_full }}"``;
* ``{expr: EXPRESSION}`` is a typed value (a number stays a number): ``{expr: line.excl}``;
  with ``optional: true`` the key is left out when the value is empty (null or "");
* ``{each: EXPRESSION, as: NAME, value: TREE}`` is an array with one TREE per item.

Decimals are written as JSON numbers with their exact digits, never through float.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any, Callable

from engine.expr.expressions import Expression, Template

_OMIT = object()


class Body:
    """A compiled body tree: ``body(context) -> JSON-ready value``."""

    def __init__(self, tree: Any, compile_expr: Callable[[tuple, Any], Expression],
                 compile_tmpl: Callable[[tuple, Any], Template], path: tuple = ()):
        self._fn = self._compile(tree, compile_expr, compile_tmpl, path)

    def __call__(self, context: dict[str, Any]) -> Any:
        return self._fn(context)

    def _compile(self, tree, cx, ct, path):
        if isinstance(tree, dict) and "expr" in tree and set(tree) <= {"expr", "optional"}:
            expr, optional = cx(path + ("expr",), tree["expr"]), bool(tree.get("optional"))

            def value(ctx):
                v = expr(ctx)
                return _OMIT if optional and v in (None, "") else v
            return value
        if isinstance(tree, dict) and "each" in tree and set(tree) <= {"each", "as", "value"}:
            each, name = cx(path + ("each",), tree["each"]), tree.get("as", "item")
            inner = self._compile(tree.get("value"), cx, ct, path + ("value",))

            def array(ctx):
                sub = dict(ctx)
                out = []
                for item in each(ctx) or ():  # null is an empty list, as for_each in the XML
                    sub[name] = item
                    v = inner(sub)
                    if v is not _OMIT:
                        out.append(v)
                return out
            return array
        if isinstance(tree, dict):
            parts = [(k, self._compile(v, cx, ct, path + (k,))) for k, v in tree.items()]

            def obj(ctx):
                out = {}
                for k, fn in parts:
                    v = fn(ctx)
                    if v is not _OMIT:
                        out[k] = v
                return out
            return obj
        if isinstance(tree, list):
            items = [self._compile(v, cx, ct, path + (i,)) for i, v in enumerate(tree)]
            return lambda ctx: [v for v in (fn(ctx) for fn in items) if v is not _OMIT]
        if isinstance(tree, str):
            tmpl = ct(path, tree)
            return lambda ctx: tmpl(ctx)
        return lambda ctx, _v=tree: _v


def dumps(value: Any) -> str:
    """JSON text with Decimals as exact numbers."""
    return _dump(value)


def _dump(value: Any) -> str:
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(str(k))}:{_dump(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_dump(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)
