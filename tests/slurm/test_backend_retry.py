"""RETRY and RETRYMEM under sjq.backend = slurm, against the real Slurm: a failed attempt goes
back to sjq's queue and is handed to Slurm again as a new Slurm job under a tag of its own
(``sjq:<daemon>:<id>.<attempt>``); only the last attempt can end in F, so WAIT and dependents
see one final state; a retried array element goes alone; a daemon SIGKILLed around retries
neither submits an attempt twice nor takes an earlier attempt's end for the current one's."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable

import pytest
from support import Daemon, Gate, Raw, recorded_states, wait_for

from sjq.slurm.args import parse_attempt_tag, parse_batch_tag

from .cluster import Cluster
from .test_backend import HOG, WAIT, daemon_id, slurm_daemon
from .test_backend_arrays import submit as submit_array

MB = 1 << 20


def counting(d: Daemon, succeed_at: int, then: str = "", before: str = "") -> str:
    """A job that counts its attempts (a file per sjq job), writes each attempt's Slurm id to
    a ledger, runs ``before`` and fails until attempt ``succeed_at``; ``then`` runs after a
    success."""
    base = d.jobs_dir
    return (
        f'#!/bin/sh\nc="{base}/count.$SJQ_JOBID"\n'
        'n=$(cat "$c" 2>/dev/null || echo 0); n=$((n + 1)); echo $n > "$c"\n'
        f'echo "$SJQ_JOBID $n $SLURM_JOB_ID" >> "{base}/ledger"\n{before}'
        f'[ "$n" -ge {succeed_at} ] || exit 1\n{then}'
    )


def ledger(d: Daemon) -> dict[int, list[tuple[int, str]]]:
    """sjq job -> the (attempt, Slurm id) of every attempt that ran, in order."""
    path = d.jobs_dir / "ledger"
    out: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for line in path.read_text().splitlines() if path.exists() else []:
        jobid, n, slurm_id = line.split()
        out[int(jobid)].append((int(n), slurm_id))
    return out


def attempt_tags(cluster: Cluster, d: Daemon) -> dict[str, list[str]]:
    """Every Slurm job of ``d``'s that slurmctld still knows: tag -> its Slurm ids (tasks of an
    array batch: the batch's tag, once per task)."""
    ident = daemon_id(d)
    out = cluster.command("squeue", "-h", "-t", "all", "-r", "-O", "JobID:|,Comment:\x1e")
    found: dict[str, list[str]] = defaultdict(list)
    for rec in out.split("\x1e"):
        slurm_id, _, comment = rec.strip().partition("|")
        comment = comment.strip()
        tag = parse_attempt_tag(comment) or parse_batch_tag(comment)
        if tag is not None and tag[0] == ident:
            found[comment].append(slurm_id.strip())
    return found


def test_failed_attempts_go_to_slurm_again_until_one_succeeds(
    slurm: Cluster, daemon_factory: Callable[..., Daemon]
) -> None:
    d = slurm_daemon(daemon_factory).start()
    jid = d.submit(counting(d, 3), retry="2")
    with Raw(d.socket) as c:
        assert c.request(f"WAIT {jid}") == f"OK {jid}:S\r\n".encode()  # one final state
    info = d.info(jid)
    assert (info["state"], info["attempts"], info["exit_code"], info["reason"]) == ("S", 3, 0, "")
    ran = ledger(d)[jid]
    assert [n for n, _ in ran] == [1, 2, 3]  # each attempt once
    slurm_ids = [s for _, s in ran]
    assert len(set(slurm_ids)) == 3  # three Slurm jobs
    assert info["backend_id"] == slurm_ids[-1]
    ident = daemon_id(d)
    assert attempt_tags(slurm, d) == {
        f"sjq:{ident}:{jid}": [slurm_ids[0]],
        f"sjq:{ident}:{jid}.2": [slurm_ids[1]],
        f"sjq:{ident}:{jid}.3": [slurm_ids[2]],
    }
    assert recorded_states(d, jid) == "QRQRQRS"  # never F in between


