"""Paginators: how to get from one page of a list to the next.

A small registry (``register_paginator(kind, cls)``) with three kinds:

* ``next_link`` -- the page carries the absolute URL of the next page (``next: next``, a
  dotted path into the page). Stops when it is null, absent or empty, or when a page has no
  items. The link is used exactly as given and only on the configured origin (scheme, host,
  port): a link to another host is an error, never followed.
* ``offset`` -- ``start_param``/``size_param``/``size``: the start advances by the number of
  items received; stops on an empty page (or a short one, unless ``stop_on_short_page: false``).
* ``page`` -- ``page_param``/``size_param``/``size``/``first_page``; same stop rules.

Every paginator has a loop guard: a page request (URL or token) that comes back a second time
and more than ``max_pages`` pages both raise :class:`PaginationError` with a clear message.
A paginator instance walks one list; build a new one per list with :func:`build_paginator`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence
from urllib.parse import urljoin, urlsplit

from engine.errors import SourceError

__all__ = [
    "PageRequest",
    "PaginationError",
    "Paginator",
    "NextLinkPaginator",
    "OffsetPaginator",
    "PagePaginator",
    "build_paginator",
    "register_paginator",
    "registered_paginator_kinds",
    "origin_of",
    "dig",
]

DEFAULT_MAX_PAGES = 10_000


class PaginationError(SourceError, RuntimeError):
    """A list could not be walked safely (loop, page cap, foreign host, bad config)."""


@dataclass(frozen=True)
class PageRequest:
    """One page to fetch: either an absolute ``url`` used verbatim, or ``path`` + ``params``."""

    url: str | None = None
    path: str | None = None
    params: tuple[tuple[str, str], ...] = field(default_factory=tuple)

    def key(self) -> str:
        if self.url is not None:
            return self.url
        return repr((self.path, self.params))

    def describe(self) -> str:
        if self.url is not None:
            parts = urlsplit(self.url)
            return parts.path + ("?" + parts.query if parts.query else "")
        return str(self.path)


def origin_of(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or {"http": 80, "https": 443}.get(scheme)
    return scheme, (parts.hostname or "").lower(), port


def dig(data: Any, path: str | None) -> Any:
    """``dig(page, "a.b")`` -> ``page["a"]["b"]``; ``None``/``""``/``"."`` -> ``data``."""
    if path in (None, "", "."):
        return data
    cur = data
    for part in str(path).split("."):
        if isinstance(cur, Mapping):
            cur = cur.get(part)
        elif isinstance(cur, Sequence) and not isinstance(cur, (str, bytes)) and part.isdigit():
            idx = int(part)
            cur = cur[idx] if idx < len(cur) else None
        else:
            return None
        if cur is None:
            return None
    return cur


class Paginator:
    """Base class with the loop guard. Subclasses implement :meth:`_first` and :meth:`_next`."""

    kind = "single"
    #: what the kind does, and the JSON Schema of the options it reads (the mapping schema's
    #: ``paginate`` block is made of every registered kind's: :func:`paginate_schema`)
    description = "one page only"
    options: dict[str, Any] = {
        "max_pages": {"type": "integer", "minimum": 1, "description": "Stop with an error after this many pages (loop guard)."}}

    def __init__(self, config: Mapping[str, Any] | None = None, *, origin: str | None = None):
        config = dict(config or {})
        self.config = config
        self.origin = origin
        self.max_pages = int(config.get("max_pages", DEFAULT_MAX_PAGES))
        if self.max_pages < 1:
            raise PaginationError(f"paginate.max_pages must be at least 1, got {self.max_pages}")
        self._seen: set[str] = set()
        self.pages = 0

    # public API --------------------------------------------------------------------------
    def first(self, path: str, params: Sequence[tuple[str, str]] = ()) -> PageRequest:
        self._seen.clear()
        self.pages = 0
        req = self._first(path, tuple((str(k), str(v)) for k, v in params))
        self._guard(req)
        return req

    def next(self, page: Any, request: PageRequest, items: Sequence[Any]) -> PageRequest | None:
        """The request for the page after ``page`` (which was fetched with ``request`` and
        held ``items``), or ``None`` at the end of the list."""
        self.pages += 1
        if not items:
            return None
        req = self._next(page, request, items)
        if req is None:
            return None
        self._guard(req)
        return req

    # helpers -----------------------------------------------------------------------------
    def _guard(self, req: PageRequest) -> None:
        key = req.key()
        if key in self._seen:
            raise PaginationError(
                f"pagination loop: the server sent page {req.describe()} a second time; "
                f"stopping after {self.pages} page(s) instead of looping forever")
        if self.pages >= self.max_pages:
            raise PaginationError(
                f"pagination stopped at the page cap of {self.max_pages} page(s) "
                f"(paginate.max_pages) while the server still offered {req.describe()}")
        self._seen.add(key)

    def _first(self, path: str, params: tuple[tuple[str, str], ...]) -> PageRequest:
        return PageRequest(path=path, params=params)

    def _next(self, page: Any, request: PageRequest, items: Sequence[Any]) -> PageRequest | None:
        return None

    @staticmethod
    def _set_param(params: tuple[tuple[str, str], ...], name: str, value: Any) -> tuple:
        """Replace ``name`` in place (keeps parameter order) or append it."""
        out, done = [], False
        for k, v in params:
            if k == name:
                if not done:
                    out.append((k, str(value)))
                    done = True
            else:
                out.append((k, v))
        if not done:
            out.append((name, str(value)))
        return tuple(out)


class SinglePagePaginator(Paginator):
    """No pagination: one request."""


class NextLinkPaginator(Paginator):
    kind = "next_link"
    description = "follow an absolute next URL"
    options = {**Paginator.options,
               "next": {"type": "string", "description": "next_link: the key of the next URL in a page."}}

    def __init__(self, config=None, *, origin=None):
        super().__init__(config, origin=origin)
        self.next_field = self.config.get("next", "next")
        self.size_param = self.config.get("size_param")
        self.size = self.config.get("size")

    def _first(self, path, params):
        if self.size_param and self.size is not None:
            params = self._set_param(params, self.size_param, self.size)
        return PageRequest(path=path, params=params)

    def _next(self, page, request, items):
        link = dig(page, self.next_field) if isinstance(page, Mapping) else None
        if link in (None, "", False):
            return None
        if not isinstance(link, str):
            raise PaginationError(
                f"pagination: the '{self.next_field}' field of a page is not a URL string "
                f"(got {type(link).__name__})")
        if self.origin is not None:
            absolute = urljoin(self.origin.rstrip("/") + "/", link)
            if origin_of(absolute) != origin_of(self.origin):
                got = origin_of(absolute)
                raise PaginationError(
                    f"pagination: refusing to follow a next link to {got[0]}://{got[1]}"
                    f"{':' + str(got[2]) if got[2] else ''} -- only links on the configured "
                    f"base_url host are followed")
            link = absolute if urlsplit(link).scheme == "" else link
        return PageRequest(url=link)


class _CountingPaginator(Paginator):
    options = {**Paginator.options,
               "size_param": {"type": "string"},
               "size": {"type": "integer", "minimum": 1, "description": "Page size asked for."},
               "stop_on_short_page": {"type": "boolean", "description": "offset/page: stop when a page holds fewer items than asked for."}}
    def __init__(self, config=None, *, origin=None):
        super().__init__(config, origin=origin)
        self.size_param = self.config.get("size_param", "size")
        size = self.config.get("size")
        if size is None:
            raise PaginationError(f"paginate kind '{self.kind}' needs 'size'")
        self.size = int(size)
        if self.size < 1:
            raise PaginationError(f"paginate.size must be at least 1, got {self.size}")
        self.stop_on_short_page = bool(self.config.get("stop_on_short_page", True))

    def _short(self, items) -> bool:
        return self.stop_on_short_page and len(items) < self.size


class OffsetPaginator(_CountingPaginator):
    kind = "offset"
    description = "start/size"
    options = {**_CountingPaginator.options, "start_param": {"type": "string"},
               "start": {"type": "integer", "minimum": 0, "description": "offset: the first start value (default 0)."}}

    def __init__(self, config=None, *, origin=None):
        super().__init__(config, origin=origin)
        self.start_param = self.config.get("start_param", "start")
        self.start = int(self.config.get("start", 0))

    def _first(self, path, params):
        params = self._set_param(params, self.start_param, self.start)
        params = self._set_param(params, self.size_param, self.size)
        self._offset = self.start
        return PageRequest(path=path, params=params)

    def _next(self, page, request, items):
        if self._short(items):
            return None
        self._offset += len(items)
        return PageRequest(path=request.path,
                           params=self._set_param(request.params, self.start_param, self._offset))


class PagePaginator(_CountingPaginator):
    kind = "page"
    description = "page number"
    options = {**_CountingPaginator.options, "page_param": {"type": "string"}, "first_page": {"type": "integer"}}

    def __init__(self, config=None, *, origin=None):
        super().__init__(config, origin=origin)
        self.page_param = self.config.get("page_param", "page")
        self.first_page = int(self.config.get("first_page", 1))

    def _first(self, path, params):
        params = self._set_param(params, self.page_param, self.first_page)
        params = self._set_param(params, self.size_param, self.size)
        self._page = self.first_page
        return PageRequest(path=path, params=params)

    def _next(self, page, request, items):
        if self._short(items):
            return None
        self._page += 1
        return PageRequest(path=request.path,
                           params=self._set_param(request.params, self.page_param, self._page))


_REGISTRY: dict[str, type[Paginator]] = {}


def register_paginator(kind: str, cls: type[Paginator]) -> None:
    """Register a :class:`Paginator` subclass under ``kind`` (``paginate: {kind: ...}``)."""
    _REGISTRY[kind] = cls


def registered_paginator_kinds() -> list[str]:
    return sorted(_REGISTRY)


def paginate_schema() -> dict[str, Any]:
    """The JSON Schema of a ``paginate`` block: ``kind`` one of the registered kinds, and the
    options any of them reads."""
    options: dict[str, Any] = {}
    for cls in _REGISTRY.values():
        options.update(cls.options)
    return {"type": "object", "additionalProperties": False, "required": ["kind"], "description": "How to walk the pages.",
            "properties": {"kind": {"enum": list(_REGISTRY), "description": "; ".join(
                f"{kind}: {cls.description}" for kind, cls in _REGISTRY.items()) + "."}, **options}}


def build_paginator(config: Mapping[str, Any] | None, *, origin: str | None = None) -> Paginator:
    """A fresh paginator for one list. ``None`` config -> a single request."""
    if not config:
        return SinglePagePaginator({}, origin=origin)
    kind = config.get("kind")
    cls = _REGISTRY.get(str(kind))
    if cls is None:
        raise PaginationError(
            f"unknown paginate kind {kind!r}; known kinds: {', '.join(registered_paginator_kinds())}")
    return cls(config, origin=origin)


register_paginator("next_link", NextLinkPaginator)
register_paginator("offset", OffsetPaginator)
register_paginator("page", PagePaginator)
register_paginator("single", SinglePagePaginator)
