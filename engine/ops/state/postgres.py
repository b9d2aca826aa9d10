"""PostgreSQL backend of the state store: many processes on many machines, one database.

It keeps the SQLite store's statements and semantics, so the two cannot drift apart: the
tables are the same (``migrations/postgres`` mirrors ``migrations/sqlite`` version for
version), the methods are :class:`~engine.ops.state.sqlite.SQLiteStateStore`'s, and only what
differs is here:

- the connection (psycopg 3; its ``%s`` placeholders for the store's ``?``),
- transactions: a write takes a transaction-level advisory lock first, the counterpart of
  SQLite's ``BEGIN IMMEDIATE`` (a read-then-write never races another writer), and a read of
  several statements sees one snapshot (``REPEATABLE READ``),
- the run lock: a session-level advisory lock on a connection of its own, which the server
  releases when the holder's connection ends, even on SIGKILL; who holds it is read from
  ``pg_stat_activity`` (the holder names itself in ``application_name``),
- opening: migrations run under an advisory lock (many workers may start at once); a store
  opened read-only (dry-run) never migrates and refuses to open an older schema.

``location`` is the URL without its password: it is shown in messages.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import socket
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, Iterator
from urllib.parse import urlsplit, urlunsplit

from engine.ops.state.base import LockBusy, LockInfo, StateError, check_mapping, utc_parse, utc_text
from engine.ops.state.sqlite import SQLiteStateStore

__all__ = ["PostgresStateStore", "public_location"]

try:  # psycopg is needed for this backend only (one shop on SQLite installs nothing more)
    import psycopg
    from psycopg import errors as _pg_errors
except ImportError:  # pragma: no cover - exercised only without the extra
    psycopg = None  # type: ignore[assignment]
    _pg_errors = None  # type: ignore[assignment]

#: first key of every advisory lock this store takes (``pg_advisory_lock(int, int)``)
_LOCK_SPACE = 0x6D617070            # 'mapp'
_WRITE_KEY = 1                      # the store's write lock (see the module docstring)
_MIGRATE_KEY = 2
_APP_PREFIX = "mapper run lock "


def _migration_list():
    from engine.ops.state import migrations as _migrations
    return _migrations.load("postgres")


def latest_version() -> int:
    return len(_migration_list())


def public_location(url: str) -> str:
    """The URL as it may be shown: password (and any query) left out."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit((parts.scheme, user + host, parts.path, "", ""))


def _lock_key(mapping: str) -> int:
    """A mapping's run-lock key: 32 bits of its SHA-256, as a signed int4."""
    value = int.from_bytes(hashlib.sha256(mapping.encode()).digest()[:4], "big")
    return value - (1 << 32) if value >= 1 << 31 else value


class _Connection:
    """The few calls the store makes on a connection, with the store's ``?`` placeholders.

    The store's SQL has no ``%`` and no ``?`` inside literals (tests check it), so turning
    ``?`` into psycopg's ``%s`` is exact.
    """

    def __init__(self, conn: Any, location: str, pool: Any = None):
        """``pool``: the connection is borrowed from it and given back on close."""
        self.raw, self.location, self.pool = conn, location, pool

    @staticmethod
    def _sql(sql: str) -> str:
        return sql.replace("?", "%s")

    def execute(self, sql: str, params: tuple | list = ()) -> Any:
        try:
            return self.raw.execute(self._sql(sql), tuple(params) or None)
        except psycopg.OperationalError as exc:
            raise self._lost(exc) from None

    def executemany(self, sql: str, rows: list) -> None:
        if rows:
            try:
                with self.raw.cursor() as cur:
                    cur.executemany(self._sql(sql), rows)
            except psycopg.OperationalError as exc:
                raise self._lost(exc) from None

    def _lost(self, exc: BaseException) -> StateError:
        """The server went away (a restart, a network cut): one sentence, the run is retried."""
        return StateError(f"lost the connection to the state database {self.location}: "
                          f"{_words(exc)}; nothing was marked done that was not done, run again")

    @property
    def in_transaction(self) -> bool:
        status = self.raw.info.transaction_status
        return status not in (psycopg.pq.TransactionStatus.IDLE, psycopg.pq.TransactionStatus.UNKNOWN)

    def close(self) -> None:
        if self.pool is None:
            self.raw.close()
            return
        if self.in_transaction:            # never hand back a connection inside a transaction
            with contextlib.suppress(psycopg.Error):
                self.raw.execute("ROLLBACK")
        self.pool.putconn(self.raw)        # the pool drops it if it is broken