def test_the_last_failure_ends_in_f_once_and_its_dependents_are_aborted(
    slurm: Cluster, daemon_factory: Callable[..., Daemon]
) -> None:
    d = slurm_daemon(daemon_factory).start()
    jid = d.submit(counting(d, 99), retry="2")
    child = d.submit("#!/bin/sh\ntrue\n", dependency=f"afterok:{jid}")
    rescue = d.submit("#!/bin/sh\ntrue\n", dependency=f"afternotok:{jid}")
    with Raw(d.socket) as c:
        assert c.request(f"WAIT {jid}") == f"OK {jid}:F\r\n".encode()
    info = d.info(jid)
    assert (info["state"], info["attempts"], info["reason"]) == ("F", 3, "exit status 1")
    assert d.wait_state(child, "SFAKE", WAIT) == "A"
    assert d.wait_state(rescue, "SFAKE", WAIT) == "S"
    assert [n for n, _ in ledger(d)[jid]] == [1, 2, 3]
    assert len({s for _, s in ledger(d)[jid]}) == 3
    assert recorded_states(d, jid) == "QRQRQRF"


def test_a_retry_says_why_while_its_next_attempt_runs(
    slurm: Cluster, daemon_factory: Callable[..., Daemon], gate: Callable[[str], Gate]
) -> None:
    d = slurm_daemon(daemon_factory).start()
    g = gate("g")
    jid = d.submit(counting(d, 2, then=g.wait), retry="1")
    wait_for(lambda: len(ledger(d)[jid]) == 2, WAIT, "the second attempt to run")
    wait_for(lambda: d.state(jid) == "R", WAIT, "sjq to see the second attempt run")
    info = d.info(jid)
    assert info["attempts"] == 2
    assert info["reason"] == "attempt 1 of 2 failed: exit status 1; started again"
    assert info["backend_id"] == ledger(d)[jid][1][1]
    g.open()
    assert d.wait_state(jid, "SFAKE", WAIT) == "S"
    assert d.info(jid)["reason"] == ""


def test_a_killed_job_is_not_retried(
    slurm: Cluster, daemon_factory: Callable[..., Daemon], gate: Callable[[str], Gate]
) -> None:
    d = slurm_daemon(daemon_factory).start()
    g = gate("never")
    jid = d.submit(f"#!/bin/sh\n{g.wait}", retry="3")
    d.wait_state(jid, "R", WAIT)
    assert d.req(f"KILL {jid}") == b"OK\r\n"
    assert d.wait_state(jid, "SFAKE", WAIT) == "K"
    assert d.info(jid)["attempts"] == 1
    assert len(attempt_tags(slurm, d)) == 1


def test_a_retried_array_element_goes_to_slurm_alone(
    slurm: Cluster, daemon_factory: Callable[..., Daemon]
) -> None:
    d = slurm_daemon(daemon_factory).start()
    script = counting(d, 1).replace(
        '[ "$n" -ge 1 ]', '[ "$SJQ_ARRAY_INDEX" != 2 ] || [ "$n" -ge 2 ]'
    )
    elements = submit_array(d, script, array="1-3", retry="1")
    for jobid in elements:
        assert d.wait_state(jobid, "SFAKE", WAIT) == "S", d.info(jobid)
    assert [d.info(j)["attempts"] for j in elements] == [1, 2, 1]
    ident = daemon_id(d)
    tags = attempt_tags(slurm, d)
    batch = [t for t in tags if parse_batch_tag(t) is not None]
    assert len(batch) == 1
    assert len(tags[batch[0]]) == 3  # the first attempts: one sbatch --array
    retried = tags[f"sjq:{ident}:{elements[1]}.2"]
    assert len(retried) == 1
    assert "_" not in retried[0]  # a job of its own, no array task
    assert d.info(elements[1])["backend_id"] == retried[0]
    assert len(tags) == 2


def test_retrymem_raises_mem_after_slurms_out_of_memory(
    slurm_cgroup: Cluster, daemon_factory: Callable[..., Daemon]
) -> None:
    d = slurm_daemon(daemon_factory).start()
    jid = d.submit(HOG, mem="100M", retry="1", retrymem="4")
    assert d.wait_state(jid, "SFAKE", WAIT) == "S", d.info(jid)
    info = d.info(jid)
    assert (info["attempts"], info["mem"]) == (2, 400 * MB)
    shown = slurm_cgroup.command("scontrol", "show", "job", info["backend_id"])
    assert "mem=400M" in shown, shown


