"""The Slurm command layer against a real single-node Slurm: jobs run, fail, are cancelled,
held and released; arrays, dependencies, impossible requests, a stopped controller, finding a
forgotten job by its tag, and the accounting path through slurmdbd."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from pathlib import Path

import pytest
from support import Gate, wait_for

from sjq.protocol import JobState
from sjq.slurm.args import Pattern, SbatchRequest, make_tag, parse_tag
from sjq.slurm.commands import Slurm, locate
from sjq.slurm.errors import (
    AccountingDisabled,
    SlurmConfigError,
    SlurmNotInstalled,
    SlurmRejected,
    SlurmUnavailable,
)
from sjq.slurm.parse import SlurmJob
from sjq.slurm.states import progress

from .cluster import NODE_CPUS, Cluster

ENV = {"PATH": "/usr/bin:/bin"}
WAIT = 30.0  # seconds for a job to reach a state; a trivial job needs about 1 s here
# What slurmstepd adds to a job's environment besides SLURM_* (seen on 22.05).
SLURM_ADDS = {"ENVIRONMENT", "HOSTNAME", "PWD", "TMPDIR", "SLURMD_NODENAME"}


def tag() -> str:
    """A tag no other test uses."""
    return make_tag(uuid.uuid4().hex[:12], 1)


def sh(body: str) -> bytes:
    return f"#!/bin/sh\n{body}\n".encode()


def state_of(sl: Slurm, jobid: int | str) -> SlurmJob | None:
    jobs = sl.squeue([jobid]).jobs
    return jobs[0] if len(jobs) == 1 else None


def wait_state(sl: Slurm, jobid: int, *states: JobState, timeout: float = WAIT) -> SlurmJob:
    """Poll squeue until the job's sjq state is one of ``states``; the record."""

    def check() -> SlurmJob | None:
        job = state_of(sl, jobid)
        return job if job is not None and progress(job).state in states else None

    return wait_for(check, timeout, what=f"Slurm job {jobid} to reach {states}")


@pytest.fixture
def sl(slurm: Cluster) -> Slurm:
    return Slurm(env=slurm.env, timeout=20)


def test_missing_commands_refuse_to_start(tmp_path: Path) -> None:
    with pytest.raises(SlurmNotInstalled, match="no sbatch, squeue, scontrol, scancel on PATH"):
        locate(str(tmp_path))
    with pytest.raises(SlurmNotInstalled):
        Slurm(env={"PATH": str(tmp_path)})


def test_no_configuration_is_a_config_error(slurm: Cluster, tmp_path: Path) -> None:
    missing = Slurm(env={"PATH": os.environ["PATH"], "SLURM_CONF": str(tmp_path / "none.conf")})
    with pytest.raises(SlurmConfigError, match=r"SLURM_CONF names .*none\.conf"):
        missing.check()
    if Path("/etc/slurm/slurm.conf").exists():
        pytest.skip("this machine has a system-wide /etc/slurm/slurm.conf")
    none = Slurm(env={"PATH": os.environ["PATH"]})
    with pytest.raises(SlurmConfigError, match="Could not establish a configuration source"):
        none.check()
    assert Slurm(env=slurm.env).check().startswith("slurm")


