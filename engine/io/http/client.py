"""A small, careful JSON-over-HTTP client driven by the ``http`` block of a mapping.

* One ``requests.Session``. Every request is sent with ONE prebuilt request target
  (path + query string), and that exact target is what gets signed: the prepared request's
  URL is set after preparation, so ``requests`` cannot re-encode it, and the target is put
  in the canonical form ``urllib3`` would send anyway (invalid characters percent-encoded,
  ``%xx`` upper case), so what is signed is byte for byte what goes on the wire. A ``next``
  link from the server is used exactly as given.
* JSON is parsed with every non-integer number a ``Decimal`` (engine.io.jsondecode); any ``*json*`` content type is
  accepted.
* 5xx, timeouts, dropped connections and truncated bodies are retried with exponential
  backoff and jitter (tenacity), capped; then :class:`HttpError` names the method, the URL
  (query secrets redacted) and the last status / code / message.
* 401 is fatal at once (:class:`AuthenticationError`). 429 waits for the next rate window
  (``on_429``) without counting as a failure, until its own attempts run out
  (:class:`RateLimitExceeded`). ``not_found`` statuses/codes raise :class:`NotFound`, or
  return ``None`` with ``allow_missing=True``.
* Secrets (HMAC secret, bearer token, signatures) never appear in a message, a log line or
  a repr.
* Plain HTTP with credentials is refused unless the host is loopback.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import re
import time
from email.utils import parsedate_to_datetime
from typing import Any, Callable, Iterable, Mapping, Sequence
from urllib.parse import quote, urlencode, urlsplit

import requests
import tenacity

from engine.io import jsondecode
from engine.errors import MapperError
from engine.io.http.auth import Auth, build_auth
from engine.io.http.spec import HttpConfigError, HttpSpec
from engine.io.http.pagination import origin_of
from engine.io.http.ratelimit import SlidingWindowLimiter, resource_of

__all__ = [
    "AuthenticationError",
    "HttpClient",
    "HttpConfigError",
    "HttpError",
    "NotFound",
    "RateLimitExceeded",
    "ResponseSignatureError",
    "build_query",
    "wire_target",
    "is_loopback_host",
]

log = logging.getLogger("engine.io.http")

Clock = Callable[[], float]
Sleep = Callable[[float], None]
Params = Mapping[str, Any] | Sequence[tuple[str, Any]] | None


# -- errors ------------------------------------------------------------------------------------
# All under engine.errors.MapperError (exit 1; a configuration error 2), so that a command
# reports them in one place.

class HttpError(MapperError):
    """A request failed for good. The message is safe to show: it carries no secrets."""

    def __init__(self, message: str, *, method: str | None = None, url: str | None = None,
                 status: int | None = None, code: str | None = None, detail: str | None = None,
                 payload: Any = None):
        super().__init__(message)
        self.message = message
        self.payload = payload  # the parsed error body of a 4xx (e.g. problem details), scrubbed
        self.method = method
        self.url = url          # redacted
        self.status = status
        self.code = code
        self.detail = detail    # the server's message, scrubbed

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


class AuthenticationError(HttpError):
    """The server refused the credentials (401). Never retried."""


class NotFound(HttpError):
    """The record does not exist (a configured ``not_found`` status or code)."""


class RateLimitExceeded(HttpError):
    """Still rate limited after the configured ``on_429`` attempts; safe to resume later."""


class ResponseSignatureError(HttpError):
    """A 2xx response's signature did not match: the body is not trusted."""


class AmbiguousWrite(HttpError):
    """A write (POST) got no answer: it may or may not have been processed. Never retried
    blindly; the caller looks the object up before trying again."""


class _AuthRefreshed(Exception):
    """Internal: a 401 made the auth renew its token; send the request once more."""


