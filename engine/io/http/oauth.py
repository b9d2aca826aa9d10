"""OAuth2 with a refresh token (Asperion and many accounting APIs).

The access token is fetched with the refresh token and client credentials, renewed
shortly before it expires or when a 401 says it has, and never logged. Servers that
rotate refresh tokens hand out a new one with each renewal: when ``token_file`` is set,
the newest refresh token is kept there (mode 0600) and preferred over the configured one,
so the next run still has a valid token. The state database never holds it.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

import requests

from engine.errors import MapperError
from engine.io.http.auth import Auth, AuthConfigError, AuthSpec, register_auth

MARGIN = 30.0  # renew this many seconds before the token expires


class TokenError(MapperError):
    """The token endpoint refused or failed; the message carries no secrets."""


class TokenRefused(TokenError):
    """The token endpoint answered, and refused the refresh token."""


class OAuth2RefreshAuth(Auth):
    kind = "oauth2_refresh"
    has_credentials = True

    def __init__(self, *, token_url: str, client_id: str, client_secret: str, refresh_token: str,
                 scope: str | None = None, token_file: str | None = None, timeout: float = 15.0,
                 clock: Callable[[], float] | None = None, name: str = "the token endpoint"):
        for key, value in (("token_url", token_url), ("client_id", client_id),
                           ("client_secret", client_secret), ("refresh_token", refresh_token)):
            if not value:
                raise AuthConfigError(f"auth kind 'oauth2_refresh' needs a non-empty '{key}'")
        parts = urlsplit(token_url)
        from engine.io.http.client import is_loopback_host  # late: client imports this module's registry
        if parts.scheme != "https" and not (parts.scheme == "http" and is_loopback_host(parts.hostname)):
            raise AuthConfigError(f"auth token_url must be https (plain http only on loopback): {parts.scheme}://{parts.hostname}")
        self.token_url = token_url
        self.client_id = client_id
        self._client_secret = client_secret
        self._refresh_token = refresh_token
        self._configured_refresh = refresh_token  # tried when a saved token is refused (see _renew)
        self.scope = scope
        self.token_file = Path(os.path.expanduser(token_file)) if token_file else None
        self.timeout = timeout
        self._clock = clock or time.time
        self._access: str | None = None
        self._expires = 0.0
        self.name = name
        self.renewals = 0
        if self.token_file and self.token_file.exists():
            try:
                saved = json.loads(self.token_file.read_text(encoding="utf-8"))
                if saved.get("client_id") == client_id and saved.get("refresh_token"):
                    self._refresh_token = saved["refresh_token"]
            except (OSError, ValueError):
                pass
        self._session = requests.Session()

    def secrets(self) -> list[str]:
        return [s for s in (self._client_secret, self._refresh_token, self._configured_refresh,
                            self._access) if s]

    def _scrub(self, text: str) -> str:
        """A token server's words with every credential of ours taken out (it may echo them)."""
        from engine.io.http.client import Scrubber
        return Scrubber(self.secrets)(text)

    def describe(self) -> str:
        return f"oauth2 refresh token for client '{self.client_id}'"

    def apply(self, method, uri, body, headers) -> None:
        if self._access is None or self._clock() >= self._expires - MARGIN:
            self._renew()
        headers["Authorization"] = f"Bearer {self._access}"

    def renew_after_401(self) -> bool:
        self._access = None
        return True

    def _renew(self) -> None:
        try:
            self._renew_with(self._refresh_token)
        except TokenRefused:
            # The token_file's token was refused: a run killed between a renewal and saving its
            # rotated token leaves a dead one there. A refresh token set since (the error below
            # asks for one) is then tried; the saved one is dead already, so this risks nothing.
            if self._refresh_token == self._configured_refresh:
                raise
            self._refresh_token = self._configured_refresh
            self._renew_with(self._refresh_token)
            self._save()

    def _renew_with(self, refresh_token: str) -> None:
        data = {"grant_type": "refresh_token", "refresh_token": refresh_token,
                "client_id": self.client_id, "client_secret": self._client_secret}
        if self.scope:
            data["scope"] = self.scope
        try:
            # never follow a redirect: a 307/308 would post the client secret and the refresh
            # token again, to whatever host the answer names
            resp = self._session.post(self.token_url, data=data, timeout=self.timeout,
                                      headers={"Accept": "application/json"}, allow_redirects=False)
        except requests.RequestException as exc:
            raise TokenError(f"cannot reach {self.name} ({type(exc).__name__}); try again later") from None
        if resp.is_redirect or 300 <= resp.status_code < 400:
            where = urlsplit(resp.headers.get("Location") or "").hostname or "elsewhere"
            raise TokenError(f"{self.name} answered HTTP {resp.status_code}, a redirect to {where}; "
                             f"credentials are never sent on after a redirect: set token_url to the "
                             f"token endpoint's own address")
        try:
            answer: Mapping[str, Any] = resp.json()
        except ValueError:
            answer = {}
        if resp.status_code != 200 or not answer.get("access_token"):
            error = self._scrub(str(answer.get("error") or f"HTTP {resp.status_code}"))[:60]
            raise TokenRefused(f"{self.name} refused the refresh token ({error}); get a new refresh token "
                             f"and client credentials and set them again (a newly set refresh token is used "
                             f"when the one saved in token_file is refused)")
        self._access = str(answer["access_token"])
        self._expires = self._clock() + float(answer.get("expires_in") or 300)
        self.renewals += 1
        new_refresh = answer.get("refresh_token")
        if new_refresh and new_refresh != self._refresh_token:
            self._refresh_token = str(new_refresh)
            self._save()

    def _save(self) -> None:
        if not self.token_file:
            return
        self.token_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.token_file.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"client_id": self.client_id, "refresh_token": self._refresh_token}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.token_file)


@dataclass(frozen=True)
class OAuth2RefreshSpec(AuthSpec):
    token_url: str | None = None
    client_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)
    refresh_token: str | None = field(default=None, repr=False)
    scope: str | None = None
    token_file: str | None = None

    def build(self, *, clock: Callable[[], float] | None = None) -> Auth:
        return OAuth2RefreshAuth(token_url=str(self.token_url or ""), client_id=str(self.client_id or ""),
                                 client_secret=str(self.client_secret or ""),
                                 refresh_token=str(self.refresh_token or ""), scope=self.scope,
                                 token_file=self.token_file, clock=clock)


register_auth("oauth2_refresh", OAuth2RefreshSpec, {
    "token_url": {"type": "string"}, "client_id": {"type": "string"}, "client_secret": {"type": "string"},
    "refresh_token": {"type": "string"}, "scope": {"type": "string"},
    "token_file": {"type": "string", "description": "Where a rotated refresh token is kept (mode 0600); preferred over refresh_token."},
}, ["token_url", "client_id", "client_secret", "refresh_token"])
