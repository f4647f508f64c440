"""The keeper process: the parent of every job. Forked from the daemon before its event
loop starts (`sjq.keeper.handle`); receives `Spawn`/`Kill`/`Arm`/`Rotate`, starts and reaps
jobs (contained and measured by its `Guard`), journals every start and end before it tells
the daemon (`Started`/`Exited`/`SpawnFailed`/`Rotated`), and starts armed jobs by itself the
moment a running one ends (docs/architecture.md, "Arming").

Imports nothing of asyncio or sqlite3.
"""

from __future__ import annotations

import contextlib
import enum
import heapq
import logging
import os
import resource
import selectors
import signal
import socket
import sys
import time
from dataclasses import dataclass
from typing import NamedTuple, NoReturn, assert_never

from sjq.contain.cgroup import CgroupError
from sjq.jobs import ExitRecord, JobLaunch
from sjq.keeper import messages as m
from sjq.keeper.guard import Guard
from sjq.keeper.janitor import Janitor, private_dir
from sjq.keeper.journal import Detached, Header, Journal, Refusal, Start
from sjq.keeper.procs import boot_ticks, drop_descriptors, proc_start_time, signal_group
from sjq.keeper.spawn import StartError, ignored_signals, spawn
from sjq.keeper.tokens import take_token, token_level

__all__ = ["Keeper"]

log = logging.getLogger("sjq.keeper")

LAZY_DELAY = 0.02  # seconds a start notice may wait to share a send with other news
MAX_WAIT = 3600.0  # longest single wait of the keeper's loop; a later timer is waited in parts
JOURNAL_RETRY = 0.5  # seconds between tries to write journal records a full disk held back


class _Timer(enum.Enum):
    LIMIT = "the job's time limit"
    KILL = "SIGKILL after the kill grace"


class _Due(NamedTuple):
    when: float  # time.monotonic()
    seq: int  # keeps equal times in the order they were set
    kind: _Timer
    pid: int


@dataclass(slots=True)
class _Child:
    req: JobLaunch
    script_path: str
    tmpdir: str
    start: Start  # as journaled
    oom_fd: int | None = None  # its group's OOM eventfd, registered with the selector
    reason: str = ""


