"""Where converted records go: a :class:`Sink`. Three implement it: the outbox directory
(``directory.DirectorySink``), the Asperion REST API (``api.ApiSink``) and the dry-run's
preview (``preview.PreviewSink``), so the runner and the dry-run drive them alike.

The life of a sink in a run: ``prepare`` (the outbox exists, the API's references are
loaded), ``recover`` (finish or redo what a crashed run left pending), ``accept`` each
converted record, ``finish`` (the last file), ``close``. ``accept`` and ``finish`` return the
ids now delivered; ``pending`` counts those accepted but not yet delivered.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol


class Sink(Protocol):
    #: what the records carry (new debtors) is saved through this before they can leave
    before_delivery: Callable[[], None]
    #: for the run report: files written, and what else the sink has to say
    files: list[str]
    messages: list[str]

    @property
    def pending(self) -> int: ...

    def prepare(self) -> None: ...

    def recover(self) -> dict[str, int]:
        """Counts of ``recovered`` and ``redone`` work of an interrupted run."""

    def accept(self, outcome: Any) -> list[str]:
        """Take one converted record (raises OrderError to quarantine it)."""

    def finish(self) -> list[str]: ...

    def close(self) -> None: ...
