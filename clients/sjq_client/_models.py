"""JobInfo: one job as the daemon's INFO reply describes it. Pure data; imports no I/O module."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from sjq._record import fields, record
from sjq.protocol import JobState

from ._exceptions import ProtocolError

__all__ = ["JobInfo", "QueueState"]


@record
class JobInfo:
    """Everything the daemon reports about one job (the ``INFO`` verb), as it was when asked.

    Times are seconds since the epoch (``time.time()``); memory sizes are bytes; CPU times are
    seconds. ``None`` means "not (yet) known": a job that has not started has no ``started``, a
    job killed by a signal has no ``exit_code`` but a ``signal``.
    """

    id: int
    name: str
    state: JobState
    procs: int
    mem: int  # bytes reserved
    depends: tuple[int, ...] = ()
    priority: int = 0
    submitted: float = 0.0
    started: float | None = None
    ended: float | None = None
    exit_code: int | None = None
    signal: int | None = None
    reason: str = ""  # why it ended as it did (F, A, K, E); empty on success
    pid: int | None = None
    cpu_user: float | None = None
    cpu_sys: float | None = None
    maxrss: int | None = None  # peak resident memory, bytes
    cwd: str = ""
    stdout: str = ""
    stderr: str = ""
    time_limit: float | None = None  # seconds of wall-clock time
    dependency: str = ""  # the whole condition in Slurm's words (DEPENDS as afterok)
    array_id: int | None = None  # an array element: the array's first id, its index, entry
    array_index: int | None = None
    entry: str | None = None
    waiting_for: str = ""  # why it has not started: "held", "job 12", "4 CPUs; reserved from ..."
    reservation: float | None = None  # when it is sure to start, if it holds the reservation
    measured_by: str | None = None  # how maxrss and CPU times were measured: cgroup, sampled
    cpus: tuple[int, ...] = ()  # the CPUs it runs (ran) on, when the daemon pins jobs
    gpus: tuple[str, ...] = ()  # the GPU ids it holds (held)
    attempts: int = 0  # attempts started (more than 1 when it was retried: RETRY)

    @property
    def finished(self) -> bool:
        """True once the job has ended (S, F, A, K or E): its state will not change again."""
        return self.state.terminal

    def elapsed(self, now: float | None = None) -> float | None:
        """Wall-clock seconds it ran (so far, if running); None if it never started."""
        if self.started is None:
            return None
        end = self.ended if self.ended is not None else time.time() if now is None else now
        return max(0.0, end - self.started)

    def to_dict(self) -> dict[str, Any]:
        """The fields as the daemon sends them (``state`` as its letter): for ``--json``."""
        out = {name: getattr(self, name) for name in _FIELDS}
        out["state"] = self.state.value
        out["depends"] = list(self.depends)
        out["cpus"] = list(self.cpus)
        out["gpus"] = list(self.gpus)
        return out

    @classmethod
    def from_wire(cls, record: Mapping[str, Any]) -> JobInfo:
        """Build from one decoded INFO record. Fields this client does not know are ignored,
        so a newer daemon may add some; a record without id, name or state is unreadable."""
        try:
            values = {name: record[name] for name in _FIELDS if name in record}
            values["state"] = JobState(record["state"])
            values["depends"] = tuple(int(i) for i in record.get("depends") or ())
            values["cpus"] = tuple(int(i) for i in record.get("cpus") or ())
            values["gpus"] = tuple(str(i) for i in record.get("gpus") or ())
            info = cls(**values)
            if not isinstance(info.id, int) or not isinstance(info.name, str):
                raise TypeError("id or name of the wrong type")
        except (KeyError, TypeError, ValueError) as e:
            raise ProtocolError(f"unreadable INFO record {dict(record)!r:.200}: {e}") from None
        return info


_FIELDS = fields(JobInfo)


@record
class QueueState:
    """The daemon's own state (the ``QUEUE`` verb): whether the queue is paused, and its
    resources. ``mem`` is None when the daemon does no memory accounting."""

    paused: bool
    paused_since: float | None = None  # when PAUSE was sent (seconds since the epoch)
    procs: int = 0  # CPUs it hands out
    procs_used: int = 0
    mem: int | None = None  # bytes it hands out
    mem_used: int = 0
    version: str = ""

    @classmethod
    def from_wire(cls, record: Mapping[str, Any]) -> QueueState:
        """Build from the decoded QUEUE reply; keys this client does not know are ignored."""
        try:
            values = {name: record[name] for name in _QUEUE_FIELDS if name in record}
            state = cls(**values)
            if not isinstance(state.paused, bool):
                raise TypeError("paused is not true or false")
        except (KeyError, TypeError, ValueError) as e:
            raise ProtocolError(f"unreadable QUEUE reply {dict(record)!r:.200}: {e}") from None
        return state


_QUEUE_FIELDS = fields(QueueState)
