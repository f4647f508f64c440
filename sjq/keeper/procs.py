"""Naming and signalling processes: a pid plus its start time, process groups, pidfds.

Imports nothing of asyncio or sqlite3. Part of the keeper package because it is the one
place that touches processes; the daemon uses it for processes of an earlier daemon.
"""

from __future__ import annotations

import contextlib
import os
import time

__all__ = [
    "START_SLACK",
    "boot_ticks",
    "drop_descriptors",
    "proc_start_time",
    "process_alive",
    "signal_group",
]


def proc_start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, or None if it is gone (or a
    zombie, which has finished: whoever reaps it is not us).

    Together with the pid it names one process for ever: a recycled pid has a later start.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # The command name is in parentheses and may contain spaces or ')'.
    fields = data[data.rindex(b")") + 2 :].split()
    if fields[0] in (b"Z", b"X"):
        return None
    return int(fields[19])


# A job's start is recorded as the boot-clock tick just before its spawn (what the kernel
# reports can only be later); when the tick just after is not known, the kernel's figure
# may be this much later still: a recycled pid needs the whole pid space to wrap first.
START_SLACK = 100  # clock ticks (one second at the usual 100 Hz)
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def boot_ticks() -> int:
    """Now, in the clock ticks since boot that /proc/<pid>/stat uses for start times."""
    return int(time.clock_gettime(time.CLOCK_BOOTTIME) * _CLK_TCK)


def process_alive(pid: int, start: int | None, start_hi: int | None = None) -> bool:
    """Whether ``pid`` is still the process that started at ``start`` (at most ``start_hi``)."""
    if start is None:
        return False
    actual = proc_start_time(pid)
    hi = start + START_SLACK if start_hi is None else start_hi
    return actual is not None and start <= actual <= hi


def signal_group(pid: int, sig: int) -> None:
    """Signal a job's whole process group (its leader's pid is the group id)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def drop_descriptors(keep: set[int]) -> None:
    """Let go of every inherited descriptor but ``keep`` and 0, 1, 2 (a forked keeper and
    the daemon's files). Python objects inherited from the daemon still own some of these
    descriptors and close them when collected. Pointing each at /dev/null (rather than
    closing it) drops the files while keeping the number taken, so such a late close can
    never hit a file the keeper opened since."""
    keep = {0, 1, 2, *keep}
    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd not in keep and fd != null:
            with contextlib.suppress(OSError):
                os.dup2(null, fd, inheritable=False)
