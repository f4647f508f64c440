"""Reading processes from /proc, and the keeper's own flags. Imports no asyncio or sqlite3.

Parentage, start times, resident memory, environment markers; the keeper's own peak
size, the subreaper flag, pinning by affinity.

Costs measured on the development machine (2-core VM, kernel 6.18), per call:
``/proc/<pid>/stat`` or ``statm`` ~10 us; ``status`` ~16 us; ``smaps_rollup`` ~0.15 ms for
a 10 MB process plus ~9 us per MB resident (it walks the page tables: 4.5 ms at 500 MB);
listing /proc ~0.1 ms per 100 processes. Hence: status for every sample, smaps_rollup
only where it changes the answer (several processes sharing pages) and at a bounded rate.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass

__all__ = [
    "PAGE",
    "ProcStat",
    "boot_ticks",
    "keeper_peak",
    "marker_in_environ",
    "pinned",
    "read_pss",
    "read_resident",
    "read_stat",
    "set_child_subreaper",
]

PAGE = os.sysconf("SC_PAGE_SIZE")
CLK_TCK = os.sysconf("SC_CLK_TCK")
_PR_SET_CHILD_SUBREAPER = 36


@dataclass(frozen=True, slots=True)
class ProcStat:
    """What /proc/<pid>/stat says that sjq uses."""

    pid: int
    ppid: int
    pgrp: int
    session: int
    state: str  # R, S, D, Z, ...
    utime: int  # clock ticks
    stime: int
    start: int  # clock ticks since boot: with the pid, names the process for ever


def read_stat(pid: int, proc: str = "/proc") -> ProcStat | None:
    """None if the process is gone."""
    try:
        with open(f"{proc}/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # The command name is in parentheses and may contain spaces or ')'.
    fs = data[data.rindex(b")") + 2 :].split()
    return ProcStat(
        pid,
        int(fs[1]),
        int(fs[2]),
        int(fs[3]),
        fs[0].decode(),
        int(fs[11]),
        int(fs[12]),
        int(fs[19]),
    )


def read_resident(pid: int, proc: str = "/proc") -> int | None:
    """RssAnon + RssShmem in bytes (counters, O(1)): the process's own resident memory,
    without mapped files (program text, libraries, mmapped data) or page cache. Pages it
    shares with a process it forked from (copy-on-write) count in both: see ``read_pss``.
    None if the process is gone (or is a zombie: then its memory is freed)."""
    try:
        with open(f"{proc}/{pid}/status", "rb") as f:
            data = f.read()
    except OSError:
        return None
    total = 0
    found = False
    for line in data.splitlines():
        if line.startswith((b"RssAnon:", b"RssShmem:")):
            total += int(line.split()[1]) * 1024
            found = True
    return total if found else None


def read_pss(pid: int, proc: str = "/proc") -> int | None:
    """Pss_Anon + Pss_Shmem in bytes from smaps_rollup: like ``read_resident``, but a page
    shared by k processes counts 1/k in each, so a tree's sum counts it once. Costly (page
    table walk, ~9 us per resident MB). Kernels before 5.10 have no Pss_Anon: then the whole
    Pss minus Pss_File if present, else None (the caller keeps the RSS figure)."""
    try:
        with open(f"{proc}/{pid}/smaps_rollup", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields: dict[bytes, int] = {}
    for line in data.splitlines():
        key, _, rest = line.partition(b":")
        if key.startswith(b"Pss"):
            parts = rest.split()
            if parts:
                fields[key] = int(parts[0]) * 1024
    if b"Pss_Anon" in fields:
        return fields[b"Pss_Anon"] + fields.get(b"Pss_Shmem", 0)
    if b"Pss" in fields and b"Pss_File" in fields:
        return fields[b"Pss"] - fields[b"Pss_File"]
    return None


def marker_in_environ(pid: int, marker: tuple[bytes, ...], proc: str = "/proc") -> bool:
    """Whether the process's initial environment holds every ``NAME=value`` in ``marker``
    (e.g. the job's SJQ_JOBID and the daemon's SJQ_SOCKET). It survives reparenting and
    new sessions; a process that exec'd with a cleaned environment loses it."""
    if not marker:
        return False
    try:
        with open(f"{proc}/{pid}/environ", "rb") as f:
            env = b"\0" + f.read()
    except OSError:
        return False
    return all(b"\0" + m + b"\0" in env for m in marker)


def keeper_peak() -> int:
    """This process's peak resident size in bytes (its own, not its children's).

    A job started with posix_spawn (or fork) inherits this figure: at exec the kernel
    records the old address space's peak, which is the keeper's, in the job's ``ru_maxrss``.
    Read it after a spawn: a job whose ``ru_maxrss`` is no larger was never measured."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def set_child_subreaper() -> bool:
    """Make this process the reaper of its descendants' orphans (prctl
    PR_SET_CHILD_SUBREAPER): a job's double-forked daemon then stays our descendant
    (waitable, and its rusage comes to us) instead of going to init. False if refused."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def boot_ticks() -> int:
    """Now, in the clock ticks since boot that /proc/<pid>/stat uses for start times: read
    just before a spawn, a lower bound of the new process's start."""
    return int(time.clock_gettime(time.CLOCK_BOOTTIME) * CLK_TCK)


@contextlib.contextmanager
def pinned(cpus: Collection[int] | None, then: Collection[int] | None = None) -> Iterator[None]:
    """Run the body with the calling thread's CPU affinity set to ``cpus`` (nothing if
    None), then restore it, or set it to ``then`` instead: a process spawned inside
    starts with that affinity, pinned from its first instruction (the watcher's way to
    pin; under cgroups the job's cpuset does it). Costs two system calls (~5 us each
    here, ~50 us when the thread must move to another CPU)."""
    if cpus is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        try:
            os.sched_setaffinity(0, then or before)
        except OSError:
            os.sched_setaffinity(0, before)
