"""`mapper worker`: shops' runs as jobs on procrastinate, the PostgreSQL job queue.

Jobs and what guards them (spec/hosted.md §4 names the traps):

- ``mapper.run_shop(shop_id)``: one shop's run. Deferred with ``lock`` and ``queueing_lock``
  ``shop:<id>``: one run per shop at a time, at most one waiting (a second defer is
  ``AlreadyEnqueued`` and ignored). No procrastinate ``retry=``: a failed run is recorded in
  the registry, which moves the shop's ``next_run_at`` to a retry (1 min doubling to 6 h), and
  the tick enqueues it again then. The argument is the shop id only; keys are loaded inside.
- ``mapper.tick`` (every minute): claims the shops that are due (:meth:`ShopRegistry.claim_due`)
  and defers their runs. Catch-up after an outage is the same query.
- ``mapper.recover_stalled`` (every minute, no lock of its own): a job left ``doing`` by a
  worker that stopped sending heartbeats (SIGKILL, a lost machine) is put back to ``todo``.
- ``mapper.clean_old_jobs`` (daily): finished jobs older than a week are deleted.

``--until-idle`` does the tick and the recovery itself and exits 0 when nothing is due,
nothing waits, and no job is held (it waits for jobs of a dead worker to become stalled and
takes them over first).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from engine.clock import now as clock_now
from engine.errors import ConfigError
from engine.ops.state import StateError, open_state
from engine.hosted.crypto import SecretBox
from engine.hosted.pool import StorePool
from engine.hosted.runs import CompiledMapping, outcome_words, run_shop
from engine.hosted.shops import ShopRegistry

__all__ = ["HostedSettings", "enqueue_run", "make_app", "run_until_idle"]

log = logging.getLogger("mapper.worker")

RUN_TASK = "mapper.run_shop"
KEEP_FINISHED_JOBS = timedelta(days=7)
RECORD_ATTEMPTS = 6                              # about half a minute of a database away


@dataclass(frozen=True)
class HostedSettings:
    """Hosted mode's environment (spec/hosted.md §3), read once per process."""

    database: str
    mapping: str
    outbox: Path
    #: a worker silent (no heartbeat) for this long is taken for dead and its job run again
    stalled_after: float = 30.0

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> "HostedSettings":
        env = os.environ if environ is None else environ
        database = env.get("MAPPER_DATABASE", "").strip()
        if not database.startswith(("postgresql://", "postgres://")):
            raise ConfigError("MAPPER_DATABASE is not set to a PostgreSQL URL: hosted mode keeps "
                              "every shop's state and the job queue there",
                              hint="e.g. MAPPER_DATABASE=postgresql:///mapper, then `mapper db upgrade`")
        from engine.resources import mappings_dir
        stalled = env.get("MAPPER_WORKER_STALLED_AFTER", "30")
        try:
            stalled_after = float(stalled)
            if not 2 <= stalled_after <= 3600:
                raise ValueError
        except ValueError:
            raise ConfigError(f"MAPPER_WORKER_STALLED_AFTER={stalled!r} is not a number of seconds "
                              f"from 2 to 3600") from None
        return cls(database=database,
                   mapping=env.get("MAPPER_MAPPING") or str(mappings_dir() / "ccvshop_asperion.yaml"),
                   outbox=Path(env.get("MAPPER_OUTBOX") or "outbox"), stalled_after=stalled_after)


class _Context:
    """What a worker process loads once: settings, the sealing key, the compiled mapping."""

    def __init__(self, settings: HostedSettings, box: SecretBox):
        self.settings, self.box = settings, box
        self._compiled: CompiledMapping | None = None
        self._pool = StorePool(settings.database, "mapper worker")
        self._lock = threading.Lock()

    def store(self):
        """A writable state store on a connection of this process's pool."""
        return self._pool.store()

    @property
    def compiled(self) -> CompiledMapping:
        with self._lock:
            if self._compiled is None:
                self._compiled = CompiledMapping(self.settings.mapping, environ=_no_shop_env())
            return self._compiled

    def run(self, shop_id: str, since: str | None, until: str | None) -> str:
        """Run a shop and record the outcome; returns it in a word.

        One shop's failure never stops another's: any exception of the run is recorded as
        that shop's failure. The outcome is recorded on a connection of its own, tried again
        for a while, so that a database that restarts mid-run still hears of it.
        """
        try:
            with self.store() as store:
                result = run_shop(shop_id, store=store, registry=ShopRegistry(store, self.box),
                                  compiled=self.compiled, outbox_root=self.settings.outbox,
                                  since=date.fromisoformat(since) if since else None,
                                  until=date.fromisoformat(until) if until else None)
        except Exception as exc:
            words = outcome_words(exc)
            shop = self._record(shop_id, ok=False, error=words)
            log.warning("shop %s: run failed (%d in a row; next try %s): %s", shop_id,
                        shop.failures, shop.next_run_at, words)
            return "failed"
        if result is None:
            return "skipped"
        self._record(shop_id, ok=True)
        log.info("shop %s: %s, %s", shop_id, result.outcome,
                 ", ".join(f"{k} {v}" for k, v in result.counts.items() if v))
        return result.outcome

    def _record(self, shop_id: str, ok: bool, error: str | None = None):
        for attempt in range(RECORD_ATTEMPTS):
            try:
                with open_state(self.settings.database) as store:
                    return ShopRegistry(store, self.box).record_run(shop_id, ok=ok, now=clock_now(),
                                                                    error=error)
            except StateError as exc:
                if attempt == RECORD_ATTEMPTS - 1:
                    raise                       # the job fails; the claim's lease brings the shop back
                log.warning("shop %s: cannot record the run yet (%s); trying again", shop_id, exc)
                time.sleep(min(2 ** attempt, 10))


