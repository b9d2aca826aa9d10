"""The operator's pages under /admin: every shop on one page, a shop's page, the morning summary.

One password (``MAPPER_ADMIN_PASSWORD``, compared in constant time); the session is a signed
cookie (HttpOnly, Secure, SameSite=Strict; Starlette's SessionMiddleware with a key derived
from the master key) that lasts a working day. Failed logins are counted per client in the
database (every `serve` process sees them): five in 15 minutes and that client waits, fifty
from anywhere and everyone does. Every form that changes something carries the session's
own token (no cross-site request can).
"""

from __future__ import annotations

import hmac
import logging
import secrets
from datetime import datetime, timedelta
from typing import Any, Callable

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from engine.clock import now
from engine.errors import MapperError
from engine.hosted.overview import ShopRow, overview
from engine.hosted.runs import ShopState
from engine.hosted.shops import ShopRegistry
from engine.ops.state.base import utc_text
from engine.web.context import BodyTooLarge, WebContext, client_of, read_body

log = logging.getLogger("mapper.serve.admin")

THROTTLE_WINDOW = timedelta(minutes=15)
PER_CLIENT, OVERALL = 5, 50
FORM_MAX_BODY = 4096
SORTS = {"id": lambda r: r.shop.id, "name": lambda r: r.shop.name.lower(), "status": lambda r: r.shop.status,
         "plan": lambda r: r.shop.plan, "invoices": lambda r: r.invoices_this_year,
         "last_run": lambda r: r.last_run_at.isoformat() if r.last_run_at else "",
         "quarantine": lambda r: r.open_quarantine, "failures": lambda r: r.shop.failures,
         "next_run": lambda r: r.shop.next_run_at.isoformat() if r.shop.next_run_at else "9999",
         "attention": lambda r: len(r.attention)}


