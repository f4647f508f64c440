"""`sjq stats`' arithmetic: ended jobs grouped by name, their usage summed up, and advice on
what to reserve. No I/O: `plan` is a generator of requests that Client and AsyncClient run.

Loaded only by `sjq stats` and ``Client.stats``; imports re, math, sjq.units and what every
client has loaded already (sjq.protocol, _calls). Never asyncio, socket or the daemon's modules.
"""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Collection, Iterable, Mapping
from typing import Any, NamedTuple

from sjq._record import fields, record
from sjq.protocol import Data, Error, Info, Reply, Status
from sjq.units import format_duration, format_mem

from ._calls import Call, Plan, chunks
from ._exceptions import ProtocolError, RequestRejected

__all__ = [
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
    "plan",
    "pleasant_duration",
    "pleasant_mem",
    "sort_groups",
    "suggest_mem",
    "suggest_procs",
    "suggest_time",
]

ENDED = "SFAKE"  # the states a job ends in: done, failed, aborted, killed, error
GROUPINGS = ("auto", "name", "digits")
SORTS = ("name", "jobs", "failed", "wall", "cpu", "mem")

MiB = 1024**2
# Suggestions: the largest peak seen times a headroom, rounded up to a size people write.
MEM_HEADROOM = 1.2  # the next input may be a little larger than any seen
MEM_FLOOR = 64 * MiB  # never suggest less: it saves nothing worth a job that a larger input kills
MEM_FAR = 0.5  # "far off": the suggestion is at most half of what was reserved ...
MEM_MIN_SAVING = 256 * MiB  # ... and frees at least this much (less is noise on a server)
MEM_NEAR = 0.9  # a peak at 90 % of the reservation: a slightly larger input hits the limit
OOM_FACTOR = 2  # after an out-of-memory end the real need is unknown: try twice the limit
CPU_FAR = 0.5  # a CPU hint when the job would do with at most half of its CPUs
CPU_OVER = 1.25  # ... or when it used a quarter more CPUs than it reserved (no pinning)
CPU_TOLERANCE = 0.05  # cores: 1.03 measured is one busy core (tick and clock granularity)
CPU_MIN_WALL = 1.0  # seconds: a shorter job's CPU/wall ratio is mostly start-up noise
TIME_HEADROOM = 1.5  # run times vary with load and input more than memory does
TIME_FLOOR = 600.0  # seconds: a tighter limit kills a job that merely waited for the disk
TIME_FAR = 0.25  # a time hint when the suggestion is at most a quarter of the limit
TIME_FACTOR = 2  # after a time-limit end: try twice the limit
EXAMPLE_IDS = 5  # job ids listed per failure reason (`sjq info ID` shows the rest)

# Sizes people write: 1, 1.5, 2, 2.5, 3, 4, 5, 6, 8 times 1, 10 or 100, and the powers of two,
# of K, M, G, T or P. Each step is at most half again the one before, and `format_mem` prints
# every one exactly (2.5G, never a rounded 2.4G that would reserve less).
_DECADE = (1, 1.5, 2, 2.5, 3, 4, 5, 6, 8)
_MANTISSAS = tuple(
    sorted({m * 10**k for m in _DECADE for k in range(3)} | {16, 32, 64, 128, 256, 512})
)
_UNITS = tuple(1024**k for k in range(1, 6))  # K .. P
_MINUTE, _HOUR, _DAY = 60, 3600, 86400
# Time limits people write: 1m .. 4 weeks, then whole weeks.
_DURATIONS = (
    *(m * _MINUTE for m in (1, 2, 3, 5, 10, 15, 20, 30, 45, 60, 90)),
    *(h * _HOUR for h in (2, 3, 4, 6, 8, 12, 18, 24, 36)),
    *(d * _DAY for d in (2, 3, 4, 5, 7, 10, 14, 21, 28)),
)


# -- suggestions --------------------------------------------------------------------------


def pleasant_mem(nbytes: float) -> int:
    """The smallest size of _MANTISSAS' form (... 200M, 250M, 256M, 300M ... 1G, 1.5G ...)
    that is at least ``nbytes`` (whole pebibytes beyond)."""
    for unit in _UNITS:
        for m in _MANTISSAS:
            if m * unit >= nbytes:
                return int(m * unit)
    return int(math.ceil(nbytes / _UNITS[-1]) * _UNITS[-1])


def suggest_mem(peak: int) -> int:
    """What to reserve for jobs whose largest peak was ``peak`` bytes: at least the peak with
    headroom, rounded up to a pleasant size, never below MEM_FLOOR."""
    return pleasant_mem(max(math.ceil(peak * MEM_HEADROOM), MEM_FLOOR))


