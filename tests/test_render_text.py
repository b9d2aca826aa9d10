"""engine.output.render writes each element as text: byte for byte what lxml writes for the same tree.

The contract (engine/output/render.py): the text of an element equals
``etree.tostring(el, encoding="UTF-8").decode()`` after ``etree.indent(el, space="  ", level=level)``
for the tree the spec describes. The reference below builds that tree independently, with
``etree.Element``/``SubElement`` and the mapping's own cleaner, and lets lxml indent and
serialise it; the writer's output is compared with it for hand-picked tricky specs, for a
few hundred random ones (fixed seed), and for the real mapping over the fixture shop.
A handful of literal expectations pin the format down without the reference.

The writer is generated code (templates inlined); its ways out are tested too: a template
the inlined code gives up on gets Jinja's answer, a failure names its element, and the
sandbox holds.
"""

from __future__ import annotations

import random
import re
from decimal import Decimal

import pytest
from lxml import etree

from helpers import FIXTURES, GOLDEN, MAPPING
from engine.output.document import DECLARATION, record_level
from engine.expr.expressions import compile_expression, compile_template
from engine.expr.filters import DEFAULT_REPLACEMENTS, xml_cleaner
from engine.config.mapping import Element, load_mapping
from engine.convert.pipeline import Converted, Converter
from engine.output.render import render_text, writer
from engine.io.sources.fixtures import FixtureSource

R = DEFAULT_REPLACEMENTS
#: a table with ASCII keys (no fast path) whose replacements bring in what must be escaped,
#: forbidden characters and white space to strip
CUSTOM = {"&": " en ", "’": "'", "X": "<X>", "ü": "\x00ue", "Q": "  "}
LEVELS = (0, 1, 2, 3)


# --------------------------------------------------------------------------- reference


def reference(spec: Element, ctx: dict, replacements: dict, level: int = 0) -> list[str]:
    """The texts lxml writes for ``spec``: built with SubElement, indented, serialised."""
    clean = xml_cleaner(replacements)
    roots: list[etree._Element] = []
    _ref_build(spec, ctx, clean, None, roots)
    texts = []
    for el in roots:
        etree.indent(el, space="  ", level=level)
        texts.append(etree.tostring(el, encoding="UTF-8").decode("utf-8"))
    return texts


def _ref_build(spec: Element, ctx: dict, clean, parent, roots: list) -> None:
    if spec.bindings:
        ctx = dict(ctx)
        for name, expr in spec.bindings:
            ctx[name] = expr(ctx)
    if spec.when is not None and not spec.when(ctx):
        return
    if spec.for_each is None:
        contexts = [ctx]
    else:
        contexts = [{**ctx, spec.item_name: item} for item in (spec.for_each(ctx) or ())]
    for c in contexts:
        text = None if spec.text is None else clean(spec.text(c))
        if spec.optional and not text and not spec.children:
            continue
        attrib = {k: clean(t(c)) for k, t in spec.attributes}
        if parent is None:
            el = etree.Element(spec.name, attrib)
            roots.append(el)
        else:
            el = etree.SubElement(parent, spec.name, attrib)
        if text is not None:
            el.text = text
        for child in spec.children:
            _ref_build(child, c, clean, el, roots)


# --------------------------------------------------------------------------- helpers


_TEMPLATES: dict[str, object] = {}
_EXPRESSIONS: dict[str, object] = {}


def _t(source: str):
    """A compiled template, shared between specs (compiling Jinja is the slow part of these tests)."""
    if source not in _TEMPLATES:
        _TEMPLATES[source] = compile_template(source)
    return _TEMPLATES[source]


def _x(source: str):
    if source not in _EXPRESSIONS:
        _EXPRESSIONS[source] = compile_expression(source)
    return _EXPRESSIONS[source]


