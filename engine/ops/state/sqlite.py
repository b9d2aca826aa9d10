"""SQLite backend of the state store: one file, WAL mode, ``synchronous=FULL``.

Write transactions are short and start with ``BEGIN IMMEDIATE`` (the write lock is taken up
front, so two processes never both read-then-write the same rows); a ``busy_timeout`` makes a
second writer wait instead of failing. The run lock is an ``fcntl.flock`` on a file beside the
database (``<db>.<mapping-slug>.lock``): the kernel releases it when its holder dies, even on
SIGKILL. (``flock`` is reliable on local file systems; do not put the state on NFS.)

Read-only mode (dry-run) opens the file with ``mode=ro``. A missing file is an empty in-memory
store (nothing is created). A file with an older schema is copied into memory and upgraded
there, so a dry-run of a newer mapper works without touching the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import sqlite3
import threading
import time
from contextlib import contextmanager
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Iterable, Iterator, Mapping
from zoneinfo import ZoneInfo

from engine.ops.state import migrations as _migrations
from engine.batching import chunks
from engine.ops.state.base import (
    Batch, BatchConflict, BatchStateError, CreditEntry, EnabledState, Hint, LockBusy, LockInfo, OrderRef,
    QuarantineEntry, ReadOnlyStateError, Run, StateError, StateVersionError,
    UnknownBatch, WebhookToken, check_counts, check_key_hash, check_mapping, clean_reason, shop_id_list,
    utc_parse, utc_parse_required, utc_text,
)
from engine.ops.state.sql import SqlConnection, SqlStateStore

__all__ = ["SQLiteStateStore", "lock_path_for"]

#: ids per IN (...) clause; well under SQLite's historic 999-variable limit
CHUNK = 500
DEBTOR_SEQUENCE = "debtor_number"


def _migration_list() -> tuple[_migrations.Migration, ...]:
    return _migrations.load("sqlite")


def latest_version() -> int:
    return len(_migration_list())


def _statements(sql: str) -> Iterator[str]:
    buf = ""
    for line in sql.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            yield buf.strip()
            buf = ""
    rest = "\n".join(l for l in buf.splitlines() if not l.strip().startswith("--")).strip()
    if rest:
        raise StateError(f"incomplete SQL statement in a migration: {rest[:60]!r}")


def _marks(n: int) -> str:
    return ",".join("?" * n)


def lock_path_for(db_path: Path, mapping: str) -> Path:
    """``<db>.<mapping-slug>.lock``; a slug that had to change gets a short hash (no clashes)."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", mapping).strip("-.") or "mapping"
    if slug != mapping:
        slug += "-" + hashlib.sha256(mapping.encode()).hexdigest()[:8]
    return db_path.with_name(f"{db_path.name}.{slug[:80]}.lock")


