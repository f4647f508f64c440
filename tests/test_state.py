"""sjq.state in this process: a real Store on a SQLite file under tmp_path, a real Config,
real protocol requests through `State.handle`, and the keeper's news as the daemon passes it
on. What the daemon does at the end of a turn (schedule, write, commit, then reply) is
`end_turn` below, in the daemon's order.

The full disk is real too: SQLite's ``max_page_count`` makes the database full (a real
SQLITE_FULL from a real statement), and a tiny tmpfs fills up under a commit.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support import info_keys

from sjq.config import Config, load_config
from sjq.jobs import ExitRecord, Job, JobLaunch, JobState
from sjq.protocol import (
    Data,
    Error,
    Exit,
    Hold,
    Info,
    Kill,
    Ok,
    Pause,
    Ping,
    QueueInfo,
    Release,
    Resume,
    Shutdown,
    Status,
    Stop,
    Submit,
    SubmitOptions,
    Wait,
)
from sjq.replies import Accepted, Peer, Waiter
from sjq.state import State
from sjq.store import Store, WriteFailed

Q, H, U, R = JobState.QUEUED, JobState.WAITING, JobState.HELD, JobState.RUNNING
S, F, A, K, E = JobState.SUCCESS, JobState.FAIL, JobState.ABORT, JobState.KILLED, JobState.ERROR

SH = b"#!/bin/sh\n"
ME = Peer(os.getpid(), os.getuid(), os.getgid())
FULL = "cannot record the job: database or disk is full"
BIG = SH + b"# " + b"x" * 32_000 + b"\n"  # overflow pages: needs room the database lacks


def config(tmp_path: Path, **settings: str) -> Config:
    values = {
        "sjq.socket": str(tmp_path / "s.sock"),
        "sjq.db": str(tmp_path / "state.db"),
        "sjq.maxprocs": "2",
        "sjq.maxmem": "8G",
        "sjq.defaults.mem": "100M",
    }
    values.update({"sjq." + k.replace("_", "."): v for k, v in settings.items()})
    return load_config(os.devnull, environ={"HOME": str(tmp_path)}, overrides=values)


class Turns:
    """A State and its Store, and the daemon's side of a turn."""

    def __init__(self, cfg: Config, db: str, cwd: Path) -> None:
        self.cfg = cfg
        self.cwd = cwd
        self.store = Store(db)
        self.now = 1000.0
        self.st = State(cfg, self.store, self.now)
        self.spawned: list[JobLaunch] = []
        self.killed: list[Job] = []
        self.closed = False

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.store.close()

    def handle(self, req: Any, peer: Peer = ME) -> Any:
        self.now += 1.0
        self.st.now = self.now
        return self.st.handle(req, peer)

    def submit(self, script: bytes = SH, peer: Peer = ME, **options: Any) -> Accepted | Error:
        options.setdefault("cwd", str(self.cwd))
        reply = self.handle(Submit(SubmitOptions(**options), script), peer)
        assert isinstance(reply, Accepted | Error), reply
        return reply

    def job(self, script: bytes = SH, **options: Any) -> int:
        """Submit a job that must be accepted; its id."""
        reply = self.submit(script, **options)
        assert isinstance(reply, Accepted), reply
        return reply.jobid

    def end_turn(self) -> bool:
        """Schedule, write, commit; whether the commit worked. Spawns and kills are taken."""
        st = self.st
        st.now = self.now
        st.schedule()
        ok = False
        if st.write_changes():
            try:
                self.store.commit()
                ok = True
            except WriteFailed as e:
                st.write_failed(e.reason)
        if ok:
            st.committed()
        self.spawned += st.to_spawn
        self.killed += st.to_kill
        st.to_spawn, st.to_kill = [], []
        return ok

    # -- what a client would see --

    def status(self) -> dict[int, str]:
        reply = self.handle(Status(None))
        assert isinstance(reply, Data)
        rows = [r.split("\t") for r in reply.payload.decode().split("\r\n") if r]
        return {int(r[0]): r[2] for r in rows}

    def info(self, jobid: int) -> dict[str, Any]:
        reply = self.handle(Info((jobid,)))
        assert isinstance(reply, Data)
        (row,) = [json.loads(x) for x in reply.payload.decode().splitlines()]
        return row  # type: ignore[no-any-return]

    # -- what a keeper would report --

    def started(self, jobid: int, pid: int = 4000) -> None:
        self.now += 1.0
        self.st.started(jobid, pid + jobid, 77, self.now)

    def exit(self, jobid: int, code: int | None = 0, sig: int | None = None, why: str = "") -> None:
        self.now += 1.0
        self.st.exited(ExitRecord(jobid, 4000 + jobid, code, sig, self.now, 0.5, 0.25, 4096, why))


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Callable[..., Turns]]:
    made: list[Turns] = []

    def build(**settings: str) -> Turns:
        cfg = config(tmp_path, **settings)
        t = Turns(cfg, cfg.db, tmp_path)
        made.append(t)
        return t

    yield build
    for t in made:
        t.close()


