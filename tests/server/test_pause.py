"""PAUSE and RESUME with a real daemon: nothing starts while paused, armed tokens included;
running jobs carry on; the pause survives a restart; PING's core reply is unchanged."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from support import SH, Daemon, Gate, Raw


def queue(d: Daemon) -> dict[str, object]:
    with Raw(d.socket) as c:
        c.send(b"QUEUE\n")
        doc = json.loads(c.data())
    assert isinstance(doc, dict)
    return doc


def test_pause_stops_starts_but_not_running_jobs(daemon: Daemon, gate: Callable[..., Gate]) -> None:
    g = gate()
    first = daemon.submit(SH + g.wait + "echo first\n", procs=2)
    daemon.wait_state(first, "R")
    # The one running job's keeper is armed with the next job: PAUSE must take that back.
    second = daemon.submit(SH + "echo second\n", procs=2)
    assert daemon.req("PAUSE") == b"OK\r\n"
    g.open()
    daemon.wait_state(first, "S")  # a running job carries on
    # The end of `first` has been handled (a turn, with its pass) and nothing started.
    assert daemon.state(second) == "Q"
    third = daemon.submit(SH + "echo third\n")  # new jobs are queued
    assert daemon.state(third) == "Q"
    assert daemon.req("PING") == b"OK Q:2 S:1\r\n"  # the core reply, byte for byte
    assert not (daemon.jobs_dir / f"{second}.stdout").exists()
    assert daemon.req("RESUME") == b"OK\r\n"
    daemon.wait_state(second, "S")
    daemon.wait_state(third, "S")


def test_queue_says_whether_paused(daemon: Daemon) -> None:
    doc = queue(daemon)
    assert doc["paused"] is False
    assert doc["paused_since"] is None
    assert doc["procs"] == 2
    assert doc["mem"] == 8 * 2**30
    assert daemon.req("PAUSE") == b"OK\r\n"
    assert daemon.req("PAUSE") == b"OK\r\n"  # again: still paused, since the first
    doc = queue(daemon)
    assert doc["paused"] is True
    assert isinstance(doc["paused_since"], float)
    assert daemon.req("RESUME") == b"OK\r\n"
    assert queue(daemon)["paused"] is False
    for verb in ("PAUSE", "RESUME", "QUEUE"):
        assert (
            daemon.req(f"{verb} now") == f"ERROR {verb} takes no argument, got 'now'\r\n".encode()
        )


def test_the_pause_survives_a_restart(daemon: Daemon) -> None:
    assert daemon.req("PAUSE") == b"OK\r\n"
    since = queue(daemon)["paused_since"]
    job = daemon.submit(SH + "echo hi\n")
    daemon.stop()
    daemon.start()
    doc = queue(daemon)
    assert doc["paused"] is True
    assert doc["paused_since"] == since
    assert daemon.state(job) == "Q"
    daemon.req("RESUME")
    daemon.wait_state(job, "S")
    daemon.stop()
    daemon.start()
    assert queue(daemon)["paused"] is False


def test_a_paused_daemon_with_only_queued_jobs_goes_idle(
    daemon_factory: Callable[..., Daemon], tmp_path: Path
) -> None:
    d = daemon_factory(autoshutdown="T", waittime="0.2").start()
    d.req("PAUSE")
    job = d.submit(SH + "echo hi\n")
    assert d.proc is not None
    d.proc.wait(15)  # it exits by itself: nothing can start before a RESUME
    d.start()
    assert queue(d)["paused"] is True
    assert d.state(job) == "Q"
    d.req("RESUME")
    d.wait_state(job, "S")
