"""Asperion REST API simulator: a real HTTP server on loopback (stdlib only).

Contract: /work/shared/spec/asperion.md §2-3 and bookkeeping.md §8-9.  The public facts
(paths under ``/v1/``, OAuth2 refresh-token flow at ``/connect/token``, ``Authorization:
Bearer``, ``X-Tenant-Id``, ``{"_data", "_meta"}`` lists with ``page``/``pageSize``,
problem-details errors with ``errors: {"Field": [...]}``, status 1 = Concept without an invoice
number) are followed; everything else is marked ``# spec: our choice``.  The choices that a
client must know about:

* The identity server (``identity.asperion.nl``) and the API (``api.asperion.nl``) are two
  hosts in reality; here both are served on one base URL.  # spec: our choice
* Refresh tokens rotate (IdentityServer "OneTimeOnly"): every successful refresh issues a new
  refresh token and the one used becomes invalid at once; the client must store the newest.
  ``rotate_refresh_tokens=False`` switches to "ReUse" (the same token comes back).
* ``GET /v1/debtors?EmailAddress=x`` is a case-insensitive *contains* search, so
  ``jan@ex.nl`` also finds ``marijan@ex.nl.invalid``: the client must confirm exact equality
  itself (bookkeeping 9.1).  ``Name`` and ``VatNumber`` are contains searches too;
  ``CustomerNumber`` is exact.
* ``GET /v1/salesinvoiceswithlines?Description=x`` is an *exact*, case-sensitive match.
* ``_meta.nextPage`` / ``previousPage`` are absolute URLs (built from the ``Host`` header the
  client used) or null; ``page`` is 1-based, ``pageSize`` defaults to 25 and is clamped to 100.
* Invoice line ``amount`` is excl. VAT; ``vatAmount`` must equal ``amount * percentage / 100``
  within 0.01 per line; ``vatCode`` is the code's ``salesCode`` (e.g. ``"VH"``) or its ``id``.
* Descriptions are not unique: posting the same invoice twice creates two concepts.
* For tests: ``created_debtors`` / ``created_invoices`` (what POSTs created, all tenants,
  amounts as ``Decimal``), ``debtors(tenant)`` / ``invoices(tenant)``, ``post_counts`` (POSTs
  received per lower-cased path, whatever their outcome), ``request_log``, ``inject()``.

Usage in tests::

    with AsperionSimulator(clock=fake_clock) as sim:
        tok = requests.post(sim.url + "/connect/token", data={...}).json()

CLI::

    python -m engine.simulators.asperion --port 8766
"""
from __future__ import annotations

import argparse
import collections
import datetime as _dt
import json
import random
import re
import sys
import time
import urllib.parse
from base64 import b64decode
from contextlib import contextmanager
from decimal import Decimal
from typing import Any, Callable, Iterable, Iterator, Mapping

from engine.simulators._server import BaseFault, SimHandler, Simulator, drop_connection, read_body

__all__ = ["AsperionSimulator", "Fault", "asperion_sandbox", "main", "DEFAULT_VAT_CODES",
           "DEFAULT_JOURNALS", "DEFAULT_PAYMENT_CONDITIONS", "DEFAULT_LEDGER_ACCOUNTS"]

FAULT_KINDS = ("429", "503", "500", "slow", "drop", "expire_token", "lost_response")
DEFAULT_PAGE_SIZE = 25  # spec: our choice
MAX_PAGE_SIZE = 100  # spec: our choice — larger sizes are clamped and echoed in _meta.pageSize
STATUS_CONCEPT = 1  # asperion.md §2: 1 Concept, 2 InJournalentry, 3 InLedger, 6 Payable, 7 Paid, 8 Hold

DEMO_CLIENT_ID = "demo-client"
DEMO_CLIENT_SECRET = "demo-secret"
DEMO_REFRESH_TOKEN = "demo-refresh-token"
DEMO_TENANT = "tenant-1"

# A realistic NL administration.  ``intraCommunity`` is an extra field (spec: our choice) that
# marks the ICP reverse-charge code; the others are told apart by description and country.
DEFAULT_VAT_CODES: tuple[dict, ...] = (
    {"id": 1, "description": "Hoog", "salesCode": "VH", "percentage": 21, "countryCode": None,
     "validFrom": "2012-10-01", "validUntil": None, "intraCommunity": False},
    {"id": 2, "description": "Laag", "salesCode": "VL", "percentage": 9, "countryCode": None,
     "validFrom": "2019-01-01", "validUntil": None, "intraCommunity": False},
    {"id": 3, "description": "Laag oud", "salesCode": "VL6", "percentage": 6, "countryCode": None,
     "validFrom": None, "validUntil": "2018-12-31", "intraCommunity": False},
    {"id": 4, "description": "Verlegd ICP", "salesCode": "VICP", "percentage": 0,
     "countryCode": None, "validFrom": None, "validUntil": None, "intraCommunity": True},
    {"id": 5, "description": "Export buiten EU", "salesCode": "VEX", "percentage": 0,
     "countryCode": None, "validFrom": None, "validUntil": None, "intraCommunity": False},
    {"id": 6, "description": "Nul", "salesCode": "VN", "percentage": 0, "countryCode": None,
     "validFrom": None, "validUntil": None, "intraCommunity": False},
    {"id": 7, "description": "OSS België hoog", "salesCode": "OSSBE21", "percentage": 21,
     "countryCode": "BE", "validFrom": "2021-07-01", "validUntil": None, "intraCommunity": False},
    {"id": 8, "description": "OSS Duitsland hoog", "salesCode": "OSSDE19", "percentage": 19,
     "countryCode": "DE", "validFrom": "2021-07-01", "validUntil": None, "intraCommunity": False},
    # a purchase-only code: no salesCode, refused on sales invoices (spec: our choice)
    {"id": 9, "description": "Inkoop hoog", "salesCode": None, "percentage": 21,
     "countryCode": None, "validFrom": "2012-10-01", "validUntil": None, "intraCommunity": False},
)
DEFAULT_JOURNALS: tuple[dict, ...] = (  # spec: our choice — fields id, code, description, type
    {"id": 1, "code": "VK", "description": "Verkoopboek", "type": "Sales"},
    {"id": 2, "code": "BNK", "description": "Bank", "type": "Bank"},
    {"id": 3, "code": "MEM", "description": "Memoriaal", "type": "General"},
)
DEFAULT_PAYMENT_CONDITIONS: tuple[dict, ...] = (  # spec: our choice
    {"id": 1, "description": "Direct betaald", "days": 0},
    {"id": 2, "description": "14 dagen", "days": 14},
    {"id": 3, "description": "30 dagen", "days": 30},
)
DEFAULT_LEDGER_ACCOUNTS: tuple[dict, ...] = (  # spec: our choice
    {"id": 101, "number": "8000", "description": "Omzet hoog", "type": "Revenue"},
    {"id": 102, "number": "8010", "description": "Omzet laag", "type": "Revenue"},
    {"id": 103, "number": "8020", "description": "Omzet ICP", "type": "Revenue"},
    {"id": 104, "number": "8030", "description": "Omzet export", "type": "Revenue"},
    {"id": 105, "number": "8040", "description": "Omzet OSS", "type": "Revenue"},
    {"id": 106, "number": "8100", "description": "Verzend- en betaalkosten", "type": "Revenue"},
    {"id": 107, "number": "8900", "description": "Afrondingsverschillen", "type": "Revenue"},
    {"id": 110, "number": "1300", "description": "Debiteuren", "type": "Balance"},
)

