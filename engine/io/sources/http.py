"""A record source over a paginated JSON HTTP API, configured entirely by the mapping.

    source = HttpSource(spec, render)       # spec: the mapping's SourceSpec (engine.config.specs)
    for record in source.records({"start": "2026-01-01", "end": "2026-01-31"}):
        ...
    source.lookup("340377945")              # one record (with expansions) or None

* ``records.path`` / ``records.params`` are templates rendered with ``{"window": window}``;
  a parameter that renders empty is dropped (so an absent window start drops
  ``min_create_date``). Parameter order is the declared order.
* ``records.items`` is where the list sits in a page (dotted path; empty = the page is the
  list); ``records.paginate`` picks a paginator (see :mod:`engine.io.http.pagination`).
* ``records.expand`` declares sub-lists fetched per record, e.g. order rows; each is attached
  under its key as a LIST of items (``record["orderrows"] = [...]``), replacing whatever link
  object the server put there -- an HTTP record then has the same shape as a fixture record.
  Expansion templates see ``record`` and ``window``.
* Records are deduplicated by ``records.id`` (default ``id``) within one source instance.
* ``lookup.path`` is rendered with ``{"id": id}``; a ``not_found`` answer gives ``None``.

Streaming: pages in, records out; only the ids seen are kept.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterator, Mapping
from urllib.parse import quote

from engine.config.specs import ListSpec, SourceSpec
from engine.errors import SourceError
from engine.io.http.client import HttpClient, NotFound
from engine.io.http.spec import HttpSpec
from engine.io.sources import BrokenRecord
from engine.io.http.pagination import PageRequest, PaginationError, build_paginator, dig

__all__ = ["HttpSource", "ShapeError"]

log = logging.getLogger("engine.io.sources.http")

Render = Callable[[str, dict], str]


class ShapeError(SourceError):
    """A page or record did not have the declared shape."""


class HttpSource:
    """Records from an HTTP API, as declared by a mapping's source configuration."""

    def __init__(self, spec: SourceSpec | Mapping[str, Any], render: Render, *, clock=None, sleep=None,
                 client: HttpClient | None = None):
        """``spec``: the mapping's ``source`` read (:class:`SourceSpec`), or the section itself."""
        if not isinstance(spec, SourceSpec):
            spec = SourceSpec.from_config(spec)
        self._render = render
        self.client = client or HttpClient(spec.http or HttpSpec(), clock=clock, sleep=sleep)
        if spec.records is None:
            raise ValueError("source: records.path is required")
        self.records_spec = spec.records
        self.lookup_spec = spec.lookup
        self.id_field = spec.records.id
        self._seen: set[str] = set()
        self._counts = {"pages": 0, "records": 0, "duplicates": 0, "expansions": 0}

    # -- public API -----------------------------------------------------------------------
    @property
    def stats(self) -> dict:
        """Requests made, 429s received, retries, pages, records, duplicates skipped."""
        out = dict(self.client.stats)
        out.update(self._counts)
        return out

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> "HttpSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<HttpSource {self.records_spec.path!r} via {self.client!r}>"

    def records(self, window: Mapping[str, Any] | None = None) -> Iterator[dict | BrokenRecord]:
        """Yield every record of the declared list for ``window``, with expansions attached,
        each ``id`` at most once per source instance."""
        ctx = {"window": _window_context(window)}
        spec = self.records_spec
        path = self._render(spec.path, ctx)
        params = self._params(spec.params, ctx)
        for item in self._walk(path, params, spec.items, spec.paginate, what="records"):
            if not isinstance(item, dict):
                raise ShapeError(f"a page of {path} holds a {type(item).__name__} where a "
                                  f"record object was expected")
            rid = item.get(self.id_field)
            if rid is None:
                raise ShapeError(f"a record from {path} has no '{self.id_field}' field")
            key = str(rid)
            if key in self._seen:
                self._counts["duplicates"] += 1
                continue
            self._seen.add(key)
            try:
                self._expand(item, ctx)
            except NotFound as exc:  # e.g. deleted between the list and its rows: one record, not the run
                self._counts["records"] += 1
                yield BrokenRecord(key, f"record {key}: {exc.message}; it is fetched again next run")
                continue
            self._counts["records"] += 1
            yield item

    def list_items(self, request: ListSpec, window: Mapping[str, Any] | None = None) -> Iterator[Any]:
        """Every item of another declared list (templates seeing ``window``), e.g. the credits
        of ``credit.from``; not deduplicated."""
        ctx = {"window": _window_context(window)}
        path = self._render(request.path, ctx)
        params = self._params(request.params, ctx)
        yield from self._walk(path, params, request.items, request.paginate, what=path)

    def lookup(self, id: Any) -> dict | BrokenRecord | None:  # noqa: A002 - the natural name
        """One record by id, with its expansions, or ``None`` when the server says not found
        (a :class:`BrokenRecord` when the record is there but an expansion is not)."""
        spec = self.lookup_spec
        if spec is None:
            raise ValueError("source: lookup.path is required for lookups")
        # The id comes from outside (a webhook hint): quote it so it cannot change the path.
        ctx = {"id": quote(str(id), safe=""), "window": _window_context(None)}
        path = self._render(spec.path, ctx)
        params = self._params(spec.params, ctx)
        data = self.client.get(path, params, allow_missing=True)
        if data is None:
            return None
        record = dig(data, spec.item) if spec.item else data
        if not isinstance(record, dict):
            raise ShapeError(f"the lookup of {path} returned a {type(record).__name__}, "
                              f"not a record object")
        try:
            self._expand(record, ctx)
        except NotFound as exc:
            return BrokenRecord(str(id), f"record {id}: {exc.message}; it is fetched again next run")
        return record

    # -- internals ------------------------------------------------------------------------
    def _params(self, params: Mapping[str, Any], ctx: dict) -> list[tuple[str, str]]:
        out = []
        for name, value in params.items():
            if value is None:
                continue
            if isinstance(value, bool):
                text = "true" if value else "false"
            elif isinstance(value, str):
                text = self._render(value, ctx) if ("{{" in value or "{%" in value) else value
            else:
                text = str(value)
            if text == "" or text == "None":
                continue  # e.g. no window start: drop min_create_date
            out.append((str(name), text))
        return out

    def _walk(self, path: str, params: list, items_at: str | None, paginate, *,
              what: str) -> Iterator[Any]:
        paginator = build_paginator(paginate, origin=self.client.base_url)
        req: PageRequest | None = paginator.first(path, params)
        while req is not None:
            if req.url is not None:
                page = self.client.get(req.url)
            else:
                assert req.path is not None  # a PageRequest has a url or a path
                page = self.client.get(req.path, req.params)
            self._counts["pages"] += 1
            items = dig(page, items_at) if items_at else page
            if items is None:
                items = []
            if not isinstance(items, list):
                raise ShapeError(f"the '{items_at}' field of a page of {path} is a "
                                  f"{type(items).__name__}, not a list ({what})")
            yield from items
            req = paginator.next(page, req, items)

    def _expand(self, record: dict, ctx: dict) -> None:
        for name, spec in self.records_spec.expand.items():
            sub_ctx = dict(ctx, record=record)
            path = self._render(spec.path, sub_ctx)
            params = self._params(spec.params, sub_ctx)
            try:
                record[name] = list(self._walk(path, params, spec.items, spec.paginate, what=name))
            except PaginationError as exc:
                raise PaginationError(f"{name} of record {record.get(self.id_field)}: {exc}") from None
            self._counts["expansions"] += 1


def _window_context(window: Mapping[str, Any] | None) -> dict:
    out = {"start": "", "end": ""}
    for k, v in (window or {}).items():
        out[k] = "" if v is None else v
    return out
