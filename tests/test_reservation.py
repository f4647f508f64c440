"""EASY backfill (sjq.reservation) in the pure scheduler: examples, and a Hypothesis property
that runs a timed simulation (jobs arrive, run for their durations, end) and checks each pass
against a direct reference scan (priorities order the queue, and a job of higher priority
takes the reservation from the one waiting), and the promise to the waiting job: with time limits it
never starts later than its reservation; without, no later than sjq.maxbypass plus the time
the jobs running then take to end."""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from sjq.jobs import Job, Q, S
from sjq.scheduler import Queue


def job(i: int, procs: int = 1, mem: int = 0, limit: float | None = None, prio: int = 0) -> Job:
    return Job(id=i, name=f"j{i}", state=Q, procs=procs, mem=mem, time_limit=limit, priority=prio)


def test_a_job_that_ends_before_the_reservation_may_pass() -> None:
    q = Queue(maxprocs=2, maxmem=None)
    q.add(job(1, limit=100), 0)
    assert [j.id for j in q.schedule(0)] == [1]
    q.add(job(2, procs=2), 1)  # waits for 1: reserved from 100
    q.add(job(3), 1)  # no TIME: could run past 100
    q.add(job(4, limit=50), 1)  # ends by 51: may pass
    assert [j.id for j in q.schedule(1)] == [4]
    res = q.reservation
    assert res is not None
    assert (res.jobid, res.at) == (2, 100)
    q.finish(q.jobs[4], S, 30)
    assert q.schedule(30) == []  # 3 still may not pass
    q.finish(q.jobs[1], S, 60)
    assert [j.id for j in q.schedule(60)] == [2]


def test_what_the_reserved_job_will_not_need_may_be_used() -> None:
    q = Queue(maxprocs=4, maxmem=None)
    q.add(job(1, procs=2, limit=100), 0)
    q.add(job(2, procs=1), 0)  # no TIME
    q.schedule(0)
    q.add(job(3, procs=3), 1)  # needs 3: reserved from 100, when 1 and 1 free CPU give 3
    q.add(job(4, procs=1), 1)  # free at 100: 2 + 1 = 3, no extra: must not pass ...
    assert q.schedule(1) == []
    q2 = Queue(maxprocs=5, maxmem=None)
    q2.add(job(1, procs=2, limit=100), 0)
    q2.add(job(2, procs=1), 0)
    q2.schedule(0)
    q2.add(job(3, procs=3), 1)  # at 100: 2 free + 2 = 4, one more than it needs
    q2.add(job(4, procs=1), 1)  # ... so one CPU job may run past 100
    q2.add(job(5, procs=1), 1)  # but not a second
    assert [j.id for j in q2.schedule(1)] == [4]


def test_the_reservation_belongs_to_the_first_waiting_job_in_priority_order() -> None:
    q = Queue(maxprocs=2, maxmem=None, maxbypass=60)
    q.add(job(1), 0)  # no TIME: no reservation can be computed
    q.schedule(0)
    q.add(job(2, procs=2), 0)
    assert q.schedule(0) == []
    assert q.reservation is not None
    assert (q.reservation.jobid, q.reservation.since) == (2, 0)
    q.add(job(3, procs=2, prio=5), 30)  # first in queue order now: the reservation is its
    assert q.schedule(30) == []
    assert q.reservation is not None
    assert (q.reservation.jobid, q.reservation.since) == (3, 30)
    q.add(job(4), 70)  # 2 waited 70 s, but 3 only 40: later jobs may still pass
    assert [j.id for j in q.schedule(70)] == [4]
    q.finish(q.jobs[4], S, 80)
    q.add(job(5), 95)  # 3 has waited sjq.maxbypass: nothing passes it any more
    assert q.schedule(95) == []
    q.finish(q.jobs[1], S, 100)
    assert [j.id for j in q.schedule(100)] == [3]


def test_without_limits_passing_stops_after_maxbypass() -> None:
    q = Queue(maxprocs=2, maxmem=None, maxbypass=60)
    q.add(job(1), 0)
    q.schedule(0)
    q.add(job(2, procs=2), 0)  # no reservation can be computed: 1 has no TIME
    q.add(job(3), 10)
    assert [j.id for j in q.schedule(10)] == [3]  # within 60 s: passing is allowed
    res = q.reservation
    assert res is not None
    assert (res.at, res.since, res.expired) == (None, 10, False)
    q.finish(q.jobs[3], S, 50)
    q.add(job(4), 70)
    assert q.schedule(70) == []  # the machine drains for 2
    assert q.reservation is not None
    assert q.reservation.expired
    q.finish(q.jobs[1], S, 80)
    assert [j.id for j in q.schedule(80)] == [2]


