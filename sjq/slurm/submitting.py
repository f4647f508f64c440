"""The Slurm back end's submitters; imports asyncio, runs Slurm's commands in worker threads.

They hand waiting jobs to sbatch, alone or an array's elements as one ``sbatch --array``.

A part of ``SlurmBackend`` (``sjq.slurm.backend``), kept apart so that each module holds one
concern: this one turns waiting jobs (``sjq.slurm.pending``) into sbatch commands and their
answers into the jobs' records; the back end follows what Slurm then does with them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import replace
from typing import TYPE_CHECKING

from sjq.access import path_problems
from sjq.config import Config
from sjq.jobs import E, Job, JobLaunch, JobState, K, R
from sjq.slurm.args import (
    ArgsError,
    Pattern,
    SbatchRequest,
    Submitted,
    make_batch_tag,
    make_tag,
)
from sjq.slurm.batch import Batch, Member, build
from sjq.slurm.commands import Slurm
from sjq.slurm.errors import SlurmError, SlurmRejected
from sjq.slurm.parse import Settings
from sjq.slurm.pending import Pending, Unit
from sjq.slurm.track import SETTLE, Tracked

if TYPE_CHECKING:
    from sjq.state import State

__all__ = ["NOT_EXPORTED", "OutputDirError", "Submitting", "make_output_dirs"]

log = logging.getLogger("sjq.slurm")

# A job's variables that mean nothing on a compute node: a job there cannot reach this
# daemon's socket (nested submits use a daemon of their own: pilot mode, docs/slurm.md).
NOT_EXPORTED = ("SJQ_SOCKET",)


class OutputDirError(Exception):
    """An output file's directory, to be made as the keeper makes it, could not be made."""


def make_output_dirs(launch: JobLaunch) -> None:
    """Make the missing directories of the outputs that the keeper would make them for
    (``JobLaunch.makedirs``: the configured defaults, and patterns below the working
    directory), as the daemon's user, who is the job's under Slurm. None while the working
    directory is missing: the keeper fails on that first, and so does Slurm (E)."""
    if launch.makedirs and not os.path.isdir(launch.cwd):
        return
    for what in launch.makedirs:
        path = os.path.dirname(launch.stdout if what == "stdout" else launch.stderr)
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as e:
            raise OutputDirError(
                f"cannot create the directory {e.filename or path} for {what}: {e.strerror}"
            ) from None