@pytest.fixture
def t(make: Callable[..., Turns]) -> Turns:
    return make()


# -- requests --------------------------------------------------------------------------------


def test_submit_asks_about_a_directory_once_a_turn(t: Turns, tmp_path: Path) -> None:
    """A pipelined burst of SUBMITs shares its working directory's check within a turn;
    the next turn asks the file system again."""
    d = tmp_path / "work"
    d.mkdir()
    t.job(cwd=str(d))
    d.rmdir()  # between two SUBMITs of one turn: the first answer stands
    t.job(cwd=str(d))
    t.end_turn()
    reply = t.submit(cwd=str(d))
    assert isinstance(reply, Error)
    assert reply.message == f"cwd => {d} does not exist"


def test_a_submit_is_answered_once_its_job_is_committed(t: Turns) -> None:
    reply = t.submit(name="first")
    assert isinstance(reply, Accepted)
    assert not reply.ready, "no OK <id> before the job is on disk"
    assert t.store.state_of(reply.jobid) is Q  # in the open transaction only
    assert t.end_turn()
    assert reply.ready
    assert reply.reply() == Ok("1")
    assert t.job() == 2
    assert t.status() == {1: "R", 2: "Q"}


def test_started_jobs_become_spawn_requests_with_their_environment(t: Turns) -> None:
    a = t.job(name="a", procs=2, env=(("JOB_ID", "spoofed"), ("KEEP", "me")))
    b = t.job(name="b", stdout="out.txt")
    t.end_turn()
    (launch,) = t.spawned  # two CPUs: b waits for a
    assert launch.jobid == a
    assert launch.env["JOB_ID"] == launch.env["SJQ_JOBID"] == str(a)
    assert launch.env["KEEP"] == "me"
    assert (launch.env["SJQ_JOBNAME"], launch.env["SJQ_PROCS"]) == ("a", "2")
    assert launch.env["SJQ_MEM"] == str(100 * 1024**2)
    assert launch.env["SJQ_SOCKET"] == t.cfg.socket
    assert launch.script == SH
    assert (launch.cwd, launch.stdout) == (str(t.cwd), str(t.cwd / f"{a}.stdout"))
    assert (launch.uid, launch.gid) == (None, None), "a job of the daemon's own user"
    t.started(a)
    t.exit(a)
    t.end_turn()
    (_, second) = t.spawned
    assert second.jobid == b
    assert second.stdout == str(t.cwd / "out.txt")
    assert second.env["PATH"], "no ENV sent: the daemon's default environment"
    assert "KEEP" not in second.env


def test_bad_submits_say_everything_wrong_at_once(t: Turns) -> None:
    reply = t.submit(procs=3, mem=9 * 1024**3)
    assert reply == Error(
        "PROCS 3 is more than the 2 CPUs this daemon manages (sjq.maxprocs);"
        " MEM 9G is more than the 8G this daemon manages (sjq.maxmem)"
    )
    assert t.submit(depends=(7,)) == Error("DEPENDS: there is no job 7")
    gone = t.cwd / "gone"
    assert t.submit(cwd=str(gone)) == Error(f"cwd => {gone} does not exist")
    held = t.submit(cwd=str(gone), hold=True)
    assert isinstance(held, Accepted), "a held job may find its directory made meanwhile"
    assert held.jobid == 1, "refused submits consume no id"


def test_only_root_may_submit_for_another_user(t: Turns) -> None:
    other = Peer(1, 1000, 1000)
    assert t.submit(peer=other, uid=0) == Error(
        "UID 0: only root may run jobs as another user or group"
    )
    assert t.submit(peer=other, gid=5, uid=1000) == Error(
        "GID 5: only root may run jobs as another user or group"
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="a root daemon runs jobs as other users")
def test_a_root_daemon_runs_a_job_as_the_user_root_names(t: Turns) -> None:
    root = Peer(1, 0, 0)
    jobid = t.job(peer=root, uid=65534, gid=65534, cwd="/tmp")
    t.end_turn()
    (launch,) = t.spawned
    assert (launch.jobid, launch.uid, launch.gid) == (jobid, 65534, 65534)


