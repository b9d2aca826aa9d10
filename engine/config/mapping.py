"""Loading a mapping: YAML with positions -> schema check -> compiled, ready to run.

Every expression and template is compiled here, so a typo fails ``mapper validate``
with its line, not the nightly run.
"""

from __future__ import annotations

import os
import dataclasses
import re
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterator, Mapping, cast

from lxml import etree

from engine.config import schema_check
from engine.convert.credits import CreditSource, CreditSpec
from engine.errors import MappingError, MappingErrors
from engine.expr.expressions import Expression, Template, compile_expression, compile_template
from engine.expr.filters import DEFAULT_REPLACEMENTS
from engine.resources import mappings_dir, resolve_mapping, resolve_relative, schemas_dir
from engine.config.specs import (ApiSpec, CustomerDirectorySpec, ListSpec, RequestSpec, SandboxSpec, SinkSpec, SourceSpec,
                                 WebhookSpec)
from engine.io.http.spec import HttpSpec
from engine.output.jsonbody import Body
from engine.config.yamlpos import Located, dotted, load_yaml, merge


@dataclass
class Element:
    """One declared XML element, compiled."""

    name: str
    attributes: list[tuple[str, Template]]
    text: Template | None
    children: list["Element"]
    for_each: Expression | None = None
    item_name: str = "item"
    when: Expression | None = None
    bindings: list[tuple[str, Expression]] = field(default_factory=list)
    optional: bool = False
    records: bool = False
    path: str = ""  # where it is declared, for error messages


@dataclass
class Term:
    label: Template
    amount: Expression


@dataclass(frozen=True)
class RowLimits:
    """``invoice.lines.limits``: a goods row beyond these is quarantined, not booked."""

    max_quantity: Decimal | None = None
    max_amount: Decimal | None = None


@dataclass(frozen=True)
class LinesSpec:
    """``invoice.lines``: one invoice line per item of ``each`` (named ``name`` in templates)."""

    each: Expression
    name: str
    description: Template
    article_code: Template | None
    quantity: Expression
    amount: Expression
    rate: Expression
    limits: RowLimits | None


@dataclass(frozen=True)
class RoundingLine:
    """``invoice.rounding_line``: books a difference within the tolerance."""

    label: Template
    rate: Decimal
    vat_class: str


@dataclass(frozen=True)
class InvoiceSpec:
    """``invoice``, compiled: what an order's invoice is made of (engine.convert.invoice)."""

    description: Template
    date: Template
    payment_code: Template | None
    currency: Expression | None
    prices_include_vat: Expression
    lines: LinesSpec
    charges: list[Term]
    discounts: list[Term]
    allocation_basis: str          # incl | excl: what charges and discounts are split by
    vat_rounding: str              # per_line | per_rate
    total: Expression
    tolerance: Decimal
    rounding_line: RoundingLine | None
    reported_vat: Expression | None
    surcharge_rate: Expression | None


@dataclass
class VatRule:
    rate: Decimal
    vat_class: str
    valid_from: str | None
    valid_until: str | None
    when: Expression | None
    flag: Template | None


@dataclass
class Check:
    name: str
    when: Expression | None
    expect: Expression
    message: Template


@dataclass
class Flag:
    when: Expression
    message: Template


@dataclass
class Column:
    title: str
    text: Template | None
    amount: Expression | None


