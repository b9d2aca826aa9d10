"""Jinja2 expressions and templates, sandboxed, strict, compiled at load time.

Two kinds of values appear in a mapping:

* an **expression** computes a value: ``record.total_price``, ``record.status != 8``;
* a **template** renders text: ``Bestelling {{ record.ordernumber_full }}``.

Plain dotted paths (``record.customer.email``) skip Jinja entirely: a call of a
compiled Jinja template costs ~15 µs for its context alone, a path walk well under 1 µs.
Both give the same answers and the same errors.

Other expressions and templates are compiled twice at load: by Jinja, and from Jinja's own
parse tree into one plain Python function each (:class:`PythonGenerator`) for the node kinds a
mapping uses (names, attributes, items, literals, comparisons, and/or/not, if-else,
arithmetic, ``~``, filters, tests, safe method calls, ``{% if %}``). Dict keys are read
inline; every other attribute, item and call goes through the same sandbox functions Jinja
uses (``ENV.getattr``, ``ENV.getitem``, ``ENV.is_safe_callable``). Whenever the generated
code meets anything unusual (a missing name or field, an unsafe attribute, any exception)
it gives up and the Jinja template runs instead, so every error, message and sandbox
refusal is Jinja's own; the generated code only ever returns what Jinja would have returned.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Callable

from jinja2 import TemplateRuntimeError, TemplateSyntaxError, Undefined, UndefinedError, nodes
from jinja2.sandbox import SecurityError

from engine.errors import MappingError, in_words
from engine.expr.filters import FILTERS, PLAIN_NUMBER_FILTERS, NoMatch
from engine.expr.sandbox import ENV, PLAIN_FIELDS, EvaluationError, _finalize, _undefined
from engine.expr.generator import Unsupported, PythonGenerator, fast_expression, fast_template, parse_expression, parse_template

_PATH = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)\s*$")
_TEMPLATE_PATH = re.compile(r"^\{\{\s*([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)\s*\}\}$")
# ``self`` too: Jinja's code generator makes it the TemplateReference whatever the context holds
_KEYWORDS = {"true", "false", "none", "True", "False", "None", "and", "or", "not", "in", "is", "self"}


def _walker(path: str) -> Callable[[Mapping[str, Any]], Any]:
    parts = path.split(".")
    head, rest = parts[0], tuple(parts[1:])
    full = _full_walker(parts)
    plain = PLAIN_FIELDS

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


class InlineCode:
    """Generated code of many templates in one namespace, for a function that inlines them.

    :meth:`text` gives a Python expression computing a template's text from the context
    variable named ``ctx`` (the same code its own fast path runs), or None where only the
    template's own function can (Jinja alone, a constant). Like the fast path, the code may
    raise on anything unusual; the caller then calls the template's function, which gives
    Jinja's answer or error. The result is always a str: ``_text`` writes every other value.
    """

    def __init__(self):
        self._gen = PythonGenerator()
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
        except Exception:  # noqa: BLE001 - Unsupported, SyntaxError, or anything the generator did not foresee
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
        except Exception:  # noqa: BLE001 - Unsupported, SyntaxError, or anything the generator did not foresee
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
            code = self.text(compiled, ctx) if isinstance(compiled, Template) else self.value(compiled, ctx)
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
    gen = PythonGenerator()
    try:
        if isinstance(compiled, Template):
            code = gen.output(parse_template(source))
        else:
            node = parse_expression(source)
            if node is None:
                return "Jinja", "text follows the expression"
            code = gen.expr(node)
        compile(code, "<explain>", "eval")
    except Unsupported as exc:
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
            self._fn = _fast_or_jinja(fast_expression, _jinja_expression, source)
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
            # the error Jinja raises for it (Undefined._fail_with_undefined_error), in words
            raise _undefined(UndefinedError(value._undefined_message), source)  # noqa: SLF001 - Jinja's own wording
        return value

    return call


class Template:
    """A compiled text template: ``template(context) -> str``."""

    __slots__ = ("source", "_fn", "constant")

    def __init__(self, source: str):
        self.source = source
        self.constant: str | None = None
        self._fn: Callable[..., str]  # fn(context); a constant's lambda holds its text as a default argument
        if "{{" not in source and "{%" not in source and "{#" not in source:
            self.constant = source
            self._fn = lambda context, _s=source: _s
            return
        match = _TEMPLATE_PATH.match(source)
        if match and not (set(match.group(1).split(".")) & _KEYWORDS):
            walk = _walker(match.group(1))
            self._fn = lambda context: str(_finalize(walk(context)))
            return
        self._fn = _fast_or_jinja(fast_template, _jinja_template, source)

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
