"""Client-side rate limiting: stay under the server's limit by ourselves, not by 429s.

:class:`SlidingWindowLimiter` keeps, per resource, a log of recent requests and lets a new
request start only when fewer than ``requests`` earlier requests are "recent". A request
counts as recent until ``per_seconds`` after its *response arrived* (and for as long as it is
in flight). The server saw request *k* at some moment before its response arrived, and sees
a request that we start later than that moment + ``per_seconds`` after it, so any
``per_seconds`` interval of server time holds at most ``requests`` of our requests -- which
in turn guarantees at most ``requests`` in every fixed server window (e.g. per UTC minute),
whatever the latency and whatever the alignment of the server's windows.

The clock and the sleep function are injectable, so tests and benchmarks run on scaled or
fake time. The resource of a request path is the first path segment after a configured
prefix (``/api/rest/v1/orders/1/orderrows`` -> ``orders``).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from typing import Callable, Iterable

__all__ = ["SlidingWindowLimiter", "Slot", "resource_of"]

Clock = Callable[[], float]
Sleep = Callable[[float], None]


def resource_of(path: str, prefix: str | None = None) -> str:
    """First path segment after ``prefix`` (or after ``/`` when the path lacks the prefix)."""
    if prefix and path.startswith(prefix):
        rest = path[len(prefix):]
    else:
        rest = path
    rest = rest.lstrip("/")
    return rest.split("/", 1)[0].split("?", 1)[0] or "/"


class Slot:
    """One permitted request. Call :meth:`done` when its response has arrived (or failed)."""

    __slots__ = ("start", "end", "_limiter")

    def __init__(self, start: float, limiter: "SlidingWindowLimiter | None"):
        self.start = start
        self.end: float | None = None
        self._limiter = limiter

    def done(self) -> None:
        if self.end is None:
            self.end = self._limiter._clock() if self._limiter else self.start

    def __enter__(self) -> "Slot":
        return self

    def __exit__(self, *exc) -> None:
        self.done()


class SlidingWindowLimiter:
    """At most ``requests`` per ``per_seconds`` per resource, as a sliding-window log."""

    def __init__(self, requests: int, per_seconds: float, *, clock: Clock | None = None,
                 sleep: Sleep | None = None, resource_prefix: str | None = None,
                 methods: Iterable[str] = ("GET",), poll: float = 0.005):
        if int(requests) < 1:
            raise ValueError(f"rate_limit.requests must be at least 1, got {requests}")
        if float(per_seconds) <= 0:
            raise ValueError(f"rate_limit.per_seconds must be positive, got {per_seconds}")
        self.requests = int(requests)
        self.per_seconds = float(per_seconds)
        self.resource_prefix = resource_prefix
        self.methods = {m.upper() for m in methods}
        self._clock = clock or time.time
        self._sleep = sleep or time.sleep
        self._poll = poll
        self._logs: dict[str, deque[Slot]] = {}
        self._blocked_until: dict[str, float] = {}
        self._lock = threading.Lock()
        #: total seconds spent waiting, and how many times a request had to wait
        self.waited = 0.0
        self.waits = 0

    def applies_to(self, method: str) -> bool:
        return method.upper() in self.methods

    def resource(self, path: str) -> str:
        return resource_of(path, self.resource_prefix)

    def _delay(self, resource: str, now: float) -> float:
        """Seconds to wait before a request on ``resource`` may start (0 = go now)."""
        log = self._logs.setdefault(resource, deque())
        window = self.per_seconds
        # Drop requests that no longer count (finished more than a window ago).
        while log and log[0].end is not None and log[0].end + window <= now:
            log.popleft()
        live = [s for s in log if s.end is None or s.end + window > now]
        delay = 0.0
        blocked = self._blocked_until.get(resource)
        if blocked is not None:
            if blocked > now:
                delay = blocked - now
            else:
                del self._blocked_until[resource]
        if len(live) >= self.requests:
            excess = len(live) - self.requests + 1
            ends = sorted(math.inf if s.end is None else s.end for s in live)
            release = ends[excess - 1]
            wait = self._poll if release == math.inf else release + window - now
            delay = max(delay, wait)
        return delay

    def acquire(self, resource: str) -> Slot:
        """Block (via the injected sleep) until a request on ``resource`` may start."""
        while True:
            with self._lock:
                now = self._clock()
                delay = self._delay(resource, now)
                if delay <= 0:
                    slot = Slot(now, self)
                    self._logs[resource].append(slot)
                    return slot
            self.waits += 1
            self.waited += delay
            self._sleep(delay)

    def block_until(self, resource: str, until: float) -> None:
        """Hold every request on ``resource`` until ``until`` (e.g. after a 429)."""
        with self._lock:
            self._blocked_until[resource] = max(until, self._blocked_until.get(resource, until))

