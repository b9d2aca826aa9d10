"""The state store: one small interface, in domain terms, behind which the storage lives.

The engine talks to :class:`StateStore` only. It never sees SQL, connections or files, so a
PostgreSQL backend (many workers, many shops, one database) can follow without touching the
engine. Everything is scoped by a ``mapping`` name, so one database serves several mappings.

What the store keeps (design principle 6, bookkeeping spec 10): order shop id, order number
and order date; batch ids, file names, checksums, remote ids; statuses, reasons, counts,
timestamps and keyed hashes. No names, addresses, raw e-mail addresses, amounts or secrets.
E-mail-like text inside a free-form reason is redacted before it is stored.

Exactly once (principle 5) rests on the outbox protocol:

1. ``create_batch`` records a batch and its orders as *pending* before the document is
   written; it refuses, atomically, an order that already sits in a pending or delivered batch
   of the same mapping;
2. the sink writes the document (a temporary file, whose checksum ``expect_checksum``
   records before the atomic rename; or an API call);
3. ``mark_delivered`` records it as delivered.

After a crash, ``pending_batches`` shows what was in flight; the engine finishes it (its own
file is there, proved by the recorded checksum: ``mark_delivered``) or redoes it
(``discard_batch`` frees its orders).

Timestamps passed in must be timezone-aware ``datetime`` values; they are stored as UTC ISO
strings and come back as aware UTC datetimes.
"""

from __future__ import annotations

import abc
import os
import re
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from decimal import Decimal
from datetime import date, datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Mapping
from urllib.parse import urlsplit

from engine.errors import MapperError

if TYPE_CHECKING:
    from engine.ops.state.sql import SqlStateStore

__all__ = [
    "Batch",
    "BatchConflict",
    "BatchStateError",
    "EnabledState",
    "Hint",
    "LockBusy",
    "LockInfo",
    "OrderRef",
    "QuarantineEntry",
    "ReadOnlyStateError",
    "Run",
    "StateError",
    "StateStore",
    "StateVersionError",
    "UnknownBatch",
    "WebhookToken",
    "default_state_path",
    "open_state",
]


# --------------------------------------------------------------------------- exceptions


class StateError(MapperError):
    """The state store failed or refused an operation."""


class StateVersionError(StateError):
    """The database was written by a newer mapper than this one."""

    def __init__(self, version: int, known: int, location: str = ""):
        self.version, self.known, self.location = version, known, location
        where = f" ({location})" if location else ""
        super().__init__(
            f"state database was written by a newer mapper (schema v{version}); upgrade mapper"
            f"{where}")


class ReadOnlyStateError(StateError):
    """A write was attempted on a store opened read-only (dry-run)."""


class BatchConflict(StateError):
    """``create_batch`` refused: an order is already in a pending or delivered batch."""

    def __init__(self, mapping: str, batch_id: str, conflicts: Mapping[str, str]):
        #: shop_id -> id of the batch that already holds it
        self.mapping, self.batch_id, self.conflicts = mapping, batch_id, dict(conflicts)
        shown = ", ".join(f"order {sid} (in batch {bid})"
                          for sid, bid in sorted(self.conflicts.items())[:5])
        more = f" and {len(self.conflicts) - 5} more" if len(self.conflicts) > 5 else ""
        super().__init__(
            f"batch {batch_id!r} for mapping {mapping!r} refused: {len(self.conflicts)} order(s) "
            f"already in a pending or delivered batch: {shown}{more}")


class UnknownBatch(StateError):
    """No batch with this id."""

    def __init__(self, batch_id: str):
        self.batch_id = batch_id
        super().__init__(f"no batch with id {batch_id!r} in the state store")


class BatchStateError(StateError):
    """The batch exists but is not in a state that allows the operation."""


class LockBusy(StateError):
    """Another run of the same mapping holds the run lock."""

    def __init__(self, mapping: str, waited: float, holder: "LockInfo | None" = None,
                 own: bool = False):
        self.mapping, self.waited, self.holder = mapping, waited, holder
        if holder is not None:
            who = f"pid {holder.pid}"
            if holder.host:
                who += f" on {holder.host}"
            if holder.started_at is not None:
                who += f", started {holder.started_at.strftime('%Y-%m-%d %H:%M:%S')} UTC"
            if own:
                who += " (this process)"
        else:
            who = "another process"
        super().__init__(
            f"another run of mapping {mapping!r} is in progress ({who}); "
            f"gave up after waiting {waited:g}s")


