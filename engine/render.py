"""Writing XML from the mapping's declared element tree, as text.

An element spec is compiled once into a closure (cached per spec, replacement table and
indentation level) that appends the element's serialised text to a list: exactly the
bytes ``etree.tostring`` writes for the same tree after ``etree.indent(el, "  ", level)``
(escaping, empty elements, indentation, text before children), so the file does not
change with the way it is built. The caller parses the text once to validate it against
the XSD; building the tree with ``SubElement`` and then indenting and serialising it cost
about twice as much (see bench/).

The plain children of an element (text only: no attributes, children, conditions or
loops) are written in one tight loop, constant texts are cleaned and escaped once, and
contexts are copied only where ``with:`` or ``for_each:`` add names.
"""

from __future__ import annotations

from typing import Any, Callable

from lxml import etree

from .errors import OrderError
from .expressions import EvaluationError
from .filters import xml_cleaner
from .mapping import Element

INDENT = "  "

#: ``builder(ctx, out)``: appends the element's text (none, one or one per for_each item)
Builder = Callable[[dict[str, Any], list], None]

_compiled: dict[tuple[int, int, int], tuple[Element, dict, Callable]] = {}

def render_text(spec: Element, ctx: dict[str, Any], replacements: dict[str, str], level: int = 0) -> list[str]:
    """The serialised text of each element ``spec`` yields for ``ctx``, indented for ``level``."""
    out: list[str] = []
    writer(spec, replacements, level)(ctx, out)
    return out


def writer(spec: Element, replacements: dict[str, str], level: int = 0) -> Builder:
    """``builder(ctx, out)``: appends one complete text per element ``spec`` yields."""
    key = (id(spec), id(replacements), level)
    hit = _compiled.get(key)
    if hit is not None and hit[0] is spec and hit[1] is replacements:
        return hit[2]
    builder = _compile(spec, replacements, spec.name, level, top=True)
    _compiled[key] = (spec, replacements, builder)  # spec and table kept alive: ids stay theirs
    return builder


#: What libxml2 escapes when it writes character data, and in attribute values (between double
#: quotes) besides; "&" first, so that no escape is escaped again.
_TEXT_ESCAPES = (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ("\r", "&#13;"))
_ATTRIBUTE_ESCAPES = _TEXT_ESCAPES + (('"', "&quot;"), ("\n", "&#10;"), ("\t", "&#9;"))


def _escaped(text: str, escapes: tuple[tuple[str, str], ...]) -> str:
    for char, entity in escapes:
        if char in text:
            text = text.replace(char, entity)
    return text


def escape_text(text: str) -> str:
    """Character data as libxml2 writes it: & < > escaped, and a carriage return as &#13;."""
    return _escaped(text, _TEXT_ESCAPES)


def escape_attribute(text: str) -> str:
    """An attribute value as libxml2 writes it between double quotes."""
    return _escaped(text, _ATTRIBUTE_ESCAPES)


def _fail(where: str, exc: Exception) -> OrderError:
    return OrderError(f"{where}: {exc}", field=where)


def _plain(spec: Element) -> bool:
    return (spec.text is not None and not spec.children and not spec.attributes and not spec.bindings
            and spec.when is None and spec.for_each is None)


def _compile(spec: Element, replacements: dict[str, str], where: str, level: int, top: bool = False) -> Builder:
    """The builder of ``spec`` at ``level``; a nested element's text starts with its indentation."""
    clean = xml_cleaner(replacements, escape_text)
    name = spec.name
    lead = "" if top else "\n" + INDENT * level       # the whitespace lxml's indent puts before it
    child_lead = "\n" + INDENT * (level + 1)
    close = f"\n{INDENT * level}</{name}>"
    text_fn = spec.text._fn if spec.text is not None else None
    constant = clean(spec.text.constant) if spec.text is not None and spec.text.constant is not None else None
    optional, has_children = spec.optional, bool(spec.children)
    attributes = [(f' {k}="', t) for k, t in spec.attributes]
    clean_plain = xml_cleaner(replacements) if attributes else None
    # children: a tuple (opening, closing, template, cleaned constant, optional, where) for a
    # plain child, else that child's own builder
    children: list[Any] = []
    for child in spec.children:
        child_where = f"{where}/{child.name}"
        if _plain(child):
            c_const = clean(child.text.constant) if child.text.constant is not None else None
            children.append((f"{child_lead}<{child.name}>", f"</{child.name}>", child.text._fn, c_const,
                             child.optional, child_where))
        else:
            children.append(_compile(child, replacements, child_where, level + 1))

    def one(ctx, out) -> None:
        try:
            if constant is not None:
                text = constant
            elif text_fn is not None:
                text = clean(text_fn(ctx))
            else:
                text = None
            if optional and not text and not has_children:
                return
            if attributes:
                opening = "".join([lead, "<", name] + [
                    f'{k}{escape_attribute(clean_plain(t(ctx)))}"' for k, t in attributes]) + ">"
            else:
                opening = f"{lead}<{name}>"
        except EvaluationError as exc:
            raise _fail(where, exc) from None
        if top:
            parts: list[str] = []
        else:
            parts = out
        mark = len(parts)
        parts.append(opening)
        for child in children:
            if child.__class__ is tuple:
                c_open, c_close, c_tmpl, c_text, c_optional, c_where = child
                if c_text is None:
                    try:
                        c_text = clean(c_tmpl(ctx))
                    except EvaluationError as exc:
                        raise _fail(c_where, exc) from None
                if c_optional and not c_text:
                    continue
                parts.append(c_open + c_text + c_close)
            else:
                child(ctx, parts)
        if len(parts) > mark + 1:  # children written: lxml's indent puts the text (if any) first
            if text:
                first = parts[mark + 1]
                parts[mark + 1] = first[len(child_lead):]
                parts[mark] = opening + text
            parts.append(close)
        elif text is None:
            parts[mark] = opening[:-1] + "/>"
        else:
            parts[mark] = opening + text
            parts.append(f"</{name}>")
        if top:
            out.append("".join(parts))

    bindings, when, for_each, item_name = list(spec.bindings), spec.when, spec.for_each, spec.item_name
    if not bindings and when is None and for_each is None:
        return one

    def build(ctx, out) -> None:
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
            one(ctx, out)
            return
        item_ctx = dict(ctx)
        for item in items:
            item_ctx[item_name] = item
            one(item_ctx, out)

    return build