class SQLiteStateStore(SqlStateStore):
    #: what the database raises when a unique index refuses a row (PostgreSQL's store differs)
    _integrity_error: type[Exception] = sqlite3.IntegrityError

    def __init__(self, path: str | os.PathLike, *, readonly: bool = False,
                 busy_timeout: float = 15.0, schema_version: int | None = None):
        """``schema_version`` stops migrating at that version (for tests of upgrades)."""
        self.path = Path(path).expanduser().absolute()
        self.location = str(self.path)
        self.readonly = readonly
        self._busy_timeout = busy_timeout
        self._mutex = threading.RLock()
        self._conn: SqlConnection | None = None
        target = latest_version() if schema_version is None else schema_version
        if not 0 <= target <= latest_version():
            raise ValueError(f"schema_version must be within 0..{latest_version()}")
        try:
            if readonly:
                self._open_readonly(target)
            else:
                self._open_writable(target)
        except sqlite3.DatabaseError as exc:
            self.close()
            raise StateError(f"cannot open state database {self.location}: {exc}") from None
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ opening

    def _connect(self, target: str, uri: bool = False) -> sqlite3.Connection:
        conn = sqlite3.connect(target, timeout=self._busy_timeout, isolation_level=None,
                               check_same_thread=False, uri=uri)
        conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    def _open_writable(self, target: int) -> None:
        if self.path.is_symlink():
            raise StateError(f"state path {self.location} is a symbolic link (to "
                             f"{os.readlink(self.path)}); give the database file's own path")
        if self.path.is_dir():
            raise StateError(f"state path {self.location} is a directory, not a database file")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            try:  # a new state file is private to its user; -wal/-shm inherit its mode
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
            except FileExistsError:
                self._tighten()
        except OSError as exc:       # no permission, a read-only file system, a path under /proc
            raise StateError(f"cannot create the state database {self.location}: {exc.strerror} "
                             f"(in {self.path.parent}); give a --state path (or MAPPER_STATE) in a "
                             f"directory this user can write") from None
        self._conn = self._connect(str(self.path))
        self._conn.execute("PRAGMA journal_mode = WAL").fetchone()
        self._conn.execute("PRAGMA synchronous = FULL")
        self._migrate(target)

    def _tighten(self) -> None:
        """An existing state file others can read (0644 from a copy or an old umask) is made
        private: it holds order numbers, dates and the debtor register's hashes."""
        for p in (self.path, Path(f"{self.path}-wal"), Path(f"{self.path}-shm")):
            try:
                if p.exists() and p.stat().st_mode & 0o077:
                    os.chmod(p, 0o600)
            except PermissionError:
                raise StateError(f"the state database {p} can be read by others and is not this "
                                 f"user's to tighten: chmod 600 {p}") from None

    def _open_readonly(self, target: int) -> None:
        if not self.path.exists():
            self._conn = self._connect(":memory:")
            self._migrate(target)
            return
        if self.path.is_dir():
            raise StateError(f"state path {self.location} is a directory, not a database file")
        ro = self._connect(self.path.as_uri() + "?mode=ro", uri=True)
        self._conn = ro
        version = self._version()
        self._check_not_newer(version)
        if version >= target:
            return
        # Older schema: upgrade a private in-memory copy; the file is left as it is.
        mem = self._connect(":memory:")
        ro.backup(mem)
        ro.close()
        self._conn = mem
        self._migrate(target)

    def _version(self) -> int:
        conn = self._db()
        tables = {r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "schema_version" not in tables:
            if tables - {"sqlite_sequence"}:
                raise StateError(f"{self.location} is a SQLite database but not a mapper state "
                                 "database (no schema_version table)")
            return 0
        row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
        return int(row[0] or 0)

    def _check_not_newer(self, version: int) -> None:
        if version > latest_version():
            raise StateVersionError(version, latest_version(), self.location)

    def _migrate(self, target: int) -> None:
        """Apply missing migrations up to ``target``, each once, each in its own transaction."""
        self._check_not_newer(self._version())
        for mig in _migration_list():
            if mig.version > target:
                break
            conn = self._db()
            conn.execute("BEGIN IMMEDIATE")
            try:
                current = self._version()        # re-read under the write lock
                self._check_not_newer(current)
                if current >= mig.version:
                    conn.execute("COMMIT")
                    continue
                for stmt in _statements(mig.sql):
                    conn.execute(stmt)
                conn.execute("INSERT INTO schema_version (version, name, applied_at) "
                             "VALUES (?, ?, ?)", (mig.version, mig.name, utc_text(None)))
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def schema_version(self) -> int:
        with self._mutex:
            return self._version()

    def close(self) -> None:
        with self._mutex:
            if self._conn is not None:
                try:
                    self._conn.close()
                finally:
                    self._conn = None

    def __repr__(self) -> str:
        return f"<SQLiteStateStore {self.location}{' (read-only)' if self.readonly else ''}>"

    # ------------------------------------------------------------------ transactions

    def _writable(self, what: str) -> None:
        if self.readonly:
            raise ReadOnlyStateError(
                f"the state store is open read-only (dry-run); refused to {what}")

    def _db(self) -> SqlConnection:
        if self._conn is None:
            raise StateError("the state store is closed")
        return self._conn

    @contextmanager
    def write(self, what: str) -> Iterator[SqlConnection]:
        self._writable(what)
        with self._mutex:
            conn = self._db()
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
                else:
                    conn.execute("COMMIT")
            except sqlite3.Error as exc:  # disk full, I/O error, lock timeout: one clear sentence
                raise StateError(f"cannot {what} in the state database {self.location}: {exc}; "
                                 f"nothing was marked done that was not done, run again") from None

    @contextmanager
    def read(self) -> Iterator[SqlConnection]:
        """A consistent snapshot for reads that take more than one statement."""
        with self._mutex:
            conn = self._db()
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                if conn.in_transaction:
                    conn.execute("COMMIT")

    # ------------------------------------------------------------------ runs

    def begin_run(self, mapping: str, started_at: datetime, mode: str) -> int:
        check_mapping(mapping)
        with self.write("record a run") as db:
            return int(db.execute("INSERT INTO runs (mapping, mode, started_at) VALUES (?, ?, ?) "
                                  "RETURNING id", (mapping, str(mode), utc_text(started_at))).fetchone()[0])

    def finish_run(self, run_id: int, outcome: str, counts: Mapping[str, int],
                   report_path: str | None = None, finished_at: datetime | None = None) -> None:
        counts_json = json.dumps(check_counts(counts), sort_keys=True)
        with self.write("record a run") as db:
            cur = db.execute(
                "UPDATE runs SET finished_at = ?, outcome = ?, counts = ?, report_path = ? "
                "WHERE id = ?",
                (utc_text(finished_at), str(outcome), counts_json,
                 None if report_path is None else os.fspath(report_path), int(run_id)))
            if cur.rowcount != 1:
                raise StateError(f"no run with id {run_id} in the state store")

    def last_runs(self, mapping: str, limit: int = 10) -> list[Run]:
        with self._mutex:
            rows = self._db().execute(
                "SELECT id, mapping, started_at, mode, finished_at, outcome, counts, report_path "
                "FROM runs WHERE mapping = ? ORDER BY id DESC LIMIT ?",
                (mapping, int(limit))).fetchall()
        return [Run(id=r[0], mapping=r[1], started_at=utc_parse_required(r[2]), mode=r[3],
                    finished_at=utc_parse(r[4]), outcome=r[5], counts=json.loads(r[6] or "{}"),
                    report_path=r[7]) for r in rows]

    # ------------------------------------------------------------------ batches

    _BATCH_COLS = ("id, mapping, file_name, status, created_at, delivered_at, checksum, "
                   "remote_id, run_id, discarded_at, expected_checksum")

    def _batches(self, db: SqlConnection, where: str, params: tuple) -> list[Batch]:
        rows = db.execute(f"SELECT {self._BATCH_COLS} FROM batches WHERE {where} "
                          "ORDER BY created_at, id", params).fetchall()
        out = []
        for r in rows:
            orders = tuple(
                OrderRef(shop_id=o[0], number=o[1], order_date=o[2]) for o in db.execute(
                    "SELECT shop_id, number, order_date FROM batch_orders WHERE batch_id = ? "
                    "ORDER BY rowid", (r[0],)))
            out.append(Batch(id=r[0], mapping=r[1], file_name=r[2], status=r[3],
                             created_at=utc_parse_required(r[4]), orders=orders,
                             delivered_at=utc_parse(r[5]), checksum=r[6], remote_id=r[7],
                             run_id=r[8], discarded_at=utc_parse(r[9]),
                             expected_checksum=r[10]))
        return out

    def _one_batch(self, db: SqlConnection, batch_id: str) -> Batch:
        found = self._batches(db, "id = ?", (batch_id,))
        if not found:
            raise UnknownBatch(batch_id)
        return found[0]

    def create_batch(self, mapping: str, batch_id: str, file_name: str,
                     orders: Iterable[OrderRef], *, created_at: datetime | None = None,
                     run_id: int | None = None) -> Batch:
        check_mapping(mapping)
        batch_id = str(batch_id)
        refs = [o if isinstance(o, OrderRef) else OrderRef(*o) for o in orders]
        ids = [o.shop_id for o in refs]
        if len(set(ids)) != len(ids):
            twice = sorted({i for i in ids if ids.count(i) > 1})
            raise StateError(f"batch {batch_id!r} lists order(s) more than once: "
                             f"{', '.join(twice[:5])}")
        created = utc_text(created_at)
        with self.write("record a batch") as db:
            if db.execute("SELECT 1 FROM batches WHERE id = ?", (batch_id,)).fetchone():
                raise BatchStateError(f"a batch with id {batch_id!r} already exists")
            conflicts: dict[str, str] = {}
            for part in chunks(ids, CHUNK):
                conflicts.update(db.execute(
                    f"SELECT shop_id, batch_id FROM batch_orders WHERE mapping = ? AND live = 1 "
                    f"AND shop_id IN ({_marks(len(part))})", (mapping, *part)).fetchall())
            if conflicts:
                raise BatchConflict(mapping, batch_id, conflicts)
            db.execute("INSERT INTO batches (id, mapping, file_name, status, created_at, run_id) "
                       "VALUES (?, ?, ?, 'pending', ?, ?)",
                       (batch_id, mapping, str(file_name), created,
                        None if run_id is None else int(run_id)))
            try:
                db.executemany(
                    "INSERT INTO batch_orders (batch_id, mapping, shop_id, number, order_date, "
                    "live) VALUES (?, ?, ?, ?, ?, 1)",
                    [(batch_id, mapping, o.shop_id, o.number, o.order_date.isoformat())
                     for o in refs])
            except self._integrity_error:     # the unique index: a race the check missed
                raise BatchConflict(mapping, batch_id, {"?": "another batch"}) from None
            return self._one_batch(db, batch_id)

    def mark_delivered(self, batch_id: str, checksum: str, delivered_at: datetime,
                       remote_id: str | None = None) -> Batch:
        when = utc_text(delivered_at)
        with self.write("mark a batch delivered") as db:
            current = self._one_batch(db, str(batch_id))
            if current.status == "delivered":
                if current.checksum == checksum:
                    return current
                raise BatchStateError(
                    f"batch {batch_id!r} was already delivered with another checksum "
                    f"({current.checksum}, not {checksum})")
            if current.status != "pending":
                raise BatchStateError(f"batch {batch_id!r} is {current.status}; "
                                      "only a pending batch can be marked delivered")
            db.execute("UPDATE batches SET status = 'delivered', delivered_at = ?, checksum = ?, "
                       "remote_id = ? WHERE id = ?", (when, str(checksum),
                                                      remote_id, str(batch_id)))
            return self._one_batch(db, str(batch_id))

    def expect_checksum(self, batch_id: str, checksum: str) -> Batch:
        with self.write("record a batch's checksum") as db:
            current = self._one_batch(db, str(batch_id))
            if current.status != "pending":
                raise BatchStateError(f"batch {batch_id!r} is {current.status}; only a pending "
                                      "batch's file checksum can be recorded")
            db.execute("UPDATE batches SET expected_checksum = ? WHERE id = ?",
                       (str(checksum), str(batch_id)))
            return self._one_batch(db, str(batch_id))

    def discard_batch(self, batch_id: str, at: datetime | None = None) -> Batch:
        when = utc_text(at)
        with self.write("discard a batch") as db:
            current = self._one_batch(db, str(batch_id))
            if current.status == "discarded":
                return current
            if current.status != "pending":
                raise BatchStateError(f"batch {batch_id!r} is {current.status}; "
                                      "only a pending batch can be discarded")
            db.execute("UPDATE batches SET status = 'discarded', discarded_at = ? WHERE id = ?",
                       (when, str(batch_id)))
            db.execute("UPDATE batch_orders SET live = NULL WHERE batch_id = ?", (str(batch_id),))
            return self._one_batch(db, str(batch_id))

    def pending_batches(self, mapping: str) -> list[Batch]:
        with self.read() as db:
            return self._batches(db, "mapping = ? AND status = 'pending'", (mapping,))

    def batch(self, batch_id: str) -> Batch | None:
        with self.read() as db:
            found = self._batches(db, "id = ?", (str(batch_id),))
        return found[0] if found else None

    def delivered(self, mapping: str, shop_ids: Iterable[str]) -> set[str]:
        ids = shop_id_list(shop_ids)
        out: set[str] = set()
        with self.read() as db:
            for part in chunks(ids, CHUNK):
                out.update(r[0] for r in db.execute(
                    "SELECT o.shop_id FROM batch_orders o JOIN batches b ON b.id = o.batch_id "
                    "WHERE o.mapping = ? AND o.live = 1 AND b.status = 'delivered' "
                    f"AND o.shop_id IN ({_marks(len(part))})", (mapping, *part)))
        return out

    def delivered_count(self, mapping: str, year: int, zone: str = "UTC") -> int:
        start, end = (utc_text(datetime(int(year) + i, 1, 1, tzinfo=ZoneInfo(zone))) for i in (0, 1))
        with self._mutex:
            row = self._db().execute(
                "SELECT COUNT(*) FROM batch_orders o JOIN batches b ON b.id = o.batch_id "
                "WHERE b.mapping = ? AND b.status = 'delivered' AND o.live = 1 "
                "AND b.delivered_at >= ? AND b.delivered_at < ? "
                "AND NOT EXISTS (SELECT 1 FROM credits c WHERE c.mapping = o.mapping AND c.credit_id = o.shop_id)",
                (mapping, start, end)).fetchone()
        return int(row[0])

    # ------------------------------------------------------------------ quarantine

    _Q_COLS = ("mapping, shop_id, number, reason, status, attempts, first_seen, last_seen, "
               "dropped_at")

    @staticmethod
    def _q(r: tuple) -> QuarantineEntry:
        return QuarantineEntry(mapping=r[0], shop_id=r[1], number=r[2], reason=r[3], status=r[4],
                               attempts=r[5], first_seen=utc_parse_required(r[6]),
                               last_seen=utc_parse_required(r[7]), dropped_at=utc_parse(r[8]))

    def quarantine(self, mapping: str, shop_id: str, number: str | None, reason: str,
                   seen_at: datetime) -> QuarantineEntry:
        check_mapping(mapping)
        sid = shop_id_list([shop_id])[0]
        when = utc_text(seen_at)
        with self.write("quarantine an order") as db:
            db.execute(
                "INSERT INTO quarantine (mapping, shop_id, number, reason, status, attempts, "
                "first_seen, last_seen) VALUES (?, ?, ?, ?, 'open', 1, ?, ?) "
                "ON CONFLICT (mapping, shop_id) DO UPDATE SET attempts = quarantine.attempts + 1, "
                "reason = excluded.reason, last_seen = excluded.last_seen, "
                "number = COALESCE(excluded.number, quarantine.number)",
                (mapping, sid, None if number is None else str(number), clean_reason(reason),
                 when, when))
            return self._q(db.execute(f"SELECT {self._Q_COLS} FROM quarantine "
                                      "WHERE mapping = ? AND shop_id = ?", (mapping, sid))
                           .fetchone())

    def release(self, mapping: str, shop_ids: Iterable[str]) -> int:
        ids = shop_id_list(shop_ids)
        removed = 0
        with self.write("release quarantined orders") as db:
            for part in chunks(ids, CHUNK):
                removed += db.execute(
                    f"DELETE FROM quarantine WHERE mapping = ? AND shop_id IN "
                    f"({_marks(len(part))})", (mapping, *part)).rowcount
        return removed

    def drop(self, mapping: str, shop_id: str, reason: str, at: datetime) -> None:
        check_mapping(mapping)
        sid = shop_id_list([shop_id])[0]
        when = utc_text(at)
        with self.write("drop an order") as db:
            db.execute(
                "INSERT INTO quarantine (mapping, shop_id, number, reason, status, attempts, "
                "first_seen, last_seen, dropped_at) VALUES (?, ?, NULL, ?, 'dropped', 0, ?, ?, ?) "
                "ON CONFLICT (mapping, shop_id) DO UPDATE SET status = 'dropped', "
                "reason = excluded.reason, dropped_at = excluded.dropped_at",
                (mapping, sid, clean_reason(reason), when, when, when))

    def retry(self, mapping: str, shop_ids: Iterable[str]) -> int:
        ids = shop_id_list(shop_ids)
        changed = 0
        with self.write("retry quarantined orders") as db:
            for part in chunks(ids, CHUNK):
                changed += db.execute(
                    "UPDATE quarantine SET status = 'open', dropped_at = NULL "
                    f"WHERE mapping = ? AND status = 'dropped' AND shop_id IN "
                    f"({_marks(len(part))})", (mapping, *part)).rowcount
        return changed

    def open_quarantine(self, mapping: str) -> list[QuarantineEntry]:
        with self._mutex:
            rows = self._db().execute(
                f"SELECT {self._Q_COLS} FROM quarantine WHERE mapping = ? AND status = 'open' "
                "ORDER BY first_seen, shop_id", (mapping,)).fetchall()
        return [self._q(r) for r in rows]

    def dropped_entries(self, mapping: str) -> list[QuarantineEntry]:
        with self._mutex:
            rows = self._db().execute(
                f"SELECT {self._Q_COLS} FROM quarantine WHERE mapping = ? AND status = 'dropped' "
                "ORDER BY first_seen, shop_id", (mapping,)).fetchall()
        return [self._q(r) for r in rows]

    def dropped(self, mapping: str) -> set[str]:
        with self._mutex:
            return {r[0] for r in self._db().execute(
                "SELECT shop_id FROM quarantine WHERE mapping = ? AND status = 'dropped'",
                (mapping,))}

    # ------------------------------------------------------------------ webhook hints

    def add_hint(self, mapping: str, shop_id: str, event: str, at: datetime) -> bool:
        check_mapping(mapping)
        sid = shop_id_list([shop_id])[0]
        with self.write("record a webhook hint") as db:
            return db.execute(
                "INSERT INTO hints (mapping, shop_id, event, received_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (mapping, shop_id) DO NOTHING",
                (mapping, sid, str(event)[:100], utc_text(at))).rowcount == 1

    def hints(self, mapping: str) -> list[Hint]:
        return [h for h in self.all_hints(mapping) if h.status == "pending"]

    def all_hints(self, mapping: str) -> list[Hint]:
        with self._mutex:
            rows = self._db().execute(
                "SELECT shop_id, event, received_at, status, reason FROM hints WHERE mapping = ? "
                "ORDER BY received_at, shop_id", (mapping,)).fetchall()
        return [Hint(shop_id=r[0], event=r[1], received_at=utc_parse_required(r[2]), status=r[3], reason=r[4])
                for r in rows]

    def refuse_hint(self, mapping: str, shop_id: str, reason: str, at: datetime) -> None:
        sid = shop_id_list([shop_id])[0]
        with self.write("refuse a webhook hint") as db:
            db.execute("UPDATE hints SET status = 'refused', reason = ? WHERE mapping = ? AND shop_id = ?",
                       (clean_reason(reason), mapping, sid))

    def hint_count(self, mapping: str, since: datetime | None = None) -> int:
        with self._mutex:
            return int(self._db().execute(
                "SELECT COUNT(*) FROM hints WHERE mapping = ? AND received_at >= ?",
                (mapping, utc_text(since) if since else "")).fetchone()[0])

    # ------------------------------------------------------------------ held orders, register key

    def hold(self, mapping: str, orders: Iterable[OrderRef], at: datetime) -> int:
        check_mapping(mapping)
        refs = [o if isinstance(o, OrderRef) else OrderRef(*o) for o in orders]
        with self.write("hold orders for the plan") as db:
            return sum(db.execute(
                "INSERT INTO held (mapping, shop_id, number, order_date, held_at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (mapping, shop_id) DO NOTHING",
                (mapping, o.shop_id, o.number, o.order_date.isoformat(), utc_text(at))).rowcount for o in refs)

    def held(self, mapping: str) -> list[tuple[OrderRef, datetime]]:
        with self._mutex:
            rows = self._db().execute("SELECT shop_id, number, order_date, held_at FROM held WHERE mapping = ? "
                                      "ORDER BY held_at, shop_id", (mapping,)).fetchall()
        return [(OrderRef(r[0], r[1], r[2]), utc_parse_required(r[3])) for r in rows]

    def record_credit(self, mapping: str, entry: CreditEntry) -> None:
        check_mapping(mapping)
        sid = shop_id_list([entry.credit_id])[0]
        with self.write("record a credit") as db:
            db.execute(
                "INSERT INTO credits (mapping, credit_id, order_id, amount, status, reason, recorded_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (mapping, credit_id) DO UPDATE SET "
                "amount = excluded.amount, status = excluded.status, reason = excluded.reason, "
                "recorded_at = excluded.recorded_at",
                (mapping, sid, str(entry.order_id), str(entry.amount), entry.status,
                 None if entry.reason is None else clean_reason(entry.reason),
                 utc_text(entry.recorded_at or datetime.now(timezone.utc))))

    def credits(self, mapping: str, order_ids: Iterable[str] | None = None) -> list[CreditEntry]:
        sql = ("SELECT credit_id, order_id, amount, status, reason, recorded_at FROM credits "
               "WHERE mapping = ?")
        rows: list = []
        with self._mutex:
            db = self._db()
            if order_ids is None:
                rows = db.execute(sql + " ORDER BY recorded_at, credit_id", (mapping,)).fetchall()
            else:
                for part in chunks(shop_id_list(order_ids), CHUNK):
                    rows += db.execute(sql + f" AND order_id IN ({_marks(len(part))}) ORDER BY recorded_at, credit_id",
                                       (mapping, *part)).fetchall()
        return [CreditEntry(r[0], r[1], Decimal(r[2]), r[3], r[4], utc_parse(r[5])) for r in rows]

    def unhold(self, mapping: str, shop_ids: Iterable[str]) -> int:
        ids = shop_id_list(shop_ids)
        removed = 0
        with self.write("release held orders") as db:
            for part in chunks(ids, CHUNK):
                removed += db.execute(f"DELETE FROM held WHERE mapping = ? AND shop_id IN ({_marks(len(part))})",
                                      (mapping, *part)).rowcount
        return removed

    def register_check(self, mapping: str) -> str | None:
        with self._mutex:
            r = self._db().execute("SELECT check_value FROM register_check WHERE mapping = ?",
                                   (mapping,)).fetchone()
        return None if r is None else r[0]

    def set_register_check(self, mapping: str, check_value: str, at: datetime) -> None:
        check_mapping(mapping)
        with self.write("record the register's key check") as db:
            db.execute("INSERT INTO register_check (mapping, check_value, recorded_at) VALUES (?, ?, ?) "
                       "ON CONFLICT (mapping) DO UPDATE SET check_value = excluded.check_value, "
                       "recorded_at = excluded.recorded_at", (mapping, str(check_value), utc_text(at)))

    def forget_register(self, mapping: str) -> int:
        with self.write("forget the debtor register") as db:
            return db.execute("DELETE FROM debtors WHERE mapping = ?", (mapping,)).rowcount

    # ------------------------------------------------------------------ webhook tokens, start

    def add_webhook_token(self, mapping: str, token_hash: str, event: str, at: datetime) -> None:
        check_mapping(mapping)
        with self.write("record a webhook subscription") as db:
            db.execute("INSERT INTO webhook_tokens (token_hash, mapping, event, created_at) "
                       "VALUES (?, ?, ?, ?)", (str(token_hash), mapping, str(event), utc_text(at)))

    def webhook_token(self, token_hash: str) -> WebhookToken | None:
        with self._mutex:
            r = self._db().execute("SELECT token_hash, mapping, event, created_at FROM webhook_tokens "
                                   "WHERE token_hash = ?", (str(token_hash),)).fetchone()
        return None if r is None else WebhookToken(r[0], r[1], r[2], utc_parse_required(r[3]))

    def webhook_tokens(self, mapping: str) -> list[WebhookToken]:
        with self._mutex:
            rows = self._db().execute("SELECT token_hash, mapping, event, created_at FROM webhook_tokens "
                                      "WHERE mapping = ? ORDER BY created_at", (mapping,)).fetchall()
        return [WebhookToken(r[0], r[1], r[2], utc_parse_required(r[3])) for r in rows]

    def remove_webhook_tokens(self, mapping: str, hash_prefix: str) -> int:
        if len(hash_prefix) < 6:
            raise ValueError("give at least 6 characters of the subscription id")
        with self.write("remove a webhook subscription") as db:
            return db.execute("DELETE FROM webhook_tokens WHERE mapping = ? AND substr(token_hash, 1, ?) = ?",
                              (mapping, len(hash_prefix), hash_prefix)).rowcount

    def start_date(self, mapping: str) -> date | None:
        with self._mutex:
            r = self._db().execute("SELECT start_date FROM connector_start WHERE mapping = ?",
                                   (mapping,)).fetchone()
        return None if r is None else date.fromisoformat(r[0])

    def record_start_date(self, mapping: str, day: date, at: datetime) -> date:
        check_mapping(mapping)
        with self.write("record the connector's start") as db:
            db.execute("INSERT INTO connector_start (mapping, start_date, recorded_at) VALUES (?, ?, ?) "
                       "ON CONFLICT (mapping) DO NOTHING", (mapping, day.isoformat(), utc_text(at)))
            return date.fromisoformat(db.execute("SELECT start_date FROM connector_start WHERE mapping = ?",
                                                 (mapping,)).fetchone()[0])

    def clear_hints(self, mapping: str, shop_ids: Iterable[str]) -> int:
        ids = shop_id_list(shop_ids)
        removed = 0
        with self.write("clear webhook hints") as db:
            for part in chunks(ids, CHUNK):
                removed += db.execute(
                    f"DELETE FROM hints WHERE mapping = ? AND shop_id IN ({_marks(len(part))})",
                    (mapping, *part)).rowcount
        return removed

    # ------------------------------------------------------------------ enable / disable

    def set_enabled(self, mapping: str, enabled: bool, at: datetime,
                    reason: str | None = None) -> None:
        check_mapping(mapping)
        with self.write("enable or disable a mapping") as db:
            db.execute(
                "INSERT INTO mapping_switch (mapping, enabled, changed_at, reason) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (mapping) DO UPDATE SET "
                "enabled = excluded.enabled, changed_at = excluded.changed_at, "
                "reason = excluded.reason",
                (mapping, 1 if enabled else 0, utc_text(at),
                 None if reason is None else clean_reason(reason)))

    def enabled_state(self, mapping: str) -> EnabledState:
        with self._mutex:
            row = self._db().execute(
                "SELECT enabled, changed_at, reason FROM mapping_switch WHERE mapping = ?",
                (mapping,)).fetchone()
        if row is None:
            return EnabledState(enabled=True)
        return EnabledState(enabled=bool(row[0]), changed_at=utc_parse(row[1]), reason=row[2])

    # ------------------------------------------------------------------ debtor register

    def debtor_lookup(self, mapping: str, key_hash: str) -> str | None:
        check_key_hash(key_hash)
        with self._mutex:
            row = self._db().execute(
                "SELECT debtor_number FROM debtors WHERE mapping = ? AND key_hash = ?",
                (mapping, key_hash)).fetchone()
        return None if row is None else row[0]

    def debtor_remember(self, mapping: str, key_hash: str, debtor_number: str) -> str:
        return self.debtor_remember_many(mapping, {key_hash: debtor_number})[key_hash]

    def debtor_remember_many(self, mapping: str, entries: Mapping[str, str],
                             sequence_at_least: int | None = None) -> dict[str, str]:
        check_mapping(mapping)
        for h in entries:
            check_key_hash(h)
        with self.write("remember debtors") as db:
            db.executemany("INSERT INTO debtors (mapping, key_hash, debtor_number) VALUES (?, ?, ?) "
                           "ON CONFLICT (mapping, key_hash) DO NOTHING",
                           [(mapping, h, str(n)) for h, n in entries.items()])
            registered = {h: db.execute("SELECT debtor_number FROM debtors WHERE mapping = ? AND key_hash = ?",
                                        (mapping, h)).fetchone()[0] for h in entries}
            if sequence_at_least is not None:
                db.execute("INSERT INTO sequences (mapping, name, value) VALUES (?, ?, ?) "
                           "ON CONFLICT (mapping, name) DO UPDATE SET value = "
                           "CASE WHEN excluded.value > sequences.value THEN excluded.value ELSE sequences.value END",
                           (mapping, DEBTOR_SEQUENCE, int(sequence_at_least)))
            return registered

    def debtor_number_taken(self, mapping: str, debtor_number: str) -> bool:
        with self._mutex:
            row = self._db().execute(
                "SELECT 1 FROM debtors WHERE mapping = ? AND debtor_number = ? LIMIT 1",
                (mapping, str(debtor_number))).fetchone()
        return row is not None

    def debtor_next_number(self, mapping: str, start: int) -> int:
        check_mapping(mapping)
        start = int(start)
        with self.write("take a debtor number") as db:
            row = db.execute("SELECT value FROM sequences WHERE mapping = ? AND name = ?",
                             (mapping, DEBTOR_SEQUENCE)).fetchone()
            number = start if row is None else max(start, row[0] + 1)
            db.execute("INSERT INTO sequences (mapping, name, value) VALUES (?, ?, ?) "
                       "ON CONFLICT (mapping, name) DO UPDATE SET value = excluded.value",
                       (mapping, DEBTOR_SEQUENCE, number))
            return number

    # ------------------------------------------------------------------ run lock

    def lock_path(self, mapping: str) -> Path:
        return lock_path_for(self.path, check_mapping(mapping))

    @staticmethod
    def _read_holder(path: Path, mapping: str) -> LockInfo | None:
        try:
            data = json.loads(path.read_text("utf-8") or "null")
            return LockInfo(mapping=mapping, pid=int(data["pid"]),
                            started_at=utc_parse(data.get("started_at")), host=data.get("host"))
        except (OSError, ValueError, TypeError, KeyError):
            return None

    def lock_holder(self, mapping: str) -> LockInfo | None:
        import fcntl
        path = self.lock_path(mapping)
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return self._read_holder(path, mapping) or LockInfo(mapping=mapping, pid=0)
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    @contextmanager
    def run_lock(self, mapping: str, wait_seconds: float) -> Iterator[LockInfo]:
        self._writable("take the run lock")
        try:
            import fcntl
        except ImportError:       # pragma: no cover - Windows
            raise StateError("the SQLite run lock needs fcntl (POSIX); "
                             "this platform has none") from None
        path = self.lock_path(mapping)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            deadline = time.monotonic() + max(0.0, float(wait_seconds))
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        holder = self._read_holder(path, mapping)
                        raise LockBusy(mapping, float(wait_seconds), holder,
                                       own=holder is not None and holder.pid == os.getpid()) \
                            from None
                    time.sleep(min(0.05, left))
            info = LockInfo(mapping=mapping, pid=os.getpid(),
                            started_at=datetime.now(timezone.utc), host=socket.gethostname())
            payload = json.dumps({"pid": info.pid, "started_at": utc_text(info.started_at),
                                  "host": info.host}).encode()
            os.ftruncate(fd, 0)
            os.pwrite(fd, payload, 0)
            try:
                yield info
            finally:
                os.ftruncate(fd, 0)          # while still held: no stale holder info
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
