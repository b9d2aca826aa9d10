"""The SQL state stores' common type: what code that keeps tables of its own may ask of them.

:func:`~engine.ops.state.open_state` opens a SQL backend (SQLite or PostgreSQL), both
:class:`SqlStateStore`. The engine needs only :class:`~engine.ops.state.StateStore`; hosted
code (the shops registry, App Store installations, the operator's overview) keeps tables of
its own in the same database and runs its statements in the store's transactions:

    with store.read() as db:                     # one snapshot for several statements
        row = db.execute("SELECT name FROM shops WHERE id = ?", (shop_id,)).fetchone()
    with store.write("add a shop") as db:        # committed at the end, rolled back on an error
        db.execute("INSERT INTO shops ...", (...))

Both backends take the same SQL with ``?`` placeholders (PostgreSQL's store turns them into
psycopg's ``%s``).
"""

from __future__ import annotations

import abc
from contextlib import AbstractContextManager
from typing import Any, Iterator, Protocol, Self

from engine.ops.state.base import StateStore

__all__ = ["SqlConnection", "SqlCursor", "SqlStateStore"]


class SqlCursor(Protocol):
    """The result of :meth:`SqlConnection.execute`: rows are tuples (of ``Any``: SQL is untyped)."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class SqlConnection(Protocol):
    """A connection inside one of the store's transactions (``?`` placeholders)."""

    def execute(self, sql: str, params: tuple[Any, ...] = ..., /) -> SqlCursor: ...

    def executemany(self, sql: str, rows: list[Any], /) -> object: ...

    @property
    def in_transaction(self) -> bool: ...

    def close(self) -> None: ...


class SqlStateStore(StateStore):
    """A state store in a SQL database, whose transactions others may run statements in."""

    def __enter__(self) -> Self:
        return self

    @abc.abstractmethod
    def read(self) -> AbstractContextManager[SqlConnection]:
        """A consistent snapshot for reads that take more than one statement."""

    @abc.abstractmethod
    def write(self, what: str) -> AbstractContextManager[SqlConnection]:
        """A write transaction: committed when the block ends, rolled back if it raises.

        ``what`` says what is being done, for the messages: :class:`ReadOnlyStateError` from a
        store opened read-only, one-sentence :class:`StateError` when the database fails.
        """