def E(name, text=None, *children, attrs=None, optional=False, for_each=None, as_="item", when=None, with_=None):
    """An Element spec, compiled as load_mapping would compile it."""
    return Element(
        name=name,
        attributes=[(k, _t(v)) for k, v in (attrs or {}).items()],
        text=None if text is None else _t(text),
        children=list(children),
        for_each=None if for_each is None else _x(for_each),
        item_name=as_,
        when=None if when is None else _x(when),
        bindings=[(k, _x(v)) for k, v in (with_ or {}).items()],
        optional=optional,
    )


def check(spec, ctx, level=0, replacements=R) -> list[str]:
    """The writer's texts for ``spec``, asserted equal to the reference's (and stable, and parseable)."""
    want = reference(spec, ctx, replacements, level)
    got = render_text(spec, ctx, replacements, level)
    assert got == want
    assert render_text(spec, ctx, replacements, level) == want  # again, through the cached builder
    # the texts parse, to the same trees (parsing drops only the <a></a> / <a/> distinction)
    parsed = [etree.fromstring(text.encode("utf-8")) for text in got]
    assert [etree.tostring(el, encoding="UTF-8") for el in parsed] == [
        etree.tostring(etree.fromstring(text.encode("utf-8")), encoding="UTF-8") for text in want]
    return got


NASTY = (' \t Bakkerij „De Zoete Inval” & Zonen <B.V.> "q" \'a\' ’s\r\nline2\r\tcol ]]> &amp; ☕😀 éàüñ Ærø '
         '\x00\x0b\x1f\ufffe\x7f\x85 \xa0\r\n ')

CTX = {
    "t": {
        "nasty": NASTY,
        "x": "X & <x>",
        "plain": "plain",
        "blank": "",
        "spaces": " \t\r\n \u2003 ",
        "controls": "\x00\x01\x0b\x1f",
        "emoji": "😀👍🏽 ☕",
        "accents": "Crème brûlée à la façon de Zoë",
        "quotes": "„dubbel” ‘enkel’",
        "cr": "a\rb\r\nc",
        "zero": "0",
        "gt": "1 > 0",
        "lt": "a<b",
        "amp": "A&B",
        "cr_only": "a\rb",
        "quot": "\"'",
        "tab": "a\tb",
        "lf": "a\nb",
    },
    "flag": True,
    "noflag": False,
    "items0": [],
    "items1": [{"name": "één & <1>", "n": 1, "show": True}],
    "items3": [{"name": "a\r\n\"b\"", "n": 1, "show": True},
               {"name": "", "n": 2, "show": False},
               {"name": "c\t<&>", "n": 3, "show": True}],
    "nothing": None,
    "billing": {"street": "Oudegracht & Co", "kind": "in\"voice\"\t"},
    "delivery": {"street": "", "kind": "delivery"},
    "matrix": [[1, 2], [], [3]],
}


# --------------------------------------------------------------------------- literal expectations


