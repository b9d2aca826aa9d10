"""An ``http`` block of a mapping (``source.http``, ``destination.api.http``), read once.

The schema has checked names and types; what it cannot check are values that come from the
environment (``timeout: ${MAPPER_TIMEOUT}`` is a string until a run reads it): those are
turned into numbers here, with the key named when they are not. The secrets stay in the auth
spec's fields, which ``repr`` leaves out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from engine.errors import ConfigError
from engine.io.http.auth import AuthSpec, NoAuthSpec, auth_spec


class HttpConfigError(ConfigError, ValueError):
    """The ``http`` block cannot be used as it is (e.g. plain HTTP with credentials)."""


def _number(block: Mapping[str, Any], key: str, default: float, where: str) -> float:
    value = block.get(key, default)
    try:
        return float(value)
    except (TypeError, ValueError):
        raise HttpConfigError(f"http: {where}{key} must be a number, got {value!r}") from None


@dataclass(frozen=True)
class RetrySpec:
    """``retries``: attempts of a request that failed on the way (5xx, timeouts)."""

    attempts: int = 4
    backoff: float = 0.5
    max_backoff: float = 20.0


@dataclass(frozen=True)
class RateLimitSpec:
    """``rate_limit``: at most ``requests`` per ``per_seconds`` (per resource, per method)."""

    requests: int
    per_seconds: float = 60.0
    resource_prefix: str | None = None
    methods: tuple[str, ...] = ("GET",)


@dataclass(frozen=True)
class On429Spec:
    """``on_429``: how long to wait after a 429 (``next_window`` or seconds), how often."""

    wait: str | float = "next_window"
    attempts: int = 3
    window_seconds: float | None = None    # None: the rate limit's per_seconds
    margin: float = 1.0


@dataclass(frozen=True)
class HttpSpec:
    """One API's connection: where, how signed, how patient, what a missing record looks like."""

    base_url: str = ""
    name: str | None = None          # for messages (default: the host)
    auth_hint: str | None = None     # what to check when the API refuses the keys
    auth: AuthSpec = field(default_factory=NoAuthSpec)
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout: tuple[float, float] = (5.0, 30.0)     # connect, read
    retries: RetrySpec = field(default_factory=RetrySpec)
    rate_limit: RateLimitSpec | None = None
    on_429: On429Spec = field(default_factory=On429Spec)
    not_found_status: frozenset[int] = frozenset({404})
    not_found_codes: frozenset[str] = frozenset()
    error_code_key: str = "code"
    error_message_key: str = "message"

    @classmethod
    def from_config(cls, block: Mapping[str, Any] | None) -> "HttpSpec":
        b = block or {}
        timeout = b.get("timeout", {})
        if isinstance(timeout, Mapping):
            times = (_number(timeout, "connect", 5.0, "timeout."), _number(timeout, "read", 30.0, "timeout."))
        else:
            seconds = _number(b, "timeout", 30.0, "")
            times = (seconds, seconds)
        r = b.get("retries") or {}
        retries = RetrySpec(max(1, int(r.get("attempts", 4))), _number(r, "backoff", 0.5, "retries."),
                            _number(r, "max_backoff", 20.0, "retries."))
        rl = b.get("rate_limit")
        rate_limit = None if not rl else RateLimitSpec(
            int(rl["requests"]), _number(rl, "per_seconds", 60, "rate_limit."), rl.get("resource_prefix"),
            tuple(rl.get("methods", ("GET",))))
        o = b.get("on_429") or {}
        wait = o.get("wait", "next_window")
        if wait != "next_window":
            try:
                wait = float(wait)
            except (TypeError, ValueError):
                raise HttpConfigError(f"http.on_429.wait must be 'next_window' or a number of seconds, "
                                      f"got {wait!r}") from None
        window = o.get("window_seconds")
        on_429 = On429Spec(wait, int(o.get("attempts", 3)),
                           None if window is None else _number(o, "window_seconds", 60, "on_429."),
                           _number(o, "margin", 1, "on_429."))
        nf = b.get("not_found") or {}
        eb = b.get("error_body") or {}
        return cls(base_url=str(b.get("base_url") or "").rstrip("/"), name=b.get("name"),
                   auth_hint=b.get("auth_hint"), auth=auth_spec(b.get("auth")),
                   headers={str(k): str(v) for k, v in (b.get("headers") or {}).items()},
                   timeout=times, retries=retries, rate_limit=rate_limit, on_429=on_429,
                   not_found_status=frozenset(int(s) for s in nf.get("status", [404])),
                   not_found_codes=frozenset(str(c) for c in nf.get("codes", [])),
                   error_code_key=eb.get("code", "code"), error_message_key=eb.get("message", "message"))
