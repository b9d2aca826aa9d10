"""`mapper serve`: the ASGI application (Starlette) of hosted mode, behind the operator's HTTPS proxy.

Routes (spec/hosted.md §3): the App Store's ``/ccv/{variant}/handshake|install|uninstall``,
``POST /hooks/{token}/{event}``, ``GET /healthz``, ``GET /metrics`` and the operator's pages
under ``/admin``. Every answer carries headers that keep the pages out of other sites' frames
and scripts; the operator's session cookie is Secure, so the proxy must speak HTTPS to the
browser (uvicorn trusts its X-Forwarded-* from ``--forwarded-allow-ips``).
"""

from __future__ import annotations

import contextlib
import logging

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from engine.web.admin import AdminRoutes
from engine.web.appstore import AppStoreRoutes
from engine.web.context import WebContext, WebSettings
from engine.web.hooks import HookRoutes
from engine.web.metrics import MetricsRoutes

log = logging.getLogger("mapper.serve")

SESSION_SECONDS = 8 * 3600
HEADERS = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
           (b"content-security-policy", b"default-src 'none'; style-src 'self' 'unsafe-inline'; img-src 'self'; "
                                        b"form-action 'self' https: http:; frame-ancestors 'none'; base-uri 'none'"),
           (b"x-frame-options", b"DENY"), (b"cache-control", b"no-store")]


class SecurityHeaders:
    """The same protective headers on every answer (pages, errors, redirects)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message):
            if message["type"] == "http.response.start":
                names = {k for k, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [h for h in HEADERS if h[0] not in names]
            await send(message)
        await self.app(scope, receive, with_headers)


def create_app(settings: WebSettings | None = None, *, ctx: WebContext | None = None) -> Starlette:
    ctx = ctx or WebContext(settings or WebSettings.from_env())

    async def healthz(request: Request):
        return PlainTextResponse("ok")

    routes = [Route("/healthz", healthz), *MetricsRoutes(ctx).routes(), *AppStoreRoutes(ctx).routes(),
              *HookRoutes(ctx).routes(), *AdminRoutes(ctx).routes()]
    middleware = [Middleware(SecurityHeaders),
                  Middleware(SessionMiddleware, secret_key=ctx.box.signing_key("operator session").hex(),
                             session_cookie="mapper_admin", max_age=SESSION_SECONDS, same_site="strict",
                             https_only=True)]
    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        ctx.close()

    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
    app.state.ctx = ctx
    return app
