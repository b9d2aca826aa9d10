"""What is PostgreSQL's own in the state store (the shared contract is test_state_sqlite.py):
migrations that mirror SQLite's, the run lock in the database, read-only opening, messages
without passwords, and a real `mapper run` with its state in PostgreSQL."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import date, datetime, timezone
from pathlib import Path

import psycopg
import pytest

from engine.ops.state import LockBusy, OrderRef, ReadOnlyStateError, StateError, open_state
from engine.ops.state import migrations
from engine.ops.state.postgres import PostgresStateStore, latest_version, public_location

ROOT = Path(__file__).resolve().parents[1]
M = "ccvshop-asperion"
T0 = datetime(2025, 3, 1, 8, 0, tzinfo=timezone.utc)


def test_migrations_mirror_sqlite_version_for_version():
    pg, lite = migrations.load("postgres"), migrations.load("sqlite")
    assert [(m.version, m.name) for m in pg] == [(m.version, m.name) for m in lite]


def test_store_sql_translates_exactly():
    """The shared statements use ``?`` and never ``%``: turning ``?`` into ``%s`` is exact."""
    source = (ROOT / "engine" / "ops" / "state" / "sqlite.py").read_text("utf-8")
    statements = re.findall(r'"((?:SELECT|INSERT|UPDATE|DELETE)[^"]*)"', source)
    assert len(statements) > 20
    for sql in statements:
        assert "%" not in sql and "'?'" not in sql, sql


def test_open_migrates_once_and_records_versions(pg_url):
    with open_state(pg_url) as s:
        assert isinstance(s, PostgresStateStore) and s.schema_version() == latest_version() >= 2
    with open_state(pg_url) as s:                      # a second open applies nothing again
        rows = s._db().execute("SELECT version FROM schema_version ORDER BY 1").fetchall()
    assert [r[0] for r in rows] == list(range(1, latest_version() + 1))


def test_readonly_needs_the_schema_and_refuses_every_write(pg_url):
    with pytest.raises(StateError, match="run `mapper db upgrade`"):
        open_state(pg_url, readonly=True)              # an empty database is not created by a dry-run
    with open_state(pg_url) as s:
        s.create_batch(M, "b1", "one.xml", [OrderRef("1", "10001", date(2025, 2, 1))])
        s.mark_delivered("b1", "c", T0)
    with open_state(pg_url, readonly=True) as ro:
        assert ro.delivered(M, ["1", "2"]) == {"1"}
        for write in (lambda: ro.begin_run(M, T0, "run"),
                      lambda: ro.quarantine(M, "2", "2", "r", T0),
                      lambda: ro.add_hint(M, "2", "e", T0),
                      lambda: ro.run_lock(M, 0).__enter__()):
            with pytest.raises(ReadOnlyStateError):
                write()
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):   # the session itself is read-only
            ro._db().execute("INSERT INTO hints VALUES ('m', '1', 'e', 'now')")


def test_newer_schema_is_refused(pg_url):
    open_state(pg_url).close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("INSERT INTO schema_version VALUES (99, 'x', 'y')")
    for readonly in (False, True):
        with pytest.raises(StateError, match=r"newer mapper \(schema v99\)"):
            open_state(pg_url, readonly=readonly)


def test_run_lock_is_per_mapping_and_names_its_holder(pg_url):
    with open_state(pg_url) as a, open_state(pg_url) as b:
        with a.run_lock(M, wait_seconds=0) as info:
            assert info.pid == os.getpid()
            with pytest.raises(LockBusy, match="this process") as err:
                with b.run_lock(M, wait_seconds=0.2):
                    pass
            assert err.value.holder.pid == os.getpid()
            with b.run_lock("another mapping", wait_seconds=0):
                pass
        with b.run_lock(M, wait_seconds=0):             # released on exit
            pass


def test_messages_never_show_the_password(pg_database):
    secret_url = pg_database.replace("postgresql://postgres@", "postgresql://postgres:hunter2-pw@")
    assert public_location(secret_url + "?sslmode=disable") == pg_database
    with open_state(secret_url) as s:                   # trust auth: the password is not needed
        assert "hunter2" not in s.location and "hunter2" not in repr(s)
    with pytest.raises(StateError) as err:
        open_state(secret_url.rsplit("/", 1)[0] + "/no_such_database_here")
    assert "hunter2" not in str(err.value) and "no_such_database_here" in str(err.value)


def _env(tmp: Path, state: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CCVSHOP_", "MAPPER_"))}
    env.update(MAPPER_STATE=state, MAPPER_DEBTOR_KEY="test-register-key-0123456789",
               MAPPER_REPORTS=str(tmp / "reports"), MAPPER_NOW="2026-11-26T21:00:00Z",
               PYTHONDONTWRITEBYTECODE="1")
    return env


def test_mapper_run_with_its_state_in_postgresql(pg_url, tmp_path):
    """The same runner, end to end: files out once, a second run finds nothing new, and the
    state (not the outbox) is what knows it."""
    fixtures = ROOT / "tests" / "fixtures" / "ccvshop"
    cmd = [sys.executable, "-m", "engine.cli", "run", str(ROOT / "mappings" / "ccvshop_asperion.yaml"),
           "--fixtures", str(fixtures), "--outbox", str(tmp_path / "out")]
    first = subprocess.run(cmd, env=_env(tmp_path, pg_url), capture_output=True, text=True, timeout=120)
    assert first.returncode in (0, 3), first.stderr
    files = sorted((tmp_path / "out").iterdir())
    assert files, first.stdout
    with open_state(pg_url, readonly=True) as s:
        [run] = s.last_runs(M)
        delivered = run.counts["delivered"]
        assert delivered > 0 and run.outcome is not None
    second = subprocess.run(cmd, env=_env(tmp_path, pg_url), capture_output=True, text=True, timeout=120)
    assert second.returncode in (0, 3), second.stderr
    assert sorted((tmp_path / "out").iterdir()) == files          # nothing delivered twice
    with open_state(pg_url, readonly=True) as s:
        assert s.last_runs(M)[0].counts.get("delivered", 0) == 0
        total = s._db().execute("SELECT COUNT(*) FROM batch_orders WHERE live = 1").fetchone()[0]
    assert total == delivered


def test_a_pooled_store_borrows_its_connection_and_gives_it_back(pg_url):
    from psycopg_pool import ConnectionPool
    open_state(pg_url).close()                                 # the schema, as `db upgrade` leaves it
    with ConnectionPool(pg_url, min_size=1, max_size=2, kwargs={"autocommit": True}, open=True) as pool:
        for i in range(5):                                     # more stores than connections
            with PostgresStateStore(pg_url, pool=pool) as s:
                s.add_hint(M, str(i), "e", T0)
        assert pool.get_stats()["pool_size"] <= 2
        with pytest.raises(ValueError, match="pooled state store is writable"):
            PostgresStateStore(pg_url, pool=pool, readonly=True)
        with PostgresStateStore(pg_url, pool=pool) as s:
            assert sorted(h.shop_id for h in s.hints(M)) == ["0", "1", "2", "3", "4"]
            with pytest.raises(StateError):
                with s.write("fail on purpose"):
                    s._db().execute("SELECT * FROM no_such_table")
        with PostgresStateStore(pg_url, pool=pool) as s:       # the connection came back usable
            assert len(s.hints(M)) == 5
