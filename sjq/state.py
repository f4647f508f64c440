"""The daemon's state and its request handlers: plain functions of (state, request) -> reply.

No asyncio and no process calls: a handler changes the queue and the database transaction
of this turn, and leaves what must happen outside (spawns, signals, deferred replies) in
lists that the daemon carries out after the turn's commit.
"""

from __future__ import annotations

import json
import os
import signal
from typing import Literal, assert_never

from sjq import __version__
from sjq.access import PathChecks
from sjq.admission import admit
from sjq.config import Config
from sjq.devices import Devices, Handover
from sjq.jobs import TERMINAL, Change, E, ExitRecord, F, Job, JobLaunch, JobState, K, R, S
from sjq.launch import default_environment, job_launch
from sjq.pause import Pause as PauseFlag
from sjq.protocol import (
    Data,
    Error,
    Exit,
    Hold,
    Info,
    Kill,
    Ok,
    Pause,
    Ping,
    QueueInfo,
    Release,
    Request,
    Resume,
    Shutdown,
    Status,
    Stop,
    Submit,
    Wait,
)
from sjq.replies import Accepted, Peer, Waiter
from sjq.retry import retry_of
from sjq.scheduler import Queue
from sjq.store import Store, WriteFailed
from sjq.waiting import reservation_of, waiting_for

__all__ = ["State"]