@dataclass
class LoadedMapping:
    """A mapping loaded, checked and compiled: every expression and template compiled, the
    sections typed (``engine.config.specs``). Field names follow the YAML keys."""

    file: Path
    name: str
    #: the YAML with positions, for error messages and `mapper explain` (not in repr: it
    #: holds the values of ${VAR}s, keys included)
    located: Located = field(repr=False)
    record_id: Expression
    record_number: Expression
    record_created: Expression
    look_back_days: int
    where: list[Expression]
    let: list[tuple[str, Expression]]
    customer_key: Expression
    customer_number: Expression
    customer_fallback: Expression | None
    customer_without_key: Template | None  # None = quarantine
    customer_name: Template
    invoice: InvoiceSpec
    vat_rules: list[VatRule]
    checks: list[Check]
    flags: list[Flag]
    tables: dict[str, Any]
    document: Element | None
    record_element: Element | None  # None: no XML (an API destination renders its own bodies)
    xsd_path: Path | None
    per_file: int
    replacements: dict[str, str]
    columns: list[Column]
    sink: SinkSpec
    webhooks: WebhookSpec
    customer_directory: CustomerDirectorySpec
    #: ``plan``: the mapping's default plan (MAPPER_PLAN and a hosted shop's plan win)
    plan: str | None
    #: ``destination.api`` compiled (None: the outbox is the destination)
    destination: ApiSpec | None
    #: ``sandbox``: what ``--sandbox`` starts
    sandbox: SandboxSpec | None
    #: ``privacy.redact``: values (a customer's VAT number, name, …) never shown in a flag or a
    #: quarantine reason, which reach stdout, the log, the run report and the state
    redact: list[Expression] = field(default_factory=list)
    #: ``limits.seconds_per_record``: the time budget of one record's templates
    seconds_per_record: float = 2.0
    #: ``credit``: where credits come from and how a credit note reads (None: no credit notes)
    credit: CreditSpec | None = None
    #: every expression and template compiled at load: (field, line, compiled), for `mapper explain`
    compiled_values: list[tuple[str, int | None, Any]] = field(default_factory=list)
    #: ``source`` and ``destination.api.http`` as read with the environment the mapping was
    #: loaded with (None while a ${VAR} they need is unset: asked for, that is the error)
    _source: SourceSpec | None = field(default=None, repr=False)
    _destination_http: HttpSpec | None = field(default=None, repr=False)

    @property
    def has_api(self) -> bool:
        """Whether ``destination.api`` replaces the outbox."""
        return self.destination is not None

    def source_spec(self) -> SourceSpec:
        """The source section, raising now for any ${VAR} it needs that is not set."""
        self._require_env("source")
        if self._source is None:    # read at load once its variables are set: not reached
            raise MappingError("the source section was not read", file=str(self.file))
        return self._source

    def source_http(self) -> HttpSpec:
        """The shop's API (``source.http``); a configuration error if the mapping has none."""
        http = self.source_spec().http
        if http is None:
            raise MappingError("this mapping declares no source.http", file=str(self.file),
                               hint="declare source.http (base_url, auth) to reach the shop")
        return http

    def destination_http(self) -> HttpSpec:
        """The API destination's ``http`` block, raising now for any ${VAR} it needs that is not set."""
        self._require_env("destination")
        if self._destination_http is None:
            raise MappingError("this mapping declares no destination.api.http", file=str(self.file))
        return self._destination_http

    def _require_env(self, section: str) -> None:
        missing = [e for p, e in self.located.missing_env.items() if p[:1] == (section,)]
        if len(missing) == 1:
            raise missing[0]
        if missing:
            raise MappingErrors(missing)