def test_a_job_runs_with_its_resources_and_exactly_its_environment(
    sl: Slurm, slurm: Cluster, tmp_path: Path
) -> None:
    out = tmp_path / "out 100%.txt"  # "%" must not be read as a Slurm pattern
    t = tag()
    env = dict(ENV, GREETING="hello, world", EMPTY="", MULTI="a\nb|c")
    sub = sl.submit(
        SbatchRequest(tag=t, name="my job", procs=2, mem=100 * 2**20 + 1, time_limit=61,
                      cwd=str(tmp_path), stdout=str(out)),
        sh('echo "$GREETING"; pwd; env -0 > env.bin'),
        env,
    )  # fmt: skip
    assert sub.cluster is None
    info = slurm.command("scontrol", "show", "job", "-o", str(sub.job_id))
    for field in ("JobName=my job", "NumCPUs=2", "MinMemoryNode=101M", "TimeLimit=00:02:00",
                  f"Comment={t}"):  # fmt: skip
        assert field in info
    job = wait_state(sl, sub.job_id, JobState.SUCCESS)
    assert job.exit_code == 0
    assert job.node == slurm.node
    assert job.comment == t
    assert job.time_limit == 120  # 61 s rounded up to whole minutes
    assert job.start is not None
    assert job.end is not None
    assert job.end >= job.start
    assert out.read_text() == f"hello, world\n{tmp_path}\n"
    seen = dict(v.split("=", 1) for v in (tmp_path / "env.bin").read_text().split("\0") if v)
    mine = {k: v for k, v in seen.items() if not k.startswith("SLURM_") and k not in SLURM_ADDS}
    assert mine == env
    assert "SLURM_CONF" in seen  # slurmd tells the job where its cluster's config is


def test_output_paths_are_taken_literally(sl: Slurm, tmp_path: Path) -> None:
    names = ["a%jb%%c.out", "back\\slash%j.out", "two\\\\slashes.err"]
    jobid = sl.submit(
        SbatchRequest(tag=tag(), cwd=str(tmp_path), stdout=str(tmp_path / names[0])),
        sh("echo one"),
        ENV,
    ).job_id
    other = sl.submit(
        SbatchRequest(tag=tag(), cwd=str(tmp_path), stdout=str(tmp_path / names[1]),
                      stderr=str(tmp_path / names[2])),
        sh("echo two; echo three >&2"),
        ENV,
    ).job_id  # fmt: skip
    wait_state(sl, jobid, JobState.SUCCESS)
    wait_state(sl, other, JobState.SUCCESS)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)
    assert [(tmp_path / n).read_text() for n in names] == ["one\n", "two\n", "three\n"]


def test_exit_status_and_signal(sl: Slurm, tmp_path: Path) -> None:
    a = sl.submit(SbatchRequest(tag=tag(), cwd=str(tmp_path)), sh("exit 3"), ENV).job_id
    b = sl.submit(SbatchRequest(tag=tag(), cwd=str(tmp_path)), sh("kill -9 $$"), ENV).job_id
    ja = wait_state(sl, a, JobState.FAIL)
    assert (ja.exit_code, progress(ja).reason) == (3, "exit status 3")
    jb = wait_state(sl, b, JobState.FAIL)
    assert (jb.signal, progress(jb).reason) == (9, "killed by signal SIGKILL")


def test_a_job_slurm_cannot_launch_is_an_error(sl: Slurm, tmp_path: Path) -> None:
    req = SbatchRequest(tag=tag(), cwd=str(tmp_path), stdout=str(tmp_path / "no" / "such"))
    jobid = sl.submit(req, sh("true"), ENV).job_id
    job = wait_state(sl, jobid, JobState.ERROR)
    assert job.launch_error == 4021
    assert "could not connect IO" in progress(job).reason


def test_memory_and_cpus_are_enforced(sl: Slurm, tmp_path: Path, gate: object) -> None:
    hog = sh(
        'python3 -c "\nimport time\nb = bytearray(300 * 2**20)\n'
        'for i in range(0, len(b), 4096): b[i] = 1\ntime.sleep(20)"'
    )
    over = sl.submit(SbatchRequest(tag=tag(), mem=50 * 2**20, cwd=str(tmp_path)), hog, ENV)
    job = wait_state(sl, over.job_id, JobState.FAIL)
    assert progress(job).reason == "killed by signal SIGKILL"  # OverMemoryKill, no cgroups
    g = Gate(tmp_path / "g")
    big = NODE_CPUS - 1
    first = sl.submit(SbatchRequest(tag=tag(), procs=big, cwd=str(tmp_path)), sh(g.wait), ENV)
    second = sl.submit(SbatchRequest(tag=tag(), procs=big, cwd=str(tmp_path)), sh("true"), ENV)
    wait_state(sl, first.job_id, JobState.RUNNING)
    waiting = wait_for(lambda: (j := state_of(sl, second.job_id)) and j.reason == "Resources" and j)
    assert progress(waiting).state is JobState.QUEUED
    g.open()
    wait_state(sl, second.job_id, JobState.SUCCESS)