# --------------------------------------------------------------------------- value types


def _as_date(value: object) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        return date.fromisoformat(value[:10])
    raise TypeError(f"order_date must be a date, got {type(value).__name__}")


@dataclass(frozen=True, slots=True)
class OrderRef:
    """An order as the state knows it: shop id, order number, order date. Nothing else."""

    shop_id: str
    number: str
    order_date: date

    def __post_init__(self) -> None:
        object.__setattr__(self, "shop_id", _key(self.shop_id, "shop_id"))
        object.__setattr__(self, "number", str(self.number))
        object.__setattr__(self, "order_date", _as_date(self.order_date))


@dataclass(frozen=True, slots=True)
class Batch:
    id: str
    mapping: str
    file_name: str
    status: str                       # 'pending' | 'delivered' | 'discarded'
    created_at: datetime
    orders: tuple[OrderRef, ...] = ()
    delivered_at: datetime | None = None
    checksum: str | None = None
    remote_id: str | None = None
    run_id: int | None = None
    discarded_at: datetime | None = None
    #: the file's checksum, recorded before it was renamed into place (the proof recovery needs)
    expected_checksum: str | None = None


@dataclass(frozen=True, slots=True)
class Run:
    id: int
    mapping: str
    started_at: datetime
    mode: str
    finished_at: datetime | None = None
    outcome: str | None = None
    counts: Mapping[str, int] = field(default_factory=dict)
    report_path: str | None = None


@dataclass(frozen=True, slots=True)
class QuarantineEntry:
    mapping: str
    shop_id: str
    number: str | None
    reason: str
    status: str                       # 'open' | 'dropped'
    attempts: int
    first_seen: datetime
    last_seen: datetime
    dropped_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Hint:
    shop_id: str
    event: str
    received_at: datetime
    status: str = "pending"            # 'pending' | 'refused' (its look-up was refused: not retried)
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class CreditEntry:
    """A credit the shop showed for a delivered order, and what became of it (migration 7)."""

    credit_id: str
    order_id: str
    amount: Decimal
    status: str                        # 'booked' | 'settled' | 'flagged' | 'waiting'
    reason: str | None
    recorded_at: datetime | None


@dataclass(frozen=True, slots=True)
class WebhookToken:
    """A subscription's secret address, as the state knows it: a hash, never the token."""

    token_hash: str
    mapping: str
    event: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class EnabledState:
    enabled: bool
    changed_at: datetime | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class LockInfo:
    """Who holds a run lock (written into the lock so that a waiting run can say so)."""

    mapping: str
    pid: int
    started_at: datetime | None = None
    host: str | None = None


# --------------------------------------------------------------------------- helpers shared by backends

_EMAIL = re.compile(r"[^\s<>()\[\],;:\"']+@[^\s<>()\[\],;:\"']+\.[A-Za-z]{2,}")
MAX_REASON = 500