class _Compiler:
    def __init__(self, located: Located):
        self.located = located
        self.errors: list[MappingError] = []
        self.compiled: list[tuple[str, int | None, Expression | Template]] = []   # (field, line, value)

    def _pos(self, path):
        return self.located.where(path)

    def expr(self, path, value=None) -> Expression | None:
        value = self._get(path) if value is None else value
        if value is None:
            return None
        line, col = self._pos(path)
        try:
            compiled = compile_expression(value, file=self.located.file_of(path), line=line, column=col,
                                          field=dotted(path))
        except MappingError as exc:
            self.errors.append(exc)
            return None
        self.compiled.append((dotted(path), line, compiled))
        return compiled

    def tmpl(self, path, value=None) -> Template | None:
        value = self._get(path) if value is None else value
        if value is None:
            return None
        line, col = self._pos(path)
        try:
            compiled = compile_template(value, file=self.located.file_of(path), line=line, column=col,
                                        field=dotted(path))
        except MappingError as exc:
            self.errors.append(exc)
            return None
        self.compiled.append((dotted(path), line, compiled))
        return compiled

    # A required value that fails to compile is recorded in ``errors`` and load_mapping raises
    # before the mapping is used: the None these return then is never seen by anything.
    def need_expr(self, path, value=None) -> Expression:
        return cast(Expression, self.expr(path, value))

    def need_tmpl(self, path, value=None) -> Template:
        return cast(Template, self.tmpl(path, value))

    def _get(self, path):
        node: Any = self.located.data
        for p in path:
            if isinstance(node, dict):
                node = node.get(p)
            elif isinstance(node, list) and isinstance(p, int) and p < len(node):
                node = node[p]
            else:
                return None
            if node is None:
                return None
        return node

    def element(self, path, *, in_document: bool) -> Element:
        spec = self._get(path)
        children = [self.element(path + ("children", i), in_document=in_document)
                    for i in range(len(spec.get("children") or []))]
        el = Element(
            name=spec["element"],
            attributes=[(k, self.need_tmpl(path + ("attributes", k))) for k in (spec.get("attributes") or {})],
            text=self.tmpl(path + ("text",)),
            children=children,
            for_each=self.expr(path + ("for_each",)),
            item_name=spec.get("as", "item"),
            when=self.expr(path + ("when",)),
            bindings=[(k, self.need_expr(path + ("with", k))) for k in (spec.get("with") or {})],
            optional=bool(spec.get("optional")),
            records=bool(spec.get("records")),
            path=dotted(path),
        )
        if el.records and not in_document:
            self.errors.append(self.located.error(path + ("records",), "records: true belongs in output.document, not in output.record"))
        if el.text is not None and el.children:
            self.errors.append(self.located.error(path, f"element {el.name} has both text and children", "use one of them"))
        try:
            etree.Element(el.name)
        except ValueError:
            self.errors.append(self.located.error(path + ("element",), f"'{el.name}' is not a valid XML element name"))
        return el



def _check_around_records(el: Element, path, located: Located, errors: list) -> None:
    """The records element and those around it are written once per file: no conditions."""
    if not (el.records or _count_records(el)):
        return
    for key, value in (("when", el.when), ("for_each", el.for_each), ("with", el.bindings)):
        if value:
            errors.append(located.error(path + (key,), f"{key} cannot be used on <{el.name}>: it holds the records "
                                        f"and is written once per file", "move it to an element inside output.record"))
    for i, child in enumerate(el.children):
        _check_around_records(child, path + ("children", i), located, errors)


def _count_records(el: Element) -> int:
    return int(el.records) + sum(_count_records(c) for c in el.children)


def _load_located(file: Path, shown: str, text: str, environ, chain: tuple[Path, ...]) -> Located:
    """The YAML of a mapping with its ``extends:`` chain laid under it."""
    located = load_yaml(text, shown, environ)
    if not isinstance(located.data, dict):
        raise MappingError("a mapping must be a set of keys (version, name, record, …)", file=shown, line=1, column=1)
    parent = located.data.pop("extends", None)
    if parent is None:
        return located
    if not isinstance(parent, str):
        raise located.error(("extends",), "extends: expected the path of another mapping file")
    base_file = resolve_relative(file, parent, mappings_dir())
    if base_file in chain or base_file == file.resolve():
        raise located.error(("extends",), f"extends: {parent} extends this file again (a loop)")
    try:
        base_text = base_file.read_text(encoding="utf-8")
    except OSError:
        raise located.error(("extends",), f"extends: cannot read {parent}", f"looked for {base_file}") from None
    base_shown = str(base_file) if Path(parent).is_absolute() else str(Path(shown).parent / parent)
    base = _load_located(base_file, base_shown, base_text, environ, chain + (file.resolve(),))
    return merge(base, located)


def _run_time_templates(d: dict) -> Iterator[tuple]:
    """The templates the source and the sink render when a run needs them (request paths and
    parameters, file and report names): their syntax is checked at load like every other."""
    source = d.get("source") or {}
    records = source.get("records") or {}
    yield from _request_templates(("source", "records"), records)
    for name, spec in (records.get("expand") or {}).items():
        yield from _request_templates(("source", "records", "expand", name), spec or {})
    if (source.get("lookup") or {}).get("path") is not None:
        yield ("source", "lookup", "path")
    sink = d.get("sink") or {}
    if (sink.get("directory") or {}).get("name") is not None:
        yield ("sink", "directory", "name")
    if sink.get("report") is not None:
        yield ("sink", "report")