def suggest_procs(cores: float) -> int:
    """CPUs for jobs that kept at most ``cores`` CPUs busy on average: the next whole number
    (1.03 counts as one), at least 1."""
    return max(1, math.ceil(cores - CPU_TOLERANCE))


def pleasant_duration(seconds: float) -> int:
    """The shortest limit of 1m, 2m, 3m, 5m, 10m ... 4 weeks (then whole weeks) that is at
    least ``seconds``."""
    for d in _DURATIONS:
        if d >= seconds:
            return d
    week = 7 * _DAY
    return math.ceil(seconds / week) * week


def suggest_time(wall: float) -> int:
    """A time limit for jobs that ran at most ``wall`` seconds: with headroom, pleasant."""
    return pleasant_duration(max(wall * TIME_HEADROOM, TIME_FLOOR))


def duration_option(seconds: int) -> str:
    """``--time`` value of a pleasant duration: ``90m``, ``2h``, ``36h``, ``2d``."""
    if seconds % _DAY == 0:
        return f"{seconds // _DAY}d"
    if seconds % _HOUR == 0:
        return f"{seconds // _HOUR}h"
    return f"{math.ceil(seconds / _MINUTE)}m"


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
            _whole(get("procs")) or 1,
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
class Hint:
    """Advice for one group: ``kind`` (below), the submit option and value it suggests, and
    the sentence that says why.

    Kinds: ``mem`` (reserve less memory), ``mem-more`` (peaks close to the reservation),
    ``oom`` (jobs ran out of memory), ``procs`` (reserve fewer CPUs), ``procs-more`` (jobs
    used more CPUs than reserved), ``time`` (a much shorter limit would do), ``time-limit``
    (jobs hit their limit).
    """

    kind: str
    option: str  # --mem, --procs, --time
    value: str  # as the option takes it: 3G, 2, 90m
    text: str


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
            self.cpu_capacity += wall * job.procs
            if wall >= CPU_MIN_WALL:
                cores = job.cpu / wall
                if self.over is None or cores / job.procs > self.over[0] / self.over[1]:
                    self.over = (cores, job.procs)
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
            hints=tuple(self.hints(efficiency)),
        )

    def hints(self, efficiency: float | None) -> Iterable[Hint]:
        """At most one piece of advice per option. "Reserve more" comes first and from any
        job; "reserve less" needs a job that succeeded (jobs that all failed early say
        little of what the work needs), and is still computed from every job that ran, so
        that it never suggests less than one of them used."""
        yield from self.memory_hints()
        yield from self.cpu_hints(efficiency)
        yield from self.time_hints()

    def memory_hints(self) -> Iterable[Hint]:
        if self.oom:
            want = pleasant_mem(
                max(self.oom_mem * OOM_FACTOR, suggest_mem(self.seen.peak_max or 0))
            )
            value = format_mem(want)
            yield Hint(
                "oom",
                "--mem",
                value,
                f"{_of(self.oom, self.jobs)} ran out of memory at {format_mem(self.oom_mem)};"
                f" try --mem {value}",
            )
            return
        if self.near is not None and self.seen.peak_max is not None:
            ratio, peak, mem = self.near
            if ratio >= MEM_NEAR and peak >= MEM_FLOOR:
                value = format_mem(suggest_mem(self.seen.peak_max))
                reserved = f"{format_mem(mem)} reserved" if mem else "none reserved"
                unsure = " (not measured precisely)" if self.seen.imprecise else ""
                yield Hint(
                    "mem-more",
                    "--mem",
                    value,
                    f"peak {format_mem(peak)} of {reserved}{unsure}: little headroom;"
                    f" --mem {value} would be safer",
                )
                return
        seen = self.seen
        if seen.peak_max is None or "S" not in self.states:
            return
        want = suggest_mem(seen.peak_max)
        if want <= seen.reserved_max * MEM_FAR and seen.reserved_max - want >= MEM_MIN_SAVING:
            value = format_mem(want)
            upto = "up to " if seen.reserved_min != seen.reserved_max else ""
            unsure = " (not measured precisely)" if seen.imprecise else ""
            yield Hint(
                "mem",
                "--mem",
                value,
                f"peak {format_mem(seen.peak_max)}{unsure} of {upto}{format_mem(seen.reserved_max)}"
                f" reserved; --mem {value} would do",
            )

    def cpu_hints(self, efficiency: float | None) -> Iterable[Hint]:
        if self.over is not None:
            cores, procs = self.over
            if cores >= procs * CPU_OVER and cores - procs >= 0.5:
                want = suggest_procs(cores)
                yield Hint(
                    "procs-more",
                    "--procs",
                    str(want),
                    f"used {cores:.1f} CPUs with {procs} reserved; --procs {want} would do",
                )
                return
        if self.seen.cores_max is None or "S" not in self.states:
            return
        want = suggest_procs(self.seen.cores_max)
        if self.procs >= 2 and want <= self.procs * CPU_FAR:
            eff = "" if efficiency is None else f" (efficiency {efficiency:.0%})"
            yield Hint(
                "procs",
                "--procs",
                str(want),
                f"used at most {self.seen.cores_max:.1f} of {self.procs} CPUs{eff};"
                f" --procs {want} would do",
            )

    def time_hints(self) -> Iterable[Hint]:
        if self.time_hits:
            value = duration_option(pleasant_duration(self.time_hit_limit * TIME_FACTOR))
            yield Hint(
                "time-limit",
                "--time",
                value,
                f"{_of(self.time_hits, self.jobs)} hit the time limit of"
                f" {format_duration(self.time_hit_limit)}; try --time {value}",
            )
            return
        seen = self.seen
        if (
            seen.wall_max is None
            or seen.unlimited
            or seen.time_limit is None
            or "S" not in self.states
        ):
            return
        want = suggest_time(seen.wall_max)
        if want <= seen.time_limit * TIME_FAR:
            value = duration_option(want)
            yield Hint(
                "time",
                "--time",
                value,
                f"ran at most {format_duration(seen.wall_max)} of a"
                f" {format_duration(seen.time_limit)} limit; --time {value} would do",
            )


