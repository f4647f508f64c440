"""What each client method sends and how it reads the replies, shared by Client and AsyncClient.

No I/O: a method is written once here as a *plan*, a generator that yields a `Call` (requests
to send, pipelined, on the client's connection), is sent their replies, and returns the
method's result. `Client` runs plans over a blocking socket, `AsyncClient` over asyncio
streams, so both send the same bytes and read replies the same way. Imports what a submit
already needs (sjq.protocol, sjq.units, the client's _job and _script); JobState and the
JobInfo model only when a state is asked for. Never asyncio, socket or the daemon's modules.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Literal, TypeAlias, TypeVar

from sjq._record import record
from sjq.protocol import (
    SHUTTING_DOWN,
    Data,
    Error,
    Info,
    Ok,
    Ping,
    QueueInfo,
    Reply,
    Request,
    Status,
    Submit,
    SubmitOptions,
    encode_request,
)
from sjq.units import parse_duration, parse_mem

from ._exceptions import ConnectionLost, JobTimeout, ProtocolError, RequestRejected
from ._job import JobRef, job_ids
from ._script import exportable, script_body

if TYPE_CHECKING:
    from sjq.protocol import JobState
    from sjq.protocol._dependency import Clause

    from ._models import JobInfo, QueueState

__all__ = [
    "IDS_PER_LINE",
    "MAXLINE",
    "MIN_WAIT",
    "Call",
    "Plan",
    "chunks",
    "expect_ok",
    "info",
    "lost",
    "ok",
    "outcomes",
    "ping",
    "queue_state",
    "shutdown_timeout",
    "state",
    "status",
    "submit",
    "submit_request",
    "wait_groups",
    "wait_states",
    "wait_timeout",
]

MIN_WAIT = 0.05  # seconds a wait gives the daemon to answer, whatever its timeout
# Most ids per INFO/WAIT line: 2000 ids of up to 8 digits stay far below the daemon's default
# 64 KiB line (sjq.maxline); a smaller sjq.maxline makes the lines shorter (chunks).
IDS_PER_LINE = 2000
MAXLINE = 64 * 1024  # sjq.maxline's default
_VERB = len("INFO ")  # the same for WAIT

T = TypeVar("T")


@record
class Call:
    """Requests to send pipelined on the client's connection; the plan gets their replies.

    ``start``: a daemon may be started if none answers (a submit, and the requests about
    named jobs: an idle daemon has shut itself down, but its database still holds them).
    ``retry``: the requests may be sent again if the connection breaks mid-way (true of all
    but SUBMIT, which would queue a job twice).
    """

    requests: tuple[Request, ...]
    start: bool = False
    retry: bool = True


Plan: TypeAlias = Generator[Call, list[Reply], T]

# A daemon may stop (idle, SHUTDOWN) between a client's connect and its SUBMIT: how many
# times a call refused for that goes to the daemon started next.
RESTARTS = 3


def refused_for_stopping(replies: Sequence[Reply]) -> bool:
    """Whether a daemon that is stopping refused every request of a call (``SHUTTING_DOWN``):
    none was carried out, and with autostart the call goes to the next daemon. That daemon
    stopped listening before it refused them: a new connection starts a new daemon."""
    return bool(replies) and all(
        isinstance(r, Error) and r.message == SHUTTING_DOWN for r in replies
    )


def chunks(ids: tuple[int, ...], maxline: int = MAXLINE) -> list[tuple[int, ...]]:
    """``ids`` in runs of at most IDS_PER_LINE, each short enough that its request line
    (``INFO 3:4:5``, ``WAIT 3:4:5``) stays within ``maxline`` bytes, the daemon's sjq.maxline
    (which would close the connection on a longer line). An id that cannot fit even alone
    goes alone, for the daemon to refuse."""
    out: list[tuple[int, ...]] = []
    run: list[int] = []
    size = _VERB
    for i in ids:
        n = len(str(i))
        if run and (len(run) == IDS_PER_LINE or size + 1 + n > maxline):
            out.append(tuple(run))
            run, size = [], _VERB
        size += n + (1 if run else 0)
        run.append(i)
    if run:
        out.append(tuple(run))
    return out


# -- submit -------------------------------------------------------------------------------


def submit_request(
    script: str | bytes | os.PathLike[str] | None,
    command: Sequence[str] | None,
    *,
    procs: int | None,
    mem: int | str | None,
    after: Iterable[JobRef],
    name: str | None,
    env: Mapping[str, str] | Literal["inherit", "daemon"],
    cwd: str | os.PathLike[str] | None,
    hold: bool,
    stdout: str | os.PathLike[str] | None,
    stderr: str | os.PathLike[str] | None,
    time_limit: float | str | None,
    priority: int,
    afterany: Iterable[JobRef] = (),
    afternotok: Iterable[JobRef] = (),
    dependency: str | None = None,
    array: str | Iterable[int] | None = None,
    entries: Iterable[str] | None = None,
    limit: int | None = None,
    patterns: bool = False,
    gpus: int | None = None,
    retry: int | None = None,
    retry_mem: float | None = None,
) -> Submit:
    """The SUBMIT of `Client.submit`'s arguments (documented there), encoded once to check it:
    a value the wire cannot carry is a ValueError here, before any I/O (and before a daemon
    is started)."""
    body, default_name = script_body(script, command)
    if isinstance(mem, str):
        mem = parse_mem(mem)
    if isinstance(time_limit, str):
        time_limit = parse_duration(time_limit)
    if procs is not None and (isinstance(procs, bool) or procs < 1):
        raise ValueError(f"procs must be a whole number >= 1, got {procs!r}")
    if gpus is not None and (isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 0):
        raise ValueError(f"gpus must be a whole number >= 0, got {gpus!r}")
    if retry is not None and (isinstance(retry, bool) or not isinstance(retry, int) or retry < 0):
        raise ValueError(f"retry must be a whole number >= 0, got {retry!r}")
    if env == "inherit":
        env_pairs: tuple[tuple[str, str], ...] | None = tuple(exportable(os.environ))
    elif env == "daemon":
        env_pairs = None
    elif isinstance(env, Mapping):
        env_pairs = tuple((str(k), str(v)) for k, v in env.items())
    else:
        raise ValueError(f"env must be a mapping, 'inherit' or 'daemon', got {env!r}")
    clauses = dependency_clauses(dependency, afterany, afternotok)
    indexes, entry_lines = None, None
    if array is not None or entries is not None or limit is not None:
        indexes, limit, entry_lines = array_options(array, entries, limit)
    options = SubmitOptions(
        mem=mem,
        procs=procs,
        depends=job_ids(after),
        stdout=None if stdout is None else os.fspath(stdout),
        stderr=None if stderr is None else os.fspath(stderr),
        env=env_pairs,
        cwd=os.path.abspath(os.getcwd() if cwd is None else cwd),
        name=default_name if name is None else name,
        hold=hold,
        time_limit=time_limit,
        priority=priority,
        dependency=clauses,
        array=indexes,
        array_limit=limit,
        entries=entry_lines,
        patterns=patterns,
        gpus=gpus,
        retry=retry,
        retry_mem=None if retry_mem is None else float(retry_mem),
    )
    request = Submit(options, body)
    encode_request(request)
    return request


def dependency_clauses(
    dependency: str | None, afterany: Iterable[JobRef], afternotok: Iterable[JobRef]
) -> tuple[Clause, ...]:
    """DEPENDENCY's clauses: ``dependency`` in Slurm's syntax (ValueError if it cannot be
    read), then the ids of ``afterany`` and ``afternotok``."""
    clauses: list[Clause] = []
    if dependency is not None:
        from sjq.protocol._dependency import parse_dependency  # noqa: PLC0415 -- rarely needed

        parsed = parse_dependency(dependency)
        if isinstance(parsed, str):
            raise ValueError(f"dependency: {parsed}")
        clauses += parsed
    for kind, refs in (("afterany", afterany), ("afternotok", afternotok)):
        ids = job_ids(refs)
        if ids:
            clauses.append((kind, tuple((i, i) for i in ids)))
    return tuple(clauses)


def array_options(
    array: str | Iterable[int] | None, entries: Iterable[str] | None, limit: int | None
) -> tuple[tuple[int, ...] | None, int | None, tuple[str, ...] | None]:
    """ARRAY and ENTRY from `Client.submit_array`'s arguments: a spec as sbatch's
    (``"1-100%4"``) or the indexes, the entries, a limit (ValueError if unreadable)."""
    indexes: tuple[int, ...] | None = None
    if isinstance(array, str):
        from sjq.protocol._array import parse_array  # noqa: PLC0415 -- arrays only

        parsed = parse_array(array)
        if isinstance(parsed, str):
            raise ValueError(f"array: {parsed}")
        indexes, spec_limit = parsed
        if spec_limit is not None:
            if limit is not None and limit != spec_limit:
                raise ValueError(f"array {array!r} says %{spec_limit}, limit says {limit}")
            limit = spec_limit
    elif array is not None:
        indexes = tuple(sorted(set(array)))
    lines = None if entries is None else tuple(entries)
    for line in lines or ():
        if not isinstance(line, str) or not line or "\n" in line or "\0" in line:
            raise ValueError(f"entries are non-empty lines of text, got {line!r}")
    if indexes is None and lines is None:
        raise ValueError("an array needs indexes (array=) or entries (entries=)")
    return indexes, limit, lines


def submit(request: Submit) -> Plan[int]:
    """Queue a job; its id."""
    replies = yield Call((request,), start=True, retry=False)
    text = expect_ok(replies[0])
    if text is None or not text.isdigit():
        raise ProtocolError(f"SUBMIT answered {text!r}, not a job id")
    return int(text)


def submit_array(request: Submit) -> Plan[range]:
    """Queue an array; its ids (the reply ``OK <first>-<last>``)."""
    replies = yield Call((request,), start=True, retry=False)
    text = expect_ok(replies[0]) or ""
    first, dash, last = text.partition("-")
    if not (dash and first.isdigit() and last.isdigit() and int(first) <= int(last)):
        raise ProtocolError(f"SUBMIT of an array answered {text!r}, not <first>-<last>")
    return range(int(first), int(last) + 1)


# -- reading jobs -------------------------------------------------------------------------


def status(
    ids: JobRef | Iterable[JobRef] | None,
    states: Iterable[JobState] | None,
    maxline: int = MAXLINE,
) -> Plan[list[JobInfo]]:
    """`Client.status`: the JobInfo of the jobs asked for, by id."""
    import json  # noqa: PLC0415 -- submits, the common case, never need it

    info_type = _job_info()
    wanted = None if ids is None else tuple(sorted(set(job_ids(ids))))
    letters = None if states is None else {s.value for s in states}
    if letters is not None and wanted is None:
        # The daemon may remember 100,000 ended jobs; STATUS lists them in a few bytes
        # each, so that only the jobs wanted are sent (and built) as JSON.
        replies = yield Call((Status(None),))
        wanted = _ids_in(replies[0], letters)
    if wanted == ():
        return []
    requests = (Info(()),) if wanted is None else tuple(Info(c) for c in chunks(wanted, maxline))
    out: list[JobInfo] = []
    for reply in (yield Call(requests, start=ids is not None)):
        if isinstance(reply, Error):
            raise RequestRejected(reply.message)
        if not isinstance(reply, Data):
            raise ProtocolError(f"INFO answered {reply!r}")
        for line in reply.payload.decode(errors="replace").splitlines():
            if line.strip():
                try:
                    record = json.loads(line)
                except ValueError as e:
                    raise ProtocolError(f"INFO sent a line that is not JSON: {e}") from None
                if not isinstance(record, dict):
                    raise ProtocolError(f"INFO sent {record!r:.80}, not a JSON object")
                found = info_type.from_wire(record)
                if letters is None or found.state.value in letters:
                    out.append(found)
    out.sort(key=lambda i: i.id)
    return out


def _ids_in(reply: Reply, letters: set[str]) -> tuple[int, ...]:
    if isinstance(reply, Error):
        raise RequestRejected(reply.message)
    if not isinstance(reply, Data):
        raise ProtocolError(f"STATUS answered {reply!r}")
    found = []
    for line in reply.payload.decode(errors="replace").split("\r\n"):
        fields = line.split("\t")
        if len(fields) >= 3 and fields[2] in letters and fields[0].isdigit():
            found.append(int(fields[0]))
    return tuple(found)


def info(job: JobRef) -> Plan[JobInfo]:
    """One job's JobInfo; RequestRejected if the daemon does not know it."""
    (jobid,) = job_ids(job)
    found = yield from status([jobid], None)
    if not found:
        raise RequestRejected(_unknown(jobid))
    return found[0]


