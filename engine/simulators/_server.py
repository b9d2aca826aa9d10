"""Plumbing shared by the loopback simulators (stdlib only).

* :class:`SimHandler`: the quiet HTTP/1.1 request handler that hands every request to the
  simulator's ``handle(handler, method)``.
* :class:`LoopbackServer`: runs that handler on a threaded server in a daemon thread
  (``start``/``stop``, ``with``, ``url``).
* :class:`BaseFault` and :class:`FaultRegistry`: injected fault rules and picking them.
* :class:`Simulator`: the base of a simulator: server, lock, seeded fault registry and
  request log.
* :func:`read_body` and :func:`drop_connection`: small handler helpers.
"""
from __future__ import annotations

import random
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self, TypeVar

__all__ = ["SimHandler", "LoopbackServer", "BaseFault", "FaultRegistry", "Simulator",
           "read_body", "drop_connection"]


class SimHandler(BaseHTTPRequestHandler):
    """Passes every request to ``server.sim.handle(self, method)``; logs nothing.

    Subclasses set ``server_version``."""

    # Headers and body go out in separate writes; without this every keep-alive request
    # waits ~40 ms for the client's delayed ACK (Nagle).
    disable_nagle_algorithm = True
    protocol_version = "HTTP/1.1"
    sys_version = ""

    def _go(self) -> None:
        self.server.sim.handle(self, self.command)  # type: ignore[attr-defined]

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _go

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    sim: Any  # the LoopbackServer that serves on it


class LoopbackServer:
    """Serves ``handler_class`` on ``host:port`` in a daemon thread (port 0 = ephemeral).

    Subclasses set ``handler_class`` and ``thread_name`` (the thread is ``name:port``)."""

    handler_class: type[BaseHTTPRequestHandler] = SimHandler
    thread_name = "loopback"

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.host, self.port = host, port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Self:
        """Bind and serve in the background; a no-op when already running."""
        if self._server is not None:
            return self
        srv = _Server((self.host, self.port), self.handler_class)
        srv.sim = self
        self._server = srv
        self.port = srv.server_address[1]
        self._thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"{self.thread_name}:{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket; safe to call twice."""
        srv, self._server = self._server, None
        if srv is not None:
            srv.shutdown()
            srv.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """``http://host:port`` of the running server."""
        if self._server is None:
            raise RuntimeError("simulator not started")
        return f"http://{self.host}:{self.port}"

    def serve_until_interrupted(self) -> None:
        """Block until Ctrl-C, then stop (for the command lines)."""
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()


class BaseFault:
    """An injected fault rule.  ``count``: the next N matching requests (then expires);
    ``rate``: with this probability (seeded); neither: every matching request until
    ``clear_faults()``; both: with probability ``rate`` until it fired ``count`` times.

    Subclasses set ``KINDS``, the fault kinds they know."""

    KINDS: tuple[str, ...] = ()

    def __init__(self, kind: str, count: int | None, rate: float | None,
                 path_contains: str | None, params: dict):
        if kind not in self.KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {self.KINDS}")
        self.kind, self.count, self.rate = kind, count, rate
        self.path_contains, self.params = path_contains, params
        self.hits = 0

    @property
    def active(self) -> bool:
        return self.count is None or self.hits < self.count

    def matches(self, method: str, target: str, *context: Any) -> bool:
        """Whether the rule applies to a request (``target`` = path+query)."""
        return self.path_contains is None or self.path_contains in target

    def _repr_extra(self) -> str:
        return ""

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.kind!r}, count={self.count}, rate={self.rate}, "
                f"path_contains={self.path_contains!r}{self._repr_extra()}, hits={self.hits})")


_F = TypeVar("_F", bound="BaseFault")


class FaultRegistry:
    """The injected rules of one simulator, picked in injection order under its lock."""

    def __init__(self, lock: threading.RLock, rng: random.Random):
        self._lock, self._rng = lock, rng
        self._rules: list[BaseFault] = []

    def add(self, fault: _F) -> _F:
        with self._lock:
            self._rules.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def pick(self, method: str, target: str, *context: Any) -> Any:
        """The first active, matching rule whose ``rate`` draw fires (it counts a hit), or None.

        The seeded draw is made only for rules that are active and match."""
        with self._lock:
            for f in self._rules:
                if not f.active or not f.matches(method, target, *context):
                    continue
                if f.rate is not None and self._rng.random() >= f.rate:
                    continue
                f.hits += 1
                return f
        return None


class Simulator(LoopbackServer):
    """A loopback server with the state every simulator shares: an ``RLock``, a seeded
    random source (also drives rate faults), the fault registry and ``request_log``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, seed: int = 0):
        super().__init__(host, port)
        # (method, path+query, status); 0 = no answer
        self.request_log: list[tuple[str, str, int]] = []
        self._lock = threading.RLock()
        self._rng = random.Random(seed)
        self._faults = FaultRegistry(self._lock, self._rng)

    def clear_faults(self) -> None:
        """Remove every injected fault."""
        self._faults.clear()

    def _log(self, method: str, target: str, status: int) -> None:
        with self._lock:
            self.request_log.append((method, target, status))


def read_body(h: BaseHTTPRequestHandler) -> bytes:
    """The request body per ``Content-Length`` (missing or bad: empty)."""
    try:
        length = int(h.headers.get("Content-Length") or 0)
    except ValueError:
        length = 0
    return h.rfile.read(length) if length > 0 else b""


def drop_connection(h: BaseHTTPRequestHandler) -> None:
    """Close the client connection now, without (the rest of) an answer."""
    h.close_connection = True
    try:
        h.connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
