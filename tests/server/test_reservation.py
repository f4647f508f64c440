"""No starvation, with a real daemon: a job that asks for both CPUs of two, submitted before a
stream of one-CPU jobs, starts within its bound: by its reservation when the running jobs have
a TIME, else by sjq.maxbypass plus what the jobs running then take to end. INFO waiting_for
says why each job waits."""

from __future__ import annotations

import re
from collections.abc import Callable

from support import SH, Daemon, Gate, wait_for

TOLERANCE = 1.0  # seconds for the daemon to see an end and start the next job, under load


def test_without_time_limits_the_stream_stops_after_maxbypass(
    daemon_factory: Callable[..., Daemon], gate: Callable[..., Gate]
) -> None:
    maxbypass = 1.0
    d = daemon_factory(maxbypass=f"{maxbypass}s").start()
    a_gate = gate("a")
    a = d.submit(SH + a_gate.wait)  # one CPU, no TIME: no reservation can be computed
    d.wait_state(a, "R")
    big = d.submit(SH + "true\n", procs=2)
    stream = [d.submit(SH + "sleep 0.2\n") for _ in range(40)]
    # One CPU is free: stream jobs pass the big one until it has waited sjq.maxbypass ...
    wait_for(
        lambda: "no job starts before it (waited sjq.maxbypass)" in d.info(big)["waiting_for"],
        what="the big job to have waited sjq.maxbypass",
    )
    assert d.info(a)["waiting_for"] == ""  # running
    # ... then the machine drains for it: once the stream job running then has ended,
    # nothing more starts while the big job waits.
    wait_for(lambda: all(d.state(i) in "QS" for i in stream), what="the drain")
    queued = [i for i in stream if d.state(i) == "Q"]
    assert queued, "the whole stream ran past the big job"
    assert d.info(queued[0])["waiting_for"] == "job " + str(big) + ", which has a reservation"
    a_gate.open()
    d.wait_state(big, "RS")
    info = {i: d.info(i) for i in (a, big, *stream)}
    since, started = info[big]["submitted"], info[big]["started"]
    before = [i for i in stream if info[i]["started"] is not None and info[i]["started"] < started]
    assert before, "nothing passed the big job before sjq.maxbypass"
    for i in before:
        assert info[i]["started"] < since + maxbypass + TOLERANCE
    ends = [info[a]["ended"], *(info[i]["ended"] for i in before)]
    assert started <= max(ends) + TOLERANCE, "it started within its bound"
    for i in stream:
        d.wait_state(i, "S", timeout=30)


def test_with_time_limits_only_jobs_that_end_in_time_pass(
    daemon: Daemon, gate: Callable[..., Gate]
) -> None:
    a_gate = gate("a")
    a = daemon.submit(SH + a_gate.wait, time="1h")
    daemon.wait_state(a, "R")
    big = daemon.submit(SH + "true\n", procs=2)
    info = daemon.info(big)
    reserved = info["reservation"]
    started_a = daemon.info(a)["started"]
    assert reserved == started_a + 3600 + 2  # TIME + sjq.killgrace (2 s in the tests)
    assert re.fullmatch(
        r"2 CPUs; reserved from (\d{4}-\d\d-\d\d )?\d\d:\d\d:\d\d", info["waiting_for"]
    )
    too_long = daemon.submit(SH + "true\n", time="2h")  # would run past the reservation
    no_limit = daemon.submit(SH + "true\n")  # might
    short = daemon.submit(SH + "true\n", time="10m")  # ends well before it
    daemon.wait_state(short, "S")
    # The passes that started `short` saw the other two: they wait for the big job.
    assert daemon.state(too_long) == "Q"
    assert daemon.state(no_limit) == "Q"
    assert daemon.info(too_long)["waiting_for"] == f"job {big}, which has a reservation"
    a_gate.open()
    daemon.wait_state(big, "S")
    assert daemon.info(big)["started"] <= reserved
    for i in (too_long, no_limit):
        daemon.wait_state(i, "S")


def test_waiting_for(daemon: Daemon, gate: Callable[..., Gate]) -> None:
    g = gate()
    runner = daemon.submit(SH + g.wait, procs=2)
    daemon.wait_state(runner, "R")
    queued = daemon.submit(SH + "true\n")
    held = daemon.submit(SH + "true\n", hold=True)
    child = daemon.submit(SH + "true\n", depends=f"{runner}:{held}")
    assert daemon.info(queued)["waiting_for"] == "1 CPU; later jobs pass it until " + _hhmmss(
        daemon.info(queued)["submitted"] + 600
    )
    assert daemon.info(held)["waiting_for"] == "held"
    assert daemon.info(child)["waiting_for"] == f"job {runner} (and 1 more)"
    assert daemon.info(runner)["waiting_for"] == ""
    assert daemon.info(runner)["reservation"] is None
    daemon.req("PAUSE")
    assert daemon.info(queued)["waiting_for"] == "paused"
    daemon.req("RESUME")
    g.open()
    daemon.wait_state(queued, "S")
    assert daemon.info(queued)["waiting_for"] == ""


def _hhmmss(t: float) -> str:
    import time

    return time.strftime("%H:%M:%S", time.localtime(t))