def state(job: JobRef) -> Plan[JobState]:
    """One job's state (a cheap STATUS request); RequestRejected if unknown."""
    state_type = _job_state()
    (jobid,) = job_ids(job)
    return state_type(_letter(jobid, (yield Call((Status(jobid),), start=True))[0]))


Outcome: TypeAlias = Literal["running", "success", "failed"]
_OUTCOME: dict[str, Outcome] = {
    "Q": "running",
    "H": "running",
    "U": "running",
    "R": "running",
    "S": "success",
}  # the other letters, F, A, K and E, are ends that are not a success: "failed"
_LETTERS = frozenset("QHURSFAKE")


def outcomes(ids: JobRef | Iterable[JobRef]) -> Plan[dict[int, Outcome]]:
    """`Client.outcomes`: one pipelined STATUS per job, read without the JobState enum (the
    command that prints them runs once per job per poll of a workflow)."""
    wanted = tuple(dict.fromkeys(job_ids(ids)))
    if not wanted:
        return {}
    replies = yield Call(tuple(Status(i) for i in wanted), start=True)
    return {i: _OUTCOME.get(_letter(i, r), "failed") for i, r in zip(wanted, replies, strict=True)}


def _letter(jobid: int, reply: Reply) -> str:
    """The state letter in a ``STATUS <id>`` reply; RequestRejected for an unknown job."""
    if isinstance(reply, Error):
        raise RequestRejected(reply.message)
    if not isinstance(reply, Data):
        raise ProtocolError(f"STATUS answered {reply!r}")
    fields = reply.payload.decode(errors="replace").split("\t")
    if len(fields) < 3:
        raise RequestRejected(_unknown(jobid))
    if fields[2] not in _LETTERS:
        raise ProtocolError(f"STATUS sent an unknown state {fields[2]!r}")
    return fields[2]