def utc_text(value: datetime | None) -> str:
    """An aware datetime (None: now) as a fixed-width UTC ISO string that sorts correctly."""
    if value is None:
        value = datetime.now(timezone.utc)
    if not isinstance(value, datetime):
        raise TypeError(f"timestamp must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("timestamp must be timezone-aware (state timestamps are stored as UTC)")
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def utc_parse(text: str | None) -> datetime | None:
    if text is None:
        return None
    return utc_parse_required(text)


def utc_parse_required(text: str) -> datetime:
    """:func:`utc_parse` of a timestamp that is always there (a ``NOT NULL`` column)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc)


def clean_reason(reason: object) -> str:
    """A reason as stored: e-mail-like text redacted, whitespace collapsed, length capped."""
    text = _EMAIL.sub("<e-mail>", str(reason))
    text = " ".join(text.split())
    if len(text) > MAX_REASON:
        text = text[: MAX_REASON - 1] + "…"
    return text


def _key(value: object, what: str) -> str:
    text = str(value).strip()
    if not text:
        raise ValueError(f"{what} must not be empty")
    return text


def check_mapping(mapping: object) -> str:
    if not isinstance(mapping, str) or not mapping.strip():
        raise ValueError("mapping name must be a non-empty string")
    return mapping


def check_key_hash(key_hash: object) -> str:
    """Refuse anything that looks like a raw key (an e-mail address) instead of a keyed hash."""
    if not isinstance(key_hash, str) or not re.fullmatch(r"[A-Za-z0-9:_+/=.-]{16,256}", key_hash) \
            or "@" in key_hash:
        raise ValueError("key_hash must be a keyed hash (e.g. hex HMAC-SHA-256), "
                         "never a raw e-mail address")
    return key_hash


def check_counts(counts: Mapping[str, int] | None) -> dict[str, int]:
    out: dict[str, int] = {}
    for name, value in (counts or {}).items():
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name):
            raise ValueError(f"count name {name!r} must be a short identifier")
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"count {name!r} must be an integer, got {type(value).__name__}")
        out[name] = value
    return out


def shop_id_list(shop_ids: Iterable[object]) -> list[str]:
    """Distinct shop ids as strings, order kept (a bare string is one id, not characters)."""
    if isinstance(shop_ids, (str, int)):
        shop_ids = [shop_ids]
    return list(dict.fromkeys(_key(s, "shop_id") for s in shop_ids))


# --------------------------------------------------------------------------- the interface


class StateStore(abc.ABC):
    """What the engine may ask of the state. Backends implement every method.

    A store opened with ``readonly=True`` raises :class:`ReadOnlyStateError` from every write
    method (and from :meth:`run_lock`) and answers reads from what is there — an empty store
    if nothing is.
    """

    readonly: bool = False
    #: where the state lives, for messages (never contains credentials)
    location: str = ""

    # ---- lifecycle
    @abc.abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> "StateStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- runs
    @abc.abstractmethod
    def begin_run(self, mapping: str, started_at: datetime, mode: str) -> int:
        """Record the start of a run; returns its id."""

    @abc.abstractmethod
    def finish_run(self, run_id: int, outcome: str, counts: Mapping[str, int],
                   report_path: str | None = None, finished_at: datetime | None = None) -> None:
        """Record a run's end (finished_at defaults to now)."""

    @abc.abstractmethod
    def last_runs(self, mapping: str, limit: int = 10) -> list[Run]:
        """The most recent runs, newest first."""

    # ---- batches (outbox protocol)
    @abc.abstractmethod
    def create_batch(self, mapping: str, batch_id: str, file_name: str,
                     orders: Iterable[OrderRef], *, created_at: datetime | None = None,
                     run_id: int | None = None) -> Batch:
        """Record a pending batch and its orders, before the document is written.

        Atomic: raises :class:`BatchConflict` (and records nothing) if any order is already in
        a pending or delivered batch of this mapping; :class:`BatchStateError` if the id is taken.
        """

    @abc.abstractmethod
    def mark_delivered(self, batch_id: str, checksum: str, delivered_at: datetime,
                       remote_id: str | None = None) -> Batch:
        """pending -> delivered. Repeating it with the same checksum is a no-op."""

    @abc.abstractmethod
    def expect_checksum(self, batch_id: str, checksum: str) -> Batch:
        """Record, before a pending batch's file is renamed into place, what it will hash to."""

    @abc.abstractmethod
    def discard_batch(self, batch_id: str, at: datetime | None = None) -> Batch:
        """pending -> discarded, freeing its orders for a later batch. Delivered: refused."""

    @abc.abstractmethod
    def pending_batches(self, mapping: str) -> list[Batch]:
        """Batches recorded but not (yet) delivered, oldest first, with their orders."""

    @abc.abstractmethod
    def batch(self, batch_id: str) -> Batch | None: ...

    @abc.abstractmethod
    def delivered(self, mapping: str, shop_ids: Iterable[str]) -> set[str]:
        """Which of these shop ids are in a delivered batch of this mapping."""

    @abc.abstractmethod
    def delivered_count(self, mapping: str, year: int, zone: str = "UTC") -> int:
        """Orders in batches delivered in this calendar year, as the clock in ``zone`` tells it
        (the delivery timestamps are UTC; ``Europe/Amsterdam``'s 2026 starts at 2025-12-31T23:00Z)."""

    # ---- quarantine
    @abc.abstractmethod
    def quarantine(self, mapping: str, shop_id: str, number: str | None, reason: str,
                   seen_at: datetime) -> QuarantineEntry:
        """Upsert: attempts += 1, first_seen kept, last_seen and reason updated.

        A dropped entry stays dropped (dropping is a person's decision; :meth:`retry` undoes it).
        """

    @abc.abstractmethod
    def release(self, mapping: str, shop_ids: Iterable[str]) -> int:
        """Remove entries (the orders went through). Returns how many were removed."""

    @abc.abstractmethod
    def drop(self, mapping: str, shop_id: str, reason: str, at: datetime) -> None:
        """Give up on an order: kept with status 'dropped' and the reason, not deleted."""

    @abc.abstractmethod
    def retry(self, mapping: str, shop_ids: Iterable[str]) -> int:
        """Back to 'open' (attempts kept). Returns how many entries changed."""

    @abc.abstractmethod
    def open_quarantine(self, mapping: str) -> list[QuarantineEntry]:
        """Open entries, oldest first."""

    @abc.abstractmethod
    def dropped(self, mapping: str) -> set[str]: ...

    @abc.abstractmethod
    def dropped_entries(self, mapping: str) -> list[QuarantineEntry]:
        """Dropped orders with their number and reason (for retry by order number)."""

    # ---- webhook hints
    @abc.abstractmethod
    def add_hint(self, mapping: str, shop_id: str, event: str, at: datetime) -> bool:
        """Remember an order id reported by a webhook. Idempotent; True if it was new."""

    @abc.abstractmethod
    def hints(self, mapping: str) -> list[Hint]: ...

    @abc.abstractmethod
    def clear_hints(self, mapping: str, shop_ids: Iterable[str]) -> int: ...

    @abc.abstractmethod
    def refuse_hint(self, mapping: str, shop_id: str, reason: str, at: datetime) -> None:
        """Keep a hint that must not be looked up again (its reason is shown in `hints list`)."""

    @abc.abstractmethod
    def all_hints(self, mapping: str) -> list[Hint]:
        """Pending and refused hints (``hints`` gives the pending ones: those a run fetches)."""

    @abc.abstractmethod
    def hint_count(self, mapping: str, since: datetime | None = None) -> int:
        """Hints received since ``since`` (all kept hints if None): the listener's bounds."""

    # ---- orders held by the plan's limit
    @abc.abstractmethod
    def hold(self, mapping: str, orders: Iterable[OrderRef], at: datetime) -> int:
        """Remember orders the plan's limit held back (idempotent); how many were new."""

    @abc.abstractmethod
    def held(self, mapping: str) -> list[tuple[OrderRef, datetime]]:
        """Held orders with when they were first held, oldest first."""

    @abc.abstractmethod
    def unhold(self, mapping: str, shop_ids: Iterable[str]) -> int: ...

    # ---- credit notes
    @abc.abstractmethod
    def record_credit(self, mapping: str, entry: CreditEntry) -> None:
        """Remember a credit and what became of it (replaces the entry of that credit id)."""

    @abc.abstractmethod
    def credits(self, mapping: str, order_ids: Iterable[str] | None = None) -> list[CreditEntry]:
        """The credits of those orders (all: None), oldest first."""

    # ---- the debtor register's key
    @abc.abstractmethod
    def register_check(self, mapping: str) -> str | None:
        """The check value of the key the register's hashes were made with (None: not yet)."""

    @abc.abstractmethod
    def set_register_check(self, mapping: str, check_value: str, at: datetime) -> None: ...

    @abc.abstractmethod
    def forget_register(self, mapping: str) -> int:
        """Delete the register's entries (its hashes are useless under another key); the
        number sequence stays, so no number is given twice. Returns how many were deleted."""

    # ---- webhook subscriptions and the connector's start
    @abc.abstractmethod
    def add_webhook_token(self, mapping: str, token_hash: str, event: str, at: datetime) -> None: ...

    @abc.abstractmethod
    def webhook_token(self, token_hash: str) -> WebhookToken | None: ...

    @abc.abstractmethod
    def webhook_tokens(self, mapping: str) -> list[WebhookToken]: ...

    @abc.abstractmethod
    def remove_webhook_tokens(self, mapping: str, hash_prefix: str) -> int: ...

    @abc.abstractmethod
    def start_date(self, mapping: str) -> date | None:
        """The earliest creation date the connector considers on its own (None: never run)."""

    @abc.abstractmethod
    def record_start_date(self, mapping: str, day: date, at: datetime) -> date:
        """Record it once (the first run or the install); returns the one in force."""

    # ---- enable / disable
    @abc.abstractmethod
    def set_enabled(self, mapping: str, enabled: bool, at: datetime,
                    reason: str | None = None) -> None: ...

    @abc.abstractmethod
    def enabled_state(self, mapping: str) -> EnabledState:
        """Enabled flag with when/why it last changed (enabled, no change, by default)."""

    def is_enabled(self, mapping: str) -> bool:
        return self.enabled_state(mapping).enabled

    # ---- debtor register
    @abc.abstractmethod
    def debtor_lookup(self, mapping: str, key_hash: str) -> str | None: ...

    @abc.abstractmethod
    def debtor_remember(self, mapping: str, key_hash: str, debtor_number: str) -> str:
        """Remember key -> debtor. Never overwrites: returns the number actually registered."""

    def debtor_remember_many(self, mapping: str, entries: Mapping[str, str],
                             sequence_at_least: int | None = None) -> dict[str, str]:
        """:meth:`debtor_remember` for many keys, and the sequence moved up to at least
        ``sequence_at_least``: what each key is registered under afterwards. A backend does
        it in one transaction (one commit instead of one per debtor); this default does not."""
        registered = {h: self.debtor_remember(mapping, h, n) for h, n in entries.items()}
        if sequence_at_least is not None:
            self.debtor_next_number(mapping, sequence_at_least)  # may skip one number: never reuses one
        return registered

    @abc.abstractmethod
    def debtor_next_number(self, mapping: str, start: int) -> int:
        """Next number of a sequence that never hands out a number twice (at least ``start``)."""

    @abc.abstractmethod
    def debtor_number_taken(self, mapping: str, debtor_number: str) -> bool:
        """Whether some key is registered under this debtor number (e.g. an imported debtor)."""

    # ---- run lock
    @abc.abstractmethod
    def lock_holder(self, mapping: str) -> LockInfo | None:
        """Who holds the run lock now (None: no live process), without taking it."""

    @abc.abstractmethod
    def run_lock(self, mapping: str, wait_seconds: float) -> AbstractContextManager[LockInfo]:
        """Exclusive lock per mapping across processes; gone when the holder dies.

        Raises :class:`LockBusy` after ``wait_seconds``.
        """


# --------------------------------------------------------------------------- opening


def default_state_path() -> Path:
    """``$MAPPER_STATE``, else ``$XDG_DATA_HOME/mapper/state.sqlite``, else
    ``~/.local/share/mapper/state.sqlite``."""
    explicit = os.environ.get("MAPPER_STATE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg and os.path.isabs(os.path.expanduser(xdg)) \
        else Path.home() / ".local" / "share"
    return base / "mapper" / "state.sqlite"


def _sqlite_path(url: str) -> Path:
    # sqlite:///abs/path, sqlite:////abs/path, sqlite:relative/path, sqlite://./relative
    rest = url[len("sqlite:"):]
    if rest.startswith("//"):
        rest = rest[2:]
    rest = rest.split("?", 1)[0]
    if rest.startswith("/"):
        rest = "/" + rest.lstrip("/")
    if not rest:
        raise StateError(f"state URL {url!r} names no file")
    return Path(rest).expanduser()


def open_state(url_or_path: str | os.PathLike | None = None, *,
               readonly: bool = False) -> SqlStateStore:
    """Open the state store named by a path or URL (None/empty: :func:`default_state_path`).

    ``PATH`` or ``sqlite:///PATH`` -> SQLite; ``postgresql://...`` -> PostgreSQL.
    """
    if url_or_path is None or str(url_or_path).strip() == "":
        from_env = os.environ.get("MAPPER_STATE", "").strip()
        target: str = from_env if "://" in from_env else str(default_state_path())
    else:
        target = os.fspath(url_or_path).strip()
    scheme = urlsplit(target).scheme.lower() if "://" in target or target.startswith("sqlite:") \
        else ""
    if scheme in ("", "file") or len(scheme) == 1:    # a plain path (or a drive letter)
        path = Path(target[len("file://"):] if scheme == "file" else target).expanduser()
    elif scheme == "sqlite":
        path = _sqlite_path(target)
    elif scheme.split("+")[0] in ("postgresql", "postgres"):
        from engine.ops.state.postgres import PostgresStateStore
        return PostgresStateStore(target, readonly=readonly)
    else:
        raise StateError(f"unsupported state store {scheme + '://'!r}; "
                         "use a file path, sqlite:///path or postgresql://…")
    from engine.ops.state.sqlite import SQLiteStateStore
    return SQLiteStateStore(path, readonly=readonly)