def test_literal_escaping_and_empty_forms():
    ctx = CTX
    assert render_text(E("a", "{{ t.x }}"), ctx, R) == ["<a>X &amp; &lt;x&gt;</a>"]
    assert render_text(E("a", "{{ t.cr }}"), ctx, R) == ["<a>a&#13;b&#13;\nc</a>"]
    assert render_text(E("a"), ctx, R) == ["<a/>"]
    assert render_text(E("a", attrs={"k": "v"}), ctx, R) == ['<a k="v"/>']
    assert render_text(E("a", "{{ t.blank }}"), ctx, R) == ["<a></a>"]
    assert render_text(E("a", "{{ t.spaces }}"), ctx, R) == ["<a></a>"]
    assert render_text(E("a", "{{ t.blank }}", optional=True), ctx, R) == []
    assert render_text(E("a", "{{ t.zero }}", optional=True), ctx, R) == ["<a>0</a>"]
    assert render_text(E("a", "", attrs={"k": 'a"b\tc\nd\re<f>&g\'h'}), ctx, R) == [
        '<a k="a&quot;b&#9;c&#10;d&#13;e&lt;f&gt;&amp;g\'h"></a>']
    assert render_text(E("a", "{{ t.quotes }}"), ctx, R) == ['<a>"dubbel" \'enkel\'</a>']
    assert render_text(E("a", "{{ t.controls }}x"), ctx, R) == ["<a>x</a>"]
    # each character that needs escaping on its own
    assert render_text(E("r", None, E("g", "{{ t.gt }}"), E("l", "{{ t.lt }}"), E("m", "{{ t.amp }}"),
                         E("c", "{{ t.cr_only }}"), E("q", "{{ t.quot }}")), ctx, R) == [
        "<r>\n  <g>1 &gt; 0</g>\n  <l>a&lt;b</l>\n  <m>A&amp;B</m>\n  <c>a&#13;b</c>\n  <q>\"'</q>\n</r>"]
    for key, escaped in (("gt", "1 &gt; 0"), ("lt", "a&lt;b"), ("amp", "A&amp;B"), ("cr_only", "a&#13;b"),
                         ("quot", "&quot;'"), ("tab", "a&#9;b"), ("lf", "a&#10;b")):
        assert render_text(E("a", attrs={"k": "{{ t.%s }}" % key}), ctx, R) == [f'<a k="{escaped}"/>']


def test_literal_nesting_and_text_before_children():
    spec = E("r", None, E("p", "1"), E("o", "", optional=True), E("n"), E("s", None, E("d", "2")))
    assert render_text(spec, CTX, R, 0) == ["<r>\n  <p>1</p>\n  <n/>\n  <s>\n    <d>2</d>\n  </s>\n</r>"]
    assert render_text(spec, CTX, R, 2) == [
        "<r>\n      <p>1</p>\n      <n/>\n      <s>\n        <d>2</d>\n      </s>\n    </r>"]
    mixed = E("r", "T&", E("c", "1"), E("d", "2"))
    assert render_text(mixed, CTX, R, 1) == ["<r>T&amp;<c>1</c>\n    <d>2</d>\n  </r>"]
    skipped = E("r", None, E("o", "{{ t.blank }}", optional=True), E("o2", "  ", optional=True))
    assert render_text(skipped, CTX, R) == ["<r/>"]
    assert render_text(E("r", "", E("o", "", optional=True)), CTX, R) == ["<r></r>"]
    assert render_text(E("r", "t", E("o", "", optional=True)), CTX, R) == ["<r>t</r>"]


def test_literal_for_each_when_and_with():
    each = E("l", "{{ it.n }}", for_each="items3", as_="it", attrs={"s": "{{ it.show }}"})
    assert render_text(each, CTX, R, 3) == ['<l s="True">1</l>', '<l s="False">2</l>', '<l s="True">3</l>']
    assert render_text(E("l", "x", for_each="items0"), CTX, R) == []
    assert render_text(E("l", "x", for_each="nothing"), CTX, R) == []
    assert render_text(E("a", "x", when="noflag"), CTX, R) == []
    assert render_text(E("a", "{{ b.street }}", with_={"b": "billing"}), CTX, R) == ["<a>Oudegracht &amp; Co</a>"]


# --------------------------------------------------------------------------- the generated code's way out


def test_a_template_the_inlined_code_gives_up_on_gets_jinjas_answer():
    # the inlined code reads dict keys directly and raises on a missing one; Jinja's own
    # evaluation then decides: default() and defined tests answer, in element order
    spec = E("r", None, E("a", "{{ t.nope | default('d&') }}"), E("b", "{{ t.nope is defined }}"),
             E("c", "{{ t.plain }}"), E("d", "{{ (t.nope or 'x') if t.nope is defined else 'y' }}"))
    assert check(spec, CTX, 1) == [
        "<r>\n    <a>d&amp;</a>\n    <b>False</b>\n    <c>plain</c>\n    <d>y</d>\n  </r>"]


