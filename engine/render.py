"""Building XML elements from the mapping's declared element tree, with lxml.

An element spec is compiled once into a closure (cached per spec and replacement table):
the plain children of an element (text only: no attributes, children, conditions or
loops) are built in one tight loop, constant texts are cleaned once, templates are
called without the wrapper, and contexts are copied only where ``with:`` or
``for_each:`` add names. The result is the same tree, the same texts and the same errors
as walking the spec for every record. (Writing the element as text and parsing it once
was tried: no faster than ``SubElement`` once the templates are counted.)
"""

from __future__ import annotations

from typing import Any, Callable

from lxml import etree

from .errors import OrderError
from .expressions import EvaluationError
from .filters import xml_cleaner
from .mapping import Element

_SubElement = etree.SubElement
_Element = etree.Element

Builder = Callable[[dict[str, Any], Any, list], None]

_compiled: dict[tuple[int, int], tuple[Element, dict, Builder]] = {}


def render(spec: Element, ctx: dict[str, Any], replacements: dict[str, str], label: str = "") -> list[etree._Element]:
    """All elements ``spec`` yields for ``ctx`` (none, one, or one per for_each item)."""
    out: list[etree._Element] = []
    compiled(spec, replacements, label)(ctx, None, out)
    return out


def compiled(spec: Element, replacements: dict[str, str], label: str = "") -> Builder:
    """The builder for ``spec``: ``builder(ctx, parent, out)``; top-level elements go to ``out``."""
    key = (id(spec), id(replacements))
    hit = _compiled.get(key)
    if hit is not None and hit[0] is spec and hit[1] is replacements and not label:
        return hit[2]
    builder = _compile(spec, xml_cleaner(replacements), label or spec.name)
    if not label:
        _compiled[key] = (spec, replacements, builder)  # spec and table kept alive: ids stay theirs
    return builder


def _fail(where: str, exc: Exception) -> OrderError:
    return OrderError(f"{where}: {exc}", field=where)


def _plain(spec: Element) -> bool:
    return (spec.text is not None and not spec.children and not spec.attributes and not spec.bindings
            and spec.when is None and spec.for_each is None)


def _compile(spec: Element, clean: Callable[[str], str], where: str) -> Builder:
    name = spec.name
    text_fn = spec.text._fn if spec.text is not None else None
    constant = None
    if spec.text is not None and spec.text.constant is not None:
        constant = clean(spec.text.constant)
    optional, has_children = spec.optional, bool(spec.children)
    attributes = list(spec.attributes)
    # children: a tuple (name, template, cleaned constant, optional, where) for a plain
    # child, else that child's own builder
    children: list[Any] = []
    for child in spec.children:
        child_where = f"{where}/{child.name}"
        if _plain(child):
            c_const = clean(child.text.constant) if child.text.constant is not None else None
            children.append((child.name, child.text._fn, c_const, child.optional, child_where))
        else:
            children.append(_compile(child, clean, child_where))

    def one(ctx, parent, out) -> None:
        try:
            if constant is not None:
                text = constant
            elif text_fn is not None:
                text = clean(text_fn(ctx))
            else:
                text = None
            if optional and not text and not has_children:
                return
            attrib = {k: clean(t(ctx)) for k, t in attributes} if attributes else None
        except EvaluationError as exc:
            raise _fail(where, exc) from None
        el = _Element(name, attrib) if parent is None else _SubElement(parent, name, attrib)
        if text is not None:
            el.text = text
        for child in children:
            if child.__class__ is tuple:
                c_name, c_tmpl, c_text, c_optional, c_where = child
                if c_text is None:
                    try:
                        c_text = clean(c_tmpl(ctx))
                    except EvaluationError as exc:
                        raise _fail(c_where, exc) from None
                if c_optional and not c_text:
                    continue
                _SubElement(el, c_name).text = c_text
            else:
                child(ctx, el, out)
        if parent is None:
            out.append(el)

    bindings, when, for_each, item_name = list(spec.bindings), spec.when, spec.for_each, spec.item_name
    if not bindings and when is None and for_each is None:
        return one

    def build(ctx, parent, out) -> None:
        try:
            if bindings:
                ctx = dict(ctx)
                for b_name, expr in bindings:
                    ctx[b_name] = expr(ctx)
            if when is not None and not when(ctx):
                return
            if for_each is None:
                items = None
            else:
                items = for_each(ctx) or ()  # null repeats zero times, like an empty list
        except EvaluationError as exc:
            raise _fail(where, exc) from None
        if items is None:
            one(ctx, parent, out)
            return
        item_ctx = dict(ctx)
        for item in items:
            item_ctx[item_name] = item
            one(item_ctx, parent, out)

    return build