def _request_templates(base: tuple, spec: dict) -> Iterator[tuple]:
    if spec.get("path") is not None:
        yield base + ("path",)
    for key in (spec.get("params") or {}):
        yield base + ("params", key)


#: the settings a mapping is meant to read without declaring them
SETTING_PREFIXES = ("MAPPER_", "CCVSHOP_", "ASPERION_")
#: a variable whose name says it holds a secret (or that the mapping declares one)
_SECRET_NAME = re.compile(r"(SECRET|PASSWORD|PASSWD|TOKEN|PRIVATE|_KEY$|APIKEY|CREDENTIAL)")
#: where a secret may go: the auth blocks, whose values are sent to their own host only
_AUTH_PATHS = (("source", "http", "auth"), ("destination", "api", "http", "auth"))


def _variable_policy(located: Located) -> list[MappingError]:
    """``${VAR}`` reads only what the mapping may read, and a secret only into an auth block.

    A mapping may read the MAPPER_/CCVSHOP_/ASPERION_ settings and the variables it declares
    under ``variables:``; nothing else of the environment (HOME, AWS_…, another program's
    password). A secret (by its name, or declared under ``variables.secret``) outside
    ``source.http.auth`` or ``destination.api.http.auth`` would be printed or written
    (a description, a header, a file name): refused at load.
    """
    declared = located.data.get("variables") or {}
    plain = set(declared.get("plain") or []) if isinstance(declared, dict) else set()
    secret = set(declared.get("secret") or []) if isinstance(declared, dict) else set()
    errors = []
    for path, names in located.env_names.items():
        for name in names:
            if not (name.startswith(SETTING_PREFIXES) or name in plain or name in secret):
                errors.append(located.error(path, f"${{{name}}} is not a variable this mapping may read",
                                            f"declare it under variables: {{plain: [{name}]}}, or use a "
                                            f"MAPPER_/CCVSHOP_/ASPERION_ setting"))
            elif (name in secret or (_SECRET_NAME.search(name) and name not in plain)) \
                    and not any(path[:len(a)] == a for a in _AUTH_PATHS):
                errors.append(located.error(path, f"${{{name}}} holds a secret and may only be used in "
                                                  f"source.http.auth or destination.api.http.auth",
                                            "anything else can end up in a file, a log line or a report"))
    return errors