class Keeper:
    """The keeper process's state and loop; `run` never returns."""

    def __init__(
        self,
        sock: socket.socket,
        *,
        spool: str,
        rundir: str,
        tmpbase: str,
        killgrace: float,
        logfile: str | None,
        ready: int,
        arm_fd: int,
        guard: Guard,
    ) -> None:
        self.sock = sock
        self.guard = guard
        self.arm_fd = arm_fd
        self.spool = spool
        self.rundir = rundir
        self.tmpbase = tmpbase
        self.killgrace = killgrace
        self.logfile = logfile
        self.ready = ready
        self.children: dict[int, _Child] = {}
        self.by_job: dict[int, int] = {}
        self.entries: dict[int, m.ArmedStart] = {}  # arm token -> what it starts
        self.capable: set[int] = set()  # running jobs whose end may take a token
        self.arm_low = 0  # the daemon arms more when no more tokens than this are left
        self.timers: list[_Due] = []
        self.seq = 0
        self.inbuf, self.outbuf = bytearray(), bytearray()
        self.urgent = False
        self.lazy_due = 0.0
        self.want_write = False
        self.detached = False
        self.journal_seq = 0
        self.spawns = 0  # in script names: a retry's last script may not be removed yet
        self.journal: Journal

    def run(self) -> NoReturn:
        self._isolate()
        self.journal = self._open_journal()
        # The janitor thread must never hold up the main loop for long: hand the GIL over
        # within 0.2 ms rather than the default 5 ms.
        sys.setswitchinterval(0.0002)
        self.guard.open()
        self.janitor = Janitor(self.tmpbase)
        self.janitor.chores.append(self.guard.tidy)
        self.janitor.sweep(self.rundir, "k")
        os.write(self.ready, self.journal.path.encode())
        os.close(self.ready)
        self.sel = selectors.DefaultSelector()
        self.sock.setblocking(False)
        self.sel.register(self.sock, selectors.EVENT_READ)
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self.sigdef = ignored_signals()
        self.sel.register(wake_r, selectors.EVENT_READ)
        self._reap()
        while not (self.detached and not self.children):
            if not self.children:
                self.janitor.kick()  # idle: clean up after the jobs that ended now
                if self.guard.wants_tidy(idle=True):
                    self.janitor.wake()
            timeout = None
            due = self.timers[0].when if self.timers else None
            sample = self.guard.due()
            if sample is not None and (due is None or sample < due):
                due = sample
            if due is not None:
                # epoll cannot wait longer than 2**31 ms (24.8 days) in one call
                timeout = min(MAX_WAIT, max(0.0, due - time.monotonic()))
            if self.outbuf and not self.want_write:
                # only lazy news is waiting: send it when it is due
                due = max(0.0, self.lazy_due - time.monotonic())
                timeout = due if timeout is None else min(timeout, due)
            if not self.journal.healthy and not self.journal.flush():
                # a full file system: try again soon to write what waits
                timeout = JOURNAL_RETRY if timeout is None else min(timeout, JOURNAL_RETRY)
            self.guard.step_back()
            for key, mask in self.sel.select(timeout):
                if key.fileobj == wake_r:
                    with contextlib.suppress(BlockingIOError):
                        while os.read(wake_r, 4096):
                            pass
                    self._reap()
                elif key.data is not None:  # a job's group reports an OOM
                    self.guard.oom_event(key.data)
                elif mask & selectors.EVENT_READ:
                    self._receive()
                elif mask & selectors.EVENT_WRITE:
                    self._send_pending()
            self._run_timers()
            if sample is not None and sample <= time.monotonic():
                self.guard.tick()
            # One send per loop turn, carrying everything this turn produced: each send
            # wakes the daemon, and a wake-up is what costs most on a virtual machine.
            due = self.urgent or not self.children or time.monotonic() >= self.lazy_due
            if self.outbuf and not self.want_write and due:
                self._send_pending()
            if self.guard.reset_used():  # the groups of jobs that ended, news sent
                self.janitor.wake()
            # the spawner thread waits in the groups of what may start next (Guard.expect)
            pid = self.by_job.get(min(self.capable)) if len(self.capable) == 1 else 0
            self.guard.expect(self.children[pid].req if pid else None, self.entries)
        log.info("keeper done: daemon gone and no job left")
        self.guard.close()
        self.journal.close()
        os._exit(0)

    def _isolate(self) -> None:
        """Own session (a Ctrl-C or hang-up meant for the daemon must not reach the jobs'
        parent), none of the daemon's descriptors (its database lock, its listening socket),
        and logging of our own."""
        with contextlib.suppress(OSError):
            os.setsid()
        root = logging.getLogger()
        for h in list(root.handlers):
            root.removeHandler(h)
            with contextlib.suppress(Exception):
                h.close()
        drop_descriptors({self.sock.fileno(), self.ready, self.arm_fd, *self.guard.keep_fds()})
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
            signal.signal(sig, signal.SIG_IGN)
        if self.logfile:
            with contextlib.suppress(OSError):
                h = logging.FileHandler(self.logfile)
                h.setFormatter(logging.Formatter("%(asctime)s keeper[%(process)d] %(message)s"))
                root.addHandler(h)

    def _rotate(self) -> None:
        """Go on in a new journal, so that the daemon can delete the old one. Not while the
        file system is full: the new one must hold everything before the old one goes."""
        if not self.journal.healthy:
            return
        old = self.journal
        self.journal_seq += 1
        try:
            new = self._open_journal()
        except OSError as e:
            log.warning("cannot start a new journal (%s); going on in %s", e, old.path)
            return
        # The new journal alone must say what is still running, so the old one can go.
        for c in self.children.values():
            new.write(c.start)
        if not new.healthy:
            new.close()
            with contextlib.suppress(OSError):
                os.unlink(new.path)
            return
        self.journal = new
        old.close()
        self._send(m.Rotated(old.path))

    def _open_journal(self) -> Journal:
        me = os.getpid()
        path = os.path.join(self.spool, f"keeper-{me}-{self.journal_seq}.journal")
        j = Journal(path)
        j.write(Header(me, proc_start_time(me)))
        return j

    # -- talking to the daemon --

    def _send(self, msg: m.FromKeeper, *, urgent: bool = True) -> None:
        """Queue a message for the daemon; it goes out at the end of this loop turn. A lazy
        one (a start: the daemon needs the pid only for display) may wait up to
        ``LAZY_DELAY`` for company, so that it costs no wake-up of its own."""
        if self.detached:
            return
        if not self.outbuf:
            self.lazy_due = time.monotonic() + LAZY_DELAY
        self.outbuf += m.encode(msg)
        self.urgent = self.urgent or urgent

    def _send_pending(self) -> None:
        self.urgent = False
        try:
            while self.outbuf:
                n = self.sock.send(self.outbuf)
                del self.outbuf[:n]
        except BlockingIOError:
            if not self.want_write:
                self.want_write = True
                self.sel.modify(self.sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
            return
        except OSError:
            self._detach()
            return
        if self.want_write:
            self.want_write = False
            self.sel.modify(self.sock, selectors.EVENT_READ)

    def _receive(self) -> None:
        try:
            data = self.sock.recv(1 << 20)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._detach()
            return
        self.inbuf += data
        for msg in m.decode_from_daemon(self.inbuf):
            self._handle(msg)

    def _detach(self) -> None:
        if self.detached:
            return
        self.detached = True
        self.outbuf.clear()
        self.entries.clear()  # no token means anything now
        with contextlib.suppress(KeyError, ValueError):
            self.sel.unregister(self.sock)
        self.sock.close()
        self.journal.write(Detached(time.time()))
        log.info("daemon gone; %d job(s) still running are watched here", len(self.children))

    def _handle(self, msg: m.ToKeeper) -> None:
        match msg:
            case m.Spawn(launch):
                self._tell(self._spawn(launch))
            case m.Kill(jobid, grace):
                self._kill(jobid, grace)
            case m.Arm(live, capable, entries, low, spare):
                self.arm_low, self.guard.spare = low, spare
                for seq in [s for s in self.entries if s not in live]:
                    del self.entries[seq]  # taken by another keeper, or taken back
                for e in entries:
                    self.entries[e.token] = e
                # a job that has ended already: the daemon learns so from its exit record
                self.capable.update(j for j in capable if j in self.by_job)
            case m.Rotate():
                self._rotate()
            case _:
                assert_never(msg)

    # -- processes --

    def _spawn(self, req: JobLaunch) -> m.Started | m.SpawnFailed:
        """Start ``req``; what to tell the daemon (the caller sends it: after the exit
        record of the job an armed start follows)."""
        if not self.journal.healthy and not self.journal.flush():
            # Its start could not be recorded: after a daemon crash it might run twice.
            now = time.time()
            reason = f"cannot record its start: the file system of {self.spool} (sjq.spool) is full"
            self.journal.write(Refusal(req.jobid, now, reason))
            return m.SpawnFailed(req.jobid, now, reason)
        tmpdir = self.janitor.take()
        rundir = self.rundir
        group = None
        try:
            if req.uid is not None:
                rundir = private_dir(os.path.join(rundir, f"u{req.uid}"), owner=req.uid)
            # The keeper's pid in the name: two daemons of one user may share a run dir.
            self.spawns += 1
            script_path = os.path.join(rundir, f"k{os.getpid()}-{req.jobid}.{self.spawns}")
            group, place, call = self.guard.place(req)
            # The process starts between these two ticks. Reading its start from /proc
            # instead would cost more than the rest of a start on some machines.
            lo = boot_ticks()
            try:
                pid = spawn(req, script_path, tmpdir, self.sigdef, place, call=call)
            except CgroupError as e:
                # Its group could not be entered: the watcher holds it instead.
                log.warning("job %d: %s; its memory is watched instead", req.jobid, e.strerror or e)
                self.guard.unplace(group)
                group = None
                lo = boot_ticks()
                pid = spawn(req, script_path, tmpdir, self.sigdef, self.guard.context(req, None))
            hi = boot_ticks()
        except OSError as e:
            self.guard.unplace(group)
            return self._refuse(req, tmpdir, "", StartError(f"cannot prepare job files: {e}"))
        except StartError as e:
            self.guard.unplace(group)
            return self._refuse(req, tmpdir, script_path, e)
        now = time.time()
        start = Start.of(req, pid, lo, now, hi, group=group.state() if group else "")
        self.journal.write(start)
        oom_fd = self.guard.started(req, pid, lo, group)
        if oom_fd is not None:
            self.sel.register(oom_fd, selectors.EVENT_READ, req.jobid)
        self.children[pid] = _Child(req, script_path, tmpdir, start, oom_fd)
        self.by_job[req.jobid] = pid
        if req.time_limit:
            self._timer(req.time_limit, _Timer.LIMIT, pid)
        return m.Started(req.jobid, pid, lo, now)

    def _refuse(self, req: JobLaunch, tmpdir: str, script_path: str, e: Exception) -> m.SpawnFailed:
        now = time.time()
        self.journal.write(Refusal(req.jobid, now, str(e)))
        self.janitor.remove(tmpdir)
        if script_path:
            self.janitor.remove(script_path)
        return m.SpawnFailed(req.jobid, now, str(e))

    def _tell(self, msg: m.Started | m.SpawnFailed) -> None:
        # A start may wait a moment for company (the daemon needs the pid only for display).
        self._send(msg, urgent=not isinstance(msg, m.Started))

    def _kill(self, jobid: int, grace: float) -> None:
        pid = self.by_job.get(jobid)
        if pid is None:
            return
        signal_group(pid, signal.SIGTERM)
        signal_group(pid, signal.SIGCONT)  # a stopped job must wake up to see SIGTERM
        self._timer(grace, _Timer.KILL, pid)

    def _timer(self, delay: float, kind: _Timer, pid: int) -> None:
        self.seq += 1
        heapq.heappush(self.timers, _Due(time.monotonic() + delay, self.seq, kind, pid))

    def _run_timers(self) -> None:
        now = time.monotonic()
        while self.timers and self.timers[0].when <= now:
            due = heapq.heappop(self.timers)
            child = self.children.get(due.pid)
            if child is None:
                continue  # the job ended: its timers mean nothing any more
            match due.kind:
                case _Timer.LIMIT:
                    child.reason = "time limit"
                    self._kill(child.req.jobid, self.killgrace)
                case _Timer.KILL:
                    signal_group(due.pid, signal.SIGKILL)
                case _:
                    assert_never(due.kind)

    def _reap(self) -> None:
        # Every zombie first, then the jobs whose first process ended: the processes a
        # job's end killed (or that died with it) are reaped as orphans of ours, and
        # their CPU time counts for the job, before its end is measured.
        ended: list[tuple[int, _Child, int, resource.struct_rusage, float]] = []
        while True:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                break
            if info is None:
                break
            pid = info.si_pid
            child = self.children.pop(pid, None)
            if child is None:
                # An orphan of a job (we are a subreaper): its CPU time is that job's.
                _, _, ru = os.wait4(pid, 0)
                self.guard.orphan(pid, ru.ru_utime, ru.ru_stime)
                continue
            # The leader is a zombie until wait4 below, so its pid (the group id) cannot be
            # recycled yet: this reaches only what the job left behind in its group.
            signal_group(pid, signal.SIGKILL)
            _, status, ru = os.wait4(pid, 0)
            ended.append((pid, child, status, ru, time.time()))
        for pid, child, status, ru, when in ended:
            self._ended(pid, child, status, ru, when)

    def _ended(
        self, pid: int, child: _Child, status: int, ru: resource.struct_rusage, when: float
    ) -> None:
        jobid = child.req.jobid
        del self.by_job[jobid]
        code = os.waitstatus_to_exitcode(status)
        claimed = successor = None
        if jobid in self.capable:
            self.capable.discard(jobid)
            ok = code == 0 and not child.reason and not self.guard.out_of_memory(jobid)
            claimed, successor = self._claim(child.req, ok)
        # Without waiting for the daemon: it armed us for exactly this moment. Started
        # before this job's end is measured (its group read), which can wait; told after.
        started = self._spawn(successor) if successor is not None else None
        if child.oom_fd is not None:
            self.sel.unregister(child.oom_fd)
        settled = self.guard.settle(jobid, ru)
        u = settled.usage
        rec = ExitRecord(
            jobid=child.req.jobid,
            pid=pid,
            exit_code=code if code >= 0 else None,
            signal=-code if code < 0 else None,
            time=when,
            cpu_user=u.cpu_user,
            cpu_sys=u.cpu_sys,
            maxrss=u.maxrss,
            reason=settled.reason or child.reason,
            measured_by=u.measured_by,
        )
        self.journal.write(rec)
        # The daemon needs this end in time only to arm more: while enough tokens are
        # left, it may wait to share a wake-up with later news.
        lazy = successor is not None and token_level(self.arm_fd) > self.arm_low
        if successor is None:
            self._send(m.Exited(rec, None, claimed), urgent=not lazy)
        else:
            exited = m.Exited(rec, successor.jobid, claimed, successor.cpus, successor.gpus)
            self._send(exited, urgent=not lazy)
        if started is not None:
            # The plan it armed made the job a capable one too: its end takes the next token.
            if isinstance(started, m.Started):
                self.capable.add(started.jobid)
            self._tell(started)
        self.janitor.recycle(child.tmpdir)
        self.janitor.remove(child.script_path)

    def _claim(self, ended: JobLaunch, succeeded: bool) -> tuple[int | None, JobLaunch | None]:
        """As a capable job ends: the arm token taken, and the job to start for it, on the
        CPUs and GPUs of the one that ended (and those set aside for it)."""
        jobid = ended.jobid
        if self.detached:
            return None, None
        seq = take_token(self.arm_fd)
        if seq is None:
            return None, None
        if seq not in self.entries:
            # The daemon writes a token only once what it stands for has reached our
            # socket: read that now.
            self._receive()
        entry = self.entries.pop(seq, None)
        if entry is None or self.detached:
            # A daemon that is gone no longer hears of what starts: the token is spent.
            return seq, None
        if entry.after is not None and (
            entry.after != jobid or (entry.need_success and not succeeded)
        ):
            return seq, None  # not for this end: the daemon starts what is next
        return seq, self.guard.hand_over(ended, entry)
