"""RETRY and RETRYMEM with a real daemon: a failed attempt goes back to Q with its id, F is
only ever the last attempt's, WAIT and dependents see one final state, and a job that ran out
of memory is started again with more."""

from __future__ import annotations

import sys
from collections.abc import Callable

import pytest
from support import SH, Daemon, Gate, Raw, recorded_states

from .test_containment import ended

MB = 1 << 20


def counting(d: Daemon, succeed_at: int) -> str:
    """A job that counts its attempts in a file and succeeds at attempt ``succeed_at``."""
    count = d.jobs_dir / "count"
    return (
        SH + f'n=$(cat "{count}" 2>/dev/null || echo 0); n=$((n + 1)); echo $n > "{count}"\n'
        f'[ "$n" -ge {succeed_at} ]\n'
    )


def test_a_failed_attempt_goes_back_to_the_queue_and_the_job_succeeds(
    daemon_factory: Callable[..., Daemon],
) -> None:
    d = daemon_factory().start()
    jid = d.submit(counting(d, 3), retry="2")
    with Raw(d.socket) as c:
        assert c.request(f"WAIT {jid}") == f"OK {jid}:S\r\n".encode()  # one final state
    info = d.info(jid)
    assert (info["state"], info["attempts"], info["exit_code"], info["reason"]) == ("S", 3, 0, "")
    assert recorded_states(d, jid) == "QRQRQRS"


def test_each_attempt_runs_from_a_script_file_of_its_own(
    daemon_factory: Callable[..., Daemon],
) -> None:
    """The keeper removes an ended attempt's script file in the background: a retry started
    from the same file name could lose its script to that removal before it executes
    ("cannot execute the script ...: No such file or directory")."""
    d = daemon_factory().start()
    paths = d.jobs_dir / "paths"
    jid = d.submit(SH + f'echo "$0" >> "{paths}"\n' + counting(d, 3)[len(SH) :], retry="2")
    assert ended(d, jid)["state"] == "S"
    seen = paths.read_text().split()
    assert len(seen) == 3, seen
    assert len(set(seen)) == 3, seen


def test_the_last_attempt_ends_in_f_with_its_own_reason(
    daemon_factory: Callable[..., Daemon],
) -> None:
    d = daemon_factory().start()
    jid = d.submit(counting(d, 99), retry="1")
    info = ended(d, jid)
    assert (info["state"], info["attempts"], info["reason"]) == ("F", 2, "exit status 1")
    assert recorded_states(d, jid) == "QRQRF"


def test_dependents_wait_for_the_final_state(daemon_factory: Callable[..., Daemon]) -> None:
    d = daemon_factory(maxprocs="1").start()
    jid = d.submit(counting(d, 2), retry="1")
    child = d.submit(SH + "true\n", depends=str(jid))
    doomed = d.submit(SH + "true\n", dependency=f"afternotok:{jid}")
    assert ended(d, child)["state"] == "S"
    assert d.info(jid)["attempts"] == 2
    assert ended(d, doomed)["state"] == "A"  # its parent never ended badly


def test_a_job_out_of_memory_is_retried_with_more(daemon_factory: Callable[..., Daemon]) -> None:
    d = daemon_factory(enforce="watch", maxmem="500M").start()
    script = (
        f"#!{sys.executable}\nimport time\n"
        "b = bytearray(150 * 2**20)\nb[::4096] = b'x' * len(b[::4096])\ntime.sleep(1.5)\n"
    )
    jid = d.submit(script, mem="100M", retry="2", retrymem="2")
    info = ended(d, jid, timeout=60)
    assert (info["state"], info["attempts"], info["mem"]) == ("S", 2, 200 * MB), info
    assert info["maxrss"] >= 150 * MB


def test_more_memory_stops_at_maxmem(daemon_factory: Callable[..., Daemon]) -> None:
    d = daemon_factory(enforce="watch", maxmem="180M").start()
    script = (
        f"#!{sys.executable}\nimport time\n"
        "b = bytearray(300 * 2**20)\nb[::4096] = b'x' * len(b[::4096])\ntime.sleep(30)\n"
    )
    jid = d.submit(script, mem="100M", retry="1", retrymem="3")
    info = ended(d, jid, timeout=60)
    assert (info["state"], info["attempts"], info["mem"]) == ("F", 2, 180 * MB), info
    assert str(info["reason"]).startswith("out of memory (limit 180M, peak ")


def test_a_retry_says_why_while_the_job_waits(
    daemon_factory: Callable[..., Daemon], gate: Callable[[str], Gate]
) -> None:
    d = daemon_factory(maxprocs="1").start()
    first, blocker = gate("first"), gate("blocker")
    jid = d.submit(SH + first.wait + "exit 3\n", retry="1")
    d.wait_state(jid, "R")
    other = d.submit(SH + blocker.wait, priority="10")  # goes first once the CPU is free
    first.open()
    d.wait_state(other, "R")
    info = d.info(jid)
    assert (info["state"], info["attempts"]) == ("Q", 1), info
    assert info["reason"] == "attempt 1 of 2 failed: exit status 3; started again"
    blocker.open()
    info = ended(d, jid)
    assert (info["state"], info["attempts"], info["reason"]) == ("F", 2, "exit status 3")


def test_a_killed_job_is_not_retried(daemon_factory: Callable[..., Daemon]) -> None:
    d = daemon_factory().start()
    jid = d.submit(SH + "sleep 60\n", retry="3")
    d.wait_state(jid, "R")
    d.req(f"KILL {jid}")
    info = ended(d, jid)
    assert (info["state"], info["attempts"]) == ("K", 1)


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("retry", "-1", "RETRY must be a whole number >= 0, got '-1'"),
        ("retry", "two", "RETRY must be a whole number >= 0, got 'two'"),
        ("retrymem", "0.5", "RETRYMEM must be a number from 1 to 1000, e.g. 2 or 1.5, got '0.5'"),
        ("retrymem", "x", "RETRYMEM must be a number from 1 to 1000, e.g. 2 or 1.5, got 'x'"),
    ],
)
def test_bad_retry_options_are_refused(
    shared_daemon: Daemon, option: str, value: str, message: str
) -> None:
    with Raw(shared_daemon.socket) as c:
        reply = c.submit(SH, **{option: value, "cwd": str(shared_daemon.jobs_dir)})
    assert reply == f"ERROR {message}\r\n".encode()
