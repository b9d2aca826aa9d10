"""The outbox as the destination: validated XML files, each written whole or not at all.

Per file (at most ``output.per_file`` records): the batch and its orders are recorded as
pending; the document is written to a temporary name and fsynced, its checksum recorded,
then it is renamed into place; then the batch is marked delivered. After a crash, a pending
batch whose own file is in place (same checksum) is marked delivered; one whose file never
arrived, or whose file name holds another writer's file, is discarded and its orders
re-fetched by id (they become hints), so they go out in this run, in a file of their own.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Callable

from engine.output.document import BatchInfo, DocumentBuilder
from engine.output.xsd import Validator
from engine.errors import MappingError
from engine.expr.expressions import EvaluationError, Template
from engine.io.outbox import Outbox
from engine.ops.state import OrderRef


class DirectorySink:
    def __init__(self, mapping: Any, store: Any, outbox: Outbox, validator: Validator,
                 stamp: datetime, now: Callable[[], datetime], run_id: int | None = None):
        self.m = mapping
        self.store = store
        #: called before a batch is recorded as pending: what the records carry (new debtors)
        #: is in the state before they can leave
        self.before_delivery: Callable[[], None] = lambda: None
        self.outbox = outbox
        self.validator = validator
        self.stamp = stamp
        self.now = now
        self.run_id = run_id
        self.files: list[str] = []
        #: what the run report should say about this sink's work (e.g. a foreign file found)
        self.messages: list[str] = []
        self._seq = 0
        self._builder = DocumentBuilder(mapping, validator)
        self._refs: list[OrderRef] = []
        self._template = Template(mapping.sink.directory.name
                                  or f"{mapping.name}-{{{{ batch.date }}}}-{{{{ batch.seq }}}}.xml")

    @property
    def pending(self) -> int:
        """Records accepted but not yet in a delivered file."""
        return len(self._refs)

    def prepare(self) -> None:
        self.outbox.prepare()

    def recover(self) -> dict[str, int]:
        counts = {"recovered": 0, "redone": 0}
        for batch in self.store.pending_batches(self.m.name):
            # file_name is the absolute path the batch was written to (a plain name in older
            # states): a run with another --outbox must not redo a file that made it elsewhere
            checksum = self._own_file(batch)
            if checksum is not None:
                self.store.mark_delivered(batch.id, checksum, self.now())
                self.store.release(self.m.name, [o.shop_id for o in batch.orders])
                counts["recovered"] += 1
            else:
                if self.outbox.exists(batch.file_name):
                    self.messages.append(
                        f"{self.outbox.path(batch.file_name)} is not the file of interrupted batch "
                        f"{batch.id} (another writer's, or changed since): it was left as it is, and "
                        f"the batch's {len(batch.orders)} order(s) are delivered again in a file of "
                        f"their own")
                self.store.discard_batch(batch.id, self.now())
                for ref in batch.orders:
                    self.store.add_hint(self.m.name, ref.shop_id, "redo", self.now())
                counts["redone"] += 1
        return counts

    def _own_file(self, batch) -> str | None:
        """The checksum of the batch's file if the file in the outbox is provably its own.

        The proof is the checksum recorded before the rename; a batch of an older state
        (none recorded) must find its own batch id inside the file (ids are unguessable).
        """
        path = self.outbox.path(batch.file_name)
        if not path.is_file() or path.is_symlink():
            return None
        actual = self.outbox.checksum(batch.file_name)
        if batch.expected_checksum is not None:
            return actual if actual == batch.expected_checksum else None
        return actual if batch.id.encode() in path.read_bytes() else None

    def accept(self, outcome) -> list[str]:
        """Add one converted record; returns the shop ids delivered by this call (a full file)."""
        self._builder.add(outcome.xml)
        self._refs.append(OrderRef(outcome.shop_id, outcome.number, outcome.invoice.date))
        return self._flush() if len(self._refs) >= self.m.per_file else []

    def finish(self) -> list[str]:
        return self._flush() if self._refs else []

    def close(self) -> None:
        self.outbox.release()

    def _flush(self) -> list[str]:
        refs, builder = self._refs, self._builder
        self._seq += 1
        info = self._batch_info(builder.count)
        file_name = self._file_name(info)
        while self.outbox.exists(file_name):  # an earlier run's file of the same day
            taken = self.outbox.path(file_name)
            if taken.is_symlink() and not taken.exists():
                self.messages.append(f"{taken} is a symbolic link to nothing; it was left as it is "
                                     f"and this file took the next name")
            self._seq += 1
            info = self._batch_info(builder.count)
            file_name = self._file_name(info)
        self.before_delivery()
        self.store.create_batch(self.m.name, info.id, str(self.outbox.path(file_name).absolute()), refs,
                                created_at=self.now(), run_id=self.run_id)
        written: list[str] = []

        def record(checksum: str) -> None:       # before the rename: recovery's proof
            self.store.expect_checksum(info.id, checksum)
            written.append(checksum)
        with self.outbox.write(file_name, before_rename=record) as f:
            builder.write(f, info.as_context())
        self.store.mark_delivered(info.id, written[0], self.now())
        self.files.append(file_name)
        self._builder, self._refs = DocumentBuilder(self.m, self.validator), []
        return [ref.shop_id for ref in refs]

    def _batch_info(self, count: int) -> BatchInfo:
        stamp = self.stamp
        return BatchInfo(id=f"{self.m.name}-{stamp:%Y%m%dT%H%M%SZ}-{self._seq}-{uuid.uuid4().hex[:8]}",
                         created=stamp.strftime("%Y-%m-%dT%H:%M:%SZ"), date=stamp.strftime("%Y-%m-%d"),
                         seq=self._seq, count=count)

    def _file_name(self, info: BatchInfo) -> str:
        try:
            return self._template({"batch": info.as_context(), "tables": self.m.tables}).strip()
        except EvaluationError as exc:
            raise MappingError(f"sink.directory.name: {exc}", file=str(self.m.file)) from None
