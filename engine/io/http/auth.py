"""Request authentication for the HTTP client: a small registry of auth kinds.

An auth object knows how to add headers to one outgoing request and, optionally, how to
verify the signature of a response. It is built from the ``http.auth`` block of a mapping:

    auth: {kind: hmac, algorithm: sha512, public: ..., secret: ...,
           sign: "{public}|{method}|{uri}|{body}|{date}",
           headers: {x-public: "{public}", x-date: "{date}", x-hash: "{signature}"},
           verify_response: true}
    auth: {kind: bearer, token: ..., header: Authorization, scheme: Bearer}
    auth: {kind: none}

Nothing here is specific to one shop: the string to sign, the header names and the hash
algorithm are configuration. Secrets never appear in ``repr`` or in error messages.
"""

from __future__ import annotations

import hashlib
import hmac
import string
import time
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Mapping, MutableMapping, Sequence

from engine.errors import ConfigError

__all__ = [
    "Auth",
    "AuthConfigError",
    "AuthSpec",
    "BearerAuth",
    "HmacAuth",
    "NoAuth",
    "auth_spec",
    "build_auth",
    "format_date",
    "register_auth",
    "registered_auth_kinds",
]

Clock = Callable[[], float]


class AuthConfigError(ConfigError, ValueError):
    """The ``auth`` block of a mapping cannot be used (unknown kind, missing key...)."""


