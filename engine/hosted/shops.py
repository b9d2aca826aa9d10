"""The shops registry: who is served, on which plan, when their day runs, and their sealed secrets.

A shop's state rows (batches, quarantine, hints, debtor register, runs) live in the same
tables as one shop's, under the scope ``<shop id>/<mapping name>`` (:func:`scope`), so the
runner and the state store are those of `mapper run`, unchanged.

Scheduling is ours, not the job queue's (spec/hosted.md §4): each shop has ``next_run_at``;
:meth:`ShopRegistry.claim_due` hands out the shops that are due in one transaction, so two
ticks never claim a shop twice, and a tick after an outage catches up on every shop it
missed. A finished run moves ``next_run_at`` to the next daily slot, a failed one to a retry
(1 minute, doubling to 6 hours); a run that quarantines is a success.
"""

from __future__ import annotations

import hashlib
import json
import secrets as _random
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from engine.errors import ConfigError
from engine.io.http.client import is_loopback_host
from engine.ops.state.base import StateError, clean_reason, utc_parse, utc_parse_required, utc_text
from engine.ops.state.sql import SqlStateStore
from engine.hosted.crypto import SecretBox

__all__ = ["PLANS", "STATUSES", "Shop", "ShopRegistry", "ShopSecrets", "UnknownShop", "retry_delay",
           "scope"]

PLANS = ("basis", "plus")
STATUSES = ("active", "disabled", "removed")
#: the night the daily runs are spread over, in minutes after midnight where the shops are
NIGHT = (60, 6 * 60)               # 01:00 up to 06:00
ZONE = ZoneInfo("Europe/Amsterdam")
RETRY_FIRST, RETRY_MAX = timedelta(minutes=1), timedelta(hours=6)
#: a claimed shop whose run never reports back is due again after this long
CLAIM_LEASE = timedelta(hours=1)
_ID_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"   # no 0/o, 1/l/i: read aloud on the phone


class UnknownShop(StateError):
    exit_code = 2

    def __init__(self, shop_id: str):
        super().__init__(f"no shop {shop_id!r} in the registry; `mapper shops list` shows them")


def scope(shop_id: str, mapping_name: str) -> str:
    """The state scope of one shop's runs of one mapping."""
    return f"{shop_id}/{mapping_name}"


def retry_delay(failures: int) -> timedelta:
    """After the n-th failure in a row: 1 min, 2, 4, … up to 6 h."""
    return min(RETRY_FIRST * (2 ** max(0, failures - 1)), RETRY_MAX) if failures < 20 else RETRY_MAX


def next_daily_run(run_minute: int, after: datetime) -> datetime:
    """The first moment after ``after`` at which the local clock shows ``run_minute``."""
    local = after.astimezone(ZONE)
    day = local.date()
    for extra in range(3):
        candidate = datetime(day.year, day.month, day.day, run_minute // 60, run_minute % 60,
                             tzinfo=ZONE) + timedelta(days=extra)
        if candidate > local:
            return candidate.astimezone(timezone.utc)
    raise AssertionError("unreachable")  # pragma: no cover


def _night_minute(shop_id: str) -> int:
    digest = int.from_bytes(hashlib.sha256(shop_id.encode()).digest()[:4], "big")
    return NIGHT[0] + digest % (NIGHT[1] - NIGHT[0])


@dataclass(frozen=True)
class Shop:
    id: str
    name: str
    api_root: str
    status: str
    plan: str
    destination: str
    run_minute: int
    next_run_at: datetime | None
    contact_name: str | None
    contact_email: str | None
    status_reason: str | None
    failures: int
    last_error: str | None
    created_at: datetime
    changed_at: datetime
    run_on_hint: bool = False

    @property
    def run_time(self) -> str:
        return f"{self.run_minute // 60:02d}:{self.run_minute % 60:02d}"


@dataclass(frozen=True)
class ShopSecrets:
    ccv_public: str
    ccv_secret: str
    debtor_key: str
    licence_code: str | None = None
    asperion: dict[str, str] | None = None

    def __repr__(self) -> str:                       # never in a log line or a traceback
        return "ShopSecrets(<sealed>)"

    __str__ = __repr__


_COLS = ("id, name, api_root, status, plan, destination, run_minute, next_run_at, contact_name, "
         "contact_email, status_reason, failures, last_error, created_at, changed_at, run_on_hint")


def _shop(r: tuple) -> Shop:
    return Shop(id=r[0], name=r[1], api_root=r[2], status=r[3], plan=r[4], destination=r[5],
                run_minute=int(r[6]), next_run_at=utc_parse(r[7]), contact_name=r[8],
                contact_email=r[9], status_reason=r[10], failures=int(r[11]), last_error=r[12],
                created_at=utc_parse_required(r[13]), changed_at=utc_parse_required(r[14]), run_on_hint=bool(r[15]))


