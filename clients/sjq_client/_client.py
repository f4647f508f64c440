"""Client: the typed API of one daemon (never prints); no asyncio, psutil, sqlite3 or daemon code.

Imports sjq.protocol, sjq.config and the C socket module; sjq.jobs and the JobInfo model only
when a state is asked for, so that a submit stays cheap. Never imports the daemon's modules
(sjq.daemon, sjq.store, sjq.runner, sjq.state).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Literal

from sjq.config import client_config
from sjq.protocol import (
    Data,
    Error,
    Hold,
    Info,
    Kill,
    Ok,
    Ping,
    Release,
    Reply,
    Request,
    Shutdown,
    Status,
    Stop,
    Submit,
    SubmitOptions,
    Wait,
    encode_request,
)
from sjq.units import parse_duration, parse_mem

from ._connection import Connection, Dropped, connect
from ._exceptions import (
    ConnectionLost,
    DaemonNotRunning,
    JobTimeout,
    ProtocolError,
    RequestRejected,
    SjqError,
)
from ._job import Job, JobRef, job_ids
from ._script import exportable, script_body

if TYPE_CHECKING:
    from types import TracebackType

    from sjq.protocol import JobState

    from ._models import JobInfo

__all__ = ["Client", "Job", "JobRef"]

MIN_WAIT = 0.05  # seconds a wait gives the daemon to answer, whatever its timeout
# Ids per INFO/WAIT line: 2000 ids of up to 8 digits stay far below the daemon's 64 KiB line.
IDS_PER_LINE = 2000


def _chunks(ids: tuple[int, ...]) -> list[tuple[int, ...]]:
    return [ids[i : i + IDS_PER_LINE] for i in range(0, len(ids), IDS_PER_LINE)]


class Client:
    """A client of one sjq daemon.

    ``socket`` defaults to ``sjq.socket`` from the config (``config``, else ``$SJQ_CONFIG``,
    else ``~/.sjqrc``, with ``SJQ_*`` variables applied). The connection is opened on first use
    and carries every later request; if the daemon has restarted in between, it is reopened
    once, silently. With ``autostart`` (the default), `submit` starts a daemon when none
    answers; nothing else does. ``timeout`` bounds each request's wait for its reply (None:
    no bound); `wait` has its own timeout. Reading the config may raise
    ``sjq.config.ConfigError`` (a ValueError, whose message names the file and line).

    Use it as a context manager, or call `close`. Not thread-safe: give each thread its own.
    """

    def __init__(
        self,
        socket: str | os.PathLike[str] | None = None,
        *,
        config: str | os.PathLike[str] | None = None,
        autostart: bool = True,
        timeout: float | None = 30.0,
    ) -> None:
        self.config = None if config is None else os.path.abspath(config)
        cfg = client_config(self.config)  # raises sjq.config.ConfigError (a ValueError)
        self._socket_given = socket is not None
        self.socket = os.path.abspath(socket) if socket is not None else cfg.socket
        self.logfile = cfg.logfile
        # Only the configured daemon's pid file tells of a daemon still stopping on our socket.
        self._pidfile = None if self._socket_given and self.socket != cfg.socket else cfg.pidfile
        self.autostart = autostart
        self.timeout = timeout
        self.started_pid: int | None = None
        """The pid of the daemon this client started, if it started one."""
        self._conn: Connection | None = None

    def __repr__(self) -> str:
        return f"Client({self.socket!r})"

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection (a later request opens a new one)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- connections ------------------------------------------------------------------------

    def _open(self, start: bool) -> Connection:
        try:
            return connect(self.socket, self.timeout)
        except DaemonNotRunning:
            if not (start and self.autostart):
                raise
        from ._autostart import start_daemon  # noqa: PLC0415 -- subprocess only when starting

        conn, pid = start_daemon(
            self.socket,
            config=self.config,
            socket_given=self._socket_given,
            logfile=self.logfile,
            pidfile=self._pidfile,
            connect=self._open_answering,
        )
        if pid is not None:
            self.started_pid = pid
        return conn

    def _open_answering(self) -> Connection:
        conn = connect(self.socket, self.timeout)
        try:
            reply = conn.exchange([Ping()], self.timeout)[0]
        except Dropped as e:
            conn.close()
            raise ConnectionLost(
                f"the new daemon closed the connection: {e}", self.socket
            ) from None
        except BaseException:
            conn.close()
            raise
        if not isinstance(reply, Ok):
            conn.close()
            raise ProtocolError(f"PING answered with {reply!r}")
        return conn

    def _call(
        self, requests: Sequence[Request], *, start: bool = False, retry: bool = True
    ) -> list[Reply]:
        """Send requests pipelined on the shared connection; their replies, in order.

        ``retry``: the requests may be sent again if the connection breaks mid-way (true of
        everything but SUBMIT, which would queue a job twice).
        """
        conn = self._conn
        if conn is not None and conn.is_stale():
            conn.close()
            conn = self._conn = None
        if conn is None:
            conn = self._conn = self._open(start)
        try:
            return conn.exchange(requests, self.timeout)
        except Dropped as e:
            self.close()
            # A request that was not sent in full was not carried out; one whose reply did not
            # come may have been.
            if not retry and e.sent:
                raise self._lost(e, requests[e.answered]) from None
        except BaseException:
            self.close()  # after a timeout or an unreadable reply the stream is out of step
            raise
        # Once more on a new connection: the daemon restarted, or stopped just as we sent.
        conn = self._conn = self._open(start)
        try:
            return conn.exchange(requests, self.timeout)
        except Dropped as e:
            self.close()
            raise self._lost(e, requests[e.answered]) from None
        except BaseException:
            self.close()
            raise

    def _lost(self, e: Dropped, request: Request) -> ConnectionLost:
        if isinstance(request, Submit):
            return ConnectionLost(
                f"the sjq daemon on {self.socket} closed the connection before answering a"
                f" submit ({e}); the job may or may not have been queued: check `sjq status`",
                self.socket,
            )
        return ConnectionLost(
            f"the sjq daemon on {self.socket} closed the connection before answering ({e});"
            " it may have stopped: try again",
            self.socket,
        )

    def _ok(self, requests: Sequence[Request]) -> None:
        """Send requests each answered by a plain OK; RequestRejected on the first ERROR."""
        for reply in self._call(requests):
            _expect_ok(reply)

    # -- requests ---------------------------------------------------------------------------

    def submit(
        self,
        script: str | bytes | os.PathLike[str] | None = None,
        *,
        command: Sequence[str] | None = None,
        procs: int | None = None,
        mem: int | str | None = None,
        after: Iterable[JobRef] = (),
        name: str | None = None,
        env: Mapping[str, str] | Literal["inherit", "daemon"] = "inherit",
        cwd: str | os.PathLike[str] | None = None,
        hold: bool = False,
        stdout: str | os.PathLike[str] | None = None,
        stderr: str | os.PathLike[str] | None = None,
        time_limit: float | str | None = None,
        priority: int = 0,
    ) -> Job:
        """Queue a job; return its Job at once (the job runs when its resources are free).

        Give exactly one of ``script`` (the script's text as str or bytes, or a path as a
        ``pathlib.Path``; it must start with ``#!``) and ``command`` (a program and its
        arguments, run through ``#!/bin/sh`` with ``exec``, quoting preserved).

        ``procs`` and ``mem`` (bytes, or ``"2G"``) are reserved for the job; the daemon's
        defaults apply when None. ``after``: jobs that must succeed first. ``env``: the job's
        environment: ``"inherit"`` (this process's ``os.environ`` at the time of the call,
        like sbatch), ``"daemon"`` (the daemon's minimal PATH/HOME/USER/SHELL/LANG), or a
        mapping (exactly those variables). ``cwd``: the job's working directory (default: ours);
        ``stdout``/``stderr`` default to ``<cwd>/<id>.stdout``/``.stderr``, relative paths are
        relative to ``cwd``. ``hold``: the job waits for `release`. ``time_limit``: seconds (or
        ``"2h"``, ``"1:30:00"``) after which it is killed and fails. ``priority``: higher
        starts first among the jobs that fit. ``name`` defaults to the script's or command's
        file name.

        With ``autostart``, starts a daemon when none answers. Raises RequestRejected (the
        daemon refused: the message says which option and why), TransportError, and
        ValueError/TypeError for arguments that cannot be sent.
        """
        body, default_name = script_body(script, command)
        if isinstance(mem, str):
            mem = parse_mem(mem)
        if isinstance(time_limit, str):
            time_limit = parse_duration(time_limit)
        if procs is not None and (isinstance(procs, bool) or procs < 1):
            raise ValueError(f"procs must be a whole number >= 1, got {procs!r}")
        if env == "inherit":
            env_pairs: tuple[tuple[str, str], ...] | None = tuple(exportable(os.environ))
        elif env == "daemon":
            env_pairs = None
        elif isinstance(env, Mapping):
            env_pairs = tuple((str(k), str(v)) for k, v in env.items())
        else:
            raise ValueError(f"env must be a mapping, 'inherit' or 'daemon', got {env!r}")
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
        )
        request = Submit(options, body)
        # Encode once before any I/O: a value the wire cannot carry is a ValueError here, and
        # must not start a daemon.
        encode_request(request)
        text = _expect_ok(self._call([request], start=True, retry=False)[0])
        if text is None or not text.isdigit():
            raise ProtocolError(f"SUBMIT answered {text!r}, not a job id")
        return Job(self, int(text))

    def job(self, jobid: int) -> Job:
        """The Job of an id (submitted earlier, perhaps by someone else). Asks nothing yet."""
        (one,) = job_ids(jobid)
        return Job(self, one)

    def status(
        self,
        ids: JobRef | Iterable[JobRef] | None = None,
        *,
        states: Iterable[JobState] | None = None,
    ) -> list[JobInfo]:
        """What the daemon knows of the given jobs, or of every job it remembers (None).

        ``states``: only jobs in these states. Ordered by id. Ids the daemon does not know
        (never submitted, or finished longer ago than ``sjq.keep``) are left out. Never starts
        a daemon.
        """
        import json  # noqa: PLC0415 -- submits, the common case, never need it

        info_type = _job_info()
        wanted = None if ids is None else tuple(sorted(set(job_ids(ids))))
        letters = None if states is None else {s.value for s in states}
        if letters is not None and wanted is None:
            # The daemon may remember 100,000 ended jobs; STATUS lists them in a few bytes
            # each, so that only the jobs wanted are sent (and built) as JSON.
            wanted = self._ids_in(letters)
        if wanted == ():
            return []
        requests: list[Request] = (
            [Info(())] if wanted is None else [Info(c) for c in _chunks(wanted)]
        )
        out: list[JobInfo] = []
        for reply in self._call(requests):
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
                    info = info_type.from_wire(record)
                    if letters is None or info.state.value in letters:
                        out.append(info)
        out.sort(key=lambda i: i.id)
        return out

    def _ids_in(self, letters: set[str]) -> tuple[int, ...]:
        reply = self._call([Status(None)])[0]
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

    def info(self, job: JobRef) -> JobInfo:
        """One job's JobInfo; RequestRejected if the daemon does not know it."""
        (jobid,) = job_ids(job)
        found = self.status([jobid])
        if not found:
            raise RequestRejected(_unknown(jobid))
        return found[0]

    def state(self, job: JobRef) -> JobState:
        """One job's state, fresh (a cheap STATUS request); RequestRejected if unknown."""
        state_type = _job_state()
        (jobid,) = job_ids(job)
        reply = self._call([Status(jobid)])[0]
        if isinstance(reply, Error):
            raise RequestRejected(reply.message)
        if not isinstance(reply, Data):
            raise ProtocolError(f"STATUS answered {reply!r}")
        fields = reply.payload.decode(errors="replace").split("\t")
        if len(fields) < 3:
            raise RequestRejected(_unknown(jobid))
        try:
            return state_type(fields[2])
        except ValueError:
            raise ProtocolError(f"STATUS sent an unknown state {fields[2]!r}") from None

    def kill(self, ids: JobRef | Iterable[JobRef]) -> None:
        """Kill jobs: running ones get SIGTERM, then SIGKILL after ``sjq.killgrace``; waiting
        ones end at once. They end in K, and jobs that depend on them in A. Ids that are
        unknown or already ended are ignored (the daemon answers OK to them)."""
        self._ok([Kill(i) for i in job_ids(ids)])

    def release(self, ids: JobRef | Iterable[JobRef]) -> None:
        """Let held (U) jobs run once their dependencies are met; others are left as they are."""
        self._ok([Release(i) for i in job_ids(ids)])

    def hold(self, ids: JobRef | Iterable[JobRef]) -> None:
        """Keep queued or waiting jobs from starting (they become U) until `release`."""
        self._ok([Hold(i) for i in job_ids(ids)])

    def ping(self) -> dict[JobState, int]:
        """Check that the daemon answers; the number of jobs in each state it remembers."""
        state_type = _job_state()
        text = _expect_ok(self._call([Ping()])[0]) or ""
        counts: dict[JobState, int] = {}
        for item in text.split():
            letter, _, number = item.partition(":")
            try:
                counts[state_type(letter)] = int(number)
            except ValueError:
                raise ProtocolError(f"PING answered {text!r}") from None
        return counts

    def shutdown(self, *, keep_running: bool = False, timeout: float | None = 30.0) -> None:
        """Stop the daemon, and wait (up to ``timeout`` s) until it has removed its socket.

        Running jobs are killed (they end in K) unless ``keep_running``, in which case they go
        on and the next daemon adopts them. Queued and held jobs stay in its database for the
        next start. DaemonNotRunning if there is none; JobTimeout if it is still there after
        ``timeout``.
        """
        self._ok([Stop() if keep_running else Shutdown()])
        self.close()
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.002
        while os.path.exists(self.socket):
            if deadline is not None and time.monotonic() > deadline:
                raise JobTimeout(
                    f"the sjq daemon on {self.socket} accepted SHUTDOWN but has not exited"
                    f" after {timeout:g} s; its running jobs may be slow to die (sjq.killgrace)",
                    (),
                )
            time.sleep(delay)  # polling a bounded wait for the socket file to go
            delay = min(delay * 2, 0.05)

    def wait(
        self,
        ids: JobRef | Iterable[JobRef],
        timeout: float | None = None,
        *,
        progress: Callable[[int, JobState], None] | None = None,
    ) -> dict[int, JobState]:
        """Block until every job has ended; their final states, by id.

        Uses its own connection (closed on return), so the client's timeout does not apply
        and an expired wait leaves nothing behind. ``timeout``: seconds in all, then
        JobTimeout (whose ``pending`` lists the jobs still going). ``progress`` is called
        once per job with its final state, in the order of ``ids`` (a job's call comes once
        it and every job before it have ended). RequestRejected for an unknown job.
        """
        state_type = _job_state()
        wanted = job_ids(ids)
        if not wanted:
            return {}
        deadline = None if timeout is None else time.monotonic() + timeout
        # With progress, one WAIT per job so that each ending is seen; without, few long lines.
        groups = [(i,) for i in wanted] if progress else _chunks(wanted)
        conn = connect(self.socket, self.timeout)
        states: dict[int, JobState] = {}
        try:
            try:
                conn.send([Wait(g) for g in groups])
            except Dropped as e:
                raise self._lost(e, Wait(groups[0])) from None
            for group in groups:
                left = None if deadline is None else deadline - time.monotonic()
                try:
                    # A timeout of 0 (or one nearly spent) still gives the daemon a moment to
                    # answer for jobs that have already ended.
                    reply = conn.wait_reply(None if left is None else max(left, MIN_WAIT))
                except TimeoutError:
                    conn.close()
                    pending = self._still_going(tuple(i for i in wanted if i not in states))
                    raise JobTimeout(
                        f"{len(pending)} of {len(wanted)} job(s) had not ended after"
                        f" {timeout:g} s: {_id_list(pending)}",
                        pending,
                    ) from None
                except Dropped as e:
                    raise self._lost(e, Wait(group)) from None
                text = _expect_ok(reply) or ""
                for item in text.split():
                    jobid, _, letter = item.partition(":")
                    try:
                        state = states[int(jobid)] = state_type(letter)
                    except ValueError:
                        raise ProtocolError(f"WAIT answered {text!r}") from None
                    if progress is not None:
                        progress(int(jobid), state)
        finally:
            conn.close()
        return {i: states[i] for i in wanted if i in states}

    def _still_going(self, ids: tuple[int, ...]) -> tuple[int, ...]:
        """Which of ``ids`` have not ended: a WAIT of several ids says nothing until all have."""
        try:
            ended = {i.id for i in self.status(ids) if i.finished}
        except SjqError:
            return ids  # the daemon went away meanwhile: that much is not known
        return tuple(i for i in ids if i not in ended)


def _job_state() -> type[JobState]:
    # Building the enum costs start-up time (sjq.protocol loads it on first use); a submit
    # never needs a state.
    from sjq.protocol import JobState  # noqa: PLC0415

    return JobState


def _job_info() -> type[JobInfo]:
    from ._models import JobInfo  # noqa: PLC0415 -- a 21-field dataclass: only when asked

    return JobInfo


def _expect_ok(reply: Reply) -> str | None:
    if isinstance(reply, Error):
        raise RequestRejected(reply.message)
    if not isinstance(reply, Ok):
        raise ProtocolError(f"expected OK or ERROR, got {reply!r}")
    return reply.text


def _unknown(jobid: int) -> str:
    return f"unknown job {jobid} (never submitted, or forgotten: see sjq.keep)"


def _id_list(ids: Sequence[int], limit: int = 10) -> str:
    shown = " ".join(map(str, ids[:limit]))
    return shown + (f" ... ({len(ids) - limit} more)" if len(ids) > limit else "")