def test_what_python_cannot_compile_inline_is_still_written():
    # a keyword argument that is a Python keyword, a chain Python nests too deeply, and a
    # tree deeper than Python's 20 nested blocks: the writer compiles and writes them
    elifs = "{% if t.plain == 'A0' %}0" + "".join(f"{{% elif t.plain == 'A{i}' %}}{i}" for i in range(1, 120))
    spec = E("r", None, E("k", "{{ '{in}|{from}'.format(in=t.plain, from=t.x) }}"), E("c", "{{ dict(class='x')['class'] }}"),
             E("e", elifs + "{% else %}none{% endif %}"))
    assert check(spec, CTX, 1) == [
        "<r>\n    <k>plain|X &amp; &lt;x&gt;</k>\n    <c>x</c>\n    <e>none</e>\n  </r>"]
    deep = E("leaf", "{{ t.plain }}")
    for i in range(30):
        deep = E(f"n{i}", None, deep, for_each="items1", as_=f"i{i}", when="flag", with_={f"b{i}": "t.zero"})
    got = check(deep, CTX, 0)
    assert got[0].count("<leaf>plain</leaf>") == 1 and got[0].count("<n0>") == 1


@pytest.mark.parametrize("spec,field,words", [
    (E("r", None, E("a", "1"), E("b", "{{ t.nope }}")), "r/b", "'t.nope' is undefined"),
    (E("r", None, E("a", None, E("b", "{{ nothing.x }}"))), "r/a/b", "nothing"),
    (E("r", None, E("a", "{{ t.nope }}", E("b", "1"))), "r/a", "'t.nope' is undefined"),
    (E("r", None, E("a", attrs={"k": "{{ t.plain | money }}"})), "r/a", "not a number"),
    (E("r", None, E("a", "x", when="t.nope")), "r/a", "nope"),
    (E("r", None, E("a", "x", for_each="t.nope")), "r/a", "nope"),
    (E("r", None, E("a", "{{ b }}", with_={"b": "t.nope"})), "r/a", "nope"),
])
def test_a_failing_template_names_its_element(spec, field, words):
    from engine.errors import OrderError
    with pytest.raises(OrderError) as caught:
        render_text(spec, CTX, R, 0)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ") and words in str(caught.value)


@pytest.mark.parametrize("source", [
    "{{ t.__class__ }}", "{{ t.plain.__class__.__mro__ }}", "{{ t.plain.upper.__globals__ }}",
    "{{ t['__class__'] }}", "{{ items3.append(1) }}", "{{ (t.items() | list)[0].__class__ }}",
])
def test_the_written_code_is_as_sandboxed_as_jinja(source):
    # the inlined code goes through the sandbox's own getattr/getitem/call: internals are
    # refused (or undefined), never reached
    from engine.errors import OrderError
    before = [dict(i) for i in CTX["items3"]]
    with pytest.raises(OrderError) as caught:
        render_text(E("r", None, E("a", source)), CTX, R, 0)
    assert caught.value.field == "r/a"
    assert "class" not in str(caught.value) or "not allowed" in str(caught.value) or "undefined" in str(caught.value)
    assert CTX["items3"] == before


def test_numbers_skip_cleaning_only_when_no_replacement_can_match_them():
    ctx = {"n": {"a": Decimal("1043.455"), "q": Decimal("2.50"), "u": Decimal("8.22312")}}
    spec = E("r", None, E("m", "{{ n.a | money }}"), E("q", "{{ n.q | quantity }}"), E("u", "{{ n.u | unit_price }}"),
             E("k", attrs={"v": "{{ n.a | money }}"}))
    assert check(spec, ctx, 0, R) == [
        '<r>\n  <m>1043.46</m>\n  <q>2.5</q>\n  <u>8.2231</u>\n  <k v="1043.46"/>\n</r>']
    digits = {"1": "&<one>", ".": " , "}  # ASCII keys: a number must be cleaned and escaped
    assert check(spec, ctx, 0, digits) == [
        '<r>\n  <m>&amp;&lt;one&gt;043 , 46</m>\n  <q>2 , 5</q>\n  <u>8 , 223&amp;&lt;one&gt;</u>\n'
        '  <k v="&amp;&lt;one&gt;043 , 46"/>\n</r>']


