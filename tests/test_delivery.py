"""`mapper run` delivers every paid order exactly once: crashes, overlaps, re-runs, failures.

Everything here is real: `python cli.py run` as a child process (killed with SIGKILL at
random and at chosen moments), real files in a real outbox, the real SQLite state, and the
CCV Shop simulator on loopback for the HTTP source. The checks read the outbox back
(every file parsed and validated against the XSD) and compare it with the state.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import resource
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from lxml import etree

from helpers import MAPPING, ROOT
from engine.simulators.ccvshop import CCVShopSimulator
from engine.simulators.ccvshop_data import generate_fixture_dir, load_fixture_dir

from engine.io.outbox import LOCK_NAME

pytestmark = pytest.mark.slow  # real processes end to end: -m 'not slow' skips them

XSD = ROOT / "schemas" / "asperion_axml.xsd"
NAME = "ccvshop-asperion"
SINCE = ["--since", "2000-01-01"]
KEYS = {"pub-test": "sec-test"}


# --------------------------------------------------------------------------- helpers


def make_mapping(directory: Path, *, per_file: int = 20, fast_http: bool = False,
                 name: str = "m.yaml", sequence: int | None = None) -> Path:
    """The default mapping with ``per_file`` changed and the XSD path made absolute
    (``sequence``: new debtors numbered from it)."""
    text = MAPPING.read_text(encoding="utf-8")
    if sequence is not None:
        text, n = re.subn(r"(?m)^(\s*)key_env: MAPPER_DEBTOR_KEY.*$",
                          rf"\g<0>\n\g<1>numbering: {{sequence: {{start: {sequence}}}}}", text)
        assert n == 1
    text, n = re.subn(r"(?m)^(\s*)per_file: \d+", rf"\g<1>per_file: {per_file}", text)
    assert n == 1
    text, n = re.subn(r"(?m)^(\s*)xsd: .*$", rf"\g<1>xsd: {XSD.as_posix()}", text)
    assert n == 1
    if fast_http:   # an unreachable shop should fail in well under a second
        text, n = re.subn(r"timeout: \{connect: [^}]*\}", "timeout: {connect: 0.5, read: 2}", text)
        assert n == 1
        text, n = re.subn(r"retries: \{attempts: [^}]*\}",
                          "retries: {attempts: 2, backoff: 0.05, max_backoff: 0.1}", text)
        assert n == 1
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def base_env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CCVSHOP_", "MAPPER_"))}
    env["MAPPER_REPORTS"] = str(tmp / "reports")
    env["MAPPER_DEBTOR_KEY"] = "test-register-key-0123456789"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(extra)
    return env


MAPPER = [sys.executable, "-m", "engine.cli"]  # the installed package's command line


def mapper_cmd(*args: str | os.PathLike) -> list[str]:
    return [*MAPPER, *map(str, args)]


def run_cmd(mapping: Path, state: Path, outbox: Path, *extra: str | os.PathLike,
            fixtures: Path | None = None) -> list[str]:
    args: list[str | os.PathLike] = ["run", mapping, "--state", state, "--outbox", outbox, *SINCE]
    if fixtures is not None:
        args += ["--fixtures", fixtures]
    return mapper_cmd(*args, *extra)


def mapper(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 120,
           **kw) -> subprocess.CompletedProcess:
    return subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, **kw)


class _Result:
    def __init__(self, returncode: int, stdout: str, stderr: str):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def mapper_here(*args: str | os.PathLike, env: dict[str, str] | None = None) -> _Result:
    """A quick command (status, quarantine, disable, ...) in this process: no start-up cost."""
    from typer.testing import CliRunner
    from engine import cli
    result = CliRunner().invoke(cli.app, [str(a) for a in args], env=env)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return _Result(result.exit_code, result.stdout, result.stderr)


def status_json(mapping: Path, state: Path, env: dict[str, str] | None = None) -> dict:
    out = mapper_here("status", mapping, "--state", state, "--json", env=env)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def countable(shop: Path) -> dict[str, str]:
    """shop id -> order number of every order that counts: paid, completed, not cancelled."""
    out = {}
    for order in load_fixture_dir(shop):
        if order["paid"] and order["is_completed"] and order["status"] != 8:
            out[str(order["id"])] = order["ordernumber_full"]
    return out


_schema: etree.XMLSchema | None = None


def xsd() -> etree.XMLSchema:
    global _schema
    if _schema is None:
        _schema = etree.XMLSchema(etree.parse(str(XSD)))
    return _schema


def outbox_files(outbox: Path) -> list[Path]:
    """What is in the outbox but its lock file (a run holds it; it stays, empty, afterwards)."""
    return [p for p in outbox.iterdir() if p.name != LOCK_NAME]


def outbox_contents(outbox: Path) -> dict[str, list[str]]:
    """file name -> order numbers in it; every file must pass the XSD."""
    files: dict[str, list[str]] = {}
    if not outbox.exists():
        return files
    for path in sorted(outbox_files(outbox)):
        assert not path.name.endswith(".partial"), f"a half-written file was left: {path.name}"
        assert path.suffix == ".xml", f"unexpected file in the outbox: {path.name}"
        doc = etree.parse(str(path))
        assert xsd().validate(doc), f"{path.name} fails the XSD: {xsd().error_log.last_error}"
        numbers = [e.text for e in doc.iter("OrderNumber")]
        assert doc.findtext("Header/OrderCount") == str(len(numbers))
        files[path.name] = numbers
    return files


def assert_one_debtor_per_customer(outbox: Path) -> None:
    """Across every file: one debtor number per e-mail address, one e-mail address per new number."""
    numbers: dict[str, set[str]] = {}
    for path in outbox.glob("*.xml"):
        for debtor in etree.parse(str(path)).iter("Debtor"):
            numbers.setdefault(debtor.findtext("Email"), set()).add(debtor.findtext("DebtorNumber"))
    assert numbers and all(len(v) == 1 for v in numbers.values()), \
        {k: v for k, v in numbers.items() if len(v) > 1}
    owners = Counter(next(iter(v)) for v in numbers.values())
    assert all(c == 1 for c in owners.values()), {n: c for n, c in owners.items() if c > 1}


def state_batches(state: Path) -> list[dict]:
    """All batches with their live orders, read straight from the SQLite file."""
    if not state.exists():
        return []
    db = sqlite3.connect(f"{state.as_uri()}?mode=ro", uri=True)
    try:
        if not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'batches'").fetchone():
            return []  # killed between creating the file and its first migration
        batches = []
        for bid, file_name, status, checksum in db.execute(
                "SELECT id, file_name, status, checksum FROM batches WHERE mapping = ? "
                "ORDER BY created_at, id", (NAME,)):
            orders = db.execute("SELECT shop_id, number FROM batch_orders WHERE batch_id = ? "
                                "AND live = 1 ORDER BY rowid", (bid,)).fetchall()
            batches.append({"id": bid, "file": file_name, "status": status, "checksum": checksum,
                            "orders": orders})
        return batches
    finally:
        db.close()


def open_quarantine(state: Path) -> dict[str, dict]:
    from engine.ops.state import open_state
    with open_state(state, readonly=True) as store:
        return {q.shop_id: {"number": q.number, "reason": q.reason, "attempts": q.attempts}
                for q in store.open_quarantine(NAME)}


def assert_exactly_once(shop: Path, state: Path, outbox: Path,
                        quarantined: set[str] | None = None) -> dict[str, list[str]]:
    """Every countable order is in exactly one file (or in quarantine), and the state agrees."""
    files = outbox_contents(outbox)
    in_files = Counter(n for numbers in files.values() for n in numbers)
    twice = {n: c for n, c in in_files.items() if c > 1}
    assert not twice, f"orders delivered more than once: {twice}"

    expected = countable(shop)
    held = set(open_quarantine(state)) if quarantined is None else quarantined
    assert held <= set(expected) | {p.name for p in shop.glob("*.json")}
    want = {expected[i] for i in expected if i not in held}
    got = set(in_files)
    assert got == want, (f"missing {sorted(want - got)[:10]} ({len(want - got)}), "
                         f"unexpected {sorted(got - want)[:10]} ({len(got - want)})")

    batches = state_batches(state)
    assert [b for b in batches if b["status"] == "pending"] == [], "a batch was left pending"
    delivered = [b for b in batches if b["status"] == "delivered"]
    assert sorted(Path(b["file"]).name for b in delivered) == sorted(files), \
        "the state's delivered files differ from the outbox"
    for b in delivered:
        path = Path(b["file"])
        assert path.parent == outbox.absolute(), b["file"]
        assert [num for _, num in b["orders"]] == files[path.name], b["file"]
        assert b["checksum"] == hashlib.sha256(path.read_bytes()).hexdigest()
    state_ids = [sid for b in delivered for sid, _ in b["orders"]]
    assert len(state_ids) == len(set(state_ids))
    assert {expected[s] for s in state_ids} == got
    return files


def report_of(reports: Path, run_id: int | None = None) -> dict:
    found = sorted(reports.glob("*.json"), key=lambda p: int(re.search(r"run(\d+)\.json$", p.name)[1]))
    assert found, f"no run report in {reports}"
    if run_id is None:
        return json.loads(found[-1].read_text(encoding="utf-8"))
    for p in found:
        if p.name.endswith(f"-run{run_id}.json"):
            return json.loads(p.read_text(encoding="utf-8"))
    raise AssertionError(f"no report of run {run_id}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def big_shop(tmp_path_factory) -> Path:
    """~300 paid, countable orders plus unpaid and cancelled ones (fixture layout)."""
    shop = tmp_path_factory.mktemp("bigshop") / "shop"
    generate_fixture_dir(shop, 330, seed=7, unpaid_share=0.05, cancelled_share=0.05)
    return shop


@pytest.fixture(scope="module")
def small_shop(tmp_path_factory) -> Path:
    shop = tmp_path_factory.mktemp("smallshop") / "shop"
    generate_fixture_dir(shop, 70, seed=11, unpaid_share=0.1, cancelled_share=0.1)
    return shop


# --------------------------------------------------------------------------- 1. SIGKILL at random moments


def test_sigkill_at_random_moments_delivers_every_order_exactly_once(tmp_path, big_shop):
    mapping = make_mapping(tmp_path, per_file=20)
    env = base_env(tmp_path)
    assert len(countable(big_shop)) >= 290

    # An unkilled run first: how long a run takes, and what the mapping quarantines.
    ref = tmp_path / "ref"
    t0 = time.monotonic()
    done = mapper(run_cmd(mapping, ref / "state.sqlite", ref / "outbox", fixtures=big_shop),
                  env, tmp_path)
    duration = time.monotonic() - t0
    assert done.returncode in (0, 3), done.stderr
    reference_quarantine = set(open_quarantine(ref / "state.sqlite"))
    ref_files = assert_exactly_once(big_shop, ref / "state.sqlite", ref / "outbox")
    assert len(ref_files) >= 14

    # At least 25 kills, at different points: one delay in each 1/25 slice of [5 ms, the
    # whole run], shuffled; a run that finishes before its delay ends its lane (checked), and
    # more delays follow until 25 runs were really killed.
    wanted = 25
    rng = random.Random(20261127)
    delays = [0.005 + (i + rng.random()) * duration / wanted for i in range(wanted)]
    rng.shuffle(delays)

    lanes: list[Path] = []
    lane: Path | None = None
    trials = killed = mid_delivery = left_pending = left_partial = 0
    while killed < wanted:
        assert trials < 3 * wanted, f"only {killed} of {trials} runs could be killed"
        delay = delays[trials] if trials < len(delays) else 0.005 + rng.random() * duration
        trials += 1
        if lane is None:
            lane = tmp_path / f"lane{len(lanes)}"
            lanes.append(lane)
        state, outbox = lane / "state.sqlite", lane / "outbox"
        proc = subprocess.Popen(run_cmd(mapping, state, outbox, fixtures=big_shop), env=env,
                                cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True)
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            proc.kill()                     # SIGKILL
        _, err = proc.communicate(timeout=60)
        if proc.returncode == -signal.SIGKILL:
            killed += 1
            n_files = len(list(outbox.glob("*.xml"))) if outbox.exists() else 0
            if 0 < n_files < len(ref_files):
                mid_delivery += 1
            left_pending += any(b["status"] == "pending" for b in state_batches(state))
            left_partial += bool(outbox.exists() and list(outbox.glob(".*.partial")))
            continue
        # The run was not killed: it must have finished the lane, exactly once.
        assert proc.returncode in (0, 3), f"trial {trials}: exit {proc.returncode}: {err}"
        assert "Traceback" not in err
        assert_exactly_once(big_shop, state, outbox)
        assert set(open_quarantine(state)) == reference_quarantine
        lane = None

    if lane is not None:        # finish the last lane
        state, outbox = lane / "state.sqlite", lane / "outbox"
        done = mapper(run_cmd(mapping, state, outbox, fixtures=big_shop), env, tmp_path)
        assert done.returncode in (0, 3), done.stderr
        assert_exactly_once(big_shop, state, outbox)
        assert set(open_quarantine(state)) == reference_quarantine

    # Killed runs are not shown as running for ever: the next run marks them interrupted.
    for lane in lanes:
        outcomes = Counter(r["outcome"] for r in status_json(mapping, lane / "state.sqlite")["runs"])
        assert set(outcomes) <= {"ok", "quarantined", "interrupted"}, outcomes

    # One lane, once more: a re-run after everything finds nothing new.
    for lane in lanes[:1]:
        again = mapper(run_cmd(mapping, lane / "state.sqlite", lane / "outbox", fixtures=big_shop),
                       env, tmp_path)
        assert again.returncode in (0, 3) and "delivered 0 orders in 0 file(s)" in again.stdout
        assert_exactly_once(big_shop, lane / "state.sqlite", lane / "outbox")

    print(f"\nrun {duration:.2f}s; {trials} trials, {killed} killed, {mid_delivery} mid-delivery, "
          f"{left_pending} left a pending batch, {left_partial} a .partial file; {len(lanes)} lanes")
    assert mid_delivery >= 3, "too few kills landed while files were being delivered"


# --------------------------------------------------------------------------- 1b. SIGKILL at each step of the protocol

# The run, with one step of the outbox protocol wrapped so that the process SIGKILLs itself
# right there, the ``n``-th time it gets there. Nothing else is changed.
CRASHING_RUN = r"""
import os, signal, sys
point, nth = sys.argv[1], int(sys.argv[2])
from engine import cli
from engine.output.document import DocumentBuilder
from engine.io.outbox import Outbox
from engine.ops.state.sqlite import SQLiteStateStore
hits = 0
def die_if(name):
    global hits
    if name == point:
        hits += 1
        if hits == nth:
            os.kill(os.getpid(), signal.SIGKILL)