class _Retryable(Exception):
    """Internal: one attempt failed in a way worth retrying."""

    def __init__(self, reason: str, *, status: int | None = None, code: str | None = None,
                 detail: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.code = code
        self.detail = detail


class _RateLimited(Exception):
    def __init__(self, code: str | None, detail: str | None):
        super().__init__("429")
        self.code = code
        self.detail = detail


# -- helpers ------------------------------------------------------------------------------------

_HEX = "0123456789ABCDEFabcdef"
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_SUB_DELIMS = frozenset("!$&'()*+,;=")
_PATH_CHARS = _UNRESERVED | _SUB_DELIMS | frozenset(":@/")
_QUERY_CHARS = _PATH_CHARS | frozenset("?")
_PCT_RE = re.compile(r"%[0-9A-Fa-f]{2}")
_SECRETISH = re.compile(r"(key|token|secret|sig|hash|pass|auth|session|credential)", re.I)


def _encode_component(component: str, allowed: frozenset) -> str:
    component = _PCT_RE.sub(lambda m: m.group(0).upper(), component)
    raw = component.encode("utf-8", "surrogatepass")
    valid_pct = len(_PCT_RE.findall(component)) == raw.count(b"%")
    out = []
    for byte in raw:
        ch = chr(byte)
        if (ch == "%" and valid_pct) or (byte < 128 and ch in allowed):
            out.append(ch)
        else:
            out.append("%%%02X" % byte)
    return "".join(out)


def wire_target(target: str) -> str:
    """The request target (path + query) exactly as it will go on the wire.

    Valid targets come back unchanged; characters that may not appear in a request line are
    percent-encoded and ``%xx`` escapes are upper-cased (the form urllib3 would send), so the
    signed uri and the sent uri are always the same. A fragment is dropped (never sent). A
    lone ``?`` with an empty query is dropped too.
    """
    target = target.split("#", 1)[0]
    path, sep, query = target.partition("?")
    out = _encode_component(path or "/", _PATH_CHARS)
    if sep and query:
        out += "?" + _encode_component(query, _QUERY_CHARS)
    return out


def _param_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def build_query(params: Params) -> str:
    """One query string from ordered params (dict order kept); ``None`` values are dropped."""
    if not params:
        return ""
    items = params.items() if isinstance(params, Mapping) else params
    pairs = [(str(k), _param_value(v)) for k, v in items if v is not None]
    return urlencode(pairs, quote_via=quote, safe="")


def is_loopback_host(host: str | None) -> bool:
    if not host:
        return False
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Scrubber:
    """Removes secrets from any text that could reach a message or a log line."""

    def __init__(self, secrets: Callable[[], Iterable[str]]):
        self._source = secrets  # asked each time: an OAuth access token changes during a run

    def __call__(self, text: Any) -> str:
        text = str(text)
        for s in sorted({s for s in self._source() if s and len(s) >= 3}, key=len, reverse=True):
            text = text.replace(s, "***")
        # Long hex runs look like signatures; never echo one.
        return re.sub(r"\b[0-9a-fA-F]{40,}\b", "<hex redacted>", text)

    def url(self, url: str) -> str:
        parts = urlsplit(url)
        query = parts.query
        if query:
            redacted = []
            for pair in query.split("&"):
                name, eq, _value = pair.partition("=")
                redacted.append(f"{name}=***" if eq and _SECRETISH.search(name) else pair)
            query = "&".join(redacted)
        shown = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"
        return self(shown + ("?" + query if query else ""))


def _without_userinfo(url: str) -> str:
    """A URL as it may be shown: anything before an '@' in its host part left out."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url.rpartition("@")[2]
    host, slash, path = rest.partition("/")
    return f"{scheme}://{host.rpartition('@')[2]}{slash}{path}"


# -- the client ---------------------------------------------------------------------------------

class HttpClient:
    """JSON over HTTP for one base URL, configured by a mapping's ``http`` block."""

    def __init__(self, spec: HttpSpec | Mapping[str, Any], *, clock: Clock | None = None,
                 sleep: Sleep | None = None, session: requests.Session | None = None):
        """``spec``: the block read (:class:`HttpSpec`), or the block itself."""
        if not isinstance(spec, HttpSpec):
            spec = HttpSpec.from_config(spec)
        self.spec = spec
        self._clock = clock or time.time
        self._sleep = sleep or time.sleep
        base_url = spec.base_url
        try:
            parts = urlsplit(base_url)
            parts.port                                  # a port that is no number raises here
        except ValueError as exc:
            raise HttpConfigError(f"http.base_url is not a valid URL ({exc}): "
                                  f"{_without_userinfo(base_url)}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise HttpConfigError(
                f"http.base_url must be an absolute http(s) URL such as https://shop.example, "
                f"got {_without_userinfo(base_url)!r}")
        if parts.username or parts.password:
            raise HttpConfigError(
                f"http.base_url {_without_userinfo(base_url)} has a user name or password in it; "
                f"credentials belong in http.auth (they would be shown wherever the URL is)")
        self.base_url = base_url
        self._base_path = parts.path.rstrip("/")
        self.name = str(spec.name or parts.hostname)
        self.auth_hint = str(spec.auth_hint or
                             "check the keys configured under http.auth in the mapping and the "
                             "environment variables they come from")

        self.auth: Auth = build_auth(spec.auth, clock=self._clock)
        self._scrub = Scrubber(self.auth.secrets)
        if parts.scheme == "http" and self.auth.has_credentials and not is_loopback_host(parts.hostname):
            raise HttpConfigError(
                f"http.base_url {self._scrub.url(base_url)} uses plain http: credentials "
                f"({self.auth.kind}) are only sent over https (plain http is allowed for "
                f"loopback hosts only); use an https:// URL")

        self.headers = dict(spec.headers)
        self.timeout = spec.timeout
        self.attempts, self.backoff, self.max_backoff = \
            spec.retries.attempts, spec.retries.backoff, spec.retries.max_backoff
        rl = spec.rate_limit
        self.limiter: SlidingWindowLimiter | None = None
        self.resource_prefix = rl.resource_prefix if rl else None
        self.window_seconds = rl.per_seconds if rl else 60.0
        if rl:
            self.limiter = SlidingWindowLimiter(
                rl.requests, rl.per_seconds, clock=self._clock, sleep=self._sleep,
                resource_prefix=rl.resource_prefix, methods=rl.methods)
        on429 = spec.on_429
        self.on429_wait = on429.wait
        self.on429_attempts = on429.attempts
        self.on429_window = on429.window_seconds if on429.window_seconds is not None else self.window_seconds
        self.on429_margin = on429.margin
        self.not_found_status = spec.not_found_status
        self.not_found_codes = spec.not_found_codes
        self.error_code_key = spec.error_code_key
        self.error_message_key = spec.error_message_key

        self.session = session or requests.Session()
        self.stats = {"requests": 0, "responses_429": 0, "retries": 0, "not_found": 0,
                      "rate_limit_waits": 0, "rate_limit_wait_seconds": 0.0,
                      "wait_429_seconds": 0.0}

    # -- public API -------------------------------------------------------------------------
    def __repr__(self) -> str:
        return f"<HttpClient {self._scrub.url(self.base_url)} auth={self.auth.describe()}>"

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> "HttpClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def get(self, target: str, params: Params = None, *, allow_missing: bool = False) -> Any:
        return self.request("GET", target, params, allow_missing=allow_missing)

    def request(self, method: str, target: str, params: Params = None, *,
                body: bytes | str | None = None, json_body: Any = None,
                allow_missing: bool = False) -> Any:
        """Send one request (with retries) and return the parsed JSON (``None`` if empty).

        ``target`` is a path (joined to the base URL) or an absolute URL on the base URL's
        origin, used exactly as given; ``params`` are appended as one query string.
        """
        method = method.upper()
        url, uri = self._build(target, params)
        if json_body is not None:
            body = json.dumps(json_body, separators=(",", ":"), default=str)
        payload = body.encode("utf-8") if isinstance(body, str) else (body or b"")
        safe_url = self._scrub.url(url)
        resource = resource_of(urlsplit(url).path, self.resource_prefix)

        idempotent = method in ("GET", "HEAD", "PUT", "DELETE", "OPTIONS")
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.attempts),
            wait=(tenacity.wait_exponential(multiplier=self.backoff, max=self.max_backoff)
                  + tenacity.wait_random(0, min(self.backoff, self.max_backoff))),
            # A write is retried only when the server said it did not process it (503).
            retry=tenacity.retry_if_exception(
                lambda e: isinstance(e, _Retryable) and (idempotent or e.status == 503)),
            sleep=self._sleep,
            before_sleep=lambda rs: self._before_retry(rs, method, safe_url),
            reraise=True,
        )
        try:
            return retrying(self._attempt_with_429, method, url, uri, payload, resource, safe_url)
        except _Retryable as exc:
            if not idempotent and exc.status != 503:
                raise AmbiguousWrite(
                    self._scrub(f"{method} {safe_url}: {exc.reason}; it may have been processed"),
                    method=method, url=safe_url, status=exc.status) from None
            raise HttpError(
                self._scrub(f"{method} {safe_url} failed after {self.attempts} attempt(s): "
                            f"{exc.reason}"),
                method=method, url=safe_url, status=exc.status, code=exc.code,
                detail=exc.detail) from None
        except NotFound:
            self.stats["not_found"] += 1
            if allow_missing:
                return None
            raise

    # -- internals --------------------------------------------------------------------------
    def _build(self, target: str, params: Params) -> tuple[str, str]:
        query = build_query(params)
        if "://" in target:
            if origin_of(target) != origin_of(self.base_url):
                raise HttpError(
                    f"refusing to send a request to {self._scrub.url(target)}: only the "
                    f"configured base_url host is contacted", url=self._scrub.url(target))
            parts = urlsplit(target)
            raw = parts.path + ("?" + parts.query if parts.query else "")
            origin = f"{parts.scheme}://{parts.netloc}"
        else:
            raw = self._base_path + ("/" + target.lstrip("/"))
            origin = self.base_url[: len(self.base_url) - len(self._base_path)] \
                if self._base_path else self.base_url
        if query:
            raw += ("&" if "?" in raw else "?") + query
        uri = wire_target(raw)
        return origin + uri, uri

    def _before_retry(self, state: tenacity.RetryCallState, method: str, safe_url: str) -> None:
        self.stats["retries"] += 1
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0
        log.warning("%s %s: %s; retry %d of %d in %.1fs", method, safe_url,
                    self._scrub(getattr(exc, "reason", exc)), state.attempt_number,
                    self.attempts - 1, wait)

    def _attempt_with_429(self, method, url, uri, payload, resource, safe_url) -> Any:
        waits = 0
        refreshed = False
        while True:
            try:
                return self._attempt(method, url, uri, payload, resource, safe_url)
            except _AuthRefreshed:
                if refreshed:  # a brand-new token refused too: the credentials are wrong
                    raise AuthenticationError(
                        self._scrub(f"{self.name} refused a freshly issued token for {method} "
                                    f"{safe_url}; {self.auth_hint}"),
                        method=method, url=safe_url, status=401) from None
                refreshed = True
                continue
            except _RateLimited as rl:
                self.stats["responses_429"] += 1
                if waits >= self.on429_attempts:
                    raise RateLimitExceeded(
                        self._scrub(f"{method} {safe_url}: still rate limited (HTTP 429"
                                    f"{', code ' + rl.code if rl.code else ''}) after waiting "
                                    f"{waits} time(s); stopping, the run can be resumed later"),
                        method=method, url=safe_url, status=429, code=rl.code,
                        detail=rl.detail) from None
                waits += 1
                now = self._clock()
                if self.on429_wait == "next_window":
                    w = self.on429_window
                    until = (math.floor(now / w) + 1) * w + self.on429_margin
                else:
                    until = now + float(self.on429_wait)
                if self.limiter is not None:
                    self.limiter.block_until(resource, until)
                log.warning("%s %s: rate limited (429); waiting %.1fs for the next window "
                            "(%d of %d)", method, safe_url, until - now, waits, self.on429_attempts)
                self.stats["wait_429_seconds"] += max(0.0, until - now)
                limited = self.limiter is not None and self.limiter.applies_to(method)
                if not limited and until > now:
                    self._sleep(until - now)  # else the limiter holds the next attempt

    def _attempt(self, method, url, uri, payload, resource, safe_url) -> Any:
        headers = dict(self.headers)
        if payload:
            headers.setdefault("Content-Type", "application/json")
        settings = self.session.merge_environment_settings(url, {}, None, None, None)
        slot = None
        if self.limiter is not None and self.limiter.applies_to(method):
            before = self.limiter.waited
            slot = self.limiter.acquire(resource)
            if self.limiter.waited > before:
                self.stats["rate_limit_waits"] += 1
                self.stats["rate_limit_wait_seconds"] += self.limiter.waited - before
        try:
            self.auth.apply(method, uri, payload, headers)  # after any wait: a fresh date
            prepared = self.session.prepare_request(
                requests.Request(method, url, headers=headers, data=payload or None))
            prepared.url = url  # exactly the target that was signed; no re-encoding
            self.stats["requests"] += 1
            resp = self.session.send(prepared, timeout=self.timeout, allow_redirects=False,
                                     **settings)
            body = resp.content  # reads the whole body: short reads raise here
        except requests.exceptions.Timeout as exc:
            raise _Retryable(f"timed out ({type(exc).__name__})") from None
        except (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError,
                requests.exceptions.ContentDecodingError) as exc:
            raise _Retryable(f"connection failed or body cut short ({type(exc).__name__})") from None
        except (requests.exceptions.InvalidURL, ValueError):
            raise HttpError(f"{self.name}: the address {safe_url} is not a valid URL", url=safe_url) from None
        finally:
            if slot is not None:
                slot.done()
        return self._handle(method, uri, resp, body, safe_url)

    def _error_fields(self, resp, body: bytes) -> tuple[str | None, str | None]:
        try:
            data = json.loads(body.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            return None, None
        if not isinstance(data, Mapping):
            return None, None
        code = data.get(self.error_code_key)
        msg = data.get(self.error_message_key)
        code = None if code is None else self._scrub(code)[:50]
        msg = None if msg is None else self._scrub(msg)[:300]
        return code, msg

    def _handle(self, method, uri, resp, body: bytes, safe_url) -> Any:
        status = resp.status_code
        if 200 <= status < 300:
            return self._success(method, uri, resp, body, safe_url)
        code, detail = self._error_fields(resp, body)
        what = f"HTTP {status}" + (f", code {code}" if code else "") + (f": {detail}" if detail else "")
        if status in self.not_found_status or (code is not None and code in self.not_found_codes):
            raise NotFound(f"{method} {safe_url}: not found ({what})", method=method,
                           url=safe_url, status=status, code=code, detail=detail)
        if status == 401 and self.auth.renew_after_401():
            raise _AuthRefreshed()
        if status == 401:
            raise AuthenticationError(self._auth_message(resp, detail), method=method,
                                      url=safe_url, status=status, code=code, detail=detail)
        if status == 429:
            raise _RateLimited(code, detail)
        if status >= 500 or status == 408:
            raise _Retryable(what, status=status, code=code, detail=detail)
        if 300 <= status < 400:
            what += " (redirects are not followed)"
        try:
            parsed = json.loads(self._scrub(body.decode("utf-8"))) if body else None
        except (ValueError, UnicodeDecodeError):
            parsed = None
        raise HttpError(self._scrub(f"{method} {safe_url} failed: {what}"), method=method,
                        url=safe_url, status=status, code=code, detail=detail, payload=parsed)

    def _auth_message(self, resp, detail: str | None) -> str:
        msg = (f"{self.name} refused the credentials (auth {self.auth.describe()}): "
               f"{detail or 'HTTP 401 without an explanation'}; {self.auth_hint}")
        server_date = resp.headers.get("Date")
        if server_date:
            try:
                skew = self._clock() - parsedate_to_datetime(server_date).timestamp()
                if abs(skew) > 240:
                    msg += (f" (this machine's clock is {abs(skew):.0f} s "
                            f"{'ahead of' if skew > 0 else 'behind'} the server's; signed "
                            f"requests allow only a few minutes)")
            except (TypeError, ValueError, OverflowError):
                pass
        return self._scrub(msg)

    def _success(self, method, uri, resp, body: bytes, safe_url) -> Any:
        signed_ok = self.auth.verify_response(method, uri, body, resp.headers)
        if not body.strip():
            if not signed_ok:
                raise ResponseSignatureError(
                    f"{method} {safe_url}: the response signature does not match; "
                    f"the response is not trusted", method=method, url=safe_url,
                    status=resp.status_code)
            return None
        ctype = resp.headers.get("Content-Type", "")
        if "json" not in ctype.lower():
            raise _Retryable(f"HTTP {resp.status_code} with content type {ctype or 'none'!r} "
                             f"instead of JSON", status=resp.status_code)
        try:
            data = jsondecode.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise _Retryable(f"HTTP {resp.status_code} with a truncated or invalid JSON body "
                             f"({len(body)} bytes; {type(exc).__name__})",
                             status=resp.status_code) from None
        if not signed_ok:
            raise ResponseSignatureError(
                f"{method} {safe_url}: the response signature does not match (response "
                f"verification with auth {self.auth.describe()}); the response is not trusted "
                f"-- check the secret key, or something between us and the server altered it",
                method=method, url=safe_url, status=resp.status_code)
        return data