# --------------------------------------------------------------------------- tricky specs vs the reference


def _cases():
    leaf = lambda name, key, **kw: E(name, "{{ t.%s }}" % key, **kw)  # noqa: E731
    yield "text_nasty", E("a", "{{ t.nasty }}"), 1
    yield "one_special_each", E("a", None, *[leaf(k, k) for k in ("gt", "lt", "amp", "cr_only", "quot", "tab", "lf")],
                                *[E("at", attrs={"k": "{{ t.%s }}" % k}) for k in ("gt", "lt", "amp", "cr_only", "quot",
                                                                                  "tab", "lf")]), 1
    yield "text_emoji_accents", E("a", None, leaf("e", "emoji"), leaf("c", "accents"), leaf("q", "quotes")), 1
    yield "constant_nasty", E("a", NASTY), 1
    yield "constant_children", E("a", None, E("c", NASTY), E("d", "  "), E("e", " ", optional=True)), 1
    yield "jinja_template", E("a", "x {{ t.x ~ '&' }} {% if flag %}<on>{% endif %}\r\n"), 1
    yield "attributes_special", E("a", "{{ t.x }}", attrs={
        "k": "{{ t.nasty }}", "c": 'a"b\tc\nd\re<f>&g\'h', "e": "", "s": "{{ t.spaces }}", "q": "{{ t.quotes }}"}), 1
    yield "attributes_no_text", E("a", attrs={"k": "{{ t.nasty }}", "z": "{{ t.blank }}"}), 1
    yield "attributes_optional_empty", E("a", "{{ t.blank }}", attrs={"k": "v"}, optional=True), 0
    yield "empty_texts", E("r", None, leaf("p", "nasty"), leaf("o", "blank", optional=True), leaf("e", "blank"),
                           leaf("w", "spaces", optional=True), leaf("ws", "spaces"), leaf("c", "controls"),
                           E("n"), E("na", attrs={"k": "&"}), leaf("z", "zero", optional=True)), 1
    yield "text_and_children", E("r", "{{ t.x }}", E("c", "1"), E("d", "2")), 1
    yield "text_and_children_nasty", E("r", "{{ t.nasty }}", leaf("c", "nasty"), E("d", None, leaf("e", "x"))), 1
    yield "text_and_first_child_a_loop", E("r", "{{ t.x }}", E("c", "{{ it.name }}", for_each="items3", as_="it",
                                                              optional=True), E("d", "2")), 1
    yield "text_and_first_child_skipped", E("r", "T", leaf("o", "blank", optional=True), E("c", "1")), 1
    yield "text_and_first_child_has_text_and_children", E("r", "T", E("c", "U", E("d", "1"), E("e", "2")),
                                                          E("f", "3")), 1
    yield "text_and_children_all_skipped", E("r", "{{ t.x }}", leaf("o", "blank", optional=True)), 1
    yield "blank_text_and_children", E("r", "{{ t.spaces }}", E("c", "1")), 1
    yield "no_text_children_all_skipped", E("r", None, E("o", "", optional=True),
                                            leaf("o2", "spaces", optional=True), E("l", "x", for_each="items0")), 1
    yield "empty_text_children_all_skipped", E("r", "", E("o", "", optional=True)), 1
    yield "optional_parent_children_skipped", E("r", None, E("o", "", optional=True), optional=True), 1
    yield "optional_parent_with_attrs", E("r", "{{ t.blank }}", E("o", "", optional=True), optional=True,
                                          attrs={"k": "{{ t.x }}"}), 1
    yield "for_each_0", E("a", "{{ it.name }}", for_each="items0", as_="it"), 0
    yield "for_each_1", E("a", "{{ it.name }}", for_each="items1", as_="it", attrs={"n": "{{ it.n }}"}), 1
    yield "for_each_3", E("a", "{{ it.name }}", for_each="items3", as_="it", attrs={"n": "{{ it.name }}"}), 3
    yield "for_each_3_optional", E("a", "{{ it.name }}", for_each="items3", as_="it", optional=True), 2
    yield "for_each_null", E("a", "x", for_each="nothing"), 0
    yield "for_each_nested", E("r", None, E("l", None, leaf("x", "x"), E("d", "{{ it.name }}"),
                                            E("o", "{{ it.name }}", optional=True), for_each="items3", as_="it"),
                               E("after", "z")), 1
    yield "for_each_in_for_each", E("r", None, E("row", None, E("cell", "{{ c }}", for_each="row", as_="c"),
                                                 for_each="matrix", as_="row")), 1
    yield "for_each_shadowing", E("r", None, E("o", "{{ it.n }}", E("i", "{{ it.name }}", for_each="items1", as_="it"),
                                               E("after", "{{ it.n }}"), for_each="items3", as_="it")), 1
    yield "for_each_when_per_parent", E("r", None, E("l", "{{ it.n }}", for_each="items3", as_="it",
                                                     when="flag")), 1
    yield "when_true_false", E("r", None, E("y", "yes", when="flag"), E("n", "no", when="not flag"),
                               E("z", "{{ t.x }}", when="items3 | length > 2"), E("f", "f", when="noflag")), 1
    yield "when_false_top", E("a", "x", when="not flag"), 0
    yield "when_false_all_children", E("r", None, E("n", "no", when="noflag"), E("m", when="nothing")), 1
    yield "when_in_loop", E("r", None, E("l", None, E("d", "{{ it.name }}"), for_each="items3", as_="it"),
                            E("s", None, E("n", "{{ it.name }}", when="it.show"), E("m", "{{ it.n }}"),
                              for_each="items3", as_="it"),
                            E("e", "{{ it.n }}", for_each="items3", as_="it", when="items3")), 1
    yield "with_bindings", E("r", None,
                             E("addr", None, E("s", "{{ a.street }}"), attrs={"type": "{{ a.kind }}"},
                               with_={"a": "billing"}),
                             E("addr", None, E("s", "{{ a.street }}"), attrs={"type": "{{ a.kind }}"},
                               with_={"a": "delivery"}, when="a.street"),
                             E("addr2", None, E("s", "{{ a.street }}", optional=True), with_={"a": "delivery"})), 1
    yield "with_on_plain_text", E("r", None, E("v", "{{ b }}", with_={"b": "t.nasty"}), E("w", "{{ t.x }}")), 1
    yield "with_for_each", E("l", "{{ it.name }} {{ k }}", with_={"xs": "items3", "k": "t.x"}, for_each="xs",
                             as_="it"), 3
    yield "with_chained", E("a", "{{ y }}", with_={"x": "t.x", "y": "x ~ '|' ~ x"}), 1
    yield "deep_nesting", _deep(9), 1
    yield "deep_nesting_text_everywhere", _deep(7, text="{{ t.x }}"), 1


