"""The JSON run report of ``mapper run``: counts, files, quarantine reasons and flags by order
number and id (never customer data), at --report or the mapping's ``sink.report``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from engine.clock import now
from engine.expr.expressions import EvaluationError, Template
from engine.io.files import atomic_write


def run_report(mapping: Any, result: Any, box: Any) -> dict[str, Any]:
    return {
        "mapping": mapping.name, "run_id": result.run_id, "outcome": result.outcome, "counts": result.counts,
        "outbox": str(box), "files": result.files,
        "quarantined": [{"order_id": q.shop_id, "number": q.number, "reason": q.reason} for q in result.quarantined],
        "flags": [{"number": n, "flag": f} for n, f in result.flags],
        "messages": result.messages,
    }


def write_run_report(mapping: Any, result: Any, target: Path | None, box: Any) -> str | None:
    """Write the report to ``target`` (None: where ``sink.report`` names; nowhere without it).
    The run's work is done by now: what goes wrong here is returned as a warning, not raised."""
    if target is None:
        template = mapping.sink.report
        if not template:
            return None
        stamp = now().strftime("%Y%m%dT%H%M%SZ")
        try:
            target = Path(Template(template)({"run": {"id": result.run_id, "started": stamp},
                                              "tables": mapping.tables}))
        except EvaluationError as exc:
            return (f"could not name the run report (sink.report: {exc}); the run itself is recorded "
                    f"in the state")
    try:
        with atomic_write(target) as f:
            f.write(json.dumps(run_report(mapping, result, box), indent=2, ensure_ascii=False).encode("utf-8"))
    except OSError as exc:
        return f"could not write the run report {target}: {exc.strerror}"
    return None
