"""Real Toil runs through `--batchSystem sjq`: a Python workflow (fan-out, aggregate, a
failing sample, an interrupted run) and a CWL workflow through `toil-cwl-runner`. Each
test checks Toil's outcome and sjq's own record of every job."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import pytest
from support import wait_for

from sjq.jobs import JobState

from .conftest import SjqHome, copy_data, no_process_left

pytestmark = pytest.mark.timeout(240)

MB = 1000 * 1000  # Toil reads "300M" as 300,000,000 bytes
MIB = 1024 * 1024  # CWL's ramMin is in MiB


def fan_out(home: SjqHome, *args: str) -> list[str]:
    copy_data(["fan_out.py"], home.work)
    (home.work / "out").mkdir()
    return [
        sys.executable,
        "fan_out.py",
        str(home.work / "js"),
        "--batchSystem",
        "sjq",
        "--out",
        "out",
        "--logLevel",
        "INFO",
        *args,
    ]


def test_a_fan_out_runs_every_job_in_sjq_with_its_cores_and_memory(sjq_home: SjqHome) -> None:
    run = sjq_home.toil(*fan_out(sjq_home), check=True)

    assert "total 5" in run.log  # 0 + 1 + 4
    assert (sjq_home.work / "out" / "total").read_text() == "5"
    jobs = sjq_home.jobs()
    assert all(j.name.startswith("toil.") for j in jobs), jobs
    samples = [j for j in jobs if j.name.endswith(" sample")]
    aggregates = [j for j in jobs if j.name.endswith(" aggregate")]
    assert len(samples) == 3, [j.name for j in jobs]
    assert len(aggregates) == 1, [j.name for j in jobs]
    for j in jobs:
        assert (j.state, j.exit_code) == (JobState.SUCCESS, 0), j
    for j in samples:
        assert (j.procs, j.mem) == (2, 300 * MB), j  # 1.5 cores -> 2 CPUs; bytes exactly
    assert (aggregates[0].procs, aggregates[0].mem) == (1, 100 * MB)  # 0.5 cores -> 1 CPU
    # Each sample ran inside the sjq job the record describes, and saw its reservation.
    seen = [json.loads((sjq_home.work / "out" / f"sample-{i}.json").read_text()) for i in range(3)]
    assert sorted(int(s["SJQ_JOBID"]) for s in seen) == sorted(j.id for j in samples)
    assert {(s["SJQ_PROCS"], s["SJQ_MEM"]) for s in seen} == {("2", str(300 * MB))}
    # The names say which workflow and which Toil job: one workflow tag, distinct job ids.
    tags = {j.name.split(".")[1] for j in jobs}
    assert len(tags) == 1
    assert len({j.name.split()[0] for j in jobs}) == len(jobs)


def test_a_failing_sample_fails_the_run_and_is_reported_with_its_exit_code(
    sjq_home: SjqHome,
) -> None:
    run = sjq_home.toil(*fan_out(sjq_home, "--fail-sample", "1", "--retryCount", "0"))

    assert run.code != 0, run.log
    assert "sample 1 fails on purpose" in run.log
    jobs = sjq_home.jobs()
    samples = [j for j in jobs if j.name.endswith(" sample")]
    assert not [j for j in jobs if j.name.endswith(" aggregate")], "the aggregate ran"
    failed = [j for j in samples if j.state is JobState.FAIL]
    assert len(failed) == 1, samples
    assert failed[0].exit_code == 1  # Toil's worker exits 1 when its job raised
    assert failed[0].procs == 2
    assert [j.state for j in samples if j is not failed[0]] == [JobState.SUCCESS] * 2
    # Toil got the exit status and the sjq job id; the plugin said why.
    assert "Job failed with exit value 1" in run.log
    assert f"Failed job in backing scheduler: {failed[0].id}" in run.log
    assert f"sjq job {failed[0].id} ({failed[0].name}) failed: exit status 1" in run.log


def test_an_interrupted_run_leaves_no_job_running(sjq_home: SjqHome) -> None:
    gate = sjq_home.work / "never.gate"  # never opened: the samples wait until killed
    p = sjq_home.popen(*fan_out(sjq_home, "--samples", "3", "--gate", str(gate)))
    try:
        # Two samples (2 CPUs each on 4) run, the third waits in sjq's queue.

        def two_run_one_waits() -> bool:
            jobs = sjq_home.jobs(started=False)
            running = [j for j in jobs if j.state is JobState.RUNNING]
            return len(jobs) == 4 and len(running) == 2 and all("sample" in j.name for j in running)

        wait_for(two_run_one_waits, 60, what="two samples running and one queued")
        # (A job is R as soon as the daemon has started it; its pid comes with the start notice.)
        pids = wait_for(
            lambda: (
                len(found := [j.pid for j in sjq_home.jobs() if j.pid and not j.finished]) == 2
                and found
            ),
            what="the pids of the running samples",
        )
        p.send_signal(signal.SIGINT)
        out, _ = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    log = out.decode(errors="replace")

    assert p.returncode != 0, log
    assert "KeyboardInterrupt" in log
    jobs = sjq_home.jobs()
    samples = [j for j in jobs if j.name.endswith(" sample")]
    assert [j.state for j in samples] == [JobState.KILLED] * 3, samples
    assert not [j for j in jobs if not j.finished], jobs
    root = [j for j in jobs if j not in samples]
    assert [j.state for j in root] == [JobState.SUCCESS]
    # Shutdown waited for the kills: when the leader was gone, so were the jobs' processes.
    no_process_left(pids, timeout=0.5)


def test_a_cwl_workflow_runs_through_toil_cwl_runner(sjq_home: SjqHome) -> None:
    copy_data(["count.cwl", "scatter.cwl", "scatter.yml"], sjq_home.work)
    outdir = sjq_home.work / "results"
    run = sjq_home.toil(
        "toil-cwl-runner",
        "--batchSystem",
        "sjq",
        "--jobStore",
        str(sjq_home.work / "js"),
        "--outdir",
        str(outdir),
        "scatter.cwl",
        "scatter.yml",
        check=True,
    )

    assert '"uppers"' in run.log
    texts = sorted(p.read_text() for p in outdir.iterdir())
    assert texts == ["ALPHA\n", "BETA\n", "GAMMA\n"]
    jobs = sjq_home.jobs()
    # Only the three tool runs go to sjq; CWL's housekeeping jobs run on the leader.
    assert len(jobs) == 3, [j.name for j in jobs]
    for j in jobs:
        assert "count.cwl" in j.name, j
        assert (j.state, j.exit_code, j.procs, j.mem) == (JobState.SUCCESS, 0, 2, 200 * MIB), j


def test_a_request_sjq_cannot_meet_fails_with_the_daemons_reason(sjq_home: SjqHome) -> None:
    copy_data(["count.cwl"], sjq_home.work)
    text = (sjq_home.work / "count.cwl").read_text().replace("coresMin: 1.5", "coresMin: 6")
    Path(sjq_home.work / "big.cwl").write_text(text)
    run = sjq_home.toil(
        "toil-cwl-runner",
        "--batchSystem",
        "sjq",
        "--jobStore",
        str(sjq_home.work / "js"),
        "--outdir",
        str(sjq_home.work / "results"),
        "big.cwl",
        "--word",
        "x",
    )

    assert run.code != 0
    assert "PROCS 6 is more than the 4 CPUs this daemon manages (sjq.maxprocs)" in run.log
    assert sjq_home.jobs() == []
