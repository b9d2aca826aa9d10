"""Hosted mode end to end: `mapper db upgrade`, `mapper shops …` and `mapper worker`, against
PostgreSQL and one CCV Shop simulator per shop (each its own key pair), through the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from engine.simulators.ccvshop import CCVShopSimulator
from engine.simulators.ccvshop_data import load_fixture_dir

pytestmark = pytest.mark.slow  # real processes end to end: -m 'not slow' skips them

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "ccvshop"
MASTER = "test-master-key-" + "x" * 32


def hosted_env(tmp: Path, database: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CCVSHOP_", "MAPPER_", "ASPERION_"))}
    env.update(MAPPER_DATABASE=database, MAPPER_MASTER_KEY=MASTER, MAPPER_OUTBOX=str(tmp / "outboxes"),
               MAPPER_NOW="2026-11-26T21:00:00Z", PYTHONDONTWRITEBYTECODE="1")
    env.update(extra)
    return env


def mapper(env: dict[str, str], *args: str, ok: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "engine.cli", *args], env=env, capture_output=True,
                          text=True, timeout=300, input=stdin)
    if ok:
        assert proc.returncode == 0, f"mapper {' '.join(args)}: {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture
def shops():
    sims = {}
    for name in ("alpha", "beta"):
        sim = CCVShopSimulator(load_fixture_dir(FIXTURES), keys={f"{name}-pub": f"{name}-secret-key"})
        sim.start()
        sims[name] = sim
    yield sims
    for sim in sims.values():
        sim.stop()


def delivered_numbers(outbox: Path) -> list[str]:
    import re
    numbers = []
    for f in sorted(outbox.glob("*.xml")):
        numbers += re.findall(r"Bestelling (\S+)", f.read_text("utf-8"))
    return numbers


def test_many_shops_run_on_workers_each_exactly_once(pg_fresh_database, shops, tmp_path):
    env = hosted_env(tmp_path, pg_fresh_database)
    out = mapper(env, "db", "upgrade").stdout
    assert "procrastinate" in out and "applied" in out
    assert "already applied" in mapper(env, "db", "upgrade").stdout          # a second upgrade is harmless

    ids = {}
    for name, sim in shops.items():
        keys = {"CCVSHOP_PUBLIC_KEY": f"{name}-pub", "CCVSHOP_SECRET_KEY": f"{name}-secret-key"}
        added = mapper({**env, **keys}, "shops", "add", f"Shop {name}", "--api-root", sim.url,
                       "--plan", "basis" if name == "alpha" else "plus", "--licence-code", f"LIC-{name}")
        ids[name] = added.stdout.strip().splitlines()[-1]
    # a shop whose keys the shop does not know: its runs fail, the others' do not
    bad = mapper({**env, "CCVSHOP_PUBLIC_KEY": "revoked", "CCVSHOP_SECRET_KEY": "revoked-secret"},
                 "shops", "add", "Shop revoked", "--api-root", shops["alpha"].url)
    ids["revoked"] = bad.stdout.strip().splitlines()[-1]

    listed = json.loads(mapper(env, "shops", "list", "--json").stdout)
    assert {s["id"]: (s["status"], s["plan"]) for s in listed} == {
        ids["alpha"]: ("active", "basis"), ids["beta"]: ("active", "plus"), ids["revoked"]: ("active", "plus")}

    # no secret in clear anywhere in the database
    with psycopg.connect(pg_fresh_database) as conn:
        dump = json.dumps(conn.execute("SELECT * FROM shops").fetchall(), default=str)
    for secret in ("alpha-secret-key", "beta-secret-key", "revoked-secret", "LIC-alpha", "LIC-beta"):
        assert secret not in dump

    assert "enqueued" in mapper(env, "shops", "run", "--all", "--since", "2020-01-01").stdout
    assert "already waiting" in mapper(env, "shops", "run", ids["alpha"], "--since", "2020-01-01").stdout
    worker = mapper(env, "worker", "--until-idle", "--concurrency", "2")
    assert "revoked-secret" not in worker.stdout + worker.stderr

    outboxes = tmp_path / "outboxes"
    alpha, beta = delivered_numbers(outboxes / ids["alpha"]), delivered_numbers(outboxes / ids["beta"])
    assert alpha and sorted(alpha) == sorted(beta) and len(set(alpha)) == len(alpha)
    assert not (outboxes / ids["revoked"]).exists() or not list((outboxes / ids["revoked"]).glob("*.xml"))
    listed = {s["id"]: s for s in json.loads(mapper(env, "shops", "list", "--json").stdout)}
    assert listed[ids["revoked"]]["failures"] == 1 and listed[ids["revoked"]]["last_error"]
    assert listed[ids["alpha"]]["failures"] == 0 and listed[ids["alpha"]]["last_run"]["outcome"] in ("ok", "quarantined")

    # again: nothing goes out twice
    mapper(env, "shops", "run", "--all", "--since", "2020-01-01")
    mapper(env, "worker", "--until-idle")
    assert sorted(delivered_numbers(outboxes / ids["alpha"])) == sorted(alpha)
    assert sorted(delivered_numbers(outboxes / ids["beta"])) == sorted(beta)
    listed = {s["id"]: s for s in json.loads(mapper(env, "shops", "list", "--json").stdout)}
    assert listed[ids["revoked"]]["failures"] == 2                     # and it keeps being reported

    # removing a shop deletes its keys at once and keeps its audit rows
    assert "removed" in mapper(env, "shops", "remove", ids["beta"]).stdout
    refused = mapper(env, "shops", "run", ids["beta"], ok=False)
    assert refused.returncode == 2 and "removed" in refused.stderr
    with psycopg.connect(pg_fresh_database) as conn:
        assert conn.execute("SELECT secrets FROM shops WHERE id = %s", (ids["beta"],)).fetchone() == (None,)
        audit = conn.execute("SELECT COUNT(*) FROM batch_orders WHERE mapping LIKE %s",
                             (ids["beta"] + "/%",)).fetchone()[0]
    assert audit == len(beta)


def test_the_tick_runs_due_shops_and_a_wrong_master_key_is_refused(pg_fresh_database, shops, tmp_path):
    env = hosted_env(tmp_path, pg_fresh_database)
    mapper(env, "db", "upgrade")
    keys = {"CCVSHOP_PUBLIC_KEY": "alpha-pub", "CCVSHOP_SECRET_KEY": "alpha-secret-key"}
    shop = mapper({**env, **keys}, "shops", "add", "Shop alpha", "--api-root", shops["alpha"].url).stdout.split()[-1]
    mapper(env, "worker", "--until-idle")                      # not due yet: nothing runs
    assert not (tmp_path / "outboxes" / shop).exists()

    with psycopg.connect(pg_fresh_database, autocommit=True) as conn:
        conn.execute("UPDATE shops SET next_run_at = '2026-11-26T20:00:00.000000Z' WHERE id = %s", (shop,))
    wrong = mapper({**env, "MAPPER_MASTER_KEY": "another-master-key-" + "y" * 30}, "worker", "--until-idle")
    listed = {s["id"]: s for s in json.loads(mapper(env, "shops", "list", "--json").stdout)}
    assert "another MAPPER_MASTER_KEY" in listed[shop]["last_error"]
    assert "alpha-secret" not in wrong.stdout + wrong.stderr

    with psycopg.connect(pg_fresh_database, autocommit=True) as conn:
        conn.execute("UPDATE shops SET next_run_at = '2026-11-26T20:00:00.000000Z' WHERE id = %s", (shop,))
    mapper(env, "worker", "--until-idle")
    listed = {s["id"]: s for s in json.loads(mapper(env, "shops", "list", "--json").stdout)}
    assert listed[shop]["failures"] == 0 and listed[shop]["next_run_at"] > "2026-11-26T21:00"


def test_hosted_commands_need_the_database_and_the_master_key(tmp_path):
    env = hosted_env(tmp_path, "")
    missing = mapper(env, "shops", "list", ok=False)
    assert missing.returncode == 2 and "MAPPER_DATABASE" in missing.stderr
    unreachable = mapper({**env, "MAPPER_DATABASE": "postgresql://mapper:pw-XYZ@127.0.0.1:1/none"},
                         "shops", "list", ok=False)
    assert unreachable.returncode == 1 and "cannot connect" in unreachable.stderr
    assert "pw-XYZ" not in unreachable.stderr + unreachable.stdout


def _jobs(database: str, status: str) -> int:
    with psycopg.connect(database) as conn:
        return conn.execute("SELECT COUNT(*) FROM procrastinate_jobs WHERE status = %s", (status,)).fetchone()[0]


def test_a_worker_killed_mid_run_loses_nothing_and_leaves_no_lock(pg_fresh_database, shops, tmp_path):
    import signal
    import time

    env = hosted_env(tmp_path, pg_fresh_database, MAPPER_WORKER_STALLED_AFTER="3")
    mapper(env, "db", "upgrade")
    keys = {"CCVSHOP_PUBLIC_KEY": "alpha-pub", "CCVSHOP_SECRET_KEY": "alpha-secret-key"}
    shop = mapper({**env, **keys}, "shops", "add", "Shop alpha", "--api-root", shops["alpha"].url).stdout.split()[-1]
    shops["alpha"].inject("slow", delay=0.3, path_contains="orderrows")     # a run of a few seconds
    mapper(env, "shops", "run", shop, "--since", "2020-01-01")
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "worker"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while _jobs(pg_fresh_database, "doing") == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)                               # inside the run: some rows fetched
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    assert _jobs(pg_fresh_database, "doing") == 1     # left behind by the dead worker
    shops["alpha"].clear_faults()

    mapper(env, "worker", "--until-idle")             # waits for it to stall, then runs it again
    assert _jobs(pg_fresh_database, "doing") == 0 and _jobs(pg_fresh_database, "todo") == 0
    numbers = delivered_numbers(tmp_path / "outboxes" / shop)
    assert numbers and len(set(numbers)) == len(numbers)
    mapper(env, "shops", "run", shop, "--since", "2020-01-01")      # the shop is not left locked
    mapper(env, "worker", "--until-idle")
    assert sorted(delivered_numbers(tmp_path / "outboxes" / shop)) == sorted(numbers)
    with psycopg.connect(pg_fresh_database) as conn:
        held = conn.execute("SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory'").fetchone()[0]
    assert held == 0


def test_a_shop_whose_api_fails_backs_off_and_the_others_go_on(pg_fresh_database, shops, tmp_path):
    env = hosted_env(tmp_path, pg_fresh_database)
    mapper(env, "db", "upgrade")
    ids = {}
    for name, sim in shops.items():
        keys = {"CCVSHOP_PUBLIC_KEY": f"{name}-pub", "CCVSHOP_SECRET_KEY": f"{name}-secret-key"}
        ids[name] = mapper({**env, **keys}, "shops", "add", name, "--api-root", sim.url).stdout.split()[-1]
    shops["beta"].inject("5xx", status=503)                 # beta's shop is down (every request)
    due = "UPDATE shops SET next_run_at = '2026-11-26T20:00:00.000000Z'"
    with psycopg.connect(pg_fresh_database, autocommit=True) as conn:
        conn.execute(due)
    mapper(env, "worker", "--until-idle")
    listed = {s["id"]: s for s in json.loads(mapper(env, "shops", "list", "--json").stdout)}
    assert listed[ids["alpha"]]["failures"] == 0 and delivered_numbers(tmp_path / "outboxes" / ids["alpha"])
    beta = listed[ids["beta"]]
    assert beta["failures"] == 1 and "503" in beta["last_error"]
    assert beta["next_run_at"].startswith("2026-11-26T21:01")          # retried in a minute
    with psycopg.connect(pg_fresh_database, autocommit=True) as conn:   # it fails again: 2 minutes
        conn.execute(due + " WHERE id = %s", (ids["beta"],))
    mapper(env, "worker", "--until-idle")
    beta = {s["id"]: s for s in json.loads(mapper(env, "shops", "list", "--json").stdout)}[ids["beta"]]
    assert beta["failures"] == 2 and beta["next_run_at"].startswith("2026-11-26T21:02")
    shops["beta"].clear_faults()                             # back up: the retry delivers, failures reset
    with psycopg.connect(pg_fresh_database, autocommit=True) as conn:
        conn.execute(due + " WHERE id = %s", (ids["beta"],))
    mapper(env, "worker", "--until-idle")
    beta = {s["id"]: s for s in json.loads(mapper(env, "shops", "list", "--json").stdout)}[ids["beta"]]
    assert beta["failures"] == 0 and beta["last_run"]["outcome"] in ("ok", "quarantined")


def test_the_database_going_away_mid_run_is_a_failure_that_is_retried(pg_fresh_database, shops, tmp_path):
    """Every connection of the worker cut mid-run (as a database restart does): the run fails,
    the failure is recorded once the database answers again, the retry delivers each order once."""
    import threading
    import time

    env = hosted_env(tmp_path, pg_fresh_database)
    mapper(env, "db", "upgrade")
    keys = {"CCVSHOP_PUBLIC_KEY": "alpha-pub", "CCVSHOP_SECRET_KEY": "alpha-secret-key"}
    shop = mapper({**env, **keys}, "shops", "add", "Shop alpha", "--api-root", shops["alpha"].url).stdout.split()[-1]
    shops["alpha"].inject("slow", delay=0.3, path_contains="orderrows")
    mapper(env, "shops", "run", shop, "--since", "2020-01-01")

    def cut() -> None:
        deadline = time.monotonic() + 60
        while _jobs(pg_fresh_database, "doing") == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)
        with psycopg.connect(pg_fresh_database, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                         "WHERE datname = current_database() AND pid <> pg_backend_pid()")
    cutter = threading.Thread(target=cut)
    cutter.start()
    first = mapper(env, "worker", "--until-idle", ok=False)
    cutter.join()
    assert first.returncode == 0 and "lost the connection to the state database" in first.stderr
    shops["alpha"].clear_faults()
    listed = {s["id"]: s for s in json.loads(mapper(env, "shops", "list", "--json").stdout)}
    assert listed[shop]["failures"] == 1 and "lost the connection" in listed[shop]["last_error"]

    assert listed[shop]["next_run_at"].startswith("2026-11-26T21:01")          # retried in a minute
    mapper(env, "shops", "run", shop, "--since", "2020-01-01")                 # (the back-fill again)
    mapper(env, "worker", "--until-idle")
    numbers = delivered_numbers(tmp_path / "outboxes" / shop)
    assert numbers and len(set(numbers)) == len(numbers)
    listed = {s["id"]: s for s in json.loads(mapper(env, "shops", "list", "--json").stdout)}
    assert listed[shop]["failures"] == 0


def test_single_shop_commands_work_on_a_hosted_shop(pg_fresh_database, shops, tmp_path):
    env = hosted_env(tmp_path, pg_fresh_database)
    mapper(env, "db", "upgrade")
    keys = {"CCVSHOP_PUBLIC_KEY": "alpha-pub", "CCVSHOP_SECRET_KEY": "alpha-secret-key"}
    shop = mapper({**env, **keys}, "shops", "add", "Shop alpha", "--api-root", shops["alpha"].url,
                  "--plan", "basis").stdout.split()[-1]
    other = mapper({**env, "CCVSHOP_PUBLIC_KEY": "beta-pub", "CCVSHOP_SECRET_KEY": "beta-secret-key"},
                   "shops", "add", "Shop beta", "--api-root", shops["beta"].url).stdout.split()[-1]
    csv = tmp_path / "debiteuren.csv"
    csv.write_text("Debiteurnummer;Naam;E-mail\n70001;Jan;jan.vaste.klant@example.nl\n", encoding="utf-8")
    mapping = str(ROOT / "mappings" / "ccvshop_asperion.yaml")
    imported = mapper(env, "debtors", "import", mapping, str(csv), "--shop", shop)
    assert "1 added" in imported.stdout
    mapper(env, "shops", "run", shop, "--since", "2020-01-01")
    mapper(env, "worker", "--until-idle")

    status = json.loads(mapper(env, "status", mapping, "--shop", shop, "--json").stdout)
    assert status["plan"]["name"] == "basis" and status["plan"]["limit"] == 250
    assert status["runs"][0]["counts"]["delivered"] == status["plan"]["delivered"] > 0
    other_status = json.loads(mapper(env, "status", mapping, "--shop", other, "--json").stdout)
    assert other_status["runs"] == [] and other_status["plan"]["delivered"] == 0   # each its own state
    listed = json.loads(mapper(env, "quarantine", "list", mapping, "--shop", shop, "--json").stdout)
    assert [q["order_id"] for q in listed] == [q["order_id"] for q in status["quarantine"]]
    with psycopg.connect(pg_fresh_database) as conn:            # the import went to that shop only
        assert conn.execute("SELECT COUNT(*) FROM debtors WHERE mapping LIKE %s AND debtor_number = '70001'",
                            (shop + "/%",)).fetchone()[0] == 1
        assert conn.execute("SELECT COUNT(*) FROM debtors WHERE mapping LIKE %s",
                            (other + "/%",)).fetchone()[0] == 0
    unknown = mapper(env, "status", mapping, "--shop", "nosuch", ok=False)
    assert unknown.returncode == 2 and "no shop 'nosuch'" in unknown.stderr


def test_a_hint_for_a_hosted_shop_is_kept_and_runs_it_if_it_wants_never_two_waiting(pg_fresh_database, shops,
                                                                                    tmp_path, monkeypatch):
    from datetime import datetime, timezone

    from engine.hosted.hints import receive_hint
    from engine.hosted.worker import HostedSettings, enqueue_run
    from engine.ops.state import open_state
    from engine.ops.webhooks import HintRefused

    env = hosted_env(tmp_path, pg_fresh_database)
    mapper(env, "db", "upgrade")
    eager = mapper({**env, "CCVSHOP_PUBLIC_KEY": "alpha-pub", "CCVSHOP_SECRET_KEY": "alpha-secret-key"},
                   "shops", "add", "eager", "--api-root", shops["alpha"].url, "--run-on-hint").stdout.split()[-1]
    patient = mapper({**env, "CCVSHOP_PUBLIC_KEY": "beta-pub", "CCVSHOP_SECRET_KEY": "beta-secret-key"},
                     "shops", "add", "patient", "--api-root", shops["beta"].url).stdout.split()[-1]
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = HostedSettings.from_env()
    now = datetime(2026, 11, 26, 21, 0, tzinfo=timezone.utc)
    with open_state(pg_fresh_database) as store:
        kick = lambda shop_id: enqueue_run(settings, shop_id)
        assert receive_hint(store, eager, "ccvshop-asperion", "500000001", "orders.updated.ispaid", now, kick)
        assert not receive_hint(store, eager, "ccvshop-asperion", "500000002", "orders.updated.ispaid", now, kick)
        assert not receive_hint(store, patient, "ccvshop-asperion", "500000003", "orders.updated.ispaid", now, kick)
        assert not receive_hint(store, patient, "ccvshop-asperion", "500000005", "orders.updated.ispaid", now,
                                kick, per_day=2)
        with pytest.raises(HintRefused, match="2 hints in 24 hours"):
            receive_hint(store, patient, "ccvshop-asperion", "500000004", "orders.updated.ispaid", now, kick,
                         per_day=2)
    assert _jobs(pg_fresh_database, "todo") == 1                  # one run, for the eager shop only
    with psycopg.connect(pg_fresh_database) as conn:
        kept = conn.execute("SELECT split_part(mapping, '/', 1), count(*) FROM hints GROUP BY 1").fetchall()
    assert dict(kept) == {eager: 2, patient: 2}


def test_a_master_key_rotation_reseals_every_shop(pg_fresh_database, shops, tmp_path):
    env = hosted_env(tmp_path, pg_fresh_database)
    mapper(env, "db", "upgrade")
    shop = mapper({**env, "CCVSHOP_PUBLIC_KEY": "alpha-pub", "CCVSHOP_SECRET_KEY": "alpha-secret-key"},
                  "shops", "add", "alpha", "--api-root", shops["alpha"].url).stdout.split()[-1]
    new_key = "the-new-master-key-" + "z" * 30
    rotating = {**env, "MAPPER_MASTER_KEY": new_key, "MAPPER_MASTER_KEY_OLD": MASTER}
    assert "resealed the secrets of 1 shop(s)" in mapper(rotating, "shops", "reseal").stdout
    only_new = {**env, "MAPPER_MASTER_KEY": new_key}
    mapper(only_new, "shops", "run", shop, "--since", "2020-01-01")
    mapper(only_new, "worker", "--until-idle")
    listed = {s["id"]: s for s in json.loads(mapper(only_new, "shops", "list", "--json").stdout)}
    assert listed[shop]["failures"] == 0 and delivered_numbers(tmp_path / "outboxes" / shop)
