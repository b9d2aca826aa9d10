"""How a record travels: filter -> check -> invoice -> match -> render -> validate.

:class:`Converter` does this for one record and says what became of it. It never
raises for a bad record: the record is quarantined with a reason a bookkeeper can act
on (which order, which field, what was expected), and the batch goes on.
"""

from __future__ import annotations


from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from itertools import chain, islice
from typing import Any, Iterable, Iterator

from engine.expr import evaluate
from engine.clock import now as clock_now
from engine.convert import money
from engine.convert.credits import Credit, credit_amount, credit_invoice
from engine.convert.customers import DebtorMatcher, InFileMatcher
from engine.output.document import record_level
from engine.errors import OrderError, in_words
from engine.expr.expressions import EvaluationError
from engine.expr.sandbox import time_budget
from engine.convert.invoice import Invoice, build_invoice
from engine.config.mapping import LoadedMapping
from engine.output.render import writer
from engine.convert.stages import compile_stages
from engine.output.xsd import Validator
from engine.output.xsd_process import XsdChecker
from engine.io.sources import BrokenRecord


@dataclass
class Converted:
    shop_id: str
    number: str
    created: str
    invoice: Invoice
    xml: bytes | None  # the record's element as written in the file; None when the mapping has no XML output
    preview: list[Any]
    flags: list[str] = field(default_factory=list)
    context: dict[str, Any] | None = None  # what the templates saw: an API destination renders from it


@dataclass
class Quarantined:
    shop_id: str
    number: str
    reason: str
    field: str | None = None


@dataclass
class Excluded:
    shop_id: str
    number: str
    condition: str  # the where-expression that was false


@dataclass
class Unbooked:
    """A credit that is not booked: nothing left to credit (``settled``), or more than is
    left (``flagged``: reported for the bookkeeper)."""

    shop_id: str
    number: str
    reason: str
    status: str


Outcome = Converted | Quarantined | Excluded


