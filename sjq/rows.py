"""A job's row in the state database, both ways: the columns a Job is read from (`ROW`,
`job_of`), the columns a turn's writes bring up to date (`UPDATE`, `update_of`), and what
INFO shows of a row (`INFO_COLUMNS`, `info_of`). Pure: no I/O (``sjq.store`` runs the SQL).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sjq.conditions import condition_text
from sjq.contain.cpus import format_cpulist, parse_cpulist
from sjq.jobs import NO_RUN, Job, JobState, Run

__all__ = [
    "INFO_COLUMNS",
    "ROW",
    "SHOWN",
    "UPDATE",
    "depends_text",
    "depends_tuple",
    "info_of",
    "job_of",
    "update_of",
]

ROW = (
    "id, name, state, procs, mem, depends, uid, gid, submitted, started, ended, exit_code,"
    " signal, reason, pid, pid_start, cpu_user, cpu_sys, maxrss, priority, killing,"
    " measured_by, backend_id, node, shown, dependency, array_id, time_limit, gpus, cpu_ids,"
    " gpu_ids, retry, retry_mem, attempts"
)
INFO_COLUMNS = (
    "id, name, state, procs, mem, depends, priority, submitted, started, ended, exit_code,"
    " signal, reason, pid, cpu_user, cpu_sys, maxrss, cwd, stdout, stderr, time_limit,"
    " measured_by, backend_id, node, shown, dependency, array_id, array_index, entry,"
    " cpu_ids, gpu_ids, attempts"
)
# What STATUS and INFO show as a job's state: a job handed to Slurm waits there as Q or U.
SHOWN = "CASE WHEN state = 'R' AND shown IS NOT NULL THEN shown ELSE state END"
UPDATE = (
    "UPDATE jobs SET state=?, started=?, ended=?, exit_code=?, signal=?, reason=?,"
    " pid=?, pid_start=?, cpu_user=?, cpu_sys=?, maxrss=?, priority=?, killing=?,"
    " measured_by=?, backend_id=?, node=?, shown=?, cpu_ids=?, gpu_ids=?, mem=?,"
    " attempts=? WHERE id=?"
)


def depends_text(depends: Sequence[int]) -> str:
    return ":".join(map(str, depends))


def depends_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(":")) if text else ()


# ROW's columns of what a started job has (``Run``), besides killing (20) and attempts (33).
_RUN_NULLABLE = (9, 10, 11, 12, 14, 15, 16, 17, 18, 21, 22, 23, 24, 29, 30)


def job_of(r: Sequence[Any]) -> Job:
    """The Job a row of ``ROW`` columns describes."""
    job = Job(
        r[0],
        r[1],
        JobState(r[2]),
        r[3],
        r[4],
        depends=depends_tuple(r[5]),
        uid=r[6],
        gid=r[7],
        submit_time=r[8],
        reason=r[13],
        priority=r[19],
        dependency=r[25],
        array=r[26] or 0,
        time_limit=r[27],
        gpus=r[28],
        retry=r[31],
        retry_mem=r[32],
    )
    if r[20] or r[33] or any(r[i] is not None for i in _RUN_NULLABLE):
        run = job.run = Run()
        run.start_time = r[9]
        run.end_time = r[10]
        run.exit_code = r[11]
        run.signal = r[12]
        run.pid = r[14]
        run.pid_start = r[15]
        run.cpu_user = r[16]
        run.cpu_sys = r[17]
        run.maxrss = r[18]
        run.killing = bool(r[20])
        run.measured_by = r[21]
        run.backend_id = r[22]
        run.node = r[23]
        run.shown = None if r[24] is None else JobState(r[24])
        run.cpu_ids = None if r[29] is None else parse_cpulist(r[29])
        run.gpu_ids = None if r[30] is None else tuple(g for g in r[30].split(",") if g)
        run.attempts = r[33]
    return job


def update_of(j: Job) -> tuple[Any, ...]:
    """The values of ``UPDATE`` for ``j``."""
    r = j.run or NO_RUN
    return (
        j.state.value,
        r.start_time,
        r.end_time,
        r.exit_code,
        r.signal,
        j.reason,
        r.pid,
        r.pid_start,
        r.cpu_user,
        r.cpu_sys,
        r.maxrss,
        j.priority,
        r.killing,
        r.measured_by,
        r.backend_id,
        r.node,
        None if r.shown is None else r.shown.value,
        None if r.cpu_ids is None else format_cpulist(r.cpu_ids),
        None if r.gpu_ids is None else ",".join(r.gpu_ids),
        j.mem,  # a retry after an out-of-memory end may raise it (RETRYMEM)
        r.attempts,
        j.id,
    )


_INFO_NAMES = [c.strip() for c in INFO_COLUMNS.split(",")]


def info_of(row: Sequence[Any]) -> dict[str, Any]:
    """INFO's record of a row of ``INFO_COLUMNS``."""
    d = dict(zip(_INFO_NAMES, row, strict=True))
    d["depends"] = list(depends_tuple(d["depends"]))
    cpus, gpus = d.pop("cpu_ids"), d.pop("gpu_ids")
    d["cpus"] = list(parse_cpulist(cpus)) if cpus else []
    d["gpus"] = gpus.split(",") if gpus else []
    shown = d.pop("shown")
    if d["state"] == "R" and shown is not None:
        d["state"] = shown  # waiting in Slurm
    d["dependency"] = condition_text(d["depends"], d["dependency"])
    return d
