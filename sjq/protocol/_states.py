"""JobState: the job states as the wire names them, one letter each. Imports nothing."""

from __future__ import annotations

import enum

__all__ = ["TERMINAL", "JobState"]


class JobState(enum.StrEnum):
    """One letter per state, exactly as sent on the wire (2014 README); ``word`` is what
    people read (``sjq status``)."""

    QUEUED = "Q"  # runnable, waiting for CPUs/memory
    WAITING = "H"  # waiting for its dependencies
    HELD = "U"  # submitted with HOLD (or held later); waits for RELEASE
    RUNNING = "R"
    SUCCESS = "S"  # exit status 0
    FAIL = "F"  # non-zero exit, or a signal sjq did not send
    ABORT = "A"  # a dependency ended in F, A, K or E: this job will never run
    KILLED = "K"  # killed by KILL, or by SHUTDOWN while running
    ERROR = "E"  # the job could not be started

    # The names of the 2014 documentation, kept for code written against them.
    HOLDING = "H"
    USERHOLD = "U"

    @property
    def word(self) -> str:
        return _WORDS[self]

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


_WORDS = {
    JobState.QUEUED: "queued",
    JobState.WAITING: "waiting",
    JobState.HELD: "held",
    JobState.RUNNING: "running",
    JobState.SUCCESS: "done",
    JobState.FAIL: "failed",
    JobState.ABORT: "aborted",
    JobState.KILLED: "killed",
    JobState.ERROR: "error",
}

TERMINAL = frozenset(
    {JobState.SUCCESS, JobState.FAIL, JobState.ABORT, JobState.KILLED, JobState.ERROR}
)