def test_cancel(sl: Slurm, tmp_path: Path) -> None:
    g = Gate(tmp_path / "g")
    jobid = sl.submit(SbatchRequest(tag=tag(), cwd=str(tmp_path)), sh(g.wait), ENV).job_id
    wait_state(sl, jobid, JobState.RUNNING)
    sl.cancel([jobid])
    job = wait_state(sl, jobid, JobState.KILLED)
    assert job.state == "CANCELLED"
    assert progress(job).reason == "cancelled in Slurm"  # squeue does not say by whom
    sl.cancel([jobid])  # cancelling an ended job is not an error


def test_hold_and_release(sl: Slurm, tmp_path: Path) -> None:
    g = Gate(tmp_path / "g")
    done = tmp_path / "done"
    held = sl.submit(
        SbatchRequest(tag=tag(), hold=True, cwd=str(tmp_path)), sh(f"touch {done}"), ENV
    ).job_id
    assert progress(wait_state(sl, held, JobState.HELD)).reason == "JobHeldUser"
    first = sl.submit(SbatchRequest(tag=tag(), cwd=str(tmp_path)), sh(g.wait), ENV).job_id
    dep = sl.submit(
        SbatchRequest(tag=tag(), after_ok=(first,), cwd=str(tmp_path)), sh("true"), ENV
    ).job_id
    assert wait_state(sl, dep, JobState.QUEUED).reason == "Dependency"
    sl.hold([dep])  # a pending job already in Slurm
    wait_state(sl, dep, JobState.HELD)
    sl.release([held, dep])
    wait_state(sl, held, JobState.SUCCESS)
    assert done.exists()
    assert wait_state(sl, dep, JobState.QUEUED).reason == "Dependency"
    g.open()
    wait_state(sl, dep, JobState.SUCCESS)


def test_array(sl: Slurm, tmp_path: Path) -> None:
    req = SbatchRequest(
        tag=tag(), array="1-3", cwd=str(tmp_path), stdout=Pattern(f"{tmp_path}/%A_%a.out")
    )
    sub = sl.submit(req, sh('echo "task $SLURM_ARRAY_TASK_ID"'), ENV)

    def all_done() -> list[SlurmJob] | None:
        jobs = sl.squeue([sub.job_id]).jobs
        ok = len(jobs) == 3 and all(progress(j).state is JobState.SUCCESS for j in jobs)
        return jobs if ok else None

    jobs = wait_for(all_done, WAIT, what="three array tasks to succeed")
    assert sorted(j.key for j in jobs) == [f"{sub.job_id}_{i}" for i in (1, 2, 3)]
    assert {j.array_job_id for j in jobs} == {sub.job_id}
    for i in (1, 2, 3):
        assert (tmp_path / f"{sub.job_id}_{i}.out").read_text() == f"task {i}\n"


def test_dependency_afterok(sl: Slurm, tmp_path: Path) -> None:
    ok = sl.submit(SbatchRequest(tag=tag(), cwd=str(tmp_path)), sh("true"), ENV).job_id
    bad = sl.submit(SbatchRequest(tag=tag(), cwd=str(tmp_path)), sh("exit 1"), ENV).job_id
    after_ok = sl.submit(
        SbatchRequest(tag=tag(), after_ok=(ok,), cwd=str(tmp_path)), sh("true"), ENV
    ).job_id
    after_bad = sl.submit(
        SbatchRequest(tag=tag(), after_ok=(ok, bad), cwd=str(tmp_path)), sh("true"), ENV
    ).job_id
    wait_state(sl, after_ok, JobState.SUCCESS)
    # --kill-on-invalid-dep=yes: Slurm cancels it, and sjq reads that as its A state.
    job = wait_state(sl, after_bad, JobState.ABORT)
    assert (job.state, job.reason) == ("CANCELLED", "DependencyNeverSatisfied")