def test_the_time_limit_with_its_kill_grace_bounds_a_running_job() -> None:
    q = Queue(maxprocs=1, maxmem=None, grace=5)
    q.add(job(1, limit=10), 0)
    q.schedule(0)
    q.add(job(2), 1)
    q.schedule(1)
    assert q.reservation is not None
    assert q.reservation.at == 15  # TIME 10 + sjq.killgrace 5
    q2 = Queue(maxprocs=1, maxmem=None)
    q2.add(job(1, limit=10), 0)
    q2.schedule(0)
    q2.add(job(2), 30)
    q2.schedule(30)  # 1 has overrun its limit: it is being killed, the moment is now
    assert q2.reservation is not None
    assert q2.reservation.at == 30


# -- the timed simulation ------------------------------------------------------------------


@dataclass
class Sim:
    """What the reference knows, kept apart from the queue."""

    maxprocs: int
    maxmem: int | None
    maxbypass: float | None
    jobs: dict[int, Job] = field(default_factory=dict)
    running: dict[int, tuple[int, int, float, float | None]] = field(default_factory=dict)
    head: tuple[int, float] | None = None  # the first waiting job and since when
    started: dict[int, float] = field(default_factory=dict)
    ended: dict[int, float] = field(default_factory=dict)

    def reference_pass(self, ready: list[Job], now: float) -> tuple[list[int], float | None]:
        """EASY, as docs/protocol.md states it, on a plain sorted list: the ids it starts,
        and the head's reservation (None: unknown or no head)."""
        free_p = self.maxprocs - sum(r[0] for r in self.running.values())
        free_m = (
            None if self.maxmem is None else self.maxmem - sum(r[1] for r in self.running.values())
        )
        running = dict(self.running)

        def fits(j: Job, p: int, m: int | None) -> bool:
            return j.procs <= p and (m is None or j.mem <= m)

        out: list[int] = []
        head: Job | None = None
        at: float | None = None
        extra_p, extra_m = 0, None
        since = now
        for j in ready:
            if head is None:
                if fits(j, free_p, free_m):
                    out.append(j.id)
                    running[j.id] = (j.procs, j.mem, now, j.time_limit)
                    free_p -= j.procs
                    free_m = None if free_m is None else free_m - j.mem
                    continue
                head = j
                since = self.head[1] if self.head and self.head[0] == j.id else now
                ends = sorted((max(now, s + lim), p, m) for p, m, s, lim in running.values() if lim)
                p, m = free_p, free_m
                for end, jp, jm in ends:  # what is free at each end, and at the first enough
                    p += jp
                    m = None if m is None else m + jm
                    if at is None and fits(j, p, m):
                        at = end
                if at is not None:  # what is free then: every job that ended by then
                    p = free_p + sum(jp for end, jp, _ in ends if end <= at)
                    m = None if m is None else free_m + sum(jm for end, _, jm in ends if end <= at)
                    extra_p, extra_m = p - j.procs, None if m is None else m - j.mem
                continue
            if not fits(j, free_p, free_m):
                continue
            if at is None:
                if self.maxbypass is not None and now - since >= self.maxbypass:
                    continue
            elif not (j.time_limit and now + j.time_limit <= at):
                if not (j.procs <= extra_p and (extra_m is None or j.mem <= extra_m)):
                    continue
                extra_p -= j.procs
                extra_m = None if extra_m is None else extra_m - j.mem
            out.append(j.id)
            free_p -= j.procs
            free_m = None if free_m is None else free_m - j.mem
        self.head = None if head is None else (head.id, since)
        return out, at


def order(j: Job) -> tuple[int, int]:
    """Queue order: higher priority first, then lower id."""
    return (-j.priority, j.id)


specs = st.lists(
    st.tuples(
        st.integers(0, 5),  # arrives this long after the one before
        st.sampled_from([1, 1, 1, 2, 3, 4]),  # procs
        st.sampled_from([0, 100, 400]),  # mem
        st.one_of(st.none(), st.integers(1, 20)),  # TIME, whole seconds
        st.integers(1, 20),  # how long it runs (no more than its TIME, if it has one)
        st.sampled_from([0, 0, 0, 1, -1]),  # PRIORITY
    ),
    min_size=1,
    max_size=30,
)


