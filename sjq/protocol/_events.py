"""The request, reply and event objects of the wire protocol. Pure data: imports no I/O module."""

from __future__ import annotations

import enum
from typing import Final, Literal, TypeAlias

from sjq._record import record

__all__ = [
    "NEED_DATA",
    "SHUTTING_DOWN",
    "BadRequest",
    "Closed",
    "Data",
    "Error",
    "Exit",
    "Hold",
    "Info",
    "Kill",
    "NeedData",
    "Ok",
    "Pause",
    "Ping",
    "ProtocolError",
    "QueueInfo",
    "Release",
    "Reply",
    "Request",
    "Resume",
    "ServerEvent",
    "Shutdown",
    "Status",
    "Stop",
    "Submit",
    "SubmitOptions",
    "Wait",
]


class _Sentinel(enum.Enum):
    NEED_DATA = "NEED_DATA"

    def __repr__(self) -> str:
        return self.value


# An enum member rather than h11's sentinel class, so that mypy narrows `is NEED_DATA`.
NEED_DATA: Final = _Sentinel.NEED_DATA
NeedData: TypeAlias = Literal[_Sentinel.NEED_DATA]


class ProtocolError(Exception):
    """The daemon's reply could not be read: not ``OK``/``ERROR``, a bad length, or cut short.

    Raised on the client side only. A daemon never raises for what a client sends: a
    bad request becomes a `BadRequest` event, answered with ``ERROR``.
    """


# --- requests (client -> daemon) ---------------------------------------------------


@record
class Ping:
    """``PING``: queue statistics, ``OK Q:3 R:2``."""


@record
class Exit:
    """``EXIT``: the daemon replies ``OK BYE`` and closes the connection."""


@record
class Shutdown:
    """``SHUTDOWN``: kill running jobs, keep the queue on disk, exit the daemon."""


@record
class Stop:
    """``STOP`` (extension): exit the daemon but leave running jobs running, for re-adoption."""


@record
class Status:
    """``STATUS`` (every job) or ``STATUS <id>``. An argument that is not a job id
    (``STATUS abc``, ``STATUS 0``) names no job: ``jobid`` 0, answered ``OK 0`` as the 2014
    daemon did, because old scripts rely on STATUS never failing."""

    jobid: int | None = None


@record
class Kill:
    """``KILL <id>``."""

    jobid: int


@record
class Release:
    """``RELEASE <id>``: a ``U`` job may run once its dependencies are met."""

    jobid: int


@record
class Hold:
    """``HOLD <id>`` (extension): a ``Q`` or ``H`` job becomes ``U``."""

    jobid: int


@record
class Info:
    """``INFO`` (every job) or ``INFO 3:4:5`` (extension): one JSON object per job."""

    jobids: tuple[int, ...] = ()


@record
class Wait:
    """``WAIT 3:4`` (extension): reply once every listed job has ended. Never empty."""

    jobids: tuple[int, ...]


@record
class Pause:
    """``PAUSE`` (extension): no job starts until ``RESUME``; running jobs carry on."""


@record
class Resume:
    """``RESUME`` (extension): jobs start again."""


@record
class QueueInfo:
    """``QUEUE`` (extension): the daemon's own state as one JSON object (paused or not,
    resources); ``PING``'s core reply cannot carry it."""


@record
class SubmitOptions:
    """The option lines of a ``SUBMIT``, as sent. ``None`` means the option was not given.

    Only the syntax has been checked; limits that depend on the machine or on other
    jobs (PROCS above the managed CPUs, MEM above ``sjq.maxmem``, GPUS above the managed
    GPUs, unknown DEPENDS ids, UID/GID permission) are the daemon's to check.
    """

    mem: int | None = None  # bytes
    procs: int | None = None
    depends: tuple[int, ...] = ()
    stdout: str | None = None
    stderr: str | None = None
    env: tuple[tuple[str, str], ...] | None = None  # None: no ENV line; () an empty environment
    cwd: str | None = None
    name: str | None = None
    uid: int | None = None
    gid: int | None = None
    hold: bool = False
    time_limit: float | None = None  # seconds of wall-clock time (extension TIME)
    priority: int = 0  # higher runs first among jobs that fit (extension PRIORITY)
    # DEPENDENCY (extension): Slurm's kinds, each with its ids as inclusive ranges, e.g.
    # (("afterok", ((3, 3), (10, 19))), ("afterany", ((5, 5),))); see _dependency.Clause
    dependency: tuple[tuple[str, tuple[tuple[int, int], ...]], ...] = ()
    # ARRAY (extension): the elements' indexes, sorted (None: not given, or only %N), and
    # at most how many run at once (%N)
    array: tuple[int, ...] | None = None
    array_limit: int | None = None
    # ENTRY lines (extension): one element per entry, in order; with ARRAY's indexes (as
    # many), else indexes 0, 1, 2 ...
    entries: tuple[str, ...] | None = None
    patterns: bool = False  # expand %j, %x ... in stdout/stderr (extension PATTERNS)
    gpus: int | None = None  # GPUs to reserve (extension GPUS)
    retry: int | None = None  # attempts after the first that may fail (extension RETRY)
    retry_mem: float | None = None  # MEM x this after an out-of-memory end (RETRYMEM)


@record
class Submit:
    """``SUBMIT``, its options and the script body (any bytes; starts with ``#!``)."""

    options: SubmitOptions
    script: bytes


Request: TypeAlias = (
    Ping
    | Exit
    | Shutdown
    | Stop
    | Status
    | Kill
    | Release
    | Hold
    | Info
    | Wait
    | Submit
    | Pause
    | Resume
    | QueueInfo
)


# --- other server-side events ------------------------------------------------------


@record
class BadRequest:
    """The client sent something that must be answered with ``ERROR <message>``.

    ``fatal`` means the stream cannot be resynchronised (a line over the limit, an
    unreadable or oversized ``SRC`` length): reply, then close the connection.
    """

    message: str
    fatal: bool = False


@record
class Closed:
    """The client sent an empty request line or EOF, or the connection can no longer be read."""


ServerEvent: TypeAlias = Request | BadRequest | Closed | NeedData


# --- replies (daemon -> client) ----------------------------------------------------


@record
class Ok:
    """``OK`` when text is None, else ``OK <text>``; so ``Ok("")`` is ``OK `` (PING, no jobs)."""

    text: str | None = None


@record
class Data:
    """``OK <n>`` followed by the n payload bytes (STATUS, INFO)."""

    payload: bytes


@record
class Error:
    """``ERROR <message>``; CR and LF in the message are sent as spaces."""

    message: str


# A daemon that is stopping (SHUTDOWN, STOP, idle) refuses a SUBMIT with this text: the job
# was not queued, and a client that starts daemons may send it again to the next one.
SHUTTING_DOWN = "the daemon is shutting down; submit again in a moment"


Reply: TypeAlias = Ok | Data | Error
