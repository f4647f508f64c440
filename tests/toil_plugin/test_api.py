"""The batch-system API as Toil's leader uses it, in this process, against a real daemon:
exit statuses, exit reasons and wall times; kills that are never reported; shutdown; the
workers' environment; a daemon that went away."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sjq_client import Client
from support import Gate, wait_for

from sjq.jobs import JobState

from .conftest import SjqHome, no_process_left

# Toil's own shutdown code leaves files open (toil/deferred.py); that is not ours to fail on.
pytestmark = [
    pytest.mark.filterwarnings(r"ignore:unclosed file .*toilwf-:ResourceWarning"),
    pytest.mark.filterwarnings(
        r"ignore:Exception ignored in. <_io.*toilwf-:pytest.PytestUnraisableExceptionWarning"
    ),
]

MB = 1000 * 1000


@pytest.fixture
def batch_system(
    sjq_home: SjqHome, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Any]:
    """An SjqBatchSystem as Toil's leader builds one, given the home's config by --sjqConfig."""
    from toil.common import Config
    from toil.job import Job
    from toil_batch_system_sjq import factory

    for name in [n for n in os.environ if n.startswith(("SJQ_", "TOIL_"))]:
        monkeypatch.delenv(name)
    for name in ("HOME", "TMPDIR", "TOIL_COORDINATION_DIR"):
        monkeypatch.setenv(name, sjq_home.env[name])
    monkeypatch.chdir(sjq_home.work)
    options = Job.Runner.getDefaultOptions(str(tmp_path / "js"))
    options.batchSystem = "sjq"
    options.sjq_config = str(sjq_home.rc)
    options.batch_logs_dir = str(tmp_path / "logs")
    config = Config()
    config.setOptions(options)
    config.workflowID = str(uuid.uuid4())
    bs = factory()(config, config.maxCores, config.maxMemory, config.maxDisk)
    try:
        yield bs
    finally:
        bs.shutdown()


def job(cores: float = 1, memory: int = 100 * MB, **more: Any) -> Any:
    from toil.job import JobDescription

    requirements = {"cores": cores, "memory": memory, "disk": MB, "accelerators": []}
    requirements["preemptible"] = False
    return JobDescription(requirements | more, jobName="api_job", unitName="api unit")


def next_update(bs: Any, timeout: float = 30) -> Any:
    return wait_for(lambda: bs.getUpdatedBatchJob(1), timeout, what="a job update")


def sjq_job(home: SjqHome, update: Any) -> Any:
    with home.client() as c:
        return c.info(int(update.backing_id))


def test_an_ended_job_reports_its_exit_status_reason_and_wall_time(
    batch_system: Any, sjq_home: SjqHome
) -> None:
    from toil.batchSystems.abstractBatchSystem import BatchJobExitReason

    toil_id = batch_system.issueBatchJob("sh -c 'sleep 0.3; exit 3'", job(1.5, 300 * MB))
    assert batch_system.getIssuedBatchJobIDs() == [toil_id]
    update = next_update(batch_system)

    assert (update.jobID, update.exitStatus) == (toil_id, 3)
    assert update.exitReason is BatchJobExitReason.FAILED
    info = sjq_job(sjq_home, update)
    assert (info.state, info.exit_code, info.procs, info.mem) == (JobState.FAIL, 3, 2, 300 * MB)
    assert info.name == f"toil.{batch_system._tag}.{toil_id} api unit"
    assert update.wallTime == pytest.approx(info.ended - info.started)
    assert update.wallTime >= 0.3
    assert batch_system.getIssuedBatchJobIDs() == []
    assert batch_system.getUpdatedBatchJob(0) is None  # reported exactly once

    ok = batch_system.issueBatchJob("true", job(0.25))
    update = next_update(batch_system)
    assert (update.jobID, update.exitStatus, update.exitReason) == (
        ok,
        0,
        BatchJobExitReason.FINISHED,
    )
    assert sjq_job(sjq_home, update).procs == 1  # a quarter core is still one CPU


def test_disk_requests_are_accepted_and_ignored(batch_system: Any, sjq_home: SjqHome) -> None:
    from toil.batchSystems.abstractBatchSystem import BatchJobExitReason

    petabyte = 1024**5  # far more than this machine's disks: sjq reserves no disk
    toil_id = batch_system.issueBatchJob("true", job(1, 100 * MB, disk=petabyte))
    update = next_update(batch_system)
    assert (update.jobID, update.exitStatus, update.exitReason) == (
        toil_id,
        0,
        BatchJobExitReason.FINISHED,
    )
    info = sjq_job(sjq_home, update)
    assert (info.state, info.procs, info.mem) == (JobState.SUCCESS, 1, 100 * MB)


def test_signals_time_limits_and_start_errors_have_their_exit_reasons(
    batch_system: Any, sjq_home: SjqHome, gate: Callable[[str], Gate]
) -> None:
    from toil.batchSystems.abstractBatchSystem import BatchJobExitReason

    signalled = batch_system.issueBatchJob("sh -c 'kill -9 $$'", job())
    limited = batch_system.issueBatchJob("sleep 30", job(walltime=1))
    updates = {u.jobID: u for u in (next_update(batch_system), next_update(batch_system))}

    assert (updates[signalled].exitStatus, updates[signalled].exitReason) == (
        128 + 9,
        BatchJobExitReason.FAILED,
    )
    assert sjq_job(sjq_home, updates[signalled]).signal == 9
    assert updates[limited].exitReason is BatchJobExitReason.TIMELIMIT
    info = sjq_job(sjq_home, updates[limited])
    assert (info.time_limit, info.reason) == (1.0, "time limit")
    assert updates[limited].exitStatus != 0

    # Output files that cannot be opened when the job starts (its log directory became a
    # file while it waited for CPUs): it ends in E, and has no wall time. (The daemon
    # checks the paths at submit too, and refuses a job whose directory is missing then.)
    g = gate("go")
    blocker = batch_system.issueBatchJob(f"sh -c '{g.wait.strip()}'", job(cores=4))
    wait_for(lambda: blocker in batch_system.getRunningBatchJobIDs(), 30, what="the blocker")
    broken = batch_system.issueBatchJob("true", job())
    logs = Path(batch_system.get_batch_logs_dir())
    shutil.rmtree(logs)
    logs.write_text("")
    g.open()
    updates = {u.jobID: u for u in (next_update(batch_system), next_update(batch_system))}
    update = updates[broken]
    logs.unlink()
    logs.mkdir()
    assert (update.jobID, update.exitStatus, update.exitReason, update.wallTime) == (
        broken,
        255,
        BatchJobExitReason.ERROR,
        None,
    )


def test_killed_jobs_are_neither_running_nor_ever_reported(
    batch_system: Any, sjq_home: SjqHome, gate: Callable[[str], Gate]
) -> None:
    g = gate("go")
    waits = f"sh -c '{g.wait.strip()}'"
    doomed = batch_system.issueBatchJob(waits, job())
    survivor = batch_system.issueBatchJob(waits, job())
    wait_for(
        lambda: {doomed, survivor} <= set(batch_system.getRunningBatchJobIDs()),
        30,
        what="both jobs running",
    )
    # One that has ended but was not yet reported when Toil killed it.
    quiet = batch_system.issueBatchJob("true", job())
    with sjq_home.client() as c:
        quiet_sjq = batch_system._jobs[quiet].sjq_id
        wait_for(lambda: c.state(quiet_sjq) is JobState.SUCCESS, what="the quick job to end")
        pid = c.info(batch_system._jobs[doomed].sjq_id).pid

    batch_system.killBatchJobs([doomed, quiet])

    assert doomed not in batch_system.getRunningBatchJobIDs()
    assert set(batch_system.getIssuedBatchJobIDs()) == {survivor}
    states = {i.name.split()[0].rsplit(".", 1)[1]: i.state for i in sjq_home.jobs()}
    assert states[str(doomed)] is JobState.KILLED  # killBatchJobs returned once it had ended
    no_process_left([pid], timeout=0.5)
    g.open()
    update = next_update(batch_system)
    assert (update.jobID, update.exitStatus) == (survivor, 0)
    assert batch_system.getUpdatedBatchJob(0) is None


def test_shutdown_kills_every_job_still_issued(
    batch_system: Any, sjq_home: SjqHome, gate: Callable[[str], Gate]
) -> None:
    waits = f"sh -c '{gate('never').wait.strip()}'"
    ids = [batch_system.issueBatchJob(waits, job(cores=2)) for _ in range(3)]
    wait_for(lambda: len(batch_system.getRunningBatchJobIDs()) == 2, 30, what="two jobs running")
    assert "1 job(s) wait in sjq's queue" in batch_system.getSchedulingStatusMessage()
    # (A job is R as soon as the daemon has started it; its pid comes with the start notice.)
    pids = wait_for(
        lambda: len(found := [i.pid for i in sjq_home.jobs() if i.pid]) == 2 and found,
        what="the pids of the running jobs",
    )

    batch_system.shutdown()

    assert [i.state for i in sjq_home.jobs()] == [JobState.KILLED] * 3
    assert len(ids) == 3
    no_process_left(pids, timeout=0.5)


def test_shutdown_also_kills_a_job_whose_submit_was_cut_short(
    batch_system: Any, sjq_home: SjqHome, gate: Callable[[str], Gate]
) -> None:
    script = "#!/bin/sh\n" + gate("never").wait
    with Client(config=sjq_home.rc) as c:
        # As if a SUBMIT had been carried out but Ctrl-C came before its reply: a job of
        # this workflow that the batch system holds no id of. Another workflow's job is not
        # touched.
        ours = c.submit(script, name=f"toil.{batch_system._tag}.7 sample")
        theirs = c.submit(script, name="toil.0ther000.7 sample")
        batch_system._unsure = True
        batch_system.shutdown()
        assert c.state(ours) is JobState.KILLED
        assert not c.state(theirs).terminal
        c.kill([theirs])


def test_the_worker_gets_the_leaders_environment_with_toils_variables_on_top(
    batch_system: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FROM_LEADER", "leader")
    monkeypatch.setenv("OVERRIDDEN", "leader")
    monkeypatch.setenv("TWO_LINES", "a\nb")  # the protocol cannot carry it: left out
    batch_system.setEnv("OVERRIDDEN", "setEnv")
    batch_system.setEnv("FROM_SETENV", "setEnv")
    out = tmp_path / "env.txt"
    toil_id = batch_system.issueBatchJob(
        f"env > {out}", job(), job_environment={"FROM_JOB": "job", "OMP_NUM_THREADS": "1"}
    )
    update = next_update(batch_system)
    assert (update.jobID, update.exitStatus) == (toil_id, 0)

    seen = dict(line.split("=", 1) for line in out.read_text().splitlines() if "=" in line)
    assert seen["PATH"] == os.environ["PATH"]  # the worker is found as on the leader
    assert (seen["FROM_LEADER"], seen["OVERRIDDEN"]) == ("leader", "setEnv")
    assert (seen["FROM_SETENV"], seen["FROM_JOB"]) == ("setEnv", "job")
    assert "TWO_LINES" not in seen
    assert seen["SJQ_PROCS"] == "1"


def test_gpus_are_asked_for_and_other_accelerators_refused(
    batch_system: Any, sjq_home: SjqHome, tmp_path: Path
) -> None:
    from toil.batchSystems.abstractBatchSystem import InsufficientSystemResources

    with open(sjq_home.rc, "a") as f:
        f.write("sjq.gpus = 0,1\n")  # the devices the daemon hands out (no GPU here)
    out = tmp_path / "cuda.txt"
    gpu = [{"count": 2, "kind": "gpu"}]
    toil_id = batch_system.issueBatchJob(
        f"sh -c 'echo $CUDA_VISIBLE_DEVICES > {out}'", job(accelerators=gpu)
    )
    update = next_update(batch_system)
    assert (update.jobID, update.exitStatus) == (toil_id, 0)
    assert sjq_job(sjq_home, update).gpus == ("0", "1")
    assert out.read_text() == "0,1\n"
    with pytest.raises(InsufficientSystemResources, match="GPUS 3 is more than the 2 GPUs"):
        batch_system.issueBatchJob("true", job(accelerators=[{"count": 3, "kind": "gpu"}]))
    with pytest.raises(InsufficientSystemResources, match="GPUs only, not 'fpga'"):
        batch_system.issueBatchJob("true", job(accelerators=[{"count": 1, "kind": "fpga"}]))


def test_a_daemon_that_went_away_is_started_again_and_still_reports(
    batch_system: Any, sjq_home: SjqHome, gate: Callable[[str], Gate]
) -> None:
    g = gate("go")
    toil_id = batch_system.issueBatchJob(f"sh -c '{g.wait.strip()}; exit 4'", job())
    wait_for(lambda: toil_id in batch_system.getRunningBatchJobIDs(), 30, what="the job to run")
    with Client(config=sjq_home.rc, autostart=False) as c:
        c.shutdown(keep_running=True)  # the daemon stops; its job runs on
    assert not os.path.exists(sjq_home.socket)
    g.open()

    update = next_update(batch_system, timeout=45)

    assert (update.jobID, update.exitStatus) == (toil_id, 4)
    assert sjq_job(sjq_home, update).state is JobState.FAIL
