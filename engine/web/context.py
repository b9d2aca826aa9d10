"""What one `mapper serve` process holds: settings, the state pool, the compiled mapping, the
job queue, templates, and reading a request's body within a bound."""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.templating import Jinja2Templates

from engine.errors import ConfigError
from engine.hosted.appstore import App, apps_from_env
from engine.hosted.crypto import SecretBox
from engine.hosted.pool import StorePool
from engine.hosted.runs import CompiledMapping
from engine.hosted.worker import HostedSettings

log = logging.getLogger("mapper.serve")

TEMPLATES = Path(__file__).parent / "templates"
MIN_ADMIN_PASSWORD = 12


@dataclass(frozen=True)
class WebSettings:
    hosted: HostedSettings
    apps: dict[str, App]
    admin_password: str | None

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> "WebSettings":
        env: dict[str, str] = dict(os.environ) if environ is None else environ
        password = env.get("MAPPER_ADMIN_PASSWORD") or None
        if password is not None and len(password) < MIN_ADMIN_PASSWORD:
            raise ConfigError(f"MAPPER_ADMIN_PASSWORD is too short (at least {MIN_ADMIN_PASSWORD} characters)",
                              hint="make one with: python -c 'import secrets; print(secrets.token_urlsafe(18))'")
        return cls(HostedSettings.from_env(env), apps_from_env(env), password)

    def __repr__(self) -> str:
        return f"WebSettings(apps={sorted(self.apps)}, admin={'on' if self.admin_password else 'off'})"


class BodyTooLarge(Exception):
    pass


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refused (BodyTooLarge) past ``limit`` bytes without reading it all."""
    length = request.headers.get("content-length")
    if length is not None:
        try:
            if int(length) > limit:
                raise BodyTooLarge()
        except ValueError:
            raise BodyTooLarge() from None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge()
        chunks.append(chunk)
    return b"".join(chunks)


def client_of(request: Request) -> str:
    """The client's address as the proxy passed it on (uvicorn's --forwarded-allow-ips)."""
    return request.client.host if request.client else "?"


class WebContext:
    def __init__(self, settings: WebSettings, box: SecretBox | None = None, enqueue=None):
        """``enqueue(shop_id) -> bool``: a run now (default: procrastinate, as `shops run`)."""
        self.settings = settings
        self.box = box or SecretBox.from_env()
        self.pool = StorePool(settings.hosted.database, "mapper serve")
        self.templates = Jinja2Templates(directory=str(TEMPLATES))
        self._compiled: CompiledMapping | None = None
        self._lock = threading.Lock()
        self._queue: Any = None   # the procrastinate App, opened on the first enqueue
        self._enqueue = enqueue

    def store(self):
        return self.pool.store()

    @property
    def compiled(self) -> CompiledMapping:
        with self._lock:
            if self._compiled is None:
                from engine.hosted.worker import _no_shop_env
                self._compiled = CompiledMapping(self.settings.hosted.mapping, environ=_no_shop_env())
            return self._compiled

    def enqueue(self, shop_id: str) -> bool:
        """A shop's run now; False when one already waits. Called from a worker thread."""
        if self._enqueue is not None:
            return self._enqueue(shop_id)
        from procrastinate.exceptions import AlreadyEnqueued
        from engine.hosted.worker import RUN_TASK, make_app
        with self._lock:
            if self._queue is None:
                self._queue = make_app(self.settings.hosted, self.box)
                self._queue.open()
        task = self._queue.tasks[RUN_TASK].configure(lock=f"shop:{shop_id}", queueing_lock=f"shop:{shop_id}")
        try:
            task.defer(shop_id=shop_id)
            return True
        except AlreadyEnqueued:
            return False

    def queue_depth(self) -> tuple[int, float | None]:
        """(jobs waiting and due, seconds the oldest of them has waited)."""
        with self.store() as store, store.read() as db:
            row = db.execute(
                "SELECT COUNT(*), EXTRACT(EPOCH FROM now() - MIN(COALESCE(scheduled_at, e.at))) "
                "FROM procrastinate_jobs j LEFT JOIN LATERAL (SELECT MIN(at) AS at FROM procrastinate_events "
                "WHERE job_id = j.id AND type = 'deferred') e ON true "
                "WHERE j.status = 'todo' AND (j.scheduled_at IS NULL OR j.scheduled_at <= now())").fetchone()
        return int(row[0]), (None if row[1] is None else float(row[1]))

    def close(self) -> None:
        self.pool.close()
        if self._queue is not None:
            try:
                self._queue.close()
            except Exception:  # noqa: BLE001 - closing at shutdown
                pass

    def render(self, request: Request, name: str, context: dict[str, Any], status: int = 200):
        return self.templates.TemplateResponse(request, name, context, status_code=status)
