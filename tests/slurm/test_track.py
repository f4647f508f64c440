"""sjq.slurm.track, pure: which events one status answer gives, and the poll interval. The
rule that makes submission idempotent is a property: a job is declared absent (and so
submitted again) only by a complete answer taken SETTLE seconds after the doubt arose that
does not list its tag, and never while its tag is listed."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sjq.protocol import JobState
from sjq.slurm.parse import SlurmJob
from sjq.slurm.track import (
    SETTLE,
    Absent,
    Began,
    Ended,
    Found,
    Missing,
    Tracked,
    Waiting,
    apply,
    next_interval,
    observe,
    owner,
    settled,
)

ME = "host-1a2b"


def rec(jobid: int, key: str, state: str = "PENDING", **kw: object) -> SlurmJob:
    return SlurmJob(key=key, job_id=int(key), state=state, comment=f"sjq:{ME}:{jobid}", **kw)  # type: ignore[arg-type]


def test_events_of_one_answer() -> None:
    tracked = {
        1: Tracked(1, "11"),
        2: Tracked(2, None, uncertain_since=0.0),
        3: Tracked(3, "13", shown=JobState.RUNNING),
        4: Tracked(4, "14"),
        5: Tracked(5, None, uncertain_since=0.0),
        6: Tracked(6, None),  # sbatch under way: nothing to say yet
    }
    records = [
        rec(1, "11", "RUNNING", node="n1"),
        rec(2, "12", "PENDING", reason="Priority"),
        rec(3, "13", "COMPLETED", exit_code=0),
        SlurmJob(key="99", job_id=99, state="RUNNING", comment="sjq:other:1"),
    ]
    events = observe(tracked, records, ME, asked_at=SETTLE)
    assert Began(1, None, "n1") in events
    assert Found(2, "12") in events
    assert Waiting(2, JobState.QUEUED, "Priority") in events
    assert Ended(3, JobState.SUCCESS, "", records[2]) in events
    assert Missing(4, "14") in events
    assert Absent(5) in events
    assert not [e for e in events if e.jobid == 6]
    for e in events:
        apply(tracked, e)
    assert tracked[2].slurm_id == "12"
    assert 3 not in tracked
    assert 5 not in tracked


def test_an_answer_older_than_an_id_says_nothing_of_it() -> None:
    tracked = {1: Tracked(1, "11", known_since=5.0)}
    assert observe(tracked, [], ME, asked_at=4.9) == []
    assert observe(tracked, [], ME, asked_at=5.0) == [Missing(1, "11")]


def test_a_partial_answer_reports_only_what_it_lists() -> None:
    tracked = {1: Tracked(1, "11"), 2: Tracked(2, None, uncertain_since=0.0)}
    assert observe(tracked, [], ME, asked_at=100.0, complete=False) == []


@given(
    uncertain_since=st.floats(0, 100),
    asked_at=st.floats(0, 200),
    listed=st.booleans(),
    complete=st.booleans(),
)
def test_absent_only_when_proven(
    uncertain_since: float, asked_at: float, listed: bool, complete: bool
) -> None:
    tracked = {7: Tracked(7, None, uncertain_since=uncertain_since)}
    records = [rec(7, "70", "RUNNING")] if listed else []
    events = observe(tracked, records, ME, asked_at, complete)
    absent = Absent(7) in events
    assert absent == (not listed and complete and asked_at >= uncertain_since + SETTLE)
    assert (Found(7, "70") in events) == listed


@given(
    current=st.floats(0.01, 100),
    changed=st.booleans(),
    lo=st.floats(0.01, 5),
    span=st.floats(0, 50),
)
def test_the_interval_stays_within_its_bounds(
    current: float, changed: bool, lo: float, span: float
) -> None:
    hi = lo + span
    nxt = next_interval(current, changed, lo, hi)
    assert lo <= nxt <= hi
    if changed:
        assert nxt == lo


def task(base: int, master: int, index: int, state: str = "PENDING", **kw: object) -> SlurmJob:
    """A task of a batch (one sbatch --array for several elements)."""
    tag = f"sjq:{ME}:a{base}"
    return SlurmJob(key=f"{master}_{index}", job_id=master + index, state=state,  # type: ignore[arg-type]
                    array_job_id=master, array_task_id=index, comment=tag, **kw)  # fmt: skip


def test_a_batchs_tasks_are_its_elements() -> None:
    assert owner(task(100, 500, 3)) == (ME, 103)
    assert owner(rec(7, "77")) == (ME, 7)
    unsplit = SlurmJob(key="500_[4-9]", job_id=500, state="PENDING", comment=f"sjq:{ME}:a100")
    assert owner(unsplit) is None  # not one task: squeue runs with --array, one per line
    tracked = {
        100: Tracked(100, "500_0", shown=JobState.RUNNING),
        101: Tracked(101, None, uncertain_since=0.0),  # sbatch's answer was lost
        102: Tracked(102, "500_2"),
        103: Tracked(103, None, uncertain_since=0.0),
    }
    records = [
        task(100, 500, 0, "COMPLETED", exit_code=0),
        task(100, 500, 1, "RUNNING", node="n1"),
        task(100, 500, 2, "PENDING", reason="JobArrayTaskLimit"),
        task(99, 500, 4),  # another batch of which task 4 is job 99 + 4
    ]
    events = observe(tracked, records, ME, asked_at=SETTLE)
    assert Ended(100, JobState.SUCCESS, "", records[0]) in events
    assert Found(101, "500_1") in events
    assert Began(101, None, "n1") in events
    assert Waiting(102, JobState.QUEUED, "JobArrayTaskLimit") in events
    assert Found(103, "500_4") in events


def test_a_record_of_another_attempt_is_not_the_tracked_one() -> None:
    """A retried job (RETRY) is tracked as its new attempt: the record of the one before,
    which squeue lists for MinJobAge after its end, neither gives the new one's id nor ends
    it, and does not keep it from being proven absent."""

    def attempt(n: int, key: str, state: str = "PENDING", status: int = 0) -> SlurmJob:
        tag = f"sjq:{ME}:7" if n == 1 else f"sjq:{ME}:7.{n}"
        return SlurmJob(key=key, job_id=int(key), state=state, comment=tag, exit_code=status)

    old = attempt(1, "70", "FAILED", 1)
    uncertain = {7: Tracked(7, None, uncertain_since=0.0, attempt=2)}
    assert observe(uncertain, [old], ME, asked_at=SETTLE) == [Absent(7)]
    new = attempt(2, "71")
    assert observe(uncertain, [old, new], ME, asked_at=SETTLE) == [Found(7, "71")]
    known = {7: Tracked(7, "71", attempt=2)}
    assert observe(known, [attempt(2, "71", "COMPLETED"), old], ME, asked_at=SETTLE) == [
        Ended(7, JobState.SUCCESS, "", attempt(2, "71", "COMPLETED"))
    ]
    third = {7: Tracked(7, None, uncertain_since=0.0, attempt=3)}
    assert observe(third, [old, new], ME, asked_at=SETTLE) == [Absent(7)]
    assert owner(new) == (ME, 7)


def test_a_batchs_tasks_are_first_attempts() -> None:
    retried = {103: Tracked(103, None, uncertain_since=0.0, attempt=2)}
    assert observe(retried, [task(100, 500, 3, "FAILED")], ME, asked_at=SETTLE) == [Absent(103)]


def test_an_ended_sacct_record_without_its_end_time_is_not_settled() -> None:
    """slurmdbd writes a cancel in steps: sacct may list CANCELLED before the end time and
    who cancelled it are written."""
    partial = SlurmJob(key="5", job_id=5, state="CANCELLED", source="sacct")
    assert not settled(partial)
    assert settled(SlurmJob(key="5", job_id=5, state="CANCELLED", source="sacct", end=1.0))
    assert settled(SlurmJob(key="5", job_id=5, state="RUNNING", source="sacct"))
    assert settled(SlurmJob(key="5", job_id=5, state="CANCELLED"))  # squeue's: as it stands