def _deep(n, text=None):
    spec = E("leaf", "{{ t.nasty }}", attrs={"d": str(n)})
    for i in range(n):
        spec = E(f"n{i}", text, E("before", "{{ t.accents }}", optional=True), spec,
                 E("after", None, attrs={"i": "{{ t.cr }}"}), E("skip", "", optional=True),
                 attrs={"lvl": f"{i}&\"{i}\""})
    return spec


CASES = list(_cases())


@pytest.mark.parametrize("name,spec,count", CASES, ids=[c[0] for c in CASES])
def test_writer_matches_lxml(name, spec, count):
    for level in LEVELS:
        got = check(spec, CTX, level)
        assert len(got) == count
    got = check(spec, CTX, 2, CUSTOM)
    assert len(got) == count


def test_levels_are_cached_apart_and_differ_only_in_indentation():
    spec = E("r", None, E("a", "1"), E("b", None, E("c", "{{ t.x }}")))
    b1, b2 = writer(spec, R, 1), writer(spec, R, 2)
    assert b1 is writer(spec, R, 1) and b1 is not b2
    texts = {level: check(spec, CTX, level)[0] for level in LEVELS}
    assert len(set(texts.values())) == len(LEVELS)
    for level, text in texts.items():
        assert text.endswith("\n" + "  " * level + "</r>")
        assert text == texts[0].replace("\n", "\n" + "  " * level)