class PostgresStateStore(SQLiteStateStore):
    _integrity_error = _pg_errors.IntegrityError if _pg_errors is not None else Exception

    def __init__(self, url: str, *, readonly: bool = False, connect_timeout: float = 10.0,
                 schema_version: int | None = None, pool: Any = None):
        """``url`` is a libpq URL (``postgresql://user@host/db``); ``schema_version`` stops
        migrating at that version (for tests of upgrades); ``pool``: a psycopg_pool
        ``ConnectionPool`` (autocommit connections) to borrow the connection from, as a worker
        does for every job (writable stores only: a read-only session setting would outlive
        the store in the pool)."""
        if pool is not None and readonly:
            raise ValueError("a pooled state store is writable")
        if psycopg is None:
            raise StateError("the PostgreSQL state needs the psycopg package: "
                             "pip install 'mapper[hosted]'")
        self.url = url
        self.location = public_location(url)
        self.readonly = readonly
        self._connect_timeout = connect_timeout
        self._mutex = threading.RLock()
        self._conn: _Connection | None = None
        target = latest_version() if schema_version is None else schema_version
        if not 0 <= target <= latest_version():
            raise ValueError(f"schema_version must be within 0..{latest_version()}")
        try:
            if pool is not None:
                self._conn = _Connection(pool.getconn(timeout=connect_timeout), self.location, pool)
            else:
                self._conn = _Connection(self._new_connection("mapper state"), self.location)
            if readonly:
                self._conn.execute("SET default_transaction_read_only = on")
                self._check_not_newer(self._version())
                if self._version() < target:
                    raise StateError(
                        f"the state database {self.location} has schema v{self._version()}, "
                        f"this mapper needs v{target}; run `mapper db upgrade` (or a run) first")
            elif self._version() < target:    # the usual case is a current schema: no lock taken
                self._migrate(target)
            else:
                self._check_not_newer(self._version())
        except psycopg.Error as exc:
            self.close()
            raise StateError(f"cannot open the state database {self.location}: "
                             f"{_words(exc)}") from None
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ connections

    def _new_connection(self, name: str) -> Any:
        try:
            return psycopg.connect(self.url, autocommit=True, application_name=name[:63],
                                   connect_timeout=max(1, int(self._connect_timeout)))
        except psycopg.Error as exc:
            raise StateError(f"cannot connect to the state database {self.location}: "
                             f"{_words(exc)}; is the server running and the URL right?") from None

    def _db(self) -> _Connection:
        conn = super()._db()
        assert isinstance(conn, _Connection)    # the only kind this store opens (__init__)
        return conn

    def __repr__(self) -> str:
        return f"<PostgresStateStore {self.location}{' (read-only)' if self.readonly else ''}>"

    # ------------------------------------------------------------------ schema

    def _version(self) -> int:
        conn = self._db()
        if conn.execute("SELECT to_regclass('schema_version')").fetchone()[0] is None:
            return 0
        row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
        return int(row[0] or 0)

    def _check_not_newer(self, version: int) -> None:
        if version > latest_version():
            from engine.ops.state.base import StateVersionError
            raise StateVersionError(version, latest_version(), self.location)

    def _migrate(self, target: int) -> None:
        conn = self._db()
        for mig in _migration_list():
            if mig.version > target:
                break
            conn.execute("BEGIN")
            try:
                conn.execute("SELECT pg_advisory_xact_lock(?, ?)", (_LOCK_SPACE, _MIGRATE_KEY))
                current = self._version()        # re-read under the lock
                self._check_not_newer(current)
                if current < mig.version:
                    conn.raw.execute(mig.sql)    # the whole file: psycopg sends it as one script
                    conn.execute("INSERT INTO schema_version (version, name, applied_at) "
                                 "VALUES (?, ?, ?)", (mig.version, mig.name, utc_text(None)))
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    # ------------------------------------------------------------------ transactions

    @contextmanager
    def write(self, what: str) -> Iterator[_Connection]:
        self._writable(what)
        with self._mutex:
            conn = self._db()
            try:
                conn.execute("BEGIN")
                try:
                    conn.execute("SELECT pg_advisory_xact_lock(?, ?)", (_LOCK_SPACE, _WRITE_KEY))
                    yield conn
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
                else:
                    conn.execute("COMMIT")
            except psycopg.Error as exc:
                raise StateError(f"cannot {what} in the state database {self.location}: "
                                 f"{_words(exc)}; nothing was marked done that was not done, "
                                 f"run again") from None

    @contextmanager
    def read(self) -> Iterator[_Connection]:
        with self._mutex:
            conn = self._db()
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
            try:
                yield conn
            finally:
                if conn.in_transaction:
                    conn.execute("COMMIT")

    # ------------------------------------------------------------------ run lock

    def lock_path(self, mapping: str):  # pragma: no cover - SQLite's lock file has no PG twin
        raise StateError("the PostgreSQL state locks runs in the database, not in a file")

    def _holder(self, conn: Any, key: int, mapping: str) -> LockInfo | None:
        row = conn.execute(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s::oid "
            "AND l.objid = %s::oid AND l.objsubid = 2 LIMIT 1",
            (_LOCK_SPACE, key & 0xFFFFFFFF)).fetchone()
        m = re.fullmatch(rf"{_APP_PREFIX}pid=(\d+) host=(\S*) at=(\S+)", row[0]) if row else None
        if not m:
            return None
        return LockInfo(mapping=mapping, pid=int(m.group(1)), host=m.group(2) or None,
                        started_at=utc_parse(m.group(3)))

    def lock_holder(self, mapping: str) -> LockInfo | None:
        with self._mutex:
            return self._holder(self._db().raw, _lock_key(check_mapping(mapping)), mapping)

    @contextmanager
    def run_lock(self, mapping: str, wait_seconds: float) -> Iterator[LockInfo]:
        self._writable("take the run lock")
        key = _lock_key(check_mapping(mapping))
        info = LockInfo(mapping=mapping, pid=os.getpid(), started_at=datetime.now(timezone.utc),
                        host=socket.gethostname()[:20])
        stamp = utc_text(info.started_at).split(".")[0] + "Z"
        conn = self._new_connection(f"{_APP_PREFIX}pid={info.pid} host={info.host} at={stamp}")
        try:
            deadline = time.monotonic() + max(0.0, float(wait_seconds))
            while not conn.execute("SELECT pg_try_advisory_lock(%s, %s)",
                                   (_LOCK_SPACE, key)).fetchone()[0]:
                left = deadline - time.monotonic()
                if left <= 0:
                    holder = self._holder(conn, key, mapping)
                    raise LockBusy(mapping, float(wait_seconds), holder,
                                   own=holder is not None and holder.pid == os.getpid()
                                   and holder.host == info.host)
                time.sleep(min(0.05, left))
            try:
                yield info
            finally:
                with contextlib.suppress(psycopg.Error):   # a lost session has released it already
                    conn.execute("SELECT pg_advisory_unlock(%s, %s)", (_LOCK_SPACE, key))
        except psycopg.OperationalError as exc:
            raise StateError(f"lost the connection to the state database {self.location} while "
                             f"holding the run lock: {_words(exc)}; run again") from None
        finally:
            conn.close()                     # a lock still held dies with the session


def _words(exc: BaseException) -> str:
    """psycopg's message in one line, without the connection string it may quote."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return re.sub(r"postgres(?:ql)?://\S+", "<url>", text)