def test_hold_and_release(t: Turns) -> None:
    held = t.job(hold=True)
    runs = t.job(procs=2)
    waits = t.job()
    t.end_turn()
    assert t.status() == {held: "U", runs: "R", waits: "Q"}
    assert t.handle(Hold(waits)) == Ok()
    assert t.handle(Release(held)) == Ok()
    assert t.handle(Hold(runs)) == Ok(), "a running job is not held; OK all the same, as KILL"
    assert t.status() == {held: "Q", runs: "R", waits: "U"}
    assert [e for e, _ in t.store.events(waits)] == ["Q", "U"]


def test_dependencies(t: Turns) -> None:
    parent = t.job()
    ok_child = t.job(depends=(parent,))
    t.end_turn()
    assert t.status() == {parent: "R", ok_child: "H"}
    t.started(parent)
    t.exit(parent, code=3)
    t.end_turn()
    assert t.status() == {parent: "F", ok_child: "A"}
    assert t.info(ok_child)["reason"] == f"dependency {parent} ended in F"
    # On a job that already ended: at once, by its recorded end.
    doomed = t.job(depends=(parent,))
    assert t.status()[doomed] == "A"
    good = t.job()
    t.end_turn()
    t.started(good)
    t.exit(good)
    t.end_turn()
    after = t.job(depends=(good,))
    t.end_turn()
    assert t.status()[after] == "R"


def test_keeper_news_ends_jobs_with_their_reasons(make: Callable[..., Turns]) -> None:
    t = make(maxprocs="5")
    ids = [t.job() for _ in range(5)]
    t.end_turn()
    assert [launch.jobid for launch in t.spawned] == ids
    for i in ids:
        t.started(i)
    ok, code, sig, limit, refused = ids
    t.exit(ok)
    t.exit(code, code=42)
    t.exit(sig, code=None, sig=signal.SIGKILL)
    t.exit(limit, code=None, sig=signal.SIGKILL, why="time limit")
    t.st.failed_to_start(refused, "cwd => /gone does not exist", t.now)
    t.end_turn()
    assert t.status() == {ok: "S", code: "F", sig: "F", limit: "F", refused: "E"}
    assert t.info(code)["reason"] == "exit status 42"
    assert t.info(sig)["reason"] == "killed by signal SIGKILL"
    assert t.info(limit)["reason"] == "time limit"
    assert t.info(refused)["reason"] == "cwd => /gone does not exist"
    info = t.info(ok)
    assert (info["pid"], info["exit_code"], info["signal"], info["reason"]) == (
        4000 + ok,
        0,
        None,
        "",
    )
    assert (info["cpu_user"], info["cpu_sys"], info["maxrss"]) == (0.5, 0.25, 4096)
    assert info["started"] < info["ended"]
    assert [e for e, _ in t.store.events(ok)] == ["Q", "R", "S"]
    # News of a job that is not running (a late or repeated report) changes nothing.
    t.exit(ok, code=1)
    t.st.failed_to_start(ok, "late", t.now)
    t.started(ok, pid=1)
    t.end_turn()
    assert t.status()[ok] == "S"
    assert t.info(ok)["pid"] == 4000 + ok


def test_kill(t: Turns) -> None:
    running = t.job()
    queued = t.job(procs=2)
    t.end_turn()
    t.started(running)
    assert t.handle(Kill(queued)) == Ok()
    assert t.status()[queued] == "K", "a waiting job ends at once"
    assert t.handle(Kill(running)) == Ok()
    t.end_turn()
    assert [j.id for j in t.killed] == [running], "a running one is signalled ..."
    assert t.status()[running] == "R"
    assert t.info(running)["reason"] == "killed by request"
    t.exit(running, code=0)  # ... and ends in K whatever its status
    t.end_turn()
    assert t.status()[running] == "K"
    assert t.handle(Kill(99)) == Ok(), "an unknown job: nothing to do, as in 2014"


def test_wait(t: Turns) -> None:
    a = t.job()
    b = t.job()
    t.end_turn()
    assert t.handle(Wait((99,))) == Error("unknown job 99")
    w = t.handle(Wait((a, b)))
    assert isinstance(w, Waiter)
    assert w.pending == {a, b}
    t.started(a)
    t.exit(a)
    t.end_turn()
    assert t.st.ready_waiters == []
    t.started(b)
    t.exit(b, code=1)
    t.st.write_changes()
    assert t.st.ready_waiters == [w], "ready once the turn's commit has it"
    assert t.store.commit() is None
    t.st.committed()
    assert w.reply() == Ok(f"{a}:S {b}:F")
    # Jobs that ended and are committed: at once.
    assert t.handle(Wait((b, a))) == Ok(f"{b}:F {a}:S")