def test_replacement_tables_are_cached_apart():
    spec = E("a", "{{ t.x }} ’s Xü", attrs={"k": "& Q ’"})
    default = check(spec, CTX, 1, R)
    custom = check(spec, CTX, 1, CUSTOM)
    assert default == ['<a k="&amp; Q \'">X &amp; &lt;x&gt; \'s Xü</a>']
    assert custom == ['<a k="en     \'">&lt;X&gt;  en  &lt;x&gt; \'s &lt;X&gt;ue</a>']


# --------------------------------------------------------------------------- random differential

ALPHABET = (list("abcXYZ019 .-/") + ["&", "<", ">", '"', "'", "\r", "\n", "\t", "  ", "é", "Ü", "ß", "😀", "☕",
                                       "„", "”", "’", "‘", "\x00", "\x0b", "\x1f", "\x7f", "\x85", "\xa0", "\u2028",
                                       "\u2003", "\ufffe", "\ud800", "]]>", "&amp;", "&#13;", "\u200b", "%"])
NAMES = ["a", "b", "Row", "x-y", "n.1", "Über", "_z"]
ATTR_NAMES = ["k", "id", "type", "x-y"]
VALUE_KEYS = [f"k{i}" for i in range(8)]
JINJA = ["{{ v.k1 ~ '&' ~ v.k2 }}", "[{{ v.k3 }}]{% if flag %}<{{ v.k4 }}>{% endif %}", "{{ v.k5 | trim }}"]


def _rand_text(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.1:
        return ""
    if roll < 0.15:
        return rng.choice([" ", " \t\r\n ", "\u2003", "\x00"])
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 8)))


def _rand_template(rng: random.Random, items: list[str], has_b: bool) -> str:
    """A constant, a path into the values or the loop items in scope, a bound name, or Jinja."""
    roll = rng.random()
    if roll < 0.3:
        return _rand_text(rng)  # a constant (the alphabet has no "{")
    if roll < 0.55 and items:
        return "{{ %s.s }}" % rng.choice(items)
    if roll < 0.65 and has_b:
        return "{{ b }}"
    if roll < 0.75:
        return rng.choice(JINJA)
    return "{{ v.%s }}" % rng.choice(VALUE_KEYS)


def _rand_spec(rng: random.Random, depth: int, items: list[str], has_b: bool) -> Element:
    for_each = when = None
    with_ = {}
    as_ = "item"
    if rng.random() < 0.15:
        with_ = {"b": rng.choice(["v.k6", "v.k7", "flag", "lists.l1[0].s"])}
        has_b = True
    if rng.random() < 0.2:
        for_each = rng.choice(["lists.l0", "lists.l1", "lists.l3", "lists.none"])
        as_ = rng.choice(["it", "jt"])
    if rng.random() < 0.2:
        when = rng.choice(["flag", "not flag", "v.k0"] + (["b"] if has_b else []) + [i + ".show" for i in items])
    if for_each:
        items = items + [as_]
    text = None if rng.random() < 0.3 else _rand_template(rng, items, has_b)
    attrs = {}
    for name in rng.sample(ATTR_NAMES, rng.choice([0, 0, 0, 1, 2])):
        attrs[name] = _rand_template(rng, items, has_b)
    children = []
    if depth < 3 and rng.random() < 0.6:
        children = [_rand_spec(rng, depth + 1, items, has_b) for _ in range(rng.randint(0, 4))]
    return E(rng.choice(NAMES), text, *children, attrs=attrs, optional=rng.random() < 0.4, for_each=for_each,
             as_=as_, when=when, with_=with_)


