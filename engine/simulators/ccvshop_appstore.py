"""The CCV Shop simulator's App Store side (spec/hosted.md §2): installs and uninstalls an app
as CCV does, and serves ``/apps`` to the install's key pair.

``sim.install_app(app)`` makes a fresh key pair, POSTs the signed handshake to the app and,
on ``200 OK``, hands back the install page URL the owner's browser opens (signed as CCV signs
it); the app then marks itself installed (``PATCH /apps/{id}``, 204) and redirects the browser
to ``return_url``, which this simulator serves (``GET /admin/appstore/return``) and counts.
``sim.uninstall_app(api_public)`` POSTs the signed uninstall, then revokes the key pair and
the webhooks that install created (our choice: CCV's behaviour is unknown; the app must not
rely on either).

One simulator is one shop: many shops at once are many simulators, each on its own port with
its own key pairs, as many CCV shops are many hosts. (Keying everything by key pair in one
process would add a routing layer the app never sees.)
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import secrets
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import requests

RETURN_PATH = "/admin/appstore/return"


def app_hash(app_secret: str, url: str, payload: str | bytes) -> str:
    """CCV's x-hash for the App Store calls: HMAC-SHA512(app secret, ``url|payload``)."""
    data = payload.encode("utf-8") if isinstance(payload, str) else payload
    return hmac.new(app_secret.encode(), url.encode() + b"|" + data, hashlib.sha512).hexdigest()


@dataclass
class StoreApp:
    """An app as registered in CCV's Developer App Center."""

    app_id: int
    secret: str
    handshake_url: str
    install_url: str
    uninstall_url: str
    name: str = "Asperion koppeling"


@dataclass
class AppInstall:
    app: StoreApp
    api_public: str
    api_secret: str = field(repr=False)
    return_url: str
    install_page_url: str = ""
    handshake_status: int | None = None
    installed: bool = False
    uninstalled: bool = False

    def __repr__(self) -> str:
        return f"AppInstall(app {self.app.app_id}, {self.api_public}, installed={self.installed})"


class AppStoreMixin:
    """Mixed into CCVShopSimulator: needs ``keys``, ``url``, ``_lock``, ``_rng``, ``_webhooks``."""

    # provided by the host class (annotations only: nothing here shadows the host's at run time)
    keys: dict[str, str]        # api_public -> api_secret
    url: str                    # LoopbackServer.url (a read-only property there)
    _lock: threading.RLock
    _rng: random.Random
    _webhooks: dict[int, dict]  # webhook id -> webhook object

    def _init_appstore(self) -> None:
        self._installs: dict[str, AppInstall] = {}     # api_public -> install
        self.return_visits = 0
        self._return_lock = threading.Lock()

    # ------------------------------------------------------------------ the store's side
    def install_app(self, app: StoreApp, *, language: str = "nl", timeout: float = 10.0) -> AppInstall:
        """Handshake with the app; on ``200 OK`` the install page URL for the owner's browser.
        Anything else leaves no key pair behind (``handshake_status`` says what came back)."""
        # fresh for every install of every shop, as CCV's (not the seeded generator: two
        # simulators would hand out the same pair)
        public, secret = "pub" + secrets.token_hex(16), "sec" + secrets.token_hex(32)
        inst = AppInstall(app, public, secret, self.url + RETURN_PATH)
        with self._lock:
            self.keys[public] = secret
            self._installs[public] = inst
        body = json.dumps({"api_public": public, "api_secret": secret, "api_root": self.url,
                           "return_url": inst.return_url}, separators=(",", ":")).encode()
        try:
            answer = requests.post(app.handshake_url, data=body, timeout=timeout,
                                   headers={"Content-Type": "application/json",
                                            "x-hash": app_hash(app.secret, app.handshake_url, body)})
            inst.handshake_status = answer.status_code
            ok = answer.status_code == 200 and answer.text.strip() == "OK"
        except requests.RequestException:
            ok = False
        if not ok:
            with self._lock:
                self.keys.pop(public, None)
                self._installs.pop(public, None)
            return inst
        query = urlencode({"api_public": public, "language": language,
                           "x-hash": app_hash(app.secret, app.install_url, public)})
        inst.install_page_url = f"{app.install_url}?{query}"
        return inst

    def uninstall_app(self, api_public: str, *, timeout: float = 10.0) -> int:
        """The owner removes the app: the signed uninstall POST, then the key pair is revoked."""
        inst = self._installs[api_public]
        body = json.dumps({"api_public": api_public}, separators=(",", ":")).encode()
        try:
            status = requests.post(inst.app.uninstall_url, data=body, timeout=timeout,
                                   headers={"Content-Type": "application/json",
                                            "x-hash": app_hash(inst.app.secret, inst.app.uninstall_url, body)}
                                   ).status_code
        except requests.RequestException:
            status = 0
        with self._lock:
            self.keys.pop(api_public, None)
            inst.uninstalled, inst.installed = True, False
            for wid in [w for w, hook in self._webhooks.items() if hook.get("owner") == api_public]:
                del self._webhooks[wid]
        return status

    def app_installed(self, api_public: str) -> bool:
        inst = self._installs.get(api_public)
        return bool(inst and inst.installed)

    def installs(self) -> list[AppInstall]:
        with self._lock:
            return list(self._installs.values())

    # ------------------------------------------------------------------ the API's side
    def _route_apps(self, method: str, parts: list[str], public: str, body: bytes, target: str) -> tuple[int, Any]:
        """``GET /apps`` (the one app of this key pair) and ``PATCH /apps/{id}``."""
        from engine.simulators.ccvshop import ApiError, _json_body, _not_allowed, _parse_id, dumps_ccv
        inst = self._installs.get(public)
        if inst is None:
            raise ApiError(403, "403.10", "This key pair belongs to no app")
        view = {"id": inst.app.app_id, "name": inst.app.name, "is_installed": inst.installed}
        if len(parts) == 1:
            if method != "GET":
                raise _not_allowed(method, target)
            return 200, dumps_ccv({"href": f"{self.url}/api/rest/v1/apps", "items": [view]})
        app_id = _parse_id(parts[1], "App")
        if app_id != inst.app.app_id or len(parts) != 2:
            raise ApiError(404, "404.20", f"Unknown resource {'/'.join(parts)!r}")
        if method == "GET":
            return 200, dumps_ccv(view)
        if method != "PATCH":
            raise _not_allowed(method, target)
        data = _json_body(body)
        if not isinstance(data.get("is_installed"), bool):
            raise ApiError(400, "400.10", "is_installed must be true or false")
        inst.installed = data["is_installed"]
        return 204, ""

    def _serve_return_page(self, h) -> None:
        with self._return_lock:
            self.return_visits += 1
        data = (b"<!doctype html><html lang=nl><title>App Store</title>"
                b"<h1>De app is ge\xc3\xafnstalleerd</h1></html>")
        h.send_response(200)
        h.send_header("Content-Type", "text/html; charset=utf-8")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)
