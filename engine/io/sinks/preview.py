"""The dry-run's sink: every converted record goes into one document (aXML, or the API's
bodies as JSON lines), written to ``out`` at the end; nothing is delivered or recorded."""

from __future__ import annotations

from typing import Any, BinaryIO, Callable

from engine.clock import now
from engine.output.document import BatchInfo, DocumentBuilder
from engine.output.xsd import Validator


class PreviewSink:
    pending = 0

    def __init__(self, mapping: Any, validator: Validator, out: BinaryIO | None, bodies: Any = None):
        """``bodies``: for a mapping without XML output, what renders the API's bodies."""
        self.m = mapping
        self.out = out
        self.before_delivery: Callable[[], None] = lambda: None
        self.files: list[str] = []
        self.messages: list[str] = []
        self._xml = bodies is None
        self._builder = DocumentBuilder(mapping, validator) if bodies is None else bodies

    def prepare(self) -> None:
        pass

    def recover(self) -> dict[str, int]:
        return {"recovered": 0, "redone": 0}

    def accept(self, outcome: Any) -> list[str]:
        self._builder.add(outcome.xml if self._xml else outcome)
        return []

    def finish(self) -> list[str]:
        if self.out is not None:
            stamp = now()
            batch = BatchInfo(id=f"{self.m.name}-preview-{stamp:%Y%m%dT%H%M%SZ}",
                              created=stamp.strftime("%Y-%m-%dT%H:%M:%SZ"), date=stamp.strftime("%Y-%m-%d"),
                              seq=1, count=self._builder.count)
            self._builder.write(self.out, batch.as_context())
        return []

    def close(self) -> None:
        pass
