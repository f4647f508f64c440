"""Every message between the daemon and a keeper: one typed record each, and their framing.

Daemon -> keeper: `Spawn`, `Kill`, `Arm`, `Rotate`. Keeper -> daemon: `Started`, `Exited`,
`SpawnFailed`, `Rotated`. Each side dispatches with ``match`` over its union and ends in
``assert_never``, so a new message that one side does not handle is a type error.

Records are NamedTuples: they pickle as plain tuples (a class reference and the values),
several times cheaper than slotted dataclasses, and thousands cross every second. Frames are
a 4-byte length and the pickle; both ends are our own processes (forked from the daemon),
never a client. Imports nothing of asyncio, sqlite3 or processes.
"""

from __future__ import annotations

import pickle
import struct
from collections.abc import Iterator
from typing import NamedTuple, TypeAlias, cast

from sjq.jobs import ExitRecord, JobLaunch

__all__ = [
    "Arm",
    "ArmedStart",
    "Exited",
    "FromKeeper",
    "Kill",
    "Rotate",
    "Rotated",
    "Spawn",
    "SpawnFailed",
    "Started",
    "ToKeeper",
    "decode_from_daemon",
    "decode_from_keeper",
    "encode",
]

# -- daemon -> keeper ---------------------------------------------------------------------


class Spawn(NamedTuple):
    """Start this job now."""

    launch: JobLaunch


class Kill(NamedTuple):
    """SIGTERM to the job's process group, SIGKILL ``grace`` seconds later."""

    jobid: int
    grace: float


class ArmedStart(NamedTuple):
    """What arm token ``token`` stands for: the job to start when a capable job ends;
    ``after``: only when that job ends, and (``need_success``) only if it succeeded. The
    job gets CPUs and GPUs of the job that ended, and of ``cpus``/``gpus``: devices the
    daemon set aside for it (when it may use more than the job it follows holds)."""

    token: int
    launch: JobLaunch
    after: int | None
    need_success: bool
    cpus: tuple[int, ...] = ()
    gpus: tuple[str, ...] = ()


class Arm(NamedTuple):
    """The arm tokens still meaning something (``live``), the new ones (``entries``), the
    running jobs of this keeper whose end may take a token (``capable``), the level of
    tokens at or below which the daemon arms more (``low``: until then, exit records of
    token-started jobs may wait to share a send), and the CPUs no job holds or has set
    aside (``spare``: where the keeper goes on after starting a pinned job, see
    ``Guard.aside_of``)."""

    live: frozenset[int]
    capable: tuple[int, ...]
    entries: tuple[ArmedStart, ...]
    low: int
    spare: tuple[int, ...] = ()


class Rotate(NamedTuple):
    """Go on in a new journal, so that the old one can be deleted."""


ToKeeper: TypeAlias = Spawn | Kill | Arm | Rotate

# -- keeper -> daemon ---------------------------------------------------------------------


class Started(NamedTuple):
    """A job's process started (journaled before this is sent). ``start_tick`` is its start
    in clock ticks since boot, at least."""

    jobid: int
    pid: int
    start_tick: int
    time: float


class Exited(NamedTuple):
    """A job's process ended (journaled before this is sent). ``claimed``: the arm token
    its keeper took as it ended (even if that started nothing); ``started_next``: the armed
    job the keeper started for it, on ``cpus`` and ``gpus`` (None: not pinned, no GPUs
    managed)."""

    record: ExitRecord
    started_next: int | None = None
    claimed: int | None = None
    cpus: tuple[int, ...] | None = None
    gpus: tuple[str, ...] | None = None


class SpawnFailed(NamedTuple):
    """A job could not be started; ``reason`` is what its INFO shows (state E)."""

    jobid: int
    time: float
    reason: str


class Rotated(NamedTuple):
    """The keeper writes a new journal; ``path``, the old one, may go once what it said is
    committed."""

    path: str


FromKeeper: TypeAlias = Started | Exited | SpawnFailed | Rotated

# -- framing --------------------------------------------------------------------------------

_FRAME = struct.Struct("!I")


def encode(msg: ToKeeper | FromKeeper) -> bytes:
    data = pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)
    return _FRAME.pack(len(data)) + data


def _frames(buf: bytearray) -> Iterator[object]:
    """Yield every complete frame in ``buf`` and remove them from it."""
    pos = 0
    end = len(buf)
    try:
        while end - pos >= 4:
            (n,) = _FRAME.unpack_from(buf, pos)
            if end - pos - 4 < n:
                break
            msg = pickle.loads(buf[pos + 4 : pos + 4 + n])
            pos += 4 + n
            yield msg
    finally:
        del buf[:pos]


def decode_from_keeper(buf: bytearray) -> Iterator[FromKeeper]:
    return cast("Iterator[FromKeeper]", _frames(buf))


def decode_from_daemon(buf: bytearray) -> Iterator[ToKeeper]:
    return cast("Iterator[ToKeeper]", _frames(buf))
