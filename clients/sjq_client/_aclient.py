"""AsyncClient: Client's API as coroutines, on asyncio streams; imports asyncio, so loaded lazily.

Sends the same requests and reads the replies the same way as Client (both run the plans of
_calls). Many requests may be in flight on one connection: a reader task takes the replies
as they come and hands each to its request in order. Never imports the daemon's modules.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Literal, TypeVar

from sjq.config import client_config
from sjq.protocol import (
    Hold,
    Kill,
    Pause,
    Release,
    Reply,
    Request,
    Resume,
    Shutdown,
    Stop,
    Wait,
)

from . import _calls as calls
from ._astream import Broken, Stream, adopt, forget, open_stream
from ._calls import MIN_WAIT, Plan
from ._connection import no_answer
from ._exceptions import DaemonNotRunning, SjqError
from ._job import AsyncJob, AsyncJobArray, JobRef, job_ids

if TYPE_CHECKING:
    from types import TracebackType

    from sjq.jobs import JobState

    from ._connection import Connection
    from ._models import JobInfo, QueueState
    from ._stats import Stats

__all__ = ["AsyncClient", "AsyncJob"]

T = TypeVar("T")


class AsyncClient:
    """A client of one sjq daemon for asyncio programs: `Client`'s API, each method a coroutine.

    Arguments, defaults and errors are Client's: ``socket`` defaults to ``sjq.socket`` from the
    config; the connection is opened on first use and carries every later request (reopened
    once if the daemon restarted); with ``autostart``, `submit` and the calls about named jobs
    start a daemon when none answers, as Client's do (the start runs in a thread, off the
    event loop); ``timeout`` bounds each request's
    wait for its reply. Use it as ``async with AsyncClient() as sjq:``, or call `aclose`.

    Requests of concurrent tasks share the connection, pipelined: a hundred `status` calls
    made at once are one round trip. A task cancelled while it waits for a reply leaves the
    connection in step (the reply is read and dropped). `wait` uses a connection of its own,
    closed when it returns, times out or is cancelled. Bound to the event loop it is first
    used in; not thread-safe.
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
        self._pidfile = None if self._socket_given and self.socket != cfg.socket else cfg.pidfile
        self.autostart = autostart
        self.timeout = timeout
        self.started_pid: int | None = None
        """The pid of the daemon this client started, if it started one."""
        self._stream: Stream | None = None
        self._retired: set[Stream] = set()  # of a stopping daemon, still owing replies
        self._opening: asyncio.Lock | None = None  # made in the loop, on first use

    def __repr__(self) -> str:
        return f"AsyncClient({self.socket!r})"

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection (a later request opens a new one). Requests still waiting for
        a reply fail with ConnectionLost."""
        stream, self._stream = self._stream, None
        if stream is not None:
            await stream.aclose()
        while self._retired:
            await self._retired.pop().aclose()

    # -- connections ------------------------------------------------------------------------

    async def _connection(self, start: bool) -> Stream:
        """The shared connection, opened (once, whatever the number of callers) if need be."""
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            stream = self._stream
            if stream is None or stream.broken is not None:
                if stream is not None:
                    await stream.aclose()
                self._stream = None
                self._stream = stream = await self._open(start)
            return stream

    async def _open(self, start: bool) -> Stream:
        try:
            return await open_stream(self.socket, self.timeout)
        except DaemonNotRunning:
            if not (start and self.autostart):
                raise
        from ._autostart import connect_answering, start_daemon  # noqa: PLC0415

        loop = asyncio.get_running_loop()
        starting = loop.run_in_executor(
            None,
            lambda: start_daemon(
                self.socket,
                config=self.config,
                socket_given=self._socket_given,
                logfile=self.logfile,
                pidfile=self._pidfile,
                connect=lambda: connect_answering(self.socket, self.timeout),
            ),
        )
        try:
            # Shielded: the thread cannot be stopped, so a cancelled caller leaves it to finish
            # and closes the connection it makes.
            conn, pid = await asyncio.shield(starting)
        except asyncio.CancelledError:
            starting.add_done_callback(_close_started)
            raise
        if pid is not None:
            self.started_pid = pid
        return await adopt(conn)

    async def _run(self, plan: Plan[T]) -> T:
        """Carry out a plan of _calls: send each of its calls, give it the replies."""
        try:
            call = next(plan)
            while True:
                replies = await self._call(call.requests, start=call.start, retry=call.retry)
                call = plan.send(replies)
        except StopIteration as done:
            result: T = done.value
            return result

    async def _call(
        self, requests: Sequence[Request], *, start: bool = False, retry: bool = True
    ) -> list[Reply]:
        """Send requests pipelined on the shared connection; their replies, in order.

        ``retry``: the requests may be sent again on a new connection if this one breaks
        before every reply is in (true of everything but SUBMIT, which would queue twice).
        With ``start`` and autostart, requests a stopping daemon refused (none carried out)
        go to the next daemon.
        """
        restart = start and self.autostart
        replies = await self._exchange(requests, start=start, retry=retry, restart=restart)
        for _ in range(calls.RESTARTS):
            if not (restart and calls.refused_for_stopping(replies)):
                break
            replies = await self._exchange(requests, start=start, retry=retry, restart=restart)
        return replies

    def _retire(self, stream: Stream) -> None:
        """``stream``'s daemon is stopping: no new request on it (the next call connects
        anew), and it closes once the requests other tasks sent on it have their replies."""
        if self._stream is stream:
            self._stream = None
        self._retired = {s for s in self._retired if s.broken is None}  # (closed since)
        if stream.retire():
            self._retired.add(stream)

    async def _exchange(
        self, requests: Sequence[Request], *, start: bool, retry: bool, restart: bool
    ) -> list[Reply]:
        first = True
        while True:
            stream = await self._connection(start)
            try:
                futures = stream.send(requests)
            except Broken as e:
                # Known to be closed before anything was written: nothing was carried out.
                if not first:
                    raise calls.lost(self.socket, e, requests[0]) from None
                first = False
                continue
            try:
                replies = await self._replies(stream, futures)
            except Broken as e:
                answered = sum(1 for f in futures if f.done() and f.exception() is None)
                # A request whose reply did not come may have been carried out. Else once more
                # on a new connection: the daemon restarted, or stopped just as we sent.
                if not (first and retry):
                    raise calls.lost(self.socket, e, requests[answered]) from None
                first = False
                continue
            finally:
                forget(futures)
            if restart and calls.refused_for_stopping(replies):
                self._retire(stream)
            return replies

    async def _replies(self, stream: Stream, futures: list[asyncio.Future[Reply]]) -> list[Reply]:
        try:
            async with asyncio.timeout(self.timeout):
                await stream.drain()
                return [await future for future in futures]
        except TimeoutError:
            # A reply may still come, and every later request on this connection would have
            # to wait for it: drop the connection.
            stream.close()
            raise no_answer(self.socket, self.timeout) from None

    # -- requests ---------------------------------------------------------------------------

    async def submit(
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
    ) -> AsyncJob:
        """Queue a job; its AsyncJob (see Client.submit for every argument). With
        ``autostart``, starts a daemon when none answers."""
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
        return AsyncJob(self, await self._run(calls.submit(request)))

    async def submit_array(
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
    ) -> AsyncJobArray:
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
        return AsyncJobArray(self, await self._run(calls.submit_array(request)))

    def job(self, jobid: int) -> AsyncJob:
        """The AsyncJob of an id (submitted earlier, perhaps by someone else). Asks nothing."""
        (one,) = job_ids(jobid)
        return AsyncJob(self, one)

    async def status(
        self,
        ids: JobRef | Iterable[JobRef] | None = None,
        *,
        states: Iterable[JobState] | None = None,
    ) -> list[JobInfo]:
        """What the daemon knows of the given jobs, or of every job it remembers (None); see
        Client.status. A thousand ids are one round trip (INFO lines of IDS_PER_LINE ids,
        pipelined)."""
        return await self._run(calls.status(ids, states, self._maxline))

    async def info(self, job: JobRef) -> JobInfo:
        """One job's JobInfo; RequestRejected if the daemon does not know it."""
        return await self._run(calls.info(job))

    async def state(self, job: JobRef) -> JobState:
        """One job's state, fresh (a cheap STATUS request); RequestRejected if unknown."""
        return await self._run(calls.state(job))

    async def outcomes(self, ids: JobRef | Iterable[JobRef]) -> dict[int, calls.Outcome]:
        """Each job's ``running``, ``success`` or ``failed`` (see Client.outcomes)."""
        return await self._run(calls.outcomes(ids))

    async def kill(self, ids: JobRef | Iterable[JobRef]) -> None:
        """Kill jobs (see Client.kill); unknown or ended ids are ignored."""
        await self._run(calls.ok([Kill(i) for i in job_ids(ids)], start=True))

    async def release(self, ids: JobRef | Iterable[JobRef]) -> None:
        """Let held (U) jobs run once their dependencies are met."""
        await self._run(calls.ok([Release(i) for i in job_ids(ids)], start=True))

    async def hold(self, ids: JobRef | Iterable[JobRef]) -> None:
        """Keep queued or waiting jobs from starting (they become U) until `release`."""
        await self._run(calls.ok([Hold(i) for i in job_ids(ids)], start=True))

    async def ping(self) -> dict[JobState, int]:
        """Check that the daemon answers; the number of jobs in each state it remembers."""
        return await self._run(calls.ping())

    async def pause(self) -> None:
        """Pause the queue: no job starts until `resume` (see Client.pause)."""
        await self._run(calls.ok([Pause()], start=True))

    async def resume(self) -> None:
        """Let jobs start again after `pause` (see Client.resume)."""
        await self._run(calls.ok([Resume()], start=True))

    async def queue_state(self) -> QueueState:
        """Whether the queue is paused (and since when), and the daemon's resources."""
        return await self._run(calls.queue_state())

    async def stats(
        self,
        ids: JobRef | Iterable[JobRef] | None = None,
        *,
        names: Iterable[str] = (),
        since: float | None = None,
        by: str = "auto",
    ) -> Stats:
        """Per job name, how the ended jobs ended and what they used, with hints; see
        Client.stats."""
        from . import _stats_plan  # noqa: PLC0415 -- only for this call

        wanted = None if ids is None else job_ids(ids)
        return await self._run(_stats_plan.plan(wanted, tuple(names), since, by, self._maxline))

    async def shutdown(self, *, keep_running: bool = False, timeout: float | None = 30.0) -> None:
        """Stop the daemon and wait until it has removed its socket (see Client.shutdown)."""
        await self._run(calls.ok([Stop() if keep_running else Shutdown()]))
        await self.aclose()
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        delay = 0.002
        while os.path.exists(self.socket):
            if deadline is not None and loop.time() > deadline:
                raise calls.shutdown_timeout(self.socket, timeout)
            await asyncio.sleep(delay)  # polling a bounded wait for the socket file to go
            delay = min(delay * 2, 0.05)

    async def wait(
        self,
        ids: JobRef | Iterable[JobRef],
        timeout: float | None = None,
        *,
        progress: Callable[[int, JobState], None] | None = None,
    ) -> dict[int, JobState]:
        """Wait until every job has ended; their final states, by id (see Client.wait).

        On a connection of its own, so that the shared one is never held up behind a WAIT;
        that connection is closed on return, on timeout (JobTimeout) and on cancellation.
        """
        wanted = job_ids(ids)
        if not wanted:
            return {}
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        groups = calls.wait_groups(wanted, progress is not None, self._maxline)
        stream = await self._open(start=True)
        states: dict[int, JobState] = {}
        futures: list[asyncio.Future[Reply]] = []
        try:
            try:
                futures = stream.send([Wait(g) for g in groups])
            except Broken as e:
                raise calls.lost(self.socket, e, Wait(groups[0])) from None
            for group, future in zip(groups, futures, strict=True):
                left = None if deadline is None else deadline - loop.time()
                try:
                    # A timeout of 0 (or one nearly spent) still gives the daemon a moment to
                    # answer for jobs that have already ended.
                    async with asyncio.timeout(None if left is None else max(left, MIN_WAIT)):
                        reply = await future
                except TimeoutError:
                    stream.close()
                    pending = await self._still_going(tuple(i for i in wanted if i not in states))
                    raise calls.wait_timeout(wanted, pending, timeout) from None
                except Broken as e:
                    raise calls.lost(self.socket, e, Wait(group)) from None
                for jobid, state in calls.wait_states(reply):
                    states[jobid] = state
                    if progress is not None:
                        progress(jobid, state)
        finally:
            stream.close()  # at once, even when cancelled: an unanswered WAIT dies with it
            forget(futures)
            await asyncio.shield(stream.aclose())
        return {i: states[i] for i in wanted if i in states}

    async def _still_going(self, ids: tuple[int, ...]) -> tuple[int, ...]:
        """Which of ``ids`` have not ended: a WAIT of several ids says nothing until all have."""
        try:
            ended = {i.id for i in await self.status(ids) if i.finished}
        except SjqError:
            return ids  # the daemon went away meanwhile: that much is not known
        return tuple(i for i in ids if i not in ended)


def _close_started(starting: asyncio.Future[tuple[Connection, int | None]]) -> None:
    if not starting.cancelled() and starting.exception() is None:
        starting.result()[0].close()
