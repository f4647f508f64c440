"""The keeper's journal: what it started and how each job ended, on disk before anyone is told.

Append-only text, one record a line, each written with one ``write`` so that a crash leaves
whole lines (a torn last line has no newline and is ignored on reading). The records, with
their encoder and decoder side by side below:

- ``K pid start``: `Header`, the keeper that writes this journal;
- ``S job pid lo time hi [g=group] [c=cpus] [G=gpus]``: `Start`, the process started
  between clock ticks ``lo`` and ``hi`` since boot (``time``: wall clock), in cgroup
  ``group`` (its name and baselines), on CPUs ``cpus`` (``0,2-3``) and GPUs ``gpus``, for
  a daemon that re-adopts it;
- ``X job pid code|- signal|- time user sys maxrss [m=how] reason``: the job ended
  (`sjq.jobs.ExitRecord`; ``how`` is INFO's ``measured_by``);
- ``E job time reason``: `Refusal`, the job could not be started;
- ``D time``: `Detached`, the daemon is gone: nothing more will be started.

Imports nothing of asyncio or sqlite3.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeAlias, assert_never

from sjq.contain.cpus import format_cpulist
from sjq.jobs import ExitRecord, JobLaunch
from sjq.keeper.procs import process_alive

__all__ = [
    "Detached",
    "Header",
    "Journal",
    "JournalRecord",
    "JournalState",
    "Refusal",
    "Start",
    "decode",
    "encode",
]

log = logging.getLogger("sjq.keeper")


class Header(NamedTuple):
    keeper_pid: int
    start_tick: int | None


class Start(NamedTuple):
    jobid: int
    pid: int
    tick_lo: int | None
    time: float
    tick_hi: int | None
    group: str = ""  # its cgroup's name and baselines (``Group.state``); "" under the watcher
    cpus: str = ""  # the CPUs it is pinned to (``0,2-3``); "" when not pinned
    gpus: str = ""  # its GPU ids, comma-separated

    @classmethod
    def of(cls, req: JobLaunch, pid: int, lo: int, time: float, hi: int, *, group: str) -> Start:
        """The record of ``req``'s start as ``pid``, in group ``group`` (its state)."""
        cpus = format_cpulist(req.cpus) if req.cpus is not None else ""
        return cls(req.jobid, pid, lo, time, hi, group, cpus, ",".join(req.gpus or ()))


class Refusal(NamedTuple):
    jobid: int
    time: float
    reason: str


class Detached(NamedTuple):
    time: float


JournalRecord: TypeAlias = Header | Start | ExitRecord | Refusal | Detached


def _int(text: str) -> int | None:
    return None if text == "-" else int(text)


def _text(value: int | float | str | None) -> str:
    return "-" if value is None else str(value)


def encode(rec: JournalRecord) -> str:
    """One record as its line, without the newline. Newlines in a reason become spaces."""
    match rec:
        case Header(pid, tick):
            return f"K {pid} {_text(tick)}"
        case Start(jobid, pid, lo, t, hi, group, cpus, gpus):
            extra = "".join(f" {k}={v}" for k, v in (("g", group), ("c", cpus), ("G", gpus)) if v)
            return f"S {jobid} {pid} {_text(lo)} {t!r} {_text(hi)}{extra}"
        case ExitRecord(jobid, pid, code, sig, t, user, sys_, rss, reason, measured_by):
            how = f"m={measured_by} " if measured_by else ""
            return (
                f"X {jobid} {pid} {_text(code)} {_text(sig)} {t!r} {user!r} {sys_!r} {rss} "
                + how
                + _one_line(reason)
            )
        case Refusal(jobid, t, reason):
            return f"E {jobid} {t!r} " + _one_line(reason)
        case Detached(t):
            return f"D {t!r}"
        case _:
            assert_never(rec)


def _one_line(text: str) -> str:
    return text.replace("\n", " ")


def _header(p: list[str]) -> Header:
    return Header(int(p[1]), _int(p[2]))


def _start(p: list[str]) -> Start:
    # Journals of an earlier sjq have no high tick, nor the ``name=value`` items after it.
    extra = dict(item.split("=", 1) for item in p[6:] if "=" in item)
    return Start(
        int(p[1]),
        int(p[2]),
        _int(p[3]),
        float(p[4]),
        _int(p[5]) if len(p) > 5 else None,
        group=extra.get("g", ""),
        cpus=extra.get("c", ""),
        gpus=extra.get("G", ""),
    )


def _exit(p: list[str]) -> ExitRecord:
    # ``m=<how>`` before the reason: absent from the journals of an earlier sjq (a reason a
    # keeper writes never starts so).
    how = p[9][2:] if len(p) > 9 and p[9].startswith("m=") else ""
    rest = p[10:] if how else p[9:]
    return ExitRecord(
        jobid=int(p[1]),
        pid=int(p[2]),
        exit_code=_int(p[3]),
        signal=_int(p[4]),
        time=float(p[5]),
        cpu_user=float(p[6]),
        cpu_sys=float(p[7]),
        maxrss=int(p[8]),
        reason=" ".join(rest),
        measured_by=how,
    )


