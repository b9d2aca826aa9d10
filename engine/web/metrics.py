"""``GET /metrics``: the operator's own monitoring, in Prometheus' text format (prometheus_client).

Read from the database at each scrape (every `serve` process answers the same): runs by
outcome, invoices and credit notes delivered, orders quarantined, per shop the open quarantine
and the failures in a row (shops by id only: no names, no addresses), the job queue's depth and
the age of its oldest due job.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from engine.clock import now
from engine.hosted.overview import overview
from engine.web.context import WebContext

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _Collector:
    def __init__(self, ctx: WebContext):
        self.ctx = ctx

    def collect(self):
        name = self.ctx.compiled.mapping.name
        with self.ctx.store() as store:
            rows = overview(store, name, now())
            with store.read() as db:
                outcomes = db.execute("SELECT COALESCE(outcome, 'running'), COUNT(*) FROM runs "
                                      "WHERE mapping LIKE ? GROUP BY 1", (f"%/{name}",)).fetchall()
                totals = {}
                for key in ("delivered", "credited", "quarantined"):
                    totals[key] = db.execute(
                        "SELECT COALESCE(SUM(CAST(counts::json->>? AS INTEGER)), 0) FROM runs WHERE mapping LIKE ?",
                        (key, f"%/{name}")).fetchone()[0]
        depth, oldest = self.ctx.queue_depth()
        runs = CounterMetricFamily("mapper_runs", "Runs of hosted shops by outcome", labels=["outcome"])
        for outcome, n in outcomes:
            runs.add_metric([outcome], n)
        yield runs
        yield CounterMetricFamily("mapper_invoices_delivered", "Invoices delivered by all runs",
                                  value=int(totals["delivered"]))
        yield CounterMetricFamily("mapper_credit_notes_delivered", "Credit notes delivered by all runs",
                                  value=int(totals["credited"]))
        yield CounterMetricFamily("mapper_orders_quarantined", "Orders quarantined by all runs (an order "
                                  "quarantined again by a later run counts again)", value=int(totals["quarantined"]))
        shops = GaugeMetricFamily("mapper_shops", "Shops by status and plan", labels=["status", "plan"])
        counts: dict[tuple[str, str], int] = {}
        for r in rows:
            counts[(r.shop.status, r.shop.plan)] = counts.get((r.shop.status, r.shop.plan), 0) + 1
        for (status, plan), n in sorted(counts.items()):
            shops.add_metric([status, plan], n)
        yield shops
        live = [r for r in rows if r.shop.status != "removed"]
        quarantine = GaugeMetricFamily("mapper_shop_quarantine_open", "Orders in quarantine per shop", labels=["shop"])
        failures = GaugeMetricFamily("mapper_shop_failures", "Failed runs in a row per shop", labels=["shop"])
        attention = GaugeMetricFamily("mapper_shop_needs_attention", "1 when a shop needs the operator", labels=["shop"])
        for r in live:
            quarantine.add_metric([r.shop.id], r.open_quarantine)
            failures.add_metric([r.shop.id], r.shop.failures)
            attention.add_metric([r.shop.id], 1 if r.needs_attention else 0)
        yield quarantine
        yield failures
        yield attention
        yield GaugeMetricFamily("mapper_queue_depth", "Runs waiting in the job queue and due", value=depth)
        yield GaugeMetricFamily("mapper_queue_oldest_due_seconds", "How long the oldest due run has waited",
                                value=oldest or 0.0)


class MetricsRoutes:
    def __init__(self, ctx: WebContext):
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(ctx))

    def routes(self) -> list[Route]:
        return [Route("/metrics", self.metrics)]

    async def metrics(self, request: Request) -> Response:
        data = await run_in_threadpool(generate_latest, self.registry)
        return Response(data, media_type=CONTENT_TYPE)
