"""DEPENDENCY (Slurm's kinds) with a real daemon: each kind, combinations and ranges, jobs
whose condition can never hold, refusals, INFO and STATUS, and a restart."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from support import SH, Daemon, Gate, Raw, status

OK_JOB = SH + "true\n"
FAILING = SH + "exit 3\n"


def test_afterany_and_afternotok_run_after_a_failure_afterok_is_aborted(
    daemon: Daemon, gate: Callable[..., Gate]
) -> None:
    g = gate()
    parent = daemon.submit(SH + g.wait + "exit 3\n")
    anyway = daemon.submit(OK_JOB, dependency=f"afterany:{parent}")
    on_failure = daemon.submit(OK_JOB, dependency=f"afternotok:{parent}")
    on_success = daemon.submit(OK_JOB, dependency=f"afterok:{parent}")
    for jid in (anyway, on_failure, on_success):
        assert daemon.state(jid) == "H"
    g.open()
    assert daemon.wait_state(anyway, "SFAKE") == "S"
    assert daemon.wait_state(on_failure, "SFAKE") == "S"
    assert daemon.wait_state(on_success, "SFAKE") == "A"
    assert daemon.info(on_success)["reason"] == f"dependency {parent} ended in F"


def test_afternotok_of_a_success_is_aborted_naming_the_job(daemon: Daemon) -> None:
    parent = daemon.submit(OK_JOB)
    daemon.wait_state(parent, "S")
    # the condition can never hold: aborted at SUBMIT
    child = daemon.submit(OK_JOB, dependency=f"afternotok:{parent}")
    assert daemon.state(child) == "A"
    assert daemon.info(child)["reason"] == f"dependency {parent} ended in S (afternotok)"
    both = daemon.submit(OK_JOB, dependency=f"afterok:{parent},afternotok:{parent}")
    assert daemon.state(both) == "A"
    assert "afterok and afternotok cannot both hold" in daemon.info(both)["reason"]


def test_after_waits_for_the_start_only(daemon: Daemon, gate: Callable[..., Gate]) -> None:
    hold = gate("first")
    g = gate()
    blocker = daemon.submit(SH + hold.wait, procs=2)  # keeps the parent queued for a while
    parent = daemon.submit(SH + g.wait)
    child = daemon.submit(SH + "echo started\n", dependency=f"after:{parent}")
    daemon.wait_state(blocker, "R")
    assert daemon.state(child) == "H"
    hold.open()
    daemon.wait_state(parent, "R")
    daemon.wait_state(child, "S")  # while its parent still runs
    assert daemon.state(parent) == "R"
    g.open()
    daemon.wait_state(parent, "S")


def test_every_condition_must_hold_and_ranges_name_each_job(
    daemon: Daemon, gate: Callable[..., Gate]
) -> None:
    ga, gb = gate("a"), gate("b")
    first = daemon.submit(SH + ga.wait)
    second = daemon.submit(SH + gb.wait)
    third = daemon.submit(OK_JOB, hold=True)
    child = daemon.submit(OK_JOB, dependency=f"afterok:{first}-{second},afterany:{third}")
    ga.open()
    daemon.wait_state(first, "S")
    gb.open()
    daemon.wait_state(second, "S")
    assert daemon.state(child) == "H"  # afterany:third has not happened
    daemon.req(f"KILL {third}")
    assert daemon.wait_state(child, "SFAKE") == "S"  # killed is ended
    info = daemon.info(child)
    assert info["dependency"] == f"afterok:{first}-{second},afterany:{third}"
    assert info["depends"] == []


def test_depends_and_dependency_together(daemon: Daemon) -> None:
    a = daemon.submit(OK_JOB, hold=True)
    b = daemon.submit(OK_JOB, hold=True)
    child = daemon.submit(OK_JOB, depends=str(a), dependency=f"afterany:{b}")
    assert status(daemon, str(child)) == f"{child}\tsjqjob\tH\t{a}\r\n".encode()  # DEPS: DEPENDS
    assert daemon.info(child)["dependency"] == f"afterok:{a},afterany:{b}"
    daemon.req(f"RELEASE {a}")
    daemon.wait_state(a, "S")
    assert daemon.state(child) == "H"
    daemon.req(f"RELEASE {b}")
    daemon.wait_state(child, "S")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("singleton", "DEPENDENCY: singleton (one job of a name at a time) is Slurm's; sjq"),
        ("afterok:1?afterany:1", "DEPENDENCY: '?' (any one of) is not supported"),
        ("aftercorr:1", "DEPENDENCY: aftercorr (element by element of two arrays) is Slurm's"),
        ("after:1+10", "DEPENDENCY: '1+10': a delay after the start (+minutes) is not supported"),
        ("afterok:1_5", "DEPENDENCY: '1_5' is Slurm's array element syntax"),
        ("afterfoo:1", "DEPENDENCY: unknown kind 'afterfoo'"),
        ("afterok:", "DEPENDENCY: 'afterok:' names no job"),
        ("afterok:5-2", "DEPENDENCY: id range '5-2' goes down"),
        ("afterok:9999", "DEPENDENCY: there is no job 9999"),
        ("afterany:9990-9999", "DEPENDENCY: there is no job 9990 (nor 9 more of the ids named)"),
    ],
)
def test_refusals(shared_daemon: Daemon, value: str, message: str) -> None:
    with Raw(shared_daemon.socket) as c:
        reply = c.submit(OK_JOB, dependency=value, cwd=str(shared_daemon.jobs_dir))
    assert reply.startswith(b"ERROR " + message.encode()), reply


def test_conditions_survive_a_restart(daemon: Daemon, gate: Callable[..., Gate]) -> None:
    g = gate()
    parent = daemon.submit(SH + g.wait + "exit 1\n")
    daemon.wait_state(parent, "R")
    on_failure = daemon.submit(OK_JOB, dependency=f"afternotok:{parent}")
    started = daemon.submit(OK_JOB, dependency=f"after:{parent}")
    daemon.wait_state(started, "S")
    assert daemon.req("STOP") == b"OK\r\n"  # the parent keeps running
    assert daemon.proc is not None
    daemon.proc.wait(15)
    daemon.start()
    assert daemon.state(on_failure) == "H"
    assert daemon.info(on_failure)["dependency"] == f"afternotok:{parent}"
    g.open()
    assert daemon.wait_state(on_failure, "SFAKE") == "S"
