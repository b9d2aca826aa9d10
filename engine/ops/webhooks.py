"""A generic webhook listener: JSON POSTs in, (id, event) hints out.

A webhook is only a hint: the listener records which record id an event was about and
nothing else (no payload contents are kept); the engine re-fetches the record through the
authenticated API before it counts.

    listener = WebhookListener("127.0.0.1", 8080, on_hint=lambda id, event: ...)
    listener.start(); ...; listener.stop()

Accepted requests: ``POST`` with a JSON content type and a JSON object body of at most
``max_body`` bytes holding ``id_field`` (a string or an integer). The event name comes from,
in order: the body's ``event`` key, the ``event_header`` request header (if configured), the
path ``/hooks/<event>``, else ``default_event``. Answers:

* 200 ``{"ok": true}`` -- accepted, ``on_hint(id, event)`` was called;
* 202 ``{"ok": true, "ignored": ...}`` -- a well-formed hint for an event not listened to;
* 400 malformed JSON / not an object / missing or bad id, 411 no length, 413 too large,
  415 not JSON, 404 unknown path, 405 not POST, 500 when ``on_hint`` failed.

Every refusal is logged in one line; nothing a sender does can crash the listener.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterable

__all__ = ["HintRefused", "WebhookListener", "new_token", "shown", "token_hash"]


def token_hash(token: str) -> str:
    """What the state keeps of a subscription's secret token (SHA-256, hex)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> tuple[str, str]:
    """A fresh secret for a subscription's address, and its hash: 192 random bits."""
    import secrets
    token = secrets.token_urlsafe(24)
    return token, token_hash(token)

log = logging.getLogger("engine.ops.webhooks")

_EVENT_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,100}$")
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,99}$")   # never '.', '..' or a path
_BUSY = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class HintRefused(Exception):
    """``on_hint`` refuses a hint it may not keep (a bound reached): answered 429."""