def test_a_wait_on_an_end_not_yet_committed_waits_for_the_commit(t: Turns) -> None:
    a = t.job()
    t.end_turn()
    t.started(a)
    t.exit(a)
    t.st.ready_waiters.clear()
    w = t.handle(Wait((a,)))
    assert isinstance(w, Waiter)
    assert not w.pending
    assert t.st.ready_waiters == [w]
    assert w.reply() == Ok(f"{a}:S")


def test_a_dropped_waiter_is_not_completed(t: Turns) -> None:
    a = t.job()
    t.end_turn()
    w = t.handle(Wait((a,)))
    assert isinstance(w, Waiter)
    t.st.drop_waiter(w)  # its client went away
    t.started(a)
    t.exit(a)
    t.end_turn()
    assert t.st.ready_waiters == []
    assert t.st.waiters == {}


def test_info_status_and_ping(t: Turns) -> None:
    a = t.job(name="named", priority=3, time_limit=60.0)
    b = t.job(depends=(a,))
    c = t.job(hold=True)
    t.end_turn()
    assert t.handle(Ping()) == Ok("H:1 R:1 U:1")
    assert t.handle(Status(b)) == Data(f"{b}\tsjqjob\tH\t{a}\r\n".encode())
    assert t.handle(Status(0)) == Data(b""), "no job 0: an empty answer, as in 2014"
    info = t.info(a)
    assert (info["name"], info["priority"], info["time_limit"]) == ("named", 3, 60.0)
    assert (info["procs"], info["mem"], info["depends"]) == (1, 100 * 1024**2, [])
    reply = t.handle(Info(()))
    assert isinstance(reply, Data)
    rows = [json.loads(x) for x in reply.payload.decode().splitlines()]
    assert [r["id"] for r in rows] == [a, b, c]
    assert all(set(r) == info_keys() for r in rows), "exactly what docs/protocol.md lists"


def test_pause_stops_starts_until_resume_and_is_kept(
    make: Callable[..., Turns],
) -> None:
    t = make()
    running = t.job()
    t.end_turn()
    assert t.handle(Pause()) == Ok()
    waiting = t.job()
    t.end_turn()
    assert [launch.jobid for launch in t.spawned] == [running], "nothing starts while paused"
    t.started(running)
    t.exit(running)
    t.end_turn()
    assert t.status() == {running: "S", waiting: "Q"}
    reply = t.handle(QueueInfo())
    assert isinstance(reply, Data)
    info = json.loads(reply.payload)
    assert (info["paused"], info["procs"], info["procs_used"]) == (True, 2, 0)
    since = info["paused_since"]
    assert t.store.paused_since() == since
    t.close()
    again = make()  # a restart keeps the pause, and when it began
    assert again.st.pause.paused
    assert again.st.pause.since == since
    assert again.handle(Resume()) == Ok()
    assert again.end_turn()
    assert again.store.paused_since() is None


def test_exit_shutdown_and_stop(t: Turns) -> None:
    assert t.handle(Exit()) == Ok("BYE")
    assert t.st.stop_requested is None
    assert t.handle(Stop()) == Ok()
    assert t.st.stop_requested == "stop"
    assert t.handle(Shutdown()) == Ok()
    assert t.st.stop_requested == "shutdown"
    t.st.accepting = False
    assert t.submit() == Error("the daemon is shutting down; submit again in a moment")


def test_a_new_state_goes_on_where_the_database_left_off(
    make: Callable[..., Turns], tmp_path: Path
) -> None:
    t = make()
    a, b = t.job(), t.job()
    t.end_turn()
    t.started(a)
    t.exit(a)
    t.handle(Kill(b))  # b's state change is written, but the next commit never comes
    t.end_turn()
    c = t.job()
    t.close()  # Store.close commits: what is open is committed
    again = make()
    assert again.st.next_id == 4
    # Ended jobs count from the database; the active ones are recovery's (sjq.recovery).
    assert again.handle(Ping()) == Ok("S:1")
    active = again.store.load_active()
    assert [(j.id, j.state, j.killing) for j in active] == [(b, R, True), (c, Q, False)]


# -- a full database -------------------------------------------------------------------------


def fill_up(t: Turns) -> None:
    """No page more for this database: a statement that needs one fails with SQLITE_FULL."""
    (pages,) = t.store.db.execute("PRAGMA page_count").fetchone()
    t.store.db.execute(f"PRAGMA max_page_count = {pages}")


