"""The pure scheduler in handover mode (sjq.backend = slurm): a started job is handed to Slurm,
so an ``after`` condition holds once Slurm runs it (``began``) or it ended, not at the hand-over;
array limits are Slurm's, so every element is handed over at once; recovery knows from a job's
record whether Slurm ran it."""

from __future__ import annotations

from sjq.conditions import AFTER, parents, resolve
from sjq.jobs import H, Job, JobState, K, Q, R, S
from sjq.scheduler import Queue


def job(i: int, state: JobState = Q, **kw: object) -> Job:
    j = Job(id=i, name=f"j{i}", state=state, procs=1, mem=0)
    for key, value in kw.items():  # what a started job has (Job.run) too
        setattr(j, key, value)
    return j


def slurm_queue() -> Queue:
    return Queue(1 << 62, None, handover=True)


def test_after_holds_once_slurm_runs_the_parent() -> None:
    q = slurm_queue()
    q.add(job(1), 0)
    q.add(job(2, H, dependency="after:1"), 0, conds=[(1, AFTER)])
    assert [j.id for j in q.schedule(0)] == [1]  # handed to Slurm
    assert not q.started(q.jobs[1])
    assert q.schedule(1) == []
    assert q.jobs[2].state is H
    cond = resolve(parents((), "after:1"), q.get, lambda i: None, q.started)
    assert cond.conds == [(1, AFTER)]  # a new job waits too
    q.began(1, 2)
    assert q.started(q.jobs[1])
    assert q.jobs[2].state is Q
    assert [j.id for j in q.schedule(2)] == [2]
    assert resolve(parents((), "after:1"), q.get, lambda i: None, q.started).conds == []


def test_after_holds_when_the_parent_ends_without_running() -> None:
    q = slurm_queue()
    q.add(job(1), 0)
    q.add(job(2, H), 0, conds=[(1, AFTER)])
    q.schedule(0)
    q.kill(1, 1)
    q.finish(q.jobs[1], K, 1)  # cancelled while it waited in Slurm
    assert q.jobs[2].state is Q


def test_locally_the_start_is_the_run() -> None:
    q = Queue(4, None)
    q.add(job(1), 0)
    q.add(job(2, H), 0, conds=[(1, AFTER)])
    assert [j.id for j in q.schedule(0)] == [1, 2]  # 2 is met by 1's start, in the same pass
    assert q.started(q.jobs[1])


def test_array_limits_are_left_to_slurm() -> None:
    q = slurm_queue()
    q.limit_array(10, 2)
    for i in range(10, 15):
        q.add(job(i, array=10), 0)
    assert [j.id for j in q.schedule(0)] == [10, 11, 12, 13, 14]
    local = Queue(8, None)
    local.limit_array(10, 2)
    for i in range(10, 15):
        local.add(job(i, array=10), 0)
    assert [j.id for j in local.schedule(0)] == [10, 11]


def test_recovered_jobs_began_as_their_records_say() -> None:
    q = slurm_queue()
    q.add(job(1, R, backend_id="7", shown=None), 0)  # running in Slurm
    q.add(job(2, R, backend_id="8", shown=Q), 0)  # waiting there
    q.add(job(3, R), 0)  # not yet submitted
    assert [q.started(q.jobs[i]) for i in (1, 2, 3)] == [True, False, False]
    q.add(job(4, H), 0, conds=[(2, AFTER)])
    q.began(2, 1)
    assert q.jobs[4].state is Q
    q.finish(q.jobs[3], S, 2)
    assert 3 not in q.jobs
