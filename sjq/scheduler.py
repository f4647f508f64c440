"""The pure scheduler: active jobs, their dependency graph and the FCFS/backfill pass.

No I/O, no clock, no asyncio: every method takes ``now`` and returns decisions, so the
same code runs in the daemon, in Hypothesis tests and in simulations.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from sjq.jobs import TERMINAL, Change, Job, JobState

__all__ = ["ArmEntry", "Change", "Queue"]

Q, H, U, R = JobState.QUEUED, JobState.HOLDING, JobState.USERHOLD, JobState.RUNNING
S, A, K = JobState.SUCCESS, JobState.ABORT, JobState.KILLED


_NO_KEY = (1 << 62, 0)  # sorts after every (-priority, id)
ARM_DEPTH = 16  # entries armed per running job when several run: slack for a busy daemon
ARM_LOW = 6  # ... and armed again once no more than this many per running job are left


@dataclass(frozen=True, slots=True)
class ArmEntry:
    """A job a keeper may start on its own when a running job ends. ``after``: only when
    that job ends, and (``need_success``) only if it succeeded; None: any runner's end."""

    job: Job
    after: int | None
    need_success: bool
    # It fits in what any runner it may follow holds: once started, it is covered by that
    # runner's reservation until the runner's end is known. Not so when it may use the
    # free resources too (one runner): a pass must not spend those meanwhile.
    covered: bool = True


