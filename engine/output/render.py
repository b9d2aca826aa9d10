"""Writing XML from the mapping's declared element tree, as text.

An element spec is compiled once into a generated Python function (cached per spec,
replacement table and indentation level) that appends the element's serialised text to a
list: exactly the bytes ``etree.tostring`` writes for the same tree after
``etree.indent(el, "  ", level)`` (escaping, empty elements, indentation, text before
children), so the file does not change with the way it is built. The caller parses the
text once to validate it against the XSD; building the tree with ``SubElement`` and then
indenting and serialising it cost about twice as much (see bench/).

The function is straight-line code with every template's generated code inlined (see
:class:`_WriterCode`); constant texts are cleaned and escaped once, and contexts are
copied only where ``with:`` or ``for_each:`` add names.
"""

from __future__ import annotations

from typing import Any, Callable

from engine.expr.codegen import run_generated
from engine.errors import MappingError
from engine.expr.evaluate import call
from engine.expr.expressions import InlineCode
from engine.expr.filters import replaces_only_non_ascii, xml_cleaner
from engine.config.mapping import Element

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
    builder = _compile(spec, replacements, spec.name, level)
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


def _plain(spec: Element) -> bool:
    return (spec.text is not None and not spec.children and not spec.attributes and not spec.bindings
            and spec.when is None and spec.for_each is None)


def _compile(spec: Element, replacements: dict[str, str], where: str, level: int) -> Builder:
    """The builder of ``spec`` at ``level``: generated Python for the whole tree."""
    try:
        return _WriterCode(replacements).function(spec, where, level)
    except (SyntaxError, RecursionError, MemoryError, ValueError, OverflowError):
        pass  # a limit of Python's compiler: the same code, each template called, not inlined
    try:
        return _WriterCode(replacements, inline=False).function(spec, where, level)
    except (SyntaxError, RecursionError, MemoryError, ValueError, OverflowError) as exc:
        raise MappingError(f"{where}: the element tree is too deeply nested to write ({exc})") from None