class BadHint(ValueError):
    """A webhook body that is no hint: its HTTP status and a reason that tells no secret."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


def hint_from_body(body: bytes, content_type: str, id_field: str = "id") -> tuple[str, dict]:
    """The record id a webhook body names (a plain identifier), and the parsed body."""
    if "json" not in content_type.lower():
        raise BadHint(415, "the content type must be JSON")
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise BadHint(400, "the body is not valid JSON") from None
    except RecursionError:
        raise BadHint(400, "the body is nested too deeply") from None
    if not isinstance(data, dict):
        raise BadHint(400, "the body is not a JSON object")
    raw_id = data.get(id_field)
    if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)):
        raise BadHint(400, f"the body has no usable '{id_field}' (a string or an integer)")
    rid = str(raw_id).strip()
    if not _ID_RE.match(rid):
        raise BadHint(400, f"the '{id_field}' value is not a plain identifier")
    return rid, data


def shown(text: str, limit: int = 200) -> str:
    """Text from a request as it may go into a log line: control bytes escaped, cut short."""
    text = text[:limit]
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    listener: "WebhookListener"
    slots: threading.BoundedSemaphore

    def process_request(self, request, client_address):
        # a connection is a thread: past max_connections a new one is refused at once
        if not self.slots.acquire(blocking=False):
            log.warning("webhook: refused a connection from %s: %d connections open",
                        client_address[0], self.listener.max_connections)
            try:
                request.sendall(_BUSY)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "mapper-webhooks/1"
    sys_version = ""
    disable_nagle_algorithm = True
    timeout = 10  # seconds for a slow sender; then the connection is dropped

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        text = format % args
        lst: WebhookListener = self.server.listener  # type: ignore[attr-defined]
        if lst.authorize is not None:          # the request line holds the secret token
            text = re.sub(re.escape(lst.path_prefix) + r"/[^/\s\"']+", lst.path_prefix + "/<token>", text)
        log.debug("%s %s", self.client_address[0], shown(text, 400))

    def setup(self) -> None:
        super().setup()
        # the whole request, however slowly it trickles in, within request_seconds
        lst: WebhookListener = self.server.listener  # type: ignore[attr-defined]
        self._deadline = threading.Timer(lst.request_seconds, self._expire)
        self._deadline.daemon = True
        self._deadline.start()

    def _expire(self) -> None:
        log.warning("webhook: a request from %s took longer than %gs; connection closed",
                    self.client_address[0], self.server.listener.request_seconds)  # type: ignore[attr-defined]
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def finish(self) -> None:
        self._deadline.cancel()
        try:
            super().finish()
        except OSError:
            pass

    def _reply(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _refuse(self, status: int, reason: str, *, close: bool = False) -> None:
        log.warning("webhook %s %s refused: %d %s", self.command, self._logged_path(), status, reason)
        if close:
            self.close_connection = True
        self._reply(status, {"ok": False, "error": reason})

    def _logged_path(self) -> str:
        """The path as a log line may show it: control bytes escaped, a token never."""
        lst: WebhookListener = self.server.listener  # type: ignore[attr-defined]
        path = self.path.split("?", 1)[0]
        if lst.authorize is not None and path.startswith(lst.path_prefix + "/"):
            rest = path[len(lst.path_prefix) + 1:]
            path = lst.path_prefix + "/<token>" + ("/" + rest.split("/", 1)[1] if "/" in rest else "")
        return shown(path)

    def _not_post(self) -> None:
        self._refuse(405, "only POST is accepted", close=True)

    do_GET = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _not_post

    def do_POST(self) -> None:  # noqa: N802
        try:
            self._post()
        except Exception:  # noqa: BLE001 - never let a sender crash the listener
            log.exception("webhook: unexpected error while handling a POST")
            try:
                self._refuse(500, "internal error", close=True)
            except Exception:  # noqa: BLE001
                pass

    def _post(self) -> None:
        lst: WebhookListener = self.server.listener  # type: ignore[attr-defined]
        path = self.path.split("?", 1)[0]
        if lst.authorize is not None:
            # /hooks/<token>/<event>: an unknown token, or another event than the token's, is a
            # 404 that tells nothing (the token is checked by its hash, in constant time)
            token, event_of_token = lst._token_from_path(path)
            if token is None or not lst.authorize(token, event_of_token):
                self._refuse(404, "not found", close=True)
                return
            path_event: str | None | bool = event_of_token
        else:
            path_event = lst._event_from_path(path)
        if path_event is False:
            self._refuse(404, f"unknown path (POST to {lst.path_prefix} or "
                              f"{lst.path_prefix}/<event>)", close=True)
            return
        ctype = (self.headers.get("Content-Type") or "").lower()
        length_header = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked" or length_header is None:
            self._refuse(411, "a Content-Length is required", close=True)
            return
        try:
            length = int(length_header)
            if length < 0:
                raise ValueError
        except ValueError:
            self._refuse(400, "bad Content-Length", close=True)
            return
        if length > lst.max_body:
            # Do not read it: answer and close.
            self._refuse(413, f"body of {length} bytes exceeds the limit of {lst.max_body}",
                         close=True)
            return
        body = self.rfile.read(length)
        if lst.signature_key is not None:
            sent = self.headers.get("x-hash") or ""
            want = hmac.new(lst.signature_key.encode(), body, hashlib.sha512).hexdigest()
            if not hmac.compare_digest(sent.lower().encode(), want.encode()):
                self._refuse(401, "the signature (x-hash) is missing or wrong", close=True)
                return
        try:
            rid, data = hint_from_body(body, ctype, lst.id_field)
        except BadHint as exc:
            self._refuse(exc.status, exc.reason)
            return
        event = data.get("event")
        if event is None and lst.event_header:
            event = self.headers.get(lst.event_header)
        if event is None:
            event = path_event or lst.default_event
        if not isinstance(event, str) or not _EVENT_RE.match(event):
            self._refuse(400, "the event name is not a plain name")
            return
        if lst.authorize is not None and event != path_event:
            self._refuse(404, "not found", close=True)     # a token is for one event only
            return
        if event not in lst.events:
            lst._count("ignored")
            log.info("webhook: ignored event %s for id %s", event, rid)
            self._reply(202, {"ok": True, "ignored": event})
            return
        try:
            lst.on_hint(rid, event)
        except HintRefused as exc:
            self._refuse(429, str(exc))
            return
        except Exception as exc:  # noqa: BLE001
            log.error("webhook: recording hint %s/%s failed: %s", event, rid, type(exc).__name__)
            self._reply(500, {"ok": False, "error": "the hint could not be recorded"})
            return
        lst._count("accepted")
        self._reply(200, {"ok": True})


class WebhookListener:
    """Listen for JSON webhook POSTs and pass ``(id, event)`` hints to ``on_hint``."""

    def __init__(self, host: str, port: int, on_hint: Callable[[str, str], None],
                 events: Iterable[str] = ("orders.updated.ispaid", "orders.created"),
                 id_field: str = "id", event_header: str | None = None,
                 max_body: int = 65536, *, default_event: str | None = None,
                 path_prefix: str = "/hooks", authorize: Callable[[str, str], bool] | None = None,
                 signature_key: str | None = None, max_connections: int = 32,
                 request_seconds: float = 15.0):
        """``authorize(token, event)``: paths are ``/hooks/<token>/<event>`` and only a known
        token for its own event is let in (the command line always sets it); ``signature_key``:
        every delivery must carry ``x-hash``, HMAC-SHA512 of the body with this key."""
        self.host = host
        self.port = port
        self.on_hint = on_hint
        self.events = frozenset(events)
        self.id_field = id_field
        self.event_header = event_header
        self.max_body = int(max_body)
        self.default_event = default_event or "orders.updated.ispaid"
        self.path_prefix = "/" + path_prefix.strip("/") if path_prefix.strip("/") else ""
        self.authorize = authorize
        self.signature_key = signature_key
        self.max_connections = int(max_connections)
        self.request_seconds = float(request_seconds)
        self.counts = {"accepted": 0, "ignored": 0}
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def _count(self, what: str) -> None:
        with self._lock:
            self.counts[what] += 1

    def _event_from_path(self, path: str) -> str | None | bool:
        """The event named by the path, ``None`` for the bare endpoint, ``False`` if foreign."""
        path = path.rstrip("/")
        if path in ("", self.path_prefix):
            return None
        prefix = self.path_prefix + "/"
        if path.startswith(prefix):
            rest = path[len(prefix):]
            if rest and "/" not in rest:
                return rest
        return False

    def _token_from_path(self, path: str) -> tuple[str | None, str]:
        prefix = self.path_prefix + "/"
        if not path.startswith(prefix):
            return None, ""
        token, _, event = path[len(prefix):].partition("/")
        if not token or not event or "/" in event.rstrip("/"):
            return None, ""
        return token, event.rstrip("/")

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> "WebhookListener":
        if self._server is not None:
            return self
        server_cls: type[_Server] = _Server
        if ":" in self.host:  # an IPv6 literal such as ::1
            server_cls = type("_Server6", (_Server,), {"address_family": socket.AF_INET6})
        srv = server_cls((self.host, self.port), _Handler)
        srv.listener = self
        srv.slots = threading.BoundedSemaphore(self.max_connections)
        self._server = srv
        self.port = srv.server_address[1]
        self._thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.2},
                                        name=f"webhooks:{self.port}", daemon=True)
        self._thread.start()
        log.info("webhook listener on %s", self.url)
        return self

    def stop(self) -> None:
        srv, self._server = self._server, None
        if srv is not None:
            srv.shutdown()
            srv.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def serve_forever(self) -> None:
        """Run in the current thread until interrupted."""
        self.start()
        try:
            assert self._thread is not None
            while self._thread.is_alive():
                self._thread.join(0.5)
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def __enter__(self) -> "WebhookListener":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{self.path_prefix}"

    def __repr__(self) -> str:
        return f"<WebhookListener {self.host}:{self.port} events={sorted(self.events)}>"