def _no_shop_env() -> dict[str, str]:
    """The process environment without any shop's keys: a worker compiles for no shop."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("CCVSHOP_", "ASPERION_"))}


_context: _Context | None = None


def _ctx() -> _Context:
    if _context is None:
        raise RuntimeError("the hosted worker context is not set up")  # pragma: no cover
    return _context


def make_app(settings: HostedSettings, box: SecretBox | None = None):
    """The procrastinate app with mapper's tasks (a worker also sets up the run context)."""
    import procrastinate

    global _context
    _context = _Context(settings, box or SecretBox.from_env())
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=settings.database))

    @app.task(name=RUN_TASK)
    def run_shop_task(shop_id: str, since: str | None = None, until: str | None = None) -> str:
        return _ctx().run(shop_id, since, until)

    @app.periodic(cron="* * * * *")
    @app.task(name="mapper.tick")
    async def tick(timestamp: int) -> int:
        return await tick_once(app)

    @app.periodic(cron="* * * * *")
    @app.task(name="mapper.recover_stalled")
    async def recover(timestamp: int) -> int:
        return await recover_stalled(app)

    @app.periodic(cron="23 4 * * *")
    @app.task(name="mapper.clean_old_jobs")
    async def clean(timestamp: int) -> None:
        await app.job_manager.delete_old_jobs(nb_hours=int(KEEP_FINISHED_JOBS.total_seconds() // 3600),
                                              include_failed=True, include_cancelled=True)

    return app


async def _defer(app, shop_id: str, since: str | None = None, until: str | None = None) -> bool:
    """Enqueue a shop's run unless one already waits; True if this call enqueued it."""
    from procrastinate.exceptions import AlreadyEnqueued
    task = app.tasks[RUN_TASK].configure(lock=f"shop:{shop_id}", queueing_lock=f"shop:{shop_id}")
    try:
        await task.defer_async(shop_id=shop_id, since=since, until=until)
        return True
    except AlreadyEnqueued:
        return False


async def tick_once(app) -> int:
    ctx = _ctx()

    def claim() -> list[str]:
        with ctx.store() as store:
            return ShopRegistry(store, ctx.box).claim_due(clock_now())

    due = await asyncio.to_thread(claim)
    enqueued = 0
    for shop_id in due:
        enqueued += await _defer(app, shop_id)
    if due:
        log.info("tick: %d shop(s) due, %d enqueued", len(due), enqueued)
    return enqueued


async def recover_stalled(app) -> int:
    stalled = list(await app.job_manager.get_stalled_jobs(
        seconds_since_heartbeat=_ctx().settings.stalled_after))
    for job in stalled:
        log.warning("job %s (%s) was left by a worker that died; running it again", job.id,
                    job.task_name)
        await app.job_manager.retry_job(job)
    return len(stalled)


def enqueue_run(settings: HostedSettings, shop_id: str, since: str | None = None,
                until: str | None = None) -> bool:
    """For `mapper shops run` and the web side: a shop's run now (False: one already waits)."""
    app = make_app(settings)

    async def go() -> bool:
        async with app.open_async():
            return await _defer(app, shop_id, since, until)
    return asyncio.run(go())


async def _busy(app) -> tuple[int, int]:
    """(jobs waiting and due, jobs being done)."""
    rows = await app.connector.execute_query_all_async(
        "SELECT status::text AS status, count(*) AS n FROM procrastinate_jobs "
        "WHERE status IN ('todo', 'doing') AND (status = 'doing' OR scheduled_at IS NULL "
        "OR scheduled_at <= now()) GROUP BY status")
    counts = {r["status"]: r["n"] for r in rows}
    return counts.get("todo", 0), counts.get("doing", 0)


def run_worker(settings: HostedSettings, *, concurrency: int = 1, until_idle: bool = False) -> None:
    app = make_app(settings)
    options = dict(concurrency=concurrency, update_heartbeat_interval=settings.stalled_after / 6,
                   stalled_worker_timeout=settings.stalled_after, delete_jobs="successful")
    if not until_idle:
        app.run_worker(**options)
        return
    asyncio.run(run_until_idle(app, **options))


async def run_until_idle(app, **options: Any) -> None:
    async with app.open_async():
        while True:
            enqueued = await tick_once(app)
            recovered = await recover_stalled(app)
            todo, doing = await _busy(app)
            if todo:
                await app.run_worker_async(wait=False, install_signal_handlers=False,
                                           listen_notify=False, **options)
                continue
            if enqueued or recovered:
                continue
            if not doing:
                return
            await asyncio.sleep(1.0)    # another worker's job: wait for it, or for it to stall
