"""The App Store URLs of `mapper serve`: handshake, install page and form, uninstall.

Every refusal is logged for the operator (which step, which app, from where, why) and answered
without a detail an attacker can use; nothing is stored for a refused call. The form is in Dutch
(English for ``language=en``), its errors next to the field, its values kept; its POST carries
a signed token that expires and is tied to that installation (itsdangerous), so a forged or
stale form is refused.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from engine.clock import now
from engine.errors import MapperError
from engine.hosted.appstore import MAX_BODY, App, BadHandshake, parse_handshake, sign, verify
from engine.hosted.installs import Install, InstallError, Installs, public_hash
from engine.ops.webhooks import shown
from engine.web.context import BodyTooLarge, WebContext, client_of, read_body

log = logging.getLogger("mapper.serve.appstore")

FORM_MAX_AGE = 3600                 # seconds a form may take from page to POST
FORM_MAX_BODY = 16 * 1024
NAME_MAX, EMAIL_MAX = 100, 254
_EMAIL = re.compile(r"^[^@\s<>\"'(),;:\[\]]+@[^@\s<>\"'(),;:\[\]]+\.[A-Za-z]{2,}$")
_LICENCE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{3,63}$")
_MARKUP = re.compile(r"[<>\"`{}\x00-\x1f\x7f]")

TEXTS = {
    "nl": {
        "title": "Asperion koppeling installeren", "edit_title": "Instellingen van de koppeling",
        "intro": "Vul uw gegevens in. De koppeling zet elke betaalde bestelling als conceptfactuur in Asperion.",
        "edit_intro": "De koppeling is geïnstalleerd. Hier wijzigt u uw gegevens.",
        "shop": "Webwinkel", "plan": "Versie", "name": "Naam", "email": "E-mailadres",
        "licence_code": "Licentiecode", "licence_keep": "Leeg laten houdt de huidige code",
        "submit": "Installeer de koppeling", "save": "Opslaan",
        "required": "Vul dit veld in.", "too_long": "Dit is te lang (hoogstens {n} tekens).",
        "markup": "Gebruik geen tekens als < > \" ` { }.", "email_bad": "Dit is geen geldig e-mailadres.",
        "licence_bad": "Een licentiecode bestaat uit 4 tot 64 letters, cijfers en streepjes.",
        "expired": "Dit formulier is verlopen. Open de installatie opnieuw vanuit de App Store.",
        "failed": "Er ging iets mis bij het installeren. Probeer het over een paar minuten opnieuw; "
                  "wat al gedaan is, wordt niet dubbel gedaan.",
        "unknown": "Deze installatie is onbekend of verlopen. Start de installatie opnieuw vanuit de CCV Shop App Store.",
    },
    "en": {
        "title": "Install the Asperion connector", "edit_title": "Connector settings",
        "intro": "Fill in your details. The connector books every paid order as a concept invoice in Asperion.",
        "edit_intro": "The connector is installed. Change your details here.",
        "shop": "Web shop", "plan": "Plan", "name": "Name", "email": "E-mail address",
        "licence_code": "Licence code", "licence_keep": "Leave empty to keep the current code",
        "submit": "Install the connector", "save": "Save",
        "required": "Please fill in this field.", "too_long": "This is too long (at most {n} characters).",
        "markup": "Do not use characters such as < > \" ` { }.", "email_bad": "This is not a valid e-mail address.",
        "licence_bad": "A licence code is 4 to 64 letters, digits and dashes.",
        "expired": "This form has expired. Open the installation again from the App Store.",
        "failed": "Something went wrong while installing. Try again in a few minutes; "
                  "what is done already is not done twice.",
        "unknown": "This installation is unknown or has expired. Start it again from the CCV Shop App Store.",
    },
}


def _lang(value: Any) -> str:
    return "en" if value == "en" else "nl"


def validate(form: dict[str, str], lang: str, licence_required: bool) -> dict[str, str]:
    """Field -> error message (in the form's language); empty when the form is good."""
    t = TEXTS[lang]
    errors = {}
    name, email, code = form["name"], form["email"], form["licence_code"]
    if not name:
        errors["name"] = t["required"]
    elif len(name) > NAME_MAX:
        errors["name"] = t["too_long"].format(n=NAME_MAX)
    elif _MARKUP.search(name):
        errors["name"] = t["markup"]
    if not email:
        errors["email"] = t["required"]
    elif len(email) > EMAIL_MAX:
        errors["email"] = t["too_long"].format(n=EMAIL_MAX)
    elif not _EMAIL.match(email):
        errors["email"] = t["email_bad"]
    if not code:
        if licence_required:
            errors["licence_code"] = t["required"]
    elif len(code) > 64 or not _LICENCE.match(code):
        errors["licence_code"] = t["licence_bad"]
    return errors


class AppStoreRoutes:
    def __init__(self, ctx: WebContext):
        self.ctx = ctx
        self.tokens = URLSafeTimedSerializer(ctx.box.signing_key("install form"), salt="mapper install form")

    def routes(self) -> list[Route]:
        return [Route("/ccv/{variant}/handshake", self.handshake, methods=["POST"]),
                Route("/ccv/{variant}/install", self.install, methods=["GET", "POST"]),
                Route("/ccv/{variant}/uninstall", self.uninstall, methods=["POST"])]

    def _app(self, request: Request) -> App | None:
        return self.ctx.settings.apps.get(request.path_params["variant"])

    def _refuse(self, request: Request, step: str, status: int, why: str) -> Response:
        log.warning("app store %s %s refused (%d) from %s: %s", request.path_params.get("variant", "?"),
                    step, status, client_of(request), why)
        return PlainTextResponse("refused" if status != 404 else "not found", status_code=status)

    def _installs(self, store) -> Installs:
        return Installs(store, self.ctx.box, self.ctx.compiled)

    # ---- 1. handshake (CCV's server)
    async def handshake(self, request: Request) -> Response:
        app = self._app(request)
        if app is None:
            return self._refuse(request, "handshake", 404, "no such app")
        try:
            body = await read_body(request, MAX_BODY)
        except BodyTooLarge:
            return self._refuse(request, "handshake", 413, f"body over {MAX_BODY} bytes")
        if not verify(sign(app.secret, app.url("handshake"), body), request.headers.get("x-hash")):
            return self._refuse(request, "handshake", 401, "the x-hash does not match (wrong app secret or URL?)")
        try:
            hs = parse_handshake(body)
        except BadHandshake as exc:
            return self._refuse(request, "handshake", 400, str(exc))

        def keep() -> bool:
            with self.ctx.store() as store:
                return self._installs(store).handshake(app, hs, now())
        if not await run_in_threadpool(keep):
            return self._refuse(request, "handshake", 409, "this api_public is known already (a replay?)")
        log.info("app store %s: handshake accepted for %s", app.variant, shown(hs.api_root))
        return PlainTextResponse("OK")

    # ---- 2. the install page and its form (the owner's browser)
    async def install(self, request: Request) -> Response:
        app = self._app(request)
        if app is None:
            return self._refuse(request, "install", 404, "no such app")
        if request.method == "GET":
            return await self._page(request, app)
        return await self._submit(request, app)

    async def _page(self, request: Request, app: App) -> Response:
        q = request.query_params
        lang = _lang(q.get("language"))
        api_public = q.get("api_public") or ""
        if not api_public or not verify(sign(app.secret, app.url("install"), api_public), q.get("x-hash")):
            log.warning("app store %s install page refused from %s: the signature of the query does not match",
                        app.variant, client_of(request))
            return self._message(request, lang, "unknown", 403)
        key = public_hash(api_public)

        def load():
            with self.ctx.store() as store:
                installs = self._installs(store)
                install = installs.get(key)
                return install, (installs.shop_of(install) if install else None)
        install, shop = await run_in_threadpool(load)
        if install is None or install.status == "uninstalled" or install.variant != app.variant:
            log.warning("app store %s install page: no open installation for this key (%s)", app.variant,
                        "none" if install is None else install.status)
            return self._message(request, lang, "unknown", 404)
        values = {"name": shop.name if shop else "", "email": (shop.contact_email or "") if shop else "",
                  "licence_code": ""}
        return self._form(request, app, install, lang, values, {}, edit=shop is not None)

    async def _submit(self, request: Request, app: App) -> Response:
        try:
            body = await read_body(request, FORM_MAX_BODY)
        except BodyTooLarge:
            return self._refuse(request, "install form", 413, f"body over {FORM_MAX_BODY} bytes")
        from urllib.parse import parse_qs
        try:
            fields = {k: v[0] for k, v in parse_qs(body.decode("utf-8"), keep_blank_values=True,
                                                    max_num_fields=10, strict_parsing=False).items()}
        except (UnicodeDecodeError, ValueError):
            return self._refuse(request, "install form", 400, "the form is not URL-encoded UTF-8")
        lang = _lang(fields.get("language"))
        try:
            claim = self.tokens.loads(fields.get("token", ""), max_age=FORM_MAX_AGE)
        except SignatureExpired:
            log.warning("app store %s install form from %s: its token expired", app.variant, client_of(request))
            return self._message(request, lang, "expired", 403)
        except BadSignature:
            return self._refuse(request, "install form", 403, "a forged or damaged form token")
        if not isinstance(claim, dict) or claim.get("v") != app.variant or not isinstance(claim.get("p"), str):
            return self._refuse(request, "install form", 403, "the form token is for another app")

        def load():
            with self.ctx.store() as store:
                return self._installs(store).get(claim["p"])
        install = await run_in_threadpool(load)
        if install is None or install.status == "uninstalled":
            log.warning("app store %s install form: the installation is gone (%s)", app.variant,
                        "none" if install is None else install.status)
            return self._message(request, lang, "unknown", 404)
        values = {k: " ".join(str(fields.get(k, "")).split()) for k in ("name", "email")}
        values["licence_code"] = str(fields.get("licence_code", "")).strip()
        edit = install.shop_id is not None
        errors = validate(values, lang, licence_required=not edit)
        if errors:
            log.info("app store %s install form: %s to correct", app.variant, ", ".join(sorted(errors)))
            return self._form(request, app, install, lang, values, errors, edit=edit, status=400)

        def complete():
            with self.ctx.store() as store:
                return self._installs(store).complete(app, install, name=values["name"], email=values["email"].lower(),
                                                      licence_code=values["licence_code"] or None, now=now())
        try:
            shop = await run_in_threadpool(complete)
        except (InstallError, MapperError) as exc:
            log.error("app store %s install of %s failed halfway (safe to repeat): %s", app.variant,
                      shown(install.api_root), exc)
            return self._form(request, app, install, lang, values, {"_form": TEXTS[lang]["failed"]}, edit=edit,
                              status=502)
        log.info("app store %s: shop %s %s", app.variant, shop.id, "updated" if edit else "installed")
        return RedirectResponse(install.return_url, status_code=303)

    def _form(self, request: Request, app: App, install: Install, lang: str, values: dict, errors: dict,
              *, edit: bool, status: int = 200) -> Response:
        token = self.tokens.dumps({"p": install.api_public_hash, "v": app.variant})
        return self.ctx.render(request, "install.html", {
            "t": TEXTS[lang], "lang": lang, "values": values, "errors": errors, "token": token, "edit": edit,
            "shop_url": install.api_root, "plan": app.variant.capitalize(),
            "action": f"/ccv/{app.variant}/install"}, status)

    def _message(self, request: Request, lang: str, key: str, status: int) -> Response:
        return self.ctx.render(request, "message.html", {"t": TEXTS[lang], "lang": lang,
                                                         "message": TEXTS[lang][key]}, status)

    # ---- 3. uninstall (CCV's server)
    async def uninstall(self, request: Request) -> Response:
        app = self._app(request)
        if app is None:
            return self._refuse(request, "uninstall", 404, "no such app")
        try:
            body = await read_body(request, MAX_BODY)
        except BodyTooLarge:
            return self._refuse(request, "uninstall", 413, f"body over {MAX_BODY} bytes")
        if not verify(sign(app.secret, app.url("uninstall"), body), request.headers.get("x-hash")):
            return self._refuse(request, "uninstall", 401, "the x-hash does not match")
        import json
        try:
            data = json.loads(body)
            api_public = data["api_public"]
            if not isinstance(api_public, str) or not api_public:
                raise ValueError
        except (ValueError, KeyError, TypeError):
            return self._refuse(request, "uninstall", 400, "no api_public in the body")

        def remove():
            with self.ctx.store() as store:
                return self._installs(store).uninstall(api_public, now())
        shop = await run_in_threadpool(remove)
        if shop is None:
            log.info("app store %s uninstall: nothing (left) to remove", app.variant)
        else:
            log.info("app store %s: shop %s removed; its keys are deleted, its audit rows kept", app.variant, shop.id)
        return PlainTextResponse("OK")
