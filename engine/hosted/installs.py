"""An App Store installation's life: handshake, the owner's form, uninstall (spec/hosted.md §2).

What CCV and the owner's browser send arrives through engine/web/appstore.py; what it means is
here, over the state store, so that each step can be tested and repeated on its own:

1. :meth:`Installs.handshake`: a verified handshake for an unknown ``api_public`` is kept (its
   key pair sealed); a known one is refused (nothing is signed with a time: a replay looks
   exactly like this).
2. :meth:`Installs.complete`: the owner's valid form creates the shop (plan from the app's
   variant), subscribes the shop's webhooks to secret addresses, marks the app installed at
   CCV (``PATCH /apps/{id}``), schedules the first run. Every step looks at what is done
   first, so a form sent again after a failure halfway finishes the job and doubles nothing.
   For an installed shop the same form changes its details (the store's *Edit*).
3. :meth:`Installs.uninstall`: the shop stops at once (no run starts after the answer); its
   credentials, licence code, debtor key and register, and webhook tokens are deleted; the
   audit rows (order numbers and dates) stay. A replay finds nothing left to do.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable

from engine.errors import ConfigError, MapperError
from engine.ops.state.base import utc_parse_required, utc_text
from engine.ops.state.sql import SqlStateStore
from engine.ops.webhooks import new_token, token_hash
from engine.hosted.appstore import App, Handshake
from engine.hosted.crypto import SecretBox
from engine.hosted.runs import CompiledMapping, ShopState, shop_environment
from engine.hosted.shops import Shop, ShopRegistry
from engine.io.http.spec import HttpSpec

__all__ = ["Install", "InstallError", "Installs"]


class InstallError(MapperError):
    """A step of an installation failed; the message is for the operator's log, never a secret."""


@dataclass(frozen=True)
class Install:
    api_public_hash: str
    variant: str
    api_root: str
    return_url: str
    shop_id: str | None
    status: str                     # handshake | installed | uninstalled
    received_at: datetime
    changed_at: datetime


_COLS = "api_public_hash, variant, api_root, return_url, shop_id, status, received_at, changed_at"


def _install(r: tuple) -> Install:
    return Install(r[0], r[1], r[2], r[3], r[4], r[5], utc_parse_required(r[6]), utc_parse_required(r[7]))


#: what identifies an install in the state: the shops registry's hash of the public key
public_hash = ShopRegistry._public_hash


