"""Jobs of an earlier daemon that were still running when this one started (re-adopted by
recovery): each is watched with a pidfd until it ends, its end read from its old keeper's
journal, and a KILL reaches it through its process group. A job whose keeper is gone too
(killed) is found in its cgroup again (`contain`), so that it stays held (an OOM kill of a
process of it stops all of it) and is measured at its end, though its exit status is lost.

Process code, so it lives with the keeper; it runs in the daemon, driven by its event loop
through the small `Loop` interface (no asyncio import here).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from sjq.contain.account import out_of_memory_reason, usage
from sjq.contain.cgroup import Backend, Group
from sjq.jobs import ExitRecord, Job
from sjq.keeper.journal import JournalState
from sjq.keeper.procs import signal_group

__all__ = ["Adoption", "Loop", "Orphans", "contain"]

log = logging.getLogger("sjq.keeper")

RESOLVE_EVERY = 0.005  # seconds between looks for an ended job's record in its journal
RESOLVE_TRIES = 2000  # ... for up to 10 s: the old keeper reaps within milliseconds


@dataclass(slots=True)
class Adoption:
    """A job still running under a previous daemon's keeper (or orphaned)."""

    job: Job
    journal: JournalState | None  # None: no keeper records it any more; status will be lost
    group: Group | None = None  # its cgroup, when its keeper is gone and it has one
    oom: bool = False  # the kernel found it over its limit since it was adopted


def contain(adopted: list[Adoption], backend: Backend | None) -> None:
    """Find the cgroup of each re-adopted job whose keeper is gone, from the state its
    keeper journaled (``Start.group``)."""
    if backend is None:
        return
    for a in adopted:
        j = a.journal
        s = j.started.get(a.job.id) if j is not None else None
        if j is None or s is None or not s.group or a.job.pid is None or j.keeper_alive():
            continue
        a.group = backend.group_from_state(a.job.pid, s.group)
        if a.group is not None:
            log.info("job %d: its keeper is gone; held in %s again", a.job.id, a.group.path)


class _Handle(Protocol):
    def cancel(self) -> None: ...


class Loop(Protocol):
    """What of an event loop the watcher needs (asyncio's loop has it)."""

    def add_reader(self, fd: int, callback: Callable[..., Any], *args: Any) -> Any: ...
    def remove_reader(self, fd: int) -> Any: ...
    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> _Handle: ...


