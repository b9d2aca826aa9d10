"""A webhook hint for a hosted shop: kept in that shop's state and, if the shop wants it, a run.

The web side (`mapper serve`, /hooks/<token>/<event>) calls :func:`receive_hint` once it has
found the shop by its subscription's token. The hint is what `mapper listen` keeps for one
shop (the order id, the event, the time) under the shop's own scope, within the same bounds;
a shop with ``run_on_hint`` gets a run enqueued, never two waiting (the queueing lock), and
the run re-verifies the order through the API as every run does.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Callable

from engine.ops.state.sql import SqlStateStore
from engine.ops.webhooks import HintRefused
from engine.hosted.runs import ShopState
from engine.hosted.shops import ShopRegistry

DEFAULT_PER_DAY, DEFAULT_PENDING = 1000, 10000


def receive_hint(store: SqlStateStore, shop_id: str, mapping_name: str, order_id: str, event: str,
                 now: datetime, enqueue: Callable[[str], bool], *, per_day: int = DEFAULT_PER_DAY,
                 pending: int = DEFAULT_PENDING) -> bool:
    """Keep the hint (HintRefused past a bound); returns whether a run was enqueued."""
    shop = ShopRegistry(store).get(shop_id)
    if shop.status != "active":
        raise HintRefused(f"shop {shop_id} is {shop.status}")
    state = ShopState(store, shop_id)
    if state.hint_count(mapping_name, now - timedelta(days=1)) >= per_day:
        raise HintRefused(f"{per_day} hints in 24 hours for this shop; try later")
    if state.hint_count(mapping_name) >= pending:
        raise HintRefused(f"{pending} hints wait already for this shop")
    state.add_hint(mapping_name, order_id, event, now)
    return enqueue(shop_id) if shop.run_on_hint else False