class Installs:
    def __init__(self, store: SqlStateStore, box: SecretBox, compiled: CompiledMapping,
                 http_client: Callable[[HttpSpec], Any] | None = None):
        """``http_client(spec) -> HttpClient``: how the shop's API is reached (tests may wrap it)."""
        self.store, self.box, self.compiled = store, box, compiled
        self.registry = ShopRegistry(store, box)
        if http_client is None:
            from engine.io.http.client import HttpClient
            http_client = HttpClient
        self._http_client = http_client

    # ---- reading
    def get(self, api_public_hash: str) -> Install | None:
        with self.store.read() as db:
            row = db.execute(f"SELECT {_COLS} FROM app_installs WHERE api_public_hash = ?",
                             (api_public_hash,)).fetchone()
        return None if row is None else _install(row)

    def by_shop(self, shop_id: str) -> Install | None:
        with self.store.read() as db:
            row = db.execute(f"SELECT {_COLS} FROM app_installs WHERE shop_id = ?", (shop_id,)).fetchone()
        return None if row is None else _install(row)

    # ---- 1. handshake
    def handshake(self, app: App, hs: Handshake, now: datetime) -> bool:
        """Keep a new install's key pair; False for a known ``api_public`` (refused)."""
        key = public_hash(hs.api_public)
        sealed = self.box.seal(json.dumps({"api_public": hs.api_public, "api_secret": hs.api_secret}))
        stamp = utc_text(now)
        with self.store.write("keep an App Store handshake") as db:
            if db.execute("SELECT 1 FROM app_installs WHERE api_public_hash = ?", (key,)).fetchone() or \
                    db.execute("SELECT 1 FROM shops WHERE api_public_hash = ?", (key,)).fetchone():
                return False
            db.execute(f"INSERT INTO app_installs ({_COLS}, sealed) VALUES (?, ?, ?, ?, NULL, 'handshake', ?, ?, ?)",
                       (key, app.variant, hs.api_root, hs.return_url, stamp, stamp, sealed))
        return True

    # ---- 2. the owner's form
    def shop_of(self, install: Install) -> Shop | None:
        return None if install.shop_id is None else self.registry.get(install.shop_id)

    def complete(self, app: App, install: Install, *, name: str, email: str, licence_code: str | None,
                 now: datetime) -> Shop:
        """Create (or, installed, update) the shop, subscribe, mark installed, schedule: each
        step once however often this is called. Raises InstallError for a step that failed."""
        if install.status == "uninstalled":
            raise InstallError("this installation was removed from the shop")
        if install.variant != app.variant:
            raise InstallError(f"this installation is of the {install.variant} app, not {app.variant}")
        first = install.status == "handshake"
        shop = self._shop(install, name, email, licence_code, now)
        secrets = self.registry.secrets(shop.id)
        client = self._client(shop, secrets)
        try:
            self._subscribe(client, shop, app, now)
            try:
                client.request("PATCH", f"/api/rest/v1/apps/{app.app_id}", json_body={"is_installed": True})
            except Exception as exc:  # noqa: BLE001 - said in words below
                raise InstallError(f"marking the app installed at the shop failed: {exc}") from None
        finally:
            client.close()
        if first:
            self.registry.run_soon(shop.id, now)        # the first run: the next tick takes it
        with self.store.write("finish an App Store installation") as db:
            db.execute("UPDATE app_installs SET status = 'installed', sealed = NULL, changed_at = ? "
                       "WHERE api_public_hash = ?", (utc_text(now), install.api_public_hash))
        return self.registry.get(shop.id)

    def _shop(self, install: Install, name: str, email: str, licence_code: str | None, now: datetime) -> Shop:
        if install.shop_id is not None:
            return self.registry.update_details(install.shop_id, now, name=name, contact_email=email,
                                                licence_code=licence_code)
        with self.store.read() as db:
            row = db.execute("SELECT sealed FROM app_installs WHERE api_public_hash = ?",
                             (install.api_public_hash,)).fetchone()
        keys = json.loads(self.box.open(row[0], "an installation's key pair"))
        shop = self.registry.by_api_public(keys["api_public"])    # made by an attempt that broke off
        if shop is None:
            try:
                shop = self.registry.add(name, install.api_root, ccv_public=keys["api_public"],
                                         ccv_secret=keys["api_secret"], now=now, plan=install.variant,
                                         licence_code=licence_code, contact_name=name, contact_email=email)
            except ConfigError:
                shop = self.registry.by_api_public(keys["api_public"])   # a second form, at the same moment
                if shop is None:
                    raise
        with self.store.write("link an installation to its shop") as db:
            db.execute("UPDATE app_installs SET shop_id = ?, changed_at = ? WHERE api_public_hash = ?",
                       (shop.id, utc_text(now), install.api_public_hash))
        return shop

    def _client(self, shop: Shop, secrets) -> Any:
        m = self.compiled.for_environment(shop_environment(shop, secrets))
        return self._http_client(m.source_http())

    def events(self) -> list[str]:
        """The webhook events the runs use (``intake.webhooks.events`` of the mapping)."""
        return list(self.compiled.mapping.webhooks.events)

    def _subscribe(self, client: Any, shop: Shop, app: App, now: datetime) -> None:
        """One subscription per event at a secret address; one the shop already has is kept."""
        state = ShopState(self.store, shop.id)
        name = self.compiled.mapping.name
        ours = {t.token_hash: t.event for t in state.webhook_tokens(name)}
        prefix = f"{app.public_url}/hooks/"
        try:
            existing = client.request("GET", "/api/rest/v1/webhooks") or {}
            at_shop = set()
            for hook in existing.get("items") or []:
                address = str(hook.get("address") or "")
                if address.startswith(prefix):
                    token, _, event = address[len(prefix):].partition("/")
                    if ours.get(token_hash(token)) == event:
                        at_shop.add(event)
            for event in self.events():
                if event in at_shop:
                    continue
                token, hashed = new_token()
                state.add_webhook_token(name, hashed, event, now)     # before the shop can call it
                client.request("POST", "/api/rest/v1/webhooks",
                               json_body={"event": event, "address": f"{prefix}{token}/{event}", "is_active": True})
        except Exception as exc:  # noqa: BLE001 - the shop's API said no: in words, for the log
            raise InstallError(f"subscribing the shop's webhooks failed: {exc}") from None

    # ---- 3. uninstall
    def uninstall(self, api_public: str, now: datetime) -> Shop | None:
        """Stop the shop and delete its secrets; None if there was nothing (left) to remove."""
        install = self.get(public_hash(api_public))
        shop = self.registry.by_api_public(api_public)
        if install is not None and install.shop_id and shop is None:
            shop_id: str | None = install.shop_id
        else:
            shop_id = shop.id if shop else None
        if install is not None:
            with self.store.write("remove an App Store installation") as db:
                db.execute("UPDATE app_installs SET status = 'uninstalled', sealed = NULL, changed_at = ? "
                           "WHERE api_public_hash = ?", (utc_text(now), install.api_public_hash))
        if shop_id is None:
            return None
        current = self.registry.get(shop_id)
        if current.status == "removed":
            return None
        removed = self.registry.remove(shop_id, now)          # status, secrets (keys, licence, debtor key)
        state = ShopState(self.store, shop_id)
        name = self.compiled.mapping.name
        for t in state.webhook_tokens(name):
            state.remove_webhook_tokens(name, t.token_hash)
        state.forget_register(name)
        return removed
