"""Webhook deliveries for every hosted shop: ``POST /hooks/{token}/{event}``.

The token is a secret of one shop's subscription (its hash finds the shop; the shop's id is
never in the address). An unknown token, or an event other than the token's, is a 404 that
tells nothing; the body is bounded and only the order id and the time are kept, as a hint
the shop's next run re-verifies through the API (engine/hosted/hints.py). A shop's flood is
bounded by its hints per day and waiting (429).
"""

from __future__ import annotations

import logging

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from engine.clock import now
from engine.hosted.hints import receive_hint
from engine.ops.webhooks import BadHint, HintRefused, hint_from_body, shown, token_hash
from engine.web.context import BodyTooLarge, WebContext, client_of, read_body

log = logging.getLogger("mapper.serve.hooks")

MAX_BODY = 64 * 1024


class HookRoutes:
    def __init__(self, ctx: WebContext):
        self.ctx = ctx

    def routes(self) -> list[Route]:
        return [Route("/hooks/{token}/{event}", self.hook, methods=["POST"])]

    def _refuse(self, request: Request, status: int, why: str) -> Response:
        log.warning("webhook /hooks/<token>/%s refused (%d) from %s: %s",
                    shown(request.path_params.get("event", ""), 100), status, client_of(request), why)
        return JSONResponse({"ok": False}, status_code=status)

    async def hook(self, request: Request) -> Response:
        token, event = request.path_params["token"], request.path_params["event"]
        try:
            body = await read_body(request, MAX_BODY)
        except BodyTooLarge:
            return self._refuse(request, 413, f"body over {MAX_BODY} bytes")
        name = self.ctx.compiled.mapping.name

        def find():
            with self.ctx.store() as store:
                return store.webhook_token(token_hash(token))
        sub = await run_in_threadpool(find)
        if sub is None or sub.event != event or not sub.mapping.endswith("/" + name):
            return self._refuse(request, 404, "unknown token, or another event than the token's")
        shop_id = sub.mapping.split("/", 1)[0]
        try:
            order_id, _ = hint_from_body(body, request.headers.get("content-type", ""))
        except BadHint as exc:
            return self._refuse(request, exc.status, f"shop {shop_id}: {exc.reason}")

        def keep():
            with self.ctx.store() as store:
                return receive_hint(store, shop_id, name, order_id, event, now(), self.ctx.enqueue)
        try:
            enqueued = await run_in_threadpool(keep)
        except HintRefused as exc:
            return self._refuse(request, 429, f"shop {shop_id}: {exc}")
        log.info("webhook: shop %s hint %s for order %s%s", shop_id, event, order_id,
                 " (run enqueued)" if enqueued else "")
        return JSONResponse({"ok": True})
