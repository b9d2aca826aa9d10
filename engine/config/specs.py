"""Typed sections of a mapping: what the loader reads once out of the checked YAML, with the
defaults in one place, so that nothing downstream indexes the raw dict by string.

Each spec is frozen; ``from_config`` takes the section as the schema has checked it (types
and names are right), so nothing here validates again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

from engine.io.http.spec import HttpSpec

if TYPE_CHECKING:   # compiled values: engine.expr imports nothing of the configuration
    from engine.expr.expressions import Expression, Template
    from engine.output.jsonbody import Body

DEFAULT_DEBTOR_KEY_ENV = "MAPPER_DEBTOR_KEY"


@dataclass(frozen=True)
class WebhookSpec:
    """``intake.webhooks``: which events make a hint and the listener's bounds."""

    events: tuple[str, ...] = ("orders.updated.ispaid",)
    id_field: str = "id"
    default_event: str | None = None
    max_body: int = 65536
    max_per_day: int = 1000
    max_pending: int = 10000
    max_lookups_per_run: int = 500
    signature_key_env: str | None = None
    max_connections: int = 32
    request_seconds: float = 15.0

    @classmethod
    def from_config(cls, section: Mapping[str, Any] | None) -> "WebhookSpec":
        s = dict(section or {})
        if "events" in s:
            s["events"] = tuple(s["events"])
        return cls(**s)


@dataclass(frozen=True)
class DirectorySinkSpec:
    """``sink.directory``: where the files go, their name template and file mode."""

    path: str | None = None
    name: str | None = None     # None: "<mapping>-<date>-<seq>.xml"
    mode: str = "0600"

    @classmethod
    def from_config(cls, section: Mapping[str, Any] | None) -> "DirectorySinkSpec":
        return cls(**dict(section or {}))


@dataclass(frozen=True)
class SinkSpec:
    """``sink``: the outbox directory and the run report's file name template."""

    directory: DirectorySinkSpec = DirectorySinkSpec()
    report: str | None = None

    @classmethod
    def from_config(cls, section: Mapping[str, Any] | None) -> "SinkSpec":
        s = section or {}
        return cls(DirectorySinkSpec.from_config(s.get("directory")), s.get("report"))


@dataclass(frozen=True)
class CustomerDirectorySpec:
    """``customer.directory``: where debtor numbers are remembered."""

    kind: str = "in_file"                        # in_file | register | api
    key_env: str = DEFAULT_DEBTOR_KEY_ENV        # the register's key (register only)
    numbering: Mapping[str, Any] | None = None   # read by engine.convert.debtors.Numbering

    @classmethod
    def from_config(cls, section: Mapping[str, Any] | None) -> "CustomerDirectorySpec":
        return cls(**dict(section or {}))


@dataclass(frozen=True)
class ListSpec:
    """A list an HTTP source walks (``source.records``, an ``expand`` entry, a ``credit.from``
    list): the request path and parameters (templates), where the items sit in a page, and
    the paginator's block (read by its registered kind, engine.io.http.pagination)."""

    path: str
    params: Mapping[str, Any] = field(default_factory=dict)
    items: str | None = "items"      # "" or None: the page is the list
    paginate: Mapping[str, Any] | None = None

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> "ListSpec":
        return cls(section["path"], dict(section.get("params") or {}), section.get("items", "items"),
                   section.get("paginate"))


@dataclass(frozen=True)
class RecordsSpec(ListSpec):
    """``source.records``: the list of records, their id field and the sub-lists fetched per record."""

    id: str = "id"
    expand: Mapping[str, ListSpec] = field(default_factory=dict)

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> "RecordsSpec":
        base = ListSpec.from_config(section)
        return cls(base.path, base.params, base.items, base.paginate, section.get("id", "id"),
                   {name: ListSpec.from_config(spec) for name, spec in (section.get("expand") or {}).items()})


@dataclass(frozen=True)
class LookupSpec:
    """``source.lookup``: one record by id (``{{ id }}`` in the path), where it sits in the answer."""

    path: str
    params: Mapping[str, Any] = field(default_factory=dict)
    item: str | None = None

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> "LookupSpec":
        return cls(section["path"], dict(section.get("params") or {}), section.get("item"))


@dataclass(frozen=True)
class SourceSpec:
    """``source``: the shop's API (None: the mapping is run on fixture files only)."""

    http: HttpSpec | None = None
    records: RecordsSpec | None = None
    lookup: LookupSpec | None = None

    @classmethod
    def from_config(cls, section: Mapping[str, Any] | None) -> "SourceSpec":
        s = section or {}
        records, lookup = s.get("records"), s.get("lookup")
        return cls(HttpSpec.from_config(s["http"]) if s.get("http") else None,
                   RecordsSpec.from_config(records) if records and records.get("path") else None,
                   LookupSpec.from_config(lookup) if lookup and lookup.get("path") else None)


@dataclass(frozen=True)
class SandboxSpec:
    """``sandbox``: the bundled simulator(s) ``--sandbox`` starts, the environment the mapping
    is then loaded with (``{placeholders}`` of the simulators), the window's default start."""

    simulator: str
    also: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    since: str | None = None

    @classmethod
    def from_config(cls, section: Mapping[str, Any] | None) -> "SandboxSpec | None":
        if not section:
            return None
        return cls(section["simulator"], section.get("also"),
                   {str(k): str(v) for k, v in (section.get("env") or {}).items()}, section.get("since"))


@dataclass(frozen=True)
class RequestSpec:
    """A request of ``destination.api``, compiled: path and parameters (templates), body."""

    path: Template
    params: Mapping[str, Template] = field(default_factory=dict)
    body: Body | None = None


@dataclass(frozen=True)
class ApiSpec:
    """``destination.api`` compiled at load (every template and expression with its line);
    its ``http`` block is read with the run's environment (``LoadedMapping.destination_http``)."""

    items_key: str
    next_key: str | None
    references: Mapping[str, Template]          # name -> the list's path
    debtor_find: RequestSpec
    debtor_match: Expression                    # over ``item``
    debtor_number: Expression
    debtor_name: Expression | None
    debtor_create: RequestSpec
    invoice_find: RequestSpec
    invoice_match: Expression
    invoice_create: RequestSpec
    invoice_id: Expression                      # over ``result``
    original: Mapping[str, Expression] | None   # number, concept: over ``item``
    field_errors_key: str = "errors"
