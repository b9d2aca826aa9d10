"""The state store contract, on both back-ends: SQLite on real database files and PostgreSQL
on the real server (a fresh schema per test), with real child processes for crashes.

Every test runs on both unless it is marked ``sqlite_only`` (it looks at SQLite's file, lock
file or schema directly); PostgreSQL's own checks are in ``test_state_postgres.py``.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest

from engine.errors import MapperError
from engine.ops.state import (
    BatchConflict, BatchStateError, LockBusy, OrderRef, ReadOnlyStateError, StateError,
    StateStore, StateVersionError, UnknownBatch, default_state_path, open_state,
)
from engine.ops.state.sqlite import SQLiteStateStore, latest_version, lock_path_for  # noqa: E402

M = "ccvshop-asperion"
T0 = datetime(2025, 3, 1, 8, 0, tzinfo=timezone.utc)


def ref(i: int, day: int = 1) -> OrderRef:
    return OrderRef(str(i), str(10000 + i), date(2025, 2, day))


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path: Path):
    """Where the state lives: a SQLite file path, or a PostgreSQL URL (a fresh schema)."""
    if request.param == "postgresql":
        return request.getfixturevalue("pg_url")
    return tmp_path / "state" / "state.sqlite"



@pytest.fixture
def store(db: Path):
    s = open_state(db)
    yield s
    s.close()


# --------------------------------------------------------------------------- child processes


def child(code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_line(proc: subprocess.Popen, expected: str) -> None:
    line = proc.stdout.readline().strip()
    if line != expected:
        proc.kill()
        raise AssertionError(f"child said {line!r}, stderr: {proc.stderr.read()}")


def sigkill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=10) == -signal.SIGKILL
    proc.stdout.close()
    proc.stderr.close()


# --------------------------------------------------------------------------- opening


@pytest.mark.sqlite_only
def test_open_creates_private_wal_database_with_current_schema(db: Path, store: StateStore):
    assert isinstance(store, SQLiteStateStore) and store.readonly is False
    assert db.exists() and oct(db.stat().st_mode & 0o777) == "0o600"
    assert store.schema_version() == latest_version() >= 2
    raw = sqlite3.connect(db)
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert [r[0] for r in raw.execute("SELECT version FROM schema_version ORDER BY 1")] == \
        list(range(1, latest_version() + 1))
    raw.close()


def test_open_state_urls(tmp_path: Path, monkeypatch):
    p = tmp_path / "a.sqlite"
    with open_state(f"sqlite:///{p}") as s:
        assert s.location == str(p)
    with open_state(f"sqlite:////{str(p).lstrip('/')}") as s:
        assert s.location == str(p)
    with pytest.raises(StateError, match="cannot connect to the state database") as err:
        open_state("postgresql://user:s3cr3t-pw@127.0.0.1:1/db?connect_timeout=2")
    assert "s3cr3t" not in str(err.value) and "postgresql://user@127.0.0.1:1/db" in str(err.value)
    with pytest.raises(StateError, match="unsupported state store"):
        open_state("mysql://host/db")
    assert issubclass(StateError, MapperError)

    monkeypatch.setenv("MAPPER_STATE", str(tmp_path / "env.sqlite"))
    assert default_state_path() == tmp_path / "env.sqlite"
    monkeypatch.delenv("MAPPER_STATE")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_state_path() == tmp_path / "xdg" / "mapper" / "state.sqlite"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_state_path() == tmp_path / "home" / ".local/share/mapper/state.sqlite"
    with open_state(None) as s:
        assert Path(s.location) == tmp_path / "home" / ".local/share/mapper/state.sqlite"


def test_not_a_state_database(tmp_path: Path):
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(StateError, match="cannot open state database"):
        open_state(junk)
    other = tmp_path / "other.sqlite"
    c = sqlite3.connect(other)
    c.execute("CREATE TABLE foo (x)")
    c.commit()
    c.close()
    with pytest.raises(StateError, match="not a mapper state database"):
        open_state(other)


@pytest.mark.sqlite_only
def test_newer_schema_is_refused(db: Path, store: StateStore):
    store.close()
    raw = sqlite3.connect(db)
    raw.execute("INSERT INTO schema_version (version, name, applied_at) VALUES (99, 'x', 'y')")
    raw.commit()
    raw.close()
    for readonly in (False, True):
        with pytest.raises(StateVersionError) as err:
            open_state(db, readonly=readonly)
        assert "state database was written by a newer mapper (schema v99); upgrade mapper" \
            in str(err.value)


@pytest.mark.sqlite_only
def test_upgrade_from_v1_keeps_data(db: Path):
    old = SQLiteStateStore(db, schema_version=1)
    assert old.schema_version() == 1
    run = old.begin_run(M, T0, "run")
    old.close()
    raw = sqlite3.connect(db)       # batches as a v1 mapper wrote them (no run_id/remote_id)
    raw.executescript(f"""
        INSERT INTO batches (id, mapping, file_name, status, created_at, delivered_at, checksum)
        VALUES ('b1', '{M}', 'one.xml', 'delivered', '2025-03-01T08:00:00.000000Z',
                '2025-03-01T08:00:01.000000Z', 'sha256:aa'),
               ('b2', '{M}', 'two.xml', 'pending', '2025-03-01T08:00:02.000000Z', NULL, NULL);
        INSERT INTO batch_orders (batch_id, mapping, shop_id, number, order_date, live)
        VALUES ('b1', '{M}', '1', '10001', '2025-02-01', 1),
               ('b1', '{M}', '2', '10002', '2025-02-01', 1),
               ('b2', '{M}', '3', '10003', '2025-02-01', 1);
    """)
    raw.close()
    old = SQLiteStateStore(db, schema_version=1)
    old.quarantine(M, "9", "10009", "VAT rate 7% not mapped", T0)
    old.finish_run(run, "ok", {"delivered": 2, "quarantined": 1})
    old.close()
    raw = sqlite3.connect(db)
    assert "hints" not in {r[0] for r in raw.execute("SELECT name FROM sqlite_master")}
    raw.close()

    # a dry-run of the newer mapper reads the old file without upgrading it
    with open_state(db, readonly=True) as ro:
        assert ro.delivered(M, ["1", "2", "3"]) == {"1", "2"}
        assert ro.hints(M) == [] and ro.is_enabled(M)
    assert SQLiteStateStore(db, schema_version=1).schema_version() == 1

    with open_state(db) as s:
        assert s.schema_version() == latest_version()
        assert s.delivered(M, ["1", "2", "3"]) == {"1", "2"}
        assert [b.id for b in s.pending_batches(M)] == ["b2"]
        assert s.pending_batches(M)[0].orders == (ref(3),)
        assert s.delivered_count(M, 2025) == 2
        assert s.batch("b1").checksum == "sha256:aa" and s.batch("b1").run_id is None
        assert [q.shop_id for q in s.open_quarantine(M)] == ["9"]
        assert s.last_runs(M)[0].counts == {"delivered": 2, "quarantined": 1}
        assert s.add_hint(M, "5", "orders.updated.ispaid", T0)   # v2 tables work
        assert s.debtor_next_number(M, 1000) == 1000
    with open_state(db) as s:                                   # migrations run once
        assert s.schema_version() == latest_version()


# --------------------------------------------------------------------------- runs


def test_runs(store: StateStore):
    r1 = store.begin_run(M, T0, "run")
    r2 = store.begin_run(M, T0 + timedelta(days=1), "catch-up")
    store.begin_run("other", T0, "run")
    store.finish_run(r1, "ok", {"delivered": 3, "quarantined": 0}, report_path="/r/1.html",
                     finished_at=T0 + timedelta(minutes=2))
    runs = store.last_runs(M)
    assert [r.id for r in runs] == [r2, r1]
    assert runs[1].outcome == "ok" and runs[1].counts == {"delivered": 3, "quarantined": 0}
    assert runs[1].finished_at == T0 + timedelta(minutes=2) and runs[1].report_path == "/r/1.html"
    assert runs[0].finished_at is None and runs[0].mode == "catch-up"
    assert runs[0].started_at.tzinfo is not None
    assert len(store.last_runs(M, limit=1)) == 1
    with pytest.raises(StateError, match="no run with id"):
        store.finish_run(9999, "ok", {})
    with pytest.raises(ValueError, match="must be an integer"):
        store.finish_run(r2, "ok", {"delivered": "3"})
    with pytest.raises(ValueError, match="timezone-aware"):
        store.begin_run(M, datetime(2025, 1, 1), "run")


# --------------------------------------------------------------------------- batches


def test_pending_then_delivered(store: StateStore):
    b = store.create_batch(M, "b1", "ccvshop-2025-03-01-1.xml", [ref(1), ref(2, 3)],
                           created_at=T0)
    assert b.status == "pending" and b.created_at == T0
    assert b.orders == (ref(1), ref(2, 3))
    pend = store.pending_batches(M)
    assert [(p.id, p.file_name, p.orders) for p in pend] == \
        [("b1", "ccvshop-2025-03-01-1.xml", (ref(1), ref(2, 3)))]
    assert store.delivered(M, ["1", "2"]) == set()       # pending is not delivered

    d = store.mark_delivered("b1", "sha256:abc", T0 + timedelta(seconds=5), remote_id="inv-7")
    assert d.status == "delivered" and d.checksum == "sha256:abc" and d.remote_id == "inv-7"
    assert store.pending_batches(M) == []
    assert store.delivered(M, ["1", "2", "3"]) == {"1", "2"}
    assert store.delivered("other-mapping", ["1", "2"]) == set()
    # idempotent with the same checksum, refused with another one
    assert store.mark_delivered("b1", "sha256:abc", T0).delivered_at == d.delivered_at
    with pytest.raises(BatchStateError, match="another checksum"):
        store.mark_delivered("b1", "sha256:zzz", T0)
    with pytest.raises(BatchStateError, match="only a pending batch can be discarded"):
        store.discard_batch("b1")
    with pytest.raises(UnknownBatch):
        store.mark_delivered("nope", "x", T0)
    assert store.batch("nope") is None


def test_overlapping_batch_is_refused_atomically(store: StateStore):
    store.create_batch(M, "b1", "one.xml", [ref(1), ref(2)])
    with pytest.raises(BatchConflict) as err:
        store.create_batch(M, "b2", "two.xml", [ref(3), ref(2)])
    assert err.value.conflicts == {"2": "b1"}
    assert "order 2 (in batch b1)" in str(err.value)
    assert store.batch("b2") is None                      # nothing of b2 was recorded
    store.create_batch(M, "b3", "three.xml", [ref(3)])     # 3 was not taken by the refusal
    store.mark_delivered("b1", "c1", T0)
    with pytest.raises(BatchConflict):                     # delivered blocks too
        store.create_batch(M, "b4", "four.xml", [ref(1)])
    store.create_batch("other-mapping", "b5", "five.xml", [ref(1)])  # other mapping: fine
    with pytest.raises(BatchStateError, match="already exists"):
        store.create_batch(M, "b3", "again.xml", [ref(8)])
    with pytest.raises(StateError, match="more than once"):
        store.create_batch(M, "b6", "six.xml", [ref(8), ref(8)])


def test_discard_frees_orders(store: StateStore):
    store.create_batch(M, "b1", "one.xml", [ref(1), ref(2)])
    gone = store.discard_batch("b1", T0)
    assert gone.status == "discarded" and gone.discarded_at == T0
    assert store.pending_batches(M) == []
    store.create_batch(M, "b2", "two.xml", [ref(1), ref(2)])
    store.mark_delivered("b2", "c", T0)
    assert store.delivered(M, ["1", "2"]) == {"1", "2"}
    assert store.batch("b1").orders == (ref(1), ref(2))   # kept for audit


def test_delivered_many_ids_and_count_per_year(store: StateStore):
    ids = list(range(1, 2601))
    for n, start in enumerate(range(0, 2600, 500)):       # 6 batches, the last one short
        batch = [ref(i) for i in ids[start:start + 500]]
        store.create_batch(M, f"b{n}", f"{n}.xml", batch)
        year = 2024 if n == 0 else 2025
        store.mark_delivered(f"b{n}", f"c{n}", datetime(year, 12, 31, 23, 59, tzinfo=timezone.utc))
    store.create_batch(M, "pending", "p.xml", [ref(9001)])
    asked = [str(i) for i in range(1, 5001)] + ["9001"]
    assert store.delivered(M, asked) == {str(i) for i in ids}
    assert store.delivered(M, iter(["7", "7", "99999"])) == {"7"}
    assert store.delivered(M, "7") == {"7"}                # a bare id is one id
    assert store.delivered_count(M, 2024) == 500
    assert store.delivered_count(M, 2025) == 2100
    assert store.delivered_count(M, 2026) == 0
    # the year is the delivery's UTC year, whatever zone the caller used
    store.create_batch(M, "tz", "tz.xml", [ref(9002)])
    store.mark_delivered("tz", "c", datetime(2026, 1, 1, 0, 30,
                                             tzinfo=timezone(timedelta(hours=1))))
    assert store.delivered_count(M, 2025) == 2101
    # counted by the Amsterdam calendar (the plans' year): 23:59Z on 31 December is already
    # 00:59 on 1 January there, so those batches count in the next year
    assert store.delivered_count(M, 2024, "Europe/Amsterdam") == 0
    assert store.delivered_count(M, 2025, "Europe/Amsterdam") == 500        # b0, 2024-12-31T23:59Z
    assert store.delivered_count(M, 2026, "Europe/Amsterdam") == 2100 + 1   # and "tz", 00:30 on 1 January


def test_crash_after_pending_leaves_a_pending_batch(db: Path):
    open_state(db).close()
    proc = child(f"""
        import sys, time
        from datetime import date
        from engine.ops.state import open_state, OrderRef
        s = open_state({str(db)!r})
        s.create_batch({M!r}, "crash-1", "crash.xml", [OrderRef("1", "10001", date(2025, 2, 1))])
        print("pending", flush=True)
        time.sleep(60)      # "writing the file" when the power goes
    """)
    wait_for_line(proc, "pending")
    sigkill(proc)
    with open_state(db) as s:
        [b] = s.pending_batches(M)
        assert (b.id, b.file_name, b.orders) == ("crash-1", "crash.xml", (ref(1),))
        with pytest.raises(BatchConflict):                 # not re-batched behind its back
            s.create_batch(M, "again", "again.xml", [ref(1)])
        s.mark_delivered("crash-1", "c", T0)              # the file was there: finish it
        assert s.delivered(M, ["1"]) == {"1"}


def test_concurrent_processes_batch_an_order_once(db: Path):
    open_state(db).close()
    procs = [child(f"""
        from datetime import date
        from engine.ops.state import open_state, OrderRef, BatchConflict
        s = open_state({str(db)!r})
        try:
            s.create_batch({M!r}, "p{n}", "p{n}.xml",
                           [OrderRef(str(i), str(i), date(2025, 2, 1)) for i in range(1, 200)])
            print("won")
        except BatchConflict:
            print("refused")
    """) for n in range(4)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=30)
        assert p.returncode == 0, err
        results.append(out.strip())
    assert sorted(results) == ["refused"] * 3 + ["won"]
    with open_state(db) as s:
        assert len(s.pending_batches(M)) == 1


# --------------------------------------------------------------------------- quarantine


def test_quarantine_lifecycle(store: StateStore):
    e = store.quarantine(M, "7", "10007", "totals differ by 0.02", T0)
    assert (e.attempts, e.status, e.first_seen, e.last_seen) == (1, "open", T0, T0)
    later = T0 + timedelta(days=1)
    e = store.quarantine(M, "7", "10007", "VAT rate 7% (DE, 2025-02-01) not mapped", later)
    assert (e.attempts, e.first_seen, e.last_seen) == (2, T0, later)
    assert e.reason.startswith("VAT rate 7%")
    store.quarantine(M, "8", "10008", "missing e-mail", T0)
    store.quarantine("other", "7", "10007", "x", T0)
    assert [q.shop_id for q in store.open_quarantine(M)] == ["7", "8"]

    store.drop(M, "8", "cancelled by the shop owner", later)
    assert store.dropped(M) == {"8"}
    assert [q.shop_id for q in store.open_quarantine(M)] == ["7"]
    e = store.quarantine(M, "8", "10008", "seen again", later)   # a drop sticks
    assert e.status == "dropped" and store.dropped(M) == {"8"}
    assert store.retry(M, ["8", "7"]) == 1
    [q7, q8] = store.open_quarantine(M)
    assert (q8.shop_id, q8.status, q8.attempts, q8.dropped_at) == ("8", "open", 2, None)

    store.drop(M, "55", "never seen, dropped by hand", later)    # drop works without an entry
    assert store.dropped(M) == {"55"}
    assert store.release(M, ["7", "8", "nope"]) == 2
    assert store.open_quarantine(M) == [] and store.dropped(M) == {"55"}
    assert [q.shop_id for q in store.open_quarantine("other")] == ["7"]


# --------------------------------------------------------------------------- hints, switch, debtors


def test_hints(store: StateStore):
    assert store.add_hint(M, "5", "orders.updated.ispaid", T0) is True
    assert store.add_hint(M, "5", "orders.updated.ispaid", T0 + timedelta(hours=1)) is False
    assert store.add_hint(M, 6, "orders.updated.ispaid", T0 + timedelta(hours=2)) is True
    hs = store.hints(M)
    assert [(h.shop_id, h.received_at) for h in hs] == [("5", T0), ("6", T0 + timedelta(hours=2))]
    assert store.hints("other") == []
    assert store.clear_hints(M, ["5", "77"]) == 1
    assert [h.shop_id for h in store.hints(M)] == ["6"]


def test_enable_disable(store: StateStore):
    assert store.is_enabled(M) is True
    store.set_enabled(M, False, T0, reason="plan limit reached")
    assert store.is_enabled(M) is False and store.is_enabled("other") is True
    st = store.enabled_state(M)
    assert (st.enabled, st.changed_at, st.reason) == (False, T0, "plan limit reached")
    store.set_enabled(M, True, T0 + timedelta(days=1))
    assert store.enabled_state(M).enabled and store.enabled_state(M).reason is None


def test_debtor_register(store: StateStore):
    h1, h2 = "a" * 64, "b" * 64
    assert store.debtor_lookup(M, h1) is None
    assert store.debtor_remember(M, h1, "1000") == "1000"
    assert store.debtor_remember(M, h1, "2000") == "1000"          # never overwritten
    assert store.debtor_lookup(M, h1) == "1000" and store.debtor_lookup("other", h1) is None
    with pytest.raises(ValueError, match="never a raw e-mail"):
        store.debtor_remember(M, "jan@example.nl", "1")
    nums = [store.debtor_next_number(M, 1000) for _ in range(3)]
    assert nums == [1000, 1001, 1002]
    assert store.debtor_next_number(M, 5000) == 5000                 # jumps forward
    assert store.debtor_next_number(M, 1000) == 5001                 # never back
    assert store.debtor_next_number("other", 1) == 1
    store.debtor_remember(M, h2, "5001")
    assert store.debtor_lookup(M, h2) == "5001"


# --------------------------------------------------------------------------- run lock


@pytest.mark.sqlite_only
def test_run_lock_in_process(db: Path, store: StateStore):
    with store.run_lock(M, wait_seconds=0) as info:
        assert info.pid == os.getpid()
        holder = lock_path_for(db, M).read_text()
        assert str(os.getpid()) in holder
        with pytest.raises(LockBusy, match="this process"):
            with store.run_lock(M, wait_seconds=0.1):
                pass
        with store.run_lock("other mapping/2", wait_seconds=0):   # other mapping: independent
            pass
    assert lock_path_for(db, M).read_text() == ""                  # holder info cleared
    with store.run_lock(M, wait_seconds=0):                        # released on exit
        pass
    assert lock_path_for(db, "a/b") != lock_path_for(db, "a-b")


def test_run_lock_across_processes_and_sigkill(db: Path, store: StateStore):
    proc = child(f"""
        import time
        from engine.ops.state import open_state
        s = open_state({str(db)!r})
        with s.run_lock({M!r}, wait_seconds=5):
            print("locked", flush=True)
            time.sleep(60)
    """)
    wait_for_line(proc, "locked")
    with pytest.raises(LockBusy) as err:
        with store.run_lock(M, wait_seconds=0.3):
            pass
    msg = str(err.value)
    assert f"pid {proc.pid}" in msg and "started" in msg and "another run of mapping" in msg
    assert err.value.holder.pid == proc.pid
    sigkill(proc)
    with store.run_lock(M, wait_seconds=2) as info:               # the kernel released it
        assert info.pid == os.getpid()


# --------------------------------------------------------------------------- read-only


def test_readonly_missing_file_is_empty_and_creates_nothing(tmp_path: Path):
    db = tmp_path / "fresh" / "state.sqlite"
    with open_state(db, readonly=True) as ro:
        assert ro.readonly
        assert ro.delivered(M, ["1"]) == set() and ro.pending_batches(M) == []
        assert ro.open_quarantine(M) == [] and ro.is_enabled(M) and ro.last_runs(M) == []
        assert ro.delivered_count(M, 2025) == 0 and ro.debtor_lookup(M, "a" * 64) is None
        with pytest.raises(ReadOnlyStateError, match="read-only"):
            ro.create_batch(M, "b", "f.xml", [ref(1)])
    assert not (tmp_path / "fresh").exists()


@pytest.mark.sqlite_only
def test_readonly_refuses_every_write(db: Path, store: StateStore):
    store.create_batch(M, "b1", "one.xml", [ref(1)])
    store.mark_delivered("b1", "c", T0)
    store.create_batch(M, "b2", "two.xml", [ref(2)])
    store.close()
    before = db.read_bytes()
    ro = open_state(f"sqlite:///{db}", readonly=True)
    assert ro.delivered(M, ["1", "2"]) == {"1"} and [b.id for b in ro.pending_batches(M)] == ["b2"]
    writes = [
        lambda: ro.begin_run(M, T0, "run"),
        lambda: ro.finish_run(1, "ok", {}),
        lambda: ro.create_batch(M, "b3", "f.xml", [ref(3)]),
        lambda: ro.mark_delivered("b2", "c", T0),
        lambda: ro.discard_batch("b2"),
        lambda: ro.quarantine(M, "1", "1", "r", T0),
        lambda: ro.release(M, ["1"]),
        lambda: ro.drop(M, "1", "r", T0),
        lambda: ro.retry(M, ["1"]),
        lambda: ro.add_hint(M, "1", "e", T0),
        lambda: ro.clear_hints(M, ["1"]),
        lambda: ro.set_enabled(M, False, T0),
        lambda: ro.debtor_remember(M, "a" * 64, "1"),
        lambda: ro.debtor_next_number(M, 1),
        lambda: ro.run_lock(M, 0).__enter__(),
    ]
    for write in writes:
        with pytest.raises(ReadOnlyStateError):
            write()
    ro.close()
    assert db.read_bytes() == before
    assert not lock_path_for(db, M).exists()


# --------------------------------------------------------------------------- minimal data


@pytest.mark.sqlite_only
def test_database_holds_no_personal_text(db: Path):
    email = "Jan.deVries@Example.NL"
    with open_state(db) as s:
        run = s.begin_run(M, T0, "run")
        s.add_hint(M, "1", "orders.updated.ispaid", T0)
        s.create_batch(M, "20250301-1", "ccvshop-2025-03-01-1.xml", [ref(1), ref(2)], run_id=run)
        s.mark_delivered("20250301-1", "sha256:" + "0" * 64, T0)
        s.quarantine(M, "3", "10003", f"customer {email} has two debtors", T0)
        s.quarantine(M, "4", "10004", "debtor lookup for <jan@example.nl> failed", T0)
        s.drop(M, "4", f"refund requested by {email.lower()}", T0)
        s.set_enabled(M, False, T0, reason=f"mail from {email}")
        s.debtor_remember(M, "hmac-sha256:" + "f" * 64, "1000")
        s.clear_hints(M, ["1"])
        s.release(M, ["3"])
        s.finish_run(run, "ok", {"delivered": 2, "quarantined": 2})
        assert "<e-mail>" in s.enabled_state(M).reason
    blob = b"".join(p.read_bytes() for p in db.parent.iterdir() if p.name.startswith(db.name))
    for needle in (b"example", b"Example", b"deVries", b"devries", b"Jan"):
        assert needle not in blob, needle
    assert not re.search(rb"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2}", blob)
    assert b"10001" in blob and b"2025-02-01" in blob     # what audit needs is there


def test_credits_are_remembered_replaced_and_left_out_of_the_plan_count(store: StateStore):
    from decimal import Decimal
    from engine.ops.state.base import CreditEntry
    store.create_batch(M, "inv", "inv.xml", [ref(1)])
    store.mark_delivered("inv", "c", datetime(2025, 6, 1, tzinfo=timezone.utc))
    credit = OrderRef("1/credit/cancelled", "10001 cancelled", date(2025, 6, 2))
    store.record_credit(M, CreditEntry("1/credit/cancelled", "1", Decimal("45.80"), "booked", "geannuleerd", T0))
    store.create_batch(M, "cr", "cr.xml", [credit])
    store.mark_delivered("cr", "c2", datetime(2025, 6, 2, tzinfo=timezone.utc))
    assert store.delivered(M, ["1", "1/credit/cancelled"]) == {"1", "1/credit/cancelled"}
    assert store.delivered_count(M, 2025) == 1              # the credit note is no invoice of the plan
    store.record_credit(M, CreditEntry("1/credit/invoice-9", "1", Decimal("5"), "flagged", "too much", T0))
    store.record_credit(M, CreditEntry("1/credit/invoice-9", "1", Decimal("5.00"), "settled", None,
                                       T0 + timedelta(days=1)))   # replaced, not added
    store.record_credit(M, CreditEntry("2/credit/return-3", "2", Decimal("0"), "waiting", "never booked", T0))
    got = store.credits(M, ["1"])
    assert [(c.credit_id, c.amount, c.status, c.reason) for c in got] == [
        ("1/credit/cancelled", Decimal("45.80"), "booked", "geannuleerd"),
        ("1/credit/invoice-9", Decimal("5.00"), "settled", None)]
    assert {c.order_id for c in store.credits(M)} == {"1", "2"}
    assert store.credits("other-mapping") == []
    with pytest.raises(Exception):
        store.record_credit(M, CreditEntry("3/credit/x", "3", Decimal("1"), "lost", None, T0))
