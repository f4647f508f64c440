"""Slurm's status output -> records; pure: imports no subprocess/asyncio.

``squeue``, ``sacct`` and ``scontrol show config`` output become typed records; only the
standard library and ``sjq.slurm.states`` (what a record's Slurm state means for sjq) are
imported. Every parser takes any text without raising: a record it cannot read is returned
in ``junk``.

**squeue** (``squeue_args``): ``-h -t all -r -O <fields>`` lists pending, running and (for
``MinJobAge`` seconds after their end, 300 by default) finished jobs, one record per array
task. Fields are separated by ``|``; the two free-text fields come last, Slurm's reason code
(never holds a ``|``) then the comment (holds anything, newlines included), and each record
ends with ``\\x1e`` and a newline. ``exit_code`` is the raw wait status, which also tells a
job slurmd could not launch (its error code, e.g. 4021, stands in the status) from a job
that ran; ``scontrol show job`` reads the same record from slurmctld, so it adds nothing.

**sacct** (``sacct_args``): ``-P -n --noconvert`` one line per job and per step. The job's
line gives state, exit code, reason, node, times, comment; its steps' lines give MaxRSS and
TotalCPU. A job's ``maxrss`` is the largest over its steps (like ``wait4``'s, the largest
single step, each step's own peak summed over its processes; steps that run at the same time
can together use more), its ``cpu_time`` the sum of its steps' TotalCPU (user + system). The
comment is stored only with ``AccountingStoreFlags=job_comment``. sacct reports ``ExitCode``
as ``status:signal``; a job slurmd could not launch shows as signal 53 (the low bits of
error 4021), indistinguishable from a real signal 53.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from sjq.slurm.states import Phase, progress

__all__ = [
    "SACCT_FIELDS",
    "SQUEUE_FIELDS",
    "Parsed",
    "Settings",
    "SlurmJob",
    "has_ended",
    "parse_config",
    "parse_duration",
    "parse_sacct",
    "parse_squeue",
    "parse_time",
    "sacct_args",
    "settings_of",
    "squeue_args",
    "usage_recorded",
]

SEP = "|"
END = "\x1e"  # ASCII record separator: ends each squeue record (a comment may hold newlines)

SQUEUE_FIELDS = (
    "JobID", "ArrayJobID", "ArrayTaskID", "State", "exit_code", "NodeList", "StartTime",
    "EndTime", "TimeUsed", "TimeLimit", "Reason", "Comment",
)  # fmt: skip
SACCT_FIELDS = (
    "JobIDRaw", "JobID", "State", "ExitCode", "Reason", "NodeList", "Start", "End",
    "ElapsedRaw", "TotalCPU", "MaxRSS", "Timelimit", "Comment",
)  # fmt: skip

_NONE = {"", "(null)", "N/A", "None", "none", "Unknown", "UNLIMITED", "INVALID",
         "Partition_Limit", "NOT_SET", "None assigned"}  # fmt: skip


@dataclass(frozen=True, slots=True)
class SlurmJob:
    """One Slurm job (or array task) as squeue or sacct reports it; ``None`` = not reported."""

    key: str  # "123"; "120_4" for task 4 of array 120; "120_[5-9]" for tasks not yet split off
    job_id: int | None  # Slurm's own id of this record (JobIDRaw)
    state: str  # Slurm's word: PENDING, RUNNING, COMPLETED, CANCELLED ... ("by N" removed)
    reason: str = ""  # Slurm's reason code (Resources, Dependency, NonZeroExitCode ...); "" = None
    array_job_id: int | None = None
    array_task_id: int | None = None
    exit_code: int | None = None  # exit status, when the job exited (not when a signal ended it)
    signal: int | None = None  # the signal that ended it
    launch_error: int | None = None  # slurmd's error code in place of a status: it never ran
    node: str = ""
    start: float | None = None  # seconds since the epoch
    end: float | None = None
    elapsed: float | None = None  # seconds
    time_limit: float | None = None  # seconds; None = none or unknown
    cpu_time: float | None = None  # seconds of user + system CPU (sacct only)
    maxrss: int | None = None  # bytes (sacct only)
    cancelled_by: int | None = None  # uid (sacct's "CANCELLED by <uid>" only)
    comment: str = ""
    source: str = "squeue"  # "squeue" or "sacct"

    @property
    def phase(self) -> Phase:
        return progress(self).phase


@dataclass(frozen=True, slots=True)
class Parsed:
    """A parser's result: the jobs it read and the text of records it could not."""

    jobs: list[SlurmJob] = field(default_factory=list)
    junk: list[str] = field(default_factory=list)


