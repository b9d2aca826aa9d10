"""A REST API as the destination: one object per record, each created exactly once.

Declared in the mapping under ``destination.api`` (see docs/mapping-reference.md):

* ``http``: the client block (base URL, headers, auth such as ``oauth2_refresh``, retries);
* ``list``: where a list response keeps its items and its next page;
* ``references``: lists fetched once per run (e.g. VAT codes), available as ``refs.NAME``;
* ``debtor``: ``find`` (GET + a ``match`` expression over each ``item``), ``number`` and
  ``name`` of a found item, and ``create`` (POST + body) for an unknown customer;
* ``invoice``: ``find`` (to adopt an object a crashed run may have created), ``create``
  (POST + body) and ``id`` (an expression over the ``result``).

Exactly once: before the POST the order is recorded as pending in the state; after it,
as delivered with the returned id. A POST that got no answer may have been processed, so
the order stays pending; a pending order (now, or from a crashed run) is first looked up
with ``invoice.find`` and adopted when found, never created twice.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any, Iterator

from engine.convert.customers import Match
from engine.errors import DeliveryError, OrderError
from engine.config.specs import ApiSpec, RequestSpec
from engine.expr.expressions import EvaluationError
from engine.expr.filters import fold_name
from engine.io.http.pagination import NextLinkPaginator
from engine.output.jsonbody import dumps
from engine.ops.state import OrderRef

FIELD_ERRORS_SHOWN = 5


class ApiDestination:
    """The compiled ``destination.api`` block plus an HTTP client for it."""

    def __init__(self, mapping: Any, *, client: Any = None, clock=None, sleep=None):
        """``mapping``: a LoadedMapping with ``destination`` (compiled at load: engine.config.specs.ApiSpec)."""
        self.m = mapping
        self.spec: ApiSpec = mapping.destination
        self._client = client
        self._clock, self._sleep = clock, sleep
        self.calls = {"GET": 0, "POST": 0}

    @property
    def name(self) -> str:
        """What to call the API in messages (``http.name``)."""
        return self.m.destination_http().name or "the API"

    # -- HTTP -------------------------------------------------------------------------------
    @property
    def client(self):
        if self._client is None:
            from engine.io.http.client import HttpClient
            self._client = HttpClient(self.m.destination_http(), clock=self._clock, sleep=self._sleep)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def get_all(self, path: str, params: dict[str, str] | None = None) -> Iterator[Any]:
        """Every item of a list, page after page, with the shop paginator's loop guard (a page
        link that comes back a second time, or more than max_pages pages, stops with an error)."""
        pager = NextLinkPaginator({"next": self.spec.next_key} if self.spec.next_key else {})
        request = pager.first(path, tuple((params or {}).items()))
        page = self._call("GET", path, params=params)
        while True:
            items = (page.get(self.spec.items_key, []) if isinstance(page, dict) else page) or []
            yield from items
            if not self.spec.next_key:
                return
            following = pager.next(page, request, items)
            if following is None or following.url is None:   # next_link pages are absolute URLs
                return
            request = following
            page = self._call("GET", following.url)

    def _call(self, method: str, path: str, params=None, body=None) -> Any:
        self.calls[method] = self.calls.get(method, 0) + 1
        return self.client.request(method, path, params, body=body)

    def _find(self, req: RequestSpec, match, ctx) -> Any:
        params = {k: t(ctx) for k, t in req.params.items()}
        for item in self.get_all(req.path(ctx), params):
            if match(dict(ctx, item=item)):
                return item
        return None

    # -- references -------------------------------------------------------------------------
    def load_references(self) -> dict[str, list[Any]]:
        return {name: list(self.get_all(path({}))) for name, path in self.spec.references.items()}

    # -- invoices ---------------------------------------------------------------------------
    def find_invoice(self, ctx) -> str | None:
        found = self._find(self.spec.invoice_find, self.spec.invoice_match, ctx)
        return None if found is None else str(self.spec.invoice_id(dict(ctx, result=found)))

    def original_invoice(self, ctx) -> dict[str, Any] | None:
        """For a credit note: the credited invoice as the destination has it (``ctx`` as when it
        was booked): its number once processed, whether it is still a concept; ``missing`` when
        it is not found there. None when the mapping does not declare ``invoice.original``."""
        if self.spec.original is None:
            return None
        found = self._find(self.spec.invoice_find, self.spec.invoice_match, ctx)
        if found is None:
            return {"missing": True}
        item = dict(ctx, item=found)
        number = self.spec.original["number"](item)
        return {"number": None if number in (None, "") else str(number),
                "concept": bool(self.spec.original["concept"](item))}

    def body(self, req: RequestSpec, ctx) -> Any:
        """The request body for one record; a template failure quarantines the record."""
        assert req.body is not None   # a create request declares its body (the schema requires it)
        try:
            return req.body(ctx)
        except EvaluationError as exc:
            raise OrderError(f"destination.api body: {exc}", field="destination.api") from None

    def create(self, req: RequestSpec, ctx) -> Any:
        from engine.io.http.client import HttpError
        body = dumps(self.body(req, ctx))
        try:
            return self._call("POST", req.path(ctx), body=body), body
        except HttpError as exc:
            if exc.status == 400:
                raise OrderError(self._field_errors(exc), field="destination") from None
            raise

    def _field_errors(self, exc) -> str:
        payload = exc.payload if isinstance(exc.payload, dict) else {}
        fields = payload.get(self.spec.field_errors_key) or {}
        parts = [f"{k}: {'; '.join(map(str, v if isinstance(v, list) else [v]))}" for k, v in list(fields.items())[:FIELD_ERRORS_SHOWN]]
        title = payload.get("title") or payload.get("detail") or exc.detail or "refused"
        return f"the API refused it ({title})" + (": " + " | ".join(parts) if parts else "")


class ApiDebtorMatcher:
    """Debtors through the API: find by e-mail (exact after normalising), else create.

    Existing debtors are never updated. In read-only mode (dry-run) nothing is created.
    """

    def __init__(self, dest: ApiDestination, *, readonly: bool):
        self.dest = dest
        self.readonly = readonly
        self.seen: dict[str, tuple[str, str]] = {}
        self.created = 0

    def flush(self, before_delivery: bool = True) -> None:
        pass  # created in Asperion as matched

    def match(self, key: str, proposed_number: str, name: str, ctx: dict | None = None) -> Match:
        hit = self.seen.get(key)
        if hit is not None:
            return self._known(hit, name)
        ctx = dict(ctx or {}, customer={"key": key, "number": proposed_number, "name": name})
        try:
            found = self.dest._find(self.dest.spec.debtor_find, self.dest.spec.debtor_match, ctx)
            if found is not None:
                item_ctx = dict(ctx, item=found)
                number = str(self.dest.spec.debtor_number(item_ctx))
                existing = str(self.dest.spec.debtor_name(item_ctx)) if self.dest.spec.debtor_name else name
                self.seen[key] = (number, fold_name(existing))
                return self._known((number, fold_name(existing)), name)
            if self.readonly:
                self.seen[key] = (f"new:{proposed_number}", fold_name(name))
                return Match(f"new:{proposed_number}", known=False)
            result, _ = self.dest.create(self.dest.spec.debtor_create, ctx)
            self.created += 1
        except EvaluationError as exc:
            raise OrderError(f"destination.api.debtor: {exc}", field="destination.api.debtor") from None
        self.seen[key] = (proposed_number, fold_name(name))
        return Match(proposed_number, known=False)

    @staticmethod
    def _known(hit: tuple[str, str], name: str) -> Match:
        number, folded = hit
        if folded and fold_name(name) != folded:
            return Match(number, True, (f"e-mail belongs to debtor {number} under another name: booked on "
                                        f"{number}, the debtor was not changed",))
        return Match(number, True)


class ApiSink:
    """Delivers each converted record as one created object (see the module docstring)."""

    pending = 0  # nothing is held back: every record is delivered when accepted

    def __init__(self, dest: ApiDestination, store: Any, mapping_name: str, now, run_id: int | None = None):
        self.dest = dest
        self.store = store
        self.before_delivery = lambda: None  # as DirectorySink's (API debtors are created remotely: nothing)
        self.name = mapping_name
        self.now = now
        self.run_id = run_id
        self.suspects: dict[str, str] = {}  # shop id -> pending batch id (maybe created already)
        self.adopted = 0
        self.created: list[str] = []
        self.refs: dict[str, list[Any]] = {}

    @property
    def files(self) -> list[str]:
        """Nothing is written to files: the run reports the created objects' ids instead."""
        return []

    def prepare(self) -> None:
        self.refs = self.dest.load_references()

    def recover(self) -> dict[str, int]:
        pending = self.store.pending_batches(self.name)
        for batch in pending:
            for ref in batch.orders:
                self.suspects[ref.shop_id] = batch.id
                self.store.add_hint(self.name, ref.shop_id, "verify", self.now())
        return {"recovered": 0, "redone": len(pending)}

    def accept(self, outcome) -> list[str]:
        self.deliver(outcome, dict(outcome.context, refs=self.refs))
        return [outcome.shop_id]

    def finish(self) -> list[str]:
        return []

    def close(self) -> None:
        self.dest.close()

    def deliver(self, outcome, ctx: dict[str, Any]) -> str:
        """Create (or adopt) the object for one record; returns its remote id."""
        shop_id = outcome.shop_id
        batch_id = self.suspects.pop(shop_id, None)
        if batch_id is not None:
            found = self.dest.find_invoice(ctx)
            if found is not None:
                self.store.mark_delivered(batch_id, _checksum(found), self.now(), remote_id=found)
                self.adopted += 1
                return found
        else:
            batch_id = f"{self.name}-api-{shop_id}-{uuid.uuid4().hex[:8]}"
            self.before_delivery()
            self.store.create_batch(self.name, batch_id, f"api:{outcome.number}",
                                    [OrderRef(shop_id, outcome.number, outcome.invoice.date)], created_at=self.now(),
                                    run_id=self.run_id)
        from engine.io.http.client import AmbiguousWrite
        try:
            result, body = self.dest.create(self.dest.spec.invoice_create, ctx)
        except OrderError:
            self.store.discard_batch(batch_id, self.now())
            raise
        except AmbiguousWrite as exc:
            found = self.dest.find_invoice(ctx)
            if found is None:
                self.suspects[shop_id] = batch_id  # stays pending: the next run checks again
                raise DeliveryError(f"order {outcome.number}: creating it gave no clear answer ({exc.message}); "
                                    f"the next run looks it up first and finishes it") from None
            result, body = {"id": found}, found
        remote_id = str(self.dest.spec.invoice_id(dict(ctx, result=result)))
        self.store.mark_delivered(batch_id, _checksum(body), self.now(), remote_id=remote_id)
        self.created.append(remote_id)
        return remote_id


def _checksum(text: str) -> str:
    return hashlib.sha256(str(text).encode("utf-8")).hexdigest()


class BodyPreview:
    """dry-run for an API destination: the bodies that would be posted, as JSON lines."""

    def __init__(self, dest: ApiDestination, refs: dict[str, list[Any]]):
        import tempfile
        self.dest = dest
        self.refs = refs
        self.count = 0
        self._spool = tempfile.SpooledTemporaryFile(max_size=4 * 1024 * 1024)

    def add(self, outcome) -> None:
        """Raises OrderError when the body cannot be built (the preview shows it quarantined)."""
        body = self.dest.body(self.dest.spec.invoice_create, dict(outcome.context, refs=self.refs))
        self._spool.write(dumps(body).encode("utf-8") + b"\n")
        self.count += 1

    def write(self, out, batch: dict[str, Any]) -> None:
        self._spool.seek(0)
        while chunk := self._spool.read(1 << 16):
            out.write(chunk)
        self._spool.close()
