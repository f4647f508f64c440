"""Job and AsyncJob: a submitted job as an async result; asks its client for everything, no I/O."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, TypeAlias

from ._exceptions import JobNotFinished

if TYPE_CHECKING:
    from sjq.protocol import JobState

    from ._aclient import AsyncClient
    from ._client import Client
    from ._models import JobInfo

__all__ = ["AsyncJob", "Job", "JobRef", "job_ids"]

JobRef: TypeAlias = "int | Job | AsyncJob"
"""A job, by id or by the Job (or AsyncJob) that submit returned."""


class Job:
    """A submitted job, in the manner of ``multiprocessing.pool.AsyncResult`` (and clusterjob's
    AsyncResult): ``ready()``, ``successful()``, ``wait()``, plus ``state``, ``info()`` and
    ``cancel()``. Every call asks the daemon afresh, through the Client that made it."""

    __slots__ = ("client", "id")

    def __init__(self, client: Client, jobid: int) -> None:
        self.client = client
        self.id = jobid

    def __repr__(self) -> str:
        return f"<Job {self.id}>"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Job):
            return NotImplemented
        return self.id == other.id and self.client.socket == other.client.socket

    def __hash__(self) -> int:
        return hash((self.id, self.client.socket))

    def __int__(self) -> int:
        return self.id

    @property
    def state(self) -> JobState:
        """The job's state now (asks the daemon)."""
        return self.client.state(self.id)

    def ready(self) -> bool:
        """True once the job has ended, whichever way."""
        return self.state.terminal

    def successful(self) -> bool:
        """True if the job ended in S (exit status 0). JobNotFinished if it has not ended."""
        state = self.state
        if not state.terminal:
            raise JobNotFinished(f"job {self.id} has not ended yet ({state.word}); wait() first")
        from sjq.protocol import JobState  # noqa: PLC0415 - loaded once a state is asked for

        return state is JobState.SUCCESS

    def wait(self, timeout: float | None = None) -> JobState:
        """Block until the job ends; its final state. JobTimeout after ``timeout`` seconds."""
        return self.client.wait([self.id], timeout)[self.id]

    def cancel(self) -> None:
        """Kill the job (see Client.kill)."""
        self.client.kill([self.id])

    def info(self) -> JobInfo:
        """Everything the daemon reports about the job: times, exit code, reason, peak memory."""
        return self.client.info(self.id)


class AsyncJob:
    """A job submitted through an AsyncClient: Job's methods as coroutines. ``state()`` is a
    method here (a property cannot be awaited): ``await job.state()``."""

    __slots__ = ("client", "id")

    def __init__(self, client: AsyncClient, jobid: int) -> None:
        self.client = client
        self.id = jobid

    def __repr__(self) -> str:
        return f"<AsyncJob {self.id}>"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AsyncJob):
            return NotImplemented
        return self.id == other.id and self.client.socket == other.client.socket

    def __hash__(self) -> int:
        return hash((self.id, self.client.socket))

    def __int__(self) -> int:
        return self.id

    async def state(self) -> JobState:
        """The job's state now (asks the daemon)."""
        return await self.client.state(self.id)

    async def ready(self) -> bool:
        """True once the job has ended, whichever way."""
        return (await self.state()).terminal

    async def successful(self) -> bool:
        """True if the job ended in S (exit status 0). JobNotFinished if it has not ended."""
        state = await self.state()
        if not state.terminal:
            raise JobNotFinished(f"job {self.id} has not ended yet ({state.word}); wait() first")
        return state.value == "S"

    async def wait(self, timeout: float | None = None) -> JobState:
        """Wait until the job ends; its final state. JobTimeout after ``timeout`` seconds."""
        return (await self.client.wait([self.id], timeout))[self.id]

    async def cancel(self) -> None:
        """Kill the job (see AsyncClient.kill)."""
        await self.client.kill([self.id])

    async def info(self) -> JobInfo:
        """Everything the daemon reports about the job: times, exit code, reason, peak memory."""
        return await self.client.info(self.id)


def job_ids(refs: JobRef | Iterable[JobRef]) -> tuple[int, ...]:
    items: Iterable[JobRef] = (refs,) if isinstance(refs, int | Job | AsyncJob) else refs
    out = []
    for ref in items:
        jobid = ref.id if isinstance(ref, Job | AsyncJob) else ref
        if isinstance(jobid, bool) or not isinstance(jobid, int):
            raise TypeError(f"job ids are ints (or Jobs), got {jobid!r}")
        if jobid < 1:
            raise ValueError(f"job ids are whole numbers from 1, got {jobid}")
        out.append(jobid)
    return tuple(out)