# -- command lines ---------------------------------------------------------------------------


def squeue_args(jobs: Sequence[int | str] = (), user: str | None = None) -> list[str]:
    """squeue's arguments: every state, array tasks one per line, the fields above; only
    ``jobs`` (ids, or ``120_4``) or only ``user``'s jobs when given."""
    fmt = ",".join(f"{f}:{SEP}" for f in SQUEUE_FIELDS[:-1]) + f",{SQUEUE_FIELDS[-1]}:{END}"
    args = ["--noheader", "--states=all", "--array", f"--Format={fmt}"]
    if jobs:
        args.append(f"--jobs={','.join(str(j) for j in jobs)}")
    if user is not None:
        args.append(f"--user={user}")
    return args


def sacct_args(
    jobs: Sequence[int | str] = (), user: str | None = None, since: str | None = None
) -> list[str]:
    """sacct's arguments: jobs and their steps, exact units, the fields above. With ``jobs``
    sacct looks back to the epoch; otherwise from ``since`` (Slurm's time syntax, e.g.
    ``now-7days``; sacct's own default is midnight)."""
    args = ["--parsable2", "--noheader", "--noconvert", f"--delimiter={SEP}",
            f"--format={','.join(SACCT_FIELDS)}"]  # fmt: skip
    if jobs:
        args.append(f"--jobs={','.join(str(j) for j in jobs)}")
    if user is not None:
        args.append(f"--user={user}")
    if since is not None:
        args.append(f"--starttime={since}")
    return args


# -- values ----------------------------------------------------------------------------------


def _int(text: str) -> int | None:
    t = text.strip()
    return int(t) if t.isascii() and t.isdigit() and len(t) < 20 else None


def parse_time(text: str) -> float | None:
    """``2026-12-05T23:16:35`` (local time, as Slurm prints it) -> seconds since the epoch."""
    t = text.strip()
    if t in _NONE:
        return None
    try:
        return time.mktime(time.strptime(t, "%Y-%m-%dT%H:%M:%S"))
    except (ValueError, OverflowError):
        return None


_DURATION = re.compile(r"(?:(\d{1,9})-)?(\d{1,9})(?::(\d{1,9}))?(?::(\d{1,9}))?(?:\.(\d{1,9}))?")


def parse_duration(text: str) -> float | None:
    """Slurm's durations -> seconds: ``MM:SS``, ``MM:SS.mmm``, ``HH:MM:SS``, ``D-HH``,
    ``D-HH:MM``, ``D-HH:MM:SS``; ``UNLIMITED``, ``INVALID`` and the like -> None."""
    t = text.strip()
    if t in _NONE:
        return None
    m = _DURATION.fullmatch(t)
    if m is None:
        return None
    days, a, b, c, frac = m.groups()
    parts = [int(x) for x in (a, b, c) if x is not None]
    if days is not None:
        # After "D-" the first number is hours: D-HH, D-HH:MM, D-HH:MM:SS.
        parts += [0] * (3 - len(parts))
        h, mi, s = parts
        seconds = float(int(days) * 86400 + h * 3600 + mi * 60 + s)
    elif len(parts) == 3:
        seconds = float(parts[0] * 3600 + parts[1] * 60 + parts[2])
    elif len(parts) == 2:
        seconds = float(parts[0] * 60 + parts[1])
    else:
        seconds = float(parts[0] * 60)  # a bare number is minutes, as in --time
    if frac:
        seconds += int(frac) / 10 ** len(frac)
    return seconds


_SIZE = re.compile(r"(\d{1,19}(?:\.\d{1,9})?)([KMGTP]?)", re.IGNORECASE)
_SIZE_UNIT = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4, "P": 1024**5}


def _size(text: str) -> int | None:
    """sacct's sizes: plain bytes (``--noconvert``), or with a binary unit (``168420K``)."""
    m = _SIZE.fullmatch(text.strip())
    if m is None:
        return None
    return round(float(m.group(1)) * _SIZE_UNIT[m.group(2).upper()])


