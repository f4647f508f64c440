"""The job record, the transition table of job states, and the records that cross to and
from the keepers. ``JobState`` itself is a wire concept and lives in ``sjq.protocol``;
``Q``, ``H`` ... ``E`` here are its members by their letters, for code that reads like the
state table.

Pure data: imports nothing of asyncio, sqlite3, subprocess or the rest of sjq but the
protocol's states.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from sjq.protocol._states import TERMINAL, JobState

__all__ = [
    "TERMINAL",
    "TRANSITIONS",
    "A",
    "Change",
    "E",
    "ExitRecord",
    "F",
    "H",
    "IllegalTransition",
    "Job",
    "JobLaunch",
    "JobState",
    "K",
    "Q",
    "R",
    "S",
    "U",
]


Q, H, U, R = JobState.QUEUED, JobState.WAITING, JobState.HELD, JobState.RUNNING
S, F, A, K, E = JobState.SUCCESS, JobState.FAIL, JobState.ABORT, JobState.KILLED, JobState.ERROR

# The legal next states of each state. R -> Q is taken by recovery, for a job the daemon
# had decided to start but that provably never started, and by a failed attempt of a job
# that is started again (RETRY): F is only ever its last attempt's end.
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
    dependency: str = ""  # DEPENDENCY as recorded (normalised): conditions beyond DEPENDS
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
    cpu_user: float | None = None  # seconds, of the whole process tree
    cpu_sys: float | None = None
    maxrss: int | None = None  # peak resident memory of the whole tree, bytes
    measured_by: str | None = None  # "cgroup" or "sampled" (INFO measured_by), once ended
    priority: int = 0  # higher starts first among jobs that fit; ties go to the lower id
    gpus: int = 0  # GPUs reserved (GPUS)
    cpu_ids: tuple[int, ...] | None = None  # the CPUs it runs on, when pinned (INFO cpus)
    gpu_ids: tuple[str, ...] | None = None  # the GPUs it holds, when GPUs are managed
    retry: int = 0  # attempts after the first that may fail and be started again (RETRY)
    retry_mem: float | None = None  # MEM x this after an out-of-memory end (RETRYMEM)
    attempts: int = 0  # attempts started so far (INFO attempts)
    armed: bool = False  # a keeper will start it the moment the one running job ends
    array: int = 0  # the first id of the array it is an element of; 0: none
    time_limit: float | None = None  # TIME, seconds: when it must have ended (reservations)
    # The Slurm back end (sjq.slurm.backend): Slurm's job id once sbatch has answered, the
    # node it runs on, and the state shown while it is R to sjq but waits in Slurm (Q or U).
    backend_id: str | None = None
    node: str | None = None
    shown: JobState | None = None

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
    procs: int = 1  # CPUs reserved (the thread variables of the job's environment)
    mem: int | None = None  # the memory limit to hold the job to, bytes; None: not enforced
    makedirs: tuple[str, ...] = ()  # "stdout", "stderr": create the file's directory if missing
    cpus: tuple[int, ...] | None = None  # the CPUs to pin it to; None: not pinned
    gpus: tuple[str, ...] | None = None  # its GPUs; None: the daemon manages none
    ngpus: int = 0  # how many GPUs it reserved (what an armed start takes over)


class ExitRecord(NamedTuple):
    """How a job's process ended, as its keeper saw it."""

    jobid: int
    pid: int
    exit_code: int | None  # None when a signal ended it
    signal: int | None
    time: float
    cpu_user: float
    cpu_sys: float
    maxrss: int  # peak resident memory of the whole tree, bytes
    reason: str = ""  # "time limit", "out of memory (...)" when the keeper stopped the job
    measured_by: str = ""  # "cgroup" or "sampled"; "" in the records of an earlier sjq
