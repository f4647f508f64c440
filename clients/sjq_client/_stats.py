"""`sjq stats`' arithmetic: ended jobs grouped by name and their usage summed up, as records.

Pure. The advice (when a reservation is far off, what to reserve) is in _stats_advice, the
requests to the daemon in _stats_plan. Loaded only by `sjq stats` and ``Client.stats``.
Never asyncio, socket or the daemon's modules.
"""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from sjq._record import fields, record

from ._exceptions import ProtocolError
from ._stats_advice import CPU_MIN_WALL, Hint, hints

__all__ = [
    "ENDED",
    "GROUPINGS",
    "SORTS",
    "Failure",
    "GroupStats",
    "Hint",
    "JobUsage",
    "Stats",
    "Tally",
    "failure_reason",
    "group_key",
    "sort_groups",
]

ENDED = "SFAKE"  # the states a job ends in: done, failed, aborted, killed, error
GROUPINGS = ("auto", "name", "digits")
SORTS = ("name", "jobs", "failed", "wall", "cpu", "mem")

EXAMPLE_IDS = 5  # job ids listed per failure reason (`sjq info ID` shows the rest)


# -- grouping -----------------------------------------------------------------------------

# A number standing alone between non-alphanumeric characters (or the ends): "align.17",
# "align_17", "toil.1f0c9a2b.7 kind" -> 7 only; not the 1 of "step1" or "chr1".
_FIELD_NUMBER = r"(?<![^\W_])[0-9]+(?![^\W_])"
# Snakemake's "rule[sample=a,lane=1]" and array jobs' "name[3]".
_BRACKETS = r"(.+?)\[[^\]]*\]"


def group_key(name: str, by: str = "auto") -> str:
    """The group a job name is counted in.

    ``name``: the name itself. ``digits``: every run of digits is ``#`` (``sample12`` and
    ``sample7`` are ``sample#``). ``auto``: a trailing ``[...]`` is dropped (Snakemake's
    wildcards, array indexes), and numbers that stand alone between separators are ``#``
    (``align.17`` and ``align_3`` are ``align.#`` and ``align_#``; ``step1`` stays).
    """
    if by == "name":
        return name
    if by == "digits":
        return re.sub("[0-9]+", "#", name)
    if by != "auto":
        raise ValueError(f"grouping must be one of {', '.join(GROUPINGS)}, not {by!r}")
    m = re.fullmatch(_BRACKETS, name, re.DOTALL)
    base = m.group(1) if m else name
    return re.sub(_FIELD_NUMBER, "#", base)


def failure_reason(state: str, reason: str, exit_code: int | None, signal: int | None) -> str:
    """A short, countable form of why a job did not succeed: the reason up to its details
    (``out of memory (limit 100M, peak 101M)`` -> ``out of memory``), else its exit code or
    signal."""
    if reason:
        short = reason.split(" (", 1)[0].strip()
        return re.sub(r"\bdependency [0-9]+ ", "a dependency ", short) or reason
    if exit_code is not None:
        return f"exit {exit_code}"
    if signal is not None:
        import signal as signals  # noqa: PLC0415 -- builds enums; only for such a job

        try:
            return f"killed by {signals.Signals(signal).name}"
        except ValueError:
            return f"killed by signal {signal}"
    return {"F": "failed", "A": "aborted", "K": "killed", "E": "could not start"}.get(state, state)


# -- records ------------------------------------------------------------------------------


class JobUsage(NamedTuple):
    """What stats needs of one ended job, from its INFO record. A tuple, not a record: a
    daemon may remember 100,000 jobs, and a tuple is built several times faster."""

    id: int
    name: str
    state: str  # the letter
    procs: int
    mem: int  # bytes reserved
    started: float | None
    ended: float | None
    cpu: float | None  # user + system seconds
    maxrss: int | None
    measured_by: str | None  # cgroup, sampled or slurm; None: an sjq that did not say
    attempts: int
    time_limit: float | None
    reason: str
    exit_code: int | None
    signal: int | None

    @property
    def wall(self) -> float | None:
        if self.started is None or self.ended is None:
            return None
        return max(0.0, self.ended - self.started)

    @classmethod
    def from_record(cls, rec: Mapping[str, Any]) -> JobUsage:
        """From one decoded INFO record; ProtocolError if it lacks id, name or state. Other
        values of the wrong type count as unknown, as from a newer or older daemon."""
        get = rec.get
        jobid, name, state = get("id"), get("name"), get("state")
        if type(jobid) is not int or type(name) is not str or type(state) is not str:
            raise ProtocolError(f"unreadable INFO record {dict(rec)!r:.200}")
        user, sys_ = _number(get("cpu_user")), _number(get("cpu_sys"))
        measured, reason = get("measured_by"), get("reason")
        return cls(
            jobid,
            name,
            state,
            _whole(get("procs")) or 0,
            _whole(get("mem")) or 0,
            _number(get("started")),
            _number(get("ended")),
            None if user is None and sys_ is None else (user or 0.0) + (sys_ or 0.0),
            _whole(get("maxrss")),
            measured if type(measured) is str and measured else None,
            max(1, _whole(get("attempts")) or 1),
            _number(get("time_limit")),
            reason if type(reason) is str else "",
            _whole(get("exit_code")),
            _whole(get("signal")),
        )