DEBTOR_FIELDS = ("customerNumber", "name", "address", "postCode", "city", "countryCode",
                 "emailAddress", "phoneNumber", "vatNumber", "cocNumber", "debtorKindId")
DEBTOR_KINDS = {1: "Consumer", 2: "Company"}  # spec: our choice
# spec: our choice — maximum lengths of string fields
MAX_LEN = {"customerNumber": 20, "name": 100, "countryCode": 2, "address": 100, "postCode": 12, "city": 60,
           "emailAddress": 100, "phoneNumber": 25, "vatNumber": 20, "cocNumber": 20,
           "description": 100, "lineDescription": 250}

ISO_COUNTRIES = frozenset("""
AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR
BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ
EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW
GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY
KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV
MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY
QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG
TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM
ZW""".split())

_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")
# spec: our choice — VAT id without spaces, dots or dashes: 2 letters + 2..18 of [0-9A-Z+*]
# (EU ids, also a Swiss "CHE123456789MWST")
_VAT_RE = re.compile(r"^[A-Z]{2}[0-9A-Z+*]{2,18}$")
_DATE_RE = re.compile(r"^(\d{4}-\d{2}-\d{2})(?:T00:00:00(?:\.0+)?(?:Z|[+-]00:00)?)?$")

# Error texts by language (Accept-Language nl-* → Dutch, else English; spec: our choice).
_MESSAGES = {
    "required": ("The {f} field is required.", "Het veld {f} is verplicht."),
    "type_string": ("The {f} field must be a string.", "Het veld {f} moet tekst zijn."),
    "type_int": ("The {f} field must be an integer.", "Het veld {f} moet een geheel getal zijn."),
    "type_number": ("The {f} field must be a number.", "Het veld {f} moet een getal zijn."),
    "too_long": ("The field {f} must be a string with a maximum length of {n}.",
                 "Het veld {f} mag maximaal {n} tekens bevatten."),
    "email": ("'{v}' is not a valid e-mail address.", "'{v}' is geen geldig e-mailadres."),
    "country": ("'{v}' is not a valid ISO 3166-1 alpha-2 country code.",
                "'{v}' is geen geldige landcode (ISO 3166-1 alpha-2)."),
    "vat_number": ("'{v}' is not a valid VAT number (expected e.g. NL123456789B01).",
                   "'{v}' is geen geldig btw-nummer (verwacht bijv. NL123456789B01)."),
    "debtor_kind": ("Unknown debtor kind {v}; expected 1 (consumer) or 2 (company).",
                    "Onbekende debiteursoort {v}; verwacht 1 (particulier) of 2 (bedrijf)."),
    "duplicate_customer": ("A debtor with customer number '{v}' already exists.",
                           "Er bestaat al een debiteur met debiteurnummer '{v}'."),
    "date": ("'{v}' is not a valid date (expected yyyy-MM-dd).",
             "'{v}' is geen geldige datum (verwacht jjjj-MM-dd)."),
    "unknown_debtor": ("No debtor with customer number '{v}' exists.",
                       "Er bestaat geen debiteur met debiteurnummer '{v}'."),
    "unknown_journal": ("Journal {v} does not exist.", "Dagboek {v} bestaat niet."),
    "not_sales_journal": ("Journal {v} is not a sales journal.", "Dagboek {v} is geen verkoopboek."),
    "unknown_payment_condition": ("Payment condition {v} does not exist.",
                                  "Betalingsconditie {v} bestaat niet."),
    "no_lines": ("An invoice needs at least one line.", "Een factuur heeft minstens één regel nodig."),
    "unknown_vat_code": ("VAT code '{v}' does not exist.", "Btw-code '{v}' bestaat niet."),
    "not_sales_vat_code": ("VAT code '{v}' cannot be used on sales invoices.",
                           "Btw-code '{v}' kan niet op verkoopfacturen worden gebruikt."),
    "vat_code_date": ("VAT code '{v}' is not valid on {d} (valid {a} to {b}).",
                      "Btw-code '{v}' is niet geldig op {d} (geldig van {a} tot {b})."),
    "vat_amount": ("VAT amount {v} does not match {p}% of {a} (expected {e}).",
                   "Btw-bedrag {v} past niet bij {p}% van {a} (verwacht {e})."),
    "decimals": ("The field {f} may have at most 2 decimals.",
                 "Het veld {f} mag maximaal 2 decimalen hebben."),
    "unknown_ledger": ("Ledger account {v} does not exist.", "Grootboekrekening {v} bestaat niet."),
    "not_revenue_ledger": ("Ledger account {v} is not a revenue account.",
                           "Grootboekrekening {v} is geen omzetrekening."),
    "body_json": ("The request body is not valid JSON.", "De inhoud van het verzoek is geen geldige JSON."),
    "body_object": ("The request body must be a JSON object.",
                    "De inhoud van het verzoek moet een JSON-object zijn."),
    "lines_shape": ("Lines must be an object with a '_data' list.",
                    "Lines moet een object met een '_data'-lijst zijn."),
    "tenant_missing": ("The X-Tenant-Id header is required.", "De header X-Tenant-Id is verplicht."),
    "tenant_unknown": ("You have no access to administration '{v}'.",
                       "U heeft geen toegang tot administratie '{v}'."),
    "paging": ("The value '{v}' is not valid for {f}.", "De waarde '{v}' is ongeldig voor {f}."),
}