class Submitting:
    """The submitters' half of ``SlurmBackend`` (which sets these attributes and methods)."""

    cfg: Config
    slurm: Slurm
    ident: str
    tracked: dict[int, Tracked]
    jobs: dict[int, Job]
    settings: Settings | None
    pending: Pending
    _launches: dict[int, JobLaunch]
    _absent: set[int]
    _retry_at: dict[int, float]
    _tries: dict[int, int]
    _work: asyncio.Event
    _settings_lock: asyncio.Lock

    def _recorded(self, job: Job, slurm_id: str) -> None:
        raise NotImplementedError

    def _note(self, job: Job, reason: str) -> None:
        raise NotImplementedError

    def _end(self, st: State, job: Job, state: JobState, reason: str, when: float) -> None:
        raise NotImplementedError

    def _forget(self, jobid: int) -> None:
        raise NotImplementedError

    def _state(self) -> State:
        raise NotImplementedError

    def _limit_of(self, array: int) -> int | None:
        raise NotImplementedError

    async def _cluster(self) -> Settings | None:
        """The cluster's settings, asked once (None while slurmctld cannot be reached)."""
        async with self._settings_lock:
            if self.settings is None:
                try:
                    self.settings = await asyncio.to_thread(self.slurm.settings)
                except SlurmError as e:
                    log.info("scontrol show config failed (%s); asking again later", e)
        return self.settings

    async def _submitter(self) -> None:
        while True:
            # No more of an array's elements than one batch can hold: Slurm's MaxArraySize
            # (Slurm's default until the cluster has been asked).
            unit = self.pending.take(self.settings.max_tasks if self.settings else 1001)
            for array, waiting in self.pending.newly_blocked():
                n = self._limit_of(array)
                why = f"waiting for Slurm: array {array} has {n} elements there, its limit (%{n})"
                for jobid in waiting:
                    if (job := self.jobs.get(jobid)) is not None:
                        self._note(job, why)
            if unit is None:
                self._work.clear()
                await self._work.wait()
                continue
            jobs: list[Job] = []
            for jobid in unit.ids:
                job = self.jobs.get(jobid)
                if jobid not in self._launches or job is None or job.state is not R:
                    self.pending.gone(jobid)
                    continue
                if job.killing:  # killed before it reached Slurm
                    self._forget(jobid)
                    self._end(self._state(), job, K, "killed by request", time.time())
                    continue
                jobs.append(job)
            try:
                if len(jobs) == 1:
                    await self._sbatch(jobs[0], self._launches[jobs[0].id])
                elif jobs:
                    await self._sbatch_array(jobs, unit)
            except Exception:  # a bug must cost one submission's try, never the daemon
                log.exception("jobs %s: submitting failed; trying again later", unit.ids)
                for job in jobs:
                    if job.backend_id is None and job.id not in self.pending:
                        self._uncertain(job, "internal error while submitting")

    async def _sbatch(self, job: Job, launch: JobLaunch) -> None:
        try:
            req = self.request(job, launch)
            env = {k: v for k, v in launch.env.items() if k not in NOT_EXPORTED}
            # sbatch runs where the daemon runs: the job's directory is --chdir, and one that
            # is missing on the node is the job's error (E), not sbatch's.
            sub = await asyncio.to_thread(self._submit_one, req, launch, env)
        except OutputDirError as e:
            self._forget(job.id)
            self._end(self._state(), job, E, str(e), time.time())
            return
        except (ArgsError, SlurmRejected) as e:
            self._refused([job], e)
            return
        except SlurmError as e:
            log.warning("job %d: sbatch failed (%s); trying again later", job.id, e)
            self._uncertain(job, str(e))
            return
        self._recorded(job, str(sub.job_id))

    async def _sbatch_array(self, jobs: list[Job], unit: Unit) -> None:
        """Elements of one array as one ``sbatch --array`` (``sjq.slurm.batch``); those that
        cannot share it go alone, those beyond what one batch holds wait for the next."""
        first = jobs[0]
        launch = self._launches[first.id]
        key = self._shape(first, launch)
        same = [j for j in jobs if self._shape(j, self._launches[j.id]) == key]
        later = [j.id for j in jobs if j not in same]
        settings = await self._cluster()
        max_tasks = settings.max_tasks if settings is not None else 0
        members = [self._member(j) for j in same]
        problems, batch = await asyncio.to_thread(_prepare, launch, members, unit.room, max_tasks)
        for job in same:
            if job.id in problems:  # the keeper would not have started it either
                self._forget(job.id)
                self._end(self._state(), job, E, problems[job.id], time.time())
        ok = [j for j in same if j.id not in problems]
        if isinstance(batch, str):
            log.info("array %d: its elements go to sbatch one by one: %s", first.array, batch)
            self.pending.put_back([j.id for j in ok[1:]] + later, first.array, alone=True)
            if ok:
                await self._sbatch(ok[0], self._launches[ok[0].id])
            return
        taken = set(batch.jobids)
        self.pending.put_back([j.id for j in ok if j.id not in taken] + later, first.array)
        self._work.set()  # another submitter may take what was put back
        members_jobs = [j for j in ok if j.id in taken]
        if len(members_jobs) == 1:
            await self._sbatch(members_jobs[0], self._launches[members_jobs[0].id])
            return
        await self._submit_batch(members_jobs, launch, batch)

    async def _submit_batch(self, jobs: list[Job], launch: JobLaunch, batch: Batch) -> None:
        try:
            req = replace(
                self.request(jobs[0], launch),
                tag=make_batch_tag(self.ident, batch.base),
                stdout=Pattern("/dev/null"),  # the wrapper opens each element's own files
                stderr=Pattern("/dev/null"),
                array=batch.array,
            )
            sub = await asyncio.to_thread(self.slurm.submit, req, batch.script, batch.env)
        except (ArgsError, SlurmRejected) as e:
            self._refused(jobs, e)
            return
        except SlurmError as e:
            log.warning("jobs %d-%d: sbatch failed (%s); trying again later",
                        jobs[0].id, jobs[-1].id, e)  # fmt: skip
            for job in jobs:
                self._uncertain(job, str(e))
            return
        log.debug("jobs %s: Slurm array %d (--array=%s)", batch.jobids, sub.job_id, batch.array)
        for job in jobs:
            self._recorded(job, f"{sub.job_id}_{job.id - batch.base}")

    def _submit_one(self, req: SbatchRequest, launch: JobLaunch, env: dict[str, str]) -> Submitted:
        """In a worker thread: the output directories the keeper would make, then sbatch."""
        make_output_dirs(launch)
        return self.slurm.submit(req, launch.script, env)

    def _refused(self, jobs: list[Job], e: Exception) -> None:
        ids = ", ".join(str(j.id) for j in jobs[:5]) + (" ..." if len(jobs) > 5 else "")
        log.warning("job %s: Slurm refused it: %s", ids, e)
        for job in jobs:
            self._forget(job.id)
            self._end(self._state(), job, E, f"Slurm refused the job: {e}", time.time())

    def _shape(self, job: Job, launch: JobLaunch) -> tuple[SbatchRequest, bytes, str]:
        """What must be the same for jobs that share an sbatch."""
        req = replace(self.request(job, launch), tag="", stdout=None, stderr=None)
        return req, launch.script, launch.cwd

    def _member(self, job: Job) -> Member:
        launch = self._launches[job.id]
        env = {k: v for k, v in launch.env.items() if k not in NOT_EXPORTED}
        return Member(job.id, env, launch.stdout, launch.stderr)

    def _tracked(self, job: Job, slurm_id: str | None = None) -> Tracked:
        """What follows ``job``'s current attempt (``job.attempts``) in Slurm; after a failed
        one (RETRY) it keeps why that failed, INFO's reason while Slurm gives none."""
        retried = job.reason if job.attempts > 1 and job.reason.startswith("attempt ") else ""
        return Tracked(job.id, slurm_id, attempt=max(1, job.attempts), retried=retried)

    def _uncertain(self, job: Job, why: str) -> None:
        """sbatch failed transiently: Slurm may or may not have the job; its tag decides."""
        t = self.tracked.get(job.id)
        if t is None:
            return
        tries = self._tries.get(job.id, 0) + 1
        self._tries[job.id] = tries
        t.uncertain_since = time.time()
        delay = min(self.cfg.slurm_poll_max, self.cfg.slurm_poll * 2**tries)
        self._retry_at[job.id] = t.uncertain_since + max(SETTLE, delay)
        self._note(job, f"waiting for Slurm: {why}")

    def request(self, job: Job, launch: JobLaunch) -> SbatchRequest:
        """What sbatch is told about ``job``."""
        return SbatchRequest(
            tag=make_tag(self.ident, job.id, max(1, job.attempts)),  # each attempt its own
            name=job.name,
            procs=job.procs or None,  # 0: not given (#SBATCH lines or Slurm's default)
            mem=job.mem or None,
            gpus=job.gpus or None,  # --gres=gpu:N; Slurm picks the devices (CUDA_VISIBLE_DEVICES)
            time_limit=launch.time_limit,
            cwd=launch.cwd,
            stdout=launch.stdout,
            stderr=launch.stderr,
            extra=self.cfg.slurm_args or (),
        )

    def _resubmit(self, asked: float) -> None:
        """Uncertain jobs proven absent whose backoff is over go to sbatch again."""
        for jobid in sorted(self._absent):
            if self._retry_at.get(jobid, 0.0) <= asked:
                self._absent.discard(jobid)
                self._retry_at.pop(jobid, None)
                job = self.jobs.get(jobid)
                if job is None:
                    continue
                if jobid not in self._launches:  # an earlier daemon's: read back its record
                    self._launches[jobid] = self._state().spawn_request(job)
                self.pending.add(jobid, job.array, alone=job.attempts > 1)  # (as ``_hand``)
                self._work.set()


def _prepare(
    launch: JobLaunch, members: list[Member], room: int | None, max_tasks: int
) -> tuple[dict[int, str], Batch | str]:
    """In a worker thread (the file system may be slow): the elements whose files could not be
    opened (as the keeper would say it), and the batch of the rest."""
    uid, gid = os.geteuid(), os.getegid()
    problems: dict[int, str] = {}
    for m in members:
        try:
            make_output_dirs(launch._replace(stdout=m.stdout, stderr=m.stderr))
        except OutputDirError as e:
            problems[m.jobid] = str(e)
            continue
        outputs = (("stdout", m.stdout, True), ("stderr", m.stderr, True))
        found = path_problems(launch.cwd, outputs, uid, gid)
        if found:
            problems[m.jobid] = "; ".join(found)
    rest = [m for m in members if m.jobid not in problems]
    if not rest:
        return problems, "no element can start"
    return problems, build(launch.script, rest, room, max_tasks)
