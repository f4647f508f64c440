"""`sjq status`, `info` and `wait`: ask, then print; no asyncio, psutil, sqlite3 or daemon code.

Imports json, time and the client. The only output is what the user asked to see.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence

from sjq.protocol import JobState, format_runs
from sjq.units import UnitError, format_duration, format_mem, parse_duration

from ._args import Command, Opt, UsageError
from ._exceptions import JobTimeout
from ._models import JobInfo
from .cli import (
    EXIT_ERROR,
    EXIT_OK,
    EXIT_TIMEOUT,
    Context,
    job_ids,
    parse_args,
    paused_note,
    summary,
)

__all__ = [
    "INFO",
    "STATUS",
    "WAIT",
    "details",
    "run_info",
    "run_status",
    "run_wait",
    "table",
    "when",
]

NAME_WIDTH = 30  # longer names are cut in the table (`sjq info` shows them whole)
PROGRESS_MIN_JOBS = 2  # a progress line is worth showing from two jobs on; it is redrawn in place

STATUS = Command(
    "status",
    "[options] [ID...]",
    "List jobs: id, name, state, CPUs and memory reserved, when submitted and started, how\n"
    "long it ran, exit code. Without ids, the jobs that have not ended (--all: also those\n"
    "that have); the last line sums up the whole queue, and says so when it is paused\n"
    "(`sjq pause`). With ids it starts a daemon when none runs (the jobs' records are in its\n"
    "database); without, never.",
    (
        Opt(("-a", "--all"), "all", "", "also list jobs that have ended (kept for sjq.keep)"),
        Opt(("--state",), "state", "STATES", "only these states: Q,R or queued,running,failed ..."),
        Opt(
            ("--json",), "json", "", "a JSON array of job records (the fields of `sjq info --json`)"
        ),
    ),
    notes=(
        "states: Q queued, H waiting (for dependencies), U held, R running, S done,\n"
        "F failed, A aborted (a dependency did not succeed), K killed, E error (could not start).\n"
        "exit status: 1 if a listed id is unknown (never submitted, or forgotten after sjq.keep)."
    ),
    examples=(
        "  sjq status                    jobs that have not ended, and a summary\n"
        "  sjq status --all              every job the daemon remembers\n"
        "  sjq status 12 13-15\n"
        "  sjq status --state F,A,E      what went wrong\n"
        "  sjq status --json | jq '.[] | select(.state == \"R\") | .id'\n"
    ),
)
INFO = Command(
    "info",
    "[options] ID...",
    "Everything the daemon knows about jobs: state and why, exit code or signal, times,\n"
    "CPU time, peak memory, the files it writes, its dependencies.",
    (Opt(("--json",), "json", "", "a JSON array of job records"),),
    "  sjq info 12\n  sjq info --json 12 | jq '.[0].maxrss'\n",
)
WAIT = Command(
    "wait",
    "[options] ID...",
    "Block until the jobs have ended. Exit 0 if every one succeeded; otherwise 1, with a line\n"
    "on stderr for each job that did not. On a terminal, a progress line shows how many have\n"
    "ended.",
    (
        Opt(
            ("-t", "--timeout"), "timeout", "TIME", "give up after this long (exit 124): 30, 5m, 2h"
        ),
        Opt(("--json",), "json", "", 'print the final states as JSON: {"12": "S", "13": "F"}'),
    ),
    "  sjq wait 12\n"
    "  sjq wait 12-20 && echo all done\n"
    "  sjq wait --timeout 1h $(cat ids.txt) || echo 'not all succeeded'\n",
)

_ORDER = "RQHUSFAKE"
ACTIVE = frozenset(s for s in JobState if not s.terminal)  # what `sjq status` lists by default


def run_status(cmd: Command, argv: list[str], ctx: Context) -> int:
    parsed, ctx = parse_args(cmd, argv, ctx)
    if parsed.rest:
        raise UsageError(f"unexpected argument {parsed.rest[0]!r}")
    ids = job_ids(parsed.args, required=False)
    states = _states(parsed.values.get("state"))
    default_view = not ids and states is None and not parsed.values.get("all")
    if default_view:
        states = ACTIVE
    with ctx.client() as client:
        if ids:
            infos = client.status(ids)
            missing = sorted(set(ids) - {i.id for i in infos})
            shown = [i for i in infos if states is None or i.state in states]
        else:
            shown, missing = client.status(states=states), []
        counts = None if ids or parsed.values.get("json") else client.ping()
        paused = "" if counts is None else paused_note(client)
    if parsed.values.get("json"):
        print(json.dumps([i.to_dict() for i in shown], ensure_ascii=False))
    else:
        if shown:
            sys.stdout.write(table(shown, time.time()))
        if counts is not None:
            hidden = sum(n for s, n in counts.items() if s.terminal) if default_view else 0
            note = f" ({hidden} ended not shown; --all shows them)" if hidden else ""
            print(f"queue: {summary(counts)}{note}{paused}")
        elif not shown and not missing:
            print("no matching jobs")
    for jobid in missing:
        print(
            f"sjq: unknown job {jobid} (never submitted, or forgotten: see sjq.keep)",
            file=sys.stderr,
        )
    return EXIT_ERROR if missing else EXIT_OK


def _states(value: object) -> frozenset[JobState] | None:
    if not isinstance(value, str):
        return None
    words = {s.word: s for s in JobState} | {s.value: s for s in JobState}
    out = set()
    for piece in value.split(","):
        key = piece.strip()
        state = words.get(key.upper() if len(key) == 1 else key.lower())
        if state is None:
            valid = ", ".join(f"{s.value} ({s.word})" for s in JobState)
            raise UsageError(f"--state: unknown state {key!r}; states are {valid}")
        out.add(state)
    return frozenset(out)


def table(infos: Sequence[JobInfo], now: float) -> str:
    """The status table, columns aligned, numbers to the right."""
    head = ("ID", "NAME", "STATE", "PROCS", "MEM", "SUBMITTED", "STARTED", "ELAPSED", "EXIT")
    right = {0, 3, 4, 7, 8}
    rows = [head]
    for i in infos:
        elapsed = i.elapsed(now)
        rows.append(
            (
                str(i.id),
                _cut(i.name, NAME_WIDTH),
                i.state.word,
                str(i.procs),
                format_mem(i.mem),
                when(i.submitted, now),
                when(i.started, now),
                "-" if elapsed is None else format_duration(elapsed),
                _exit(i),
            )
        )
    widths = [max(len(r[c]) for r in rows) for c in range(len(head))]
    lines = []
    for r in rows:
        cells = [
            r[c].rjust(widths[c]) if c in right else r[c].ljust(widths[c]) for c in range(len(r))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines) + "\n"


def _cut(text: str, width: int) -> str:
    text = text.replace("\n", " ").replace("\t", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def when(t: float | None, now: float) -> str:
    """A time of today as 14:03:12, of another day as 2026-11-20 14:03; '-' when unknown."""
    if t is None:
        return "-"
    if time.localtime(t)[:3] == time.localtime(now)[:3]:
        return time.strftime("%H:%M:%S", time.localtime(t))
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t))


def _exit(i: JobInfo) -> str:
    if i.exit_code is not None:
        return str(i.exit_code)
    if i.signal is not None:
        return signal_name(i.signal)
    return "-"


def signal_name(number: int) -> str:
    import signal  # noqa: PLC0415 -- builds enums; only when a job died of a signal

    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def run_info(cmd: Command, argv: list[str], ctx: Context) -> int:
    parsed, ctx = parse_args(cmd, argv, ctx)
    if parsed.rest:
        raise UsageError(f"unexpected argument {parsed.rest[0]!r}")
    ids = job_ids(parsed.args)
    with ctx.client() as client:
        infos = client.status(ids)
    if parsed.values.get("json"):
        print(json.dumps([i.to_dict() for i in infos], ensure_ascii=False))
    else:
        now = time.time()
        sys.stdout.write("\n".join(details(i, now) for i in infos))
    missing = sorted(set(ids) - {i.id for i in infos})
    for jobid in missing:
        print(
            f"sjq: unknown job {jobid} (never submitted, or forgotten: see sjq.keep)",
            file=sys.stderr,
        )
    return EXIT_ERROR if missing else EXIT_OK


def details(i: JobInfo, now: float) -> str:
    """`sjq info`: one job, one fact a line."""

    def stamp(t: float | None) -> str:
        return "-" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))

    def seconds(x: float | None) -> str:
        return "-" if x is None else f"{x:.2f} s"

    elapsed = i.elapsed(now)
    state = f"{i.state.word} ({i.state.value})" + (f": {i.reason}" if i.reason else "")
    rows = [
        ("state", state),
        *([("waiting for", i.waiting_for)] if i.waiting_for else []),
        ("exit code", "-" if i.exit_code is None else str(i.exit_code)),
        ("signal", "-" if i.signal is None else signal_name(i.signal)),
        ("submitted", stamp(i.submitted)),
        ("started", stamp(i.started)),
        ("ended", stamp(i.ended)),
        ("elapsed", "-" if elapsed is None else format_duration(elapsed)),
        ("procs", str(i.procs) + (f" (CPUs {format_cpus(i.cpus)})" if i.cpus else "")),
        (
            "memory",
            f"{format_mem(i.mem)} reserved"
            + ("" if i.maxrss is None else f", {format_mem(i.maxrss)} peak")
            + ("" if i.measured_by is None else f" (measured by {i.measured_by})"),
        ),
        ("gpus", " ".join(i.gpus) or "-"),
        ("attempts", str(i.attempts)),
        ("cpu time", f"{seconds(i.cpu_user)} user, {seconds(i.cpu_sys)} system"),
        ("time limit", "-" if i.time_limit is None else format_duration(i.time_limit)),
        ("priority", str(i.priority)),
        ("dependency", _dependency(i)),
        ("array", "-" if i.array_id is None else f"{i.array_id}, index {i.array_index}"),
        ("pid", "-" if i.pid is None else str(i.pid)),
        ("cwd", i.cwd or "-"),
        ("stdout", i.stdout or "-"),
        ("stderr", i.stderr or "-"),
    ]
    if i.entry is not None:
        rows.append(("entry", i.entry))
    width = max(len(k) for k, _ in rows)
    body = "".join(f"  {k:<{width}}  {v}\n" for k, v in rows)
    return f"job {i.id}: {i.name}\n{body}"


def _dependency(i: JobInfo) -> str:
    if i.dependency:
        return i.dependency
    return "afterok:" + ":".join(map(str, i.depends)) if i.depends else "-"


def run_wait(cmd: Command, argv: list[str], ctx: Context) -> int:
    parsed, ctx = parse_args(cmd, argv, ctx)
    if parsed.rest:
        raise UsageError(f"unexpected argument {parsed.rest[0]!r}")
    ids = job_ids(parsed.args)
    timeout = None
    if isinstance(limit := parsed.values.get("timeout"), str):
        try:
            timeout = parse_duration(limit)
        except UnitError as e:
            raise UsageError(f"--timeout: {e}") from None
    progress = (
        _Progress(len(ids)) if len(ids) >= PROGRESS_MIN_JOBS and sys.stderr.isatty() else None
    )

    with ctx.client() as client:
        try:
            states = client.wait(ids, timeout, progress=progress)
        except JobTimeout as e:
            if progress is not None:
                progress.clear()
            print(f"sjq: {e}", file=sys.stderr)
            return EXIT_TIMEOUT
        finally:
            if progress is not None:
                progress.clear()
        failed = [j for j, s in states.items() if s is not JobState.SUCCESS]
        reasons = {i.id: i.reason for i in client.status(failed)} if failed else {}
    if parsed.values.get("json"):
        print(json.dumps({str(j): s.value for j, s in states.items()}))
    for jobid in failed:
        why = f": {reasons[jobid]}" if reasons.get(jobid) else ""
        print(f"sjq: job {jobid} {states[jobid].word}{why}", file=sys.stderr)
    return EXIT_ERROR if failed else EXIT_OK


class _Progress:
    """``sjq: 37 of 100 jobs ended (35 done, 2 failed)``, redrawn in place on stderr."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.counts: dict[JobState, int] = {}
        self.ended = 0
        self.shown = False
        self.draw()

    def __call__(self, jobid: int, state: JobState) -> None:
        self.ended += 1
        self.counts[state] = self.counts.get(state, 0) + 1
        self.draw()

    def draw(self) -> None:
        parts = ", ".join(
            f"{self.counts[s]} {s.word}"
            for s in sorted(self.counts, key=lambda s: _ORDER.index(s.value))
        )
        text = f"sjq: {self.ended} of {self.total} jobs ended" + (f" ({parts})" if parts else "")
        sys.stderr.write(f"\r\x1b[K{text}")
        sys.stderr.flush()
        self.shown = True

    def clear(self) -> None:
        if self.shown:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()
            self.shown = False


def format_cpus(cpus: tuple[int, ...]) -> str:
    """(0, 2, 3) -> ``0,2-3``, as SJQ_CPUS and taskset write them."""
    return format_runs(sorted(set(cpus)))
