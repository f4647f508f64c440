"""The rules between Toil's requests and sjq's records (toil_batch_system_sjq._mapping): whole
CPUs, names sjq accepts, the merged environment, and which sjq ending is which Toil reason."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sjq_client import JobInfo
from toil_batch_system_sjq import _mapping

from sjq.jobs import JobState
from sjq.protocol import Submit, SubmitOptions, encode_request

cores = st.floats(min_value=0, max_value=1e6, allow_nan=False) | st.integers(0, 10**6)


@given(cores)
def test_cores_round_up_to_whole_cpus_and_never_to_none(c: float) -> None:
    procs = _mapping.procs_for(c)
    assert isinstance(procs, int)
    assert procs >= 1
    assert procs >= c  # never less than asked: no overcommit
    assert procs - c < 1 or c < 1  # and never a whole CPU more than needed


@pytest.mark.parametrize(("c", "procs"), [(0, 1), (0.1, 1), (1, 1), (1.0, 1), (1.5, 2), (2.01, 3)])
def test_cores_examples(c: float, procs: int) -> None:
    assert _mapping.procs_for(c) == procs


@pytest.mark.parametrize("bad", [math.nan, math.inf, True, "2"])
def test_cores_that_are_not_a_number_are_refused(bad: Any) -> None:
    with pytest.raises(ValueError, match="cores"):
        _mapping.procs_for(bad)


@given(
    st.integers(1, 10**9), st.text(), st.text(alphabet="0123456789abcdef", min_size=8, max_size=8)
)
def test_every_name_is_one_the_daemon_accepts_and_says_which_job(
    toil_id: int, kind: str, tag: str
) -> None:
    name = _mapping.job_name(toil_id, kind, tag)
    assert name.startswith(f"toil.{tag}.{toil_id} ")
    assert len(name) <= _mapping.MAX_NAME
    assert all(c.isprintable() for c in name)  # no tab, no line break
    # The wire encoder refuses what the daemon would refuse.
    encode_request(Submit(SubmitOptions(name=name), b"#!/bin/sh\n"))


def test_a_name_keeps_toils_job_kind() -> None:
    assert _mapping.job_name(7, "wf.cwl.0.count\tx\ny", "1f0c9a2b") == (
        "toil.1f0c9a2b.7 wf.cwl.0.count x y"
    )
    assert _mapping.job_name(7, "\t", "1f0c9a2b") == "toil.1f0c9a2b.7 job"


def test_the_environment_merges_in_order_and_drops_what_the_wire_cannot_carry() -> None:
    env = _mapping.worker_env(
        {"PATH": "/leader/bin", "A": "leader", "BASH_FUNC_f%%": "() { :; }", "NL": "a\nb"},
        {"A": "setEnv", "B": "setEnv"},
        None,
        {"B": "job", "OMP_NUM_THREADS": "2"},
    )
    assert env == {"PATH": "/leader/bin", "A": "setEnv", "B": "job", "OMP_NUM_THREADS": "2"}


@given(st.dictionaries(st.text(), st.text()))
def test_any_environment_yields_one_the_wire_can_carry(environ: dict[str, str]) -> None:
    env = _mapping.worker_env(environ)
    encode_request(Submit(SubmitOptions(env=tuple(env.items())), b"#!/bin/sh\n"))


def test_the_worker_command_runs_through_sh_and_is_execd() -> None:
    script = _mapping.worker_script("_toil_worker align file:/js kind-x/instance-1")
    assert script == b"#!/bin/sh\nexec _toil_worker align file:/js kind-x/instance-1\n"
    for bad in ("", "  ", "a\nb"):
        with pytest.raises(ValueError, match="worker command"):
            _mapping.worker_script(bad)


@pytest.mark.parametrize(("walltime", "limit"), [(None, None), (0, None), (-1, None), (90, 90.0)])
def test_walltime_is_a_time_limit_and_zero_is_none(walltime: Any, limit: Any) -> None:
    assert _mapping.time_limit_for(walltime) == limit


def info(state: JobState, **fields: Any) -> JobInfo:
    base: dict[str, Any] = {"id": 9, "name": "n", "state": state, "procs": 1, "mem": 1}
    if state.terminal and state is not JobState.ERROR:
        base |= {"started": 100.0, "ended": 102.5}
    return JobInfo(**(base | fields))


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (info(JobState.SUCCESS, exit_code=0), (0, "FINISHED", 2.5)),
        (info(JobState.FAIL, exit_code=3, reason="exit status 3"), (3, "FAILED", 2.5)),
        (info(JobState.FAIL, signal=9, reason="killed by signal SIGKILL"), (137, "FAILED", 2.5)),
        (info(JobState.FAIL, signal=15, reason="time limit"), (143, "TIMELIMIT", 2.5)),
        (info(JobState.FAIL, signal=9, reason="over its memory limit"), (137, "MEMLIMIT", 2.5)),
        (info(JobState.FAIL, exit_code=0, reason="odd"), (255, "FAILED", 2.5)),
        (info(JobState.KILLED, signal=15, reason="killed by request"), (143, "KILLED", 2.5)),
        (info(JobState.KILLED, reason="killed by request"), (255, "KILLED", 2.5)),
        (info(JobState.ERROR, reason="cannot open stdout"), (255, "ERROR", None)),
        (info(JobState.ABORT, ended=3.0), (255, "ERROR", None)),
    ],
)
def test_each_ending_has_its_exit_status_and_reason(
    record: JobInfo, expected: _mapping.Outcome
) -> None:
    assert _mapping.outcome(record) == expected


@given(
    st.sampled_from([JobState.FAIL, JobState.KILLED, JobState.ERROR, JobState.ABORT]),
    st.none() | st.integers(0, 255),
    st.none() | st.integers(1, 64),
)
def test_no_failed_job_ever_reads_as_a_success(
    state: JobState, code: int | None, sig: int | None
) -> None:
    status, reason, _ = _mapping.outcome(info(state, exit_code=code, signal=sig))
    assert status != 0
    assert reason != "FINISHED"


@pytest.mark.parametrize("state", [JobState.QUEUED, JobState.RUNNING, JobState.WAITING])
def test_a_job_that_has_not_ended_has_no_outcome(state: JobState) -> None:
    with pytest.raises(ValueError, match="has not ended"):
        _mapping.outcome(info(state))


def test_gpus_are_counted_and_other_accelerators_refused() -> None:
    assert _mapping.gpus_for([]) == 0
    assert _mapping.gpus_for([{"count": 2, "kind": "gpu"}, {"count": 1, "kind": "gpu"}]) == 3
    nvidia = {"count": 1, "kind": "gpu", "brand": "nvidia", "api": "cuda", "model": "a100"}
    assert _mapping.gpus_for([nvidia]) == 1  # the model is not checked: sjq does not know it
    with pytest.raises(ValueError, match="GPUs only, not 'fpga'"):
        _mapping.gpus_for([{"count": 1, "kind": "fpga"}])
    with pytest.raises(ValueError, match="NVIDIA CUDA devices; 'amd'"):
        _mapping.gpus_for([{"count": 1, "kind": "gpu", "brand": "amd"}])
