"""Client: the typed API of one daemon (never prints); no asyncio, psutil, sqlite3 or daemon code.

Imports sjq.protocol, sjq.config and the C socket module; JobState and the JobInfo model only
when a state is asked for, so that a submit stays cheap. Never imports the daemon's modules
(sjq.daemon, sjq.service, sjq.store, sjq.keeper, sjq.state).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Literal, TypeVar

from sjq.config import client_config
from sjq.protocol import Hold, Kill, Pause, Release, Reply, Request, Resume, Shutdown, Stop, Wait

from . import _calls as calls
from ._calls import MIN_WAIT, Plan
from ._connection import Connection, Dropped, connect
from ._exceptions import DaemonNotRunning, SjqError
from ._job import Job, JobArray, JobRef, job_ids

if TYPE_CHECKING:
    from types import TracebackType

    from sjq.protocol import JobState

    from ._models import JobInfo, QueueState
    from ._stats import Stats

__all__ = ["Client", "Job", "JobRef"]

T = TypeVar("T")


class Client:
    """A client of one sjq daemon.

    ``socket`` defaults to ``sjq.socket`` from the config (``config``, else ``$SJQ_CONFIG``,
    else ``~/.sjqrc``, with ``SJQ_*`` variables applied). The connection is opened on first use
    and carries every later request; if the daemon has restarted in between, it is reopened
    once, silently. With ``autostart`` (the default), `submit` and every call about named
    jobs (`status` with ids, `info`, `state`, `wait`, `kill`, `hold`, `release`, and the
    methods of a Job) start a daemon when none answers: an idle daemon shuts itself down
    (``sjq.waittime``), but its jobs' records are in its database, and a new daemon answers
    for them; a job a daemon refused because it had begun to stop goes to the next one.
    `ping`, `status` of every job and `shutdown` never start one. ``timeout``
    bounds each request's wait for its reply (None: no bound); `wait` has its own timeout.
    Reading the config may raise ``sjq.config.ConfigError`` (a ValueError, whose message
    names the file and line).

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
        self._maxline = cfg.maxline  # INFO and WAIT lines of many ids are split to fit
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
        # subprocess only when starting
        from ._autostart import connect_answering, start_daemon  # noqa: PLC0415

        conn, pid = start_daemon(
            self.socket,
            config=self.config,
            socket_given=self._socket_given,
            logfile=self.logfile,
            pidfile=self._pidfile,
            connect=lambda: connect_answering(self.socket, self.timeout),
        )
        if pid is not None:
            self.started_pid = pid
        return conn

    def _run(self, plan: Plan[T]) -> T:
        """Carry out a plan of _calls: send each of its calls, give it the replies."""
        try:
            call = next(plan)
            while True:
                call = plan.send(self._call(call.requests, start=call.start, retry=call.retry))
        except StopIteration as done:
            result: T = done.value
            return result

    def _call(
        self, requests: Sequence[Request], *, start: bool = False, retry: bool = True
    ) -> list[Reply]:
        """Send requests pipelined on the shared connection; their replies, in order.

        ``retry``: the requests may be sent again if the connection breaks mid-way (true of
        everything but SUBMIT, which would queue a job twice). With ``start`` and autostart,
        requests a stopping daemon refused (none carried out) go to the next daemon.
        """
        replies = self._exchange(requests, start=start, retry=retry)
        for _ in range(calls.RESTARTS):
            if not (start and self.autostart and calls.refused_for_stopping(replies)):
                break
            self.close()
            replies = self._exchange(requests, start=start, retry=retry)
        return replies

    def _exchange(self, requests: Sequence[Request], *, start: bool, retry: bool) -> list[Reply]:
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
                raise calls.lost(self.socket, e, requests[e.answered]) from None
        except BaseException:
            self.close()  # after a timeout or an unreadable reply the stream is out of step
            raise
        # Once more on a new connection: the daemon restarted, or stopped just as we sent.
        conn = self._conn = self._open(start)
        try:
            return conn.exchange(requests, self.timeout)
        except Dropped as e:
            self.close()
            raise calls.lost(self.socket, e, requests[e.answered]) from None
        except BaseException:
            self.close()
            raise

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
        afterany: Iterable[JobRef] = (),
        afternotok: Iterable[JobRef] = (),
        dependency: str | None = None,
        patterns: bool = False,
        gpus: int | None = None,
        retry: int | None = None,
        retry_mem: float | None = None,
    ) -> Job:
        """Queue a job; return its Job at once (the job runs when its resources are free).

        Give exactly one of ``script`` (the script's text as str or bytes, or a path as a
        ``pathlib.Path``; it must start with ``#!``) and ``command`` (a program and its
        arguments, run through ``#!/bin/sh`` with ``exec``, quoting preserved).

        ``procs`` and ``mem`` (bytes, or ``"2G"``) are reserved for the job; the daemon's
        defaults apply when None. ``after``: jobs that must succeed first (DEPENDS);
        ``afterany``: jobs that must have ended, however; ``afternotok``: jobs that must have
        ended other than in success; ``dependency``: conditions in Slurm's words
        (``"afterok:3:4,afterany:10-19,after:7"``, docs/protocol.md), all of which must hold
        together with the others; a job whose conditions can never hold is aborted at once
        (state A). ``env``: the job's
        environment: ``"inherit"`` (this process's ``os.environ`` at the time of the call,
        like sbatch), ``"daemon"`` (the daemon's minimal PATH/HOME/USER/SHELL/LANG), or a
        mapping (exactly those variables). ``cwd``: the job's working directory (default: ours);
        ``stdout``/``stderr`` default to the daemon's ``sjq.defaults.stdout``/``.stderr``
        (``<cwd>/<id>.stdout``/``.stderr`` unless configured); relative paths are relative to
        ``cwd``; they are taken literally unless ``patterns``, with which they are Slurm-style
        patterns as for `sjq submit -o`: ``%j`` the job id, ``%x`` its name, ``%%`` a ``%``
        (docs/protocol.md, PATTERNS), and their missing directories below ``cwd`` are created
        when the job starts.
        ``hold``: the job waits for `release`. ``time_limit``: seconds (or
        ``"2h"``, ``"1:30:00"``) after which it is killed and fails. ``priority``: higher
        starts first among the jobs that fit. ``gpus``: GPUs to reserve (the job sees its
        devices in ``CUDA_VISIBLE_DEVICES``). ``retry``: how many times a failed job is
        started again (its id kept; it ends in F only after the last attempt);
        ``retry_mem``: after an out-of-memory end, the next attempt reserves MEM times this
        (at most ``sjq.maxmem``). ``name`` defaults to the script's or command's
        file name.

        With ``autostart``, starts a daemon when none answers. Raises RequestRejected (the
        daemon refused: the message says which option and why), TransportError, and
        ValueError/TypeError for arguments that cannot be sent.
        """
        request = calls.submit_request(
            script,
            command,
            procs=procs,
            mem=mem,
            after=after,
            name=name,
            env=env,
            cwd=cwd,
            hold=hold,
            stdout=stdout,
            stderr=stderr,
            time_limit=time_limit,
            priority=priority,
            afterany=afterany,
            afternotok=afternotok,
            dependency=dependency,
            patterns=patterns,
            gpus=gpus,
            retry=retry,
            retry_mem=retry_mem,
        )
        return Job(self, self._run(calls.submit(request)))

    def submit_array(
        self,
        script: str | bytes | os.PathLike[str] | None = None,
        *,
        command: Sequence[str] | None = None,
        array: str | Iterable[int] | None = None,
        entries: Iterable[str] | None = None,
        limit: int | None = None,
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
        afterany: Iterable[JobRef] = (),
        afternotok: Iterable[JobRef] = (),
        dependency: str | None = None,
        gpus: int | None = None,
        retry: int | None = None,
        retry_mem: float | None = None,
    ) -> JobArray:
        """Queue a job array: one job per index of ``array`` (sbatch's spec, ``"1-100"``,
        ``"0-30:3"``, ``"1,5,7"``, with ``"%4"`` for at most 4 running at once; or the
        indexes) or per line of ``entries`` (indexes 0, 1 ...; with ``array``, as many).
        Each element gets a consecutive id, its index in ``SJQ_ARRAY_INDEX``, the first id in
        ``SJQ_ARRAY_ID`` and its entry in ``SJQ_ENTRY``; the script is stored once for all.
        ``limit``: at most this many elements run at once. The other arguments are
        `submit`'s and apply to every element (default outputs ``<cwd>/<id>.stdout``)."""
        request = calls.submit_request(
            script,
            command,
            procs=procs,
            mem=mem,
            after=after,
            name=name,
            env=env,
            cwd=cwd,
            hold=hold,
            stdout=stdout,
            stderr=stderr,
            time_limit=time_limit,
            priority=priority,
            afterany=afterany,
            afternotok=afternotok,
            dependency=dependency,
            gpus=gpus,
            retry=retry,
            retry_mem=retry_mem,
            array=array,
            entries=entries,
            limit=limit,
        )
        return JobArray(self, self._run(calls.submit_array(request)))

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
        (never submitted, or finished longer ago than ``sjq.keep``) are left out. With ids,
        starts a daemon when none answers (see `Client`); without, never.
        """
        return self._run(calls.status(ids, states, self._maxline))

    def info(self, job: JobRef) -> JobInfo:
        """One job's JobInfo; RequestRejected if the daemon does not know it."""
        return self._run(calls.info(job))

    def state(self, job: JobRef) -> JobState:
        """One job's state, fresh (a cheap STATUS request); RequestRejected if unknown."""
        return self._run(calls.state(job))

    def outcomes(self, ids: JobRef | Iterable[JobRef]) -> dict[int, calls.Outcome]:
        """Each job's outcome in the three words generic workflow templates know, by id.

        ``"running"`` until the job has ended (queued, waiting, held and running jobs alike),
        then ``"success"`` (S) or ``"failed"`` (every other end: F, A, K, E). One pipelined
        STATUS request per job. RequestRejected for the first id the daemon does not know.
        """
        return self._run(calls.outcomes(ids))

    def kill(self, ids: JobRef | Iterable[JobRef]) -> None:
        """Kill jobs: running ones get SIGTERM, then SIGKILL after ``sjq.killgrace``; waiting
        ones end at once. They end in K, and jobs that depend on them in A. Ids that are
        unknown or already ended are ignored (the daemon answers OK to them)."""
        self._run(calls.ok([Kill(i) for i in job_ids(ids)], start=True))

    def release(self, ids: JobRef | Iterable[JobRef]) -> None:
        """Let held (U) jobs run once their dependencies are met; others are left as they are."""
        self._run(calls.ok([Release(i) for i in job_ids(ids)], start=True))

    def hold(self, ids: JobRef | Iterable[JobRef]) -> None:
        """Keep queued or waiting jobs from starting (they become U) until `release`."""
        self._run(calls.ok([Hold(i) for i in job_ids(ids)], start=True))

    def ping(self) -> dict[JobState, int]:
        """Check that the daemon answers; the number of jobs in each state it remembers."""
        return self._run(calls.ping())

    def pause(self) -> None:
        """Pause the queue: no job starts until `resume`; running jobs carry on and new ones
        are queued. The pause is kept across daemon restarts. With ``autostart``, starts a
        daemon when none answers (which keeps the pause for its successors)."""
        self._run(calls.ok([Pause()], start=True))

    def resume(self) -> None:
        """Let jobs start again after `pause`. With ``autostart``, starts a daemon when none
        answers (a paused queue's daemon goes away when idle, keeping the pause)."""
        self._run(calls.ok([Resume()], start=True))

    def queue_state(self) -> QueueState:
        """Whether the queue is paused (and since when), and the daemon's resources."""
        return self._run(calls.queue_state())

    def stats(
        self,
        ids: JobRef | Iterable[JobRef] | None = None,
        *,
        names: Iterable[str] = (),
        since: float | None = None,
        by: str = "auto",
    ) -> Stats:
        """Per job name, how the ended jobs the daemon remembers ended and what they used,
        with hints where a reservation is far off (`sjq stats`).

        ``ids``: only these jobs. ``names``: glob patterns (``"align*"``), any of which a
        name must match. ``since``: only jobs that ended then or later (unix time). ``by``:
        ``"auto"`` groups names that differ in a number standing alone (``align.1``,
        ``align.2``) or a ``[...]`` suffix, ``"name"`` does not group, ``"digits"`` groups
        names that differ in any number. Never starts a daemon.
        """
        from . import _stats_plan  # noqa: PLC0415 -- only for this call: keeps submits cheap

        wanted = None if ids is None else job_ids(ids)
        return self._run(_stats_plan.plan(wanted, tuple(names), since, by, self._maxline))

    def shutdown(self, *, keep_running: bool = False, timeout: float | None = 30.0) -> None:
        """Stop the daemon, and wait (up to ``timeout`` s) until it has removed its socket.

        Running jobs are killed (they end in K) unless ``keep_running``, in which case they go
        on and the next daemon adopts them. Queued and held jobs stay in its database for the
        next start. DaemonNotRunning if there is none; JobTimeout if it is still there after
        ``timeout``.
        """
        self._run(calls.ok([Stop() if keep_running else Shutdown()]))
        self.close()
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.002
        while os.path.exists(self.socket):
            if deadline is not None and time.monotonic() > deadline:
                raise calls.shutdown_timeout(self.socket, timeout)
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
        wanted = job_ids(ids)
        if not wanted:
            return {}
        deadline = None if timeout is None else time.monotonic() + timeout
        groups = calls.wait_groups(wanted, progress is not None, self._maxline)
        conn = self._open(start=True)
        states: dict[int, JobState] = {}
        try:
            try:
                conn.send([Wait(g) for g in groups])
            except Dropped as e:
                raise calls.lost(self.socket, e, Wait(groups[0])) from None
            for group in groups:
                left = None if deadline is None else deadline - time.monotonic()
                try:
                    # A timeout of 0 (or one nearly spent) still gives the daemon a moment to
                    # answer for jobs that have already ended.
                    reply = conn.wait_reply(None if left is None else max(left, MIN_WAIT))
                except TimeoutError:
                    conn.close()
                    pending = self._still_going(tuple(i for i in wanted if i not in states))
                    raise calls.wait_timeout(wanted, pending, timeout) from None
                except Dropped as e:
                    raise calls.lost(self.socket, e, Wait(group)) from None
                for jobid, state in calls.wait_states(reply):
                    states[jobid] = state
                    if progress is not None:
                        progress(jobid, state)
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