class Converter:
    def __init__(self, mapping: LoadedMapping, matcher: DebtorMatcher | None = None,
                 validator: Validator | None = None):
        self.mapping = mapping
        self.matcher = matcher or InFileMatcher()
        self.validator = validator or Validator(mapping.xsd_path)
        self._write = None
        self._check_later = False  # convert_all has the XSD check done in its helper process
        self._stages = compile_stages(mapping)
        #: ``now`` in every template: the moment of this run (UTC, as the shop's timestamps), so
        #: a mapping can judge an order by the run's date (MAPPER_NOW makes it reproducible)
        self._now = clock_now().strftime("%Y-%m-%dT%H:%M:%SZ")
        if mapping.record_element is not None:
            assert mapping.document is not None   # output declares both (engine.config.mapping)
            self._write = writer(mapping.record_element, mapping.replacements, record_level(mapping.document))

    def convert(self, record: dict | BrokenRecord) -> Outcome:
        if isinstance(record, BrokenRecord):
            return Quarantined(record.source_name, record.source_name, record.reason)
        m = self.mapping
        ctx: dict[str, Any] = {"record": record, "tables": m.tables, "now": self._now}
        try:
            shop_id = str(m.record_id(ctx))
        except EvaluationError as exc:
            return Quarantined("?", "?", f"record.id: {exc}", "record.id")
        try:
            number = str(m.record_number(ctx))
        except EvaluationError:
            number = shop_id
        try:
            with time_budget(m.seconds_per_record):
                outcome = self._convert(record, ctx, shop_id, number)
        except OrderError as exc:
            outcome = Quarantined(shop_id, number, exc.reason, exc.field)
        except EvaluationError as exc:  # pragma: no cover - every stage wraps its own
            outcome = Quarantined(shop_id, number, str(exc))
        except Exception as exc:  # noqa: BLE001 - one order's trouble never stops the run
            outcome = Quarantined(shop_id, number, f"cannot be converted: {in_words(exc)}")
        assert not isinstance(outcome, Unbooked)   # only a credit note is left unbooked
        if m.redact and (isinstance(outcome, Quarantined) or getattr(outcome, "flags", None)):
            self._redact(outcome, ctx)
        return outcome

    def _redact(self, outcome: Outcome | Unbooked, ctx: dict[str, Any]) -> None:
        """Take the mapping's ``privacy.redact`` values out of the order's messages."""
        secret = []
        for expr in self.mapping.redact:
            try:
                value = expr(ctx)
            except Exception:  # noqa: BLE001 - a value the order does not have cannot leak
                continue
            text = "" if value is None else str(value).strip()
            if len(text) >= 3:
                secret.append(text)
        if not secret:
            return
        # plain replacements, longest first (a regex built per order cost ~100 us to compile);
        # the lower-case form too: a template may have normalised an e-mail address
        values = sorted({v for t in secret for v in (t, t.lower())}, key=len, reverse=True)

        def redact(text: str) -> str:
            for value in values:
                if value in text:
                    text = text.replace(value, "<redacted>")
            return text
        if isinstance(outcome, (Quarantined, Unbooked)):
            outcome.reason = redact(outcome.reason)
        elif isinstance(outcome, Converted):
            outcome.flags[:] = [redact(f) for f in outcome.flags]

    _eval = staticmethod(evaluate.value)
    _text = staticmethod(evaluate.text)

    @property
    def now(self) -> str:
        """The run's moment as templates see it (``now``)."""
        return self._now

    def convert_credit(self, record: dict, credit: Credit, credited_before: Decimal,
                       find_original=None) -> Outcome | Unbooked:
        """The credit note of one credit of a delivered order: the order converted as it was
        booked (no ``where``: a cancelled order is still the order that was booked), then its
        invoice negated. ``credited_before``: what earlier credits of the order booked;
        ``find_original(ctx) -> {number, concept}``: what the destination knows of the
        original invoice (ctx as when it was booked), if it can say."""
        m = self.mapping
        ctx: dict[str, Any] = {"record": record, "tables": m.tables, "now": self._now}
        shop_id = credit.id
        try:
            number = f"{m.record_number(ctx)} {credit.key}"
        except EvaluationError:
            number = shop_id
        try:
            with time_budget(m.seconds_per_record):
                outcome = self._convert(record, ctx, shop_id, number,
                                        credit=(credit, credited_before, find_original))
        except OrderError as exc:
            outcome = Quarantined(shop_id, number, exc.reason, exc.field)
        except Exception as exc:  # noqa: BLE001 - one credit's trouble never stops the run
            outcome = Quarantined(shop_id, number, f"cannot be converted: {in_words(exc)}")
        if m.redact and (isinstance(outcome, (Quarantined, Unbooked)) or getattr(outcome, "flags", None)):
            self._redact(outcome, ctx)
        return outcome

    def _credit_note(self, ctx: dict[str, Any], invoice: Invoice, credit, number: str,
                     flags: list[str]) -> Invoice | Unbooked:
        """``invoice`` (the original, as booked) turned into the credit note ``credit`` asks for."""
        m = self.mapping
        spec = m.credit
        assert spec is not None   # credit notes are made for a mapping with a credit section only
        what, before, find_original = credit
        amount, why_not = credit_amount(what, invoice.total_incl, before)
        shop_id = what.id
        if why_not is not None:
            status = "settled" if what.amount is None else "flagged"
            return Unbooked(shop_id, number, f"{what.reference}: {why_not}", status)
        known = (find_original(dict(ctx, invoice=invoice)) if find_original is not None else None) or {}
        original = {"order_number": str(m.record_number(ctx)), "date": invoice.date,
                    "description": invoice.description, "number": known.get("number")}
        ctx["credit"] = {"key": what.key, "amount": amount, "reference": what.reference, "created": what.created,
                         "source": what.source, "original": original, "partial": amount != invoice.total_incl}
        if known.get("concept"):   # bookkeeping 8.4: the original is still a concept
            flags.append(f"credits an invoice that is still a concept in the destination ({invoice.description}): "
                         f"process it first, or delete both")
        if known.get("missing"):
            flags.append(f"the credited invoice ({invoice.description}) is not found in the destination: check "
                         f"whether it was deleted or renamed there")
        description = self._text(spec.description, ctx, "credit.description")
        date = self._text(spec.date, ctx, "credit.date")

        def label(rate, vat_class):
            return self._text(spec.partial_line, dict(ctx, rate=money.quantity(rate), vat_class=vat_class),
                              "credit.partial_line")
        return credit_invoice(invoice, amount, description, date, label)

    def _convert(self, record, ctx, shop_id: str, number: str, credit=None) -> Outcome | Unbooked:
        m = self.mapping
        stages = self._stages
        flags: list[str] = []
        ctx["credit"] = None
        excluded = stages.prelude(ctx, flags, credit is not None)  # where, let, checks, flags
        if excluded >= 0:
            return Excluded(shop_id, number, m.where[excluded].source)

        key, name = stages.customer(ctx)
        key = "" if key is None else str(key)
        if key:
            proposed = self._eval(m.customer_number, ctx, "customer.number")
            if proposed in (None, "") and m.customer_fallback is not None:
                proposed = self._eval(m.customer_fallback, ctx, "customer.fallback_number")
            if proposed in (None, ""):
                raise OrderError("no debtor number: customer.number and customer.fallback_number are empty",
                                 field="customer.number")
            match = self.matcher.match(key, str(proposed), name, ctx)
            debtor = match.number
            flags.extend(match.flags)
        elif m.customer_without_key is not None:
            debtor = self._text(m.customer_without_key, ctx, "customer.without_key.number")
        else:
            raise OrderError("the customer has no e-mail address (customer.key is empty), so no debtor can be "
                             "matched; add the e-mail in the shop, or declare customer.without_key",
                             field="customer.key")
        ctx["customer"] = {"key": key, "number": debtor, "name": name}

        invoice = build_invoice(m.invoice, stages.invoice, ctx, lambda rate, day: self._vat_class(rate, day, ctx))
        if credit is None:
            flags.extend(invoice.flags)
        else:
            note = self._credit_note(ctx, invoice, credit, number, flags)
            if isinstance(note, Unbooked):
                return note
            invoice = note
        ctx["invoice"] = invoice

        created, preview = stages.outcome(ctx)
        xml = None
        if self._write is not None:
            texts: list[str] = []
            self._write(ctx, texts)
            if not texts:
                raise OrderError("output.record wrote no element (its when: is false or its for_each is empty)",
                                 field="output.record")
            xml = texts[0].encode("utf-8")
            if not self._check_later:  # the last stage, so that convert_all may do it elsewhere
                self.validator.check_text(xml)
        return Converted(shop_id, number, str(created), invoice, xml, preview, flags, ctx)

    def convert_all(self, records: Iterable[dict | BrokenRecord]) -> Iterator[Outcome]:
        """:meth:`convert` of each record, in order; past :data:`CHECK_HERE` records, the XSD
        check runs in a helper process on the machine's other core (engine/output/xsd_process.py).

        Records go to the helper in batches of :data:`CHECK_BATCH`; a batch's outcomes are
        yielded when the helper has answered, while the next batch is being converted, so
        at most two batches are held. The outcomes are exactly :meth:`convert`'s: the check
        is its last stage, and a record the XSD refuses is quarantined with the same reason.
        If reading the records fails, what was converted before is yielded, then the error
        is raised, as with :meth:`convert` one record at a time.
        """
        iterator = iter(records)
        if self._write is None or self.validator.schema is None:
            yield from map(self.convert, iterator)
            return
        for record in islice(iterator, CHECK_HERE):  # a small run: starting the helper costs more
            yield self.convert(record)
        for record in iterator:
            iterator = chain([record], iterator)
            break
        else:
            return
        checker = XsdChecker(self.validator)
        try:
            waiting: list[Outcome] = []
            while True:
                batch: list[Outcome] = []
                failure = None
                self._check_later = True
                try:
                    for record in islice(iterator, CHECK_BATCH):
                        batch.append(self.convert(record))
                except Exception as exc:  # noqa: BLE001 - raised below, after what was converted
                    failure = exc
                finally:
                    self._check_later = False
                if batch:
                    checker.submit([_xml(o) for o in batch if isinstance(o, Converted)])
                if waiting:
                    yield from _checked(waiting, checker.result())
                if failure is not None:
                    if batch:
                        yield from _checked(batch, checker.result())
                    raise failure
                if not batch:
                    return
                waiting = batch
        finally:
            checker.close()

    def _vat_class(self, rate: Decimal, day: str, ctx) -> tuple[str, str | None]:
        for i, rule in enumerate(self.mapping.vat_rules):
            if rule.rate != rate:
                continue
            if rule.valid_from and day < rule.valid_from:
                continue
            if rule.valid_until and day > rule.valid_until:
                continue
            if rule.when is not None and not self._eval(rule.when, ctx, f"vat.classes[{i}].when"):
                continue
            flag = self._text(rule.flag, ctx, f"vat.classes[{i}].flag") if rule.flag is not None else None
            return rule.vat_class, flag
        country = ctx.get("country")
        where = f" (country {country})" if country else ""
        raise OrderError(f"VAT rate {rate:f}% on {day}{where} has no VAT class in vat.classes; "
                         f"add a rule for it to the mapping or correct the order in the shop", field="vat.classes")


#: Records converted and checked in-process before convert_all starts the helper process.
CHECK_HERE = 200
#: Records per batch handed to the helper: large enough that handing over costs nothing per
#: order, small enough that few parsed orders are held.
CHECK_BATCH = 32


def _checked(outcomes: list[Outcome], refusals: list[OrderError | None]) -> Iterator[Outcome]:
    """The batch's outcomes, a converted record the XSD refused quarantined (refusals: one per converted)."""
    answers = iter(refusals)
    for outcome in outcomes:
        refusal = next(answers) if isinstance(outcome, Converted) else None
        if refusal is not None:
            yield Quarantined(outcome.shop_id, outcome.number, refusal.reason, refusal.field)
        else:
            yield outcome


def in_window(created: str, since: date | None, until: date | None) -> bool:
    """Whether a record's creation timestamp (UTC) falls in [since, until], both inclusive."""
    if since is None and until is None:
        return True
    day = str(created)[:10]
    if since and day < since.isoformat():
        return False
    if until and day > until.isoformat():
        return False
    return True


def _xml(outcome: Converted) -> bytes:
    """The record's element of a mapping with XML output (there, every Converted has one)."""
    assert outcome.xml is not None
    return outcome.xml
