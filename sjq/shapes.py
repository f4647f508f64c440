"""The ready heaps of the pure scheduler (`sjq.scheduler.Queue.ready`): ready (``Q``) jobs
grouped by shape, and the pick among the shapes that fit.

A shape is ``(procs, mem, TIME in ms or 0, gpus)``, with the array's id appended for the
elements of an array with a limit (ARRAY ...%N). Each heap holds ``(-priority, id)``;
entries go stale when a job leaves Q (or is armed) and are dropped when they reach the top.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable

from sjq.jobs import Job, Q
from sjq.reservation import Reservation

__all__ = ["Heaps", "best_shape", "ready_job", "shape_of"]

Heaps = dict[tuple[int, ...], list[tuple[int, int]]]


def ready_job(job: Job | None) -> bool:
    return job is not None and job.state is Q and not job.armed


def shape_of(job: Job, *, count_mem: bool, limited: bool) -> tuple[int, ...]:
    """``job``'s shape: its MEM only if memory is counted (``count_mem``), its array's id if
    the array has a limit (``limited``)."""
    mem = job.mem if count_mem else 0
    # TIME in whole milliseconds, rounded up (a later end is the safe side); 0: none
    limit = math.ceil(job.time_limit * 1000) if job.time_limit else 0
    shape: tuple[int, ...] = (job.procs, mem, limit, job.gpus)
    if limited:
        shape += (job.array or 0,)
    return shape


def best_shape(
    ready: Heaps,
    jobs: dict[int, Job],
    free: tuple[int, int | None, int | None],
    *,
    full: Callable[[Job], bool],
    passes: tuple[Reservation, float, float] | None = None,
) -> tuple[int, ...] | None:
    """The shape whose first ready job comes first among those that fit in ``free`` (CPUs,
    memory, GPUs; None: not counted), dropping stale heap tops on the way, skipping the
    arrays whose head is ``full`` (at their limit) and, given ``passes`` (a reservation,
    the time and sjq.killgrace), the shapes the reservation does not let pass."""
    free_procs, free_mem, free_gpus = free
    best_key: tuple[int, int] | None = None
    found: tuple[int, ...] | None = None
    for shape, heap in list(ready.items()):
        while heap and not ready_job(jobs.get(heap[0][1])):
            heapq.heappop(heap)
        if not heap:
            del ready[shape]
            continue
        procs, mem, limit, gpus = shape[:4]
        if procs > free_procs or (free_mem is not None and mem > free_mem):
            continue
        if free_gpus is not None and gpus > free_gpus:
            continue
        if len(shape) > 4 and full(jobs[heap[0][1]]):
            continue
        if best_key is not None and heap[0] > best_key:
            continue
        if passes is not None and not passes[0].lets_pass(
            procs, mem, limit, passes[1], passes[2], gpus=gpus
        ):
            continue
        best_key, found = heap[0], shape
    return found