_TITLES = {400: "One or more validation errors occurred.", 401: "Unauthorized", 403: "Forbidden",
           404: "Not Found", 405: "Method Not Allowed", 415: "Unsupported Media Type",
           429: "Too Many Requests", 500: "An error occurred while processing your request.",
           503: "Service Unavailable"}
_TYPES = {400: "https://tools.ietf.org/html/rfc9110#section-15.5.1",
          401: "https://tools.ietf.org/html/rfc9110#section-15.5.2",
          403: "https://tools.ietf.org/html/rfc9110#section-15.5.4",
          404: "https://tools.ietf.org/html/rfc9110#section-15.5.5",
          405: "https://tools.ietf.org/html/rfc9110#section-15.5.6",
          415: "https://tools.ietf.org/html/rfc9110#section-15.5.16",
          429: "https://tools.ietf.org/html/rfc6585#section-4",
          500: "https://tools.ietf.org/html/rfc9110#section-15.6.1",
          503: "https://tools.ietf.org/html/rfc9110#section-15.6.4"}


class Problem(Exception):
    """An answer in problem-details form (RFC 9457, ASP.NET Core flavour)."""

    def __init__(self, status: int, detail: str | None = None,
                 errors: dict[str, list[str]] | None = None, headers: dict | None = None):
        super().__init__(detail or _TITLES.get(status, ""))
        self.status, self.detail, self.errors = status, detail, errors
        self.headers = headers or {}


class _TokenError(Exception):
    def __init__(self, error: str, description: str, status: int = 400):
        super().__init__(description)
        self.error, self.description, self.status = error, description, status


class Fault(BaseFault):
    """An injected fault rule.  ``count``: the next N matching requests (then expires);
    ``rate``: with this probability (seeded); neither: every matching request until
    ``clear_faults()``; both: with probability ``rate`` until it fired ``count`` times.
    ``path_contains`` filters on path+query, ``method`` on the HTTP method."""

    KINDS = FAULT_KINDS

    def __init__(self, kind: str, count: int | None, rate: float | None,
                 path_contains: str | None, method: str | None, params: dict):
        super().__init__(kind, count, rate, path_contains, params)
        self.method = method.upper() if method else None

    def matches(self, method: str, target: str, lpath: str) -> bool:
        if not super().matches(method, target):
            return False
        if self.method is not None and method != self.method:
            return False
        if self.kind == "expire_token" and not lpath.startswith("/v1/"):
            return False  # only API calls carry a bearer token
        if self.kind == "lost_response" and self.method is None and method in ("GET", "HEAD"):
            return False  # spec: our choice — by default only writes lose their answer
        return True

    def _repr_extra(self) -> str:
        return f", method={self.method!r}"


class _Tenant:
    def __init__(self, tid: str, name: str):
        self.id, self.name = tid, name
        self.debtors: dict[int, dict] = {}
        self.invoices: dict[int, dict] = {}


class _Handler(SimHandler):
    disable_nagle_algorithm = True  # see SimHandler: no ~40 ms delayed-ACK wait per request
    server_version = "AsperionSimulator/1.0"


