"""The outbox and the state files under attack (issue: nothing lost, nothing let in, 1 and 7):
recovery proves a file is its batch's, one outbox belongs to one state, files are private,
a symbolic link is reported as what it is. Real CLI runs on real files."""

from __future__ import annotations

import os
import signal
import stat
from pathlib import Path

import pytest

from engine.io.outbox import LOCK_NAME, Outbox
from engine.simulators.ccvshop_data import generate_fixture_dir
from test_delivery import (crashing, assert_exactly_once, base_env, make_mapping, mapper, mapper_cmd,
                           outbox_contents, run_cmd, state_batches)


@pytest.fixture(scope="module")
def shop(tmp_path_factory) -> Path:
    shop = tmp_path_factory.mktemp("hardening") / "shop"
    generate_fixture_dir(shop, 40, seed=5)
    return shop


def crash_at(point: str, mapping: Path, state: Path, outbox: Path, shop: Path, env, cwd) -> None:
    crashed = mapper(crashing(point, 1, run_cmd(mapping, state, outbox, fixtures=shop)), env, cwd)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr


def test_recovery_does_not_take_another_writers_file_for_its_own(tmp_path, shop):
    """A batch failed midway (its file never renamed into place); since then another writer
    put a file of that very name in the outbox. The batch must be redone, not marked
    delivered on the strength of the name: before, its orders were lost."""
    mapping = make_mapping(tmp_path, per_file=10)
    env = base_env(tmp_path)
    state, outbox = tmp_path / "state.sqlite", tmp_path / "outbox"
    crash_at("checksum_recorded", mapping, state, outbox, shop, env, tmp_path)
    [pending] = state_batches(state)
    assert pending["status"] == "pending"
    lost = [number for _, number in pending["orders"]]
    foreign = Path(pending["file"])
    assert not foreign.exists()
    foreign.write_bytes(b"<?xml version='1.0'?><Asperion>another writer's file</Asperion>\n")

    done = mapper(run_cmd(mapping, state, outbox, fixtures=shop), env, tmp_path)
    assert done.returncode in (0, 3), done.stderr
    assert f"{foreign} is not the file of interrupted batch {pending['id']}" in done.stdout
    assert "redid 1 interrupted batch" in done.stdout
    assert foreign.read_bytes().endswith(b"another writer's file</Asperion>\n")   # left as it was
    foreign.unlink()                             # (not ours: set aside before the exactly-once check)
    files = assert_exactly_once(shop, state, outbox)
    delivered = [n for numbers in files.values() for n in numbers]
    assert set(lost) <= set(delivered)


def test_a_pending_batch_of_an_older_state_needs_its_batch_id_inside_the_file(tmp_path, shop):
    """Batches recorded before checksums were (no expected checksum): the file must carry the
    batch's id; a file of the same name without it is not the batch's."""
    import sqlite3
    mapping = make_mapping(tmp_path, per_file=10)
    env = base_env(tmp_path)
    state, outbox = tmp_path / "state.sqlite", tmp_path / "outbox"
    crash_at("after_rename", mapping, state, outbox, shop, env, tmp_path)
    [pending] = state_batches(state)
    db = sqlite3.connect(state)
    db.execute("UPDATE batches SET expected_checksum = NULL")    # as an older mapper left it
    db.commit()
    db.close()
    own = Path(pending["file"])
    assert pending["id"].encode() in own.read_bytes()
    done = mapper(run_cmd(mapping, state, outbox, fixtures=shop), env, tmp_path)
    assert "recovered 1 file(s)" in done.stdout                 # its own file: delivered, not redone
    assert_exactly_once(shop, state, outbox)


def test_two_states_never_write_one_outbox(tmp_path, shop):
    mapping = make_mapping(tmp_path)
    env = base_env(tmp_path)
    outbox = tmp_path / "outbox"
    first = mapper(run_cmd(mapping, tmp_path / "a.sqlite", outbox, fixtures=shop), env, tmp_path)
    assert first.returncode in (0, 3), first.stderr
    before = outbox_contents(outbox)

    second = mapper(run_cmd(mapping, tmp_path / "b.sqlite", outbox, fixtures=shop), env, tmp_path)
    assert second.returncode == 2, second.stdout + second.stderr
    assert f"the outbox {outbox} belongs to the state {tmp_path / 'a.sqlite'}" in second.stderr
    assert "Traceback" not in second.stderr
    assert outbox_contents(outbox) == before                    # nothing written twice

    again = mapper(run_cmd(mapping, tmp_path / "a.sqlite", outbox, fixtures=shop), env, tmp_path)
    assert again.returncode in (0, 3), again.stderr             # its own state: fine


def test_a_run_waits_for_the_outbox_then_gives_up_with_exit_4(tmp_path, shop):
    mapping = make_mapping(tmp_path)
    env = base_env(tmp_path)
    outbox = tmp_path / "outbox"
    state = tmp_path / "state.sqlite"
    holder = Outbox(outbox, owner=str(state))
    holder.prepare()                             # another run of this state is writing
    try:
        busy = mapper(run_cmd(mapping, state, outbox, "--wait", "0.5", fixtures=shop), env, tmp_path)
    finally:
        holder.release()
    assert busy.returncode == 4, busy.stdout + busy.stderr
    assert f"the outbox {outbox} is in use by another run (pid {os.getpid()}" in busy.stderr
    assert [p.name for p in outbox.iterdir()] == [LOCK_NAME]
    done = mapper(run_cmd(mapping, state, outbox, fixtures=shop), env, tmp_path)
    assert done.returncode in (0, 3)