def _number(v: object) -> float | None:
    return float(v) if type(v) is float or type(v) is int else None


def _whole(v: object) -> int | None:
    return v if type(v) is int else None  # not a bool: type(True) is bool


@record
class Failure:
    """Jobs of a group that ended for one reason, and a few of their ids."""

    reason: str
    count: int
    jobs: tuple[int, ...]  # the first EXAMPLE_IDS


@record
class GroupStats:
    """The jobs of one name (or one group of names): how they ended and what they used.

    Wall, CPU and memory figures count only the jobs that ran. ``cpu_efficiency`` is CPU
    time / (wall time x CPUs reserved) over those jobs; ``cores_max`` the most CPUs one job
    (of at least CPU_MIN_WALL seconds) kept busy on average. ``peak_max`` is the largest peak
    resident memory; ``peak_imprecise`` counts the jobs whose peak an older sjq measured (the
    largest single process, sjq's own size included), ``peak_unknown`` those with none.
    """

    name: str  # the one name, or the group key when it holds several names
    names: int  # distinct job names in it
    jobs: int
    done: int
    failed: int  # ended otherwise than done: failed, aborted, killed, could not start
    states: tuple[tuple[str, int], ...]  # (letter, count) by letter
    ran: int
    retried: int  # jobs that took more than one attempt
    wall_mean: float | None
    wall_max: float | None
    wall_total: float
    procs: int  # the most CPUs a job reserved
    cpu_efficiency: float | None
    cores_max: float | None
    peak_max: int | None
    peak_imprecise: int
    peak_unknown: int
    reserved_min: int
    reserved_max: int
    time_limit: float | None  # the shortest limit a job that ran had
    failures: tuple[Failure, ...]
    hints: tuple[Hint, ...]

    def to_dict(self) -> dict[str, Any]:
        """For ``sjq stats --json``."""
        out = {name: getattr(self, name) for name in fields(GroupStats)}
        out["states"] = dict(self.states)
        out["failures"] = [
            {"reason": f.reason, "count": f.count, "jobs": list(f.jobs)} for f in self.failures
        ]
        out["hints"] = [
            {"kind": h.kind, "option": h.option, "value": h.value, "text": h.text}
            for h in self.hints
        ]
        return out


@record
class Stats:
    """`sjq stats`: the groups, by name; ``jobs`` in all; ``since`` as asked (unix time)."""

    groups: tuple[GroupStats, ...]
    jobs: int
    since: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "since": self.since,
            "jobs": self.jobs,
            "groups": [g.to_dict() for g in self.groups],
        }


# -- aggregation --------------------------------------------------------------------------


class _Usage:
    """Running extremes of the jobs that ran."""

    __slots__ = (
        "cores_max",
        "imprecise",
        "peak_max",
        "reserved_max",
        "reserved_min",
        "time_limit",
        "unlimited",
        "wall_max",
    )

    def __init__(self) -> None:
        self.cores_max: float | None = None  # of jobs of at least CPU_MIN_WALL seconds
        self.peak_max: int | None = None
        self.imprecise = 0  # jobs whose peak was not measured precisely
        self.reserved_min: int | None = None
        self.reserved_max = 0
        self.wall_max: float | None = None
        self.time_limit: float | None = None  # the shortest
        self.unlimited = False  # a job ran without a time limit

    def add(self, job: JobUsage, wall: float, cores: float | None) -> None:
        self.reserved_min = (
            job.mem if self.reserved_min is None else min(self.reserved_min, job.mem)
        )
        self.reserved_max = max(self.reserved_max, job.mem)
        self.wall_max = max(wall, self.wall_max or 0.0)
        if job.time_limit is None:
            self.unlimited = True
        else:
            self.time_limit = min(job.time_limit, self.time_limit or math.inf)
        if cores is not None:
            self.cores_max = max(cores, self.cores_max or 0.0)
        if job.maxrss is not None:
            self.peak_max = max(job.maxrss, self.peak_max or 0)
            self.imprecise += job.measured_by is None


