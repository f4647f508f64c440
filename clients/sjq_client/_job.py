"""Job and AsyncJob: a submitted job as an async result; asks its client for everything, no I/O."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, TypeAlias, overload

from ._exceptions import JobNotFinished

if TYPE_CHECKING:
    from sjq.protocol import JobState

    from ._aclient import AsyncClient
    from ._client import Client
    from ._models import JobInfo

__all__ = ["AsyncJob", "AsyncJobArray", "Job", "JobArray", "JobRef", "job_ids"]

JobRef: TypeAlias = "int | str | Job | AsyncJob"
"""A job, by id or by the Job (or AsyncJob) that submit returned; or several, as text:
``"10-109"`` (a range, as an array's ids), ``"3:4:5"`` or ``"3,4"``."""

MAX_RANGE = 1_000_000  # ids in one "A-B": a typo such as 1-99999999999 must not eat memory


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
    items: Iterable[JobRef] = (refs,) if isinstance(refs, int | str | Job | AsyncJob) else refs
    out: list[int] = []
    for ref in items:
        if isinstance(ref, str):
            out += _parse_ids(ref)
            continue
        jobid = ref.id if isinstance(ref, Job | AsyncJob) else ref
        if isinstance(jobid, bool) or not isinstance(jobid, int):
            raise TypeError(f"job ids are ints, Jobs or text such as '10-109', got {jobid!r}")
        if jobid < 1:
            raise ValueError(f"job ids are whole numbers from 1, got {jobid}")
        out.append(jobid)
    return tuple(out)


def _parse_ids(text: str) -> list[int]:
    """``"10-109"``, ``"3:4:5"``, ``"3,4"`` and mixtures, in order."""
    out: list[int] = []
    for piece in text.replace(",", ":").split(":"):
        first, dash, last = piece.strip().partition("-")
        if not (_is_id(first) and (not dash or _is_id(last))):
            raise ValueError(
                f"not a job id or id range: {piece!r} (ids look like 3, 3:4 or 10-109)"
            )
        low, high = int(first), int(last) if dash else int(first)
        if high < low or high - low >= MAX_RANGE:
            raise ValueError(f"bad id range {piece!r} (from low to high, at most {MAX_RANGE} ids)")
        out.extend(range(low, high + 1))
    return out


def _is_id(text: str) -> bool:
    return text.isascii() and text.isdigit() and int(text) > 0


class JobArray(Sequence[Job]):
    """The jobs of one array (or ``--each-line`` submission): consecutive ids ``first`` to
    ``last``, a sequence of Job. ``str()`` is ``"10-109"``, which any id argument takes."""

    __slots__ = ("client", "ids")

    def __init__(self, client: Client, ids: range) -> None:
        self.client = client
        self.ids = ids

    def __repr__(self) -> str:
        return f"<JobArray {self}>"

    def __str__(self) -> str:
        return f"{self.ids.start}-{self.ids.stop - 1}"

    def __len__(self) -> int:
        return len(self.ids)

    @overload
    def __getitem__(self, i: int) -> Job: ...
    @overload
    def __getitem__(self, i: slice) -> list[Job]: ...
    def __getitem__(self, i: int | slice) -> Job | list[Job]:
        if isinstance(i, slice):
            return [Job(self.client, j) for j in self.ids[i]]
        return Job(self.client, self.ids[i])

    @property
    def first(self) -> int:
        """The first element's id: SJQ_ARRAY_ID of every element."""
        return self.ids.start

    def wait(self, timeout: float | None = None) -> dict[int, JobState]:
        """Block until every element has ended; their final states, by id."""
        return self.client.wait(self.ids, timeout)

    def cancel(self) -> None:
        """Kill every element (see Client.kill)."""
        self.client.kill(self.ids)

    def info(self) -> list[JobInfo]:
        """Every element's JobInfo, by id."""
        return self.client.status(self.ids)


class AsyncJobArray(Sequence[AsyncJob]):
    """JobArray for an AsyncClient: the same, with coroutines for wait, cancel and info."""

    __slots__ = ("client", "ids")

    def __init__(self, client: AsyncClient, ids: range) -> None:
        self.client = client
        self.ids = ids

    def __repr__(self) -> str:
        return f"<AsyncJobArray {self}>"

    def __str__(self) -> str:
        return f"{self.ids.start}-{self.ids.stop - 1}"

    def __len__(self) -> int:
        return len(self.ids)

    @overload
    def __getitem__(self, i: int) -> AsyncJob: ...
    @overload
    def __getitem__(self, i: slice) -> list[AsyncJob]: ...
    def __getitem__(self, i: int | slice) -> AsyncJob | list[AsyncJob]:
        if isinstance(i, slice):
            return [AsyncJob(self.client, j) for j in self.ids[i]]
        return AsyncJob(self.client, self.ids[i])

    @property
    def first(self) -> int:
        return self.ids.start

    async def wait(self, timeout: float | None = None) -> dict[int, JobState]:
        return await self.client.wait(self.ids, timeout)

    async def cancel(self) -> None:
        await self.client.kill(self.ids)

    async def info(self) -> list[JobInfo]:
        return await self.client.status(self.ids)