def test_cancelled_while_waiting_on_a_dependency_is_killed(sl: Slurm, tmp_path: Path) -> None:
    g = Gate(tmp_path / "g")
    first = sl.submit(SbatchRequest(tag=tag(), cwd=str(tmp_path)), sh(g.wait), ENV).job_id
    dep = sl.submit(
        SbatchRequest(tag=tag(), after_ok=(first,), cwd=str(tmp_path)), sh("true"), ENV
    ).job_id
    wait_state(sl, dep, JobState.QUEUED)
    sl.cancel([dep])
    assert progress(wait_state(sl, dep, JobState.KILLED, JobState.ABORT)).state is JobState.KILLED
    g.open()


@pytest.mark.parametrize(
    ("req", "message"),
    [
        (SbatchRequest(tag="t", mem=100 * 2**30),
         "Memory specification can not be satisfied; Batch job submission failed: Requested "
         "node configuration is not available"),
        (SbatchRequest(tag="t", procs=64),
         "Batch job submission failed: More processors requested than permitted"),
        (SbatchRequest(tag="t", extra=("--partition=nosuch",)),
         "invalid partition specified: nosuch; Batch job submission failed: Invalid partition "
         "name specified"),
        (SbatchRequest(tag="t", gpus=1),
         "Invalid generic resource (gres) specification"),
        (SbatchRequest(tag="t", extra=("--bogus",)), "unrecognized option '--bogus'"),
    ],
)  # fmt: skip
def test_impossible_requests_are_refused_with_slurms_message(
    sl: Slurm, tmp_path: Path, req: SbatchRequest, message: str
) -> None:
    # No GRES gpu can be configured on this machine (no GPU); the request is refused as any
    # cluster without GPUs would refuse it.
    with pytest.raises(SlurmRejected) as e:
        sl.submit(req, sh("true"), ENV, cwd=str(tmp_path))
    assert e.value.message == message
    assert e.value.command == "sbatch"


def test_script_errors_are_refused(sl: Slurm, tmp_path: Path) -> None:
    with pytest.raises(SlurmRejected, match="DOS line breaks"):
        sl.submit(SbatchRequest(tag=tag()), b"#!/bin/sh\r\ntrue\r\n", ENV, cwd=str(tmp_path))


def test_stopped_controller_is_transient_and_recovers(
    sl: Slurm, slurm: Cluster, tmp_path: Path
) -> None:
    g = Gate(tmp_path / "g")
    before = sl.submit(SbatchRequest(tag=tag(), cwd=str(tmp_path)), sh(g.wait), ENV).job_id
    wait_state(sl, before, JobState.RUNNING)
    quick = Slurm(env=slurm.env, timeout=2)
    with slurm.controller_stopped():
        t0 = time.monotonic()
        with pytest.raises(SlurmUnavailable):
            quick.squeue([before])
        with pytest.raises(SlurmUnavailable) as e:
            quick.submit(SbatchRequest(tag=tag(), cwd=str(tmp_path)), sh("true"), ENV)
        assert "sbatch" in e.value.message
        with pytest.raises(SlurmUnavailable):
            quick.hold([before])
        assert time.monotonic() - t0 < 15  # each gave up after its 2 s timeout at most
        g.open()  # the job ends while nobody can ask
    # slurmctld comes back with its saved state: the job is still known and ends normally.
    job = wait_state(sl, before, JobState.SUCCESS)
    assert job.exit_code == 0
    after = sl.submit(SbatchRequest(tag=tag(), cwd=str(tmp_path)), sh("true"), ENV).job_id
    wait_state(sl, after, JobState.SUCCESS)


