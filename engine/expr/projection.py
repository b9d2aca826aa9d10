"""Which parts of a record a mapping reads, so that JSON decoding builds only those.

A full-size CCV order is ~10 KB of JSON, some 600 values, of which the default mapping
reads about sixty. Decoding into a typed shape that names only those (msgspec skips the
rest without building it) takes a third of the time, and every later stage runs faster
on the smaller, fresher record (bench/: about a quarter off the whole run).

The shape is read from the mapping's own templates: every ``record`` path they use
(``record.customer.email``), through the names bound to record paths (``let``, the invoice
rows' ``as``, ``with:`` and ``for_each:`` in the output), keeps that value whole; a path
used only to reach further (``record.customer`` in ``record.customer.email``) keeps only
what is reached. ``items | sum(attribute='x')`` and ``map(attribute='x')`` reach ``x`` of
each item. Anything the analysis cannot follow keeps the record whole: a dynamic key
(``record[name]``), ``record`` itself used as a value, a template that cannot be parsed,
a name bound twice to different things, an API destination (its bodies see the context).

The record then holds exactly the keys a template could see; values are the same objects
a full decode gives. When the typed decode refuses the document (a value of another type
than the shape expects, malformed JSON, invalid UTF-8 anywhere), the full decoder decides,
so errors and odd records are exactly as before. One difference is deliberate: a number
that no Python value can hold (an int of more than 4,300 digits, an exponent of 19 digits)
in a field the mapping never reads is skipped, so that order converts; decoded in full, the
whole file is refused. Finding such numbers first cost more than a third of decoding.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Callable, Iterator, Optional, TypedDict

import msgspec
from jinja2 import nodes

from engine.io import jsondecode
from engine.expr.expressions import Expression, Template
from engine.expr.generator import parse_expression, parse_template
from engine.config.mapping import Element, LoadedMapping

ROOT = "record"
_EACH = "[]"  # a path step: every item of a list

#: A value kept whole (a leaf of a shape).
WHOLE = type("Whole", (), {"__repr__": lambda self: "WHOLE"})()


class _CannotFollow(Exception):
    """A use of the record the analysis does not follow: keep it whole."""


def record_shape(mapping: LoadedMapping) -> dict | None:
    """The record paths ``mapping`` reads, as a tree (``WHOLE`` leaves); None: the whole record."""
    if mapping.has_api:
        return None
    try:
        return _Analysis(mapping).shape()
    except _CannotFollow:
        return None


def decoder(mapping: LoadedMapping) -> Callable[[bytes], Any]:
    """``loads(data)`` for records of ``mapping``: the projected decode, else the full one."""
    shape = record_shape(mapping)
    if shape is None:
        return jsondecode.loads
    typed = msgspec.json.Decoder(_typed(shape, "Record"), float_hook=Decimal).decode
    full = jsondecode.loads

    def loads(data: bytes) -> Any:
        if not data.isascii():
            try:  # the typed decode skips unread strings unchecked: invalid UTF-8 is the full decoder's to refuse
                data.decode("utf-8")
            except UnicodeDecodeError:
                return full(data)
        try:
            return typed(data)
        except Exception:  # noqa: BLE001 - another shape, malformed, too deep: the full decoder decides
            return full(data)

    return loads


def _typed(shape: dict, name: str) -> Any:
    """The msgspec type of a shape: a TypedDict of the keys read (or None), a list of them."""
    if shape is WHOLE:
        return Any
    if set(shape) == {_EACH}:
        item = _typed(shape[_EACH], f"{name}_item")
        return Optional[list[item]]  # type: ignore[valid-type]  # built at run time for msgspec: no static type
    fields = {key: _typed(sub, f"{name}_{i}") for i, (key, sub) in enumerate(sorted(shape.items()))}
    return Optional[TypedDict(name, fields, total=False)]  # type: ignore[operator]  # built at run time, as above


class _Analysis:
    def __init__(self, mapping: LoadedMapping):
        self.m = mapping
        self.paths: list[tuple[str, ...]] = []  # every record path read whole
        self.aliases: dict[str, set[tuple[str, ...]]] = {ROOT: {()}}  # name -> the record paths bound to it
        self.bound: set[int] = set()  # the expressions that bind a name to a record path (read through it)
        self.reached: list[tuple[str, ...]] = []  # the record paths bound to names: they must exist

    def shape(self) -> dict | None:
        m = self.m
        # names bound to record paths, in the order they are bound
        for name, expr in m.let:
            self.bind(name, expr)
        self.bind(m.invoice.lines.name, m.invoice.lines.each, each=True)
        for element in _elements(m.record_element):
            for name, expr in element.bindings:
                self.bind(name, expr)
            if element.for_each is not None:
                self.bind(element.item_name, element.for_each, each=True)
        for compiled in _compiled(m):
            self.read(compiled)
        tree: dict = {}
        for path in self.paths:
            if not path:
                return None  # the record itself, whole
            parent = _reach(tree, path[:-1])
            if parent is not None:
                parent[path[-1]] = WHOLE
        for path in self.reached:  # a bound value exists even if nothing is read through its name
            _reach(tree, path)
        if any(_EACH in node and len(node) > 1 for node in _subtrees(tree)):
            raise _CannotFollow  # a value read both as a list and as an object
        return tree

    def bind(self, name: str, expr: Expression, each: bool = False) -> None:
        """``name`` is ``expr`` where it is bound: through a record path, what is read through the
        name is read there (a name bound in several places: in each of them)."""
        if name == ROOT:
            raise _CannotFollow  # "record" rebound: every record path would mean something else
        paths = self.path_of(_parse_expression(expr.source))
        if paths:
            self.bound.add(id(expr))  # what is read through the name is kept, not the whole value
            targets = [p + (_EACH,) if each else p for p in paths]
            self.reached.extend(targets)
            self.aliases.setdefault(name, set()).update(targets)
        else:
            self.aliases.setdefault(name, set())

    def path_of(self, node: nodes.Node) -> list[tuple[str, ...]] | None:
        """The record paths ``node`` is (a name bound to record paths, then keys), or None."""
        steps: list[str] = []
        while True:
            if type(node) is nodes.Getattr:
                steps.append(node.attr)
            elif type(node) is nodes.Getitem and type(node.arg) is nodes.Const:
                key = node.arg.value
                if type(key) is int:
                    steps.append(_EACH)
                elif type(key) is str:
                    steps.append(key)
                else:
                    return None
            elif type(node) is nodes.Name and node.ctx == "load":
                bases = self.aliases.get(node.name)
                if not bases:
                    return None
                rest = tuple(reversed(steps))
                for i, step in enumerate(rest):
                    if step in _DICT_ATTRIBUTES:  # x.get, x.values: the method (if no such key) reads all of x
                        rest = rest[:i]
                        break
                return [base + rest for base in bases]
            else:
                return None
            node = node.node

    def read(self, compiled: Expression | Template) -> None:
        if id(compiled) in self.bound:
            return
        if isinstance(compiled, Template):
            if compiled.constant is not None:
                return
            try:
                body = parse_template(compiled.source)
            except Exception:  # noqa: BLE001 - it loaded, so it parses; if not, follow nothing
                raise _CannotFollow from None
            for node in body:
                self.visit(node)
        else:
            self.visit(_parse_expression(compiled.source))

    def visit(self, node: nodes.Node) -> None:
        """Every record path read under ``node``: the longest chain of keys each time."""
        # type(node) is X each time, not a saved type: mypy narrows node only by the former
        if type(node) in (nodes.Getattr, nodes.Getitem) or (type(node) is nodes.Name and node.ctx == "load"):
            paths = self.path_of(node)
            if paths is not None:
                self.paths.extend(paths)
                if type(node) is nodes.Getitem:  # keep visiting the subscript's own names, if any
                    self.visit(node.arg)
                return
            if type(node) is nodes.Name:
                return
            if type(node) is nodes.Getitem and self.rooted(node.node):  # record[name]: any key at all
                raise _CannotFollow
        if type(node) is nodes.Name and node.ctx != "load" and node.name in self.aliases:
            raise _CannotFollow  # {% set record = ... %} and the like
        if type(node) is nodes.Call and type(node.node) is nodes.Getattr:
            bases = self.path_of(node.node.node)
            if bases is not None:  # a method of a record value (record.customer.get('x')): any key it holds
                self.paths.extend(bases)
                for child in node.iter_child_nodes(exclude=("node",)):
                    self.visit(child)
                return
        if type(node) is nodes.Filter and node.name in ("sum", "map") and node.node is not None:
            key = _attribute(node)
            paths = self.path_of(node.node) if key is not None else None
            if key is not None and paths is not None:
                self.paths.extend(p + (_EACH, key) for p in paths)
                for child in list(node.args) + [k.value for k in node.kwargs]:
                    self.visit(child)
                return
        for child in node.iter_child_nodes():
            self.visit(child)

    def rooted(self, node: nodes.Node) -> bool:
        while type(node) is nodes.Getattr or type(node) is nodes.Getitem:
            node = node.node
        return type(node) is nodes.Name and bool(self.aliases.get(node.name))


#: Names that, on a dict without such a key, are the dict's own attributes (a.b tries the key
#: first, then the attribute; a['b'] too): a path through one reaches the whole dict.
_DICT_ATTRIBUTES = frozenset(dir(dict))


def _attribute(node: nodes.Filter) -> str | None:
    """``key`` of ``sum(attribute='key')`` / ``map(attribute='key')`` (a plain key only)."""
    if node.args or len(node.kwargs) != 1 or node.dyn_args is not None or node.dyn_kwargs is not None:
        return None
    kw = node.kwargs[0]
    if kw.key != "attribute" or type(kw.value) is not nodes.Const:
        return None
    key = kw.value.value
    if type(key) is not str or not key or "." in key or key.isdigit() or key in _DICT_ATTRIBUTES:
        return None
    return key


def _parse_expression(source: str) -> nodes.Node:
    try:
        node = parse_expression(source)
    except Exception:  # noqa: BLE001
        raise _CannotFollow from None
    if node is None:
        raise _CannotFollow
    return node


def _reach(tree: dict, steps: tuple[str, ...]) -> dict | None:
    """The node of ``tree`` at ``steps``, made where missing; None if a value on the way is whole."""
    node = tree
    for step in steps:
        node = node.setdefault(step, {})
        if node is WHOLE:
            return None
    return node


def _elements(element: Element | None) -> Iterator[Element]:
    if element is None:
        return
    yield element
    for child in element.children:
        yield from _elements(child)


def _subtrees(tree: dict) -> Iterator[dict]:
    yield tree
    for sub in tree.values():
        if sub is not WHOLE:
            yield from _subtrees(sub)


def _compiled(value: Any, seen: set[int] | None = None) -> Iterator[Expression | Template]:
    """Every expression and template of the mapping (the document's too: they see no record)."""
    seen = set() if seen is None else seen
    if id(value) in seen:
        return
    seen.add(id(value))
    if isinstance(value, (Expression, Template)):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _compiled(item, seen)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _compiled(item, seen)
    elif hasattr(value, "__dataclass_fields__"):
        for name in value.__dataclass_fields__:
            if name not in ("raw", "located", "file"):
                yield from _compiled(getattr(value, name), seen)
