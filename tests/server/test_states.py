"""Job states and transitions through a real daemon: dependencies, holds, kills, cascades."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support import (
    SH,
    Daemon,
    Gate,
    Raw,
    alive,
    job_pid,
    make_daemon,
    read_when,
    reap_leftovers,
    states,
    status,
    wait_dead,
    wait_for,
)


@pytest.fixture
def one_cpu(daemon_factory: Callable[..., Daemon]) -> Daemon:
    return daemon_factory(maxprocs="1", killgrace="1").start()


def test_queued_running_success_and_fail(one_cpu: Daemon, gate: Callable[[str], Gate]) -> None:
    d, g = one_cpu, gate("g")
    first = d.submit(SH + g.wait)
    ok = d.submit(SH + "exit 0\n")
    bad = d.submit(SH + "exit 1\n")
    d.wait_state(first, "R")
    assert states(d) == {first: "R", ok: "Q", bad: "Q"}
    g.open()
    d.wait_state(bad, "F")
    assert states(d) == {first: "S", ok: "S", bad: "F"}


def test_dependent_waits_in_h_and_runs_after_its_parent_succeeds(
    daemon: Daemon, gate: Callable[[str], Gate]
) -> None:
    g = gate("g")
    a = daemon.submit(SH + g.wait)
    b = daemon.submit(SH + "exit 0\n")
    c = daemon.submit(SH + "echo ran\n", depends=f"{a}:{b}")
    daemon.wait_state(b, "S")
    assert daemon.state(c) == "H"
    assert status(daemon, str(c)) == f"{c}\tsjqjob\tH\t{a}:{b}\r\n".encode()
    g.open()
    daemon.wait_state(c, "S")
    assert (daemon.jobs_dir / f"{c}.stdout").read_text() == "ran\n"
    assert daemon.info(c)["started"] >= daemon.info(a)["ended"]


@pytest.mark.parametrize("end", ["F", "K", "E", "A"])
def test_depends_on_a_job_that_ended_badly_is_aborted_at_once(daemon: Daemon, end: str) -> None:
    if end == "F":
        parent = daemon.submit(SH + "exit 2\n")
    elif end == "E":
        parent = daemon.submit("#!/nonexistent/sh\n")
    elif end == "K":
        parent = daemon.submit(SH, hold=True)
        daemon.req(f"KILL {parent}")
    else:
        grand = daemon.submit(SH + "exit 1\n")
        daemon.wait_state(grand, "F")
        parent = daemon.submit(SH, depends=str(grand))
    daemon.wait_state(parent, end)
    child = daemon.submit(SH + "echo should not run\n", depends=str(parent))
    assert daemon.state(child) == "A"  # no waiting: the reply's commit carries the abort
    assert daemon.info(child)["reason"] == f"dependency {parent} ended in {end}"
    assert not (daemon.jobs_dir / f"{child}.stdout").exists()


def test_failure_cascades_to_grandchildren_at_once(
    daemon: Daemon, gate: Callable[[str], Gate]
) -> None:
    g = gate("g")
    a = daemon.submit(SH + g.wait + "exit 3\n")
    b = daemon.submit(SH, depends=str(a))
    c = daemon.submit(SH, depends=str(b))
    other = daemon.submit(SH, depends=f"{c}", hold=True)
    daemon.wait_state(a, "R")
    assert states(daemon) == {a: "R", b: "H", c: "H", other: "U"}
    g.open()
    daemon.wait_state(a, "F")
    # One snapshot right after the parent's end: the whole tree is already aborted.
    assert states(daemon) == {a: "F", b: "A", c: "A", other: "A"}
    assert daemon.info(c)["reason"] == f"dependency {b} ended in A"


def test_kill_of_a_running_parent_cascades(daemon: Daemon, gate: Callable[[str], Gate]) -> None:
    g = gate("g")
    a = daemon.submit(SH + g.wait)
    b = daemon.submit(SH, depends=str(a))
    c = daemon.submit(SH, depends=str(b))
    daemon.wait_state(a, "R")
    assert daemon.req(f"KILL {a}") == b"OK\r\n"
    daemon.wait_state(a, "K")
    assert states(daemon) == {a: "K", b: "A", c: "A"}
    assert daemon.info(b)["reason"] == f"dependency {a} ended in K"


def test_hold_and_release(one_cpu: Daemon, gate: Callable[[str], Gate]) -> None:
    d, g = one_cpu, gate("g")
    blocker = d.submit(SH + g.wait)
    d.wait_state(blocker, "R")
    q = d.submit(SH)
    h = d.submit(SH, depends=str(blocker))
    u = d.submit(SH, hold=True)
    uh = d.submit(SH, hold=True, depends=str(blocker))
    assert states(d) == {blocker: "R", q: "Q", h: "H", u: "U", uh: "U"}
    for j in (q, h):
        assert d.req(f"HOLD {j}") == b"OK\r\n"
    assert states(d) == {blocker: "R", q: "U", h: "U", u: "U", uh: "U"}
    for j in (q, h, u, uh):
        assert d.req(f"RELEASE {j}") == b"OK\r\n"
    # Released jobs go back to Q, or to H while a dependency is still running.
    assert states(d) == {blocker: "R", q: "Q", h: "H", u: "Q", uh: "H"}
    g.open()
    wait_for(lambda: set(states(d).values()) == {"S"}, what="every job to succeed")


def test_release_of_a_held_job_whose_parents_are_done_queues_it(daemon: Daemon) -> None:
    parent = daemon.submit(SH)
    daemon.wait_state(parent, "S")
    child = daemon.submit(SH + "echo child\n", hold=True, depends=str(parent))
    assert daemon.state(child) == "U"
    daemon.req(f"RELEASE {child}")
    daemon.wait_state(child, "S")


def test_kill_of_waiting_jobs_is_immediate_and_aborts_dependents(
    one_cpu: Daemon, gate: Callable[[str], Gate]
) -> None:
    d, g = one_cpu, gate("g")
    blocker = d.submit(SH + g.wait)
    d.wait_state(blocker, "R")
    q = d.submit(SH)
    h = d.submit(SH, depends=str(blocker))
    u = d.submit(SH, hold=True)
    kids = {p: d.submit(SH, depends=str(p)) for p in (q, h, u)}
    for j in (q, h, u):
        assert d.req(f"KILL {j}") == b"OK\r\n"
    snap = states(d)
    assert [snap[j] for j in (q, h, u)] == ["K", "K", "K"]
    assert [snap[k] for k in kids.values()] == ["A", "A", "A"]
    for j in (q, h, u):
        assert d.info(j)["reason"] == "killed by request"
        assert d.info(j)["started"] is None
    assert snap[blocker] == "R"
    g.open()
    d.wait_state(blocker, "S")


def test_kill_running_sends_term_then_kill_after_killgrace_to_the_group(
    daemon_factory: Callable[..., Daemon], gate: Callable[[str], Gate]
) -> None:
    d = daemon_factory(killgrace="1").start()
    g = gate("never")
    log = d.jobs_dir / "trap.log"
    grandchild = d.jobs_dir / "grandchild.pid"
    jid = d.submit(
        SH
        + f"trap 'echo TERM >> {log}' TERM\n"
        # a grandchild that ignores SIGTERM too: only the group's SIGKILL ends it
        + f"sh -c 'trap \"\" TERM; exec sleep 300' & echo $! > {grandchild}\n"
        + f"echo ready >> {log}\n"
        + g.wait
        + g.wait
    )
    read_when(log)
    pid = job_pid(d, jid)
    sleeper = int(read_when(grandchild))
    assert alive(sleeper)
    t0 = time.monotonic()
    assert d.req(f"KILL {jid}") == b"OK\r\n"
    wait_for(lambda: "TERM" in log.read_text(), what="the job's TERM trap")
    assert d.state(jid) == "R"  # it ignored SIGTERM: still there until the grace ends
    assert alive(pid)
    assert alive(sleeper)
    d.wait_state(jid, "K")
    elapsed = time.monotonic() - t0
    assert elapsed >= 0.9, f"SIGKILL came {elapsed:.2f} s after SIGTERM, before sjq.killgrace"
    wait_dead(pid)
    wait_dead(sleeper)  # the background grandchild was in the group too
    info = d.info(jid)
    assert info["reason"] == "killed by request"


def test_kill_running_job_that_exits_on_term(
    daemon_factory: Callable[..., Daemon], gate: Callable[[str], Gate]
) -> None:
    daemon = daemon_factory(killgrace="5").start()
    g = gate("never")
    grandchild = daemon.jobs_dir / "bg.pid"
    jid = daemon.submit(SH + f"sleep 300 & echo $! > {grandchild}\n" + g.wait)
    sleeper = int(read_when(grandchild))
    pid = job_pid(daemon, jid)
    t0 = time.monotonic()
    daemon.req(f"KILL {jid}")
    daemon.wait_state(jid, "K")
    assert time.monotonic() - t0 < 3  # sh dies of SIGTERM: no wait for sjq.killgrace (5 s)
    wait_dead(pid)
    wait_dead(sleeper)
    assert daemon.req(f"KILL {jid}") == b"OK\r\n"
    assert daemon.state(jid) == "K"


def test_a_job_that_leaves_a_background_process_does_not_leak_it(daemon: Daemon) -> None:
    pidfile = daemon.jobs_dir / "bg.pid"
    jid = daemon.submit(SH + f"sleep 300 & echo $! > {pidfile}\nexit 0\n")
    daemon.wait_state(jid, "S")
    wait_dead(int(read_when(pidfile)))


def test_kill_right_after_submit_never_leaves_a_job_running(daemon: Daemon) -> None:
    # The KILL lands while the start is on its way to the keeper, or just after it.
    with daemon.client() as c:
        for _ in range(10):
            jid = int(c.submit(SH + "sleep 30\n", cwd=str(daemon.jobs_dir))[3:])
            assert c.request(f"KILL {jid}") == b"OK\r\n"
    wait_for(lambda: set(states(daemon).values()) == {"K"}, what="every job to be killed")
    for jid in states(daemon):
        pid = daemon.info(jid)["pid"]
        if pid is not None:
            wait_dead(pid)


def test_kill_of_a_stopped_job(daemon_factory: Callable[..., Daemon]) -> None:
    daemon = daemon_factory(killgrace="5").start()
    jid = daemon.submit(SH + "kill -STOP $$\necho after\n")
    pid = job_pid(daemon, jid)
    wait_for(
        lambda: Path(f"/proc/{pid}/stat").read_bytes().rsplit(b") ", 1)[1][:1] == b"T",
        what="the job to stop itself",
    )
    t0 = time.monotonic()
    daemon.req(f"KILL {jid}")
    daemon.wait_state(jid, "K")
    assert time.monotonic() - t0 < 3  # woken by SIGCONT, ended by its SIGTERM: no 5 s grace
    assert (daemon.jobs_dir / f"{jid}.stdout").read_text() == ""


def test_concurrent_submits_get_distinct_consecutive_ids(daemon: Daemon) -> None:
    got: list[int] = []
    lock = threading.Lock()

    def client() -> None:
        with Raw(daemon.socket) as c:
            for _ in range(10):
                reply = c.submit(SH, hold=True)
                with lock:
                    got.append(int(reply[3:]))

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(got) == list(range(1, 81))
    assert daemon.req("PING") == b"OK U:80\r\n"


# Every verb (and a SUBMIT) pipelined in one write before a KILL of a running job: the
# KILL must reach the job whatever shares its read or its turn. RELEASE of a held job that
# can start at once used to let the turn send that start early and drop the kill.
_BEFORE_KILL = {
    "PING": "PING\n",
    "STATUS": "STATUS\n",
    "STATUS id": "STATUS {other}\n",
    "INFO": "INFO {other}\n",
    "HOLD": "HOLD {other}\n",
    "RELEASE": "RELEASE {other}\n",
    "KILL other": "KILL {other}\n",
    "WAIT": "WAIT {done}\n",
    "unknown verb": "FROB\n",
    "bad id": "KILL x\n",
    "SUBMIT": "SUBMIT\nSRC 10\n#!/bin/sh\n",
}


@pytest.fixture(scope="module")
def kill_grace_5(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """One daemon for every case below (each leaves nothing running): sjq.killgrace 5 s."""
    base = tmp_path_factory.mktemp("kill_grace_5")
    d = make_daemon(base, killgrace="5")
    try:
        yield d.start()
    finally:
        d.stop()
        reap_leftovers(str(base))


@pytest.mark.parametrize("verb", sorted(_BEFORE_KILL))
def test_kill_pipelined_after_any_verb_signals_the_running_job(
    kill_grace_5: Daemon, gate: Callable[[str], Gate], verb: str
) -> None:
    d = kill_grace_5
    wait_for(lambda: b"R:" not in d.req("PING"), what="the jobs of the case before to end")
    g = gate("g")
    done = d.submit(SH + "exit 0\n")
    d.wait_state(done, "S")
    target = d.submit(SH + g.wait)
    pid = job_pid(d, target)
    # A held job that can start the moment it is released (one CPU of two is free).
    other = d.submit(SH + "exit 0\n", hold=True)
    line = _BEFORE_KILL[verb].format(other=other, done=done)
    with Raw(d.socket) as c:
        c.send(line.encode() + f"KILL {target}\n".encode())
        d.wait_state(target, "K")
    wait_dead(pid)
    assert not g.path.exists()  # the gate never opened: only a signal can have ended it
    info = d.info(target)
    assert info["signal"] == 15, info  # SIGTERM from the KILL, not a natural end
    assert info["exit_code"] is None


def test_a_time_limit_of_a_month_is_kept(daemon: Daemon, gate: Callable[[str], Gate]) -> None:
    """A limit longer than epoll can wait for in one call (24.8 days) must not stop the
    keeper that runs the job."""
    g = gate("g")
    long = daemon.submit(SH + g.wait, time="30d")
    job_pid(daemon, long)  # its keeper has told of the start: next it waits for the limit
    for _ in range(2):  # spawns go round the keepers: one of these to the same keeper
        daemon.wait_state(daemon.submit(SH + "exit 0\n"), "S")
    g.open()
    daemon.wait_state(long, "S")
    assert daemon.info(long)["time_limit"] == 30 * 86400
