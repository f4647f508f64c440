"""The pure scheduler: active jobs, their dependency graph and the FCFS/backfill pass.

No I/O, no clock, no asyncio: every method takes ``now`` and returns decisions, so the
same code runs in the daemon, in Hypothesis tests and in simulations.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator

from sjq import shapes
from sjq.conditions import AFTEROK, ended_reason, holds_after_end
from sjq.graph import Graph
from sjq.jobs import TERMINAL, A, Change, H, Job, JobState, K, Q, R, Run, U
from sjq.reservation import Reservation, reserve

__all__ = ["Queue"]

ALL = 1 << 62  # CPUs: more than any job asks for


class Queue:
    """Every job that has not ended, indexed so that a pass costs what changed.

    Ready (``Q``) jobs sit in one heap per shape ``(procs, mem, TIME, gpus)``; a pass looks
    only at the heads of the shapes that fit, so 100,000 waiting jobs of a few shapes cost no
    more to schedule than ten. (TIME is in the shape because whether a job may pass a
    reserved one depends on it: within a heap, the head decides for all.) GPUs are counted
    here like CPUs; which devices a job gets is the daemon's ``sjq.devices``. Dependencies
    are a reverse index parent -> children (``graph``, ``sjq.graph``), so an exit touches
    only the jobs that waited on it.
    """

    def __init__(
        self,
        maxprocs: int,
        maxmem: int | None,
        *,
        maxgpus: int = 0,
        maxbypass: float | None = None,
        grace: float = 0.0,
        handover: bool = False,
    ) -> None:
        self.maxprocs = maxprocs
        self.maxmem = maxmem
        self.maxgpus = maxgpus
        self.maxbypass = maxbypass  # sjq.maxbypass; None: later jobs may always pass
        self.grace = grace  # sjq.killgrace: how long past its TIME a job may still run
        # The first waiting job's reservation as the last pass left it (sjq.reservation),
        # and since when that job has been first.
        self.reservation: Reservation | None = None
        self._head: tuple[int, float] | None = None
        self._running: dict[int, Job] = {}
        # Jobs armed for keepers (sjq.arming): out of the ready heaps, but still in line; the
        # first waiting job may be one of them, and its reservation holds all the same.
        self._armed: dict[int, Job] = {}
        self.used_procs = 0
        self.used_mem = 0
        self.used_gpus = 0
        self.jobs: dict[int, Job] = {}
        self.counts: dict[JobState, int] = dict.fromkeys(JobState, 0)
        self.changes: list[Change] = []  # every state change, for the caller to record
        self.ended = 0  # jobs that reached a final state since the caller last looked
        self.graph = Graph(self.jobs)  # who waits on whom, among the jobs above
        # shape -> heap of (-priority, id), see sjq.shapes; an array with a limit has heaps
        # of its own, which a pass skips while that many of its elements run
        self.ready: shapes.Heaps = {}
        # array -> [limit, running, active] for arrays with a limit of elements at once
        self.limits: dict[int, list[int]] = {}
        # Under sjq.backend = slurm a job started here is handed to Slurm: it has begun only
        # once Slurm runs it (``began``), which is what an ``after`` condition waits for, and
        # Slurm applies an array's limit (``full`` is never true).
        self.handover = handover
        self._not_begun: set[int] = set()  # handed over, not yet running there

    # -- queries ---------------------------------------------------------------

    def get(self, jobid: int) -> Job | None:
        return self.jobs.get(jobid)

    def full(self, job: Job, ending: Job | None = None) -> bool:
        """Whether ``job``'s array runs as many elements as its limit allows (counting
        ``ending``, a running job, as ended)."""
        lim = self.limits.get(job.array) if job.array and not self.handover else None
        if lim is None:
            return False
        running = lim[1] - (ending is not None and ending.array == job.array)
        return running >= lim[0]

    def running(self) -> Iterator[Job]:
        return iter(list(self._running.values()))

    def started(self, job: Job) -> bool:
        """Whether ``job`` (active) has started: an ``after`` condition on it holds."""
        return job.state is R and job.id not in self._not_begun

    @property
    def busy(self) -> bool:
        """Whether anything is running or runnable. Jobs waiting on dependencies (H) do not
        count on their own: with nothing running or runnable, each of them waits, directly
        or through other waiting jobs, on a held (U) job, and held jobs do not keep the
        daemon alive (they are in the database for the next start)."""
        c = self.counts
        return bool(c[R] or c[Q])

    # -- events ----------------------------------------------------------------

    def limit_array(self, array: int, limit: int) -> None:
        """The elements of ``array`` (its first id), added next, may run ``limit`` at once."""
        self.limits[array] = [limit, 0, 0]

    def add(
        self,
        job: Job,
        now: float,
        *,
        unmet: Iterable[int] = (),
        doomed: str = "",
        conds: Iterable[tuple[int, int]] = (),
    ) -> None:
        """Take a new (or recovered) job in state Q, H or U.

        ``unmet`` are the ids of active parents it still waits for to succeed (afterok);
        ``conds`` the other conditions still to hold, each a parent id and its kind
        (sjq.conditions); ``doomed``, when set, is the reason it can never run (a parent
        already ended badly): it is aborted at once.
        """
        edges = [(p, AFTEROK) for p in unmet]
        edges += conds
        if doomed and job.state is Q:
            job.state = H  # it has a dependency, one that can no longer succeed
        self.counts[job.state] += 1
        lim = self.limits.get(job.array) if job.array else None
        if lim is not None:
            lim[2] += 1
        if doomed:
            job.reason = doomed
            job.end_time = now
            self._set(job, A, now)
            self._leave_array(job)
            return
        self.jobs[job.id] = job
        if job.state is R:
            self._reserve(job)
            if self.handover and (job.backend_id is None or job.shown is not None):
                self._not_begun.add(job.id)  # recovered: Slurm has not yet been seen to run it
            return
        job.waiting = len(edges)
        if edges:
            self.graph.link(job, edges)
        if job.state is H and not job.waiting:
            self._set(job, Q, now)
        elif job.state is Q and job.waiting:
            self._set(job, H, now)
        elif job.state is Q:
            self._push(job)

    def hold(self, jobid: int, now: float) -> bool:
        job = self.jobs.get(jobid)
        if job is None or job.state not in (Q, H):
            return False
        self._set(job, U, now)
        return True

    def release(self, jobid: int, now: float) -> bool:
        job = self.jobs.get(jobid)
        if job is None or job.state is not U:
            return False
        self._set(job, H if job.waiting else Q, now)
        return True

    def kill(self, jobid: int, now: float, *, reason: str | None = None) -> Job | None:
        """Kill a job. A waiting one ends in K at once; a running one is returned, marked
        ``killing``, for the caller to signal (it ends in K when its exit is reported).
        ``reason``: the daemon's own (a shutdown), which replaces any earlier one."""
        job = self.jobs.get(jobid)
        if job is None:
            return None
        if job.state is R:
            job.killing = True
            if reason is not None or not job.reason:
                job.reason = reason or "killed by request"
            return job
        job.reason = "killed by request"
        self.finish(job, K, now)
        return None

    def began(self, jobid: int, now: float) -> None:
        """A job handed over (``handover``) runs there now: its ``after`` conditions hold."""
        if jobid in self._not_begun:
            self._not_begun.discard(jobid)
            for cid in self.graph.started(jobid):
                self._met(cid, now)

    def finish(self, job: Job, state: JobState, now: float) -> None:
        """A job ended (or will never run). Frees its resources, releases or aborts children."""
        assert state in TERMINAL
        if job.state is R:
            self._unreserve(job)
            self._not_begun.discard(job.id)
        job.end_time = now
        self._set(job, state, now)
        del self.jobs[job.id]
        self._armed.pop(job.id, None)
        self._leave_array(job)
        self._finish_children(job, now)

    def requeue(self, job: Job, now: float) -> None:
        """Recovery: a job recorded as starting provably never started; it waits again."""
        self._unreserve(job)
        self._not_begun.discard(job.id)
        job.start_time = job.pid = job.pid_start = None
        job.attempts = max(0, job.attempts - 1)
        self._set(job, Q, now)

    def retry(self, job: Job, now: float, mem: int) -> None:
        """A running job's attempt failed and it is started again (RETRY), with ``mem``:
        it waits (Q) in its place, by priority and id; its dependents go on waiting. What
        the failed attempt had (its process, times, usage, devices, Slurm id) goes; the
        count of attempts stays."""
        self._unreserve(job)
        job.mem = mem
        attempts, job.run = job.attempts, Run()
        job.attempts = attempts
        self._set(job, Q, now)

    def drop(self, jobs: Iterable[Job]) -> None:
        """Forget jobs whose submission was never recorded, as if they had never been added
        (their ids may be handed out again). Jobs that depend on them are new too and
        dropped by the same caller. One sweep of the ready heaps for them all."""
        gone: set[int] = set()
        for job in jobs:
            gone.add(job.id)
            if self.jobs.pop(job.id, None) is not None and job.state is R:
                self._unreserve(job)
                self._not_begun.discard(job.id)
            self.counts[job.state] -= 1
            self._leave_array(job)
            self.graph.unlink(job)
            self._armed.pop(job.id, None)
        for heap in self.ready.values():
            # Their ids may come back with other jobs: no stale entry may stand for those.
            if any(e[1] in gone for e in heap):
                heap[:] = [e for e in heap if e[1] not in gone]
                heapq.heapify(heap)

    def forget_counts(self, state: JobState, n: int) -> None:
        """Finished jobs purged from history no longer count in PING's statistics."""
        self.counts[state] = max(0, self.counts[state] - n)

    # -- the pass ----------------------------------------------------------------

    def schedule(self, now: float) -> list[Job]:
        """Start what may start, EASY backfill (sjq.reservation): while the first ready job
        (highest priority, then lowest id) fits in what is free, start it; the first that
        does not gets a reservation, and later jobs start, in order, only where they fit
        and do not delay it. In O(starts x shapes), plus the running jobs sorted by their
        end once when a job waits."""
        started: list[Job] = []
        res: Reservation | None = None
        armed = self._first_armed()  # a keeper starts it as a running job ends, not a pass
        while res is None:  # the first job in line starts while it fits
            shape = self.best_shape(ALL, None) if self.ready else None  # fitting or not
            head = None if shape is None else self.jobs[self.ready[shape][0][1]]
            if armed is not None and (head is None or _key(armed) < _key(head)):
                head, shape = armed, None
            if head is None:
                break
            free_procs = self.maxprocs - self.used_procs
            free_mem = None if self.maxmem is None else self.maxmem - self.used_mem
            free_gpus = self.maxgpus - self.used_gpus
            if shape is not None and self.fits(head, free_procs, free_mem, free_gpus):
                started.append(self._start(shape, now))
            else:
                res = self._reserve_for(head, (free_procs, free_mem, free_gpus), now)
        while res is not None and self.ready:  # later ones where they do not delay it
            free_procs = self.maxprocs - self.used_procs
            free_mem = None if self.maxmem is None else self.maxmem - self.used_mem
            free_gpus = self.maxgpus - self.used_gpus
            shape = self.best_shape(free_procs, free_mem, passes=(res, now), free_gpus=free_gpus)
            if shape is None:
                break
            procs, mem, limit, gpus = shape[:4]
            if res.lets_pass(procs, mem, limit, now, self.grace, gpus=gpus) == 2:
                res.use_extra(procs, mem, gpus)
            started.append(self._start(shape, now))
        if res is None:
            self._head = None
        self.reservation = res
        return started

    def _start(self, shape: tuple[int, ...], now: float) -> Job:
        heap = self.ready[shape]
        _, jobid = heapq.heappop(heap)
        if not heap:
            del self.ready[shape]
        job = self.jobs[jobid]
        self._set(job, R, now)
        self._reserve(job)
        job.start_time = now
        job.attempts += 1
        return job

    def _first_armed(self) -> Job | None:
        first = None
        for job in self._armed.values():
            if job.state is Q and not self.full(job) and (first is None or _key(job) < _key(first)):
                first = job
        return first

    def _reserve_for(self, head: Job, free: tuple[int, int | None, int], now: float) -> Reservation:
        since = self._head[1] if self._head is not None and self._head[0] == head.id else now
        self._head = (head.id, since)
        return reserve(
            head,
            since,
            self._running.values(),
            free,
            now,
            grace=self.grace,
            maxbypass=self.maxbypass,
        )

    def best_shape(
        self,
        free_procs: int,
        free_mem: int | None,
        ending: Job | None = None,
        passes: tuple[Reservation, float] | None = None,
        free_gpus: int | None = None,
    ) -> tuple[int, ...] | None:
        """The shape whose first ready job comes first among those that fit (stale heap
        tops, of jobs no longer ready or armed, are dropped on the way), skipping arrays
        at their limit (``ending``, a running job, counted as ended) and, given a
        reservation and the time, the shapes it does not let pass. ``free_mem`` and
        ``free_gpus`` None: not counted."""
        return shapes.best_shape(
            self.ready,
            self.jobs,
            (free_procs, free_mem, free_gpus),
            full=lambda head: self.full(head, ending),
            passes=None if passes is None else (*passes, self.grace),
        )

    # -- arming: the planner is sjq.arming; these mark what it armed ----------------

    def arm(self, job: Job) -> None:
        job.armed = True  # its ready-heap entry is dropped when it reaches the top
        self._armed[job.id] = job

    def disarm(self, job: Job) -> None:
        self._armed.pop(job.id, None)
        if job.armed:
            job.armed = False
            if job.state is Q:
                self._push(job)

    def start_armed(self, job: Job, now: float) -> None:
        """A keeper started an armed job as a running one ended."""
        self._armed.pop(job.id, None)
        job.armed = False
        self._set(job, R, now)
        self._reserve(job)
        job.start_time = now
        job.attempts += 1

    # -- internals -----------------------------------------------------------------

    def _set(self, job: Job, state: JobState, now: float) -> None:
        self.counts[job.state] -= 1
        job.set_state(state)
        self.counts[state] += 1
        self.changes.append(Change(job, state, now))
        if state in TERMINAL:
            self.ended += 1
        if state is Q:
            self._push(job)
        elif state is R and self.handover:
            self._not_begun.add(job.id)  # its after conditions wait for ``began``
        elif state is R and self.graph.waits_for_start(job.id):
            for cid in self.graph.started(job.id):
                self._met(cid, now)

    def fits(self, job: Job, procs: int, mem: int | None, gpus: int) -> bool:
        """Whether ``job`` fits in ``procs`` CPUs, ``mem`` bytes (None: not counted) and
        ``gpus`` GPUs."""
        return job.procs <= procs and (mem is None or job.mem <= mem) and job.gpus <= gpus

    def _push(self, job: Job) -> None:
        if job.armed:
            return
        shape = shapes.shape_of(
            job, count_mem=self.maxmem is not None, limited=job.array in self.limits
        )
        heapq.heappush(self.ready.setdefault(shape, []), (-job.priority, job.id))

    def _reserve(self, job: Job) -> None:
        self._running[job.id] = job
        self.used_procs += job.procs
        self.used_mem += job.mem
        self.used_gpus += job.gpus
        if job.array in self.limits:
            self.limits[job.array][1] += 1

    def _unreserve(self, job: Job) -> None:
        del self._running[job.id]
        self.used_procs -= job.procs
        self.used_mem -= job.mem
        self.used_gpus -= job.gpus
        if job.array in self.limits:
            self.limits[job.array][1] -= 1

    def _leave_array(self, job: Job) -> None:
        """``job`` is no longer active: an array's limit is forgotten with its last one."""
        lim = self.limits.get(job.array) if job.array else None
        if lim is not None:
            lim[2] -= 1
            if lim[2] <= 0:
                del self.limits[job.array]

    def _met(self, cid: int, now: float) -> None:
        """One of a job's conditions holds now."""
        child = self.jobs.get(cid)
        if child is None:
            return
        child.waiting -= 1
        if not child.waiting and child.state is H:
            self._set(child, Q, now)

    def _finish_children(self, parent: Job, now: float) -> None:
        # Iterative, so a 100,000-long abort cascade cannot overflow the stack.
        todo = [parent]
        while todo:
            p = todo.pop()
            starters, ends = self.graph.ended(p.id)
            for cid in starters:
                self._met(cid, now)  # it ended without starting: as Slurm, that will do
            for edge in ends:
                cid, kind = edge >> 2, edge & 3
                if holds_after_end(kind, p.state):
                    self._met(cid, now)
                    continue
                child = self.jobs.get(cid)
                if child is None:
                    continue
                child.reason = ended_reason(p.id, p.state, kind)
                child.end_time = now
                self._set(child, A, now)
                del self.jobs[cid]
                self._armed.pop(cid, None)
                self._leave_array(child)
                todo.append(child)


def _key(job: Job) -> tuple[int, int]:
    return (-job.priority, job.id)