def check_api_root(url: str) -> str:
    parts = urlsplit(url.strip())
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ConfigError(f"the shop URL {url!r} is not a web address",
                          hint="give it as https://yourshop.ccvshop.nl")
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise ConfigError(f"the shop URL {url!r} is plain http: its API keys would travel in clear",
                          hint="use https://")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ConfigError("the shop URL must be the shop's address only (no user, query or #)")
    return f"{parts.scheme}://{parts.netloc}".rstrip("/")


class ShopRegistry:
    """The ``shops`` table of a state store (SQLite or PostgreSQL), secrets sealed by ``box``."""

    def __init__(self, store: SqlStateStore, box: SecretBox | None = None):
        self.store = store
        self.box = box

    def _box(self) -> SecretBox:
        if self.box is None:
            self.box = SecretBox.from_env()
        return self.box

    @staticmethod
    def _public_hash(api_public: str) -> str:
        # the public half of a key pair is no secret, but a hash keeps it out of a dump anyway
        return hashlib.sha256(b"mapper api_public|" + api_public.encode()).hexdigest()

    # ---- reading
    def get(self, shop_id: str) -> Shop:
        with self.store.read() as db:
            row = db.execute(f"SELECT {_COLS} FROM shops WHERE id = ?", (shop_id,)).fetchone()
        if row is None:
            raise UnknownShop(shop_id)
        return _shop(row)

    def all(self, include_removed: bool = True) -> list[Shop]:
        where = "" if include_removed else "WHERE status <> 'removed' "
        with self.store.read() as db:
            rows = db.execute(f"SELECT {_COLS} FROM shops {where}ORDER BY created_at, id").fetchall()
        return [_shop(r) for r in rows]

    def by_api_public(self, api_public: str) -> Shop | None:
        with self.store.read() as db:
            row = db.execute(f"SELECT {_COLS} FROM shops WHERE api_public_hash = ?",
                             (self._public_hash(api_public),)).fetchone()
        return None if row is None else _shop(row)

    def secrets(self, shop_id: str) -> ShopSecrets:
        with self.store.read() as db:
            row = db.execute("SELECT secrets FROM shops WHERE id = ?", (shop_id,)).fetchone()
        if row is None:
            raise UnknownShop(shop_id)
        if row[0] is None:
            raise StateError(f"shop {shop_id} was removed: its keys are deleted")
        data = json.loads(self._box().open(row[0], f"the secrets of shop {shop_id}"))
        return ShopSecrets(**data)

    # ---- writing
    def add(self, name: str, api_root: str, *, ccv_public: str, ccv_secret: str, now: datetime,
            plan: str = "plus", licence_code: str | None = None, contact_name: str | None = None,
            contact_email: str | None = None, asperion: dict[str, str] | None = None,
            first_run_at: datetime | None = None, run_on_hint: bool = False) -> Shop:
        name = " ".join(str(name).split())
        if not name or len(name) > 200:
            raise ConfigError("a shop needs a name of 1 to 200 characters")
        if plan not in PLANS:
            raise ConfigError(f"plan {plan!r} is not known", hint="basis (250 invoices a year) or plus")
        if not ccv_public or not ccv_secret:
            raise ConfigError("a shop needs its CCV Shop API key pair",
                              hint="set CCVSHOP_PUBLIC_KEY and CCVSHOP_SECRET_KEY")
        root = check_api_root(api_root)
        sealed = self._box().seal(json.dumps({
            "ccv_public": ccv_public, "ccv_secret": ccv_secret, "licence_code": licence_code,
            "debtor_key": _random.token_hex(32), "asperion": asperion}))
        stamp = utc_text(now)
        with self.store.write("add a shop") as db:
            public_hash = self._public_hash(ccv_public)
            if db.execute("SELECT 1 FROM shops WHERE api_public_hash = ?", (public_hash,)).fetchone():
                raise ConfigError("a shop with this CCV public key is already registered")
            while True:
                shop_id = "".join(_random.choice(_ID_ALPHABET) for _ in range(6))
                if not db.execute("SELECT 1 FROM shops WHERE id = ?", (shop_id,)).fetchone():
                    break
            minute = _night_minute(shop_id)
            first = first_run_at or next_daily_run(minute, now)
            db.execute(
                f"INSERT INTO shops ({_COLS}, secrets, api_public_hash) VALUES "
                f"(?, ?, ?, 'active', ?, ?, ?, ?, ?, ?, NULL, 0, NULL, ?, ?, ?, ?, ?)",
                (shop_id, name, root, plan, "api" if asperion else "outbox", minute, utc_text(first),
                 contact_name, contact_email, stamp, stamp, 1 if run_on_hint else 0, sealed, public_hash))
        return self.get(shop_id)

    def update_details(self, shop_id: str, now: datetime, *, name: str, contact_email: str | None,
                       licence_code: str | None = None) -> Shop:
        """The owner's details from the App Store form again (its *Edit*); a licence code of
        None keeps the one stored."""
        name = " ".join(str(name).split())
        if not name or len(name) > 200:
            raise ConfigError("a shop needs a name of 1 to 200 characters")
        secrets = self.secrets(shop_id)
        data = {"ccv_public": secrets.ccv_public, "ccv_secret": secrets.ccv_secret,
                "licence_code": secrets.licence_code if licence_code is None else licence_code,
                "debtor_key": secrets.debtor_key, "asperion": secrets.asperion}
        with self.store.write("change a shop's details") as db:
            db.execute("UPDATE shops SET name = ?, contact_name = ?, contact_email = ?, secrets = ?, "
                       "changed_at = ? WHERE id = ?",
                       (name, name, contact_email, self._box().seal(json.dumps(data)), utc_text(now), shop_id))
        return self.get(shop_id)

    def set_status(self, shop_id: str, status: str, now: datetime, reason: str | None = None) -> Shop:
        if status not in ("active", "disabled"):
            raise ValueError(status)
        shop = self.get(shop_id)
        if shop.status == "removed":
            raise StateError(f"shop {shop_id} was removed; add it again to serve it")
        next_run = shop.next_run_at or next_daily_run(shop.run_minute, now)
        with self.store.write("change a shop's status") as db:
            db.execute("UPDATE shops SET status = ?, status_reason = ?, changed_at = ?, "
                       "next_run_at = ?, failures = CASE WHEN ? = 'active' THEN 0 ELSE failures END "
                       "WHERE id = ?",
                       (status, None if reason is None else clean_reason(reason), utc_text(now),
                        utc_text(next_run), status, shop_id))
        return self.get(shop_id)

    def remove(self, shop_id: str, now: datetime) -> Shop:
        """Stop serving a shop at once: its secrets are deleted, its audit rows stay."""
        self.get(shop_id)
        with self.store.write("remove a shop") as db:
            db.execute("UPDATE shops SET status = 'removed', secrets = NULL, api_public_hash = NULL, "
                       "next_run_at = NULL, changed_at = ? WHERE id = ?", (utc_text(now), shop_id))
        return self.get(shop_id)

    def run_soon(self, shop_id: str, at: datetime) -> None:
        with self.store.write("schedule a shop") as db:
            db.execute("UPDATE shops SET next_run_at = ? WHERE id = ? AND status = 'active'",
                       (utc_text(at), shop_id))

    def claim_due(self, now: datetime, limit: int = 500) -> list[str]:
        """Active shops whose time has come (one transaction: two ticks never claim one twice).

        A claimed shop is due again after :data:`CLAIM_LEASE` unless its run says otherwise
        (:meth:`record_run` sets the next daily run or a retry): a run whose outcome was
        never recorded (its worker and the job lost, the database gone) is not forgotten.
        """
        with self.store.write("claim the shops that are due") as db:
            rows = db.execute("SELECT id FROM shops WHERE status = 'active' "
                              "AND next_run_at <= ? ORDER BY next_run_at, id LIMIT ?",
                              (utc_text(now), int(limit))).fetchall()
            for (shop_id,) in rows:
                db.execute("UPDATE shops SET next_run_at = ? WHERE id = ?",
                           (utc_text(now + CLAIM_LEASE), shop_id))
        return [r[0] for r in rows]

    def record_run(self, shop_id: str, *, ok: bool, now: datetime, error: str | None = None) -> Shop:
        """After a run: a success clears the failures; a failure schedules a retry with backoff."""
        shop = self.get(shop_id)
        daily = next_daily_run(shop.run_minute, now)
        with self.store.write("record a shop's run") as db:
            if ok:
                db.execute("UPDATE shops SET failures = 0, last_error = NULL, next_run_at = "
                           "CASE WHEN status = 'active' THEN ? ELSE next_run_at END WHERE id = ?",
                           (utc_text(daily), shop_id))
            else:
                failures = shop.failures + 1
                retry = min(now + retry_delay(failures), daily)
                db.execute("UPDATE shops SET failures = ?, last_error = ?, next_run_at = "
                           "CASE WHEN status = 'active' THEN ? ELSE next_run_at END WHERE id = ?",
                           (failures, clean_reason(error or "failed"), utc_text(retry), shop_id))
        return self.get(shop_id)

    def reseal_all(self) -> int:
        """Seal every shop's secrets under the current master key (after a rotation)."""
        box = self._box()
        count = 0
        with self.store.write("reseal the shops' secrets") as db:
            for shop_id, sealed in db.execute(
                    "SELECT id, secrets FROM shops WHERE secrets IS NOT NULL").fetchall():
                db.execute("UPDATE shops SET secrets = ? WHERE id = ?",
                           (box.reseal(sealed, f"the secrets of shop {shop_id}"), shop_id))
                count += 1
        return count

    def describe(self, shop: Shop) -> dict[str, Any]:
        return {"id": shop.id, "name": shop.name, "api_root": shop.api_root, "status": shop.status,
                "plan": shop.plan, "destination": shop.destination, "run_time": shop.run_time,
                "next_run_at": utc_text(shop.next_run_at) if shop.next_run_at else None,
                "failures": shop.failures, "last_error": shop.last_error,
                "status_reason": shop.status_reason, "run_on_hint": shop.run_on_hint}
