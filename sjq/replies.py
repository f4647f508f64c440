"""The daemon's deferred replies and who asked: a connection's peer, a SUBMIT's reply that waits
for the commit, a WAIT's reply that waits for its jobs. Plain records; no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field

from sjq.protocol import Error, Ok

__all__ = ["Accepted", "Peer", "Waiter"]


@dataclass(frozen=True, slots=True)
class Peer:
    pid: int
    uid: int
    gid: int


@dataclass(slots=True, eq=False)
class Waiter:
    """A WAIT whose reply is due once every listed job has ended and that is on disk
    (``done``, set by the daemon after the commit)."""

    ids: tuple[int, ...]
    letters: dict[int, str]
    pending: set[int] = field(default_factory=set)
    done: bool = False
    error: str = ""  # a listed job turned out never to have been recorded

    def reply(self) -> Ok | Error:
        if self.error:
            return Error(self.error)
        return Ok(" ".join(f"{i}:{self.letters[i]}" for i in self.ids))


@dataclass(slots=True, eq=False)
class Accepted:
    """A SUBMIT's reply: ``OK <id>`` (an array's ``OK <first>-<last>``) once the turn that
    recorded the job has been committed; ``ERROR cannot record the job: <why>`` if the write
    or the commit failed (the job is then forgotten, as if never submitted)."""

    jobid: int
    last: int | None = None  # an array's: its ids are jobid to last, the reply ``OK 10-109``
    error: str = ""
    durable: bool = False  # set once the job's record is committed

    @property
    def ready(self) -> bool:
        return self.durable or bool(self.error)

    def reply(self) -> Ok | Error:
        if self.error:
            return Error(self.error)
        return Ok(str(self.jobid) if self.last is None else f"{self.jobid}-{self.last}")
