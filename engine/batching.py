"""``chunks``: items in lists of a size (``itertools.batched`` arrives in Python 3.12 only)."""

from __future__ import annotations

from typing import Any, Iterable, Iterator


def chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """``items`` in lists of ``size`` (the last one shorter)."""
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