def test_commands_run_in_a_worker_thread_without_blocking_the_event_loop(
    slurm: Cluster,
) -> None:
    # A command against an unreachable controller blocks for seconds; from a worker thread the
    # loop keeps running meanwhile.
    quick = Slurm(env=slurm.env, timeout=1.5)
    ticks = 0

    async def main() -> None:
        nonlocal ticks

        async def tick() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        ticker = asyncio.create_task(tick())
        try:
            with pytest.raises(SlurmUnavailable):
                await asyncio.to_thread(quick.squeue)
        finally:
            ticker.cancel()

    with slurm.controller_stopped():
        asyncio.run(main())
    assert ticks > 50


def test_slurms_own_message_when_the_controller_is_unreachable(
    slurm: Cluster, tmp_path: Path
) -> None:
    conf = tmp_path / "slurm.conf"
    text = slurm.conf.read_text()
    text = text.replace(f"SlurmctldPort={slurm.ctld_port}", "SlurmctldPort=1")
    # Commands retry the controller for about MessageTimeout seconds (10 by default) each try.
    conf.write_text(text + "MessageTimeout=2\n")
    s = Slurm(env=dict(slurm.env, SLURM_CONF=str(conf)), timeout=20)
    with pytest.raises(SlurmUnavailable, match="Unable to contact slurm controller"):
        s.squeue([1])


def test_find_forgotten_jobs_by_tag(sl: Slurm, tmp_path: Path) -> None:
    daemon = uuid.uuid4().hex[:12]
    g = Gate(tmp_path / "g")
    for jobid in (1, 2, 3):
        body = g.wait if jobid == 2 else "true"
        req = SbatchRequest(tag=make_tag(daemon, jobid), hold=jobid == 3, cwd=str(tmp_path))
        sl.submit(req, sh(body), ENV)  # the Slurm ids are "forgotten"
    other = sl.submit(SbatchRequest(tag=make_tag(daemon + "x", 1), cwd=str(tmp_path)),
                      sh("true"), ENV)  # fmt: skip
    found = wait_for(
        lambda: (f := sl.find_tagged(f"sjq:{daemon}:")) and len(f) == 3 and f,
        what="three tagged jobs",
    )
    by_id = {parse_tag(j.comment): j for j in found}
    assert set(by_id) == {(daemon, 1), (daemon, 2), (daemon, 3)}
    assert other.job_id not in {j.job_id for j in found}
    assert progress(by_id[daemon, 3]).state is JobState.HELD
    g.open()


def test_a_refused_submission_leaves_no_live_job(sl: Slurm, tmp_path: Path) -> None:
    daemon = uuid.uuid4().hex[:12]
    with pytest.raises(SlurmRejected):
        sl.submit(SbatchRequest(tag=make_tag(daemon, 1), mem=100 * 2**30), sh("true"), ENV,
                  cwd=str(tmp_path))  # fmt: skip
    # Slurm 22.05 keeps a record of this refused job, with its tag (FAILED, reason
    # BadConstraints, no node): a daemon reconciling by tag must read it as never started.
    for job in sl.find_tagged(f"sjq:{daemon}:"):
        assert progress(job).state is JobState.ERROR, job


def test_commands_are_counted(sl: Slurm, tmp_path: Path) -> None:
    assert sl.total == 0
    jobid = sl.submit(SbatchRequest(tag=tag(), cwd=str(tmp_path)), sh("true"), ENV).job_id
    sl.squeue([jobid])
    sl.squeue()
    sl.cancel([jobid])
    assert sl.counts == {"sbatch": 1, "squeue": 2, "scancel": 1}
    assert sl.total == 4


def test_no_accounting_here(sl: Slurm) -> None:
    assert sl.accounting() is False
    with pytest.raises(AccountingDisabled):
        sl.sacct([1])