def _rand_ctx(rng: random.Random) -> dict:
    def item():
        return {"s": _rand_text(rng), "show": rng.random() < 0.6}
    return {
        "v": {k: _rand_text(rng) for k in VALUE_KEYS},
        "flag": rng.random() < 0.5,
        "lists": {"l0": [], "l1": [item()], "l3": [item(), item(), item()], "none": None},
    }


def test_random_specs_match_lxml():
    rng = random.Random(20261127)
    produced = with_children = 0
    for _ in range(600):
        spec = _rand_spec(rng, 0, [], False)
        ctx = _rand_ctx(rng)
        level = rng.randint(0, 4)
        replacements = R if rng.random() < 0.7 else CUSTOM
        want = reference(spec, ctx, replacements, level)
        got = render_text(spec, ctx, replacements, level)
        assert got == want, (spec, ctx, level)
        produced += len(got)
        with_children += sum("\n" in t for t in got)
    # the generator does reach the interesting shapes
    assert produced > 200 and with_children > 50


# --------------------------------------------------------------------------- the real mapping and the golden file


def test_golden_orders_are_in_lxml_canonical_indented_form():
    data = (GOLDEN / "ccvshop_asperion.xml").read_bytes()
    root = etree.fromstring(data)
    chunks = re.findall(rb"<Order>.*?</Order>", data, re.S)
    assert chunks and len(chunks) == len(root.findall("Orders/Order"))
    for chunk in chunks:
        assert b"\n    " + chunk in data
        el = etree.fromstring(chunk)
        etree.indent(el, space="  ", level=2)
        assert etree.tostring(el, encoding="UTF-8") == chunk
    # the document as a whole, header and closing tags included
    etree.indent(root, space="  ")
    assert DECLARATION + etree.tostring(root, encoding="UTF-8") + b"\n" == data


def test_real_mapping_records_match_lxml_and_the_golden_file(monkeypatch):
    monkeypatch.setenv("MAPPER_NOW", "2026-11-26T21:00:00Z")
    mapping = load_mapping(MAPPING)
    level = record_level(mapping.document)
    assert level == 2
    golden = (GOLDEN / "ccvshop_asperion.xml").read_bytes()
    converter = Converter(mapping)
    converted = 0
    for record in FixtureSource(FIXTURES).records():
        outcome = converter.convert(record)
        if not isinstance(outcome, Converted):
            continue
        converted += 1
        want = reference(mapping.record_element, outcome.context, mapping.replacements, level)
        assert [outcome.xml.decode("utf-8")] == want, outcome.number
        assert b"\n    " + outcome.xml + b"\n" in golden, outcome.number
    assert converted == len(re.findall(rb"<Order>", golden))


def test_document_parts_keep_empty_elements_as_lxml_writes_them():
    import io
    from types import SimpleNamespace

    from engine.output.document import DocumentBuilder
    from engine.output.xsd import Validator

    document = E("Asperion", None, E("Header", None, E("Source", "CCV"), E("Note", "{{ batch.note }}")),
                 E("Orders"))
    document.children[1].records = True
    builder = DocumentBuilder(SimpleNamespace(document=document, replacements=R, tables={}), Validator(None))
    out = io.BytesIO()
    builder.write(out, {"note": ""})
    header = E("Header", None, E("Source", "CCV"), E("Note", ""))
    want = reference(header, {}, R, 1)[0].encode()
    assert b"<Note></Note>" in want
    assert b"\n  " + want + b"\n" in out.getvalue()