def make_room(t: Turns) -> None:
    t.store.db.execute("PRAGMA max_page_count = 1073741823")


def test_a_failed_write_forgets_the_new_jobs_and_keeps_everything_else(t: Turns) -> None:
    a, b = t.job(), t.job()
    t.end_turn()
    t.started(a)
    t.started(b)
    t.exit(a, code=3)  # an end, written into this turn's transaction by the next STATUS
    t.handle(Kill(b))
    assert t.status()[a] == "F"
    c = t.submit()  # small: it fits
    assert isinstance(c, Accepted)
    waiter = t.handle(Wait((c.jobid,)))
    assert isinstance(waiter, Waiter)
    fill_up(t)
    d = t.submit(BIG)  # needs new pages: the database is full
    assert d == Error(FULL)
    # SQLite rolled the whole transaction back: the job submitted earlier in it is forgotten
    # too, and says so; nobody was told its id.
    assert t.store.state_of(a) is R, "the database holds what the last commit wrote"
    assert t.store.state_of(c.jobid) is None
    assert c.ready
    assert c.reply() == Error(FULL)
    assert waiter.error == f"unknown job {c.jobid}"
    assert waiter in t.st.ready_waiters
    assert t.st.write_error == "database or disk is full"
    assert c.jobid not in t.status()
    assert t.handle(Ping()) == Ok("F:1 R:1")
    # Jobs already ended, killed or started keep going in memory: no client saw otherwise.
    assert [j.id for j in t.st.to_kill] == [b]

    make_room(t)
    e = t.job(name="after")
    assert e == c.jobid, "an id nobody was told is handed out again"
    assert t.end_turn()
    assert t.st.write_error == ""
    # The changes the failed write lost are written again by this commit.
    assert t.store.state_of(a) is F
    assert [s for s, _ in t.store.events(a)] == ["Q", "R", "F"]
    assert t.info(a)["exit_code"] == 3
    assert t.info(b)["reason"] == "killed by request"
    assert t.info(e)["name"] == "after"
    t.exit(b)
    t.end_turn()
    assert t.status() == {a: "F", b: "K", e: "R"}


def test_a_pause_lost_with_a_failed_write_is_written_again(t: Turns) -> None:
    t.job()
    t.end_turn()
    assert t.handle(Pause()) == Ok()
    assert t.handle(Status(None))  # writes the flag into the open transaction
    fill_up(t)
    assert t.submit(BIG) == Error(FULL)
    assert t.store.paused_since() is None, "rolled back with the rest"
    assert t.st.pause.paused, "in memory the queue is still paused"
    make_room(t)
    assert t.end_turn()
    assert t.store.paused_since() == t.st.pause.since


def test_a_failed_purge_is_undone_in_the_counts(t: Turns) -> None:
    a = t.job()
    t.end_turn()
    t.started(a)
    t.exit(a)
    t.end_turn()
    assert t.st.purge(ended_before=t.now + 1, keep_count=None, limit=10)
    assert t.handle(Ping()) == Ok("")
    t.store.rollback()  # the purge's transaction is lost, as by a failed commit
    t.st.write_failed("disk I/O error")
    assert t.handle(Ping()) == Ok("S:1"), "it is still on disk: it still counts"
    assert t.st.write_error == "disk I/O error"


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(mnt)], check=True
    )
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill_fs(mnt: Path) -> Path:
    filler = mnt / "filler"
    with open(filler, "wb", buffering=0) as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * 4096)
    with open(filler, "ab", buffering=0) as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0")
    return filler


def test_a_failed_commit_takes_back_the_turns_spawns_of_new_jobs(
    make: Callable[..., Turns], tiny_fs: Path
) -> None:
    t = make(db=str(tiny_fs / "state.db"), maxprocs="3")
    a = t.job()
    assert t.end_turn()
    assert [launch.jobid for launch in t.spawned] == [a]
    t.spawned.clear()
    t.started(a)
    # The write-ahead log emptied and given back to the file system, then no room left:
    # the next commit cannot append to it.
    with contextlib.closing(sqlite3.connect(t.cfg.db)) as conn:
        assert conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
    filler = fill_fs(tiny_fs)
    b = t.submit(BIG)
    assert isinstance(b, Accepted)
    t.exit(a)
    assert not t.end_turn(), "the commit fails"
    assert t.st.write_error == "database or disk is full"
    assert b.reply() == Error(FULL)
    assert t.spawned == [], "the new job's spawn is taken back: it never existed"
    assert t.status() == {a: "S"}
    filler.unlink()
    assert t.end_turn()
    assert t.store.state_of(a) is S
    assert t.job() == b.jobid