class State:
    """Everything the daemon knows, and the rules for changing it."""

    def __init__(
        self, cfg: Config, store: Store, now: float, devices: Devices | None = None
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.devices = devices or Devices()  # which CPUs and GPUs running jobs hold
        # Under Slurm every job whose dependencies allow goes to Slurm, which does the placing.
        slurm = cfg.backend == "slurm"
        self.queue = (
            Queue(1 << 62, None, maxgpus=1 << 62, handover=True)
            if slurm
            else Queue(
                cfg.maxprocs,
                cfg.maxmem,
                maxgpus=self.devices.gpu_count,
                maxbypass=cfg.maxbypass,
                grace=cfg.killgrace,
            )
        )
        self.next_id = store.next_id()
        self.default_env = default_environment()
        self.is_root = os.geteuid() == 0
        self.enforce = cfg.enforce != "none"
        self.waiters: dict[int, list[Waiter]] = {}
        self.to_spawn: list[JobLaunch] = []
        self.to_kill: list[Job] = []
        self.to_hold: list[tuple[Job, bool]] = []  # jobs in Slurm to hold (True) or release
        self.ready_waiters: list[Waiter] = []  # WAITs completed this turn, answered after commit
        self.accepting = True
        # SHUTDOWN (running jobs are killed) or STOP (they carry on), for the daemon to act on
        self.stop_requested: Literal["shutdown", "stop"] | None = None
        # What is not yet committed, so that a failed write or commit (a full disk) can be
        # undone in memory and written again: SQLite may roll the whole transaction back.
        self.committed_next_id = self.next_id
        # submitted since the last commit: the jobs of each SUBMIT (an array's are many)
        self._new: list[tuple[list[Job], Accepted]] = []
        # Jobs whose row is out of date other than by a state change (a pid learnt, a KILL
        # under way); state changes are the queue's ``changes``.
        self.touched: dict[int, Job] = {}
        self._written_touched: dict[int, Job] = {}  # written into the open transaction
        self._written_changes: list[Change] = []
        self._purged: dict[JobState, int] = {}
        self.write_error = ""  # why the last write failed, until a commit succeeds
        self.pause = PauseFlag(store.paused_since())
        self.path_checks = PathChecks()  # SUBMIT's answers about directories, for a turn
        for state, n in store.state_counts().items():
            if state in TERMINAL:
                self.queue.counts[state] += n
        self.now = now

    @property
    def socket(self) -> str:
        return self.cfg.socket

    @property
    def busy(self) -> bool:
        """Whether something runs or could start (a paused queue's jobs cannot: like held
        ones, they wait in the database for the next start, which keeps the pause)."""
        c = self.queue.counts
        return bool(c[R] or (c[JobState.QUEUED] and not self.pause.paused))

    # -- dispatch ----------------------------------------------------------------------

    def handle(self, req: Request, peer: Peer) -> Ok | Data | Error | Waiter | Accepted:
        """Answer one request (``self.now`` is the time it is handled). EXIT, SHUTDOWN and
        STOP close the connection after their reply; the last two also ask the daemon to
        stop (``stop_requested``)."""
        match req:
            case Submit():
                return self.submit(req, peer)
            case Ping():
                return self.ping()
            case Status(jobid):
                return self.status(jobid)
            case Kill(jobid):
                self.kill(jobid)
                return Ok()
            case Release(jobid):
                if not self.queue.release(jobid, self.now):
                    self._backend_hold(jobid, False)
                return Ok()
            case Hold(jobid):
                if not self.queue.hold(jobid, self.now):
                    self._backend_hold(jobid, True)
                return Ok()
            case Info(ids):
                return self.info(ids)
            case Wait(ids):
                return self.wait(ids)
            case Exit():
                return Ok("BYE")
            case Shutdown():
                self.stop_requested = "shutdown"
                return Ok()
            case Stop():
                self.stop_requested = "stop"
                return Ok()
            case Pause():
                self.pause.set(True, self.now)
                return Ok()
            case Resume():
                self.pause.set(False, self.now)
                return Ok()
            case QueueInfo():
                return self.queue_info()
            case _:
                assert_never(req)

    # -- handlers ------------------------------------------------------------------------

    def ping(self) -> Ok:
        counts = self.queue.counts
        return Ok(" ".join(f"{s.value}:{counts[s]}" for s in sorted(counts) if counts[s]))

    def queue_info(self) -> Data:
        q = self.queue
        doc = {
            "paused": self.pause.paused,
            "paused_since": self.pause.since,
            "procs": q.maxprocs,
            "procs_used": q.used_procs,
            "mem": q.maxmem,
            "mem_used": q.used_mem,
            "version": __version__,
        }
        return Data((json.dumps(doc) + "\n").encode())

    def submit(self, req: Submit, peer: Peer) -> Accepted | Error:
        return admit(self, req, peer)

    def accepted(self, jobs: list[Job], reply: Accepted) -> None:
        """Jobs recorded in the open transaction, whose SUBMIT waits for the commit."""
        self._new.append((jobs, reply))

    def kill(self, jobid: int) -> None:
        job = self.queue.kill(jobid, self.now)
        if job is not None:  # running: signalled now, K once its end is reported
            self.touched[job.id] = job
            self.to_kill.append(job)

    def _backend_hold(self, jobid: int, hold: bool) -> None:
        """HOLD/RELEASE of a job handed to Slurm: scontrol uhold/release once it is there;
        held before it was submitted, the back end gives it back to sjq's queue, held."""
        job = self.queue.get(jobid)
        if job is not None and job.state is R and self.cfg.backend == "slurm":
            self.to_hold.append((job, hold))

    def status(self, jobid: int | None) -> Data:
        self.write_changes()
        rows = self.store.status_lines(jobid)
        return Data("".join(f"{i}\t{n}\t{s}\t{d}\r\n" for i, n, s, d in rows).encode())

    def info(self, ids: tuple[int, ...]) -> Data:
        self.write_changes()
        rows = self.store.info(ids)
        q, paused = self.queue, self.pause.paused
        for r in rows:
            job = q.get(r["id"])
            if job is None or job.state is R:
                r["waiting_for"], r["reservation"] = "", None
            else:
                r["waiting_for"] = waiting_for(q, job, paused=paused, now=self.now)
                r["reservation"] = reservation_of(q, job)
        return Data("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode())

    def wait(self, ids: tuple[int, ...]) -> Ok | Error | Waiter:
        self.write_changes()
        # Ends not yet committed: reported only once they are on disk.
        unsaved = {c.job.id: c.state for c in self._written_changes}
        unsaved.update((c.job.id, c.state) for c in self.queue.changes)
        letters: dict[int, str] = {}
        pending: set[int] = set()
        late = False
        for i in ids:
            if self.queue.get(i) is not None:
                pending.add(i)
                continue
            st = unsaved.get(i)
            if st is not None:
                late = True
            else:
                st = self.store.state_of(i)
                if st is None:
                    return Error(f"unknown job {i}")
            letters[i] = st.value
        waiter = Waiter(ids, letters, pending=pending)
        if not pending:
            if late:
                self.ready_waiters.append(waiter)  # answered after the next commit
                return waiter
            return waiter.reply()
        for i in pending:
            self.waiters.setdefault(i, []).append(waiter)
        return waiter

    def drop_waiter(self, waiter: Waiter) -> None:
        for i in waiter.pending:
            lst = self.waiters.get(i)
            if lst and waiter in lst:
                lst.remove(waiter)
                if not lst:
                    del self.waiters[i]

    # -- keeper events ---------------------------------------------------------------------

    def started(self, jobid: int, pid: int, pid_start: int | None, now: float) -> None:
        """A keeper says a job's process started."""
        job = self.queue.get(jobid)
        if job is not None and job.state is R:
            self.record_start(job, pid, pid_start, now)

    def record_start(self, job: Job, pid: int, pid_start: int | None, now: float) -> None:
        job.pid, job.pid_start = pid, pid_start or 0
        if job.start_time is None:
            job.start_time = now
        self.touched[job.id] = job

    def found_started(self, job: Job, now: float) -> None:
        """Recovery: a job recorded as waiting that a keeper's journal says it started (its
        daemon died before recording that). Before it joins the queue."""
        if job.state is not JobState.QUEUED:
            job.set_state(JobState.QUEUED)  # held or waiting when last recorded
        job.set_state(R)
        job.attempts += 1
        self.queue.changes.append(Change(job, R, now))

    def exited(self, rec: ExitRecord) -> None:
        self.devices.release(rec.jobid)  # also a job killed as it started, no longer known
        job = self.queue.get(rec.jobid)
        if job is None or job.state is not R:
            return
        job.exit_code, job.signal = rec.exit_code, rec.signal
        if job.pid is None:
            job.pid = rec.pid
        job.cpu_user, job.cpu_sys, job.maxrss = rec.cpu_user, rec.cpu_sys, rec.maxrss
        job.measured_by = rec.measured_by or None
        if job.killing:
            state = K
        elif rec.reason:
            state, job.reason = F, rec.reason
        elif rec.exit_code == 0:
            state, job.reason = S, ""  # (an earlier attempt's failure is no reason now)
        else:
            state = F
            job.reason = (
                f"exit status {rec.exit_code}"
                if rec.exit_code is not None
                else f"killed by signal {_signame(rec.signal)}"
            )
        again = retry_of(job, job.reason, self.cfg.maxmem) if state is F else None
        if again is not None:  # RETRY: back in the queue, its id and its place kept
            self.queue.retry(job, rec.time, again.mem)
            job.reason = again.reason
            return
        self.queue.finish(job, state, rec.time)

    def failed_to_start(self, jobid: int, reason: str, now: float) -> None:
        self.devices.release(jobid)
        job = self.queue.get(jobid)
        if job is None or job.state is not R:
            return
        job.reason = reason
        self.queue.finish(job, E, now)

    def armed_start(self, jobid: int, now: float, devices: Handover) -> Job | None:
        """A keeper started an armed job as a running one ended (from arm token, on CPUs and
        GPUs: ``devices``): it runs now. None if the job is gone (killed meanwhile) or cannot
        run: its process must be killed (its devices are its until its end is reported)."""
        cpus, gpus = self.devices.handed_over(jobid, *devices)
        job = self.queue.get(jobid)
        if job is None:
            return None
        job.cpu_ids, job.gpu_ids = cpus, gpus
        if job.state is JobState.HELD:
            self.queue.release(jobid, now)  # held too late: it has started
        if job.state is not JobState.QUEUED:
            return None
        self.queue.start_armed(job, now)
        return job

    def kill_running(self, job: Job, reason: str) -> None:
        """Kill a running job for the daemon's own reasons (a shutdown)."""
        self.queue.kill(job.id, self.now, reason=reason)
        self.touched[job.id] = job
        self.to_kill.append(job)

    def lost(self, job: Job, reason: str, now: float) -> None:
        """A running job whose exit status cannot be known any more."""
        self.devices.release(job.id)
        job.reason = reason
        self.queue.finish(job, F, now)

    # -- the end of a turn ---------------------------------------------------------------

    def schedule(self) -> None:
        """Start what fits, turning each started job into a spawn request."""
        if not self.accepting or self.pause.paused:
            return
        for job in self.queue.schedule(self.now):
            self.devices.take(job)
            self.to_spawn.append(self.spawn_request(job))

    def spawn_request(self, job: Job) -> JobLaunch:
        """What a keeper needs to start ``job``, read back from its record."""
        return job_launch(job, self.store.spec(job.id), self)

    def write_changes(self) -> bool:
        """Write the changes made since the last call into the open transaction, so that
        what the database says (a parent's final state, a STATUS) is never behind what
        memory says; WAITs whose jobs have all ended are ready for the next commit. Whether
        the write worked (False: it failed, see ``write_failed``)."""
        self.path_checks.clear()  # the turn is over: ask the file system afresh
        q = self.queue
        if self.pause.unsaved:
            try:
                self.pause.write(self.store)
            except WriteFailed as e:
                self.write_failed(e.reason)
                return False
        if not (self.touched or q.changes):
            if self.write_error:  # nothing to write: see whether there is room again
                try:
                    self.store.probe()
                except WriteFailed as e:
                    self.write_failed(e.reason)
                    return False
            return True
        self._complete_waits(q.changes)
        try:
            rows = self.touched
            rows.update((c.job.id, c.job) for c in q.changes)
            self.store.write(rows.values(), q.changes)
        except WriteFailed as e:
            self.write_failed(e.reason)
            return False
        self._written_touched.update(self.touched)
        self._written_changes += q.changes
        self.touched = {}
        q.changes.clear()
        return True

    def _complete_waits(self, changes: list[Change]) -> None:
        for ch in changes:
            if ch.state in TERMINAL:
                for w in self.waiters.pop(ch.job.id, ()):
                    w.letters[ch.job.id] = ch.state.value
                    w.pending.discard(ch.job.id)
                    if not w.pending:
                        self.ready_waiters.append(w)

    # -- durability: what the last commit holds -------------------------------------------

    def purge(self, ended_before: float, keep_count: int | None, limit: int) -> bool:
        """Forget finished jobs past the history limits, a batch at a time; whether any went."""
        try:
            gone = self.store.purge(ended_before, keep_count, limit)
        except WriteFailed as e:
            self.write_failed(e.reason)
            return False
        for letter, n in gone.items():
            state = JobState(letter)
            self.queue.forget_counts(state, n)
            self._purged[state] = self._purged.get(state, 0) + n
        return bool(gone)

    def committed(self) -> None:
        """The open transaction is on disk: everything so far is durable."""
        for _, accepted in self._new:
            accepted.durable = True
        self._new.clear()
        self._written_touched.clear()
        self._written_changes.clear()
        self._purged.clear()
        self.pause.committed()
        self.committed_next_id = self.next_id
        self.write_error = ""

    def write_failed(self, reason: str) -> None:
        """A write or a commit failed and the database holds only what the last commit wrote.
        The jobs submitted since are forgotten (their SUBMITs get an ERROR, their ids are
        handed out again: nobody was told them); every other change is written again by the
        next commit that succeeds."""
        self.store.rollback()
        self.write_error = reason
        self.pause.failed()
        q = self.queue
        for jobid, job in self._written_touched.items():
            self.touched.setdefault(jobid, job)
        q.changes[:0] = self._written_changes
        self._written_touched.clear()
        self._written_changes.clear()
        for state, n in self._purged.items():
            q.counts[state] += n  # the purge is undone on disk too; it runs again later
        self._purged.clear()
        if not self._new:
            return
        dropped = {job.id for jobs, _ in self._new for job in jobs}
        for _, accepted in self._new:
            accepted.error = f"cannot record the job: {reason}"
        q.drop(job for jobs, _ in self._new for job in jobs)
        self._new.clear()
        for jobid in dropped:
            self.touched.pop(jobid, None)
        q.changes[:] = [c for c in q.changes if c.job.id not in dropped]
        self.to_spawn[:] = [r for r in self.to_spawn if r.jobid not in dropped]
        self.to_kill[:] = [j for j in self.to_kill if j.id not in dropped]
        self.to_hold[:] = [h for h in self.to_hold if h[0].id not in dropped]
        for jobid in dropped:
            for w in self.waiters.pop(jobid, ()):
                w.error = f"unknown job {jobid}"
                self.drop_waiter(w)
                w.pending.clear()
                if w not in self.ready_waiters:
                    self.ready_waiters.append(w)
        self.next_id = self.committed_next_id


def _signame(sig: int | None) -> str:
    try:
        return signal.Signals(sig).name if sig is not None else "?"
    except ValueError:
        return str(sig)
