"""`sjq stats`' advice: when a reservation is far off, and what to reserve instead (sizes and
limits people write, with headroom). Pure: imports math, sjq.units and the record helper.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING

from sjq._record import record
from sjq.units import format_duration, format_mem

if TYPE_CHECKING:
    from ._stats import _Group

__all__ = [
    "CPU_MIN_WALL",
    "Hint",
    "duration_option",
    "hints",
    "pleasant_duration",
    "pleasant_mem",
    "suggest_mem",
    "suggest_procs",
    "suggest_time",
]

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


# -- hints --------------------------------------------------------------------------------


def hints(g: _Group, efficiency: float | None) -> Iterable[Hint]:
    """At most one piece of advice per option. "Reserve more" comes first and from any
    job; "reserve less" needs a job that succeeded (jobs that all failed early say
    little of what the work needs), and is still computed from every job that ran, so
    that it never suggests less than one of them used."""
    yield from _memory(g)
    yield from _cpu(g, efficiency)
    yield from _time(g)


def _memory(g: _Group) -> Iterable[Hint]:
    if g.oom:
        want = pleasant_mem(max(g.oom_mem * OOM_FACTOR, suggest_mem(g.seen.peak_max or 0)))
        value = format_mem(want)
        yield Hint(
            "oom",
            "--mem",
            value,
            f"{_of(g.oom, g.jobs)} ran out of memory at {format_mem(g.oom_mem)}; try --mem {value}",
        )
        return
    if g.near is not None and g.seen.peak_max is not None:
        ratio, peak, mem = g.near
        if ratio >= MEM_NEAR and peak >= MEM_FLOOR:
            value = format_mem(suggest_mem(g.seen.peak_max))
            unsure = " (not measured precisely)" if g.seen.imprecise else ""
            if mem:
                text = (
                    f"peak {format_mem(peak)} of {format_mem(mem)} reserved{unsure}: little"
                    f" headroom; --mem {value} would be safer"
                )
            else:  # MEM 0: a job that reserved nothing, or (Slurm) left it to the cluster
                text = f"peak {format_mem(peak)}{unsure} with no memory given; --mem {value}"
            yield Hint("mem-more", "--mem", value, text)
            return
    seen = g.seen
    if seen.peak_max is None or "S" not in g.states:
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


def _cpu(g: _Group, efficiency: float | None) -> Iterable[Hint]:
    if g.over is not None:
        cores, procs = g.over
        if cores >= procs * CPU_OVER and cores - procs >= 0.5:
            want = suggest_procs(cores)
            yield Hint(
                "procs-more",
                "--procs",
                str(want),
                f"used {cores:.1f} CPUs with {procs} reserved; --procs {want} would do",
            )
            return
    if g.seen.cores_max is None or "S" not in g.states:
        return
    want = suggest_procs(g.seen.cores_max)
    if g.procs >= 2 and want <= g.procs * CPU_FAR:
        eff = "" if efficiency is None else f" (efficiency {efficiency:.0%})"
        yield Hint(
            "procs",
            "--procs",
            str(want),
            f"used at most {g.seen.cores_max:.1f} of {g.procs} CPUs{eff}; --procs {want} would do",
        )


def _time(g: _Group) -> Iterable[Hint]:
    if g.time_hits:
        value = duration_option(pleasant_duration(g.time_hit_limit * TIME_FACTOR))
        yield Hint(
            "time-limit",
            "--time",
            value,
            f"{_of(g.time_hits, g.jobs)} hit the time limit of"
            f" {format_duration(g.time_hit_limit)}; try --time {value}",
        )
        return
    seen = g.seen
    if seen.wall_max is None or seen.unlimited or seen.time_limit is None or "S" not in g.states:
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
