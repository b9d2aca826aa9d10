"""Every shop at a glance, for the operator's pages, the morning summary and /metrics.

A few grouped queries over the whole state (not a handful per shop): a thousand shops make
one page in tens of milliseconds. What "needs attention" means is decided here, once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from engine.ops.runner import PLAN_LIMITS, PLAN_YEAR_ZONE
from engine.ops.state.base import utc_parse, utc_text
from engine.ops.state.sql import SqlStateStore
from engine.hosted.shops import Shop, ShopRegistry, scope

#: an active shop without a finished run for this long is overdue (its daily run did not happen)
OVERDUE = timedelta(hours=36)
#: a Basis shop past this share of its yearly invoices is told before it is held
PLAN_WARNING = 0.9


@dataclass
class ShopRow:
    shop: Shop
    invoices_this_year: int = 0
    plan_limit: int | None = None
    last_run_at: datetime | None = None
    last_outcome: str | None = None
    open_quarantine: int = 0
    held: int = 0
    attention: list[str] = field(default_factory=list)

    @property
    def needs_attention(self) -> bool:
        return bool(self.attention)


def overview(store: SqlStateStore, mapping_name: str, now: datetime) -> list[ShopRow]:
    """One row per shop (removed ones too), with what needs the operator's attention."""
    shops = ShopRegistry(store).all()
    scopes = {scope(s.id, mapping_name): s for s in shops}
    year = now.astimezone(ZoneInfo(PLAN_YEAR_ZONE)).year
    start, end = (utc_text(datetime(year + i, 1, 1, tzinfo=ZoneInfo(PLAN_YEAR_ZONE))) for i in (0, 1))
    with store.read() as db:
        last = {r[0]: (r[1], r[2], r[3]) for r in db.execute(
            "SELECT r.mapping, r.outcome, r.started_at, r.finished_at FROM runs r "
            "JOIN (SELECT mapping, MAX(id) AS id FROM runs GROUP BY mapping) l ON l.id = r.id").fetchall()}
        quarantine = dict(db.execute("SELECT mapping, COUNT(*) FROM quarantine WHERE status = 'open' "
                                     "GROUP BY mapping").fetchall())
        held = dict(db.execute("SELECT mapping, COUNT(*) FROM held GROUP BY mapping").fetchall())
        invoices = dict(db.execute(
            "SELECT o.mapping, COUNT(*) FROM batch_orders o JOIN batches b ON b.id = o.batch_id "
            "WHERE b.status = 'delivered' AND o.live = 1 AND b.delivered_at >= ? AND b.delivered_at < ? "
            "AND NOT EXISTS (SELECT 1 FROM credits c WHERE c.mapping = o.mapping AND c.credit_id = o.shop_id) "
            "GROUP BY o.mapping", (start, end)).fetchall())
    rows = []
    for key, shop in scopes.items():
        outcome, started, finished = last.get(key, (None, None, None))
        row = ShopRow(shop, invoices_this_year=int(invoices.get(key, 0)), plan_limit=PLAN_LIMITS.get(shop.plan),
                      last_run_at=utc_parse(finished or started) if (finished or started) else None,
                      last_outcome=outcome or ("running" if started else None),
                      open_quarantine=int(quarantine.get(key, 0)), held=int(held.get(key, 0)))
        row.attention = _attention(row, now)
        rows.append(row)
    return rows


def _attention(row: ShopRow, now: datetime) -> list[str]:
    s = row.shop
    if s.status == "removed":
        return []
    why = []
    if s.status == "disabled":
        why.append("disabled" + (f": {s.status_reason}" if s.status_reason else ""))
    if s.failures:
        why.append(f"{s.failures} failed run(s) in a row" + (f": {s.last_error}" if s.last_error else ""))
    if row.last_outcome in ("failed", "interrupted"):
        why.append(f"last run {row.last_outcome}")
    if row.open_quarantine:
        why.append(f"{row.open_quarantine} order(s) in quarantine")
    if row.held:
        why.append(f"{row.held} order(s) held by the plan")
    elif row.plan_limit and row.invoices_this_year >= PLAN_WARNING * row.plan_limit:
        why.append(f"{row.invoices_this_year} of {row.plan_limit} invoices this year")
    if s.status == "active" and now - (row.last_run_at or s.created_at) > OVERDUE:
        why.append("no run for more than 36 hours")
    return why
