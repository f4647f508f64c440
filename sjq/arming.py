"""The arming planner, pure: which jobs keepers may start on their own, in what order, as
running jobs end (docs/architecture.md, "Arming"). Functions of a `Queue`; no I/O, no clock.

`arm_plan` is checked by a Hypothesis property against the passes the scheduler would
make: in any order of ends, each entry taken is what the pass after that end would start
first, within the resources.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass

from sjq.conditions import AFTERNOTOK, AFTEROK
from sjq.graph import NO_KEY
from sjq.jobs import H, Job, Q
from sjq.scheduler import Queue
from sjq.shapes import ready_job

__all__ = ["ARM_DEPTH", "ARM_LOW", "ArmEntry", "arm_plan", "could_start", "next_after"]


ARM_DEPTH = 16  # entries armed per running job when several run: slack for a busy daemon
ARM_LOW = 10  # ... and armed again once no more than this many per running job are left


@dataclass(frozen=True, slots=True)
class ArmEntry:
    """A job a keeper may start on its own when a running job ends. ``after``: only when
    that job ends, and (``need_success``) only if it succeeded; None: any runner's end."""

    job: Job
    after: int | None
    need_success: bool
    # It fits in what any runner it may follow holds (CPUs, memory, GPUs): once started, it
    # is covered by that runner's reservation until the runner's end is known. Not so when
    # it may use the free resources too (one runner): a pass must not spend those meanwhile.
    covered: bool = True


def could_start(q: Queue, armed: Iterable[Job] = ()) -> bool:
    """Whether a pass now would start anything, counting ``armed`` jobs (which the
    ready heaps no longer show) as the ready jobs they are."""
    free_procs = q.maxprocs - q.used_procs
    if free_procs <= 0:
        return False
    free_mem = None if q.maxmem is None else q.maxmem - q.used_mem
    free_gpus = q.maxgpus - q.used_gpus
    for j in armed:
        if j.state is Q and q.fits(j, free_procs, free_mem, free_gpus) and not q.full(j):
            return True
    return q.best_shape(free_procs, free_mem, free_gpus=free_gpus) is not None


def next_after(q: Queue, x: Job, armed: Iterable[Job] = ()) -> tuple[Job, bool] | None:
    """The job a pass would start first once ``x`` (running) has ended, and whether that
    holds only if ``x`` succeeds (it waits on ``x`` alone with afterok, or a job waiting
    on x's failure would come first). ``armed`` are jobs already armed, which the ready
    heaps no longer show. Meant for when ``x`` is the only job running: the resources
    free now are counted as its."""
    free_procs = q.maxprocs - q.used_procs + x.procs
    free_mem = None if q.maxmem is None else q.maxmem - q.used_mem + x.mem
    free_gpus = q.maxgpus - q.used_gpus + x.gpus

    def fits(j: Job) -> bool:
        """Room for it once x has ended: its CPUs, memory and GPUs, and its array's limit."""
        return q.fits(j, free_procs, free_mem, free_gpus) and not q.full(j, x)

    candidates: list[tuple[Job, int | None]] = []  # a job, and its condition on x if any
    shape = q.best_shape(free_procs, free_mem, ending=x, free_gpus=free_gpus)
    if shape is not None:
        candidates.append((q.jobs[q.ready[shape][0][1]], None))
    candidates.extend((a, None) for a in armed if a.state is Q and fits(a))
    for cid, kind in q.graph.edges_of(x.id):
        child = q.jobs.get(cid)
        if child is not None and child.state is H and child.waiting == 1 and fits(child):
            candidates.append((child, kind))
    candidates.sort(key=lambda c: (-c[0].priority, c[0].id))
    # An end of x may abort jobs waiting on it (on a failure those waiting for its success,
    # on a success those waiting for its failure), and an abort may make ready the jobs
    # waiting on those with afterany, afternotok or after.
    on_fail = on_success = NO_KEY
    for cid, kind in q.graph.edges_of(x.id):
        if kind == AFTEROK:
            on_fail = min(on_fail, q.graph.abort_key(cid))
        elif kind == AFTERNOTOK:
            on_success = min(on_success, q.graph.abort_key(cid))
    # A child that x's failure would make ready first cannot be armed (a keeper starts on
    # an end, or on a success only): arm what comes first if x succeeds, on that condition.
    need_success = False
    for job, cond in candidates:
        key = (-job.priority, job.id)
        if cond == AFTERNOTOK:
            need_success = True
            continue
        if on_success < key:
            return None  # x's success could make something else come first
        return job, need_success or cond == AFTEROK or on_fail < key
    return None


def arm_plan(
    q: Queue, runners: list[Job], armed: Iterable[Job] = (), more: int | None = None
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
        nxt = next_after(q, x, armed)
        if nxt is None:
            return []
        y = nxt[0]
        covered = q.fits(y, x.procs, None if q.maxmem is None else x.mem, x.gpus)
        # A job waiting on x (H) may start only on x's own end, whichever kind it waits for.
        after = x.id if nxt[1] or y.state is H else None
        return [ArmEntry(y, after, nxt[1], covered)]
    # Each entry must fit in what any runner, or any entry before it (which takes a
    # token in turn when it ends), leaves free: no larger than any of them.
    min_procs = min(r.procs for r in runners)
    min_mem = min(r.mem for r in runners)
    min_gpus = min(r.gpus for r in runners)
    cut = min((q.graph.child_key(r.id) for r in runners), default=NO_KEY)
    out: list[ArmEntry] = []
    depth = ARM_DEPTH * len(runners) if more is None else len(armed) + more
    running: dict[int, int] = {}  # array -> its elements running, and planned so far
    for j in _first_ready(q, depth, armed):
        key = (-j.priority, j.id)
        if key > cut or not q.fits(j, min_procs, None if q.maxmem is None else min_mem, min_gpus):
            break
        lim = q.limits.get(j.array) if j.array else None
        if lim is not None:
            # Whichever job ends, an element started must not take its array over the limit.
            running[j.array] = running.get(j.array, lim[1]) + 1
            if running[j.array] > lim[0]:
                break
        out.append(ArmEntry(j, None, False))
        min_procs, min_mem, min_gpus = j.procs, j.mem, j.gpus
        cut = min(cut, q.graph.child_key(j.id))
    return out


def _first_ready(q: Queue, n: int, armed: list[Job]) -> list[Job]:
    """The first ``n`` ready jobs in pass order, fitting or not, ``armed`` (in order)
    among them. A heap is popped only as deep as can matter (the jobs before the last
    armed one, then as many as are still wanted) and restored: with nothing more
    wanted, a look at each head."""
    found: dict[int, Job] = {a.id: a for a in armed}
    bound = (-armed[-1].priority, armed[-1].id) if armed else None
    extra = n - len(armed)
    for shape, heap in list(q.ready.items()):
        taken: list[tuple[int, int]] = []
        beyond = 0
        while heap and len(taken) < n:
            if bound is not None and heap[0] > bound and beyond >= extra:
                break
            entry = heapq.heappop(heap)
            j = q.jobs.get(entry[1])
            if ready_job(j) and entry[1] not in found:
                assert j is not None
                taken.append(entry)
                found[j.id] = j
                if bound is None or entry > bound:
                    beyond += 1
        for entry in taken:
            heapq.heappush(heap, entry)
        if not heap:
            del q.ready[shape]
    return sorted(found.values(), key=lambda j: (-j.priority, j.id))[:n]
