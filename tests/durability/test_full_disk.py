"""A full disk: no SUBMIT is acknowledged unless its job is on disk, no acknowledged id is
ever given to another job, and everything else goes on and is written once there is room.

Each test mounts a small tmpfs of its own (root only) for the state database, and in one
case for the keepers' journals too, then fills it.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support import SH, Daemon, Gate, Raw, job_pid, wait_dead, wait_for

from sjq.jobs import ExitRecord
from sjq.keeper.journal import Header, Journal, JournalState

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")

FULL = b"ERROR cannot record the job: database or disk is full\r\n"
BIG = SH + "# " + "x" * 32_000 + "\n"  # a script that makes the database grow fast


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(mnt)], check=True
    )
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(d: Daemon, mnt: Path) -> Path:
    """Fill the file system to the last byte; return the file to delete to make room.

    First the daemon's write-ahead log is emptied and given back to the file system (a
    checkpoint from outside): SQLite reuses the room its log already has, so without this
    small writes would go on for a while on a full disk."""
    assert d.req("PING").startswith(b"OK")  # a turn: what the daemon had to write is written
    with contextlib.closing(sqlite3.connect(d.settings["sjq.db"])) as conn:
        assert conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
    return fill_fs(mnt)


def fill_fs(mnt: Path) -> Path:
    filler = mnt / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        chunk = b"\0" * 65536
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, chunk)
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"\0")
    finally:
        os.close(fd)
    return filler


def submit_until_full(d: Daemon, mnt: Path) -> list[int]:
    """Submit a few big held jobs, fill the file system, then submit until refused; the ids
    acknowledged."""
    acked = [d.submit(BIG, hold=True) for _ in range(5)]
    fill(d, mnt)
    with Raw(d.socket) as c:
        assert c.submit(BIG, hold=True, cwd=str(d.jobs_dir)) == FULL
    return acked


def ids_on_disk(db: str) -> list[int]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        return [r[0] for r in conn.execute("SELECT id FROM jobs ORDER BY id")]


@pytest.mark.parametrize("spool_too", [False, True], ids=["database", "database-and-spool"])
def test_a_full_disk_loses_no_acknowledged_job_and_catches_up_when_there_is_room(
    daemon_factory: Callable[..., Daemon],
    gate: Callable[[str], Gate],
    small_fs: Path,
    spool_too: bool,
) -> None:
    settings = {"db": str(small_fs / "sjq.db"), "killgrace": "1"}
    if spool_too:
        settings["spool"] = str(small_fs / "spool")
    d = daemon_factory(**settings)
    db = settings["db"]
    d.start()
    ends, dies = gate("ends"), gate("dies")
    ending = d.submit(SH + ends.wait + "exit 3\n")
    killed = d.submit(SH + dies.wait)
    ending_pid, killed_pid = job_pid(d, ending), job_pid(d, killed)

    acked = submit_until_full(d, small_fs)
    filler = small_fs / "filler"
    # Refused, not acknowledged: and refused again while there is no room.
    with Raw(d.socket) as c:
        assert c.submit(SH, cwd=str(d.jobs_dir)) == FULL
        # What needs no room goes on: PING, STATUS, INFO, KILL (which signals the job).
        assert c.request("PING").startswith(b"OK ")
        c.send(f"STATUS {ending}\n".encode())
        assert c.data().startswith(f"{ending}\t".encode())
        assert c.request(f"KILL {killed}") == b"OK\r\n"
    wait_dead(killed_pid)
    ends.open()  # a job ends while nothing can be written
    wait_dead(ending_pid)
    waiter = Raw(d.socket, timeout=1)
    waiter.send(f"WAIT {ending}:{killed}\n".encode())
    # Its answer waits until what it reports is on disk (a bounded look for its absence).
    assert not waiter.closed()
    assert waiter.buf == b""
    waiter.sock.settimeout(10)

    filler.unlink()  # room again
    assert waiter.line() == f"OK {ending}:F {killed}:K\r\n".encode()
    waiter.close()
    after = d.submit(SH, hold=True)
    assert (
        after == max([ending, killed, *acked]) + 1
    )  # ids nobody was told are handed out again; no others
    assert d.info(ending)["exit_code"] == 3
    assert d.info(killed)["signal"] == 15
    assert "cannot record state: database or disk is full" in d.log
    assert "a job keeper died" not in d.log

    d.kill9()
    on_disk = ids_on_disk(db)
    assert set(acked) | {ending, killed, after} <= set(on_disk)
    d.start()
    assert d.state(ending) == "F"
    assert d.state(killed) == "K"
    assert d.submit(SH, hold=True) == after + 1


def test_a_daemon_stopped_while_the_disk_is_full_acknowledges_nothing_unsaved(
    daemon_factory: Callable[..., Daemon], small_fs: Path
) -> None:
    d = daemon_factory(db=str(small_fs / "sjq.db"))
    db = d.settings["sjq.db"]
    d.start()
    acked = submit_until_full(d, small_fs)
    with Raw(d.socket) as c:
        # Pipelined: the SUBMIT cannot be recorded, then the daemon is told to stop.
        c.send(b"SUBMIT\nHOLD\nCWD /\nSRC 10\n#!/bin/sh\nSHUTDOWN\n")
        assert c.line() == FULL
        assert c.line() == b"OK\r\n"
    assert d.proc is not None
    d.proc.wait(15)
    d.proc = None
    assert ids_on_disk(db) == sorted(acked)
    wait_for(lambda: not os.path.exists(d.socket), what="the socket to go")


class _NoHeadStart(Journal):
    RESERVE = 0  # no space taken ahead: the first record after the disk fills meets ENOSPC


def test_a_journal_on_a_full_disk_keeps_its_records_and_writes_them_when_there_is_room(
    small_fs: Path,
) -> None:
    j = _NoHeadStart(str(small_fs / "keeper-1-0.journal"))
    j.write(Header(1, 100))
    filler = fill_fs(small_fs)
    for jobid in range(1, 200):  # more than fits in the page the header started
        j.write(ExitRecord(jobid, 4000 + jobid, 0, None, 1.5, 0.1, 0.2, 1024))
    assert not j.healthy
    assert not j.flush()
    filler.unlink()
    assert j.flush()
    j.close()
    state = JournalState(j.path)
    state.read()
    assert sorted(state.exited) == list(range(1, 200))  # every record, whole, in order


def test_a_journal_takes_room_ahead_so_a_full_disk_does_not_stop_it(small_fs: Path) -> None:
    j = Journal(str(small_fs / "keeper-1-0.journal"))
    assert os.path.getsize(j.path) == 0  # the room taken ahead does not change its size
    fill_fs(small_fs)
    for jobid in range(1, 2000):
        j.write(ExitRecord(jobid, 4000 + jobid, 0, None, 1.5, 0.1, 0.2, 1024))
    assert j.healthy
    j.close()
    state = JournalState(j.path)
    state.read()
    assert len(state.exited) == 1999