# -- accounting ------------------------------------------------------------------------------


@pytest.fixture
def acct(slurm_acct: Cluster) -> Slurm:
    return Slurm(env=slurm_acct.env, timeout=20)


def test_sacct_reports_what_squeue_cannot(acct: Slurm, tmp_path: Path) -> None:
    assert acct.accounting() is True
    t = tag()
    work = sh(
        'python3 -c "\n'
        "import time\n"
        "b = bytearray(200 * 2**20)\n"
        "for i in range(0, len(b), 4096): b[i] = 1\n"
        "t = time.process_time()\n"
        "while time.process_time() - t < 1.5: pass\n"
        'time.sleep(1.2)"\n'
        "exit 4"
    )
    jobid = acct.submit(SbatchRequest(tag=t, mem=400 * 2**20, cwd=str(tmp_path)), work, ENV).job_id
    wait_state(acct, jobid, JobState.FAIL)

    def recorded() -> SlurmJob | None:
        jobs = acct.sacct([jobid]).jobs
        return jobs[0] if jobs and jobs[0].state == "FAILED" and jobs[0].maxrss else None

    job = wait_for(recorded, WAIT, what="slurmdbd to record the job's end")
    assert job.source == "sacct"
    assert job.exit_code == 4
    assert job.comment == t
    assert progress(job).reason == "exit status 4"
    assert job.cpu_time is not None
    assert job.cpu_time >= 1.4
    assert job.maxrss is not None
    assert 200 * 2**20 <= job.maxrss < 400 * 2**20
    assert job.elapsed is not None
    assert job.elapsed >= 2
    found = acct.find_tagged(t, accounting=True)
    assert [j.job_id for j in found] == [jobid]


def test_sacct_says_who_cancelled(acct: Slurm, tmp_path: Path) -> None:
    g = Gate(tmp_path / "g")
    jobid = acct.submit(SbatchRequest(tag=tag(), cwd=str(tmp_path)), sh(g.wait), ENV).job_id
    wait_state(acct, jobid, JobState.RUNNING)
    acct.cancel([jobid])

    def recorded() -> SlurmJob | None:
        # slurmdbd writes a cancel in steps: sacct may say CANCELLED before it has the end
        # time and who cancelled; only a record with its end is complete.
        jobs = acct.sacct([jobid]).jobs
        done = bool(jobs) and jobs[0].state == "CANCELLED" and jobs[0].end is not None
        return jobs[0] if done else None

    job = wait_for(recorded, WAIT, what="slurmdbd to record the cancel with its end")
    assert job.cancelled_by == os.geteuid()
    assert progress(job).state is JobState.KILLED
    assert progress(job).reason == f"cancelled in Slurm by uid {os.geteuid()}"


def test_stopped_slurmdbd_is_transient(acct: Slurm, slurm_acct: Cluster) -> None:
    assert slurm_acct.accounting is not None
    with (
        slurm_acct.accounting.slurmdbd_stopped(),
        pytest.raises(SlurmUnavailable, match="Connection refused"),
    ):
        acct.sacct([1])
    assert acct.sacct([999999]).jobs == []


@pytest.mark.slow
@pytest.mark.timeout(200)
def test_time_limit(sl: Slurm, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    if "slow" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("takes 60-90 s: Slurm's limits are whole minutes, checked every 30 s;"
                    " run with -m slow")  # fmt: skip
    jobid = sl.submit(SbatchRequest(tag=tag(), time_limit=1, cwd=str(tmp_path)), sh("sleep 600"),
                      ENV).job_id  # fmt: skip
    job = wait_state(sl, jobid, JobState.FAIL, timeout=150)
    assert (job.state, job.time_limit, progress(job).reason) == ("TIMEOUT", 60, "time limit")
    assert job.elapsed is not None
    assert job.elapsed >= 60
