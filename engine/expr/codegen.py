"""Running generated Python so that a traceback can show it.

The fast paths of expressions (engine/expr/generator.py), the stage functions (engine/convert/stages.py)
and the XML writer (engine/output/render.py) are Python generated from the mapping. Each piece is
compiled under a name of its own (``<mapper stages of ccvshop-asperion #3>``) and its source
is registered with :mod:`linecache`, so a traceback, a debugger and ``mapper explain --code``
show the generated line, not ``???``.
"""

from __future__ import annotations

import itertools
import linecache
from typing import Any

_counter = itertools.count(1)


def run_generated(source: str, what: str, namespace: dict[str, Any]) -> str:
    """``exec`` the generated ``source`` in ``namespace``; returns the file name it runs under."""
    filename = f"<mapper {what} #{next(_counter)}>"
    code = compile(source, filename, "exec")
    # (size, mtime None: never checked against a file, lines, name): kept by linecache.checkcache
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    exec(code, namespace)  # noqa: S102 - generated from the mapping's parse trees
    return filename


def generated_source(fn: Any) -> str | None:
    """The generated source a function was compiled from, if it was."""
    code = getattr(fn, "__code__", None)
    if code is None or not code.co_filename.startswith("<mapper "):
        return None
    lines = linecache.getlines(code.co_filename)
    return "".join(lines) if lines else None