class _WriterCode:
    """Python source for a builder: straight-line code per element, the templates inlined.

    The code does what the element tree says, in the order a reader would: bindings, when,
    for_each, then per element its text, its attributes and its children. Each template's
    text is computed by its inlined fast-path code (:class:`InlineCode`); if that raises,
    the template's own function runs instead (Jinja's answer, or its error named by element).
    Try blocks cost nothing in Python 3.11 until something raises. An element with ``with``,
    ``when`` or ``for_each`` gets a function of its own, so the code nests no deeper than
    one such element however deep the tree (Python's compiler allows 20 nested blocks).
    """

    def __init__(self, replacements: dict[str, str], inline: bool = True):
        self.code = InlineCode()
        self.inline = inline
        self.clean = xml_cleaner(replacements, escape_text)
        self.clean_plain = xml_cleaner(replacements)
        self.ns = self.code.ns
        self.ns.update({"_value": call, "_clean": self.clean, "_clean_plain": self.clean_plain,
                        "_escape_attribute": escape_attribute, "_len": len, "_join": "".join})
        # cleaning leaves a plain number as it is unless a replacement could match in it
        self.numbers_are_clean = replaces_only_non_ascii(replacements)
        self.lines: list[str] = []  # the function being written
        self.written: list[str] = []  # the functions done
        self.n = 0

    def name(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}{self.n}"

    def emit(self, depth: int, line: str) -> None:
        self.lines.append("    " * depth + line)

    def const(self, value: Any) -> str:
        return self.code.const(value)

    def function(self, spec: Element, where: str, level: int) -> Builder:
        self.emit(0, "def _write(c, out):")
        self.element(spec, where, level, "c", None, 1)
        source = "\n".join(self.written + self.lines) + "\n"
        run_generated(source, f"writer of {where}", self.ns)
        return self.ns["_write"]

    def text(self, template, ctx: str, where: str, var: str, depth: int, clean: str = "_clean") -> None:
        """Emit ``var = cleaned text of template``."""
        for line in self.code.assignment(var, template, ctx, where, self.inline):
            self.emit(depth, line)
        if not (self.numbers_are_clean and self.code.writes_plain_number(template)):
            self.emit(depth, f"{var} = {self.cleaned(var, clean)}")

    def cleaned(self, var: str, clean: str) -> str:
        """``clean(var)``; inline, when the text is printable ASCII without ``& < >``: no
        replacement can match it then (none is ASCII), nothing is stripped out or escaped,
        and cleaning leaves the text stripped of surrounding spaces."""
        if not self.numbers_are_clean:  # an ASCII replacement: every text goes through the table
            return f"{clean}({var})"
        plain = f"{var}.isascii() and {var}.isprintable()"
        if clean == "_clean":
            plain += f" and '&' not in {var} and '<' not in {var} and '>' not in {var}"
        return f"{var}.strip() if {plain} else {clean}({var})"

    def element(self, spec: Element, where: str, level: int, ctx: str, parts: str | None, depth: int) -> None:
        """Emit the code writing ``spec`` into the list ``parts`` (None: a text of its own into ``out``)."""
        if parts is not None and (spec.bindings or spec.when is not None or spec.for_each is not None):
            function = self.name("_element")
            self.emit(depth, f"{function}({ctx}, {parts})")
            outer, self.lines = self.lines, [f"def {function}(c, parts):"]
            self.scoped(spec, where, level, "c", "parts", 1)
            self.written.append("\n".join(self.lines))
            self.lines = outer
            return
        self.scoped(spec, where, level, ctx, parts, depth)

    def scoped(self, spec: Element, where: str, level: int, ctx: str, parts: str | None, depth: int) -> None:
        """``element``: its with, when and for_each, then its body."""
        if spec.bindings:
            bound = self.name("c")
            self.emit(depth, f"{bound} = {ctx}.copy()")
            for b_name, expr in spec.bindings:
                self.emit(depth, f"{bound}[{b_name!r}] = _value({self.const(expr._fn)}, {bound}, {where!r})")  # noqa: SLF001
            ctx = bound
        if spec.when is not None:
            self.emit(depth, f"if _value({self.const(spec.when._fn)}, {ctx}, {where!r}):")  # noqa: SLF001
            depth += 1
        if spec.for_each is not None:
            items, item_ctx, item = self.name("items"), self.name("c"), self.name("item")
            self.emit(depth, f"{items} = _value({self.const(spec.for_each._fn)}, {ctx}, {where!r}) or ()")  # noqa: SLF001
            self.emit(depth, f"{item_ctx} = {ctx}.copy()")
            self.emit(depth, f"for {item} in {items}:")
            self.emit(depth + 1, f"{item_ctx}[{spec.item_name!r}] = {item}")
            ctx, depth = item_ctx, depth + 1
        self.body(spec, where, level, ctx, parts, depth)

    def body(self, spec: Element, where: str, level: int, ctx: str, parts: str | None, depth: int) -> None:
        """One element: its text, attributes and children; ``parts`` None: a text of its own into ``out``."""
        name = spec.name
        top = parts is None
        lead = "" if top else "\n" + INDENT * level  # the whitespace lxml's indent puts before it
        child_lead = "\n" + INDENT * (level + 1)
        has_children = bool(spec.children)
        # the text: None, a cleaned constant, or a variable
        text: str | None = None
        constant: str | None = None
        if spec.text is not None:
            if spec.text.constant is not None:
                constant = self.clean(spec.text.constant)
                text = self.const(constant)
            else:
                text = self.name("text")
                self.text(spec.text, ctx, where, text, depth)
        if spec.optional and not has_children:
            if text is None or constant == "":
                self.emit(depth, "pass")
                return
            if constant is None:
                self.emit(depth, f"if {text}:")
                depth += 1
        # the opening tag
        if any(t.constant is None for _, t in spec.attributes):
            opening = self.name("opening")
            pieces = [repr(f"{lead}<{name}")]
            for key, template in spec.attributes:
                if template.constant is not None:
                    pieces.append(repr(f' {key}="{escape_attribute(self.clean_plain(template.constant))}"'))
                else:
                    value = self.name("attr")
                    self.text(template, ctx, where, value, depth, clean="_clean_plain")
                    pieces += [repr(f' {key}="'), f"_escape_attribute({value})", repr('"')]
            self.emit(depth, f"{opening} = {' + '.join(pieces)} + '>'")
        else:
            attrs = "".join(f' {k}="{escape_attribute(self.clean_plain(t.constant))}"' for k, t in spec.attributes)
            opening = self.const(f"{lead}<{name}{attrs}>")
        close = f"</{name}>"
        if not has_children:
            target = "out" if top else parts
            if text is None:
                self.emit(depth, f"{target}.append({opening}[:-1] + '/>')")
            else:
                self.emit(depth, f"{target}.append({opening} + {text} + {close!r})")
            return
        if parts is None:  # top: the element's own list
            parts = self.name("parts")
            self.emit(depth, f"{parts} = []")
        mark = self.name("mark")
        self.emit(depth, f"{mark} = _len({parts})")
        self.emit(depth, f"{parts}.append({opening})")
        for child in spec.children:
            child_where = f"{where}/{child.name}"
            if _plain(child):
                self.plain(child, child_where, child_lead, ctx, parts, depth)
            else:
                self.element(child, child_where, level + 1, ctx, parts, depth)
        # children written: lxml's indent puts the text (if any) first
        self.emit(depth, f"if _len({parts}) > {mark} + 1:")
        if text is not None and constant != "":
            inner = depth + 1
            if constant is None:
                self.emit(inner, f"if {text}:")
                inner += 1
            self.emit(inner, f"{parts}[{mark} + 1] = {parts}[{mark} + 1][{len(child_lead)}:]")
            self.emit(inner, f"{parts}[{mark}] = {opening} + {text}")
        self.emit(depth + 1, f"{parts}.append({f'{chr(10)}{INDENT * level}{close}'!r})")
        self.emit(depth, "else:")
        if text is None:
            self.emit(depth + 1, f"{parts}[{mark}] = {opening}[:-1] + '/>'")
        else:
            self.emit(depth + 1, f"{parts}[{mark}] = {opening} + {text}")
            self.emit(depth + 1, f"{parts}.append({close!r})")
        if top:
            self.emit(depth, f"out.append(_join({parts}))")

    def plain(self, child: Element, where: str, child_lead: str, ctx: str, parts: str, depth: int) -> None:
        """A text-only child: ``<Name>text</Name>`` on its own line."""
        opening, close = f"{child_lead}<{child.name}>", f"</{child.name}>"
        template = child.text
        assert template is not None  # _plain(child): it has a text
        if template.constant is not None:
            text = self.clean(template.constant)
            if not (child.optional and not text):
                self.emit(depth, f"{parts}.append({self.const(opening + text + close)})")
            return
        var = self.name("v")
        self.text(template, ctx, where, var, depth)
        if child.optional:
            self.emit(depth, f"if {var}:")
            depth += 1
        self.emit(depth, f"{parts}.append({opening!r} + {var} + {close!r})")