def wrap(cls, attr, before=None, after=None):
    orig = getattr(cls, attr)
    def wrapped(*a, **kw):
        if before: die_if(before)
        out = orig(*a, **kw)
        if after: die_if(after)
        return out
    setattr(cls, attr, wrapped)
wrap(SQLiteStateStore, "create_batch", after="after_create_batch")
wrap(DocumentBuilder, "write", after="file_half_written")          # into .NAME.partial, not renamed
wrap(SQLiteStateStore, "expect_checksum", after="checksum_recorded")  # written and hashed, not renamed
wrap(SQLiteStateStore, "mark_delivered", before="after_rename",     # renamed, not marked delivered
     after="after_mark_delivered")
sys.argv = ["mapper", *sys.argv[3:]]
cli.main()
"""


def crashing(point: str, nth: int, command: list[str]) -> list[str]:
    """``command`` (a mapper_cmd) run so that it SIGKILLs itself at ``point`` the ``nth`` time."""
    return [sys.executable, "-c", CRASHING_RUN, point, str(nth), *command[len(MAPPER):]]


@pytest.mark.parametrize("point, pending, partial, note", [
    ("after_create_batch", True, False, "redid 1 interrupted batch"),
    ("file_half_written", True, True, "redid 1 interrupted batch"),
    ("checksum_recorded", True, True, "redid 1 interrupted batch"),
    ("after_rename", True, False, "recovered 1 file(s) of an interrupted run"),
    ("after_mark_delivered", False, False, None),
])
def test_sigkill_at_each_step_of_the_outbox_protocol(tmp_path, small_shop, point, pending, partial, note):
    mapping = make_mapping(tmp_path, per_file=10, sequence=9000)
    env = base_env(tmp_path)
    state, outbox = tmp_path / "state.sqlite", tmp_path / "outbox"
    crashed = mapper(crashing(point, 2, run_cmd(mapping, state, outbox, fixtures=small_shop)), env, tmp_path)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr

    batches = state_batches(state)
    assert [b["status"] for b in batches] == ["delivered", "delivered" if not pending else "pending"]
    files = sorted(p.name for p in outbox.glob("*.xml"))
    assert len(files) == (2 if point in ("after_rename", "after_mark_delivered") else 1)
    assert bool(list(outbox.glob(".*.partial"))) == partial
    assert len(status_json(mapping, state)["pending_batches"]) == int(pending)

    done = mapper(run_cmd(mapping, state, outbox, fixtures=small_shop), env, tmp_path)
    assert done.returncode in (0, 3), done.stderr
    if note:
        assert note in done.stdout
    assert_exactly_once(small_shop, state, outbox)
    if point == "after_rename":   # the file that made it is kept as it was, not written again
        assert Path(state_batches(state)[1]["file"]).name == files[1]
    assert status_json(mapping, state)["runs"][-1]["outcome"] == "interrupted"
    assert_one_debtor_per_customer(outbox)
    discarded = [b for b in state_batches(state) if b["status"] == "discarded"]
    assert len(discarded) == int(point in ("after_create_batch", "file_half_written", "checksum_recorded"))


def test_crash_after_rename_then_a_run_with_another_outbox_does_not_deliver_again(tmp_path, small_shop):
    # The batch's file made it into outbox A, the state still says pending; the next run is
    # given outbox B (another --outbox, MAPPER_OUTBOX set in cron but not by hand, ...). It
    # must find the file where it was written, not redo the batch into B.
    mapping = make_mapping(tmp_path, per_file=10)
    env = base_env(tmp_path)
    state, first_box, other_box = tmp_path / "state.sqlite", tmp_path / "outbox-a", tmp_path / "outbox-b"
    crashed = mapper(crashing("after_rename", 1, run_cmd(mapping, state, first_box, fixtures=small_shop)), env, tmp_path)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    assert [b["status"] for b in state_batches(state)] == ["pending"]

    done = mapper(run_cmd(mapping, state, other_box, fixtures=small_shop), env, tmp_path)
    assert done.returncode in (0, 3), done.stderr
    assert "recovered 1 file(s)" in done.stdout
    in_a = [n for v in outbox_contents(first_box).values() for n in v]
    in_b = [n for v in outbox_contents(other_box).values() for n in v]
    assert len(in_a) == 10 and not set(in_a) & set(in_b), "orders delivered twice"
    assert sorted(in_a + in_b) == sorted(countable(small_shop)[i] for i in countable(small_shop)
                                         if i not in open_quarantine(state))


def test_the_outbox_never_overwrites_a_file(tmp_path):
    from engine.errors import DeliveryError
    from engine.io.outbox import Outbox
    box = Outbox(tmp_path / "outbox")
    box.prepare()
    with box.write("a.xml") as f:
        f.write(b"<first/>")
    with pytest.raises(DeliveryError, match="a file of that name appeared in the outbox"):
        with box.write("a.xml") as f:
            f.write(b"<second/>")
    assert (tmp_path / "outbox" / "a.xml").read_bytes() == b"<first/>"
    assert [p.name for p in outbox_files(tmp_path / "outbox")] == ["a.xml"]


def test_leftover_partial_file_is_removed_and_foreign_files_are_left_alone(tmp_path, small_shop):
    mapping = make_mapping(tmp_path, per_file=500)
    env = base_env(tmp_path)
    state, outbox = tmp_path / "state.sqlite", tmp_path / "outbox"
    outbox.mkdir()
    (outbox / ".ccvshop-asperion-2026-01-01-1.xml.partial").write_bytes(b"<Asperion><Hea")
    done = mapper(run_cmd(mapping, state, outbox, fixtures=small_shop), env, tmp_path)
    assert done.returncode in (0, 3), done.stderr
    assert [p.name for p in outbox.glob(".*")] == [LOCK_NAME]
    assert_exactly_once(small_shop, state, outbox)


# --------------------------------------------------------------------------- 2. two runs at once


@pytest.fixture
def slow_shop(small_shop):
    """The small shop over HTTP; the first request of a run answers after 4 s."""
    with CCVShopSimulator(load_fixture_dir(small_shop), keys=KEYS, rate_limit_per_minute=None) as sim:
        yield sim


def http_env(tmp: Path, url: str) -> dict[str, str]:
    public, secret = next(iter(KEYS.items()))
    return base_env(tmp, CCVSHOP_URL=url, CCVSHOP_PUBLIC_KEY=public, CCVSHOP_SECRET_KEY=secret)


def wait_for(predicate, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_two_runs_at_once_one_waits_or_gives_up_and_nothing_is_delivered_twice(tmp_path, small_shop, slow_shop):
    mapping = make_mapping(tmp_path, per_file=10)
    env = http_env(tmp_path, slow_shop.url)
    state, outbox = tmp_path / "state.sqlite", tmp_path / "outbox"
    lock = tmp_path / f"state.sqlite.{NAME}.lock"
    slow_shop.inject("slow", count=1, delay=4)

    first = subprocess.Popen(run_cmd(mapping, state, outbox), env=env, cwd=tmp_path,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: lock.exists() and lock.stat().st_size > 0, what="the first run's lock")
        waiter = subprocess.Popen(run_cmd(mapping, state, outbox, "--wait", "30"), env=env, cwd=tmp_path,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        busy = mapper(run_cmd(mapping, state, outbox, "--wait", "0"), env, tmp_path)
        assert first.poll() is None, "the first run ended before the second tried: the test proves nothing"
        out1, err1 = first.communicate(timeout=60)
        out2, err2 = waiter.communicate(timeout=60)
    finally:
        for p in (first, locals().get("waiter")):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()

    assert busy.returncode == 4, busy.stdout + busy.stderr
    message = busy.stderr.strip()
    assert len(message.splitlines()) == 1 and "Traceback" not in busy.stderr
    assert f"another run of mapping '{NAME}' is in progress (pid {first.pid}" in message, message
    assert busy.stdout == ""

    assert first.returncode in (0, 3), err1
    assert waiter.returncode in (0, 3), err2
    delivered_first = int(re.search(r"delivered (\d+) orders", out1)[1])
    assert delivered_first == len(countable(small_shop)) - len(open_quarantine(state)) > 0
    assert "delivered 0 orders in 0 file(s)" in out2, out2
    assert_exactly_once(small_shop, state, outbox)
    runs = status_json(mapping, state)["runs"]
    assert len(runs) == 2, "the run that gave up must not be recorded as a run"


# --------------------------------------------------------------------------- 3. re-run


def test_rerun_over_the_same_window_delivers_nothing_new(tmp_path, small_shop):
    mapping = make_mapping(tmp_path, per_file=10)
    env = base_env(tmp_path)
    state, outbox = tmp_path / "state.sqlite", tmp_path / "outbox"
    first = mapper(run_cmd(mapping, state, outbox, fixtures=small_shop), env, tmp_path)
    assert first.returncode in (0, 3), first.stderr
    before = {p.name: p.read_bytes() for p in outbox_files(outbox)}
    for _ in range(2):
        again = mapper(run_cmd(mapping, state, outbox, fixtures=small_shop), env, tmp_path)
        assert again.returncode in (0, 3), again.stderr
        assert again.returncode == first.returncode       # the same quarantine, again
        assert "delivered 0 orders in 0 file(s)" in again.stdout
        counts = report_of(tmp_path / "reports")["counts"]
        assert counts["delivered"] == 0 and counts["files"] == 0
        assert counts["already_delivered"] == sum(len(v) for v in outbox_contents(outbox).values())
    assert {p.name: p.read_bytes() for p in outbox_files(outbox)} == before
    assert_exactly_once(small_shop, state, outbox)


def test_an_order_listed_twice_is_delivered_once_and_does_not_block_the_run(tmp_path, small_shop):
    # A shifted page (an order became paid while the list was read) or a copied fixture file
    # lists one order twice. Before the fix the run failed on every attempt ("lists order(s)
    # more than once"), and with it every other order.
    shop = tmp_path / "shop"
    shutil.copytree(small_shop, shop)
    first = sorted(shop.glob("*.json"))[0]
    shutil.copy(first, shop / "zz_copy_of_the_first.json")
    mapping = make_mapping(tmp_path, per_file=500)
    env = base_env(tmp_path)
    state, outbox = tmp_path / "state.sqlite", tmp_path / "outbox"
    done = mapper(run_cmd(mapping, state, outbox, fixtures=shop), env, tmp_path)
    assert done.returncode in (0, 3), done.stdout + done.stderr
    assert_exactly_once(shop, state, outbox)


def test_a_hint_for_a_delivered_order_is_cleared_not_fetched_forever(tmp_path, small_shop):
    from engine.clock import now
    from engine.ops.state import open_state
    mapping = make_mapping(tmp_path, per_file=500)
    env = base_env(tmp_path)
    state, outbox = tmp_path / "state.sqlite", tmp_path / "outbox"
    assert mapper(run_cmd(mapping, state, outbox, fixtures=small_shop), env, tmp_path).returncode in (0, 3)
    delivered_id = state_batches(state)[0]["orders"][0][0]
    with open_state(state) as store:      # a late webhook for an order that went out already
        store.add_hint(NAME, delivered_id, "orders.updated.status", now())
    again = mapper(run_cmd(mapping, state, outbox, fixtures=small_shop), env, tmp_path)
    assert again.returncode in (0, 3) and "delivered 0 orders" in again.stdout
    with open_state(state, readonly=True) as store:
        assert store.hints(NAME) == []
    assert_exactly_once(small_shop, state, outbox)


# --------------------------------------------------------------------------- 4. shop unreachable


def test_unreachable_shop_fails_with_one_clear_line_and_records_a_failed_run(tmp_path):
    mapping = make_mapping(tmp_path, fast_http=True)
    env = http_env(tmp_path, f"http://127.0.0.1:{free_port()}")
    state, outbox = tmp_path / "state.sqlite", tmp_path / "outbox"
    t0 = time.monotonic()
    result = mapper(run_cmd(mapping, state, outbox), env, tmp_path)
    assert time.monotonic() - t0 < 20
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert "127.0.0.1" in errors[0] and ("connect" in errors[0].lower() or "connection" in errors[0].lower())
    assert KEYS["pub-test"] not in result.stderr and KEYS["pub-test"] not in result.stdout
    assert "sec-test" not in result.stderr + result.stdout
    assert not outbox.exists() or outbox_files(outbox) == []

    status = status_json(mapping, state)
    assert [r["outcome"] for r in status["runs"]] == ["failed"]
    assert status["runs"][0]["finished"] is not None
    assert status["pending_batches"] == []
    assert report_of(tmp_path / "reports")["outcome"] == "failed"


# --------------------------------------------------------------------------- 5. outbox not writable


def test_outbox_not_writable_fails_clearly_and_loses_nothing(tmp_path, small_shop):
    # Tests run as root, and root writes into a 0o500 directory anyway. A path below a
    # regular file cannot be created or written by anyone, root included (ENOTDIR).
    mapping = make_mapping(tmp_path, per_file=10)
    env = base_env(tmp_path)
    state = tmp_path / "state.sqlite"
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file, not a directory\n")
    bad = blocker / "outbox"

    failed = mapper(run_cmd(mapping, state, bad, fixtures=small_shop), env, tmp_path)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "Traceback" not in failed.stderr
    assert failed.stderr.strip().splitlines() == [f"error: cannot create the outbox {bad}: Not a directory"]
    assert blocker.read_text() == "a file, not a directory\n"
    assert state_batches(state) == []
    status = status_json(mapping, state)
    assert [r["outcome"] for r in status["runs"]] == ["failed"] and status["pending_batches"] == []

    good = tmp_path / "outbox"
    done = mapper(run_cmd(mapping, state, good, fixtures=small_shop), env, tmp_path)
    assert done.returncode in (0, 3), done.stderr
    assert_exactly_once(small_shop, state, good)


# --------------------------------------------------------------------------- 6. disk full


def test_disk_full_leaves_no_partial_file_and_the_next_run_redoes_the_batch(tmp_path, small_shop):
    # RLIMIT_FSIZE: no file of the run may grow beyond LIMIT bytes (writing more fails with
    # EFBIG; Python ignores SIGXFSZ). The orders' product names are made long (within the XSD's
    # 255 characters) so that the XML file is larger than LIMIT while the state is not.
    from helpers import load_order, write_order
    shop = tmp_path / "shop"
    generate_fixture_dir(shop, 400, seed=11, unpaid_share=0.1, cancelled_share=0.1)
    for path in shop.glob("*.json"):
        order = load_order(path)
        for row in order["orderrows"]:
            row["product_name"] = (row["product_name"] + " – " + "lange omschrijving " * 13)[:250].strip()
        write_order(shop, path.name, order)
    limit = 600_000
    mapping = make_mapping(tmp_path, per_file=500)
    env = base_env(tmp_path)
    state, outbox = tmp_path / "state.sqlite", tmp_path / "outbox"

    def small_disk():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    full = mapper(run_cmd(mapping, state, outbox, fixtures=shop), env, tmp_path, preexec_fn=small_disk)
    assert full.returncode == 1, full.stdout + full.stderr
    assert "Traceback" not in full.stderr
    lines = full.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot write {outbox}/"), full.stderr
    assert "File too large" in lines[0] and "nothing was lost" in lines[0]
    assert outbox_files(outbox) == [], "no file, whole or partial, may be left"
    assert state.stat().st_size < limit
    batches = state_batches(state)
    assert [b["status"] for b in batches] == ["pending"]
    assert report_of(tmp_path / "reports")["outcome"] == "failed"

    done = mapper(run_cmd(mapping, state, outbox, fixtures=shop), env, tmp_path)
    assert done.returncode in (0, 3), done.stderr
    assert "redid 1 interrupted batch" in done.stdout
    files = assert_exactly_once(shop, state, outbox)
    assert len(files) == 1 and (outbox / next(iter(files))).stat().st_size > limit
    assert [b["status"] for b in state_batches(state)] == ["discarded", "delivered"]


def _state_disk_full_run(tmp_path, shop):
    """A run whose state database cannot grow by more than a few pages: it fails somewhere."""
    mapping = make_mapping(tmp_path, per_file=10)
    env = base_env(tmp_path)
    state, outbox = tmp_path / "state.sqlite", tmp_path / "outbox"
    for switch in ("disable", "enable"):     # creates the database, schema and all
        assert mapper_here(switch, mapping, "--state", state).returncode == 0
    limit = state.stat().st_size + 6 * 4096

    def small_disk():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    full = mapper(run_cmd(mapping, state, outbox, fixtures=shop), env, tmp_path, preexec_fn=small_disk)
    return mapping, env, state, outbox, full


def test_state_database_full_mid_run_loses_nothing(tmp_path, small_shop):
    mapping, env, state, outbox, full = _state_disk_full_run(tmp_path, small_shop)
    assert full.returncode == 1, full.stdout + full.stderr
    done = mapper(run_cmd(mapping, state, outbox, fixtures=small_shop), env, tmp_path)
    assert done.returncode in (0, 3), done.stderr
    assert_exactly_once(small_shop, state, outbox)


def test_state_database_full_is_one_clear_line(tmp_path, small_shop):
    _, _, state, _, full = _state_disk_full_run(tmp_path, small_shop)
    assert full.returncode == 1
    assert "Traceback" not in full.stderr, full.stderr
    assert len(full.stderr.strip().splitlines()) == 1 and str(state) in full.stderr