def format_date(epoch_seconds: float) -> str:
    """``YYYY-MM-DDTHH:MM:SSZ`` in UTC, the form signed and sent in the date header."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch_seconds))


class Auth:
    """Base class: no credentials, nothing to sign, nothing to verify."""

    kind = "none"
    #: True when requests carry credentials (then plain HTTP is refused off loopback).
    has_credentials = False
    #: True when responses carry a signature that :meth:`verify_response` checks.
    verifies_responses = False

    def apply(self, method: str, uri: str, body: bytes, headers: MutableMapping[str, str]) -> None:
        """Add the auth headers for one request. ``uri`` is path + query exactly as sent."""

    def verify_response(self, method: str, uri: str, body: bytes,
                        headers: Mapping[str, str]) -> bool:
        """True when the response signature matches (or when there is nothing to check)."""
        return True

    def secrets(self) -> list[str]:
        """Values that must never appear in a message (used to scrub error texts)."""
        return []

    def renew_after_401(self) -> bool:
        """A 401 arrived: renew the credentials if this kind can (True = send again)."""
        return False

    def describe(self) -> str:
        """A short human name for messages, e.g. ``hmac (public key 'demo')``."""
        return self.kind

    def __repr__(self) -> str:  # never shows secrets
        return f"<{type(self).__name__} {self.describe()}>"


class NoAuth(Auth):
    pass


class BearerAuth(Auth):
    kind = "bearer"
    has_credentials = True

    def __init__(self, token: str, header: str = "Authorization", scheme: str = "Bearer"):
        if not token:
            raise AuthConfigError("auth kind 'bearer' needs a non-empty 'token'")
        self._token = token
        self._header = header
        self._scheme = scheme

    def apply(self, method, uri, body, headers):
        headers[self._header] = f"{self._scheme} {self._token}" if self._scheme else self._token

    def secrets(self):
        return [self._token]

    def describe(self):
        return f"bearer token in header {self._header!r}"


_SIGN_FIELDS = frozenset({"public", "method", "uri", "body", "date"})
_HEADER_FIELDS = frozenset({"public", "date", "signature"})


def _template_fields(template: str, allowed: frozenset, where: str) -> set[str]:
    fields: set[str] = set()
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise AuthConfigError(f"auth {where} template {template!r} is malformed: {exc}") from None
    for _literal, name, spec, conv in parsed:
        if name is None:
            continue
        if name not in allowed or spec or conv:
            raise AuthConfigError(
                f"auth {where} template {template!r} uses {{{name}}}; "
                f"allowed placeholders: {', '.join('{' + f + '}' for f in sorted(allowed))}")
        fields.add(name)
    return fields


class HmacAuth(Auth):
    """HMAC request signing, e.g. CCV Shop's
    ``hex(HMAC-SHA512(secret, public|METHOD|uri|body|date))``.

    * ``method`` is upper case; ``uri`` is path + query exactly as sent (``?`` only with a
      query); ``body`` is the raw request body (empty for GET/DELETE); ``date`` is
      ``YYYY-MM-DDTHH:MM:SSZ`` UTC from the injected clock.
    * The signature is lowercase hex.
    * With ``verify_response``, a response is checked with the same string to sign built
      from the request method/uri, the raw response body and the response's date header.
    """

    kind = "hmac"
    has_credentials = True

    DEFAULT_SIGN = "{public}|{method}|{uri}|{body}|{date}"

    def __init__(self, *, public: str, secret: str, algorithm: str = "sha512",
                 sign: str = DEFAULT_SIGN,
                 headers: Mapping[str, str] | None = None,
                 verify_response: bool = False, clock: Clock | None = None):
        if not public:
            raise AuthConfigError("auth kind 'hmac' needs a non-empty 'public' key")
        if not secret:
            raise AuthConfigError("auth kind 'hmac' needs a non-empty 'secret' key")
        try:
            hashlib.new(algorithm)
        except (ValueError, TypeError):
            raise AuthConfigError(
                f"auth kind 'hmac': unknown hash algorithm {algorithm!r}; use a hashlib name "
                f"such as sha256 or sha512") from None
        if headers is None:
            headers = {"x-public": "{public}", "x-date": "{date}", "x-hash": "{signature}"}
        _template_fields(sign, _SIGN_FIELDS, "'sign'")
        for name, tmpl in headers.items():
            _template_fields(str(tmpl), _HEADER_FIELDS, f"header {name!r}")
        self._public = public
        self._secret = secret.encode("utf-8")
        self._algorithm = algorithm
        self._sign = sign
        self._headers = {str(k): str(v) for k, v in headers.items()}
        self._clock = clock or time.time
        # Where the response carries its signature and date (for verification).
        self._sig_header = next((k for k, v in self._headers.items() if v == "{signature}"), None)
        self._date_header = next((k for k, v in self._headers.items() if v == "{date}"), None)
        if verify_response and (self._sig_header is None or self._date_header is None):
            raise AuthConfigError(
                "auth kind 'hmac' with verify_response needs one header set to '{signature}' "
                "and one set to '{date}'")
        self.verifies_responses = bool(verify_response)

    # -- signing -----------------------------------------------------------------------
    def string_to_sign(self, method: str, uri: str, body: bytes | str, date: str) -> bytes:
        if isinstance(body, bytes):
            body_text = body.decode("utf-8", "surrogateescape")
        else:
            body_text = body
        text = self._sign.format_map({
            "public": self._public, "method": method.upper(), "uri": uri,
            "body": body_text, "date": date,
        })
        return text.encode("utf-8", "surrogateescape")

    def signature(self, method: str, uri: str, body: bytes | str, date: str) -> str:
        message = self.string_to_sign(method, uri, body, date)
        return hmac.new(self._secret, message, self._algorithm).hexdigest()

    def apply(self, method, uri, body, headers):
        date = format_date(self._clock())
        values = {"public": self._public, "date": date,
                  "signature": self.signature(method, uri, body, date)}
        for name, tmpl in self._headers.items():
            headers[name] = tmpl.format_map(values)

    # -- response verification ---------------------------------------------------------
    def verify_response(self, method, uri, body, headers):
        if not self.verifies_responses:
            return True
        got = _header(headers, self._sig_header)
        date = _header(headers, self._date_header)
        if not got or not date:
            return False
        want = self.signature(method, uri, body, date)
        return hmac.compare_digest(want.lower(), got.strip().lower())

    def secrets(self):
        return [self._secret.decode("utf-8", "replace")]

    def describe(self):
        return f"hmac-{self._algorithm} (public key {self._public!r})"


def _header(headers: Mapping[str, str], name: str | None) -> str | None:
    if name is None:
        return None
    value = headers.get(name)
    if value is None:  # plain dicts are case-sensitive; requests' are not
        lname = name.lower()
        for k, v in headers.items():
            if k.lower() == lname:
                return v
    return value


# -- the kinds: one frozen spec per kind, its fields the block's options ------------------

@dataclass(frozen=True)
class AuthSpec:
    """An ``http.auth`` block read once: a frozen dataclass per kind whose fields are the
    block's options (secrets left out of ``repr``), and ``build`` making the auth object."""

    @classmethod
    def from_config(cls, block: Mapping[str, Any], kind: str) -> "AuthSpec":
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(block) - names - {"kind"})
        if unknown:   # the schema refuses them too; a kind registered at run time may differ
            raise AuthConfigError(f"auth kind '{kind}': unknown key(s) {', '.join(unknown)}")
        return cls(**{k: v for k, v in block.items() if k != "kind"})

    def build(self, *, clock: Clock | None = None) -> "Auth":
        raise NotImplementedError