def _refusal(p: list[str]) -> Refusal:
    return Refusal(int(p[1]), float(p[2]), " ".join(p[3:]))


def _detached(p: list[str]) -> Detached:
    return Detached(float(p[1]) if len(p) > 1 else 0.0)


_DECODERS: dict[str, Callable[[list[str]], JournalRecord]] = {
    "K": _header,
    "S": _start,
    "X": _exit,
    "E": _refusal,
    "D": _detached,
}


def decode(line: str) -> JournalRecord:
    """The record a line holds; ValueError if it holds none."""
    p = line.split(" ")
    parse = _DECODERS.get(p[0])
    if parse is None:
        raise ValueError(f"unknown record kind {p[0]!r}")
    try:
        return parse(p)
    except IndexError:
        raise ValueError("record cut short") from None


# -- writing --------------------------------------------------------------------------------


class Journal:
    """A journal being written. If the file system is full, records are kept in memory and
    written, in order, as soon as there is room: the keeper goes on."""

    # Space taken on disk ahead of the records (fallocate, the file's size unchanged), so
    # that a full file system does not stop the journal: about 10,000 records.
    RESERVE = 1 << 20

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        self.end = os.fstat(self.fd).st_size  # where the next record goes
        self.reserved = self.end  # space is taken up to here
        self.backlog: list[bytes] = []  # records the file system had no room for yet
        self._reserve()

    @property
    def healthy(self) -> bool:
        """Whether every record so far is in the file."""
        return not self.backlog

    def write(self, rec: JournalRecord) -> None:
        self.backlog.append((encode(rec) + "\n").encode())
        self.flush()

    def flush(self) -> bool:
        """Write what is waiting; whether everything is in the file now."""
        while self.backlog:
            line = self.backlog[0]
            try:
                n = os.write(self.fd, line)
            except OSError as e:
                if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                    raise
                if len(self.backlog) == 1:
                    log.error("%s: %s; records kept until there is room", self.path, e.strerror)
                return False
            if n < len(line):  # a short write into the last free bytes: the rest later
                self.backlog[0] = line[n:]
                self.end += n
                continue
            self.backlog.pop(0)
            self.end += n
        if self.reserved - self.end < self.RESERVE // 2:
            self._reserve()
        return True

    def _reserve(self) -> None:
        want = self.end + self.RESERVE
        if _fallocate(self.fd, self.reserved, want - self.reserved):
            self.reserved = want

    def close(self) -> None:
        os.close(self.fd)


_FALLOC_FL_KEEP_SIZE = 1
_libc_fallocate: Any = None


def _fallocate(fd: int, offset: int, length: int) -> bool:
    """Take disk space for a file's future appends without changing its size; False where
    the file system cannot (or is full): the journal then simply has no head start."""
    global _libc_fallocate
    if length <= 0:
        return True
    if _libc_fallocate is None:
        import ctypes  # noqa: PLC0415 - the keeper only, once

        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.fallocate
        fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong]
        fn.restype = ctypes.c_int
        _libc_fallocate = fn
    return bool(_libc_fallocate(fd, _FALLOC_FL_KEEP_SIZE, offset, length) == 0)


# -- reading --------------------------------------------------------------------------------


@dataclass(slots=True)
class JournalState:
    """What one journal file says, read incrementally."""

    path: str
    keeper_pid: int = 0
    keeper_start: int | None = None
    detached: bool = False
    started: dict[int, Start] = field(default_factory=dict)
    exited: dict[int, ExitRecord] = field(default_factory=dict)
    errors: dict[int, Refusal] = field(default_factory=dict)
    offset: int = 0

    def keeper_alive(self) -> bool:
        return process_alive(self.keeper_pid, self.keeper_start)

    def read(self) -> None:
        """Read what has been appended since the last call."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return
        end = data.rfind(b"\n") + 1
        self.offset += end
        # Split on LF alone: a reason may hold any other line-breaking character.
        for raw in data[:end].decode(errors="replace").split("\n")[:-1]:
            try:
                self.apply(decode(raw))
            except ValueError:
                log.warning("%s: ignoring unreadable journal line %r", self.path, raw)

    def apply(self, rec: JournalRecord) -> None:
        match rec:
            case Header(pid, tick):
                self.keeper_pid, self.keeper_start = pid, tick
            case Start():
                self.started[rec.jobid] = rec
            case ExitRecord():
                self.exited[rec.jobid] = rec
            case Refusal():
                self.errors[rec.jobid] = rec
            case Detached():
                self.detached = True
            case _:
                assert_never(rec)
