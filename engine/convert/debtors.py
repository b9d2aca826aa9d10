"""Debtor matching that remembers: a local register of keyed e-mail hashes.

The register maps HMAC-SHA256(key, normalised e-mail) -> debtor number, so the state holds
no raw addresses (bookkeeping 10.2). The key comes from the environment; without it the
register cannot be opened. New customers get a number by the mapping's rule: the proposed
number (the CCV user id, or the order id for guests), or a declared sequence with a start
and a width that never hands out a number twice, skipping numbers already registered.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.clock import now as _now
from engine.convert.customers import InFileMatcher, Match
from engine.errors import MappingError, OrderError
from engine.ops.state.base import StateError
from engine.expr.filters import fold_name, normalise_email

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def key_hash(secret: str, key: str) -> str:
    return hmac.new(secret.encode("utf-8"), normalise_email(key).encode("utf-8"), hashlib.sha256).hexdigest()


@dataclass
class Numbering:
    """How a new debtor gets its number."""

    kind: str = "proposed"  # proposed | sequence
    start: int = 1
    width: int = 0
    #: proposed numbers: where a new debtor goes whose proposed number is another's (None:
    #: the order is quarantined instead)
    collisions: tuple[int, int] | None = None

    @classmethod
    def from_config(cls, config: dict[str, Any] | None) -> "Numbering":
        config = config or {}
        spare = config.get("collisions")
        collisions = (int(spare["from"]), int(spare["to"])) if spare else None
        if "sequence" not in config:
            return cls(collisions=collisions)
        seq = config["sequence"]
        return cls("sequence", int(seq.get("start", 1)), int(seq.get("width", 0)), collisions)


@dataclass
class RegisterMatcher:
    """Within a run like :class:`InFileMatcher`; across runs through the state's register.

    ``readonly`` (dry-run) looks up but remembers nothing and takes no sequence numbers:
    a new debtor then shows as ``new:<proposed>``.
    """

    store: Any
    mapping: str
    secret: str
    numbering: Numbering = field(default_factory=Numbering)
    readonly: bool = False
    in_file: InFileMatcher = field(default_factory=InFileMatcher)
    created: int = 0
    known: int = 0
    # New debtors are written by flush(), one transaction for all, before the records that
    # carry them are delivered (the runner calls it before each batch): one commit per
    # debtor (synchronous=FULL: an fsync each) made a back-fill wait on the disk.
    _unsaved: dict[str, str] = field(default_factory=dict)  # key hash -> number
    _unsaved_numbers: set[str] = field(default_factory=set)
    _last_number: int | None = None  # the sequence's last number handed out in memory

    def match(self, key: str, proposed_number: str, name: str, ctx: dict | None = None) -> Match:
        hit = self.in_file.seen.get(key)
        if hit is not None:
            return self.in_file.match(key, hit[0], name)
        h = key_hash(self.secret, key)
        number = self.store.debtor_lookup(self.mapping, h)
        if number is not None:
            self.known += 1
            self.in_file.seen[key] = (number, fold_name(name))
            return Match(number, known=True)
        number = self._new_number(proposed_number)
        if not self.readonly:
            self._unsaved[h] = number
            self._unsaved_numbers.add(number)
        self.created += 1
        self.in_file.seen[key] = (number, fold_name(name))
        return Match(number, known=False)

    def flush(self, before_delivery: bool = True) -> None:
        """Write the debtors this run created (and the sequence) in one transaction.

        Before a delivery, an address that got another number meanwhile stops the run (the
        records about to leave carry the old one); at the end of a run the debtors left are
        those of records that did not go out, and the register's number simply stands.
        """
        if not self._unsaved and self._last_number is None:
            return
        registered = self.store.debtor_remember_many(self.mapping, self._unsaved, self._last_number)
        changed = sum(1 for h, number in self._unsaved.items() if registered[h] != number)
        self._unsaved.clear()
        self._unsaved_numbers.clear()
        if changed and before_delivery:
            raise StateError(f"the debtor register changed while this run was matching ({changed} e-mail "
                             f"address(es) got another debtor number meanwhile, e.g. by `mapper debtors import`); "
                             f"the orders that carry them were not delivered: run again")

    def _taken(self, number: str) -> bool:
        return number in self._unsaved_numbers or self.store.debtor_number_taken(self.mapping, number)

    def _new_number(self, proposed: str) -> str:
        if self.numbering.kind != "sequence":
            if not self._taken(proposed):
                return proposed
            return self._spare_number(proposed)
        if self.readonly:
            return f"new:{proposed}"
        while True:
            if self._last_number is None:  # the run's first: taken in the state, never handed out again
                n = self.store.debtor_next_number(self.mapping, self.numbering.start)
            else:  # the rest in memory; flush() moves the state's sequence past them
                n = max(self._last_number + 1, self.numbering.start)
            self._last_number = n
            text = str(n).zfill(self.numbering.width)
            if text not in self._unsaved_numbers and not self.store.debtor_number_taken(self.mapping, text):
                return text


    def _spare_number(self, proposed: str) -> str:
        """A new customer whose proposed number is another customer's (e.g. after `debtors
        import`): the next free number of the declared range, or quarantine. Never two e-mail
        addresses on one debtor number."""
        spare = self.numbering.collisions
        if spare is None:
            raise OrderError(f"debtor number {proposed} is already another customer's (another e-mail address "
                             f"in the debtor register): not booked on it", field="customer.number")
        if self.readonly:
            return f"new:{proposed}+"
        low, high = spare
        while True:
            if self._last_number is None or self._last_number < low:
                n = self.store.debtor_next_number(self.mapping, low)
            else:
                n = self._last_number + 1
            self._last_number = n
            if n > high:
                raise OrderError(f"debtor number {proposed} is another customer's and the spare range "
                                 f"{low}-{high} (customer.directory.numbering.collisions) is used up",
                                 field="customer.number")
            text = str(n).zfill(self.numbering.width)
            if not self._taken(text):
                return text


def register_secret(environ: dict[str, str], variable: str) -> str:
    secret = environ.get(variable, "")
    if len(secret) < 16:
        raise MappingError(f"the debtor register needs a secret key in {variable} (at least 16 characters)",
                           hint=f"e.g. export {variable}=$(python3 -c 'import secrets; print(secrets.token_hex(32))'); "
                                "keep it: the register's entries are keyed with it")
    return secret


@dataclass
class ImportReport:
    added: int = 0
    already: int = 0
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (line, why)


_NUMBER_COLUMNS = ("debiteurnummer", "debiteur nummer", "debtornumber", "customernumber", "klantnummer", "nummer", "number")
_EMAIL_COLUMNS = ("e-mail", "email", "emailaddress", "e-mailadres", "emailadres")
_NAME_COLUMNS = ("naam", "name", "bedrijfsnaam", "company")


def _column(header: list[str], names: tuple[str, ...]) -> int | None:
    lowered = [h.strip().lower() for h in header]
    for name in names:
        if name in lowered:
            return lowered.index(name)
    return None


def import_debtors(path: Path, store: Any, mapping: str, secret: str) -> ImportReport:
    """Seed the register from an Asperion debtor export (CSV with number, name, e-mail columns)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise MappingError(f"cannot read {path}: {exc}") from None
    dialect = csv.Sniffer().sniff(text.splitlines()[0] if text else ",", delimiters=",;\t")
    rows = list(csv.reader(text.splitlines(), dialect))
    if not rows:
        raise MappingError(f"{path} is empty")
    header = rows[0]
    num_col, mail_col = _column(header, _NUMBER_COLUMNS), _column(header, _EMAIL_COLUMNS)
    if num_col is None or mail_col is None:
        raise MappingError(f"{path}: the first line must name the columns; found {', '.join(header)}",
                           hint="need a debtor number column (e.g. 'Debiteurnummer') and an e-mail column (e.g. 'E-mail')")
    report = ImportReport()
    seen: dict[str, str] = {}
    to_add: dict[str, str] = {}  # key hash -> number, written in one transaction
    for line_no, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        number = row[num_col].strip() if num_col < len(row) else ""
        email = normalise_email(row[mail_col]) if mail_col < len(row) else ""
        if not number:
            report.skipped.append((line_no, "no debtor number"))
            continue
        if not email:
            report.skipped.append((line_no, f"debtor {number} has no e-mail address"))
            continue
        if not _EMAIL.match(email):
            report.skipped.append((line_no, f"debtor {number}: '{email}' is not an e-mail address"))
            continue
        if email in seen and seen[email] != number:
            report.skipped.append((line_no, f"debtor {number} shares its e-mail with debtor {seen[email]} "
                                            f"(line order decides: the first is kept)"))
            continue
        seen[email] = number
        h = key_hash(secret, email)
        existing = to_add.get(h) or store.debtor_lookup(mapping, h)
        if existing is None:
            to_add[h] = number
            report.added += 1
        elif existing == number:
            report.already += 1
        else:
            report.skipped.append((line_no, f"debtor {number}: this e-mail is already registered as debtor "
                                            f"{existing}; the register never overwrites"))
    if to_add:
        store.debtor_remember_many(mapping, to_add)
    return report


def build_matcher(mapping: Any, store: Any, *, readonly: bool, environ: dict[str, str]) -> tuple[Any, str | None]:
    """The mapping's debtor directory; with a note when dry-run falls back to in-file matching."""
    spec = mapping.customer_directory
    if spec.kind == "in_file":
        return InFileMatcher(), None
    variable = spec.key_env
    if readonly and len(environ.get(variable, "")) < 16:
        return InFileMatcher(), f"debtor register not consulted ({variable} is not set): numbers as if all customers were new"
    secret = register_secret(environ, variable)
    check_register_key(store, mapping.name, secret, variable, readonly=readonly)
    numbering = Numbering.from_config(spec.numbering)
    return RegisterMatcher(store, mapping.name, secret, numbering, readonly=readonly), None


_CHECK_LABEL = b"mapper debtor register: key check v1"


def key_check_value(secret: str) -> str:
    """What the state keeps to recognise the register's key: an HMAC of a fixed label under it
    (neither the key nor a plain hash of it)."""
    return "hmac-sha256:" + hmac.new(secret.encode("utf-8"), _CHECK_LABEL, hashlib.sha256).hexdigest()


class RegisterKeyMismatch(MappingError):
    """The register was built with another key: every customer would look new."""


def check_register_key(store: Any, mapping: str, secret: str, variable: str, *, readonly: bool) -> None:
    """The first use records the key's check value; a different key stops the run (exit 2)."""
    recorded = store.register_check(mapping)
    mine = key_check_value(secret)
    if recorded is None:
        if not readonly:
            store.set_register_check(mapping, mine, _now())
        return
    if not hmac.compare_digest(recorded, mine):
        raise RegisterKeyMismatch(
            f"{variable} is not the key the debtor register of '{mapping}' was built with: every "
            f"customer would look new and get a second debtor number",
            hint=f"set {variable} back to the key used before; if that key is lost, `mapper debtors rekey` "
                 f"starts the register again under this one (then re-import the debtors from Asperion)")