class _Group:
    """The running sums of one group."""

    __slots__ = (
        "cpu",
        "cpu_capacity",
        "failures",
        "jobs",
        "key",
        "names",
        "near",
        "oom",
        "oom_mem",
        "over",
        "peak_unknown",
        "procs",
        "ran",
        "retried",
        "seen",
        "states",
        "time_hit_limit",
        "time_hits",
        "wall_total",
    )

    def __init__(self, key: str) -> None:
        self.key = key
        self.names: set[str] = set()
        self.jobs = self.ran = self.retried = self.procs = self.oom = self.time_hits = 0
        self.states: dict[str, int] = {}
        self.failures: dict[str, tuple[int, list[int]]] = {}  # reason: (count, lowest ids)
        self.seen = _Usage()
        self.wall_total = self.cpu = self.cpu_capacity = 0.0
        self.over: tuple[float, int] | None = None  # (cores, procs) of the most over-using job
        self.near: tuple[float, int, int] | None = None  # (peak/mem, peak, mem), highest ratio
        self.peak_unknown = self.oom_mem = 0
        self.time_hit_limit = 0.0

    def add(self, job: JobUsage) -> None:
        self.names.add(job.name)
        self.jobs += 1
        self.states[job.state] = self.states.get(job.state, 0) + 1
        self.retried += job.attempts > 1
        if job.state != "S":
            self.failed(job)
        wall = job.wall
        if job.started is None or wall is None:
            return
        self.ran += 1
        self.procs = max(self.procs, job.procs)
        self.wall_total += wall
        cores = None
        if job.cpu is not None and wall > 0:
            self.cpu += job.cpu
            procs = max(1, job.procs)  # 0: left to Slurm's default, at least one
            self.cpu_capacity += wall * procs
            if wall >= CPU_MIN_WALL:
                cores = job.cpu / wall
                if self.over is None or cores / procs > self.over[0] / self.over[1]:
                    self.over = (cores, procs)
        self.seen.add(job, wall, cores)
        if job.maxrss is None:
            self.peak_unknown += 1
            return
        ratio = job.maxrss / job.mem if job.mem else math.inf
        if self.near is None or ratio > self.near[0]:
            self.near = (ratio, job.maxrss, job.mem)

    def failed(self, job: JobUsage) -> None:
        why = failure_reason(job.state, job.reason, job.exit_code, job.signal)
        count, ids = self.failures.get(why, (0, []))
        if len(ids) < EXAMPLE_IDS or job.id < ids[-1]:
            bisect.insort(ids, job.id)
            del ids[EXAMPLE_IDS:]
        self.failures[why] = (count + 1, ids)
        if job.state == "F" and why == "out of memory":
            self.oom += 1
            self.oom_mem = max(self.oom_mem, job.mem)
        if job.state == "F" and why == "time limit":
            self.time_hits += 1
            self.time_hit_limit = max(self.time_hit_limit, job.time_limit or 0.0)

    def result(self) -> GroupStats:
        failures = sorted(self.failures.items(), key=lambda kv: (-kv[1][0], kv[0]))
        efficiency = self.cpu / self.cpu_capacity if self.cpu_capacity > 0 else None
        done = self.states.get("S", 0)
        return GroupStats(
            name=next(iter(self.names)) if len(self.names) == 1 else self.key,
            names=len(self.names),
            jobs=self.jobs,
            done=done,
            failed=self.jobs - done,
            states=tuple(sorted(self.states.items())),
            ran=self.ran,
            retried=self.retried,
            wall_mean=self.wall_total / self.ran if self.ran else None,
            wall_max=self.seen.wall_max,
            wall_total=self.wall_total,
            procs=self.procs,
            cpu_efficiency=efficiency,
            cores_max=self.seen.cores_max,
            peak_max=self.seen.peak_max,
            peak_imprecise=self.seen.imprecise,
            peak_unknown=self.peak_unknown,
            reserved_min=self.seen.reserved_min or 0,
            reserved_max=self.seen.reserved_max,
            time_limit=None if self.seen.unlimited else self.seen.time_limit,
            failures=tuple(Failure(why, n, tuple(ids)) for why, (n, ids) in failures),
            hints=tuple(hints(self, efficiency)),
        )


class Tally:
    """Ended jobs added one at a time (so that INFO can come in chunks); `result` sums up."""

    __slots__ = ("by", "groups", "jobs", "keys")

    def __init__(self, by: str = "auto") -> None:
        if by not in GROUPINGS:
            raise ValueError(f"grouping must be one of {', '.join(GROUPINGS)}, not {by!r}")
        self.by = by
        self.groups: dict[str, _Group] = {}
        self.keys: dict[str, str] = {}  # name: its group (array jobs repeat names)
        self.jobs = 0

    def add(self, job: JobUsage) -> None:
        key = self.keys.get(job.name)
        if key is None:
            key = self.keys[job.name] = group_key(job.name, self.by)
        group = self.groups.get(key)
        if group is None:
            group = self.groups[key] = _Group(key)
        group.add(job)
        self.jobs += 1

    def result(self, since: float | None = None) -> Stats:
        groups = [g.result() for g in self.groups.values()]
        return Stats(tuple(sort_groups(groups, "name")), self.jobs, since)


def sort_groups(groups: Iterable[GroupStats], by: str) -> list[GroupStats]:
    """``name`` A-Z; ``jobs``, ``failed``, ``wall`` (total wall time) and ``mem`` (peak) the
    largest first; ``cpu`` the lowest efficiency first. Ties go by name."""
    ordered = sorted(groups, key=lambda g: g.name)
    keys = {
        "name": None,
        "jobs": lambda g: -g.jobs,
        "failed": lambda g: -g.failed,
        "wall": lambda g: -g.wall_total,
        "mem": lambda g: -(g.peak_max or -1),
        "cpu": lambda g: math.inf if g.cpu_efficiency is None else g.cpu_efficiency,
    }
    if by not in keys:
        raise ValueError(f"sort must be one of {', '.join(SORTS)}, not {by!r}")
    key = keys[by]
    return ordered if key is None else sorted(ordered, key=key)
