"""The reservation of EASY backfill, pure: when the first waiting job (the *head*) can start
at the latest, from the running jobs' time limits, and which later jobs may start before it
without delaying that. No I/O, no clock; sjq.scheduler's pass uses it.

A running job with a TIME holds its CPUs, memory and GPUs until ``start + TIME + grace`` at the
latest (its keeper sends SIGTERM at TIME and SIGKILL ``sjq.killgrace`` later); one without
holds them for as long as it runs. The head's reservation is the first of those moments by
which enough is free for it; what is free then beyond its needs is ``extra``. A later job may
start now if it fits now and either ends by then (its own TIME) or fits in the extra, which
it then uses up. If the jobs with a TIME cannot free enough, the moment is unknown: later
jobs may pass the head until it has been the head for ``sjq.maxbypass``, then none does and
the machine drains for it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sjq.jobs import Job

__all__ = ["Reservation", "reserve"]


@dataclass(slots=True)
class Reservation:
    """The head's reservation, as the last pass saw it."""

    jobid: int
    since: float  # when it became the head (the first waiting job in queue order)
    at: float | None  # the latest moment enough will be free for it; None: not known
    extra_procs: int = 0  # free at ``at`` beyond what the head needs
    extra_mem: int | None = None  # likewise; None when memory is not managed
    expired: bool = False  # ``at`` unknown and the head has waited sjq.maxbypass: drain
    extra_gpus: int = 0  # free at ``at`` beyond what the head needs

    def lets_pass(
        self, procs: int, mem: int, limit_ms: int, now: float, grace: float, *, gpus: int = 0
    ) -> int:
        """Whether a job of this shape (its TIME in ms, 0 for none) that fits now may start
        before the head: 0 no, 1 yes (it ends in time), 2 yes, in the extra (used up)."""
        if self.at is None:
            return 0 if self.expired else 1
        if limit_ms and now + limit_ms / 1000 + grace <= self.at:
            return 1
        fits_mem = self.extra_mem is None or mem <= self.extra_mem
        if procs <= self.extra_procs and fits_mem and gpus <= self.extra_gpus:
            return 2
        return 0

    def use_extra(self, procs: int, mem: int, gpus: int = 0) -> None:
        self.extra_procs -= procs
        self.extra_gpus -= gpus
        if self.extra_mem is not None:
            self.extra_mem -= mem


def reserve(
    head: Job,
    since: float,
    running: Iterable[Job],
    free: tuple[int, int | None, int],
    now: float,
    *,
    grace: float,
    maxbypass: float | None,
) -> Reservation:
    """The reservation of ``head`` given what is ``free`` now (CPUs, memory or None, GPUs):
    now, if that is enough (an armed head, which a keeper starts)."""
    free_procs, free_mem, free_gpus = free

    def enough(procs: int, mem: int | None, gpus: int) -> bool:
        return head.procs <= procs and (mem is None or head.mem <= mem) and head.gpus <= gpus

    if enough(free_procs, free_mem, free_gpus):
        extra_mem = None if free_mem is None else free_mem - head.mem
        return Reservation(
            head.id,
            since,
            now,
            free_procs - head.procs,
            extra_mem,
            extra_gpus=free_gpus - head.gpus,
        )
    ends = sorted(
        (
            (max(now, j.start_time + j.time_limit + grace), j)
            for j in running
            if j.time_limit is not None and j.start_time is not None
        ),
        key=lambda e: e[0],
    )
    procs, mem, gpus = free_procs, free_mem, free_gpus
    at: float | None = None
    for end, j in ends:
        if at is not None and end > at:
            break  # (jobs that end at the same moment all count towards the extra)
        procs += j.procs
        gpus += j.gpus
        if mem is not None:
            mem += j.mem
        if at is None and enough(procs, mem, gpus):
            at = end
    if at is not None:
        extra_mem = None if mem is None else mem - head.mem
        return Reservation(
            head.id, since, at, procs - head.procs, extra_mem, extra_gpus=gpus - head.gpus
        )
    expired = maxbypass is not None and now - since >= maxbypass
    return Reservation(head.id, since, None, expired=expired)
