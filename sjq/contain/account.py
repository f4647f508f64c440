"""A job's true usage at its end. Pure; imports no asyncio or sqlite3.

Peak resident memory of its whole tree (never the keeper's own size), CPU time of the
whole tree, and whether memory stopped it: a combination of what ``watch``, ``cgroup``
and ``wait4`` measured.

``maxrss`` (bytes), by ``maxrss_from``:

- ``samples``: the largest sample (``watch``: anon + shmem of the tree, Pss-corrected
  for shared pages; cgroup: anon + shmem charged to the group). A job that the kernel
  OOM-killed (cgroup) also counts the group's peak charge: at that moment its page cache
  had been reclaimed, so the peak charge is its memory.
- ``kernel``: the job ended before its first sample (20 ms) and has a cgroup with a
  memory controller: the group's peak charge less the page cache still charged at the
  end. Exact for a job that keeps the files it wrote; a job that wrote and deleted files
  within those 20 ms shows their size too.
- ``wait4``: no sample and no cgroup, but wait4's ``ru_maxrss`` (the largest single
  process's peak RSS, mapped files included) is above the keeper's own peak: that
  figure. (Below it, it is the keeper's size, inherited through posix_spawn, and says
  nothing about the job.)
- ``none``: no sample, no cgroup, and no process of the job grew past the keeper's
  size: 0 (not measured; the job was brief and small).

``cpu_user``/``cpu_sys``: cgroup: the group's counters (every process that ever ran in
it); otherwise wait4 of the job's first process (which includes every descendant that
was waited for) plus the processes the keeper reaped as a subreaper for this job.
"""

from __future__ import annotations

from dataclasses import dataclass

from sjq.units import format_mem

from .cgroup import GroupUsage
from .watch import Judge

__all__ = ["Usage", "out_of_memory_reason", "untainted_maxrss", "usage"]


@dataclass(frozen=True, slots=True)
class Usage:
    maxrss: int  # bytes
    cpu_user: float  # seconds
    cpu_sys: float
    measured_by: str  # "cgroup" or "sampled": INFO measured_by
    maxrss_from: str  # "samples", "kernel", "wait4" or "none" (module docstring)
    oom: bool  # the kernel OOM-killed a process of the job's group


def untainted_maxrss(ru_maxrss_kb: int, keeper_peak: int) -> int | None:
    """wait4's ``ru_maxrss`` in bytes if it measures the job, else None.

    posix_spawn's child runs in the keeper's address space until exec, and exec records
    that space's peak as the child's: a job's ru_maxrss is never below the keeper's peak
    (``procfs.keeper_peak``, read after the spawn). Only a larger figure is the job's."""
    b = ru_maxrss_kb * 1024
    return b if b > keeper_peak else None


def usage(
    *,
    judge: Judge | None,
    group: GroupUsage | None,
    ru_utime: float,
    ru_stime: float,
    ru_maxrss_kb: int,
    keeper_peak: int,
    reaped_utime: float = 0.0,
    reaped_stime: float = 0.0,
) -> Usage:
    """Combine a job's measurements at its end. ``group``: its cgroup's figures (None
    under the watcher); ``ru_*``: wait4 of its first process; ``reaped_*``: CPU of the
    job's orphans the keeper reaped."""
    oom = group is not None and group.oom_kills > 0
    sampled = judge is not None and judge.samples > 0
    if sampled:
        assert judge is not None
        maxrss = judge.peak
        if oom and group is not None and group.peak_charge is not None:
            maxrss = max(maxrss, group.peak_charge)
        src = "samples"
    elif group is not None and group.peak_charge is not None:
        maxrss = max(0, group.peak_charge - group.cache)
        src = "kernel"
    else:
        own = untainted_maxrss(ru_maxrss_kb, keeper_peak)
        maxrss, src = (own, "wait4") if own is not None else (0, "none")
    if group is not None and group.cpu_user is not None and group.cpu_sys is not None:
        user, sys_ = group.cpu_user, group.cpu_sys
    else:
        user, sys_ = ru_utime + reaped_utime, ru_stime + reaped_stime
    measured_by = "cgroup" if group is not None and group.peak_charge is not None else "sampled"
    return Usage(maxrss, max(0.0, user), max(0.0, sys_), measured_by, src, oom)


def out_of_memory_reason(limit: int, peak: int) -> str:
    """INFO ``reason`` of a job stopped for memory, as Slurm's OUT_OF_MEMORY:
    ``out of memory (limit 100M, peak 101M)``."""
    return f"out of memory (limit {format_mem(limit)}, peak {format_mem(peak)})"
