"""Why a job waits (INFO ``waiting_for``), in words: ``held``, ``paused``, ``job 12``,
``4 CPUs; reserved from 10:32:10``. Pure: reads the queue and the time it is given; the
local time zone formats the clock times."""

from __future__ import annotations

import time

from sjq.conditions import AFTER, parents
from sjq.jobs import H, Job, Q, U
from sjq.scheduler import Queue
from sjq.units import format_mem

__all__ = ["reservation_of", "waiting_for"]


def waiting_for(q: Queue, job: Job, *, paused: bool, now: float) -> str:
    """Why ``job`` (active, in ``q``) has not started; empty when it does not wait."""
    if job.state is U:
        return "held"
    if job.state is H:
        return _parents(q, job)
    if job.state is not Q:
        return ""
    if paused:
        return "paused"
    lim = q.limits.get(job.array) if job.array else None
    if lim is not None and lim[1] >= lim[0]:
        n = lim[1]
        return f"array {job.array}: {n} element{'s' * (n != 1)} running, its limit (%{lim[0]})"
    res = q.reservation
    need = _lacking(q, job)
    if res is not None and res.jobid == job.id:
        if res.at is not None:
            return f"{need}; reserved from {clock(res.at, now)}"
        if res.expired:
            return f"{need}; no job starts before it (waited sjq.maxbypass)"
        if q.maxbypass is None:
            return need
        return f"{need}; later jobs pass it until {clock(res.since + q.maxbypass, now)}"
    if need:
        return need
    if res is not None:
        return f"job {res.jobid}, which has a reservation"
    return "its turn"  # it fits: the next pass starts it


def reservation_of(q: Queue, job: Job) -> float | None:
    """INFO ``reservation``: when the job is sure to start, if it holds the reservation."""
    res = q.reservation
    return res.at if res is not None and res.jobid == job.id else None


def _lacking(q: Queue, job: Job) -> str:
    """What of its reservation is not free now: ``4 CPUs``, ``8G memory``, ``2 GPUs``."""
    out = []
    if job.procs > q.maxprocs - q.used_procs:
        out.append(f"{job.procs} CPU{'s' * (job.procs != 1)}")
    if q.maxmem is not None and job.mem > q.maxmem - q.used_mem:
        out.append(f"{format_mem(job.mem)} memory")
    if job.gpus > q.maxgpus - q.used_gpus:
        out.append(f"{job.gpus} GPU{'s' * (job.gpus != 1)}")
    return " and ".join(out)


def _parents(q: Queue, job: Job) -> str:
    """The first job (by id) whose condition still waits: ``job 12``, ``job 12 (and 3 more)``
    (``waiting`` counts them: the scan stops at the first)."""
    for parent, kind in parents(job.depends, job.dependency).items():
        p = q.get(parent)
        if p is None or (kind == AFTER and q.started(p)):
            continue
        more = f" (and {job.waiting - 1} more)" if job.waiting > 1 else ""
        return f"job {parent}{more}"
    return ""


def clock(t: float, now: float) -> str:
    """10:32:10 today, 2026-11-20 10:32:10 another day (local time)."""
    same_day = time.localtime(t)[:3] == time.localtime(now)[:3]
    return time.strftime("%H:%M:%S" if same_day else "%Y-%m-%d %H:%M:%S", time.localtime(t))