def load_mapping(path: str | Path, environ: Mapping[str, str] | None = None) -> LoadedMapping:
    """Load, validate and compile a mapping; raises MappingError(s) with FILE:LINE:COL."""
    file = resolve_mapping(path)
    shown = str(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MappingError(f"mapping file not found: {shown}",
                           hint="give the path to a .yaml mapping, e.g. mappings/ccvshop_asperion.yaml") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise MappingError(f"cannot read the mapping file {shown}: {exc}") from None
    located = _load_located(file, shown, text, os.environ if environ is None else environ, ())
    errors = schema_check.check(located)
    if errors:
        raise errors[0] if len(errors) == 1 else MappingErrors(errors)
    policy = _variable_policy(located)
    if policy:
        raise policy[0] if len(policy) == 1 else MappingErrors(policy)
    env_errors = [e for p, e in located.missing_env.items() if p[:1] not in (("source",), ("destination",))]
    if env_errors:
        raise env_errors[0] if len(env_errors) == 1 else MappingErrors(env_errors)

    c = _Compiler(located)
    d = located.data
    inv = d["invoice"]
    lines = inv["lines"]
    limits = lines.get("limits")
    rl = inv.get("rounding_line")
    invoice = InvoiceSpec(
        description=c.need_tmpl(("invoice", "description")),
        date=c.need_tmpl(("invoice", "date")),
        payment_code=c.tmpl(("invoice", "payment_code")),
        currency=c.expr(("invoice", "currency")),
        prices_include_vat=c.need_expr(("invoice", "prices_include_vat")),
        lines=LinesSpec(
            each=c.need_expr(("invoice", "lines", "each")),
            name=lines.get("as", "row"),
            description=c.need_tmpl(("invoice", "lines", "description")),
            article_code=c.tmpl(("invoice", "lines", "article_code")),
            quantity=c.need_expr(("invoice", "lines", "quantity")),
            amount=c.need_expr(("invoice", "lines", "amount")),
            rate=c.need_expr(("invoice", "lines", "rate")),
            limits=RowLimits(**{k: Decimal(str(v)) for k, v in limits.items()}) if limits else None),
        charges=[Term(c.need_tmpl(("invoice", "charges", i, "label")), c.need_expr(("invoice", "charges", i, "amount")))
                 for i in range(len(inv.get("charges") or []))],
        discounts=[Term(c.need_tmpl(("invoice", "discounts", i, "label")), c.need_expr(("invoice", "discounts", i, "amount")))
                   for i in range(len(inv.get("discounts") or []))],
        allocation_basis=inv.get("allocation_basis", "incl"),
        vat_rounding=inv.get("vat_rounding", "per_line"),
        total=c.need_expr(("invoice", "total")),
        tolerance=Decimal(str(inv.get("tolerance", "0"))),
        rounding_line=RoundingLine(c.need_tmpl(("invoice", "rounding_line", "label")), Decimal(str(rl.get("rate", 0))),
                                   rl["vat_class"]) if rl else None,
        reported_vat=c.expr(("invoice", "reported_vat")),
        surcharge_rate=c.expr(("invoice", "surcharge_rate")),
    )
    if invoice.tolerance > 0 and invoice.rounding_line is None:
        c.errors.append(located.error(("invoice", "tolerance"), "a tolerance needs invoice.rounding_line",
                                      "declare rounding_line: {label: Afrondingsverschil, vat_class: Nul}"))

    vat_rules = []
    for i, rule in enumerate((d.get("vat") or {}).get("classes") or []):
        vat_rules.append(VatRule(Decimal(str(rule["rate"])), rule["class"], rule.get("from"), rule.get("until"),
                                 c.expr(("vat", "classes", i, "when")), c.tmpl(("vat", "classes", i, "flag"))))
    checks = [Check(ch["name"], c.expr(("checks", i, "when")), c.need_expr(("checks", i, "expect")),
                    c.need_tmpl(("checks", i, "message"))) for i, ch in enumerate(d.get("checks") or [])]
    flags = [Flag(c.need_expr(("flags", i, "when")), c.need_tmpl(("flags", i, "message")))
             for i, _ in enumerate(d.get("flags") or [])]
    cust = d["customer"]
    without = cust.get("without_key", "quarantine")
    kind = (cust.get("directory") or {}).get("kind", "in_file")
    has_api = bool((d.get("destination") or {}).get("api"))
    if kind == "api" and not has_api:
        c.errors.append(located.error(("customer", "directory", "kind"), "customer.directory.kind api needs destination.api",
                                      "declare destination.api, or use kind register or in_file"))
    if has_api and kind != "api":
        c.errors.append(located.error(("customer", "directory", "kind") if cust.get("directory") else ("customer",),
                                      f"with destination.api the debtors must come from the API (customer.directory.kind: api), not {kind}",
                                      "the invoice is booked on a debtor number that must exist in the destination"))
    output = d.get("output") or {}
    document = c.element(("output", "document"), in_document=True) if output else None
    record_element = c.element(("output", "record"), in_document=False) if output else None
    if document is not None:
        _check_around_records(document, ("output", "document"), located, c.errors)
    if document is not None and _count_records(document) != 1:
        c.errors.append(located.error(("output", "document"),
                                      "output.document needs exactly one element with records: true",
                                      "mark the element the records go into, e.g. {element: Orders, records: true}"))
    xsd_path = None
    if output.get("xsd"):
        xsd_path = resolve_relative(file, output["xsd"], schemas_dir())
        if not xsd_path.exists():
            c.errors.append(located.error(("output", "xsd"), f"XSD file not found: {output['xsd']}",
                                          f"looked for {xsd_path}"))
    for at in _run_time_templates(d):   # compiled where they are used; checked here, at load
        c.tmpl(at)
    columns = [Column(col["title"], c.tmpl(("preview", "columns", i, "text")), c.expr(("preview", "columns", i, "amount")))
               for i, col in enumerate((d.get("preview") or {}).get("columns") or [])]
    let = [(k, c.need_expr(("let", k))) for k in (d.get("let") or {})]
    mapping = LoadedMapping(
        file=file, name=d["name"], located=located,
        record_id=c.need_expr(("record", "id")), record_number=c.need_expr(("record", "number")),
        record_created=c.need_expr(("record", "created")),
        look_back_days=(d.get("intake") or {}).get("look_back_days", 90),
        where=[c.need_expr(("where", i)) for i in range(len(d["where"]))],
        let=let,
        customer_key=c.need_expr(("customer", "key")), customer_number=c.need_expr(("customer", "number")),
        customer_fallback=c.expr(("customer", "fallback_number")),
        customer_without_key=None if without == "quarantine" else c.tmpl(("customer", "without_key", "number")),
        customer_name=c.need_tmpl(("customer", "name")),
        invoice=invoice, vat_rules=vat_rules, checks=checks, flags=flags,
        tables=d.get("tables") or {}, document=document, record_element=record_element,
        xsd_path=xsd_path, per_file=output.get("per_file", 500),
        replacements=output.get("replace") or DEFAULT_REPLACEMENTS,
        columns=columns, sink=SinkSpec.from_config(d.get("sink")),
        webhooks=WebhookSpec.from_config((d.get("intake") or {}).get("webhooks")),
        customer_directory=CustomerDirectorySpec.from_config(d["customer"].get("directory")),
        plan=d.get("plan"), destination=_api_spec(c, (d.get("destination") or {}).get("api")),
        sandbox=SandboxSpec.from_config(d.get("sandbox")),
        redact=[c.need_expr(("privacy", "redact", i)) for i in range(len((d.get("privacy") or {}).get("redact") or []))],
        seconds_per_record=float((d.get("limits") or {}).get("seconds_per_record", 2.0)),
        credit=_credit_spec(c, d.get("credit")),
        compiled_values=c.compiled,
    )
    mapping._source, mapping._destination_http = _run_time_specs(located, c.errors)
    if c.errors:
        raise c.errors[0] if len(c.errors) == 1 else MappingErrors(c.errors)
    return mapping


def _run_time_specs(located: Located, errors: list[MappingError]) -> tuple[SourceSpec | None, HttpSpec | None]:
    """``source`` and ``destination.api.http`` read as configuration, each once every ${VAR}
    it needs is set (hosted mode reads them again per shop: :func:`reread_sections`)."""
    from engine.io.http.auth import AuthConfigError
    from engine.io.http.spec import HttpConfigError
    d = located.data
    unset = {p[:1] for p in located.missing_env}
    source = api_http = None
    if ("source",) not in unset:
        try:
            source = SourceSpec.from_config(d.get("source"))
        except (HttpConfigError, AuthConfigError) as exc:
            errors.append(located.error(("source", "http"), f"source.http: {exc}"))
    block = ((d.get("destination") or {}).get("api") or {}).get("http")
    if block is not None and ("destination",) not in unset:
        try:
            api_http = HttpSpec.from_config(block)
        except (HttpConfigError, AuthConfigError) as exc:
            errors.append(located.error(("destination", "api", "http"), f"destination.api.http: {exc}"))
    return source, api_http


def _compiled_api(data: dict[str, Any]) -> dict[str, Any]:
    """``destination.api`` without its ``http`` block: what :func:`_api_spec` compiles."""
    api = (data.get("destination") or {}).get("api") or {}
    return {k: v for k, v in api.items() if k != "http"}


def _api_spec(c: _Compiler, api: dict[str, Any] | None) -> ApiSpec | None:
    """``destination.api`` compiled, each template and expression with its place in the file."""
    if not api:
        return None
    base = ("destination", "api")

    def request(path: tuple, spec: dict[str, Any]) -> RequestSpec:
        at = base + path
        body = Body(spec["body"], lambda p, v: c.need_expr(at + ("body",) + p, v),
                    lambda p, v: c.need_tmpl(at + ("body",) + p, v)) if "body" in spec else None
        return RequestSpec(c.need_tmpl(at + ("path",)), {k: c.need_tmpl(at + ("params", k)) for k in (spec.get("params") or {})},
                           body)

    debtor, invoice = api["debtor"], api["invoice"]
    listing = api.get("list") or {}
    original = invoice.get("original")
    return ApiSpec(
        items_key=listing.get("items", "_data"), next_key=listing.get("next"),
        references={name: c.need_tmpl(base + ("references", name, "path")) for name in (api.get("references") or {})},
        debtor_find=request(("debtor", "find"), debtor["find"]),
        debtor_match=c.need_expr(base + ("debtor", "find", "match")),
        debtor_number=c.need_expr(base + ("debtor", "number")),
        debtor_name=c.expr(base + ("debtor", "name")) if debtor.get("name") else None,
        debtor_create=request(("debtor", "create"), debtor["create"]),
        invoice_find=request(("invoice", "find"), invoice["find"]),
        invoice_match=c.need_expr(base + ("invoice", "find", "match")),
        invoice_create=request(("invoice", "create"), invoice["create"]),
        invoice_id=c.need_expr(base + ("invoice", "id")),
        original=None if not original else {k: c.need_expr(base + ("invoice", "original", k)) for k in ("number", "concept")},
        field_errors_key=(api.get("errors") or {}).get("fields", "errors"))


def _credit_spec(c: _Compiler, spec: dict | None) -> CreditSpec | None:
    if not spec:
        return None
    sources = []
    for i, src in enumerate(spec.get("from") or []):
        at = ("credit", "from", i)
        if ("list" in src) == ("when" in src):
            c.errors.append(c.located.error(at, f"credit.from '{src.get('name', i)}' needs either list: (credits "
                                                f"the source serves) or when: (a condition on a delivered order)"))
            continue
        if "list" in src and "order" not in src:
            c.errors.append(c.located.error(at, f"credit.from '{src.get('name', i)}': a list needs order: "
                                                f"(the expression giving an item's order id)"))
        sources.append(CreditSource(
            name=str(src.get("name", i)), request=ListSpec.from_config(src["list"]) if src.get("list") else None, when=c.expr(at + ("when",)),
            order=c.expr(at + ("order",)), key=c.need_tmpl(at + ("key",)), amount=c.expr(at + ("amount",)),
            created=c.expr(at + ("created",)), reference=c.tmpl(at + ("reference",))))
        if "list" in src:
            for path in _request_templates(at + ("list",), src["list"] or {}):
                c.tmpl(path)
    return CreditSpec(sources=sources, description=c.need_tmpl(("credit", "description")),
                      date=c.need_tmpl(("credit", "date")),
                      partial_line=(c.need_tmpl(("credit", "partial_line")) if "partial_line" in spec
                                    else c.need_tmpl(("credit",), "Creditering {{ rate }}% btw")))


def reread_sections(m: LoadedMapping, environ: Mapping[str, str]) -> LoadedMapping:
    """The compiled mapping with ``source`` and ``destination.api.http`` (the shop's URL and
    keys, the API's: read as configuration, never compiled) read again under ``environ``.

    Hosted mode compiles a mapping once and binds each shop's values this way: the file is
    parsed again (milliseconds), nothing is compiled again. The rest of ``destination.api``
    is compiled: a ``${VAR}`` in it that takes another value for this shop is refused, as it
    would silently keep the first value.
    """
    text = m.file.read_text(encoding="utf-8")
    located = _load_located(m.file, m.located.file, text, environ, ())
    if _compiled_api(located.data) != _compiled_api(m.located.data):
        raise MappingError("destination.api (outside its http block) reads a ${VAR} whose value differs for this "
                           "shop, but it is compiled once for all shops", file=m.located.file,
                           hint="put per-shop values in destination.api.http (base_url, headers, auth)")
    errors: list[MappingError] = []
    source, api_http = _run_time_specs(located, errors)
    if errors:
        raise errors[0] if len(errors) == 1 else MappingErrors(errors)
    return dataclasses.replace(m, located=located, _source=source, _destination_http=api_http)