@dataclass(frozen=True)
class NoAuthSpec(AuthSpec):
    def build(self, *, clock: Clock | None = None) -> Auth:
        return NoAuth()


@dataclass(frozen=True)
class BearerSpec(AuthSpec):
    token: str | None = field(default=None, repr=False)
    header: str = "Authorization"
    scheme: str = "Bearer"

    def build(self, *, clock: Clock | None = None) -> Auth:
        return BearerAuth(token=self.token or "", header=self.header, scheme=self.scheme)


@dataclass(frozen=True)
class HmacSpec(AuthSpec):
    public: str | None = None
    secret: str | None = field(default=None, repr=False)
    algorithm: str = "sha512"
    sign: str = HmacAuth.DEFAULT_SIGN
    headers: Mapping[str, str] | None = None
    verify_response: bool = False

    def build(self, *, clock: Clock | None = None) -> Auth:
        return HmacAuth(public=str(self.public or ""), secret=str(self.secret or ""), algorithm=self.algorithm,
                        sign=self.sign, headers=self.headers, verify_response=bool(self.verify_response),
                        clock=clock)


# -- registry ------------------------------------------------------------------------------

@dataclass(frozen=True)
class AuthKind:
    """A registered auth kind: its spec (the options as fields, ``build``), and its options as
    JSON Schema (the mapping schema's ``http.auth`` alternatives are made of these:
    engine/config/schema_check.py)."""

    spec: type[AuthSpec]
    options: Mapping[str, Any]
    required: tuple[str, ...] = ()


_REGISTRY: dict[str, AuthKind] = {}


def register_auth(kind: str, spec: type[AuthSpec], options: Mapping[str, Any] | None = None,
                  required: Sequence[str] = ()) -> None:
    """Register the spec class of an auth kind (a frozen :class:`AuthSpec` dataclass: declare
    each secret ``field(repr=False)``); ``options`` are the JSON Schema of each key its block
    may hold besides ``kind``, ``required`` those it must."""
    _REGISTRY[kind] = AuthKind(spec, dict(options or {}), tuple(required))


def auth_schema() -> dict[str, Any]:
    """The JSON Schema of an ``http.auth`` block: one alternative per registered kind."""
    return {"description": "How requests are signed.", "oneOf": [
        {"type": "object", "additionalProperties": False,
         "properties": {"kind": {"const": kind}, **spec.options}, "required": ["kind", *spec.required]}
        for kind, spec in _REGISTRY.items()]}


def registered_auth_kinds() -> list[str]:
    return sorted(_REGISTRY)


def auth_spec(block: Mapping[str, Any] | None) -> AuthSpec:
    """The spec of an ``http.auth`` block (``None``: no auth)."""
    if not block:
        return NoAuthSpec()
    kind = block.get("kind", "none")
    registered = _REGISTRY.get(kind)
    if registered is None:
        raise AuthConfigError(
            f"unknown auth kind {kind!r}; known kinds: {', '.join(registered_auth_kinds())}")
    return registered.spec.from_config(block, kind)


def build_auth(config: AuthSpec | Mapping[str, Any] | None, *, clock: Clock | None = None) -> Auth:
    """The auth object of a spec, or of an ``http.auth`` block (``None`` means no auth)."""
    spec = config if isinstance(config, AuthSpec) else auth_spec(config)
    return spec.build(clock=clock)


_TEXT = {"type": "string"}
register_auth("hmac", HmacSpec, {
    "algorithm": {"enum": ["sha256", "sha384", "sha512"]}, "public": _TEXT, "secret": _TEXT,
    "sign": {"type": "string", "description": "The string to sign from {public} {method} {uri} {body} {date}."},
    "headers": {"type": "object", "additionalProperties": {"type": "string"},
                "description": "Header name -> value from {public} {date} {signature}."},
    "verify_response": {"type": "boolean", "description": "Verify the server's signature over each 2xx response body."},
}, ["algorithm", "public", "secret", "sign", "headers"])
register_auth("bearer", BearerSpec, {
    "token": _TEXT, "header": {"type": "string", "description": "Header name (default Authorization)."},
    "scheme": {"type": "string", "description": "Prefix before the token (default Bearer; empty for none)."},
}, ["token"])
register_auth("none", NoAuthSpec)

from engine.io.http import oauth  # noqa: E402,F401 - registers the oauth2_refresh kind