@settings(max_examples=400, deadline=None)
@given(
    st.integers(1, 4),
    st.sampled_from([None, 1000]),
    st.sampled_from([None, 0.0, 5.0, 30.0]),
    specs,
)
def test_easy_backfill_against_a_direct_simulation(
    maxprocs: int,
    maxmem: int | None,
    maxbypass: float | None,
    jobs: list[tuple[int, int, int, int | None, int, int]],
) -> None:
    q = Queue(maxprocs=maxprocs, maxmem=maxmem, maxbypass=maxbypass)
    sim = Sim(maxprocs, maxmem, maxbypass)
    events: list[tuple[float, int, int]] = []  # (time, 0 end / 1 arrival, job id)
    durations: dict[int, float] = {}
    t = 0.0
    for i, (gap, procs, mem, limit, run, prio) in enumerate(jobs, start=1):
        if procs > maxprocs:
            continue
        t += gap
        j = job(i, procs, mem, None if limit is None else float(limit), prio)
        durations[i] = float(min(run, limit) if limit is not None else run)
        sim.jobs[i] = j
        heapq.heappush(events, (t, 1, i))
    reservations: dict[int, float] = {}  # the first known reservation of each head
    heads: dict[int, float] = {}  # since when each job was the head
    # Heads a job of higher priority came before (it took the reservation, or fitted and
    # started first): the promise is to the first job in queue order, and priorities still
    # order the queue.
    displaced: set[int] = set()
    head_before: int | None = None
    while events:
        now = events[0][0]
        while events and events[0][0] == now:
            _, kind, i = heapq.heappop(events)
            if kind == 0:
                q.finish(q.jobs[i], S, now)
                del sim.running[i]
                sim.ended[i] = now
            else:
                q.add(sim.jobs[i], now)
        ready = sorted((j for j in q.jobs.values() if j.state is Q), key=order)
        want, at = sim.reference_pass(ready, now)
        got = [j.id for j in q.schedule(now)]
        assert got == want, f"at {now}: the pass started {got}, the reference {want}"
        for h in heads:
            if h not in sim.started and any(order(sim.jobs[i]) < order(sim.jobs[h]) for i in got):
                displaced.add(h)
        for i in got:
            j = sim.jobs[i]
            sim.running[i] = (j.procs, j.mem, now, j.time_limit)
            sim.started[i] = now
            heapq.heappush(events, (now + durations[i], 0, i))
        if (
            head_before is not None
            and head_before not in sim.started
            and (sim.head is None or sim.head[0] != head_before)
        ):
            displaced.add(head_before)  # a job of higher priority took the reservation
        head_before = None if sim.head is None else sim.head[0]
        if sim.head is not None:
            h, since = sim.head
            heads.setdefault(h, since)
            res = q.reservation
            assert res is not None
            assert (res.jobid, res.at, res.since) == (h, at, since)
            if at is not None and h not in displaced:
                assert at <= reservations.get(h, at), "a reservation never moves later"
                reservations.setdefault(h, at)
    assert len(sim.ended) == len(sim.jobs), "every job ran"
    for h, at in reservations.items():
        if h in displaced:
            continue
        assert sim.started[h] <= at, f"job {h} reserved from {at}, started {sim.started[h]}"
    if maxbypass is None:
        return
    for h, since in heads.items():
        if h in reservations or h in displaced:
            continue
        expiry = since + maxbypass
        # (a job started at the expiry itself was started ahead of the head by the pass
        # that made it the head: sjq.maxbypass 0 expires at once)
        then = [sim.ended[i] for i, s in sim.started.items() if s <= expiry < sim.ended[i]]
        bound = max([expiry, *then])
        assert sim.started[h] <= bound, f"job {h} waited past sjq.maxbypass and the drain"


def test_an_armed_head_keeps_its_reservation_and_its_place() -> None:
    """The first waiting job may be armed (a keeper starts it as the running job ends): the
    pass cannot start it, but later jobs pass it only as they may pass any reserved job,
    and its time as the head keeps counting."""
    q = Queue(maxprocs=2, maxmem=None, maxbypass=60)
    q.add(job(1), 0)
    q.schedule(0)
    big = job(2, procs=2)
    q.add(big, 0)
    assert q.schedule(0) == []
    assert q.reservation is not None
    assert (q.reservation.jobid, q.reservation.since) == (2, 0)
    q.arm(big)  # as sjq.arming does with one job running: 2 starts when 1 ends
    q.add(job(3), 30)
    assert [j.id for j in q.schedule(30)] == [3]  # within sjq.maxbypass of 2's wait
    assert q.reservation is not None
    assert (q.reservation.jobid, q.reservation.since) == (2, 0)
    q.finish(q.jobs[3], S, 40)
    q.add(job(4), 70)
    assert q.schedule(70) == []  # 2 has waited 70 s: the machine drains for it, armed or not
    q.disarm(big)
    q.finish(q.jobs[1], S, 80)
    assert [j.id for j in q.schedule(80)] == [2]


def test_gpus_count_in_the_reservation() -> None:
    """A job waiting for both GPUs is reserved from when the GPU job with a TIME ends; a
    later GPU job that would run past that may not pass, a CPU-only one may."""
    q = Queue(maxprocs=4, maxmem=None, maxgpus=2)
    first = job(1, limit=100)
    first.gpus = 1
    q.add(first, 0)
    assert [j.id for j in q.schedule(0)] == [1]
    both = job(2)
    both.gpus = 2
    q.add(both, 1)
    late = job(3)  # no TIME, one GPU: would hold it past 100
    late.gpus = 1
    q.add(late, 1)
    q.add(job(4), 1)  # no GPU: fits in what the reserved job will not need
    assert [j.id for j in q.schedule(1)] == [4]
    res = q.reservation
    assert res is not None
    assert (res.jobid, res.at, res.extra_gpus) == (2, 100, 0)
    q.finish(q.jobs[1], S, 60)
    assert [j.id for j in q.schedule(60)] == [2]