def _wait_status(raw: int) -> tuple[int | None, int | None, int | None]:
    """``(exit_code, signal, launch_error)`` from squeue's raw ``exit_code``."""
    low = raw & 0x7F
    if raw > 0xFFFF or (low and raw >> 8):  # no wait status looks like this: slurmd's errno
        return None, None, raw
    if low:
        return None, low, None
    return raw >> 8, None, None


def _array_key(job_id: int | None, array_job: str, task: str) -> tuple[str, int | None, int | None]:
    """The record's key, array job id and task id from squeue's ArrayJobID/ArrayTaskID."""
    task = task.strip()
    master = _int(array_job)
    if task in _NONE or master is None:
        return (str(job_id) if job_id is not None else array_job.strip()), None, None
    index = _int(task)
    if index is not None:
        return f"{master}_{index}", master, index
    return f"{master}_[{task.strip('[]')}]", master, None


# -- squeue ----------------------------------------------------------------------------------


def parse_squeue(text: str) -> Parsed:
    """Records of ``squeue`` run with ``squeue_args``; never raises."""
    out = Parsed()
    records = text.split(END + "\n") if END in text else text.split("\n")
    nfixed = len(SQUEUE_FIELDS) - 2
    for piece in records:
        rec = piece.removesuffix(END)
        if not rec.strip():
            continue
        parts = rec.split(SEP, nfixed)
        if len(parts) <= nfixed or not parts[3].strip():
            out.junk.append(rec)
            continue
        jobid, array_job, task, state, status, node, start, end, used, limit = parts[:nfixed]
        reason, _, comment = parts[nfixed].partition(SEP)
        job_id = _int(jobid)
        if job_id is None:
            out.junk.append(rec)
            continue
        key, master, index = _array_key(job_id, array_job, task)
        raw = _int(status)
        exit_code, sig, launch = _wait_status(raw) if raw is not None else (None, None, None)
        out.jobs.append(
            SlurmJob(
                key=key,
                job_id=job_id,
                state=state.strip().upper(),
                reason=_text(reason),
                array_job_id=master,
                array_task_id=index,
                exit_code=exit_code,
                signal=sig,
                launch_error=launch,
                node=_text(node),
                start=parse_time(start),
                end=parse_time(end),
                elapsed=parse_duration(used),
                time_limit=parse_duration(limit),
                comment=_comment(comment),
                source="squeue",
            )
        )
    return out


def _text(value: str) -> str:
    return "" if value.strip() in _NONE else value


def _comment(value: str) -> str:
    """A comment is free text: only squeue's "(null)" (and sacct's empty field) is none."""
    return "" if value == "(null)" else value


# -- sacct -----------------------------------------------------------------------------------

_RAW_ID = re.compile(r"(\d+)(?:([.+])(\S*))?")
_ARRAY_ID = re.compile(r"(\d+)_(\d+|\[[^\]]*\])")


def parse_sacct(text: str) -> Parsed:
    """Jobs of ``sacct`` run with ``sacct_args``, their steps folded in; never raises.

    A line that does not start a record (a newline inside a comment) continues the comment
    of the line before it."""
    out = Parsed()
    n = len(SACCT_FIELDS)
    rows: list[list[str]] = []
    lines = text.split("\n")  # not splitlines(): a comment may hold \r, \f, \x1c ...
    if lines and lines[-1] == "":
        lines.pop()
    for line in lines:
        parts = line.split(SEP, n - 1)
        if len(parts) == n and _RAW_ID.fullmatch(parts[0].strip()) and parts[2].strip():
            rows.append(parts)
        elif rows:
            rows[-1][-1] += "\n" + line
        elif line.strip():
            out.junk.append(line)
    jobs: dict[str, SlurmJob] = {}
    steps: dict[str, list[list[str]]] = {}
    order: list[str] = []
    for parts in rows:
        raw = parts[0].strip()
        m = _RAW_ID.fullmatch(raw)
        assert m is not None
        if m.group(2) is not None and m.group(2) == ".":
            steps.setdefault(m.group(1), []).append(parts)
            continue
        job = _sacct_job(parts)
        if job is None:
            out.junk.append(SEP.join(parts))
            continue
        if raw not in jobs:
            order.append(raw)
        jobs[raw] = job
    for raw in order:
        job = jobs[raw]
        mine = steps.pop(raw, [])
        rss = [r for s in mine if (r := _size(s[10])) is not None]
        cpu = [c for s in mine if (c := parse_duration(s[9])) is not None]
        if job.maxrss is not None:
            rss.append(job.maxrss)
        out.jobs.append(
            replace(
                job,
                maxrss=max(rss) if rss else None,
                cpu_time=max(sum(cpu), job.cpu_time or 0.0) if cpu else job.cpu_time,
            )
        )
    for leftover in steps.values():  # steps whose job line was not in the output
        out.junk.extend(SEP.join(p) for p in leftover)
    return out


