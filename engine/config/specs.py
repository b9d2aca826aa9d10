"""Typed sections of a mapping: what the loader reads once out of the checked YAML, with the
defaults in one place, so that nothing downstream indexes the raw dict by string.

Each spec is frozen; ``from_config`` takes the section as the schema has checked it (types
and names are right), so nothing here validates again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

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
