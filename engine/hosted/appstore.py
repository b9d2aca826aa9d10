"""The CCV Shop App Store protocol, the app's side (spec/hosted.md §2): signatures and settings.

CCV signs what it sends the app with the **app secret**: ``x-hash`` = lowercase hex
HMAC-SHA512 over ``"<the app URL as registered>|<raw body>"`` (handshake, uninstall) or
``"<install URL without query>|<api_public>"`` (the install page). No timestamp is signed:
replays are refused by what the app remembers (a known ``api_public``). Pure functions here;
the web side is engine/web/appstore.py.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from dataclasses import dataclass
from urllib.parse import urlsplit

from engine.errors import ConfigError

VARIANTS = ("basis", "plus")
#: a handshake or uninstall body is a few hundred bytes; anything past this is refused unread
MAX_BODY = 16 * 1024


def sign(app_secret: str, url: str, payload: bytes | str) -> str:
    """``x-hash`` of CCV: HMAC-SHA512(app secret, ``url|payload``), lowercase hex."""
    data = payload.encode("utf-8") if isinstance(payload, str) else payload
    return hmac.new(app_secret.encode("utf-8"), url.encode("utf-8") + b"|" + data, hashlib.sha512).hexdigest()


def verify(expected: str, given: object) -> bool:
    """Constant-time compare of a hex digest with what came in (None or junk: False)."""
    if not isinstance(given, str) or not given.isascii():
        return False
    return hmac.compare_digest(expected.encode("ascii"), given.strip().lower().encode("ascii"))


@dataclass(frozen=True)
class Handshake:
    api_public: str
    api_secret: str
    api_root: str
    return_url: str

    def __repr__(self) -> str:                        # never the secret in a log or traceback
        return f"Handshake(api_public={self.api_public!r}, api_root={self.api_root!r})"

    __str__ = __repr__


class BadHandshake(ValueError):
    """The body is not a handshake; the message names the field, never a value of a secret."""


def parse_handshake(body: bytes) -> Handshake:
    if len(body) > MAX_BODY:
        raise BadHandshake(f"the body is over {MAX_BODY} bytes")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise BadHandshake("the body is not JSON") from None
    if not isinstance(data, dict):
        raise BadHandshake("the body is not a JSON object")
    values = {}
    for name in ("api_public", "api_secret", "api_root", "return_url"):
        value = data.get(name)
        if not isinstance(value, str) or not value.strip() or len(value) > 2000:
            raise BadHandshake(f"{name} is missing or not a text")
        values[name] = value.strip()
    for name in ("api_root", "return_url"):
        parts = urlsplit(values[name])
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise BadHandshake(f"{name} is not a web address")
    return Handshake(**values)


@dataclass(frozen=True)
class App:
    """One of the two apps in the store (Basis, Plus), as registered in CCV's Developer App Center."""

    variant: str
    app_id: str
    secret: str
    public_url: str

    def url(self, step: str) -> str:
        """The URL registered for ``step`` (handshake, install, uninstall): what CCV signs over."""
        return f"{self.public_url}/ccv/{self.variant}/{step}"

    def __repr__(self) -> str:
        return f"App({self.variant}, id {self.app_id})"


def apps_from_env(environ: dict[str, str] | None = None) -> dict[str, App]:
    """The apps configured by MAPPER_PUBLIC_URL and MAPPER_CCV_APP_ID_*/MAPPER_CCV_APP_SECRET_*."""
    env = os.environ if environ is None else environ
    public = env.get("MAPPER_PUBLIC_URL", "").strip().rstrip("/")
    parts = urlsplit(public)
    if parts.scheme not in ("https", "http") or not parts.hostname or parts.query or parts.fragment:
        raise ConfigError("MAPPER_PUBLIC_URL is not set to the base URL registered with CCV",
                          hint="e.g. MAPPER_PUBLIC_URL=https://koppeling.example.nl")
    apps = {}
    for variant in VARIANTS:
        app_id = env.get(f"MAPPER_CCV_APP_ID_{variant.upper()}", "").strip()
        secret = env.get(f"MAPPER_CCV_APP_SECRET_{variant.upper()}", "")
        if app_id and secret:
            apps[variant] = App(variant, app_id, secret, public)
    if not apps:
        raise ConfigError("no App Store app is configured",
                          hint="set MAPPER_CCV_APP_ID_BASIS and MAPPER_CCV_APP_SECRET_BASIS (and/or …_PLUS)")
    return apps
