"""The Slurm back end; imports asyncio, never runs a Slurm command on the event loop.

What the daemon sends its spawns, kills, holds and releases to when ``sjq.backend = slurm``,
and what follows its jobs in Slurm. It runs in the daemon's event loop; every Slurm command
runs in a worker thread (``asyncio.to_thread``).

What a job goes through (docs/slurm.md):

1. The scheduler starts it (its dependencies allow; under Slurm there is no resource limit):
   sjq records it ``R``, shown as ``Q`` (``Job.shown``) while it waits in Slurm. Only once
   that is committed does ``take`` queue it for submission (never before, so a daemon that
   died with the job recorded as waiting has not submitted it).
2. A submitter runs ``sbatch`` with the tag ``sjq:<daemon-id>:<jobid>``. Its answer, the
   Slurm job id, is recorded (``Job.backend_id``) and committed before anything about the
   job's start can be: the start comes from a later status query. A definite refusal ends
   the job in ``E`` with Slurm's message. A transient failure leaves the job *uncertain*
   (``sjq.slurm.track``): its tag decides whether Slurm took it, and it is submitted again,
   with backoff, only once a status answer proves Slurm does not have it.
3. One ``squeue`` for all of the user's jobs per poll follows every job; the interval is
   ``sjq.slurm.poll`` while things change and grows to ``sjq.slurm.poll.max`` while nothing
   does. Starts, waiting reasons (held, Resources ...) and ends go into the job's record.
   With slurmdbd, ``sacct`` adds CPU time and peak memory after the end, and tells how a
   job ended that slurmctld has already forgotten.

KILL is ``scancel``, HOLD/RELEASE of a job waiting in Slurm ``scontrol uhold/release``. A
failed attempt with attempts left (RETRY, ``sjq.retry``) goes back to sjq's queue (``_end``);
once started again it is handed over as a new Slurm job, alone, under its attempt's own tag.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from typing import Protocol

from sjq.config import Config
from sjq.jobs import TERMINAL, E, F, Job, JobLaunch, JobState, K, Q, R
from sjq.retry import retry_of
from sjq.slurm.commands import Slurm
from sjq.slurm.errors import SlurmError, SlurmRejected
from sjq.slurm.parse import Settings, SlurmJob, has_ended, usage_recorded
from sjq.slurm.pending import Pending
from sjq.slurm.startup import wait_for_orphans
from sjq.slurm.submitting import Submitting
from sjq.slurm.track import (
    Absent,
    Began,
    Ended,
    Event,
    Found,
    Missing,
    Tracked,
    Waiting,
    apply,
    next_interval,
    observe,
    settled,
)
from sjq.state import State

__all__ = ["SlurmBackend"]

log = logging.getLogger("sjq.slurm")

SUBMITTERS = 4  # sbatch commands under way at once (each mostly waits for slurmctld)
MEASURE_FOR = 60.0  # seconds sacct is asked for an ended job's CPU time and peak memory


class Host(Protocol):
    """What of the daemon the back end needs."""

    state: State

    def want_turn(self) -> None: ...
    def now(self) -> float: ...


class SlurmBackend(Submitting):
    """The jobs sjq has handed to Slurm, the commands under way for them, and the tasks that
    run those commands. Built before the event loop runs; ``run`` is owned by the daemon's
    TaskGroup. Its submitters are ``sjq.slurm.submitting``'s."""

    def __init__(self, cfg: Config, slurm: Slurm, ident: str) -> None:
        self.cfg = cfg
        self.slurm = slurm
        self.ident = ident
        self.prefix = f"sjq:{ident}:"
        self.tracked: dict[int, Tracked] = {}
        self.jobs: dict[int, Job] = {}  # every job Slurm has or may have, by sjq id
        self._launches: dict[int, JobLaunch] = {}  # until sbatch's answer is recorded
        self.pending = Pending(self._limit_of)  # job ids to sbatch, in order
        self._absent: set[int] = set()  # proven not in Slurm: to sbatch again after backoff
        self._retry_at: dict[int, float] = {}  # an uncertain job's next try (backoff)
        self._tries: dict[int, int] = {}
        self._cancel: set[str] = set()  # Slurm ids to scancel
        self._holds: dict[str, bool] = {}  # Slurm id -> uhold (True) or release
        self._deferred: list[JobLaunch] = []  # started in a turn whose commit failed
        self._measure: dict[int, tuple[Job, float]] = {}  # ended jobs sacct may measure
        self.settings: Settings | None = None  # the cluster's (asked once reachable)
        self._settings_lock = asyncio.Lock()
        self._answered = 0.0  # when the last status query that worked was asked
        self.interval = cfg.slurm_poll
        self.unreachable = ""  # the last transient error of a status query, until one works
        self._host: Host | None = None
        self._deadline = 0.0  # the next status query (time.monotonic)
        self._act_after = 0.0  # the next try of failed scancel/scontrol commands
        self._nudge = asyncio.Event()  # the poller looks at its deadline and actions again
        self._work = asyncio.Event()  # submitters look for work

    # -- what the daemon tells it (in the event loop, between turns) ------------------------

    def adopt(self, jobs: Iterable[Job], now: float) -> None:
        """Recovery: jobs an earlier daemon handed to Slurm. Those without a recorded Slurm id
        may or may not have reached it: their tags decide, after ``SETTLE`` seconds."""
        for job in jobs:
            self.jobs[job.id] = job
            t = self._tracked(job, job.backend_id)
            if job.backend_id is None:
                t.uncertain_since = now
            if job.shown is None and job.backend_id is not None:
                t.shown = R
            elif job.shown is not None:
                t.shown = job.shown
            self.tracked[job.id] = t
            self.pending.sent([job.id], job.array)  # counts against its array's limit

    @property
    def accounting(self) -> bool | None:
        """Whether slurmdbd runs (None: not yet known)."""
        return None if self.settings is None else self.settings.accounting

    def _limit_of(self, array: int) -> int | None:
        """An array's limit of elements at once (``%N``), which Slurm applies."""
        lim = self._state().queue.limits.get(array) if self._host is not None else None
        return None if lim is None else lim[0]

    def take(self, st: State) -> None:
        """Act on the turn's spawns, kills, holds and releases (called once it is committed)."""
        if st.write_error:
            # Not on disk that these jobs left the queue: a crash now must not find them
            # submitted. They go once a commit succeeds.
            self._deferred += st.to_spawn
        else:
            for launch in [*self._deferred, *st.to_spawn]:
                self._hand(st, launch)
            self._deferred.clear()
        st.to_spawn.clear()
        for job in st.to_kill:
            self._kill(st, job)
        st.to_kill.clear()
        for job, hold in st.to_hold:
            if job.backend_id is not None and job.shown is not None:
                self._holds[job.backend_id] = hold
                self._act_after = 0.0
            elif hold and job.state is R and (job.id in self.pending or job.id in self._absent):
                self._take_back(st, job)
        st.to_hold.clear()
        self._work.set()
        self._nudge.set()

    def _hand(self, st: State, launch: JobLaunch) -> None:
        job = st.queue.get(launch.jobid)
        if job is None or job.state is not R:
            return
        t = self.tracked[job.id] = self._tracked(job)
        job.shown, job.start_time, job.reason = Q, None, t.retried
        st.touched[job.id] = job
        self.jobs[job.id] = job
        self._launches[job.id] = launch
        self.pending.add(job.id, job.array, alone=t.attempt > 1)  # a retry goes alone

    def _take_back(self, st: State, job: Job) -> None:
        """HOLD of a job handed over but provably not in Slurm (waiting for sbatch, or for
        its next try): it goes back to sjq's queue, held, as if it had never been handed
        over; RELEASE hands it over again."""
        self._forget(job.id)
        job.shown, job.reason = None, ""
        now = time.time()
        st.queue.requeue(job, now)
        st.queue.hold(job.id, now)
        st.touched[job.id] = job
        self._host_turn()

    def _kill(self, st: State, job: Job) -> None:
        t = self.tracked.get(job.id)
        if t is not None and t.slurm_id is not None:
            self._cancel.add(t.slurm_id)
            self._act_after = 0.0
        elif t is None or job.id in self.pending or job.id in self._absent:
            # Never submitted: nothing in Slurm to cancel.
            self._forget(job.id)
            self._end(st, job, K, "killed by request", time.time())
        # else sbatch is under way or its outcome unknown: cancelled once its id is known

    def running(self, job: Job) -> bool:
        """Whether ``job`` runs in Slurm (not: waits there, or is being submitted)."""
        t = self.tracked.get(job.id)
        return t is not None and t.shown is R

    # -- the tasks -----------------------------------------------------------------------

    async def run(self, host: Host) -> None:
        """Submit, follow, cancel, hold and release until cancelled."""
        self._host = host
        self._work.set()
        try:
            await asyncio.to_thread(wait_for_orphans, self.prefix, self.cfg.slurm_timeout + 5)
            async with asyncio.TaskGroup() as tg:
                for _ in range(SUBMITTERS):
                    tg.create_task(self._submitter())
                tg.create_task(self._poller())
        finally:
            counts = ", ".join(f"{c} {n}" for c, n in sorted(self.slurm.counts.items()))
            log.info("Slurm commands run: %s", counts or "none")

    async def _poller(self) -> None:
        while True:
            await self._sleep()
            changed = False
            try:
                if self._cancel or self._holds:
                    changed = await self._act()
                if self.tracked:
                    changed |= await self._poll()
                if self._measure:
                    await self._sacct_measure()
            except Exception:  # a bug must delay following jobs, never stop the daemon
                log.exception("following jobs in Slurm failed; trying again")
            self.interval = next_interval(
                self.interval, changed, self.cfg.slurm_poll, self.cfg.slurm_poll_max
            )
            self._deadline = time.monotonic() + self.interval

    def _action_due(self) -> bool:
        return bool(self._cancel or self._holds) and time.monotonic() >= self._act_after

    async def _sleep(self) -> None:
        """Until the next status query is due (never, with nothing to follow and no ended
        job's usage to ask sacct for), or a kill, hold or release is waiting to be sent."""
        while not self._action_due():
            left = None
            if self.tracked or self._measure:
                left = self._deadline - time.monotonic()
                if left <= 0:
                    return
            if self._cancel or self._holds:
                left = min(left or 1e9, self._act_after - time.monotonic())
            self._nudge.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await self._nudge.wait()

    def _soon(self) -> None:
        """Something is about to change: the next query within the shortest interval."""
        self.interval = self.cfg.slurm_poll
        self._deadline = min(self._deadline, time.monotonic() + self.cfg.slurm_poll)
        self._nudge.set()

    async def _poll(self) -> bool:
        """One status query for every job; whether anything changed."""
        asked = time.time()
        try:
            answer = await asyncio.to_thread(self.slurm.squeue)
            if self.settings is None:
                await self._cluster()
        except SlurmError as e:
            if not self.unreachable:
                log.warning("Slurm cannot be asked (%s); trying again", e)
            self.unreachable = str(e)
            for jobid, t in self.tracked.items():
                if t.slurm_id is None:
                    self._note(self.jobs[jobid], f"waiting for Slurm: {e}")
            self.interval = min(self.cfg.slurm_poll_max, self.interval * 2)
            return False
        if self.unreachable:
            log.info("Slurm answers again")
            self.unreachable = ""
        for junk in answer.junk[:3]:
            log.warning("squeue printed a record sjq cannot read: %r", junk[:200])
        events = observe(self.tracked, answer.jobs, self.ident, asked)
        missing = [e for e in events if isinstance(e, Missing)]
        if missing:
            events += await self._missing(missing, asked)
        self._answered = asked
        for ev in events:
            self._apply(ev)
        self._resubmit(asked)
        if events:
            self._host_turn()
        return any(not isinstance(e, Missing) for e in events)

    async def _missing(self, missing: list[Missing], asked: float) -> list[Event]:
        """Jobs slurmctld has forgotten: sacct tells how they ended, if it runs."""
        if not self.accounting:
            return [self._lost(m, asked) for m in missing]
        try:
            answer = await asyncio.to_thread(self.slurm.sacct, [m.slurm_id for m in missing])
        except SlurmError as e:
            log.warning("sacct failed (%s); asking again at the next poll", e)
            return []
        records = [r for r in answer.jobs if settled(r)]
        later = {r.key for r in answer.jobs} - {r.key for r in records}  # asked again
        events = observe(self.tracked, records, self.ident, asked, complete=False)
        told = {e.jobid for e in events}
        lost = [m for m in missing if m.jobid not in told and m.slurm_id not in later]
        return events + [self._lost(m, asked) for m in lost]

    def _lost(self, m: Missing, asked: float) -> Ended:
        t = self.tracked.get(m.jobid)
        age = self.settings.min_job_age if self.settings is not None else 300.0
        if t is not None and t.shown is not R and asked - self._answered < age:
            # Listed as waiting by the last answer, and not by this one: a job that had run
            # since would be listed for MinJobAge after its end. A task of a Slurm array
            # cancelled while pending leaves squeue at once.
            rec = SlurmJob(key=m.slurm_id, job_id=None, state="CANCELLED")
            return Ended(m.jobid, K, "cancelled in Slurm before it started", rec)
        why = "how it ended is lost: Slurm no longer lists job " + m.slurm_id
        rec = SlurmJob(key=m.slurm_id, job_id=None, state="UNKNOWN")
        return Ended(m.jobid, F, why, rec)

    async def _act(self) -> bool:
        """scancel, scontrol uhold/release: one command each for all the jobs concerned."""
        changed = False
        self._act_after = time.monotonic() + self.interval  # if a command fails
        if self._cancel:
            ids = sorted(self._cancel)
            try:
                await asyncio.to_thread(self.slurm.cancel, ids)
                self._cancel.difference_update(ids)
                changed = True
            except SlurmError as e:
                log.warning("scancel %s failed (%s); trying again", ",".join(ids), e)
        for hold in (True, False):
            ids = sorted(i for i, h in self._holds.items() if h is hold)
            if not ids:
                continue
            call = self.slurm.hold if hold else self.slurm.release
            try:
                await asyncio.to_thread(call, ids)
            except SlurmRejected as e:  # it started meanwhile: a running job is not held
                log.info("scontrol %s %s: %s", "uhold" if hold else "release", ids, e)
            except SlurmError as e:
                log.warning("scontrol failed (%s); trying again", e)
                continue
            for i in ids:
                if self._holds.get(i) is hold:
                    del self._holds[i]
            changed = True
        return changed

    async def _sacct_measure(self) -> None:
        """CPU time and peak memory of ended jobs, which only slurmdbd knows."""
        now = time.time()
        if not self.accounting:
            self._measure.clear()
            return
        ids = [j.backend_id for j, _ in self._measure.values() if j.backend_id]
        try:
            answer = await asyncio.to_thread(self.slurm.sacct, ids)
        except SlurmError:
            return
        by_id = {r.key: r for r in answer.jobs}
        st = self._state()
        for jobid, (job, since) in list(self._measure.items()):
            rec = by_id.get(job.backend_id or "")
            if rec is not None and has_ended(rec):
                before = (job.cpu_user, job.maxrss, job.reason)
                job.cpu_user = rec.cpu_time
                job.maxrss = rec.maxrss
                if rec.cancelled_by is not None and job.state is K and not job.killing:
                    job.reason = f"cancelled in Slurm by uid {rec.cancelled_by}"
                if (job.cpu_user, job.maxrss, job.reason) != before:
                    st.touched[jobid] = job
                if usage_recorded(rec):
                    del self._measure[jobid]  # else its steps' peak may come at the next poll
            if jobid in self._measure and now - since > MEASURE_FOR:
                del self._measure[jobid]
        self._host_turn()

    # -- applying what Slurm said ---------------------------------------------------------

    def _apply(self, ev: Event) -> None:
        job = self.jobs.get(ev.jobid)
        t = self.tracked.get(ev.jobid)
        retried = "" if t is None else t.retried  # the reason while Slurm gives none
        apply(self.tracked, ev)
        if job is None:
            return
        st = self._state()
        match ev:
            case Found(_, slurm_id):
                log.info("job %d: found in Slurm as %s", job.id, slurm_id)
                self._recorded(job, slurm_id)
            case Absent():
                # Provably not in Slurm: tracked afresh, submitted again after its backoff.
                self.tracked[job.id] = Tracked(job.id, attempt=t.attempt if t else 1,
                                               retried=retried)  # fmt: skip
                self._absent.add(job.id)
                self.pending.gone(job.id)
                self._work.set()
                if job.killing:
                    self._forget(job.id)
                    self._end(st, job, K, "killed by request", time.time())
            case Waiting(_, shown, reason):
                job.shown = shown
                job.reason = f"Slurm: {reason}" if reason else retried
                st.touched[job.id] = job
            case Began(_, start, node):
                job.shown, job.reason = None, retried
                job.node = node or job.node
                job.start_time = start or time.time()
                st.touched[job.id] = job
                st.queue.began(job.id, time.time())  # its after conditions hold now
            case Ended(_, state, reason, rec):
                job.exit_code, job.signal = rec.exit_code, rec.signal
                job.node = rec.node or job.node
                if job.start_time is None:
                    job.start_time = rec.start
                job.cpu_user, job.maxrss = rec.cpu_time, rec.maxrss
                job.measured_by = "slurm"
                self._forget(job.id)
                if rec.source == "squeue" and rec.job_id is not None and state is not E:
                    self._measure[job.id] = (job, time.time())
                self._end(st, job, state, reason, rec.end or time.time())
            case Missing():
                pass

    def _recorded(self, job: Job, slurm_id: str) -> None:
        """sbatch's answer, or a tag found: the Slurm id goes into the job's record."""
        t = self.tracked.get(job.id)
        if t is not None and t.slurm_id != slurm_id:
            t.slurm_id, t.uncertain_since, t.known_since = slurm_id, None, time.time()
        self._launches.pop(job.id, None)
        self._tries.pop(job.id, None)
        self._retry_at.pop(job.id, None)
        job.backend_id = slurm_id
        if job.reason.startswith("waiting for Slurm"):
            job.reason = "" if t is None else t.retried
        self._state().touched[job.id] = job
        if job.killing:
            self._cancel.add(slurm_id)
        self._soon()
        self._host_turn()

    def _note(self, job: Job, reason: str) -> None:
        if job.reason != reason and job.state is R:
            job.reason = reason
            self._state().touched[job.id] = job
            self._host_turn()

    def _end(self, st: State, job: Job, state: JobState, reason: str, when: float) -> None:
        if job.state is not R:
            return
        if job.killing:
            state = K
        else:
            job.reason = reason
        job.shown = None
        again = retry_of(job, reason, self.cfg.maxmem) if state is F else None
        if again is not None:  # RETRY: it waits in sjq's queue for its next start (``_hand``)
            log.info("job %d: %s", job.id, again.reason)
            self._measure.pop(job.id, None)
            st.queue.retry(job, when, again.mem)  # (its Slurm id and node: the next one's)
            job.reason = again.reason
        else:
            assert state in TERMINAL
            st.queue.finish(job, state, when)
        self._host_turn()

    def _forget(self, jobid: int) -> None:
        self.pending.discard(jobid)
        self.pending.gone(jobid)
        self._work.set()  # an array's elements may have room now
        self.tracked.pop(jobid, None)
        self._absent.discard(jobid)
        self.jobs.pop(jobid, None)
        self._launches.pop(jobid, None)
        self._tries.pop(jobid, None)
        self._retry_at.pop(jobid, None)

    def _state(self) -> State:
        assert self._host is not None
        return self._host.state

    def _host_turn(self) -> None:
        if self._host is not None:
            self._host.want_turn()