def has_ended(job: SlurmJob) -> bool:
    """Whether sacct's record says the job has ended."""
    return job.end is not None and job.state not in ("PENDING", "RUNNING")


def usage_recorded(job: SlurmJob) -> bool:
    """Whether sacct's record of a job holds its final usage: the job has ended and a step
    reported its peak memory. slurmdbd stores a job's line and its steps' lines apart: for a
    moment after the end the job may show its CPU time and no peak yet."""
    return has_ended(job) and job.maxrss is not None


def _sacct_job(parts: list[str]) -> SlurmJob | None:
    raw, jobid, state, code, reason, node, start, end, elapsed, cpu, rss, limit, comment = parts
    job_id = _int(raw.split("+")[0])
    words = state.split()
    if job_id is None or not words:
        return None
    cancelled_by = None
    if len(words) >= 3 and words[1] == "by":
        cancelled_by = _int(words[2])
    key = jobid.strip() or raw.strip()
    master = index = None
    m = _ARRAY_ID.fullmatch(key)
    if m is not None:
        master = int(m.group(1))
        index = _int(m.group(2))
    exit_code = sig = None
    status, colon, signo = code.strip().partition(":")
    if colon and _int(status) is not None and _int(signo) is not None:
        s = int(signo)
        exit_code, sig = (None, s) if s else (int(status), None)
    return SlurmJob(
        key=key,
        job_id=job_id,
        state=words[0].upper(),
        reason=_text(reason),
        array_job_id=master,
        array_task_id=index,
        exit_code=exit_code,
        signal=sig,
        node=_text(node),
        start=parse_time(start),
        end=parse_time(end),
        elapsed=float(e) if (e := _int(elapsed)) is not None else None,
        time_limit=parse_duration(limit),
        cpu_time=parse_duration(cpu),
        maxrss=_size(rss),
        cancelled_by=cancelled_by,
        comment=_comment(comment),
        source="sacct",
    )


# -- scontrol show config --------------------------------------------------------------------


def parse_config(text: str) -> dict[str, str]:
    """``scontrol show config``'s ``Name = value`` lines -> a dict (other lines ignored)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        name = name.strip()
        if sep and name and " " not in name:
            out[name] = value.strip()
    return out


@dataclass(frozen=True, slots=True)
class Settings:
    """What of the cluster's configuration the back end needs."""

    accounting: bool  # slurmdbd stores jobs (and sacct is installed)
    max_tasks: int  # tasks of one array: numbered below this (MaxArraySize, max_array_tasks)
    min_job_age: float  # seconds an ended job stays in squeue (MinJobAge)


def settings_of(config: dict[str, str], has_sacct: bool) -> Settings:
    """``Settings`` from ``scontrol show config`` (``parse_config``); Slurm's defaults for
    what it does not say."""
    kind = config.get("AccountingStorageType", "")
    accounting = has_sacct and kind not in ("", "accounting_storage/none", "(null)")
    max_tasks = _int(config.get("MaxArraySize", "1001"))
    max_tasks = 1001 if max_tasks is None else max_tasks
    for param in config.get("SchedulerParameters", "").split(","):
        name, _, value = param.partition("=")
        n = _int(value)
        if name.strip() == "max_array_tasks" and n is not None:
            max_tasks = min(max_tasks, n)
    words = config.get("MinJobAge", "").split()  # "300 sec"
    age = _int(words[0]) if words else None
    return Settings(accounting, max_tasks, float(300 if age is None else age))


def by_key(jobs: Iterable[SlurmJob]) -> dict[str, SlurmJob]:
    """Jobs by ``key``; for a key listed twice, the later record."""
    return {j.key: j for j in jobs}