class Orphans:
    """The re-adopted jobs. ``on_exit(record)``: a job ended with this record;
    ``on_lost(job, reason)``: a job ended and nobody recorded how; ``on_journal_done(path)``:
    nothing more is needed from this journal once what it said is committed."""

    def __init__(
        self,
        adopted: list[Adoption],
        *,
        on_exit: Callable[[ExitRecord], None],
        on_lost: Callable[[Job, str], None],
        on_journal_done: Callable[[str], None],
    ) -> None:
        self.jobs = {a.job.id: a for a in adopted}
        self._on_exit = on_exit
        self._on_lost = on_lost
        self._on_journal_done = on_journal_done
        self._pidfds: dict[int, int] = {}
        self._oomfds: dict[int, int] = {}  # job -> its group's OOM eventfd, being read
        self._timers: dict[int, _Handle] = {}  # job -> its pending look or SIGKILL
        self._loop: Loop | None = None

    def __bool__(self) -> bool:
        return bool(self.jobs)

    def __contains__(self, jobid: int) -> bool:
        return jobid in self.jobs

    def start(self, loop: Loop) -> None:
        """Watch every job (call once the event loop runs)."""
        self._loop = loop
        for a in list(self.jobs.values()):
            assert a.job.pid is not None
            try:
                fd = os.pidfd_open(a.job.pid)
            except OSError:
                self._resolve(a.job.id, 0)  # gone already
                continue
            self._pidfds[a.job.id] = fd
            loop.add_reader(fd, self._ended, a.job.id)
            if a.group is not None:
                a.group.arm_oom_event()
                if a.group.oom_fd is not None:
                    self._oomfds[a.job.id] = a.group.oom_fd
                    loop.add_reader(a.group.oom_fd, self._out_of_memory, a.job.id)

    def kill(self, jobid: int, grace: float) -> None:
        """SIGTERM to the job's group (and CONT, so a stopped job sees it), SIGKILL after
        ``grace`` seconds."""
        a = self.jobs.get(jobid)
        fd = self._pidfds.get(jobid)
        if a is None or fd is None or a.job.pid is None or self._loop is None:
            return
        pid = a.job.pid
        with contextlib.suppress(OSError):
            signal.pidfd_send_signal(fd, signal.SIGTERM)
        signal_group(pid, signal.SIGTERM)
        signal_group(pid, signal.SIGCONT)

        def escalate() -> None:
            self._timers.pop(jobid, None)
            if jobid in self._pidfds:  # the group id is still its: it has not been reaped
                signal_group(pid, signal.SIGKILL)

        self._set_timer(jobid, self._loop.call_later(grace, escalate))

    def close(self) -> None:
        """Stop watching (the daemon is stopping); cancel every timer."""
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        for fd in self._pidfds.values():
            if self._loop is not None:
                self._loop.remove_reader(fd)
            os.close(fd)
        self._pidfds.clear()
        for jobid in list(self._oomfds):
            self._stop_oom(jobid)
        for a in self.jobs.values():
            if a.group is not None:
                a.group.close()

    # -- internals --

    def _set_timer(self, jobid: int, handle: _Handle) -> None:
        old = self._timers.pop(jobid, None)
        if old is not None:
            old.cancel()
        self._timers[jobid] = handle

    def _out_of_memory(self, jobid: int) -> None:
        """The kernel OOM-kills a process of a job whose keeper is gone: stop all of it."""
        a = self.jobs.get(jobid)
        self._stop_oom(jobid)
        if a is None or a.group is None:
            return
        a.group.oom_fired()
        a.oom = True
        log.info("job %d is over its memory (MEM): stopped", jobid)
        a.group.kill()

    def _stop_oom(self, jobid: int) -> None:
        fd = self._oomfds.pop(jobid, None)
        if fd is not None and self._loop is not None:
            self._loop.remove_reader(fd)

    def _ended(self, jobid: int) -> None:
        fd = self._pidfds.pop(jobid, None)
        if fd is not None:
            if self._loop is not None:
                self._loop.remove_reader(fd)
            os.close(fd)
        self._resolve(jobid, 0)

    def _resolve(self, jobid: int, tries: int) -> None:
        self._timers.pop(jobid, None)
        a = self.jobs.get(jobid)
        if a is None:
            return
        j = a.journal
        if j is not None:
            # Liveness first, then the journal: a keeper that was already gone before the
            # read has written all it ever will. (The other order loses an exit written
            # by a keeper that reaped its last job and ended between the two.)
            keeper_alive = j.keeper_alive()
            j.read()
            rec = j.exited.get(jobid)
            if rec is not None:
                del self.jobs[jobid]
                self._on_exit(rec)
                self._forget(j)
                return
            if keeper_alive and tries < RESOLVE_TRIES and self._loop is not None:
                handle = self._loop.call_later(RESOLVE_EVERY, self._resolve, jobid, tries + 1)
                self._set_timer(jobid, handle)
                return
        del self.jobs[jobid]
        log.warning(
            "job %d ended but %s holds no exit record for it (keeper %s, alive: %s, tries %d)",
            jobid,
            j.path if j is not None else "no journal",
            j.keeper_pid if j is not None else "-",
            j.keeper_alive() if j is not None else "-",
            tries,
        )
        if a.group is not None:
            self._on_exit(self._measured(a))
        else:
            self._on_lost(a.job, "exit status lost: no keeper was left to record it")
        if j is not None:
            self._forget(j)

    def _measured(self, a: Adoption) -> ExitRecord:
        """The end of a job whose keeper is gone, as its cgroup measured it (its exit status
        cannot be known)."""
        assert a.group is not None
        assert a.job.pid is not None
        self._stop_oom(a.job.id)
        a.group.kill()  # what it left behind
        u = usage(
            judge=None,
            group=a.group.finish(),
            ru_utime=0.0,
            ru_stime=0.0,
            ru_maxrss_kb=0,
            keeper_peak=0,
        )
        a.group.remove()  # (kept if processes are still exiting; a later daemon sweeps it)
        reason = "exit status lost: no keeper was left to record it"
        if a.oom or u.oom:
            reason = out_of_memory_reason(a.job.mem, u.maxrss) + "; its exit status was lost"
        return ExitRecord(
            a.job.id, a.job.pid, None, None, time.time(), u.cpu_user, u.cpu_sys, u.maxrss,
            reason, u.measured_by,
        )  # fmt: skip

    def _forget(self, j: JournalState) -> None:
        if any(a.journal is j for a in self.jobs.values()) or j.keeper_alive():
            return
        self._on_journal_done(j.path)  # deleted after the commit that records its last exit