class AdminRoutes:
    def __init__(self, ctx: WebContext):
        self.ctx = ctx

    def routes(self) -> list[Route]:
        r = [Route("/admin/login", self.login, methods=["GET", "POST"]),
             Route("/admin/logout", self.logout, methods=["POST"]),
             Route("/admin", self.shops), Route("/admin/", self.shops),
             Route("/admin/summary", self.summary), Route("/admin/summary.json", self.summary_json),
             Route("/admin/shops/{shop_id}", self.shop),
             Route("/admin/shops/{shop_id}/{action}", self.act, methods=["POST"])]
        return r

    # ---- session
    def _signed_in(self, request: Request) -> bool:
        return request.session.get("admin") is True

    def _guard(self, request: Request) -> Response | None:
        if self.ctx.settings.admin_password is None:
            return PlainTextResponse("the operator pages are off: set MAPPER_ADMIN_PASSWORD", status_code=503)
        if not self._signed_in(request):
            return RedirectResponse("/admin/login", status_code=303)
        return None

    def _csrf(self, request: Request) -> str:
        token = request.session.get("csrf")
        if not token:
            token = request.session["csrf"] = secrets.token_urlsafe(24)
        return token

    async def _form(self, request: Request) -> dict[str, str] | None:
        """The POSTed form, or None when it is too big or lacks the session's token."""
        from urllib.parse import parse_qs
        try:
            body = await read_body(request, FORM_MAX_BODY)
            fields = {k: v[0] for k, v in parse_qs(body.decode("utf-8"), keep_blank_values=True,
                                                    max_num_fields=10).items()}
        except (BodyTooLarge, UnicodeDecodeError, ValueError):
            return None
        expected = request.session.get("csrf") or ""
        if not expected or not hmac.compare_digest(expected.encode(), fields.get("csrf", "").encode()):
            log.warning("admin %s %s refused from %s: the form's token is missing or wrong", request.method,
                        request.url.path, client_of(request))
            return None
        return fields

    # ---- login
    async def login(self, request: Request) -> Response:
        password = self.ctx.settings.admin_password
        if password is None:
            return PlainTextResponse("the operator pages are off: set MAPPER_ADMIN_PASSWORD", status_code=503)
        if request.method == "GET":
            return self.ctx.render(request, "admin_login.html", {"error": None})
        client = client_of(request)
        from urllib.parse import parse_qs
        try:
            body = await read_body(request, FORM_MAX_BODY)
            fields = {k: v[0] for k, v in parse_qs(body.decode("utf-8"), max_num_fields=5).items()}
        except (BodyTooLarge, UnicodeDecodeError, ValueError):
            return PlainTextResponse("refused", status_code=400)
        blocked = await run_in_threadpool(self._blocked, client)
        if blocked:
            log.warning("admin login from %s refused: %s", client, blocked)
            return self.ctx.render(request, "admin_login.html",
                                   {"error": "Too many failed attempts: wait 15 minutes."}, 429)
        given = fields.get("password", "")
        if not hmac.compare_digest(given.encode("utf-8"), password.encode("utf-8")):
            await run_in_threadpool(self._failed, client)
            log.warning("admin login from %s: wrong password", client)
            return self.ctx.render(request, "admin_login.html",
                                   {"error": "Wrong password."}, 401)
        await run_in_threadpool(self._succeeded, client)
        request.session.clear()
        request.session.update({"admin": True, "csrf": secrets.token_urlsafe(24)})
        log.info("admin login from %s", client)
        return RedirectResponse("/admin", status_code=303)

    def _blocked(self, client: str) -> str | None:
        since = utc_text(now() - THROTTLE_WINDOW)
        with self.ctx.store() as store, store.read() as db:
            mine = db.execute("SELECT COUNT(*) FROM admin_login_failures WHERE client = ? AND at >= ?",
                              (client, since)).fetchone()[0]
            everyone = db.execute("SELECT COUNT(*) FROM admin_login_failures WHERE at >= ?", (since,)).fetchone()[0]
        if mine >= PER_CLIENT:
            return f"{mine} failed attempts from this client in 15 minutes"
        if everyone >= OVERALL:
            return f"{everyone} failed attempts in 15 minutes"
        return None

    def _failed(self, client: str) -> None:
        stamp = now()
        with self.ctx.store() as store, store.write("count a failed login") as db:
            db.execute("INSERT INTO admin_login_failures (client, at) VALUES (?, ?)", (client, utc_text(stamp)))
            db.execute("DELETE FROM admin_login_failures WHERE at < ?", (utc_text(stamp - timedelta(days=1)),))

    def _succeeded(self, client: str) -> None:
        with self.ctx.store() as store, store.write("clear failed logins") as db:
            db.execute("DELETE FROM admin_login_failures WHERE client = ?", (client,))

    async def logout(self, request: Request) -> Response:
        if await self._form(request) is not None:
            request.session.clear()
        return RedirectResponse("/admin/login", status_code=303)

    # ---- pages
    def _rows(self) -> list[ShopRow]:
        with self.ctx.store() as store:
            return overview(store, self.ctx.compiled.mapping.name, now())

    async def shops(self, request: Request) -> Response:
        if (refused := self._guard(request)) is not None:
            return refused
        rows = await run_in_threadpool(self._rows)
        attention = request.query_params.get("filter") == "attention"
        shown_rows = [r for r in rows if r.needs_attention] if attention else list(rows)
        sort = request.query_params.get("sort", "attention")
        descending = request.query_params.get("dir", "desc" if sort == "attention" else "asc") == "desc"
        shown_rows.sort(key=SORTS.get(sort, SORTS["attention"]), reverse=descending)
        return self.ctx.render(request, "admin_shops.html", {
            "rows": shown_rows, "total": len(rows), "attention_count": sum(r.needs_attention for r in rows),
            "filter": "attention" if attention else "", "sort": sort, "dir": "desc" if descending else "asc",
            "csrf": self._csrf(request)})

    def _shop_data(self, shop_id: str) -> dict[str, Any]:
        name = self.ctx.compiled.mapping.name
        with self.ctx.store() as store:
            shop = ShopRegistry(store, self.ctx.box).get(shop_id)
            state = ShopState(store, shop_id)
            row = next(r for r in overview(store, name, now()) if r.shop.id == shop_id)
            return {"shop": shop, "row": row, "runs": state.last_runs(name, 20),
                    "quarantine": state.open_quarantine(name), "held": state.held(name),
                    "hints": state.all_hints(name)}

    async def shop(self, request: Request) -> Response:
        if (refused := self._guard(request)) is not None:
            return refused
        try:
            data = await run_in_threadpool(self._shop_data, request.path_params["shop_id"])
        except MapperError:
            return PlainTextResponse("no such shop", status_code=404)
        data.update(csrf=self._csrf(request), notice=request.query_params.get("notice"))
        return self.ctx.render(request, "admin_shop.html", data)

    async def act(self, request: Request) -> Response:
        if (refused := self._guard(request)) is not None:
            return refused
        fields = await self._form(request)
        if fields is None:
            return PlainTextResponse("refused", status_code=403)
        shop_id, action = request.path_params["shop_id"], request.path_params["action"]
        actions: dict[str, Callable[[], str]] = {
            "retry": lambda: self._retry(shop_id, fields.get("order", "")),
            "drop": lambda: self._drop(shop_id, fields.get("order", ""), fields.get("reason", "")),
            "disable": lambda: self._status(shop_id, "disabled", fields.get("reason") or "disabled by the operator"),
            "enable": lambda: self._status(shop_id, "active", None),
            "run": lambda: self._run(shop_id)}
        if action not in actions:
            return PlainTextResponse("not found", status_code=404)
        try:
            notice = await run_in_threadpool(actions[action])
        except MapperError as exc:
            notice = f"not done: {exc}"
        log.info("admin: shop %s %s: %s", shop_id, action, notice)
        from urllib.parse import quote
        return RedirectResponse(f"/admin/shops/{quote(shop_id)}?notice={quote(notice)}", status_code=303)

    def _retry(self, shop_id: str, order: str) -> str:
        """As `mapper quarantine retry`, then a run now: the order is fetched again at once."""
        name = self.ctx.compiled.mapping.name
        with self.ctx.store() as store:
            state = ShopState(store, shop_id)
            known = {q.shop_id for q in state.open_quarantine(name)} | state.dropped(name)
            if order not in known:
                return f"order {order} is not in quarantine"
            state.retry(name, [order])
            state.add_hint(name, order, "retry", now())
        run = self._run(shop_id)
        return f"order {order} is tried again: {run}"

    def _drop(self, shop_id: str, order: str, reason: str) -> str:
        reason = " ".join(reason.split())[:200]
        if not reason:
            return "not dropped: give a reason (for the audit trail)"
        name = self.ctx.compiled.mapping.name
        with self.ctx.store() as store:
            state = ShopState(store, shop_id)
            if order not in {q.shop_id for q in state.open_quarantine(name)}:
                return f"order {order} is not in quarantine"
            state.drop(name, order, reason, now())
        return f"order {order} dropped: {reason}"

    def _status(self, shop_id: str, status: str, reason: str | None) -> str:
        with self.ctx.store() as store:
            ShopRegistry(store, self.ctx.box).set_status(shop_id, status, now(), reason)
        return "enabled" if status == "active" else f"disabled: {reason}"

    def _run(self, shop_id: str) -> str:
        with self.ctx.store() as store:
            if ShopRegistry(store, self.ctx.box).get(shop_id).status != "active":
                return "not run: the shop is not active"
        return "a run is enqueued" if self.ctx.enqueue(shop_id) else "a run already waits"

    # ---- the morning summary
    def _summary(self) -> dict[str, Any]:
        rows = self._rows()
        stamp = now()
        attention = [r for r in rows if r.needs_attention]
        return {"generated_at": utc_text(stamp), "shops": len([r for r in rows if r.shop.status != "removed"]),
                "needs_attention": [{"id": r.shop.id, "name": r.shop.name, "status": r.shop.status,
                                     "plan": r.shop.plan, "why": r.attention,
                                     "last_run_at": utc_text(r.last_run_at) if r.last_run_at else None,
                                     "last_outcome": r.last_outcome, "open_quarantine": r.open_quarantine,
                                     "failures": r.shop.failures} for r in attention]}

    async def summary(self, request: Request) -> Response:
        if (refused := self._guard(request)) is not None:
            return refused
        data = await run_in_threadpool(self._summary)
        return self.ctx.render(request, "admin_summary.html", {"data": data, "csrf": self._csrf(request)})

    async def summary_json(self, request: Request) -> Response:
        if (refused := self._guard(request)) is not None:
            return refused
        return JSONResponse(await run_in_threadpool(self._summary))


def _fmt(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value else "–"
