"""The job record, the transition table of job states, and the records that cross to and
from the keepers. ``JobState`` itself is a wire concept and lives in ``sjq.protocol``;
``Q``, ``H`` ... ``E`` here are its members by their letters, for code that reads like the
state table.

Pure data: imports nothing of asyncio, sqlite3, subprocess or the rest of sjq but the
protocol's states.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Generic, NamedTuple, TypeVar, cast, overload

from sjq.protocol._states import TERMINAL, JobState

__all__ = [
    "NO_RUN",
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
    "Run",
    "S",
    "U",
]


Q, H, U, R = JobState.QUEUED, JobState.WAITING, JobState.HELD, JobState.RUNNING
S, F, A, K, E = JobState.SUCCESS, JobState.FAIL, JobState.ABORT, JobState.KILLED, JobState.ERROR
T = TypeVar("T")

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


class Run:
    """What a job has once it has started, kept after it ends: made at its first start, so
    that each of 100,000 queued jobs costs only what waiting needs (``Job.run`` is None
    until then). Read and written through ``Job``'s attributes of the same names."""

    __slots__ = (
        "attempts",
        "backend_id",
        "cpu_ids",
        "cpu_sys",
        "cpu_user",
        "end_time",
        "exit_code",
        "gpu_ids",
        "killing",
        "maxrss",
        "measured_by",
        "node",
        "pid",
        "pid_start",
        "shown",
        "signal",
        "start_time",
    )

    def __init__(self) -> None:
        self.start_time: float | None = None
        self.end_time: float | None = None
        self.exit_code: int | None = None  # exit status; None when killed by a signal / never ran
        self.signal: int | None = None  # the signal that ended it, if any
        self.pid: int | None = None
        self.pid_start: int | None = None  # start time in clock ticks: pid + this survives reuse
        self.killing = False  # KILL was sent: its exit ends in K whatever the status
        self.cpu_user: float | None = None  # seconds, of the whole process tree
        self.cpu_sys: float | None = None
        self.maxrss: int | None = None  # peak resident memory of the whole tree, bytes
        self.measured_by: str | None = None  # "cgroup" or "sampled" (INFO measured_by), once ended
        self.cpu_ids: tuple[int, ...] | None = None  # the CPUs it runs on, when pinned (INFO cpus)
        self.gpu_ids: tuple[str, ...] | None = None  # the GPUs it holds, when GPUs are managed
        self.attempts = 0  # attempts started so far (INFO attempts)
        # The Slurm back end (sjq.slurm.backend): Slurm's job id once sbatch has answered, the
        # node it runs on, and the state shown while it is R to sjq but waits in Slurm (Q or U).
        self.backend_id: str | None = None
        self.node: str | None = None
        self.shown: JobState | None = None


NO_RUN: Final = Run()  # what a job that never started reads: every field's default; never changed


class _Ran(Generic[T]):
    """A ``Job`` attribute kept in its ``Run``: the default (``NO_RUN``'s) while the job has
    none; setting anything else makes the ``Run``."""

    __slots__ = ("name",)

    def __init__(self) -> None:
        self.name = ""

    def __set_name__(self, owner: type[Job], name: str) -> None:
        self.name = name

    @overload
    def __get__(self, job: None, owner: type[Job]) -> _Ran[T]: ...
    @overload
    def __get__(self, job: Job, owner: type[Job]) -> T: ...
    def __get__(self, job: Job | None, owner: type[Job]) -> T | _Ran[T]:
        if job is None:
            return self
        return cast("T", getattr(job.run or NO_RUN, self.name))

    def __set__(self, job: Job, value: T) -> None:
        run = job.run
        if run is None:
            if value == getattr(NO_RUN, self.name):
                return
            run = job.run = Run()
        setattr(run, self.name, value)


class Job:
    """What the daemon keeps in memory for one job.

    The bulky parts of a job (script, environment, paths) live only in the state
    database and are read back when the job starts, so 100,000 waiting jobs stay cheap;
    what only a started job has is in its ``Run``.
    """

    __slots__ = (
        "armed",
        "array",
        "dependency",
        "depends",
        "gid",
        "gpus",
        "id",
        "mem",
        "name",
        "priority",
        "procs",
        "reason",
        "retry",
        "retry_mem",
        "run",
        "state",
        "submit_time",
        "time_limit",
        "uid",
        "waiting",
    )

    start_time = _Ran[float | None]()
    end_time = _Ran[float | None]()
    exit_code = _Ran[int | None]()
    signal = _Ran[int | None]()
    pid = _Ran[int | None]()
    pid_start = _Ran[int | None]()
    killing = _Ran[bool]()
    cpu_user = _Ran[float | None]()
    cpu_sys = _Ran[float | None]()
    maxrss = _Ran[int | None]()
    measured_by = _Ran[str | None]()
    cpu_ids = _Ran[tuple[int, ...] | None]()
    gpu_ids = _Ran[tuple[str, ...] | None]()
    attempts = _Ran[int]()
    backend_id = _Ran[str | None]()
    node = _Ran[str | None]()
    shown = _Ran[JobState | None]()

    def __init__(
        self,
        id: int,
        name: str,
        state: JobState,
        procs: int,
        mem: int,
        *,
        depends: tuple[int, ...] = (),
        dependency: str = "",
        uid: int = -1,
        gid: int = -1,
        submit_time: float = 0.0,
        reason: str = "",
        waiting: int = 0,
        priority: int = 0,
        gpus: int = 0,
        retry: int = 0,
        retry_mem: float | None = None,
        armed: bool = False,
        array: int = 0,
        time_limit: float | None = None,
        run: Run | None = None,
    ) -> None:
        self.id = id
        self.name = name
        self.state = state
        self.procs = procs
        self.mem = mem
        self.depends = depends
        self.dependency = dependency  # DEPENDENCY as recorded (normalised): beyond DEPENDS
        self.uid = uid
        self.gid = gid
        self.submit_time = submit_time
        self.reason = reason  # why it ended as it did (E/F/A/K), or waits again; "" on success
        self.waiting = waiting  # how many dependencies have not yet succeeded
        self.priority = priority  # higher starts first among jobs that fit; ties: lower id
        self.gpus = gpus  # GPUs reserved (GPUS)
        self.retry = retry  # attempts after the first that may fail and start again (RETRY)
        self.retry_mem = retry_mem  # MEM x this after an out-of-memory end (RETRYMEM)
        self.armed = armed  # a keeper will start it the moment the one running job ends
        self.array = array  # the first id of the array it is an element of; 0: none
        self.time_limit = time_limit  # TIME, seconds: when it must have ended (reservations)
        self.run = run

    def __repr__(self) -> str:
        return f"Job(id={self.id}, name={self.name!r}, state={self.state.value})"

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