def ping() -> Plan[dict[JobState, int]]:
    """The number of jobs in each state the daemon remembers."""
    state_type = _job_state()
    text = expect_ok((yield Call((Ping(),)))[0]) or ""
    counts: dict[JobState, int] = {}
    for item in text.split():
        letter, _, number = item.partition(":")
        try:
            counts[state_type(letter)] = int(number)
        except ValueError:
            raise ProtocolError(f"PING answered {text!r}") from None
    return counts


def queue_state() -> Plan[QueueState]:
    """Whether the queue is paused, and the daemon's resources (QUEUE)."""
    import json  # noqa: PLC0415 -- submits, the common case, never need it

    from ._models import QueueState  # noqa: PLC0415

    reply = (yield Call((QueueInfo(),)))[0]
    if isinstance(reply, Error):
        raise RequestRejected(reply.message)
    if not isinstance(reply, Data):
        raise ProtocolError(f"QUEUE answered {reply!r}")
    try:
        record = json.loads(reply.payload)
    except ValueError as e:
        raise ProtocolError(f"QUEUE sent something that is not JSON: {e}") from None
    if not isinstance(record, dict):
        raise ProtocolError(f"QUEUE sent {record!r:.80}, not a JSON object")
    return QueueState.from_wire(record)


def ok(requests: Sequence[Request], *, start: bool = False) -> Plan[None]:
    """Requests each answered by a plain OK (KILL, HOLD, ...); RequestRejected on an ERROR.
    ``start``: a daemon may be started if none answers (they name jobs, or ask to pause)."""
    for reply in (yield Call(tuple(requests), start=start)):
        expect_ok(reply)


