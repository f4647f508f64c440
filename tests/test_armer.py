"""The daemon's arming bookkeeping (sjq.armer.Armer) with a real token pipe and a real Queue,
no daemon and no keeper: the tokens a keeper would take are taken here with the keeper's own
`take_token`. The keepers' links are small recorders of what was sent to them (decoded with
the real framing), and ``later`` records the timers the armer asks for."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from sjq.armer import PUT_RETRY, Armer
from sjq.arming import ARM_LOW
from sjq.contain.cpus import Topology
from sjq.devices import Devices
from sjq.jobs import ExitRecord, Job, JobLaunch, JobState
from sjq.keeper import messages as m
from sjq.keeper.tokens import ArmPipe, take_token
from sjq.scheduler import Queue
from sjq.shapes import ready_job

Q, R = JobState.QUEUED, JobState.RUNNING


@dataclass(eq=False)
class Link:
    """A keeper as the armer sees it: whether it is alive, how much it has not read, and
    every message sent to it."""

    alive: bool = True
    pending: int = 0
    sent: list[m.ToKeeper] = field(default_factory=list)

    def unread(self) -> int:
        return self.pending

    def send(self, data: bytes) -> None:
        buf = bytearray(data)
        self.sent.extend(m.decode_from_daemon(buf))
        assert not buf, "whole frames only"

    def arms(self) -> list[m.Arm]:
        return [msg for msg in self.sent if isinstance(msg, m.Arm)]


@dataclass
class Timer:
    delay: float
    fn: Callable[[], None]
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


@dataclass
class Later:
    """``later(delay, fn)``: remembered; ``fire()`` runs what is due, as the loop would."""

    timers: list[Timer] = field(default_factory=list)

    def __call__(self, delay: float, fn: Callable[[], None]) -> Timer:
        t = Timer(delay, fn)
        self.timers.append(t)
        return t

    def fire(self) -> None:
        due, self.timers = self.timers, []
        for t in due:
            if not t.cancelled:
                t.fn()


def launch(job: Job) -> JobLaunch:
    return JobLaunch(job.id, b"#!/bin/sh\n", "/", "/dev/null", "/dev/null", {})


@dataclass
class Rig:
    queue: Queue
    pipe: ArmPipe
    later: Later
    armer: Armer

    def add(self, jobid: int, procs: int = 1, prio: int = 0) -> Job:
        j = Job(id=jobid, name=f"j{jobid}", state=Q, procs=procs, mem=0, priority=prio)
        self.queue.add(j, 0.0)
        return j

    def take(self) -> int | None:
        """What a keeper whose capable job ends does: take one token."""
        return take_token(self.pipe.read_fd)

    def taken_jobs(self, n: int) -> list[int]:
        """Take ``n`` tokens; the ids of the jobs they stand for."""
        seqs = [self.take() for _ in range(n)]
        return [self.armer.tokens[s].job.id for s in seqs if s is not None]


@pytest.fixture
def make_rig() -> Iterator[Callable[[int], Rig]]:
    pipes: list[ArmPipe] = []

    def make(maxprocs: int) -> Rig:
        q = Queue(maxprocs, None)
        pipe = ArmPipe()
        pipes.append(pipe)
        later = Later()
        return Rig(q, pipe, later, Armer(pipe, q, launch, later))

    yield make
    for p in pipes:
        os.close(p.read_fd)
        os.close(p.write_fd)


def two_running(rig: Rig, queued: int) -> tuple[Job, Job]:
    """Jobs 1 and 2 running on a 2-CPU queue, ``queued`` more of one CPU behind them."""
    for i in range(1, queued + 3):
        rig.add(i)
    a, b = rig.queue.schedule(0.0)
    return a, b


def exited(jobid: int, *, claimed: int | None, started: int | None) -> m.Exited:
    rec = ExitRecord(jobid, 100 + jobid, 0, None, 5.0, 0.0, 0.0, 0)
    return m.Exited(rec, started_next=started, claimed=claimed)


def test_tokens_go_in_in_plan_order_and_every_keeper_learns_what_they_stand_for(
    make_rig: Callable[[int], Rig],
) -> None:
    rig = make_rig(2)
    a, b = two_running(rig, 6)
    ka, kb = Link(), Link()
    rig.armer.update([(a, ka), (b, kb)], [ka, kb], durable_below=100)

    assert rig.pipe.level() == 6
    (arm_a,) = ka.arms()
    (arm_b,) = kb.arms()
    assert arm_a.capable == (1,)  # each keeper hears which of its own jobs may take one
    assert arm_b.capable == (2,)
    assert arm_a.entries == arm_b.entries
    assert arm_a.live == frozenset(e.token for e in arm_a.entries)
    assert arm_a.low == ARM_LOW * 2
    entries = {e.token: e for e in arm_a.entries}
    assert all(e.after is None and not e.need_success for e in entries.values())
    # The pipe hands them out first in, first out: the first end starts job 3, then 4 ...
    order = [rig.take() for _ in range(6)]
    assert [entries[s].launch.jobid for s in order if s is not None] == [3, 4, 5, 6, 7, 8]
    assert rig.take() is None
    assert all(rig.queue.jobs[i].armed for i in range(3, 9))
    assert rig.armer.capable == {1, 2}
    assert [j.id for j in rig.armer.armed()] == [3, 4, 5, 6, 7, 8]


def test_a_keeper_that_runs_no_job_is_not_woken_until_it_runs_one(
    make_rig: Callable[[int], Rig],
) -> None:
    """A keeper with no running job takes no token: arming it would only wake it (on the
    CPU of a pinned job, as often as not). With its first job it hears of every live one."""
    rig = make_rig(3)
    for i in range(1, 40):
        rig.add(i)
    a, b, c = rig.queue.schedule(0.0)
    busy, idle = Link(), Link()
    rig.armer.update([(a, busy), (b, busy)], [busy, idle], durable_below=100)
    assert len(busy.arms()) == 1
    assert idle.sent == []
    before = {e.token: e.launch.jobid for e in busy.arms()[0].entries}
    # The daemon's pass started job c on the idle keeper: it learns of all live entries,
    # those armed before and those added now; the busy keeper only of the new ones.
    rig.armer.update([(a, busy), (b, busy), (c, idle)], [busy, idle], durable_below=100)
    (first,) = idle.arms()
    assert first.capable == (c.id,)
    live = {e.token: e.launch.jobid for e in first.entries}
    assert first.live == frozenset(live) == frozenset(rig.armer.tokens)
    assert before.items() <= live.items()
    new = busy.arms()[-1]
    assert {e.token for e in new.entries} == live.keys() - before.keys()
    # From then on it hears what every other keeper hears.
    rig.armer.take_back()
    rig.armer.update([(a, busy), (b, busy), (c, idle)], [busy, idle], durable_below=100)
    assert idle.arms()[-1].entries == busy.arms()[-1].entries != ()


def test_only_jobs_whose_submission_is_committed_are_armed(
    make_rig: Callable[[int], Rig],
) -> None:
    rig = make_rig(2)
    a, b = two_running(rig, 6)
    k = Link()
    rig.armer.update([(a, k), (b, k)], [k], durable_below=5)
    assert [e.launch.jobid for e in k.arms()[0].entries] == [3, 4]
    assert not rig.queue.jobs[5].armed


def test_nothing_is_armed_without_runners(make_rig: Callable[[int], Rig]) -> None:
    rig = make_rig(2)
    two_running(rig, 3)
    k = Link()
    rig.armer.update([], [k], durable_below=100)
    assert k.sent == []
    assert rig.pipe.level() == 0


def test_tokens_wait_until_no_keeper_has_unread_data(make_rig: Callable[[int], Rig]) -> None:
    rig = make_rig(2)
    a, b = two_running(rig, 3)
    busy, dead = Link(pending=4096), Link(alive=False, pending=1 << 20)
    rig.armer.update([(a, busy), (b, busy)], [busy, dead], durable_below=100)
    assert len(busy.arms()) == 1
    assert dead.sent == [], "a keeper that is gone is told nothing"
    # The keeper has not read what the tokens stand for: a token now would be one it
    # could not use.
    assert rig.pipe.level() == 0
    assert [t.delay for t in rig.later.timers] == [PUT_RETRY]
    rig.later.fire()
    assert rig.pipe.level() == 0, "still unread: not yet"
    assert [t.delay for t in rig.later.timers] == [PUT_RETRY]
    busy.pending = 0  # the dead keeper's backlog does not count
    rig.later.fire()
    assert rig.pipe.level() == 3
    assert rig.later.timers == []
    # While tokens are unsent, planning waits.
    rig.armer.update([(a, busy), (b, busy)], [busy, dead], durable_below=100)
    assert len(busy.arms()) == 1


def test_close_cancels_a_pending_put(make_rig: Callable[[int], Rig]) -> None:
    rig = make_rig(2)
    a, b = two_running(rig, 3)
    k = Link(pending=1)
    rig.armer.update([(a, k), (b, k)], [k], durable_below=100)
    (timer,) = rig.later.timers
    rig.armer.close()
    assert timer.cancelled


def test_take_back_returns_untaken_tokens_and_remembers_taken_ones(
    make_rig: Callable[[int], Rig],
) -> None:
    rig = make_rig(2)
    a, b = two_running(rig, 5)
    k = Link()
    rig.armer.update([(a, k), (b, k)], [k], durable_below=100)
    assert rig.taken_jobs(2) == [3, 4]  # two keepers took one each

    rig.armer.take_back()
    assert rig.pipe.level() == 0
    assert rig.armer.tokens == {}
    assert sorted(e.job.id for e in rig.armer.taken.values()) == [3, 4]
    assert [j.id for j in rig.armer.armed()] == [3, 4], "starts under way stay armed"
    # ... and the untaken ones are ready jobs again, for the passes to see.
    assert [i for i in range(3, 8) if ready_job(rig.queue.jobs[i])] == [5, 6, 7]


def test_exit_records_settle_taken_tokens(make_rig: Callable[[int], Rig]) -> None:
    rig = make_rig(2)
    a, b = two_running(rig, 5)
    k = Link()
    rig.armer.update([(a, k), (b, k)], [k], durable_below=100)
    by_job = {e.job.id: seq for seq, e in rig.armer.tokens.items()}
    assert rig.taken_jobs(2) == [3, 4]
    rig.armer.take_back()

    # Job 1 ended, its keeper took job 3's token and started it.
    rig.armer.exited(exited(1, claimed=by_job[3], started=3))
    assert 1 not in rig.armer.capable
    assert by_job[3] not in rig.armer.taken
    assert rig.queue.jobs[3].armed, "the daemon starts it next (State.armed_start)"
    # Job 2 ended, its keeper took job 4's token but did not start it (e.g. it did not fit).
    rig.armer.exited(exited(2, claimed=by_job[4], started=None))
    assert rig.armer.taken == {}
    assert not rig.queue.jobs[4].armed
    assert [j.id for j in rig.queue.schedule(5.0)] == [], "1 and 2 still hold their CPUs"
    assert rig.queue.best_shape(2, None) is not None


def test_an_exit_that_claimed_a_token_still_in_the_armer_settles_it(
    make_rig: Callable[[int], Rig],
) -> None:
    rig = make_rig(2)
    a, b = two_running(rig, 3)
    k = Link()
    rig.armer.update([(a, k), (b, k)], [k], durable_below=100)
    by_job = {e.job.id: seq for seq, e in rig.armer.tokens.items()}
    assert rig.taken_jobs(1) == [3]
    # The exit record arrives before any take_back: the token is still counted as in the pipe.
    rig.armer.exited(exited(1, claimed=by_job[3], started=None))
    assert by_job[3] not in rig.armer.tokens
    assert not rig.queue.jobs[3].armed
    rig.armer.take_back()
    assert rig.armer.taken == {}
    assert rig.armer.armed() == []


def test_a_changed_plan_takes_every_token_back_and_arms_anew(
    make_rig: Callable[[int], Rig],
) -> None:
    rig = make_rig(2)
    a, b = two_running(rig, 4)
    k = Link()
    rig.armer.update([(a, k), (b, k)], [k], durable_below=100)
    first = set(rig.armer.tokens)
    rig.add(9, prio=5)  # comes before every armed job
    rig.armer.update([(a, k), (b, k)], [k], durable_below=100)
    _, new = k.arms()
    assert new.live.isdisjoint(first), "old tokens mean nothing any more"
    assert new.live == frozenset(rig.armer.tokens)
    assert [e.launch.jobid for e in new.entries] == [9, 3, 4, 5, 6]
    assert rig.pipe.level() == 5
    seq = rig.take()
    assert seq is not None
    assert rig.armer.tokens[seq].job.id == 9


def test_a_plan_change_while_a_token_is_taken_waits_for_its_exit_record(
    make_rig: Callable[[int], Rig],
) -> None:
    rig = make_rig(2)
    a, b = two_running(rig, 4)
    k = Link()
    rig.armer.update([(a, k), (b, k)], [k], durable_below=100)
    assert rig.taken_jobs(1) == [3]
    rig.add(9, prio=5)
    rig.armer.update([(a, k), (b, k)], [k], durable_below=100)
    assert len(k.arms()) == 1, "nothing armed again yet"
    assert rig.armer.tokens == {}
    assert [j.id for j in rig.armer.armed()] == [3]


def test_while_enough_tokens_are_left_nothing_more_is_sent(
    make_rig: Callable[[int], Rig],
) -> None:
    rig = make_rig(2)
    a, b = two_running(rig, 40)
    k = Link()
    rig.armer.update([(a, k), (b, k)], [k], durable_below=1000)
    level = rig.pipe.level()
    assert level > ARM_LOW * 2
    rig.armer.update([(a, k), (b, k)], [k], durable_below=1000)
    assert len(k.arms()) == 1
    assert rig.pipe.level() == level


def test_once_few_are_left_more_go_in_behind_them(make_rig: Callable[[int], Rig]) -> None:
    rig = make_rig(2)
    a, b = two_running(rig, 60)
    k = Link()
    rig.armer.update([(a, k), (b, k)], [k], durable_below=1000)
    first = [e.launch.jobid for e in k.arms()[0].entries]
    # Keepers took all but ARM_LOW per runner; their exit records have said what they started.
    gone = rig.taken_jobs(len(first) - ARM_LOW * 2)
    for jobid in gone:
        seq = next(s for s, e in rig.armer.tokens.items() if e.job.id == jobid)
        rig.armer.exited(exited(1, claimed=seq, started=jobid))
        job = rig.queue.jobs[jobid]
        rig.queue.start_armed(job, 1.0)
        rig.queue.finish(job, JobState.SUCCESS, 2.0)
    rig.armer.update([(a, k), (b, k)], [k], durable_below=1000)
    _, top_up = k.arms()
    added = [e.launch.jobid for e in top_up.entries]
    assert added[0] == first[-1] + 1, "behind the ones still in the pipe, in order"
    assert rig.pipe.level() == ARM_LOW * 2 + len(added)
    # The pipe still hands out the older ones first.
    assert rig.taken_jobs(1) == [first[len(gone)]]


def test_a_taken_token_not_covered_by_its_runner_holds_back_further_arming(
    make_rig: Callable[[int], Rig],
) -> None:
    """One runner: its entry may use the free CPUs too, so until the exit record says what
    the taken token started, nothing else may be armed on those CPUs."""
    rig = make_rig(2)
    runner = rig.add(1)
    rig.add(2, procs=2)  # does not fit beside it: it needs the runner's CPU and the free one
    (started,) = rig.queue.schedule(0.0)
    assert started is runner
    k = Link()
    rig.armer.update([(runner, k)], [k], durable_below=100)
    (entry,) = k.arms()[0].entries
    assert entry.launch.jobid == 2
    assert rig.armer.covered()
    (seq,) = [s for s in [rig.take()] if s is not None]
    rig.armer.take_back()
    assert not rig.armer.covered()
    rig.armer.update([(runner, k)], [k], durable_below=100)
    assert len(k.arms()) == 1
    rig.armer.exited(exited(1, claimed=seq, started=None))
    assert rig.armer.covered()
    assert not rig.queue.jobs[2].armed


def test_keepers_hear_which_cpus_no_job_holds(make_rig: Callable[[int], Rig]) -> None:
    """``Arm.spare``: the CPUs neither running job holds nor an armed start has set aside,
    where a keeper goes on after starting a pinned job (``Guard.aside_of``)."""
    rig = make_rig(2)
    devices = Devices(Topology.flat([0, 1, 2, 3]))
    rig.armer = Armer(rig.pipe, rig.queue, launch, rig.later, devices=devices)
    a, b = two_running(rig, 4)
    devices.take(a)
    devices.take(b)
    ka, kb = Link(), Link()
    rig.armer.update([(a, ka), (b, kb)], [ka, kb], durable_below=100)
    held = {*(a.cpu_ids or ()), *(b.cpu_ids or ())}
    assert len(held) == 2
    (arm,) = ka.arms()
    assert set(arm.spare) == {0, 1, 2, 3} - held
    assert kb.arms()[0].spare == arm.spare