def test_outbox_files_and_directory_are_private_whatever_the_umask(tmp_path, shop):
    mapping = make_mapping(tmp_path)
    env = base_env(tmp_path)
    outbox = tmp_path / "deep" / "outbox"
    done = mapper(run_cmd(mapping, tmp_path / "s.sqlite", outbox, fixtures=shop), env, tmp_path,
                  preexec_fn=lambda: os.umask(0))
    assert done.returncode in (0, 3), done.stderr
    assert stat.S_IMODE(outbox.stat().st_mode) == 0o700
    files = list(outbox.glob("*.xml"))
    assert files and {stat.S_IMODE(p.stat().st_mode) for p in files} == {0o600}
    assert stat.S_IMODE((outbox / LOCK_NAME).stat().st_mode) == 0o600

    shared = Path(str(mapping).replace(".yaml", "-0640.yaml"))
    shared.write_text(mapping.read_text().replace("  directory:\n", "  directory:\n    mode: \"0640\"\n", 1))
    box2 = tmp_path / "outbox2"
    done = mapper(run_cmd(shared, tmp_path / "s2.sqlite", box2, fixtures=shop), env, tmp_path,
                  preexec_fn=lambda: os.umask(0))
    assert done.returncode in (0, 3), done.stderr
    assert {stat.S_IMODE(p.stat().st_mode) for p in box2.glob("*.xml")} == {0o640}


def test_a_partial_file_is_private_while_it_is_written(tmp_path):
    box = Outbox(tmp_path / "outbox")
    box.prepare()
    old = os.umask(0)
    try:
        with box.write("a.xml") as f:
            f.write(b"<a/>")
            partial = tmp_path / "outbox" / ".a.xml.partial"
            assert stat.S_IMODE(partial.stat().st_mode) == 0o600
    finally:
        os.umask(old)
        box.release()


def test_a_dangling_symlink_with_todays_name_is_reported_and_left_alone(tmp_path, shop):
    mapping = make_mapping(tmp_path)
    env = base_env(tmp_path, MAPPER_NOW="2026-11-26T21:00:00Z")
    outbox = tmp_path / "outbox"
    outbox.mkdir(mode=0o700)
    link = outbox / "ccvshop-asperion-2026-11-26-1.xml"
    link.symlink_to(tmp_path / "nowhere.xml")
    done = mapper(run_cmd(mapping, tmp_path / "s.sqlite", outbox, fixtures=shop), env, tmp_path)
    assert done.returncode in (0, 3), done.stderr
    assert f"{link} is a symbolic link to nothing; it was left as it is" in done.stdout
    assert link.is_symlink() and not (tmp_path / "nowhere.xml").exists()
    assert (outbox / "ccvshop-asperion-2026-11-26-2.xml").is_file()


def test_state_file_symlink_is_refused_and_a_readable_one_tightened(tmp_path, shop):
    mapping = make_mapping(tmp_path)
    env = base_env(tmp_path)
    real = tmp_path / "real.sqlite"
    first = mapper(run_cmd(mapping, real, tmp_path / "outbox", fixtures=shop), env, tmp_path)
    assert first.returncode in (0, 3)
    os.chmod(real, 0o644)
    link = tmp_path / "link.sqlite"
    link.symlink_to(real)
    refused = mapper(mapper_cmd("status", mapping, "--state", link), env, tmp_path)
    ran = mapper(run_cmd(mapping, link, tmp_path / "outbox", fixtures=shop), env, tmp_path)
    assert ran.returncode == 1 and f"state path {link} is a symbolic link" in ran.stderr
    assert "Traceback" not in ran.stderr + refused.stderr

    again = mapper(run_cmd(mapping, real, tmp_path / "outbox", fixtures=shop), env, tmp_path)
    assert again.returncode in (0, 3), again.stderr
    assert stat.S_IMODE(real.stat().st_mode) == 0o600


def test_state_in_an_unwritable_directory_is_one_clear_line(tmp_path, shop):
    if os.geteuid() == 0:
        locked = Path("/proc/self/mapper-state-dir")   # root may write anywhere: use a place nobody can
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
    mapping = make_mapping(tmp_path)
    ran = mapper(run_cmd(mapping, locked / "state.sqlite", tmp_path / "outbox", fixtures=shop),
                 base_env(tmp_path), tmp_path)
    assert ran.returncode == 1, ran.stderr
    assert "Traceback" not in ran.stderr
    [line] = ran.stderr.strip().splitlines()
    assert line.startswith("error: cannot create the state database") and "give a --state path" in line


def test_a_lock_file_replaced_by_a_symlink_is_one_clear_line(tmp_path, shop):
    outbox = tmp_path / "outbox"
    outbox.mkdir(mode=0o700)
    (outbox / LOCK_NAME).symlink_to(tmp_path / "elsewhere")
    ran = mapper(run_cmd(make_mapping(tmp_path), tmp_path / "s.sqlite", outbox, fixtures=shop),
                 base_env(tmp_path), tmp_path)
    assert ran.returncode == 1 and "Traceback" not in ran.stderr, ran.stderr
    assert "cannot lock the outbox" in ran.stderr and not (tmp_path / "elsewhere").exists()
