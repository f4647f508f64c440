"""Retries (SUBMIT options RETRY and RETRYMEM): whether a failed attempt of a job is started
again, and with how much memory. Pure: the caller (`State.exited`, or the Slurm back end's
`SlurmBackend._end`) puts the job back in the queue. ``F`` stays terminal: only the last
attempt can end in it, so WAIT and dependents see one final state."""

from __future__ import annotations

from typing import NamedTuple

from sjq.jobs import Job
from sjq.units import format_mem

__all__ = ["Retry", "retry_of"]

OUT_OF_MEMORY = "out of memory"  # how the keeper's reason for a memory end starts
# How the reason of an end nobody recorded starts: the keeper's, and the Slurm back end's
# for a job slurmctld forgot before sjq saw it end (sjq.slurm.backend).
LOST = ("exit status lost", "how it ended is lost")


class Retry(NamedTuple):
    reason: str  # what INFO says while the job waits for its next attempt
    mem: int  # the next attempt's MEM


def retry_of(job: Job, reason: str, maxmem: int | None) -> Retry | None:
    """``job``'s attempt (its ``job.attempts``-th) failed for ``reason``: its next attempt,
    or None if this was its last (RETRY: at most ``job.retry`` attempts after the first).
    After an out-of-memory end, RETRYMEM multiplies MEM, up to ``maxmem``."""
    if job.attempts > job.retry or reason.startswith(LOST):
        return None  # (an attempt whose end is unknown may have done its work)
    mem = job.mem
    more = ""
    if reason.startswith(OUT_OF_MEMORY) and job.retry_mem:
        mem = -int(-job.mem * job.retry_mem // 1)  # up to a whole byte
        if maxmem is not None:
            mem = min(mem, maxmem)
        mem = max(mem, job.mem)
        if mem > job.mem:
            more = f", with MEM {format_mem(mem)}"
    total = job.retry + 1
    return Retry(f"attempt {job.attempts} of {total} failed: {reason}; started again{more}", mem)