def test_retrymem_stops_at_maxmem(
    slurm_cgroup: Cluster, daemon_factory: Callable[..., Daemon]
) -> None:
    d = slurm_daemon(daemon_factory, maxmem="250M").start()
    jid = d.submit(HOG, mem="100M", retry="1", retrymem="4")
    assert d.wait_state(jid, "SFAKE", WAIT) == "F", d.info(jid)
    info = d.info(jid)
    assert (info["attempts"], info["mem"], info["reason"]) == (2, 250 * MB, "out of memory")


@pytest.mark.timeout(180)
def test_sigkill_around_retries_submits_no_attempt_twice(
    slurm: Cluster, daemon_factory: Callable[..., Daemon]
) -> None:
    rng = random.Random(1416)
    d = slurm_daemon(daemon_factory).start()
    failures: dict[int, int] = {}
    for i in range(12):
        k = rng.choice([0, 1, 2, 2, 3])  # failures before a success; 3: RETRY 2 is not enough
        nap = rng.choice(["0", "0.2", "0.5"])
        jid = d.submit(counting(d, k + 1, before=f"sleep {nap}\n"), retry="2")
        failures[jid] = k
        if i in (3, 8):  # SIGKILL (sbatch commands may be under way) and restart
            d.kill9()
            d.start()

    def ran(attempt: int) -> bool:
        return any(n >= attempt for runs in ledger(d).values() for n, _ in runs)

    wait_for(lambda: ran(2), WAIT, "a second attempt to run")
    d.kill9()  # and while jobs are being retried
    d.start()
    wait_for(lambda: ran(3), WAIT, "a third attempt to run")
    d.kill9()
    d.start()
    for jid in failures:
        d.wait_state(jid, "SFAKE", 120)
    ident = daemon_id(d)
    tags = attempt_tags(slurm, d)
    runs = ledger(d)
    for jid, k in failures.items():
        attempts = min(k + 1, 3)
        info = d.info(jid)
        assert (info["state"], info["attempts"]) == ("S" if k < 3 else "F", attempts), info
        assert [n for n, _ in runs[jid]] == list(range(1, attempts + 1))  # each attempt once
        for n, slurm_id in runs[jid]:
            tag = f"sjq:{ident}:{jid}" + (f".{n}" if n > 1 else "")
            assert tags[tag] == [slurm_id], (tag, tags)  # submitted once, and it ran
    assert len(tags) == sum(min(k + 1, 3) for k in failures.values())


@pytest.mark.timeout(120)
def test_a_restarted_daemon_does_not_take_the_last_attempts_end_for_the_next(
    slurm: Cluster, daemon_factory: Callable[..., Daemon], gate: Callable[[str], Gate]
) -> None:
    """Attempt 2 is recorded as handed to Slurm, but whether sbatch took it is unknown (the
    controller was down) when the daemon dies. The restarted daemon finds attempt 1's FAILED
    record under the job's plain tag in squeue: that is not attempt 2, which is proven absent
    and submitted, once."""
    d = slurm_daemon(daemon_factory).start()
    g = gate("g")
    jid = d.submit(counting(d, 2, before=g.wait), retry="2")
    d.wait_state(jid, "R", WAIT)
    assert d.req("PAUSE") == b"OK\r\n"  # its next attempt is not handed over yet
    g.open()
    wait_for(lambda: d.info(jid)["reason"].startswith("attempt 1 of 3 failed"), WAIT, "a retry")
    with slurm.controller_stopped():
        assert d.req("RESUME") == b"OK\r\n"
        wait_for(lambda: f"job {jid}: sbatch failed" in d.log, 60, "sbatch to fail")
        assert (d.state(jid), d.info(jid)["attempts"]) == ("Q", 2)
        d.kill9()
    d.start()
    assert d.wait_state(jid, "SFAKE", 60) == "S", d.info(jid)
    info = d.info(jid)
    assert info["attempts"] == 2
    runs = ledger(d)[jid]
    assert [n for n, _ in runs] == [1, 2]
    ident = daemon_id(d)
    assert attempt_tags(slurm, d) == {
        f"sjq:{ident}:{jid}": [runs[0][1]],
        f"sjq:{ident}:{jid}.2": [runs[1][1]],
    }