def _of(n: int, total: int) -> str:
    return f"{n} of {total} jobs" if total > 1 else "the job"


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


# -- asking the daemon ----------------------------------------------------------------------


def plan(
    ids: Collection[int] | None,
    names: Collection[str],
    since: float | None,
    by: str,
) -> Plan[Stats]:
    """Stats of the ended jobs the daemon remembers: one STATUS (a few bytes a job) picks the
    ended jobs of the wanted ids and names, then INFO in chunks of IDS_PER_LINE ids, so that
    a daemon remembering 100,000 jobs never sends, nor this client holds, them all at once.

    ``names``: glob patterns, any of which a job's name must match (none: every name).
    ``since``: only jobs that ended then or later (unix time).
    """
    import fnmatch  # noqa: PLC0415 -- only when patterns are given; keeps the module light

    tally = Tally(by)
    wanted_ids = None if ids is None else set(ids)

    def named(name: str) -> bool:
        return not names or any(fnmatch.fnmatchcase(name, p) for p in names)

    reply = (yield Call((Status(None),)))[0]
    wanted = []
    for line in _payload(reply, "STATUS").split("\r\n"):
        fields = line.split("\t")
        if len(fields) < 3 or not fields[0].isdigit() or fields[2] not in ENDED:
            continue
        jobid = int(fields[0])
        if (wanted_ids is None or jobid in wanted_ids) and named(fields[1]):
            wanted.append(jobid)
    for chunk in chunks(tuple(wanted)):
        reply = (yield Call((Info(chunk),)))[0]
        for job in _usages(_payload(reply, "INFO")):
            ended = job.ended if job.ended is not None else -math.inf
            if job.state in ENDED and (since is None or ended >= since) and named(job.name):
                tally.add(job)
    return tally.result(since)


def _payload(reply: Reply, verb: str) -> str:
    if isinstance(reply, Error):
        raise RequestRejected(reply.message)
    if not isinstance(reply, Data):
        raise ProtocolError(f"{verb} answered {reply!r}")
    return reply.payload.decode(errors="replace")


def _usages(text: str) -> Iterable[JobUsage]:
    import json  # noqa: PLC0415 -- as in _calls: a client that only submits never needs it

    lines = [line for line in text.splitlines() if line.strip()]
    try:
        # One call for the chunk: a third faster than a call per line.
        records = json.loads("[" + ",".join(lines) + "]")
    except ValueError:
        records = None
    if not isinstance(records, list) or len(records) != len(lines):
        records = []  # a line is not one JSON value: find which, to say so
        for line in lines:
            try:
                records.append(json.loads(line))
            except ValueError as e:
                raise ProtocolError(f"INFO sent a line that is not JSON: {e}") from None
    for rec in records:
        if not isinstance(rec, dict):
            raise ProtocolError(f"INFO sent {rec!r:.80}, not a JSON object")
        yield JobUsage.from_record(rec)