class Queue:
    """Every job that has not ended, indexed so that a pass costs what changed.

    Ready (``Q``) jobs sit in one heap per resource shape ``(procs, mem)``; a pass looks
    only at the heads of the shapes that fit, so 100,000 waiting jobs of a few shapes cost
    no more to schedule than ten. Dependencies are a reverse index parent -> children, so
    an exit touches only the jobs that waited on it.
    """

    def __init__(self, maxprocs: int, maxmem: int | None) -> None:
        self.maxprocs = maxprocs
        self.maxmem = maxmem
        self.used_procs = 0
        self.used_mem = 0
        self.jobs: dict[int, Job] = {}
        self.counts: dict[JobState, int] = dict.fromkeys(JobState, 0)
        self.changes: list[Change] = []
        # jobs whose durable row is out of date (a state change, a pid learnt, an exit status)
        self.touched: dict[int, Job] = {}
        self.ended = 0  # jobs that reached a final state since the caller last looked
        self._children: dict[int, list[int]] = {}
        # parent -> the smallest (-priority, id) among the jobs that waited on it: never
        # larger than the true minimum (a child that left is not taken out), which is the
        # safe side for ``arm_plan``'s cut.
        self._child_key: dict[int, tuple[int, int]] = {}
        # (procs, mem) -> heap of (-priority, id); entries go stale when a job leaves Q
        # and are dropped lazily when they reach the top.
        self._ready: dict[tuple[int, int], list[tuple[int, int]]] = {}

    # -- queries ---------------------------------------------------------------

    def get(self, jobid: int) -> Job | None:
        return self.jobs.get(jobid)

    def running(self) -> Iterator[Job]:
        return (j for j in self.jobs.values() if j.state is R)

    @property
    def busy(self) -> bool:
        """Whether anything is running or runnable. Jobs waiting on dependencies (H) do not
        count on their own: with nothing running or runnable, each of them waits, directly
        or through other waiting jobs, on a held (U) job, and held jobs do not keep the
        daemon alive (they are in the database for the next start)."""
        c = self.counts
        return bool(c[R] or c[Q])

    # -- events ----------------------------------------------------------------

    def add(self, job: Job, now: float, *, unmet: tuple[int, ...] = (), doomed: str = "") -> None:
        """Take a new (or recovered) job in state Q, H or U.

        ``unmet`` are the ids of active parents it still waits for; ``doomed``, when set, is
        the reason it can never run (a parent already ended badly): it is aborted at once.
        """
        if doomed and job.state is Q:
            job.state = H  # it has a dependency, one that can no longer succeed
        self.counts[job.state] += 1
        if doomed:
            job.reason = doomed
            job.end_time = now
            self._set(job, A, now)
            return
        self.jobs[job.id] = job
        if job.state is R:
            self._reserve(job)
            return
        job.waiting = len(unmet)
        key = (-job.priority, job.id)
        for parent in unmet:
            self._children.setdefault(parent, []).append(job.id)
            if key < self._child_key.get(parent, _NO_KEY):
                self._child_key[parent] = key
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

    def kill(self, jobid: int, now: float) -> Job | None:
        """Kill a job. A waiting one ends in K at once; a running one is returned, marked
        ``killing``, for the caller to signal (it ends in K when its exit is reported)."""
        job = self.jobs.get(jobid)
        if job is None:
            return None
        if job.state is R:
            job.killing = True
            if not job.reason:
                job.reason = "killed by request"
            self.touched[job.id] = job
            return job
        job.reason = "killed by request"
        self.finish(job, K, now)
        return None

    def started(self, job: Job, pid: int, pid_start: int, now: float) -> None:
        job.pid, job.pid_start = pid, pid_start
        if job.start_time is None:
            job.start_time = now
        self.touched[job.id] = job

    def finish(self, job: Job, state: JobState, now: float) -> None:
        """A job ended (or will never run). Frees its resources, releases or aborts children."""
        assert state in TERMINAL
        if job.state is R:
            self._unreserve(job)
        job.end_time = now
        self._set(job, state, now)
        del self.jobs[job.id]
        self._finish_children(job, now)

    def requeue(self, job: Job, now: float) -> None:
        """Recovery: a job recorded as starting provably never started; it waits again."""
        self._unreserve(job)
        job.start_time = job.pid = job.pid_start = None
        self._set(job, Q, now)

    def drop(self, job: Job) -> None:
        """Forget a job whose submission was never recorded, as if it had never been added
        (its id may be handed out again). Jobs that depend on it are new too and dropped by
        the same caller."""
        if self.jobs.pop(job.id, None) is not None and job.state is R:
            self._unreserve(job)
        self.counts[job.state] -= 1
        for parent in job.depends:
            children = self._children.get(parent)
            if children and job.id in children:
                children.remove(job.id)
        self._children.pop(job.id, None)
        self._child_key.pop(job.id, None)
        shape = (job.procs, job.mem if self.maxmem is not None else 0)
        heap = self._ready.get(shape)
        if heap is not None:
            # Its id may come back with another job: no stale entry may stand for that one.
            heap[:] = [e for e in heap if e[1] != job.id]
            heapq.heapify(heap)

    def forget_counts(self, state: JobState, n: int) -> None:
        """Finished jobs purged from history no longer count in PING's statistics."""
        self.counts[state] = max(0, self.counts[state] - n)

    # -- the pass ----------------------------------------------------------------

    def schedule(self, now: float) -> list[Job]:
        """Start what fits: repeatedly the first (highest priority, then lowest id) ready job
        whose CPUs and memory fit in what is free. Equivalent to scanning the ready jobs in
        order and skipping those that do not fit (FCFS with backfill), in O(starts x shapes).
        """
        started: list[Job] = []
        ready = self._ready
        while ready:
            free_procs = self.maxprocs - self.used_procs
            if free_procs <= 0:
                break
            free_mem = None if self.maxmem is None else self.maxmem - self.used_mem
            best_shape = self._best(free_procs, free_mem)
            if best_shape is None:
                break
            heap = ready[best_shape]
            _, jobid = heapq.heappop(heap)
            if not heap:
                del ready[best_shape]
            job = self.jobs[jobid]
            self._set(job, R, now)
            self._reserve(job)
            job.start_time = now
            started.append(job)
        return started

    def _best(self, free_procs: int, free_mem: int | None) -> tuple[int, int] | None:
        """The shape whose first ready job comes first among those that fit (stale heap
        tops, of jobs no longer ready or armed, are dropped on the way)."""
        best_key: tuple[int, int] | None = None
        best_shape: tuple[int, int] | None = None
        for shape, heap in list(self._ready.items()):
            while heap and not _ready_job(self.jobs.get(heap[0][1])):
                heapq.heappop(heap)
            if not heap:
                del self._ready[shape]
                continue
            procs, mem = shape
            if procs > free_procs or (free_mem is not None and mem > free_mem):
                continue
            if best_key is None or heap[0] < best_key:
                best_key, best_shape = heap[0], shape
        return best_shape

    # -- arming: jobs keepers start on their own, without a round trip -----------------

    def could_start(self, armed: Iterable[Job] = ()) -> bool:
        """Whether a pass now would start anything, counting ``armed`` jobs (which the
        ready heaps no longer show) as the ready jobs they are."""
        free_procs = self.maxprocs - self.used_procs
        if free_procs <= 0:
            return False
        free_mem = None if self.maxmem is None else self.maxmem - self.used_mem
        for j in armed:
            if j.state is Q and j.procs <= free_procs and (free_mem is None or j.mem <= free_mem):
                return True
        return self._best(free_procs, free_mem) is not None

    def next_after(self, x: Job, armed: Iterable[Job] = ()) -> tuple[Job, bool] | None:
        """The job a pass would start first once ``x`` (running) has ended, and whether
        that needs ``x`` to succeed (it waits on ``x`` alone). ``armed`` are jobs already
        armed, which the ready heaps no longer show. Meant for when ``x`` is the only job
        running: the resources free now are counted as its."""
        free_procs = self.maxprocs - self.used_procs + x.procs
        free_mem = None if self.maxmem is None else self.maxmem - self.used_mem + x.mem

        def fits(j: Job) -> bool:
            return j.procs <= free_procs and (free_mem is None or j.mem <= free_mem)

        candidates: list[tuple[Job, bool]] = []
        shape = self._best(free_procs, free_mem)
        if shape is not None:
            candidates.append((self.jobs[self._ready[shape][0][1]], False))
        candidates.extend((a, False) for a in armed if a.state is Q and fits(a))
        for cid in self._children.get(x.id, ()):
            child = self.jobs.get(cid)
            if child is not None and child.state is H and child.waiting == 1 and fits(child):
                candidates.append((child, True))
        if not candidates:
            return None
        return min(candidates, key=lambda c: (-c[0].priority, c[0].id))

    def arm_plan(
        self, runners: list[Job], armed: Iterable[Job] = (), more: int | None = None
    ) -> list[ArmEntry]:
        """The jobs the keepers of ``runners`` may start on their own as those end, in the
        order they must take them: the first runner to end takes the first entry, the next
        the second. Every prefix taken, in any order of ends, is what the passes after
        those ends would have started first.

        A job started from an entry takes the next token in turn when it ends.

        One runner: the single job ``next_after`` names (it may use the free resources
        too, and may be a job waiting on that runner alone). Several: the first ready jobs
        in pass order, ``ARM_DEPTH`` per runner, each no larger than every runner and every
        entry before it (so whichever of those ends makes room for it), cut before the
        first job that is larger, and before anything a job waiting on a runner or an
        entry would come after (that one's end could make it ready first). ``armed``: the
        jobs armed now, in order; ``more``: how many to plan beyond them (by default
        ``ARM_DEPTH`` per runner in all)."""
        armed = [a for a in armed if a.state is Q]
        if not runners:
            return []
        if len(runners) == 1:
            x = runners[0]
            nxt = self.next_after(x, armed)
            if nxt is None:
                return []
            y = nxt[0]
            covered = y.procs <= x.procs and (self.maxmem is None or y.mem <= x.mem)
            return [ArmEntry(y, x.id if nxt[1] else None, nxt[1], covered)]
        # Each entry must fit in what any runner, or any entry before it (which takes a
        # token in turn when it ends), leaves free: no larger than any of them.
        min_procs = min(r.procs for r in runners)
        min_mem = min(r.mem for r in runners)
        cut = min((self._child_key.get(r.id, _NO_KEY) for r in runners), default=_NO_KEY)
        out: list[ArmEntry] = []
        depth = ARM_DEPTH * len(runners) if more is None else len(armed) + more
        for j in self._first_ready(depth, armed):
            key = (-j.priority, j.id)
            if key > cut or j.procs > min_procs or (self.maxmem is not None and j.mem > min_mem):
                break
            out.append(ArmEntry(j, None, False))
            min_procs, min_mem = j.procs, j.mem
            cut = min(cut, self._child_key.get(j.id, _NO_KEY))
        return out

    def _first_ready(self, n: int, armed: list[Job]) -> list[Job]:
        """The first ``n`` ready jobs in pass order, fitting or not, ``armed`` (in order)
        among them. A heap is popped only as deep as can matter (the jobs before the last
        armed one, then as many as are still wanted) and restored: with nothing more
        wanted, a look at each head."""
        found: dict[int, Job] = {a.id: a for a in armed}
        bound = (-armed[-1].priority, armed[-1].id) if armed else None
        extra = n - len(armed)
        for shape, heap in list(self._ready.items()):
            taken: list[tuple[int, int]] = []
            beyond = 0
            while heap and len(taken) < n:
                if bound is not None and heap[0] > bound and beyond >= extra:
                    break
                entry = heapq.heappop(heap)
                j = self.jobs.get(entry[1])
                if _ready_job(j) and entry[1] not in found:
                    assert j is not None
                    taken.append(entry)
                    found[j.id] = j
                    if bound is None or entry > bound:
                        beyond += 1
            for entry in taken:
                heapq.heappush(heap, entry)
            if not heap:
                del self._ready[shape]
        return sorted(found.values(), key=lambda j: (-j.priority, j.id))[:n]

    def arm(self, job: Job) -> None:
        job.armed = True  # its ready-heap entry is dropped when it reaches the top

    def disarm(self, job: Job) -> None:
        if job.armed:
            job.armed = False
            if job.state is Q:
                self._push(job)

    def start_armed(self, job: Job, now: float) -> None:
        """A keeper started an armed job as a running one ended."""
        job.armed = False
        self._set(job, R, now)
        self._reserve(job)
        job.start_time = now

    # -- internals -----------------------------------------------------------------

    def _set(self, job: Job, state: JobState, now: float) -> None:
        self.counts[job.state] -= 1
        job.set_state(state)
        self.counts[state] += 1
        self.changes.append(Change(job, state, now))
        self.touched[job.id] = job
        if state in TERMINAL:
            self.ended += 1
        if state is Q:
            self._push(job)

    def _push(self, job: Job) -> None:
        if job.armed:
            return
        shape = (job.procs, job.mem if self.maxmem is not None else 0)
        heapq.heappush(self._ready.setdefault(shape, []), (-job.priority, job.id))

    def _reserve(self, job: Job) -> None:
        self.used_procs += job.procs
        self.used_mem += job.mem

    def _unreserve(self, job: Job) -> None:
        self.used_procs -= job.procs
        self.used_mem -= job.mem

    def _finish_children(self, parent: Job, now: float) -> None:
        # Iterative, so a 100,000-long abort cascade cannot overflow the stack.
        todo = [parent]
        while todo:
            p = todo.pop()
            self._child_key.pop(p.id, None)
            for cid in self._children.pop(p.id, ()):
                child = self.jobs.get(cid)
                if child is None:
                    continue
                if p.state is S:
                    child.waiting -= 1
                    if not child.waiting and child.state is H:
                        self._set(child, Q, now)
                    continue
                child.reason = f"dependency {p.id} ended in {p.state.value}"
                child.end_time = now
                self._set(child, A, now)
                del self.jobs[cid]
                todo.append(child)


def _ready_job(job: Job | None) -> bool:
    return job is not None and job.state is Q and not job.armed
