"""The job queue's schema (procrastinate's), applied by `mapper db upgrade` beside ours.

procrastinate ships its schema as one SQL file per release; it is applied once, when its
tables are missing, and the version applied is recorded in ``queue_schema``. An upgrade of
procrastinate itself brings its own migrations (its ``sql/migrations``): the version is pinned
in pyproject.toml and a change of it is a deliberate step.
"""

from __future__ import annotations

from importlib.metadata import version

from engine.clock import now
from engine.ops.state.base import StateError, utc_text


def apply_queue_schema(store, database: str) -> str:
    """Apply procrastinate's schema if it is missing; says what was done."""
    import procrastinate

    db = store._db()
    if db.execute("SELECT to_regclass('procrastinate_jobs')").fetchone()[0] is not None:
        row = db.execute("SELECT version FROM queue_schema ORDER BY applied_at DESC LIMIT 1").fetchone()
        return f"procrastinate {row[0] if row else 'of unknown version'} already applied"
    release = version("procrastinate")
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=database))
    try:
        with app.open():
            app.schema_manager.apply_schema()
    except Exception as exc:  # its errors are psycopg's: one line, no URL
        raise StateError(f"cannot apply the job queue's schema: {' '.join(str(exc).split())}") from None
    with store.write("record the job queue's schema") as db:
        db.execute("INSERT INTO queue_schema (package, version, applied_at) VALUES (?, ?, ?)",
                   ("procrastinate", release, utc_text(now())))
    return f"procrastinate {release} applied"