# -- wait ---------------------------------------------------------------------------------


def wait_groups(
    wanted: tuple[int, ...], progress: bool, maxline: int = MAXLINE
) -> list[tuple[int, ...]]:
    """The id lists of the WAITs that wait for ``wanted``: with progress, one WAIT per job so
    that each ending is seen; without, few long lines (within ``maxline``)."""
    return [(i,) for i in wanted] if progress else chunks(wanted, maxline)


def wait_states(reply: Reply) -> list[tuple[int, JobState]]:
    """The ids and final states of a WAIT's reply, ``OK 3:S 4:F``."""
    state_type = _job_state()
    text = expect_ok(reply) or ""
    out = []
    for item in text.split():
        jobid, _, letter = item.partition(":")
        try:
            out.append((int(jobid), state_type(letter)))
        except ValueError:
            raise ProtocolError(f"WAIT answered {text!r}") from None
    return out


def wait_timeout(
    wanted: Sequence[int], pending: tuple[int, ...], timeout: float | None
) -> JobTimeout:
    return JobTimeout(
        f"{len(pending)} of {len(wanted)} job(s) had not ended after {timeout:g} s:"
        f" {_id_list(pending)}",
        pending,
    )


def shutdown_timeout(socket: str, timeout: float | None) -> JobTimeout:
    return JobTimeout(
        f"the sjq daemon on {socket} accepted SHUTDOWN but has not exited after {timeout:g} s;"
        " its running jobs may be slow to die (sjq.killgrace)",
        (),
    )