class AsperionSimulator(Simulator):
    """In-process Asperion REST API on loopback.  See the module docstring."""

    handler_class = _Handler  # served by LoopbackServer: start/stop/with/url
    thread_name = "asperion-sim"

    def __init__(self, *, clients: Mapping[str, str] | None = None,
                 refresh_tokens: Mapping[str, str] | None = None,
                 tenants: Iterable[str] | Mapping[str, str] | None = None,
                 token_lifetime: float = 3600, clock: Callable[[], float] = time.time,
                 vat_codes: Iterable[dict] | None = None,
                 debtors: Iterable[dict] | Mapping[str, Iterable[dict]] = (),
                 journals: Iterable[dict] | None = None,
                 payment_conditions: Iterable[dict] | None = None,
                 ledger_accounts: Iterable[dict] | None = None,
                 rotate_refresh_tokens: bool = True,
                 vat_tolerance: Decimal | str = "0.01",
                 host: str = "127.0.0.1", port: int = 0, seed: int = 0):
        super().__init__(host, port, seed)  # self._rng: faults
        self.clients = dict(clients if clients is not None
                            else {DEMO_CLIENT_ID: DEMO_CLIENT_SECRET})
        self._refresh: dict[str, str] = dict(
            refresh_tokens if refresh_tokens is not None
            else {DEMO_REFRESH_TOKEN: next(iter(self.clients), DEMO_CLIENT_ID)})
        if tenants is None:
            tenants = {DEMO_TENANT}
        names = dict(tenants) if isinstance(tenants, Mapping) else {t: None for t in sorted(tenants)}
        self._tenants = {str(t): _Tenant(str(t), n or f"Administratie {t}") for t, n in names.items()}
        self.token_lifetime = token_lifetime
        self.clock = clock
        self.rotate_refresh_tokens = rotate_refresh_tokens
        self.vat_tolerance = Decimal(str(vat_tolerance))
        self.vat_codes = [dict(v) for v in (vat_codes if vat_codes is not None else DEFAULT_VAT_CODES)]
        self.journals = [dict(j) for j in (journals if journals is not None else DEFAULT_JOURNALS)]
        self.payment_conditions = [dict(p) for p in (payment_conditions if payment_conditions is not None
                                                     else DEFAULT_PAYMENT_CONDITIONS)]
        self.ledger_accounts = [dict(a) for a in (ledger_accounts if ledger_accounts is not None
                                                  else DEFAULT_LEDGER_ACCOUNTS)]
        self.post_counts: collections.Counter[str] = collections.Counter()  # lowercased path -> POSTs received
        self.created_debtors: list[dict] = []  # as returned by POST (all tenants, in order)
        self.created_invoices: list[dict] = []
        self._access: dict[str, tuple[str, float]] = {}  # access token -> (client id, expires at)
        self._token_rng = random.Random(f"tokens-{seed}")
        self._next_debtor_id = 1001  # spec: our choice — ids unique across tenants
        self._next_invoice_id = 50001
        if isinstance(debtors, Mapping):
            for tid, items in debtors.items():
                for d in items:
                    self.add_debtor(d, tenant=tid)
        else:
            for d in debtors:
                for tid in self._tenants:
                    self.add_debtor(d, tenant=tid)

    # ------------------------------------------------------------------ data helpers
    @property
    def tenants(self) -> list[str]:
        return list(self._tenants)

    @property
    def refresh_tokens(self) -> dict[str, str]:
        """Currently valid refresh tokens -> client id."""
        with self._lock:
            return dict(self._refresh)

    def grant_refresh_token(self, client_id: str) -> str:
        """A new refresh token for ``client_id``: what authorising the app again gives."""
        with self._lock:
            rt = "rt_" + "%040x" % self._token_rng.getrandbits(160)
            self._refresh[rt] = client_id
        return rt

    def add_debtor(self, debtor: dict, tenant: str | None = None) -> dict:
        """Add a debtor directly (as if made in Asperion); ``tenant`` defaults to the first."""
        t = self._tenant(tenant)
        with self._lock:
            d = {k: debtor.get(k) for k in DEBTOR_FIELDS}
            if d["debtorKindId"] is None:
                d["debtorKindId"] = 1
            did = debtor.get("id")
            if did is None:
                did = self._next_debtor_id
                self._next_debtor_id += 1
            else:
                self._next_debtor_id = max(self._next_debtor_id, int(did) + 1)
            did = int(did)
            d = {"id": did, **d}
            t.debtors[did] = d
            return dict(d)

    def debtors(self, tenant: str | None = None) -> list[dict]:
        t = self._tenant(tenant)
        with self._lock:
            return [_copy(d) for d in t.debtors.values()]

    def invoices(self, tenant: str | None = None) -> list[dict]:
        t = self._tenant(tenant)
        with self._lock:
            return [_copy(i) for i in t.invoices.values()]

    def process_invoice(self, invoice_id: int, number: str, tenant: str | None = None) -> dict:
        """Process a concept invoice as the bookkeeper does in Asperion: it gets its number and
        leaves the concept status (3, InLedger)."""
        t = self._tenant(tenant)
        with self._lock:
            inv = t.invoices[int(invoice_id)]
            inv["invoiceNumber"] = str(number)
            inv["status"] = 3
            return _copy(inv)

    def expire_tokens(self) -> None:
        """Expire every access token issued so far (refresh tokens stay valid)."""
        with self._lock:
            self._access.clear()

    def _tenant(self, tenant: str | None) -> _Tenant:
        if tenant is None:
            return next(iter(self._tenants.values()))
        return self._tenants[str(tenant)]

    # ------------------------------------------------------------------ lifecycle
    @property
    def token_url(self) -> str:
        return self.url + "/connect/token"

    # ------------------------------------------------------------------ faults
    def inject(self, kind: str, count: int | None = None, rate: float | None = None,
               path_contains: str | None = None, method: str | None = None,
               **params: Any) -> Fault:
        """Inject a fault (checked before authentication, like infrastructure would fail).

        * ``"429"`` — 429 problem details; ``retry_after=<seconds>`` adds ``Retry-After``.
        * ``"503"`` / ``"500"`` — problem details (``retry_after`` also honoured on 503;
          ``html=True`` answers an HTML page as a gateway would).
        * ``"slow"`` — sleep ``delay`` seconds (default 5, real time), then answer normally.
        * ``"drop"`` — close the connection without an answer; nothing is processed.
        * ``"expire_token"`` — the next ``/v1`` call answers 401 ``invalid_token`` as if its
          token expired; the presented token really becomes invalid (``revoke=False`` keeps it).
        * ``"lost_response"`` — the request is PROCESSED (objects are created) and then the
          connection is closed without an answer.  By default only non-GET requests match —
          including ``POST /connect/token`` (a lost rotation leaves the client with a dead
          refresh token), so pass ``path_contains`` to aim it.

        A picked fault counts as a hit even if the request would have failed anyway.
        ``request_log`` records 0 as the status of a request that got no answer.
        """
        return self._faults.add(Fault(kind, count, rate, path_contains, method, params))

    # ------------------------------------------------------------------ request handling
    def handle(self, h: "_Handler", method: str) -> None:
        target = h.path
        body = read_body(h)
        path, _, query = target.partition("?")
        # spec: our choice — paths are case-insensitive (ASP.NET routing); trailing / ignored
        lpath = urllib.parse.unquote(path).lower().rstrip("/") or "/"
        if method == "POST":
            with self._lock:
                self.post_counts[lpath] += 1
        fault = self._faults.pick(method, target, lpath)
        kind = fault.kind if fault is not None else None
        if kind == "drop":
            self._log(method, target, 0)
            drop_connection(h)
            return
        if kind == "slow":
            time.sleep(float(fault.params.get("delay", 5.0)))
        lang = 1 if (h.headers.get("Accept-Language") or "").strip().lower().startswith("nl") else 0
        headers: dict[str, str] = {}
        ctype = "application/json; charset=utf-8"
        try:
            if kind in ("429", "503", "500"):
                st = int(kind)
                hdr = {}
                if st != 500 and fault.params.get("retry_after") is not None:
                    hdr["Retry-After"] = str(fault.params["retry_after"])
                if st == 503 and fault.params.get("html"):
                    self._log(method, target, 503)
                    self._send(h, method, 503, b"<html><body><h1>503 Service Unavailable</h1>"
                               b"</body></html>", "text/html", hdr)
                    return
                raise Problem(st, f"Injected fault: {_TITLES[st]}", headers=hdr)
            if lpath == "/connect/token":
                status, obj = self._token_endpoint(h, method, body)
                headers = {"Cache-Control": "no-store", "Pragma": "no-cache"}
            elif lpath == "/v1" or lpath.startswith("/v1/"):
                status, obj = self._api(h, method, lpath, query, body, lang,
                                        fault if kind == "expire_token" else None)
            else:
                raise Problem(404, f"No resource at {path}.")
            payload = _dumps(obj).encode("utf-8") if obj is not None else b""
        except Exception as exc:  # noqa: BLE001 - every failure becomes an answer
            if isinstance(exc, _TokenError):
                status = exc.status
                headers = {"Cache-Control": "no-store", "Pragma": "no-cache"}
                payload = _dumps({"error": exc.error,
                                  "error_description": exc.description}).encode("utf-8")
            else:
                e = exc if isinstance(exc, Problem) else Problem(
                    500, f"Simulator bug: {type(exc).__name__}: {exc}")
                status, payload, ctype, headers = self._problem(e)
        if kind == "lost_response":
            self._log(method, target, 0)
            drop_connection(h)
            return
        self._log(method, target, status)
        self._send(h, method, status, payload, ctype, headers)

    def _problem(self, e: Problem) -> tuple[int, bytes, str, dict]:
        doc: dict[str, Any] = {"type": _TYPES.get(e.status), "title": _TITLES.get(e.status, "Error"),
                               "status": e.status}
        if e.detail:
            doc["detail"] = e.detail
        elif e.errors:  # spec: our choice — a detail text is always present with errors
            doc["detail"] = "See the errors property for details."
        doc["traceId"] = self._trace_id()
        if e.errors:
            doc["errors"] = e.errors
        return (e.status, _dumps(doc).encode("utf-8"), "application/problem+json; charset=utf-8",
                dict(e.headers))

    def _trace_id(self) -> str:
        with self._lock:
            return f"00-{self._token_rng.getrandbits(128):032x}-{self._token_rng.getrandbits(64):016x}-00"

    @staticmethod
    def _send(h, method: str, status: int, data: bytes, ctype: str, headers: dict) -> None:
        h.send_response(status)
        if data or status not in (204, 304):
            h.send_header("Content-Type", ctype)
        for k, v in headers.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        if method != "HEAD":
            h.wfile.write(data)

    # ------------------------------------------------------------------ OAuth2
    def _token_endpoint(self, h, method: str, body: bytes) -> tuple[int, dict]:
        if method != "POST":
            raise Problem(405, f"Method {method} is not allowed on /connect/token.",
                          headers={"Allow": "POST"})
        ctype = (h.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/x-www-form-urlencoded":
            raise _TokenError("invalid_request", "The request must be form-url-encoded.")
        try:
            form = dict(urllib.parse.parse_qsl(body.decode("utf-8"), keep_blank_values=True))
        except UnicodeDecodeError:
            raise _TokenError("invalid_request", "The request body is not UTF-8.") from None
        client_id, secret = form.get("client_id"), form.get("client_secret")
        auth = h.headers.get("Authorization") or ""
        if auth.lower().startswith("basic "):  # spec: our choice — Basic auth accepted too
            try:
                user, _, pw = b64decode(auth[6:].strip()).decode("utf-8").partition(":")
                client_id = urllib.parse.unquote_plus(user)
                secret = urllib.parse.unquote_plus(pw)
            except (ValueError, UnicodeDecodeError):
                raise _TokenError("invalid_client", "Malformed Basic authorization.") from None
        if not client_id or client_id not in self.clients or self.clients[client_id] != secret:
            # spec: our choice — IdentityServer answers invalid_client with 400
            raise _TokenError("invalid_client", "Unknown client or wrong client secret.")
        grant = form.get("grant_type")
        if grant != "refresh_token":
            raise _TokenError("unsupported_grant_type",
                              f"Grant type {grant!r} is not supported; use refresh_token.")
        rt = form.get("refresh_token")
        if not rt:
            raise _TokenError("invalid_request", "refresh_token is missing.")
        with self._lock:
            owner = self._refresh.get(rt)
            if owner is None or owner != client_id:
                raise _TokenError("invalid_grant", "The refresh token is invalid, expired or "
                                  "already used.")
            if self.rotate_refresh_tokens:
                del self._refresh[rt]  # spec: our choice — one-time use, the old one dies now
                rt = "rt_" + "%040x" % self._token_rng.getrandbits(160)
                self._refresh[rt] = client_id
            access = "at_" + "%064x" % self._token_rng.getrandbits(256)
            self._access[access] = (client_id, self.clock() + self.token_lifetime)
        return 200, {"access_token": access, "expires_in": int(self.token_lifetime),
                     "token_type": "Bearer", "refresh_token": rt,
                     "scope": "api offline_access"}  # spec: our choice — scope names unknown

    def _check_bearer(self, h, fault: Fault | None) -> None:
        auth = (h.headers.get("Authorization") or "").strip()
        if not auth.lower().startswith("bearer ") or not auth[7:].strip():
            # RFC 6750 §3.1: no error code when the request carries no credentials
            raise Problem(401, "An access token is required (Authorization: Bearer <token>).",
                          headers={"WWW-Authenticate": 'Bearer'})
        token = auth[7:].strip()
        with self._lock:
            if fault is not None:
                if fault.params.get("revoke", True):
                    self._access.pop(token, None)
                reason = "The token expired"
            else:
                entry = self._access.get(token)
                if entry is None:
                    reason = "The token is invalid"
                elif self.clock() >= entry[1]:
                    reason = "The token expired"
                else:
                    return
        raise Problem(401, f"{reason}.", headers={
            "WWW-Authenticate": f'Bearer error="invalid_token", error_description="{reason}"'})

    # ------------------------------------------------------------------ API routing
    def _api(self, h, method: str, lpath: str, query: str, body: bytes, lang: int,
             expire: Fault | None) -> tuple[int, Any]:
        self._check_bearer(h, expire)
        parts = lpath.split("/")[2:]  # after "", "v1"
        q = _query(query)
        base = self._base_for(h)
        res = parts[0] if parts else ""
        allowed = {"administrations": ("GET",), "debtors": ("GET", "POST"), "vatcodes": ("GET",),
                   "journals": ("GET",), "paymentconditions": ("GET",), "ledgeraccounts": ("GET",),
                   "salesinvoiceswithlines": ("GET", "POST")}
        if res not in allowed or len(parts) > 2 or (len(parts) == 2 and res not in
                                                     ("debtors", "salesinvoiceswithlines")):
            raise Problem(404, f"No resource at /v1/{'/'.join(parts)}.")
        ok = allowed[res] if len(parts) == 1 else ("GET",)
        if method not in ok:
            raise Problem(405, f"Method {method} is not allowed here.", headers={"Allow": ", ".join(ok)})
        if res == "administrations":  # spec: our choice — no X-Tenant-Id needed to list them
            items = [{"id": t.id, "name": t.name} for t in self._tenants.values()]
            return 200, self._paged(items, base, lpath, query, q, lang)
        tenant = self._tenant_from(h, lang)
        if res == "vatcodes":
            return 200, self._paged(_copy(self.vat_codes), base, lpath, query, q, lang)
        if res == "journals":
            return 200, self._paged(_copy(self.journals), base, lpath, query, q, lang)
        if res == "paymentconditions":
            return 200, self._paged(_copy(self.payment_conditions), base, lpath, query, q, lang)
        if res == "ledgeraccounts":
            return 200, self._paged(_copy(self.ledger_accounts), base, lpath, query, q, lang)
        if len(parts) == 2:
            try:
                oid = int(parts[1])
            except ValueError:
                raise Problem(404, f"No {res} with id '{parts[1]}'.") from None
            with self._lock:
                store = tenant.debtors if res == "debtors" else tenant.invoices
                if oid not in store:
                    raise Problem(404, f"No {res} with id {oid}.")
                return 200, _copy(store[oid])
        if method == "GET":
            items = self._search(tenant, res, q)
            return 200, self._paged(items, base, lpath, query, q, lang)
        # POST
        ctype = (h.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if not (ctype == "application/json" or ctype.endswith("+json")):
            raise Problem(415, "Content-Type must be application/json.")  # as ASP.NET does
        validate_only = False
        if "validateonly" in q:
            v = q["validateonly"].strip().lower()
            if v not in ("true", "false"):
                raise Problem(400, errors={"validateOnly": [_msg(lang, "paging", v=q["validateonly"],
                                                                 f="validateOnly")]})
            validate_only = v == "true"
        data = _json_object(body, lang)
        if res == "debtors":
            return self._post_debtor(tenant, data, validate_only, lang)
        return self._post_invoice(tenant, data, validate_only, lang)

    def _tenant_from(self, h, lang: int) -> _Tenant:
        tid = (h.headers.get("X-Tenant-Id") or "").strip()
        if not tid:
            raise Problem(400, _msg(lang, "tenant_missing"),
                          errors={"X-Tenant-Id": [_msg(lang, "tenant_missing")]})
        t = self._tenants.get(tid)
        if t is None:
            raise Problem(403, _msg(lang, "tenant_unknown", v=tid))
        return t

    def _base_for(self, h) -> str:
        host = h.headers.get("Host")
        # spec: our choice — absolute links use the Host the client used (else our url)
        return f"http://{host}" if host else self.url

    def _search(self, tenant: _Tenant, res: str, q: dict[str, str]) -> list[dict]:
        with self._lock:
            if res == "debtors":
                items = [_copy(d) for d in tenant.debtors.values()]
            else:
                items = [_copy(i) for i in tenant.invoices.values()]
        if res == "debtors":
            # spec: our choice — contains (case-insensitive) for e-mail, name and VAT number;
            # exact for the customer number
            for key, field in (("emailaddress", "emailAddress"), ("name", "name"),
                               ("vatnumber", "vatNumber")):
                if key in q:
                    needle = q[key].strip().casefold()
                    items = [d for d in items if needle in (d.get(field) or "").casefold()]
            if "customernumber" in q:
                items = [d for d in items if d.get("customerNumber") == q["customernumber"].strip()]
        else:
            if "description" in q:  # spec: our choice — exact, case-sensitive
                items = [i for i in items if i.get("description") == q["description"]]
            if "debtorcustomernumber" in q:
                items = [i for i in items if i.get("debtorCustomerNumber") == q["debtorcustomernumber"]]
            if "status" in q:
                items = [i for i in items if str(i.get("status")) == q["status"].strip()]
        return items

    def _paged(self, items: list, base: str, lpath: str, query: str, q: dict[str, str],
               lang: int) -> dict:
        errors: dict[str, list[str]] = {}
        page, size = 1, DEFAULT_PAGE_SIZE
        for key, name in (("page", "page"), ("pagesize", "pageSize")):
            if key in q:
                try:
                    v = int(q[key])
                    if v < 1:
                        raise ValueError
                except ValueError:
                    errors[name] = [_msg(lang, "paging", v=q[key], f=name)]
                    continue
                if key == "page":
                    page = v
                else:
                    size = min(v, MAX_PAGE_SIZE)
        if errors:
            raise Problem(400, errors=errors)
        total = len(items)
        pages = (total + size - 1) // size
        data = items[(page - 1) * size: page * size]

        def link(p: int) -> str:
            return f"{base}{lpath}?{_replace_paging(query, p, size)}"
        return {"_data": data, "_meta": {
            "totalCount": total, "pageCount": pages, "currentPage": page, "pageSize": size,
            "nextPage": link(page + 1) if page < pages else None,
            # spec: our choice — beyond the end, previousPage still points one page back
            "previousPage": link(page - 1) if page > 1 else None}}

    # ------------------------------------------------------------------ debtors
    def _post_debtor(self, tenant: _Tenant, data: dict, validate_only: bool,
                     lang: int) -> tuple[int, dict]:
        errors: dict[str, list[str]] = {}
        d: dict[str, Any] = {}

        def err(field: str, key: str, **kw) -> None:
            errors.setdefault(_pascal(field), []).append(_msg(lang, key, f=_pascal(field), **kw))

        for field in DEBTOR_FIELDS:
            v = data.get(field)
            if field == "debtorKindId":
                if v is None:
                    v = 1  # spec: our choice — consumer when not given
                elif isinstance(v, bool) or not isinstance(v, int):
                    err(field, "type_int")
                    continue
                elif v not in DEBTOR_KINDS:
                    err(field, "debtor_kind", v=v)
                d[field] = v
                continue
            if v is None or (isinstance(v, str) and v.strip() == ""):
                if field in ("customerNumber", "name"):
                    err(field, "required")
                d[field] = None
                continue
            if not isinstance(v, str):  # spec: our choice — numbers are not coerced to strings
                err(field, "type_string")
                continue
            if len(v) > MAX_LEN[field]:
                err(field, "too_long", n=MAX_LEN[field])
            if field == "emailAddress" and not _EMAIL_RE.match(v):
                err(field, "email", v=v)
            if field == "countryCode" and v not in ISO_COUNTRIES:  # strict: upper case ISO-2
                err(field, "country", v=v)
            if field == "vatNumber" and not _VAT_RE.match(v):
                err(field, "vat_number", v=v)
            d[field] = v
        with self._lock:
            cn = d.get("customerNumber")
            if cn and any(x.get("customerNumber") == cn for x in tenant.debtors.values()):
                err("customerNumber", "duplicate_customer", v=cn)
            if errors:
                raise Problem(400, errors=errors)
            if validate_only:  # spec: our choice — 200 with the would-be object, id null
                return 200, {"id": None, **d}
            did = self._next_debtor_id
            self._next_debtor_id += 1
            obj = {"id": did, **d}
            tenant.debtors[did] = obj
            self.created_debtors.append(_copy(obj))
            return 201, _copy(obj)

    # ------------------------------------------------------------------ invoices
    def _post_invoice(self, tenant: _Tenant, data: dict, validate_only: bool,
                      lang: int) -> tuple[int, dict]:
        errors: dict[str, list[str]] = {}

        def err(field: str, key: str, **kw) -> None:
            errors.setdefault(field, []).append(_msg(lang, key, f=field, **kw))

        # date
        date = None
        v = data.get("date")
        if v is None or v == "":
            err("Date", "required")
        elif not isinstance(v, str):
            err("Date", "date", v=v)
        else:
            m = _DATE_RE.match(v)
            try:
                date = _dt.date.fromisoformat(m.group(1)) if m else None
            except ValueError:
                date = None
            if date is None:
                err("Date", "date", v=v)
        description = self._req_str(data, "description", "Description", MAX_LEN["description"],
                                    err)
        cn = self._req_str(data, "debtorCustomerNumber", "DebtorCustomerNumber",
                           MAX_LEN["customerNumber"], err)
        debtor = None
        with self._lock:
            if cn is not None:
                debtor = next((x for x in tenant.debtors.values()
                               if x.get("customerNumber") == cn), None)
                if debtor is None:
                    err("DebtorCustomerNumber", "unknown_debtor", v=cn)
        journal_id = self._ref(data, "journalId", "JournalId", self.journals, "unknown_journal",
                               err, required=True)
        if journal_id is not None:
            j = next(x for x in self.journals if x["id"] == journal_id)
            if j.get("type", "Sales") != "Sales":  # spec: our choice
                err("JournalId", "not_sales_journal", v=journal_id)
        # spec: our choice — optional (null = the debtor's/administration's default)
        pc_id = self._ref(data, "paymentConditionId", "PaymentConditionId",
                          self.payment_conditions, "unknown_payment_condition", err,
                          required=False)
        lines_in = data.get("lines")
        raw_lines = None
        if lines_in is None:
            err("Lines", "no_lines")
        elif not isinstance(lines_in, dict) or not isinstance(lines_in.get("_data"), list):
            err("Lines", "lines_shape")
        elif not lines_in["_data"]:
            err("Lines", "no_lines")
        else:
            raw_lines = lines_in["_data"]
        lines: list[dict] = []
        for i, ln in enumerate(raw_lines or []):
            p = f"Lines[{i}]"
            if not isinstance(ln, dict):
                errors.setdefault(p, []).append(_msg(lang, "body_object"))
                continue
            ldesc = self._req_str(ln, "description", f"{p}.Description",
                                  MAX_LEN["lineDescription"], err)
            amount = self._money(ln, "amount", f"{p}.Amount", err)
            vat_amount = self._money(ln, "vatAmount", f"{p}.VatAmount", err)
            code = self._vat_code(ln.get("vatCode"), f"{p}.VatCode", date, err)
            ledger = self._ref(ln, "ledgerAccountId", f"{p}.LedgerAccountId",
                               self.ledger_accounts, "unknown_ledger", err, required=True)
            if ledger is not None:
                acc = next(x for x in self.ledger_accounts if x["id"] == ledger)
                if acc.get("type", "Revenue") != "Revenue":  # spec: our choice
                    err(f"{p}.LedgerAccountId", "not_revenue_ledger", v=ledger)
            if code is not None and amount is not None and vat_amount is not None:
                expected = (amount * Decimal(str(code["percentage"])) / 100).quantize(Decimal("0.01"))
                if abs(vat_amount - expected) > self.vat_tolerance:
                    err(f"{p}.VatAmount", "vat_amount", v=_fmt2(vat_amount),
                        p=code["percentage"], a=_fmt2(amount), e=_fmt2(expected))
            lines.append({"description": ldesc, "amount": amount, "vatAmount": vat_amount,
                          "vatCode": code["salesCode"] if code else None,
                          "vatCodeId": code["id"] if code else None,
                          "ledgerAccountId": ledger})
        if errors:
            raise Problem(400, errors=errors)
        # no errors: a bad or missing date and an unknown or missing debtor each added one
        assert date is not None and debtor is not None
        total = sum((ln["amount"] for ln in lines), Decimal("0.00"))
        vat = sum((ln["vatAmount"] for ln in lines), Decimal("0.00"))
        obj: dict[str, Any] = {
            "id": None, "invoiceNumber": None, "status": STATUS_CONCEPT,
            "date": date.isoformat(),  # spec: our choice — echoed as yyyy-MM-dd
            "description": description, "debtorId": debtor["id"], "debtorCustomerNumber": cn,
            "journalId": journal_id, "paymentConditionId": pc_id,
            "totalAmountExclVat": _q2(total), "totalVatAmount": _q2(vat),
            "totalAmountInclVat": _q2(total + vat), "lines": {"_data": []}}
        with self._lock:
            if validate_only:  # spec: our choice — 200 with the would-be invoice, ids null
                obj["lines"]["_data"] = [{"id": None, **ln} for ln in lines]
                return 200, obj
            iid = self._next_invoice_id
            self._next_invoice_id += 1
            obj["id"] = iid
            obj["lines"]["_data"] = [{"id": iid * 100 + n, **ln} for n, ln in enumerate(lines, 1)]
            tenant.invoices[iid] = obj
            self.created_invoices.append(_copy(obj))
            return 201, _copy(obj)

    @staticmethod
    def _req_str(data: dict, key: str, field: str, maxlen: int, err) -> str | None:
        v = data.get(key)
        if v is None or (isinstance(v, str) and not v.strip()):
            err(field, "required")
            return None
        if not isinstance(v, str):
            err(field, "type_string")
            return None
        if len(v) > maxlen:
            err(field, "too_long", n=maxlen)
            return None
        return v

    @staticmethod
    def _ref(data: dict, key: str, field: str, table: list[dict], unknown: str, err,
             required: bool) -> int | None:
        v = data.get(key)
        if v is None:
            if required:
                err(field, "required")
            return None
        if isinstance(v, bool) or not isinstance(v, int):
            err(field, "type_int")
            return None
        if not any(x["id"] == v for x in table):
            err(field, unknown, v=v)
            return None
        return v

    @staticmethod
    def _money(data: dict, key: str, field: str, err) -> Decimal | None:
        v = data.get(key)
        if v is None:
            err(field, "required")
            return None
        # spec: our choice — JSON numbers only (no strings), at most 2 decimals
        if isinstance(v, bool) or not isinstance(v, (int, Decimal)):
            err(field, "type_number")
            return None
        d = Decimal(v)
        if d != d.quantize(Decimal("0.01")):
            err(field, "decimals")
            return None
        return d.quantize(Decimal("0.01"))

    def _vat_code(self, v: Any, field: str, date: _dt.date | None, err) -> dict | None:
        if v is None or v == "":
            err(field, "required")
            return None
        code = None
        # spec: our choice — the salesCode string, or the code's integer id
        if isinstance(v, str):
            code = next((c for c in self.vat_codes if c.get("salesCode") == v), None)
            if code is None and v.isdigit():
                code = next((c for c in self.vat_codes if c["id"] == int(v)), None)
        elif isinstance(v, int) and not isinstance(v, bool):
            code = next((c for c in self.vat_codes if c["id"] == v), None)
        if code is None:
            err(field, "unknown_vat_code", v=v)
            return None
        if not code.get("salesCode"):
            err(field, "not_sales_vat_code", v=v)
            return None
        if date is not None:
            frm, until = code.get("validFrom"), code.get("validUntil")
            if (frm and date < _dt.date.fromisoformat(frm[:10])) or \
                    (until and date > _dt.date.fromisoformat(until[:10])):
                err(field, "vat_code_date", v=v, d=date.isoformat(), a=frm or "…", b=until or "…")
                return None
        return code


# ---------------------------------------------------------------------- helpers
def _msg(lang: int, key: str, **kw: Any) -> str:
    return _MESSAGES[key][lang].format(**kw)


def _pascal(name: str) -> str:
    return name[:1].upper() + name[1:]


def _q2(d: Decimal) -> Decimal:
    return d.quantize(Decimal("0.01"))


def _fmt2(d: Decimal) -> str:
    return format(_q2(d), "f")


def _query(query: str) -> dict[str, str]:
    # spec: our choice — parameter names case-insensitive (ASP.NET binding); last one wins;
    # unknown parameters ignored
    return {k.lower(): v for k, v in urllib.parse.parse_qsl(query, keep_blank_values=True)}


def _replace_paging(query: str, page: int, size: int) -> str:
    """Keep other parameters (raw encoding, order); set page/pageSize, appended if absent."""
    out, seen_page, seen_size = [], False, False
    for piece in query.split("&") if query else []:
        name = urllib.parse.unquote_plus(piece.partition("=")[0]).lower()
        if name == "page":
            if not seen_page:
                out.append(f"page={page}")
                seen_page = True
        elif name == "pagesize":
            if not seen_size:
                out.append(f"pageSize={size}")
                seen_size = True
        elif piece:
            out.append(piece)
    if not seen_page:
        out.append(f"page={page}")
    if not seen_size:
        out.append(f"pageSize={size}")
    return "&".join(out)


def _json_object(body: bytes, lang: int) -> dict:
    try:
        data = json.loads(body.decode("utf-8") or "null", parse_float=Decimal)
    except (UnicodeDecodeError, ValueError):
        raise Problem(400, errors={"$": [_msg(lang, "body_json")]}) from None
    if not isinstance(data, dict):
        raise Problem(400, errors={"$": [_msg(lang, "body_object")]})
    return data


def _dumps(obj: Any) -> str:
    """Compact JSON; ``Decimal`` as a plain number (``12.10``) without float rounding."""
    if isinstance(obj, Decimal):
        return format(obj, "f")
    if isinstance(obj, dict):
        return "{" + ",".join(json.dumps(str(k), ensure_ascii=False) + ":" + _dumps(v)
                              for k, v in obj.items()) + "}"
    if isinstance(obj, (list, tuple)):
        return "[" + ",".join(_dumps(v) for v in obj) + "]"
    return json.dumps(obj, ensure_ascii=False)


def _copy(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _copy(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_copy(v) for v in obj]
    return obj


# ---------------------------------------------------------------------- demo entry points
@contextmanager
def asperion_sandbox(**kwargs: Any) -> Iterator[dict[str, Any]]:
    """A running simulator with demo credentials; yields ``url``, ``client_id``,
    ``client_secret``, ``refresh_token``, ``tenant`` (and ``simulator``, the object)."""
    kwargs.setdefault("clients", {DEMO_CLIENT_ID: DEMO_CLIENT_SECRET})
    kwargs.setdefault("refresh_tokens", {DEMO_REFRESH_TOKEN: DEMO_CLIENT_ID})
    kwargs.setdefault("tenants", {DEMO_TENANT})
    sim = AsperionSimulator(**kwargs)
    client_id = next(iter(sim.clients))
    refresh = next(t for t, c in sim.refresh_tokens.items() if c == client_id)
    sim.start()
    try:
        yield {"url": sim.url, "client_id": client_id, "client_secret": sim.clients[client_id],
               "refresh_token": refresh, "tenant": sim.tenants[0], "simulator": sim}
    finally:
        sim.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m engine.simulators.asperion",
                                 description="Asperion REST API simulator (loopback)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="port (default 0 = ephemeral)")
    ap.add_argument("--client-id", default=DEMO_CLIENT_ID)
    ap.add_argument("--client-secret", default=DEMO_CLIENT_SECRET)
    ap.add_argument("--refresh-token", default=DEMO_REFRESH_TOKEN)
    ap.add_argument("--tenant", action="append", help=f"tenant id (repeatable; default {DEMO_TENANT})")
    ap.add_argument("--token-lifetime", type=float, default=3600)
    ap.add_argument("--no-rotate", action="store_true",
                    help="keep refresh tokens valid after use (default: one-time use)")
    a = ap.parse_args(argv)
    tenants = a.tenant or [DEMO_TENANT]
    sim = AsperionSimulator(clients={a.client_id: a.client_secret},
                            refresh_tokens={a.refresh_token: a.client_id}, tenants=tenants,
                            token_lifetime=a.token_lifetime, rotate_refresh_tokens=not a.no_rotate,
                            host=a.host, port=a.port)
    sim.start()
    print(f"Asperion simulator at {sim.url}", flush=True)
    print(f"  token url: {sim.token_url}   api: {sim.url}/v1/", flush=True)
    print(f"  client_id: {a.client_id}   client_secret: {a.client_secret}", flush=True)
    print(f"  refresh_token: {a.refresh_token}"
          f"{'' if a.no_rotate else '  (one-time use: store the rotated one)'}", flush=True)
    print(f"  X-Tenant-Id: {', '.join(tenants)}", flush=True)
    sim.serve_until_interrupted()
    return 0


if __name__ == "__main__":
    sys.exit(main())
