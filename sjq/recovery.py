"""Start-up reconciliation: the database's view of running jobs against the keepers' journals.

Runs before the event loop. Decides, for every job the database records as running, whether
it ended while no daemon was there (its real status is in a journal), is still running
(re-adopted: watched until it ends), or provably never started (queued again). Touches no
socket; reads journals and /proc only through ``sjq.keeper``.
"""

from __future__ import annotations

import glob
import logging
import os
import time
from dataclasses import dataclass, field

from sjq.conditions import parents, resolve
from sjq.contain.cpus import parse_cpulist
from sjq.jobs import Job, JobState
from sjq.keeper.adopt import Adoption
from sjq.keeper.journal import JournalState
from sjq.keeper.procs import process_alive
from sjq.state import State

__all__ = ["Adoption", "recover"]

log = logging.getLogger("sjq.recovery")

# How long to wait for a surviving keeper to notice its daemon is gone and say so in its
# journal: until then it might still act on a start request the dead daemon sent.
DETACH_WAIT = 10.0


@dataclass(slots=True)
class Recovered:
    adopted: list[Adoption] = field(default_factory=list)
    finished_journals: list[str] = field(default_factory=list)  # fully applied: delete after commit
    requeued: int = 0
    ended: int = 0
    started_late: int = 0  # recorded as waiting, but a keeper had started them
    in_slurm: list[Job] = field(default_factory=list)  # handed to Slurm: its back end settles


def read_journals(spool: str) -> list[JournalState]:
    journals = []
    for path in sorted(glob.glob(os.path.join(spool, "keeper-*.journal"))):
        j = JournalState(path)
        j.read()
        journals.append(j)
    deadline = time.monotonic() + DETACH_WAIT
    for j in journals:
        while j.keeper_alive() and not j.detached and time.monotonic() < deadline:
            time.sleep(0.01)  # the old keeper is about to see its daemon's socket close
            j.read()
        if j.keeper_alive() and not j.detached:
            log.warning("keeper %d has not detached after %.0f s", j.keeper_pid, DETACH_WAIT)
    return journals


def recover(state: State, spool: str, now: float) -> Recovered:
    """Load the database's active jobs into the queue, settling the ones recorded running."""
    out = Recovered()
    journals = read_journals(spool)
    started: dict[int, JournalState] = {}
    for j in journals:
        for jobid in j.started:
            started[jobid] = j
        for jobid in j.errors:
            started.setdefault(jobid, j)
    q = state.queue
    jobs = state.store.load_active()
    for array, limit in state.store.array_limits().items():
        q.limit_array(array, limit)
    aborted: dict[int, JobState] = {}  # jobs aborted here, still recorded as waiting

    def ended(jobid: int) -> JobState | None:
        return aborted.get(jobid) or state.store.state_of(jobid)

    for job in jobs:
        if job.state is not JobState.RUNNING and job.id in started:
            # Started by a daemon that died before it could record so: it is running.
            rec = started[job.id].started.get(job.id)
            state.found_started(job, rec.time if rec is not None else now)
            out.started_late += 1
        cond = resolve(parents(job.depends, job.dependency), q.get, ended, q.started)
        if job.state is JobState.RUNNING:
            cond.doomed = ""  # it runs: its condition held when it started
        q.add(job, now, unmet=cond.unmet, conds=cond.conds, doomed=cond.doomed)
        if cond.doomed:
            aborted[job.id] = JobState.ABORT

    slurm = state.cfg.backend == "slurm"
    for job in [x for x in q.jobs.values() if x.state is JobState.RUNNING]:
        if job.backend_id is not None or (slurm and job.id not in started):
            out.in_slurm.append(job)  # no keeper ran it: Slurm has it, or may have
            continue
        jl = started.get(job.id)
        if jl is not None and job.id in jl.started:
            s = jl.started[job.id]
            job.pid = job.pid or s.pid
            job.start_time = job.start_time or s.time
        if jl is not None and job.id in jl.exited:
            state.exited(jl.exited[job.id])
            out.ended += 1
        elif jl is not None and job.id in jl.errors:
            refusal = jl.errors[job.id]
            state.failed_to_start(job.id, refusal.reason, refusal.time)
            out.ended += 1
        elif jl is not None or job.pid is not None:
            pid: int | None
            pid_start: int | None
            start_hi: int | None = None
            if jl is not None:
                s = jl.started[job.id]
                pid, pid_start, start_hi = s.pid, s.tick_lo, s.tick_hi
            else:
                pid, pid_start = job.pid, job.pid_start
            assert pid is not None  # by the branch condition
            t_start = jl.started[job.id].time if jl is not None else job.start_time or now
            state.record_start(job, pid, pid_start, t_start)
            live_keeper = jl is not None and jl.keeper_alive()
            if jl is not None and not live_keeper:
                jl.read()  # the keeper may have recorded the exit just before it ended
            if jl is not None and job.id in jl.exited:
                state.exited(jl.exited[job.id])
                out.ended += 1
            elif process_alive(pid, pid_start, start_hi) or live_keeper:
                out.adopted.append(Adoption(job, jl))
                if jl is not None:  # it goes on holding its CPUs and GPUs
                    s = jl.started[job.id]
                    cpus = parse_cpulist(s.cpus) if s.cpus else None
                    gpus = tuple(s.gpus.split(",")) if s.gpus else None
                    job.cpu_ids, job.gpu_ids = state.devices.assign(job.id, cpus, gpus)
            else:
                state.lost(
                    job, "exit status lost: its daemon and keeper both ended while it ran", now
                )
                out.ended += 1
        else:
            # Recorded as starting, but no keeper ever started it: start it (once) now.
            q.requeue(job, now)
            out.requeued += 1

    needed = {id(a.journal) for a in out.adopted if a.journal is not None}
    for j in journals:
        if id(j) not in needed and not j.keeper_alive():
            out.finished_journals.append(j.path)
    if out.adopted or out.requeued or out.ended or out.started_late:
        log.info(
            "recovered: %d job(s) still running re-adopted, %d ended while no daemon ran,"
            " %d queued again (never started), %d found started though recorded waiting",
            len(out.adopted),
            out.ended,
            out.requeued,
            out.started_late,
        )
    return out
