"""Builds schemas/mapping.schema.json (JSON Schema 2020-12) for the mapping files.

Edit this file, then run `python schemas/build_schema.py`; a test checks that the JSON is current.
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's engine
from engine.io.http.auth import auth_schema  # noqa: E402
from engine.io.http.pagination import paginate_schema  # noqa: E402

EXPR = {"type": ["string", "boolean", "number"], "description": "A Jinja expression without {{ }}, e.g. record.total_price or record.status != 8."}
TMPL = {"type": ["string", "number"], "description": "A text template: literal text with {{ expressions }} and {% if %} blocks."}
def obj(props, required=(), desc=None, **kw):
    d = {"type": "object", "additionalProperties": False, "properties": props}
    if required: d["required"] = list(required)
    if desc: d["description"] = desc
    d.update(kw)
    return d
def e(desc): return dict(EXPR, description=desc + " (expression)")
def t(desc): return dict(TMPL, description=desc + " (template)")
num = {"type": "number", "exclusiveMinimum": 0}
# The auth kinds and paginators come from the engine's registries (register_auth,
# register_paginator): each kind declares its own options, and the loader overlays the
# registries as they are at run time (engine/config/schema_check.py), so a kind registered
# later is accepted there too.
paginate = {"$ref": "#/$defs/paginate"}
request = obj({
    "path": t("Path under base_url"),
    "params": {"type": "object", "additionalProperties": TMPL, "description": "Query parameters (templates; an empty result drops the parameter)."},
    "items": {"type": "string", "description": "Key of the list of records in a page."},
    "paginate": paginate,
}, ["path"])
expand = {"type": "object", "description": "Per record, a sub-request whose items are attached under this key.",
          "additionalProperties": request}
records = dict(request)
records = obj(dict(request["properties"], expand=expand,
                   id={"type": "string", "description": "Key of the id records are deduplicated by (default id)."}),
              ["path", "items"], "The list endpoint that yields the records.")
auth = {"$ref": "#/$defs/auth"}
http = obj({
    "name": {"type": "string", "description": "What to call the server in messages, e.g. CCV Shop."},
    "auth_hint": {"type": "string", "description": "Added to a refused-credentials message: what to check."},
    "base_url": {"type": "string", "description": "https://… (plain http only on loopback)."},
    "headers": {"type": "object", "additionalProperties": {"type": "string"}},
    "timeout": {"description": "Seconds: one number for both, or {connect, read}.",
                "oneOf": [num, obj({"connect": num, "read": num})]},
    "retries": obj({"attempts": {"type": "integer", "minimum": 1}, "backoff": num, "max_backoff": num},
                   desc="Retries of 5xx, timeouts and dropped connections (exponential backoff with jitter)."),
    "auth": auth,
    "rate_limit": obj({"requests": {"type": "integer", "minimum": 1}, "per_seconds": num, "resource_prefix": {"type": "string"},
                       "methods": {"type": "array", "items": {"type": "string"}, "description": "Methods the limit applies to (default GET)."}},
                      ["requests", "per_seconds"], "Client-side limit per resource (first path segment after resource_prefix)."),
    "on_429": obj({"wait": {"description": "next_window (wait for the next rate window) or a number of seconds.",
                            "oneOf": [{"const": "next_window"}, num]},
                   "attempts": {"type": "integer", "minimum": 0},
                   "window_seconds": num, "margin": {"type": "number", "minimum": 0}},
                  desc="On 429: wait, then try again (never relying on Retry-After)."),
    "not_found": obj({"status": {"type": "array", "items": {"type": "integer"}}, "codes": {"type": "array", "items": {"type": "string"}}}),
    "error_body": obj({"code": {"type": "string"}, "message": {"type": "string"}}),
}, ["base_url", "auth"], "The shop's REST API.")
source = obj({"http": http, "records": records,
              "lookup": obj({"path": t("Path of one record by {{ id }}"),
                             "params": {"type": "object", "additionalProperties": TMPL},
                             "item": {"type": "string", "description": "Where the record is in the answer (dotted key; default the answer itself)."}},
                            ["path"], "Fetch one record by id (webhook hints)."),},
             desc="Where records come from. `mapper dry-run --fixtures DIR` reads a directory instead.")
element = {"$ref": "#/$defs/element"}
element_def = obj({
    "element": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_.-]*$", "description": "The XML element name."},
    "attributes": {"type": "object", "additionalProperties": TMPL, "description": "Attribute name -> template.",
                   "propertyNames": {"pattern": "^[A-Za-z_][A-Za-z0-9_.-]*$"}},
    "text": t("The element's text"),
    "children": {"type": "array", "items": element},
    "for_each": e("A list: the element repeats once per item"),
    "as": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$", "description": "Name of the item inside for_each (default: item)."},
    "when": e("The element is written only when this is true"),
    "with": {"type": "object", "additionalProperties": EXPR, "description": "Extra names for this element and its children (expressions)."},
    "optional": {"type": "boolean", "description": "Leave the element out when its text is empty."},
    "records": {"type": "boolean", "description": "The records' elements are streamed into this element (document only, exactly once)."},
}, ["element"], "An XML element.")
vat_rule = obj({
    "rate": {"type": "number", "description": "VAT percentage as charged."},
    "class": {"type": "string", "description": "The VAT class written for lines at this rate."},
    "from": {"type": "string", "format": "date", "description": "First invoice date the rule applies to (YYYY-MM-DD)."},
    "until": {"type": "string", "format": "date", "description": "Last invoice date the rule applies to."},
    "when": e("An extra condition, e.g. record.is_intra_community_order"),
    "flag": t("Send the order but tell the bookkeeper this"),
}, ["rate", "class"])
lines = obj({
    "each": e("The list of goods rows"), "as": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
    "description": t("Line text"), "article_code": t("Article code"),
    "quantity": e("Quantity (may be fractional or negative)"), "amount": e("The row's total as charged"),
    "rate": e("The row's VAT percentage"),
    "limits": obj({"max_quantity": num, "max_amount": num},
                  desc="Rows that make no sense quarantine the order: quantity 0 with an amount, quantity and amount of opposite signs, and a quantity or amount (either sign) beyond these limits."),
}, ["each", "description", "quantity", "amount", "rate"], "The goods rows.")
term = obj({"label": t("Line text"), "amount": e("The amount as charged; zero gives no line")}, ["label", "amount"])
invoice = obj({
    "description": t("Invoice description; carries the order number"),
    "date": t("Invoice date YYYY-MM-DD"),
    "payment_code": t("Payment method code"),
    "currency": e("ISO 4217 currency"),
    "prices_include_vat": e("True when charged amounts include VAT"),
    "lines": lines,
    "charges": {"type": "array", "items": term, "description": "Costs that follow the goods' VAT, split pro rata over the rates."},
    "discounts": {"type": "array", "items": term, "description": "Order-level discounts, split pro rata over goods and charges; one negative line per rate."},
    "allocation_basis": {"enum": ["incl", "excl"], "description": "Weigh the pro rata split by amounts incl. or excl. VAT."},
    "vat_rounding": {"enum": ["per_line", "per_rate"], "description": "Round VAT per line, or per rate total (never both)."},
    "total": e("What the customer paid; the lines must add up to it"),
    "tolerance": {"type": ["string", "number"], "pattern": "^[0-9]+(\\.[0-9]+)?$", "description": "A difference up to this becomes a rounding line; beyond it the order is quarantined."},
    "rounding_line": obj({"label": t("Line text"), "rate": {"type": "number"}, "vat_class": {"type": "string"}}, ["label", "vat_class"]),
    "reported_vat": e("The shop's VAT total: a difference is reported, not quarantined"),
    "surcharge_rate": e("When this gives a rate (not none), charges and discounts are booked at that one rate, as the shop charged them, instead of split pro rata"),
}, ["description", "date", "prices_include_vat", "lines", "total"], "How an order becomes invoice lines and totals.")
req_spec = lambda desc, with_body, with_match: obj(dict(
    {"path": t("Path under the API's base_url"),
     "params": {"type": "object", "additionalProperties": TMPL, "description": "Query parameters (templates)."}},
    **({"body": {"description": "The JSON body: objects, lists, templates, {expr: …}, {each: …, as: …, value: …}."}} if with_body else {}),
    **({"match": e("Whether a listed item is the one looked for (item is the candidate)")} if with_match else {})),
    ["path"] + (["body"] if with_body else []) + (["match"] if with_match else []), desc)
destination = obj({"api": obj({
    "http": dict(http, description="The API's client block: base URL, headers, auth (e.g. oauth2_refresh), retries, rate limit."),
    "list": obj({"items": {"type": "string"}, "next": {"type": "string"}}, desc="Where a list response keeps its items and its next page (dotted keys)."),
    "errors": obj({"fields": {"type": "string"}}, desc="Where a 400 answer lists its field messages (they become the quarantine reason)."),
    "references": {"type": "object", "additionalProperties": obj({"path": t("List path")}, ["path"]),
                   "description": "Lists fetched once per run, available to templates as refs.NAME."},
    "debtor": obj({"find": req_spec("Find a debtor; the first matching item counts.", False, True),
                   "number": e("The found debtor's number (over item)"), "name": e("The found debtor's name (over item)"),
                   "create": req_spec("Create an unknown debtor.", True, False)}, ["find", "number", "create"]),
    "invoice": obj({"find": req_spec("Find an object a crashed run may have created (adopted, not created again).", False, True),
                    "create": req_spec("Create the object for one record.", True, False),
                    "id": e("The created object's id (over result)"),
                    "original": obj({"number": e("A credited invoice's number, over the item invoice.find found (none: not yet numbered)"),
                                     "concept": e("Whether that invoice is still a concept (the credit note is flagged)")},
                                    ["number", "concept"], "What a credit note learns of the invoice it credits.")},
                   ["find", "create", "id"]),
}, ["http", "debtor", "invoice"], "A REST API that takes one object per record.")})

schema = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://mapper.invalid/schemas/mapping.schema.json",
    "title": "mapper mapping",
    "description": "A declarative mapping: where records come from, which count, how customers are matched and how the output document is built.",
    "type": "object", "additionalProperties": False,
    "required": ["version", "name", "record", "where", "customer", "invoice", "vat"],
    "anyOf": [{"required": ["output"]}, {"required": ["destination"]}],
    "properties": {
        "version": {"const": 1, "description": "Mapping format version."},
        "extends": {"type": "string", "description": "Another mapping file (relative to this one) to start from; this file's keys are laid over it, null removes a key."},
        "name": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]*$", "description": "Short name; keys the state of this mapping."},
        "source": source,
        "record": obj({"id": e("The record's unique id in the source"), "number": e("The number people know it by"),
                       "created": e("Creation timestamp (UTC), for --since/--until")}, ["id", "number", "created"]),
        "intake": obj({"look_back_days": {"type": "integer", "minimum": 1, "description": "Poll window: re-check records created this many days back."},
                       "webhooks": obj({"events": {"type": "array", "items": {"type": "string"}, "description": "Events that make a hint; others are answered 202 and ignored."},
                                        "id_field": {"type": "string", "description": "Key of the record id in the webhook body."},
                                        "default_event": {"type": "string", "description": "Event name when the body gives none (the address /hooks/TOKEN/EVENT names the event of its subscription)."},
                                        "max_body": {"type": "integer", "minimum": 256, "description": "Larger bodies are refused with 413."},
                                        "max_per_day": {"type": "integer", "minimum": 1, "description": "Hints kept per 24 hours (default 1000); past it the listener answers 429."},
                                        "max_pending": {"type": "integer", "minimum": 1, "description": "Hints kept at most in all (default 10000); past it the listener answers 429."},
                                        "max_lookups_per_run": {"type": "integer", "minimum": 0, "description": "Hinted orders a run looks up at most (default 500): the share of its requests hints may take; the rest wait for the next run."},
                                        "signature_key_env": {"type": "string", "pattern": "^[A-Z_][A-Z0-9_]*$", "description": "Variable holding the subscription's key: when set, every delivery must carry x-hash, HMAC-SHA512 of its body with that key."},
                                        "max_connections": {"type": "integer", "minimum": 1, "description": "Connections served at once (default 32); more are answered 503 and closed."},
                                        "request_seconds": {"type": "number", "exclusiveMinimum": 0, "description": "A request must arrive whole within this many seconds (default 15)."}},
                                       desc="`mapper listen`: webhooks are hints; each is re-fetched through the API before it counts.")}),
        "where": {"type": "array", "items": EXPR, "description": "All must be true for a record to count (expressions)."},
        "let": {"type": "object", "additionalProperties": EXPR, "propertyNames": {"pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
                "description": "Named values per record, computed in order (expressions)."},
        "customer": obj({"key": e("The matching key: the normalised e-mail"), "number": e("The debtor number; none when unknown"),
                         "fallback_number": e("Debtor number when number is none (guests)"),
                         "without_key": {"oneOf": [{"const": "quarantine"}, obj({"number": TMPL}, ["number"])],
                                         "description": "A record without a key: quarantine, or book it on a collective debtor."},
                         "name": t("Debtor name"),
                         "directory": obj({"kind": {"enum": ["in_file", "register", "api"], "description": "in_file: the same key gets the same number within a run; register: remembered across runs in the state (keyed e-mail hash); api: found in (or created through) destination.api."},
                                           "key_env": {"type": "string", "pattern": "^[A-Z_][A-Z0-9_]*$", "description": "Environment variable holding the secret key of the register's e-mail hashes."},
                                           "numbering": obj({"sequence": obj({"start": {"type": "integer", "minimum": 0}, "width": {"type": "integer", "minimum": 0, "maximum": 20}}, ["start"]),
                                                             "collisions": obj({"from": {"type": "integer", "minimum": 0}, "to": {"type": "integer", "minimum": 0}}, ["from", "to"],
                                                                               "A new customer whose proposed number is another's (an imported debtor) gets the next free number of this range; without it the order is quarantined.")},
                                                            desc="New debtors: the proposed number (default), or a sequence that never reuses a number.")},
                                          ["kind"], "Where known debtors are remembered.")},
                        ["key", "number", "name"], "Customer matching."),
        "invoice": invoice,
        "vat": obj({"classes": {"type": "array", "items": vat_rule, "minItems": 1, "description": "First matching rule wins; no match quarantines the order."}}, ["classes"]),
        "checks": {"type": "array", "items": obj({"name": {"type": "string"}, "when": e("Only check when"), "expect": e("Must be true"),
                                                  "message": t("The quarantine reason")}, ["name", "expect", "message"]),
                   "description": "A failing check quarantines the record with its message."},
        "flags": {"type": "array", "items": obj({"when": e("Flag when true"), "message": t("What to tell the bookkeeper")}, ["when", "message"])},
        "credit": obj({
            "from": {"type": "array", "minItems": 1, "description": "Where credits come from, in this order.", "items": obj({
                "name": {"type": "string", "description": "What this source is, in reports."},
                "list": request,
                "when": e("A delivered order seen again is credited when true (instead of list)"),
                "order": e("list: the item's order id"),
                "key": t("The credit's key within its order (order + key: booked once)"),
                "amount": e("What is credited incl. VAT, positive; none or absent: what is left of the order"),
                "created": e("When the credit was made (a timestamp; default: the run's now)"),
                "reference": t("What the credit note says it is (CreditNote/Reason)"),
            }, ["name", "key"])},
            "description": t("The credit invoice's description; sees credit.original (number, date, description)"),
            "date": t("The credit invoice's date, YYYY-MM-DD"),
            "partial_line": t("A partial credit's line per VAT rate; sees rate and vat_class"),
        }, ["from", "description", "date"], "Credit notes for delivered orders the shop refunds or cancels (bookkeeping 8.4)."),
        "variables": obj({"plain": {"type": "array", "items": {"type": "string", "pattern": "^[A-Z_][A-Z0-9_]*$"}, "description": "Variables besides MAPPER_/CCVSHOP_/ASPERION_ that ${VAR} may read."},
                          "secret": {"type": "array", "items": {"type": "string", "pattern": "^[A-Z_][A-Z0-9_]*$"}, "description": "Variables holding secrets: only in source.http.auth or destination.api.http.auth."}},
                         desc="What of the environment the mapping reads beyond the MAPPER_/CCVSHOP_/ASPERION_ settings."),
        "limits": obj({"seconds_per_record": {"type": "number", "exclusiveMinimum": 0, "maximum": 600,
                                              "description": "Time budget of one record's templates (default 2); past it the record is quarantined, the run goes on."}},
                      desc="What one record may cost. Texts and lists a template builds are capped at 1,000,000 characters or items."),
        "privacy": obj({"redact": {"type": "array", "items": e("A customer value never shown"),
                                   "description": "Values (VAT number, e-mail, name, …) replaced by <redacted> in every flag and quarantine reason: those reach stdout, the log, the run report and the state."}},
                       desc="What of a customer's data never leaves the converter in a message."),
        "tables": {"type": "object", "description": "Lookup tables available to templates as tables.NAME."},
        "output": obj({"xsd": {"type": "string", "description": "XSD every document part is validated against (relative to the mapping)."},
                       "per_file": {"type": "integer", "minimum": 1, "description": "At most this many records per file."},
                       "replace": {"type": "object", "additionalProperties": {"type": "string"}, "description": "Characters replaced in all text (default: typographic quotes to plain)."},
                       "document": element, "record": element}, ["document", "record"], "The XML document."),
        "preview": obj({"columns": {"type": "array", "items": obj({"title": {"type": "string"}, "text": TMPL, "amount": EXPR}, ["title"])}}),
        "sandbox": obj({"simulator": {"enum": ["ccvshop"], "description": "Which bundled simulator serves the demo data."},
                         "also": {"enum": ["asperion"], "description": "A second simulator for the destination; its values come as {asperion_url}, {asperion_client_id}, … ."},
                         "env": {"type": "object", "additionalProperties": {"type": "string"},
                                 "description": "Environment for the run: {url}, {public}, {secret} of the simulator, {tmpdir} a scratch directory."},
                         "since": {"type": "string", "format": "date", "description": "Window start for the demo data."}},
                        ["simulator"], "`--sandbox`: run against a bundled simulator with demo data, no credentials."),
        "plan": {"enum": ["basis", "plus"], "description": "basis: at most 250 invoices a calendar year (the rest is held); plus: unlimited. MAPPER_PLAN overrides."},
        "destination": destination,
        "sink": obj({"directory": obj({"path": {"type": "string", "description": "The outbox directory (MAPPER_OUTBOX or --outbox override it)."},
                                     "mode": {"type": "string", "pattern": "^0?[0-7]{3}$", "description": "File mode of the files written, octal (default \"0600\": they carry customer data; e.g. \"0640\" for a reading group). The directory is created 0700."},
                                       "name": t("File name, from batch.date, batch.seq, batch.id")}, ["path", "name"]),
                     "report": t("Where each run writes its JSON report, from run.id and run.started")}),
    },
    "$defs": {"element": element_def, "auth": auth_schema(), "paginate": paginate_schema()},
}
if __name__ == "__main__":
    from pathlib import Path
    target = Path(__file__).with_name("mapping.schema.json")
    target.write_text(json.dumps(schema, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
