"""Slurm's job states -> sjq's states and reasons; pure: imports no subprocess/asyncio.

Which Slurm states are waiting, running or ended, and why an ended job ended, in sjq's
words; only the standard library and ``sjq.protocol`` (for ``JobState``) are imported.

A ``SlurmJob`` (``sjq.slurm.parse``) carries Slurm's state word, its reason code, how the job
ended (exit status, signal, or slurmd's launch error) and, from sacct, who cancelled it;
``progress`` turns that into sjq's letter and reason. An unknown Slurm state never ends a job.
"""

from __future__ import annotations

import enum
import signal
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sjq.protocol import JobState

if TYPE_CHECKING:
    from sjq.slurm.parse import SlurmJob

__all__ = ["FAILED", "LAUNCH_ERRORS", "RUNNING", "WAITING", "Phase", "Progress", "progress"]

# What slurmd's launch errors (slurm_errno.h, 4000-4999, and its texts) mean, for the reason
# of a job that never ran. 4021 is what a missing working directory or an output file that
# cannot be opened gives on 22.05.
LAUNCH_ERRORS = {
    4010: "Slurmd could not create a batch directory or file",
    4014: "Slurmd could not set up environment for batch job",
    4016: "Slurmd could not set UID or GID",
    4019: "Slurmd could not fork job",
    4020: "Slurmd could not execve job",
    4021: "Slurmd could not connect IO (cannot open the output file or working directory?)",
    4022: "Job prolog failed",
    4100: "unable to change directory to work directory",
    4101: "cannot open the output file",
}


class Phase(enum.Enum):
    """Where a Slurm job is, in sjq's terms."""

    WAITING = "waiting"
    RUNNING = "running"
    ENDED = "ended"


@dataclass(frozen=True, slots=True)
class Progress:
    """A Slurm job's state in sjq's letters. ``reason`` is, for an ended job, why it ended
    (sjq's wording: ``exit status 3``, ``time limit`` ...); for a waiting or running job
    Slurm's reason code, or ``""``."""

    state: JobState
    reason: str = ""

    @property
    def phase(self) -> Phase:
        if self.state.terminal:
            return Phase.ENDED
        return Phase.RUNNING if self.state is JobState.RUNNING else Phase.WAITING


# Not yet started: in Slurm's queue, or put back into it (requeued, held after a requeue, a
# reservation deleted, nodes booting).
WAITING = frozenset({
    "PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESV_DEL_HOLD",
    "SPECIAL_EXIT", "POWER_UP_NODE", "REVOKED",
})  # fmt: skip
# Holding an allocation: running, ending, or suspended by an administrator or gang scheduler.
RUNNING = frozenset({
    "RUNNING", "COMPLETING", "SIGNALING", "STAGE_OUT", "SUSPENDED", "STOPPED", "RESIZING",
    "UPDATE_DB",
})  # fmt: skip
# End states that are the job's failure, with sjq's reason.
FAILED = {
    "TIMEOUT": "time limit",
    "OUT_OF_MEMORY": "out of memory",
    "NODE_FAIL": "node failure",
    "BOOT_FAIL": "node boot failure",
    "DEADLINE": "deadline reached",
    # Preempted and not requeued: ended by Slurm for a more important job, not by a person.
    "PREEMPTED": "preempted",
}
# A job Slurm cancelled because a dependency failed (--kill-on-invalid-dep) shows in squeue as
# CANCELLED with reason DependencyNeverSatisfied, in sacct as CANCELLED (no "by <uid>") with
# reason Dependency. A job a person cancelled while it waited for a dependency shows in squeue
# with reason Dependency, in sacct as "CANCELLED by <uid>".


def progress(job: SlurmJob) -> Progress:
    """The sjq state of a Slurm job; an unknown Slurm state never ends a job."""
    state, reason = job.state, job.reason
    if state in WAITING:
        return Progress(JobState.HELD if reason == "JobHeldUser" else JobState.QUEUED, reason)
    if state in RUNNING:
        return Progress(JobState.RUNNING, state if state in ("SUSPENDED", "STOPPED") else reason)
    if state == "COMPLETED":
        if job.exit_code not in (None, 0) or job.signal:
            return Progress(JobState.FAIL, _failure(job))
        return Progress(JobState.SUCCESS)
    if state == "FAILED":
        if not job.node:
            # Never placed on a node: refused after all (sbatch --mem more than any node has
            # leaves such a record, reason BadConstraints, status 1).
            why = f" ({reason})" if reason else ""
            return Progress(JobState.ERROR, f"Slurm could not start the job{why}")
        if job.launch_error is not None:
            what = LAUNCH_ERRORS.get(job.launch_error, "slurmd error")
            return Progress(JobState.ERROR, f"Slurm could not start the job: {what} "
                            f"(error {job.launch_error})")  # fmt: skip
        return Progress(JobState.FAIL, _failure(job))
    if state in FAILED:
        where = f" on {job.node}" if job.node and state in ("NODE_FAIL", "BOOT_FAIL") else ""
        return Progress(JobState.FAIL, FAILED[state] + where)
    if state == "CANCELLED":
        if job.cancelled_by is None and (
            reason == "DependencyNeverSatisfied"
            or (job.source == "sacct" and reason == "Dependency")
        ):
            return Progress(JobState.ABORT, "a dependency failed (Slurm cancelled the job)")
        if job.cancelled_by is not None:
            return Progress(JobState.KILLED, f"cancelled in Slurm by uid {job.cancelled_by}")
        return Progress(JobState.KILLED, "cancelled in Slurm")
    started = job.start is not None and (job.elapsed or 0) > 0
    return Progress(JobState.RUNNING if started else JobState.QUEUED, f"Slurm state {state}")


def _failure(job: SlurmJob) -> str:
    if job.signal:
        try:
            name = signal.Signals(job.signal).name
        except ValueError:
            name = str(job.signal)
        return f"killed by signal {name}"
    if job.exit_code:
        return f"exit status {job.exit_code}"
    return f"failed in Slurm ({job.reason})" if job.reason else "failed in Slurm"
