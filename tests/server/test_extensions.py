"""The additive verbs and options beyond the 2014 protocol, through a real daemon, and the
corner cases of WAIT, SHUTDOWN and large or truncated requests."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable

from support import SH, Daemon, Gate, Raw, exited, read_when, states, wait_for


def test_time_limit_ends_a_job_in_f(shared_daemon: Daemon) -> None:
    d = shared_daemon
    quick = d.submit(SH + "echo quick\n", time="30")
    slow = d.submit(SH + "sleep 30\n", time="0.5")
    d.wait_state(quick, "S")
    d.wait_state(slow, "F")
    info = d.info(slow)
    assert (info["reason"], info["time_limit"]) == ("time limit", 0.5)
    assert info["ended"] - info["started"] < 5


def test_higher_priority_starts_first_among_jobs_that_fit(
    daemon_factory: Callable[..., Daemon], gate: Callable[[str], Gate]
) -> None:
    d = daemon_factory(maxprocs="1").start()
    g = gate("g")
    order = d.jobs_dir / "order"
    rec = SH + f'echo "$SJQ_JOBID" >> {order}\n'
    blocker = d.submit(SH + g.wait)
    d.wait_state(blocker, "R")
    low = d.submit(rec)
    high = d.submit(rec, priority="10")
    neg = d.submit(rec, priority="-5")
    same = d.submit(rec)
    g.open()
    d.wait_state(neg, "S")
    assert order.read_text().split() == [str(j) for j in (high, low, same, neg)]


def test_setenv_keeps_commas(shared_daemon: Daemon) -> None:
    d = shared_daemon
    script = "#!/usr/bin/env python3\nimport json, os\nprint(json.dumps(dict(os.environ)))\n"
    with Raw(d.socket) as c:
        body = script.encode()
        c.send(
            b"SUBMIT\nCWD %s\nSETENV LIST=a,B=c\nENV X=1,Y=2\nSRC %d\n%b"
            % (str(d.jobs_dir).encode(), len(body), body)
        )
        jid = int(c.line()[3:])
    d.wait_state(jid, "S")
    env = json.loads((d.jobs_dir / f"{jid}.stdout").read_text())
    assert (env["LIST"], env["X"], env["Y"]) == ("a,B=c", "1", "2")
    assert "B" not in env


def test_wait_of_a_client_that_went_away_is_dropped(
    daemon: Daemon, gate: Callable[[str], Gate]
) -> None:
    g = gate("g")
    jid = daemon.submit(SH + g.wait)
    with daemon.client() as c:
        c.send(f"PING\nWAIT {jid}\n".encode())
        c.line()
    g.open()
    daemon.wait_state(jid, "S")
    with daemon.client() as c:
        assert c.request(f"WAIT {jid}") == f"OK {jid}:S\r\n".encode()


def test_wait_is_answered_when_shutdown_kills_the_job(
    daemon_factory: Callable[..., Daemon], gate: Callable[[str], Gate]
) -> None:
    d = daemon_factory().start()
    g = gate("never")
    jid = d.submit(SH + g.wait)
    d.wait_state(jid, "R")
    with d.client() as waiter:
        waiter.send(f"PING\nWAIT {jid}\n".encode())
        waiter.line()
        assert d.req("SHUTDOWN") == b"OK\r\n"
        assert waiter.line() == f"OK {jid}:K\r\n".encode()
        assert wait_for(waiter.closed, what="the waiting connection to close")
    assert exited(d) == 0


def test_exit_behind_a_pending_wait_waits_its_turn(
    daemon: Daemon, gate: Callable[[str], Gate]
) -> None:
    g = gate("g")
    jid = daemon.submit(SH + g.wait)
    with daemon.client() as c:
        c.send(f"WAIT {jid}\nEXIT\n".encode())
        assert daemon.state(jid) == "R"
        g.open()
        assert c.line() == f"OK {jid}:S\r\n".encode()
        assert c.line() == b"OK BYE\r\n"
        assert wait_for(c.closed, what="the connection to close")


def test_large_script_body(daemon: Daemon) -> None:
    filler = ("# " + "x" * 1000 + "\n") * 2048  # 2 MiB of comment lines, each over 1 KiB
    jid = daemon.submit(SH + filler + "echo big\n")
    daemon.wait_state(jid, "S")
    assert (daemon.jobs_dir / f"{jid}.stdout").read_text() == "big\n"


def test_body_lines_are_not_limited_by_maxline(shared_daemon: Daemon) -> None:
    d = shared_daemon  # sjq.maxline=1K, sjq.maxsrc=4K
    long_line = "echo " + "y" * 2000 + "\n"
    jid = d.submit(SH + long_line)
    d.wait_state(jid, "S")
    assert read_when(d.jobs_dir / f"{jid}.stdout") == "y" * 2000 + "\n"


def test_a_submit_cut_short_creates_no_job(daemon: Daemon) -> None:
    with daemon.client() as c:
        c.send(b"SUBMIT\nNAME cut\nSRC 100\n#!/bin/sh\necho partial\n")
        c.sock.shutdown(socket.SHUT_WR)
        assert wait_for(c.closed, what="the connection to close")
        assert c.buf == b""
    assert states(daemon) == {}
    assert daemon.submit(SH, hold=True) == 1  # no id was used
