"""The job record: what a queued job costs, and what only a started one has (its ``Run``),
read and written through the job's attributes; rows round-trip through the store's columns."""

from __future__ import annotations

import os
import sys
import tempfile

from hypothesis import given, settings
from hypothesis import strategies as st

from sjq.jobs import Change, Job, JobState, Run
from sjq.store import JobSpec, Store

Q, R, S = JobState.QUEUED, JobState.RUNNING, JobState.SUCCESS


def test_a_queued_job_has_no_run_and_reads_the_defaults() -> None:
    j = Job(1, "a", Q, 1, 0)
    assert j.run is None
    assert (j.start_time, j.pid, j.exit_code, j.cpu_ids, j.backend_id, j.shown) == (None,) * 6
    assert (j.killing, j.attempts) == (False, 0)
    j.pid = None  # a default: still no run
    j.killing = False
    assert j.run is None


def test_setting_what_a_started_job_has_makes_its_run() -> None:
    j = Job(1, "a", Q, 1, 0)
    j.attempts = 1
    assert isinstance(j.run, Run)
    j.pid, j.cpu_ids, j.shown = 42, (0, 2), Q
    assert (j.attempts, j.pid, j.cpu_ids, j.shown, j.start_time) == (1, 42, (0, 2), Q, None)
    assert j.run.pid == 42


def test_a_queued_job_is_smaller_than_a_started_one() -> None:
    """What 100,000 queued jobs cost the daemon (docs/performance.md): the run-time fields
    are not in the queued job's record."""
    queued = Job(1, "a", Q, 1, 0)
    started = Job(2, "b", R, 1, 0)
    started.pid = 7
    assert sys.getsizeof(queued) <= 32 + 8 * len(Job.__slots__)  # headers (GC, object)
    assert len(Job.__slots__) <= 20  # 24 before GPUs, retries, arrays ...; 38 with them
    assert sys.getsizeof(started) + sys.getsizeof(started.run) > sys.getsizeof(queued)


RUN_FIELDS = (
    "start_time", "end_time", "exit_code", "signal", "pid", "pid_start", "killing",
    "cpu_user", "cpu_sys", "maxrss", "measured_by", "cpu_ids", "gpu_ids", "attempts",
    "backend_id", "node", "shown",
)  # fmt: skip


def test_run_fields_are_exactly_what_a_run_holds() -> None:
    assert sorted(RUN_FIELDS) == sorted(Run.__slots__)
    assert not set(RUN_FIELDS) & set(Job.__slots__)


@settings(deadline=None, max_examples=30)
@given(
    run=st.fixed_dictionaries(
        {},
        optional={
            "start_time": st.floats(0, 1e10),
            "pid": st.integers(1, 1 << 22),
            "attempts": st.integers(1, 5),
            "killing": st.just(True),
            "cpu_ids": st.lists(st.integers(0, 63), min_size=1, max_size=4, unique=True).map(
                lambda c: tuple(sorted(c))
            ),
            "gpu_ids": st.lists(st.sampled_from(["0", "1", "GPU-x"]), unique=True).map(tuple),
            "backend_id": st.just("77"),
            "shown": st.sampled_from([Q, JobState.HELD]),
            "maxrss": st.integers(0, 1 << 40),
            "measured_by": st.sampled_from(["cgroup", "sampled"]),
        },
    )
)
def test_a_job_reads_back_from_the_database_as_written(run: dict[str, object]) -> None:
    """Through a real store: a job that never started reads back without a run; one that
    did, with every field of its run."""
    with tempfile.TemporaryDirectory() as d:
        store = Store(os.path.join(d, "state.db"))
        try:
            j = Job(3, "c", Q, 2, 1 << 20, depends=(1,), submit_time=5.0, priority=2, retry=1)
            store.insert([j], JobSpec(b"#!/bin/sh\n", "/", "/o", "/e", None, None))
            if run:
                j.state = R
                for k, v in run.items():
                    setattr(j, k, v)
                store.write([j], [Change(j, R, 6.0)])
            store.commit()
            (back,) = store.load_active()
        finally:
            store.close()
    assert (back.run is None) == (not run)
    assert [getattr(back, f) for f in RUN_FIELDS] == [getattr(j, f) for f in RUN_FIELDS]
    assert (back.depends, back.priority, back.retry, back.procs) == ((1,), 2, 1, 2)
