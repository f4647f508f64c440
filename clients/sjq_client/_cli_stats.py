"""`sjq stats`: per job name, how jobs ended and what they used, with advice; the printer.

Loaded only for this command (the arithmetic is in _stats); imports datetime, json and re.
No asyncio, psutil, sqlite3 or daemon code.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Sequence

from sjq.units import UnitError, format_duration, format_mem, parse_duration

from ._args import Command, Opt, UsageError
from ._stats import GROUPINGS, SORTS, GroupStats, Stats, sort_groups
from .cli import EXIT_OK, Context, job_ids, parse_args

__all__ = ["STATS", "parse_since", "run_stats", "table"]

NAME_WIDTH = 30  # as `sjq status`; `--json` has the names whole

STATS = Command(
    "stats",
    "[options] [ID...]",
    "Per job name, over the ended jobs the daemon remembers (sjq.keep): how many, how many\n"
    "done and not, wall time (mean and longest), CPU efficiency (CPU time / (wall time x\n"
    "CPUs reserved)), the largest peak memory against what was reserved, and a hint where a\n"
    "reservation is far off, with a value for --mem, --procs or --time that would do (the\n"
    "largest peak with 20% headroom, rounded up to a size one writes). Reasons of the jobs\n"
    "that did not succeed are counted. Queued and running jobs are not counted. Never\n"
    "starts a daemon.",
    (
        Opt(
            ("--since",),
            "since",
            "WHEN",
            "only jobs that ended since: a duration ago (90m, 2h, 7d, 1-12:00:00) or a time"
            " (2026-11-20, '2026-11-20 14:00', 14:00 = the last 14:00)",
        ),
        Opt(
            ("-n", "--name"),
            "name",
            "PATTERN",
            "only jobs whose name matches this glob: align, 'align*' (repeatable: any of them)",
            repeat=True,
        ),
        Opt(
            ("--by",),
            "by",
            "GROUPING",
            "auto (default): names that differ only in a number standing alone (align.1,"
            " align.2: align.#) or a [...] suffix (rule[sample=a]) are one row; name: each"
            " name its own row; digits: every number is # (sample12: sample#)",
        ),
        Opt(
            ("--sort",),
            "sort",
            "KEY",
            "name (default); jobs, failed, wall (total wall time), mem (peak): most first;"
            " cpu: lowest efficiency first",
        ),
        Opt(("--json",), "json", "", "the figures as JSON (below), for scripts"),
    ),
    notes=(
        "a peak marked ~ was not measured precisely: the job ran under an sjq that measured\n"
        "only its largest process, sjq's own memory included. Hints need jobs that ran: --mem\n"
        "when the suggestion is at most half the reservation and frees 256M or more, or when a\n"
        "peak came within 10% of it, or jobs ran out of memory; --procs when jobs (of a second\n"
        "or more) kept at most half their CPUs busy, or more than they reserved; --time when a\n"
        "limit is four times what would do (1.5 x the longest run, at least 10m), or was hit.\n"
        "\n"
        "--json: {since, jobs, groups: [{name, names, jobs, done, failed, states, ran, retried,\n"
        "wall_mean, wall_max, wall_total, procs, cpu_efficiency, cores_max, peak_max,\n"
        "peak_imprecise, peak_unknown, reserved_min, reserved_max, time_limit, failures:\n"
        "[{reason, count, jobs}], hints: [{kind, option, value, text}]}]}; seconds, bytes,\n"
        "efficiency as a fraction (0.5 = 50%), null where nothing was measured."
    ),
    examples=(
        "  sjq stats                         every name the daemon remembers\n"
        "  sjq stats --since 1d --sort wall  yesterday's and today's jobs, longest in total first\n"
        "  sjq stats -n 'align*'             only these names\n"
        "  sjq stats 120-180                 only these jobs (e.g. one pipeline run)\n"
        "  sjq stats --by name               no grouping of align.1, align.2, ...\n"
        "  sjq stats --json | jq '.groups[].hints[].text'\n"
    ),
)


def run_stats(cmd: Command, argv: list[str], ctx: Context) -> int:
    parsed, ctx = parse_args(cmd, argv, ctx)
    if parsed.rest:
        raise UsageError(f"unexpected argument {parsed.rest[0]!r}")
    ids = job_ids(parsed.args, required=False) or None
    by = _choice(parsed.values.get("by"), "--by", GROUPINGS)
    order = _choice(parsed.values.get("sort"), "--sort", SORTS)
    names = parsed.values.get("name")
    now = time.time()
    since_text = parsed.values.get("since")
    since = parse_since(since_text, now) if isinstance(since_text, str) else None
    with ctx.client() as client:
        stats = client.stats(
            ids, names=names if isinstance(names, list) else (), since=since, by=by
        )
    stats = Stats(tuple(sort_groups(stats.groups, order)), stats.jobs, stats.since)
    if parsed.values.get("json"):
        print(json.dumps(stats.to_dict(), ensure_ascii=False))
    elif not stats.groups:
        print("no ended jobs" + (" match" if ids or names else "") + _since_note(stats))
    else:
        sys.stdout.write(report(stats))
    return EXIT_OK


def _choice(value: object, flag: str, choices: Sequence[str]) -> str:
    if value is None:
        return choices[0]
    if value not in choices:
        raise UsageError(f"{flag}: {value!r} is not one of {', '.join(choices)}")
    return str(value)


def parse_since(text: str, now: float) -> float:
    """Unix time from ``--since``: ``2026-11-20``, ``2026-11-20 14:00`` (ISO, local time
    unless a zone is given), ``14:00`` or ``14:00:30`` (the most recent such time), or a
    duration ago (``90``, ``90m``, ``2h``, ``7d``, ``1-12:00:00``)."""
    t = text.strip()
    if re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}([T ].*)?", t):
        from datetime import datetime  # noqa: PLC0415 -- only for this form

        try:
            when = datetime.fromisoformat(t).timestamp()  # a naive time is local time
        except ValueError:
            raise UsageError(
                f"--since: cannot read {text!r} as a date (expected e.g. 2026-11-20 or"
                " '2026-11-20 14:00')"
            ) from None
    elif m := re.fullmatch(r"([0-9]{1,2}):([0-9]{2})(?::([0-9]{2}))?", t):
        hour, minute, second = int(m[1]), int(m[2]), int(m[3] or 0)
        if hour > 23 or minute > 59 or second > 59:
            raise UsageError(f"--since: {text!r} is not a time of day (00:00 to 23:59:59)")
        day = time.localtime(now)
        when = time.mktime((*day[:3], hour, minute, second, 0, 0, -1))
        if when > now:  # "since 23:00", asked at 01:00, means last night
            when = time.mktime((*day[:2], day[2] - 1, hour, minute, second, 0, 0, -1))
    else:
        try:
            when = now - parse_duration(t)
        except UnitError as e:
            raise UsageError(
                f"--since: {e}; or give a time: 2026-11-20, '2026-11-20 14:00', 14:00"
            ) from None
    if when > now:
        raise UsageError(f"--since: {text!r} is in the future")
    return when


def _since_note(stats: Stats) -> str:
    if stats.since is None:
        return ""
    return " since " + time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stats.since))


def report(stats: Stats) -> str:
    """The table, then the hints, the reasons of jobs that did not succeed, and footnotes."""
    out = [table(stats.groups)]
    hints = [f"  {g.name}: {h.text}" for g in stats.groups for h in g.hints]
    if hints:
        out.append("\nhints:\n" + "\n".join(hints) + "\n")
    failed = [
        f"  {g.name}: {_jobs(f.count)}: {f.reason} ({_ids(f.jobs, f.count)})"
        for g in stats.groups
        for f in g.failures
    ]
    retried = [
        f"  {g.name}: {g.retried} of {g.jobs} needed more than one attempt"
        for g in stats.groups
        if g.retried
    ]
    if failed or retried:
        out.append("\nnot done:\n" + "\n".join(failed + retried) + "\n")
    out.append(_footnotes(stats))
    return "".join(out)


def _ids(jobs: tuple[int, ...], count: int) -> str:
    more = ", ..." if count > len(jobs) else ""
    return f"{', '.join(map(str, jobs))}{more}"


def _footnotes(stats: Stats) -> str:
    notes = []
    imprecise = sum(g.peak_imprecise for g in stats.groups)
    unknown = sum(g.peak_unknown for g in stats.groups)
    if imprecise:
        notes.append(
            f"~ peak memory of {_jobs(imprecise)} not measured precisely: an older sjq measured\n"
            "  only the largest process, sjq's own memory included"
        )
    if unknown:
        notes.append(f"peak memory of {_jobs(unknown)} unknown (not measured)")
    if stats.since is not None:
        notes.append(f"jobs ended{_since_note(stats)}")
    return "".join(f"\n{n}" for n in notes) + ("\n" if notes else "")


def _jobs(n: int) -> str:
    return f"{n} job" if n == 1 else f"{n} jobs"


def table(groups: Sequence[GroupStats]) -> str:
    """One row per group, columns aligned, numbers to the right."""
    head = (
        "NAME",
        "JOBS",
        "DONE",
        "FAILED",
        "WALL MEAN",
        "WALL MAX",
        "PROCS",
        "CPU EFF",
        "PEAK MAX",
        "RESERVED",
    )
    rows = [head]
    for g in groups:
        rows.append(
            (
                _cut(g.name, NAME_WIDTH),
                str(g.jobs),
                str(g.done),
                str(g.failed),
                _wall(g.wall_mean),
                _wall(g.wall_max),
                str(g.procs) if g.ran else "-",
                "-" if g.cpu_efficiency is None else f"{g.cpu_efficiency:.0%}",
                _peak(g),
                _reserved(g),
            )
        )
    widths = [max(len(r[c]) for r in rows) for c in range(len(head))]
    lines = []
    for r in rows:
        cells = [r[0].ljust(widths[0])] + [r[c].rjust(widths[c]) for c in range(1, len(r))]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines) + "\n"


def _cut(text: str, width: int) -> str:
    text = text.replace("\n", " ").replace("\t", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def _wall(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.1f}s"  # 0:00:00 would hide what short jobs take
    return format_duration(seconds)


def _peak(g: GroupStats) -> str:
    if g.peak_max is None:
        return "-"
    return ("~" if g.peak_imprecise else "") + format_mem(g.peak_max)


def _reserved(g: GroupStats) -> str:
    if not g.ran:
        return "-"
    if g.reserved_min == g.reserved_max:
        return format_mem(g.reserved_max)
    return f"{format_mem(g.reserved_min)}-{format_mem(g.reserved_max)}"