# -- replies and errors -------------------------------------------------------------------


def expect_ok(reply: Reply) -> str | None:
    if isinstance(reply, Error):
        raise RequestRejected(reply.message)
    if not isinstance(reply, Ok):
        raise ProtocolError(f"expected OK or ERROR, got {reply!r}")
    return reply.text


def lost(socket: str, why: object, request: Request) -> ConnectionLost:
    """The error for a connection that closed before ``request`` was answered."""
    if isinstance(request, Submit):
        return ConnectionLost(
            f"the sjq daemon on {socket} closed the connection before answering a"
            f" submit ({why}); the job may or may not have been queued: check `sjq status`",
            socket,
        )
    return ConnectionLost(
        f"the sjq daemon on {socket} closed the connection before answering ({why});"
        " it may have stopped: try again",
        socket,
    )


def _job_state() -> type[JobState]:
    # Building the enum costs start-up time (sjq.protocol loads it on first use); a submit
    # never needs a state.
    from sjq.protocol import JobState  # noqa: PLC0415

    return JobState


def _job_info() -> type[JobInfo]:
    from ._models import JobInfo  # noqa: PLC0415 -- a 21-field dataclass: only when asked

    return JobInfo


def _unknown(jobid: int) -> str:
    return f"unknown job {jobid} (never submitted, or forgotten: see sjq.keep)"


def _id_list(ids: Sequence[int], limit: int = 10) -> str:
    shown = " ".join(map(str, ids[:limit]))
    return shown + (f" ... ({len(ids) - limit} more)" if len(ids) > limit else "")
