"""The job record, the JobState enum (values are the wire letters) and the transition table.

Pure data: imports nothing of asyncio, sqlite3, subprocess or the rest of sjq.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NamedTuple

__all__ = [
    "TERMINAL",
    "TRANSITIONS",
    "Change",
    "ExitRecord",
    "IllegalTransition",
    "Job",
    "JobLaunch",
    "JobState",
]


class JobState(enum.StrEnum):
    """One letter per state, exactly as sent on the wire (seed README)."""

    QUEUED = "Q"  # runnable, waiting for CPUs/memory
    HOLDING = "H"  # waiting for its dependencies
    USERHOLD = "U"  # submitted with HOLD (or held later); waits for RELEASE
    RUNNING = "R"
    SUCCESS = "S"  # exit status 0
    FAIL = "F"  # non-zero exit, or a signal sjq did not send
    ABORT = "A"  # a dependency ended in F, A, K or E: this job will never run
    KILLED = "K"  # killed by KILL, or by SHUTDOWN while running
    ERROR = "E"  # the job could not be started

    @property
    def word(self) -> str:
        return _WORDS[self]

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


_WORDS = {
    JobState.QUEUED: "queued",
    JobState.HOLDING: "waiting",
    JobState.USERHOLD: "held",
    JobState.RUNNING: "running",
    JobState.SUCCESS: "done",
    JobState.FAIL: "failed",
    JobState.ABORT: "aborted",
    JobState.KILLED: "killed",
    JobState.ERROR: "error",
}

Q, H, U, R = JobState.QUEUED, JobState.HOLDING, JobState.USERHOLD, JobState.RUNNING
S, F, A, K, E = JobState.SUCCESS, JobState.FAIL, JobState.ABORT, JobState.KILLED, JobState.ERROR

TERMINAL = frozenset({S, F, A, K, E})

# The legal next states of each state. R -> Q is only taken by recovery, for a job
# the daemon had decided to start but that provably never started.
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    Q: frozenset({R, U, K}),
    H: frozenset({Q, U, A, K}),
    U: frozenset({Q, H, A, K}),
    R: frozenset({S, F, K, E, Q}),
    S: frozenset(),
    F: frozenset(),
    A: frozenset(),
    K: frozenset(),
    E: frozenset(),
}


class IllegalTransition(RuntimeError):
    """A programming error: some code asked for a transition the table forbids."""


@dataclass(slots=True, eq=False)
class Job:
    """What the daemon keeps in memory for one job.

    The bulky parts of a job (script, environment, paths) live only in the state
    database and are read back when the job starts, so 100,000 waiting jobs stay cheap.
    """

    id: int
    name: str
    state: JobState
    procs: int
    mem: int
    depends: tuple[int, ...] = ()
    uid: int = -1
    gid: int = -1
    submit_time: float = 0.0
    start_time: float | None = None
    end_time: float | None = None
    exit_code: int | None = None  # exit status, or None when killed by a signal / never ran
    signal: int | None = None  # the signal that ended it, if any
    reason: str = ""  # why it ended as it did, for E/F/A/K; empty on success
    pid: int | None = None
    pid_start: int | None = None  # process start time in clock ticks: pid + this survives pid reuse
    waiting: int = 0  # how many dependencies have not yet succeeded
    killing: bool = False  # KILL was sent: its exit ends in K whatever the status
    cpu_user: float | None = None  # seconds, from wait4
    cpu_sys: float | None = None
    maxrss: int | None = None  # peak resident memory in bytes, from wait4
    priority: int = 0  # higher starts first among jobs that fit; ties go to the lower id
    armed: bool = False  # a keeper will start it the moment the one running job ends

    def set_state(self, new: JobState) -> None:
        """Change state through the table; refuse what it does not list."""
        if new not in TRANSITIONS[self.state]:
            raise IllegalTransition(f"job {self.id}: {self.state.value} -> {new.value}")
        self.state = new


@dataclass(frozen=True, slots=True)
class Change:
    """One state change, as it must be recorded durably."""

    job: Job
    state: JobState
    time: float


# What crosses to and from the keeper processes: NamedTuples, because they pickle as plain
# tuples, several times cheaper than slotted dataclasses, and thousands cross every second.


class JobLaunch(NamedTuple):
    """Everything a keeper needs to start one job."""

    jobid: int
    script: bytes
    cwd: str
    stdout: str
    stderr: str
    env: dict[str, str]  # TMPDIR is added by the keeper
    time_limit: float | None = None
    uid: int | None = None  # set only when a root daemon runs a job as another user
    gid: int | None = None


class ExitRecord(NamedTuple):
    """How a job's process ended, as its keeper saw it."""

    jobid: int
    pid: int
    exit_code: int | None  # None when a signal ended it
    signal: int | None
    time: float
    cpu_user: float
    cpu_sys: float
    maxrss: int  # bytes
    reason: str = ""  # "time limit" when the keeper enforced one
