"""Durable state: ids, restarts, STOP with running jobs, SHUTDOWN, history, the schema."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from support import Daemon, Gate, Raw, wait_for

from sjq.store import _MIGRATIONS, SCHEMA_VERSION, Store, StoreError

Gates = Callable[[str], Gate]


def job_waiting_on(g: Gate, code: int = 0) -> str:
    return f"#!/bin/sh\n{g.wait}exit {code}\n"


def test_ids_continue_across_restarts_and_rejects_consume_none(daemon: Daemon) -> None:
    d = daemon
    assert [d.submit("#!/bin/sh\n") for _ in range(3)] == [1, 2, 3]
    with Raw(d.socket) as c:
        assert c.submit("no shebang\n").startswith(b"ERROR")
    d.stop()
    d.start()
    assert d.submit("#!/bin/sh\n") == 4


def test_an_acknowledged_submit_survives_sigkill(
    daemon_factory: Callable[..., Daemon], gate: Gates
) -> None:
    d = daemon_factory(maxprocs="1").start()
    g = gate("g")
    blocker = d.submit(job_waiting_on(g))
    queued = d.submit("#!/bin/sh\necho later\n", name="kept")
    d.kill9()
    d.start()
    assert d.state(queued) in "QH"
    g.open()
    assert d.wait_state(blocker, "SF") == "S"
    assert d.wait_state(queued, "SF") == "S"
    assert (d.jobs_dir / f"{queued}.stdout").read_text() == "later\n"


def test_job_that_ends_while_no_daemon_runs_gets_its_real_status(
    daemon: Daemon, gate: Gates
) -> None:
    d = daemon
    g = gate("g")
    jid = d.submit(f"#!/bin/sh\n{g.wait}echo out; exit 42\n")
    d.wait_state(jid, "R")
    wait_for(lambda: d.info(jid)["pid"], what="the job's pid to be recorded")
    d.kill9()
    g.open()
    marker = d.jobs_dir / f"{jid}.stdout"
    wait_for(lambda: marker.exists() and marker.read_text() == "out\n", what="job output")
    d.start()
    assert d.wait_state(jid, "SF") == "F"
    info = d.info(jid)
    assert info["exit_code"] == 42
    assert info["reason"] == "exit status 42"
    assert info["cpu_user"] is not None
    assert info["maxrss"] > 0


def test_stop_keep_running_then_readopt(daemon: Daemon, gate: Gates) -> None:
    d = daemon
    g = gate("g")
    jid = d.submit(job_waiting_on(g, 3))
    d.wait_state(jid, "R")
    pid = wait_for(lambda: d.info(jid)["pid"], what="pid")
    with Raw(d.socket) as c:
        assert c.request("STOP") == b"OK\r\n"
    assert d.proc is not None
    assert d.proc.wait(15) == 0
    assert Path(f"/proc/{pid}").exists(), "STOP must leave running jobs running"
    d.start()
    assert d.state(jid) == "R", "the next daemon re-adopts the running job"
    assert "re-adopted" in d.log
    g.open()
    assert d.wait_state(jid, "SF") == "F"
    assert d.info(jid)["exit_code"] == 3


def test_cli_stop_keep_running(daemon: Daemon, gate: Gates) -> None:
    d = daemon
    g = gate("g")
    jid = d.submit(job_waiting_on(g))
    d.wait_state(jid, "R")
    pid = wait_for(lambda: d.info(jid)["pid"], what="pid")
    cmd = [sys.executable, "-m", "sjq.daemon", "--stop", "--keep-running"]
    cmd += ["--set", f"sjq.socket={d.socket}"]
    assert subprocess.run(cmd, capture_output=True, timeout=30).returncode == 0
    assert not Path(d.socket).exists()
    assert Path(f"/proc/{pid}").exists()
    g.open()
    d.start()
    assert d.wait_state(jid, "SF") == "S"


def test_shutdown_kills_running_keeps_queued(
    daemon_factory: Callable[..., Daemon], gate: Gates
) -> None:
    d = daemon_factory(maxprocs="1").start()
    g = gate("never")
    running = d.submit(job_waiting_on(g))
    queued = d.submit("#!/bin/sh\n")
    held = d.submit("#!/bin/sh\n", hold=True)
    d.wait_state(running, "R")
    with Raw(d.socket) as c:
        assert c.request("SHUTDOWN") == b"OK\r\n"
        wait_for(c.closed, what="SHUTDOWN to close the connection")
    assert d.proc is not None
    assert d.proc.wait(15) == 0
    assert not Path(d.settings["sjq.pidfile"]).exists()
    assert not Path(d.socket).exists()
    d.start()
    assert d.state(running) == "K"
    assert d.info(running)["reason"] == "killed by shutdown"
    assert d.state(held) == "U"
    assert d.wait_state(queued, "SF") == "S"


def test_every_state_change_is_recorded_with_its_time(daemon: Daemon) -> None:
    jid = daemon.submit("#!/bin/sh\n")
    daemon.wait_state(jid, "S")
    daemon.stop()
    store = Store(daemon.settings["sjq.db"])
    try:
        events = store.events(jid)
    finally:
        store.close()
    assert [s for s, _ in events] == ["Q", "R", "S"]
    times = [t for _, t in events]
    assert times == sorted(times)


def test_history_is_purged_by_count(daemon_factory: Callable[..., Daemon]) -> None:
    d = daemon_factory(keep_count="2").start()
    ids = [d.submit("#!/bin/sh\n") for _ in range(5)]
    for j in ids:
        d.wait_state(j, "S")

    def remembered() -> list[int]:
        with Raw(d.socket) as c:
            c.send(b"STATUS\n")
            return [int(r.split("\t")[0]) for r in c.data().decode().splitlines()]

    wait_for(lambda: remembered() == ids[-2:], what="only the newest two to be kept")
    assert d.req("PING") == b"OK S:2\r\n"
    assert d.submit("#!/bin/sh\n") == 6, "ids are never reused, even after a purge"


def test_history_is_purged_by_age(daemon_factory: Callable[..., Daemon]) -> None:
    d = daemon_factory(keep="1s").start()
    jid = d.submit("#!/bin/sh\n")
    d.wait_state(jid, "S")
    wait_for(lambda: d.state(jid) == "", what="the finished job to be forgotten")
    assert d.req("PING") == b"OK \r\n"


# -- the database file itself ---------------------------------------------------------------


def test_older_schema_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(_MIGRATIONS[0])
    db.execute(
        "INSERT INTO jobs (id, name, state, procs, mem, depends, uid, gid, cwd, stdout, stderr,"
        " script, submitted) VALUES (7, 'old', 'Q', 1, 1024, '', 0, 0, '/', '/o', '/e',"
        " x'23210a', 1.0)"
    )
    db.execute("PRAGMA user_version=1")
    db.commit()
    db.close()
    store = Store(str(path))
    try:
        assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        (job,) = store.load_active()
        assert (job.id, job.name, job.priority, job.killing) == (7, "old", 0, False)
        assert store.spec(7).makedirs == ()  # its output paths were given as they are
        assert store.next_id() == 8
    finally:
        store.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="newer than this sjq"):
        Store(str(path))


def start_fails(d: Daemon) -> str:
    proc = subprocess.run(d.command(), capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0
    return proc.stderr


def test_corrupt_database_is_a_clear_error(daemon_factory: Callable[..., Daemon]) -> None:
    d = daemon_factory()
    Path(d.settings["sjq.db"]).write_bytes(b"this is not sqlite" * 100)
    err = start_fails(d)
    assert "is corrupt" in err
    assert d.settings["sjq.db"] in err
    assert not Path(d.socket).exists()


def test_unusable_database_path_is_a_clear_error(daemon_factory: Callable[..., Daemon]) -> None:
    d = daemon_factory()
    blocker = d.dir / "afile"
    blocker.write_text("")
    d.settings["sjq.db"] = str(blocker / "state.db")
    err = start_fails(d)
    assert str(blocker) in err


def test_a_start_the_database_missed_is_taken_from_the_journal(daemon: Daemon) -> None:
    """A daemon may start a job and die before its commit says so: the keeper's journal is
    the authority, so the job is not started a second time and gets its real status."""
    d = daemon
    ledger = d.dir / "ledger"
    jid = d.submit(f'#!/bin/sh\necho ran >> "{ledger}"\n', hold=True)
    d.stop()
    t = round(time.time()) - 60.0  # recent: older history would be purged (sjq.keep)
    spool = Path(d.settings["sjq.spool"])
    (spool / "keeper-999999-0.journal").write_text(  # a keeper (pid) that is long gone
        "K 999999 1\n"
        f"S {jid} 999998 5 {t} 6\n"
        f"X {jid} 999998 3 - {t + 1.5} 0.25 0.5 1048576 \n"
        f"D {t + 2}\n"
    )
    d.start()
    assert d.state(jid) == "F"
    info = d.info(jid)
    assert (info["exit_code"], info["started"], info["ended"]) == (3, t, t + 1.5)
    assert info["maxrss"] == 1048576
    assert not ledger.exists(), "the job must not run again"
    assert "1 found started though recorded waiting" in d.log
    assert not (spool / "keeper-999999-0.journal").exists(), "an applied journal is removed"


def test_a_killed_keeper_stops_the_daemon_and_its_jobs_are_still_accounted_for(
    daemon_factory: Callable[..., Daemon], gate: Gates
) -> None:
    d = daemon_factory(keepers="1").start()
    g = gate("g")
    jid = d.submit(job_waiting_on(g))
    d.wait_state(jid, "R")
    pid = wait_for(lambda: d.info(jid)["pid"], what="pid")
    keeper = next(Path(d.settings["sjq.spool"]).glob("keeper-*.journal")).name.split("-")[1]
    os.kill(int(keeper), signal.SIGKILL)
    assert d.proc is not None
    assert d.proc.wait(15) == 0, "a daemon without its keeper stops, as for STOP"
    assert "a job keeper died" in d.log
    assert Path(f"/proc/{pid}").exists(), "the job itself goes on"
    d.start()
    assert d.state(jid) == "R", "the orphaned job is re-adopted"
    g.open()
    assert d.wait_state(jid, "SF") == "F"
    assert d.info(jid)["reason"].startswith("exit status lost")
    assert d.submit("#!/bin/sh\n") == jid + 1
