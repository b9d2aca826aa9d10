"""Building XML elements from the mapping's declared element tree, with lxml."""

from __future__ import annotations

from typing import Any

from lxml import etree

from .errors import OrderError
from .expressions import EvaluationError
from .filters import clean_xml_text
from .mapping import Element


def render(spec: Element, ctx: dict[str, Any], replacements: dict[str, str], label: str = "") -> list[etree._Element]:
    """All elements ``spec`` yields for ``ctx`` (none, one, or one per for_each item)."""
    out: list[etree._Element] = []
    _build(spec, ctx, None, out, replacements, label or spec.name)
    return out


def _fail(where: str, exc: Exception) -> OrderError:
    return OrderError(f"{where}: {exc}", field=where)


def _build(spec: Element, ctx: dict[str, Any], parent, out, replacements, where: str) -> None:
    try:
        if spec.bindings:
            ctx = dict(ctx)
            for name, expr in spec.bindings:
                ctx[name] = expr(ctx)
        if spec.when is not None and not spec.when(ctx):
            return
        items = spec.for_each(ctx) if spec.for_each is not None else None
    except EvaluationError as exc:
        raise _fail(where, exc) from None
    if items is None:
        _one(spec, ctx, parent, out, replacements, where)
        return
    item_ctx = dict(ctx)
    for item in items:
        item_ctx[spec.item_name] = item
        _one(spec, item_ctx, parent, out, replacements, where)


def _one(spec: Element, ctx, parent, out, replacements, where: str) -> None:
    try:
        text = clean_xml_text(spec.text(ctx), replacements) if spec.text is not None else None
        if spec.optional and not text and not spec.children:
            return
        attrib = {k: clean_xml_text(t(ctx), replacements) for k, t in spec.attributes} if spec.attributes else None
    except EvaluationError as exc:
        raise _fail(where, exc) from None
    el = etree.Element(spec.name, attrib) if parent is None else etree.SubElement(parent, spec.name, attrib)
    if text is not None:
        el.text = text
    for child in spec.children:
        _build(child, ctx, el, out, replacements, f"{where}/{child.name}")
    if parent is None:
        out.append(el)
