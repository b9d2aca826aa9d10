"""Where records come from: a :class:`Source` (the shop's REST API, a folder of fixtures), and
the :class:`BrokenRecord` a source yields for what it could not read.

The runner and the dry-run take any object with these methods; :func:`open_source`
(``engine.io.sources.open``) picks the one a mapping and the command line ask for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Protocol


@dataclass(frozen=True)
class BrokenRecord:
    """A record that could not be read; quarantined under ``source_name``, never lost."""

    source_name: str
    reason: str


class Source(Protocol):
    def records(self, window: Mapping[str, Any] | None = None) -> Iterator[dict | BrokenRecord]:
        """The records of a poll window (``start``, ``end``: ISO dates; ``end`` may be empty)."""

    def lookup(self, shop_id: str) -> dict | BrokenRecord | None:
        """One record by id, expanded as :meth:`records` yields it; None if the shop has none."""

    def list_items(self, request: Mapping[str, Any], window: Mapping[str, Any] | None = None) -> Iterator[Any]:
        """The items of a declared list request (the credit section's invoices and returns)."""

    def close(self) -> None:
        """Release connections."""
