"""Owns the state, the keeper channel and every task: group commit, signals, idle shutdown,
re-adopted jobs, history purging; and the process side of starting: pid file, log file,
daemonizing with python-daemon. Request handling itself lives in ``sjq.state``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import itertools
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Sequence
from typing import assert_never

from sjq import __version__
from sjq.config import Config, ConfigError, load_config
from sjq.jobs import ExitRecord, Job, JobState
from sjq.keeper import ArmPipe, KeeperHandle
from sjq.keeper import messages as m
from sjq.keeper.adopt import Adoption, Orphans
from sjq.keeper.procs import proc_start_time
from sjq.paths import make_dirs, make_private_file
from sjq.recovery import recover
from sjq.scheduler import ARM_DEPTH, ARM_LOW, ArmEntry
from sjq.server import AlreadyRunning, Connection, bind_socket
from sjq.state import State, Waiter
from sjq.store import Store, StoreError, WriteFailed

__all__ = ["Daemon", "main"]

log = logging.getLogger("sjq")

PURGE_BATCH = 500  # finished jobs forgotten per loop turn: purging never stalls requests
COMMIT_DELAY = 0.02  # seconds a commit of keeper news alone may wait to share a transaction
WRITE_RETRY = 1.0  # seconds between tries to write state that could not be written (full disk)
ROTATE_EVERY = 20_000  # keeper records between journal rotations (bounded journal size)


def _same(link: _KeeperLink) -> _KeeperLink:
    return link


class _Timer:
    """One pending timer and the owner that cancels it."""

    __slots__ = ("handle",)

    def __init__(self) -> None:
        self.handle: asyncio.TimerHandle | None = None

    def cancel(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None


class _KeeperLink(asyncio.Protocol):
    """The daemon's channel to one keeper process."""

    def __init__(self, daemon: Daemon, handle: KeeperHandle) -> None:
        self.daemon = daemon
        self.handle = handle
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.records = 0  # journal records since the last rotation

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        for msg in m.decode_from_keeper(self.buf):
            self.daemon.on_keeper(self, msg)
        # A job's exit is the event that starts the next job: act on it in this loop turn
        # rather than the next (the dispatch gap is what users of short jobs feel).
        self.daemon.flush_now()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.daemon.on_keeper_lost(self)

    def send(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)


class Daemon:
    def __init__(
        self,
        *,
        cfg: Config,
        store: Store,
        keepers: list[KeeperHandle],
        arm_pipe: ArmPipe,
        listen: socket.socket,
        state: State,
        adopted: list[Adoption],
        socket_ident: tuple[int, int] | None = None,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.keepers = [_KeeperLink(self, k) for k in keepers]
        self._owner: dict[int, _KeeperLink] = {}  # running job -> the keeper that runs it
        # Arming (see _update_arm): tokens in the pipe, in order, and what each stands for.
        self.arm_pipe = arm_pipe
        self._tokens: dict[int, ArmEntry] = {}
        self._taken: dict[int, ArmEntry] = {}  # not in the pipe, not yet in an exit record
        self._capable: set[int] = set()  # running jobs whose keepers know they may take one
        self._unsent: list[int] = []  # tokens waiting for their entries to reach the keepers
        self._seq = itertools.count(1)
        self._next_keeper = 0
        self.listen = listen
        self.socket_ident = socket_ident
        self.state = state
        self.connections: set[Connection] = set()
        self.waiting_conns: dict[Waiter, Connection] = {}
        self._dirty: dict[Connection, None] = {}
        self._flush_handle: asyncio.Handle | None = None
        self._commit_handle: asyncio.TimerHandle | None = None
        self._retry = _Timer()  # the next try to write what a failed commit left unwritten
        self._idle_handle: asyncio.TimerHandle | None = None
        self._rotated: list[str] = []  # journals to delete after the next commit
        self.orphans = Orphans(
            adopted,
            on_exit=self._orphan_exited,
            on_lost=self._orphan_lost,
            on_journal_done=self._rotated.append,
        )
        self._durable_below = state.next_id  # every job id below this is committed
        self._stop: asyncio.Event
        self._keep_running = False
        self.loop: asyncio.AbstractEventLoop

    def now(self) -> float:
        return time.time()

    # -- the turn ------------------------------------------------------------------------

    def want_flush(self, conn: Connection | None = None) -> None:
        if conn is not None:
            self._dirty[conn] = None
        if self._flush_handle is None:
            self._flush_handle = self.loop.call_soon(self._flush)

    def flush_now(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush()

    def _flush(self) -> None:
        """End of a turn: schedule, write, commit once, then answer and act.

        Replies wait for the commit: an ``OK <id>`` means the job is on disk. A job whose
        submission was committed in an earlier turn is started before this commit, to
        keep the commit off the path from one job's exit to the next one's start: if the
        daemon dies in between, recovery learns from the keeper's journal that it started.
        """
        self._flush_handle = None
        st = self.state
        st.now = self.now()
        try:
            q = st.queue
            armed = [e.job for e in itertools.chain(self._tokens.values(), self._taken.values())]
            if armed and q.could_start(armed):
                # The pass must see the armed jobs again (and no keeper may take one on a
                # budget the pass is about to spend): take every token back first.
                self._take_back()
            if self._covered():  # else the pass waits for the exit records that say
                st.schedule()  # which jobs those tokens started
            if st.to_spawn and st.to_spawn[0].jobid < self._durable_below:
                self._send_to_keeper(before=self._durable_below)
            if st.queue.ended:
                st.queue.ended = 0
                self._purge_wake.set()
            st.sync()
            if self._dirty or st.ready_waiters or self._stop.is_set():
                self._commit()
            elif self._commit_handle is None:
                # Only keeper news this turn (starts, exits): the keepers' journals already
                # hold it durably, so its commit can wait a moment and share a transaction.
                self._commit_handle = self.loop.call_later(COMMIT_DELAY, self._lazy_commit)
        except Exception as e:
            log.exception("internal error; stopping so that nothing is acknowledged unsaved")
            st.write_failed(f"internal error: {e}")  # unsaved SUBMITs get an ERROR
            self.request_stop(keep_running=True)
            return
        if st.to_spawn or st.to_kill:
            self._send_to_keeper()
        # Before the replies: a HOLD or KILL of an armed job is answered once its token
        # is back (or known taken).
        self._update_arm()
        if st.write_error:
            # A WAIT is answered once what it reports is on disk; one that names a job
            # which was never recorded is answered now, with an error.
            ready = [w for w in st.ready_waiters if w.error]
            st.ready_waiters = [w for w in st.ready_waiters if not w.error]
        else:
            ready, st.ready_waiters = st.ready_waiters, []
        for w in ready:
            w.done = True
            conn = self.waiting_conns.get(w)
            if conn is not None:
                self._dirty[conn] = None
        dirty, self._dirty = self._dirty, {}
        for conn in dirty:
            conn.flush()
        if self._stop.is_set():
            self._drained.set()
        self._check_idle()

    def _commit(self) -> bool:
        """Write and commit everything not yet on disk; whether that worked. A failure (a
        full disk) costs the SUBMITs of this turn (they are answered with an ERROR) and
        nothing else: the other changes stay in memory and are written by a later commit,
        tried again every ``WRITE_RETRY`` seconds meanwhile."""
        st = self.state
        if self._commit_handle is not None:
            self._commit_handle.cancel()
            self._commit_handle = None
        ok = False
        if st.sync():  # what the journals about to be deleted said must be in it
            try:
                self.store.commit()
                ok = True
            except WriteFailed as e:
                st.write_failed(e.reason)
        if not ok:
            self._write_trouble()
            return False
        if self._retry.handle is not None:
            log.info("state recorded again; accepting jobs")
            self._retry.cancel()
        st.committed()
        self._durable_below = st.next_id
        # Journals are removed only once what they said is committed.
        for old in self._rotated:
            with contextlib.suppress(OSError):
                os.unlink(old)
        self._rotated.clear()
        return True

    def _write_trouble(self) -> None:
        if self._retry.handle is None:
            log.error(
                "cannot record state: %s; SUBMITs are refused until it can be written,"
                " everything else goes on and is written then (trying every %g s)",
                self.state.write_error,
                WRITE_RETRY,
            )
            self._retry.handle = self.loop.call_later(WRITE_RETRY, self._retry_write)

    def _retry_write(self) -> None:
        self._retry.handle = None
        self._lazy_commit()
        if self.state.write_error:
            return  # still failing: _write_trouble armed the next try
        self.want_flush()  # WAITs and replies that waited for this commit

    def _lazy_commit(self) -> None:
        self._commit_handle = None
        try:
            if self._commit() and self.state.ready_waiters:
                self.want_flush()  # WAITs that this commit's writes completed
        except Exception as e:
            log.exception("internal error; stopping so that nothing is acknowledged unsaved")
            self.state.write_failed(f"internal error: {e}")
            self.request_stop(keep_running=True)

    def _send_to_keeper(self, before: int | None = None) -> None:
        """Spawns go round-robin over the keepers, so that the (slow) exec of one job
        overlaps with another's; a kill goes to the keeper that runs the job. With
        ``before``, only the spawns of jobs with smaller ids, and no kills."""
        st = self.state
        frames: dict[_KeeperLink, list[bytes]] = {}
        live = [k for k in self.keepers if k.transport is not None]
        now_spawn = st.to_spawn
        if before is not None:
            now_spawn = [r for r in st.to_spawn if r.jobid < before]
            st.to_spawn = [r for r in st.to_spawn if r.jobid >= before]
        for req in now_spawn:
            if not live:
                st.failed_to_start(req.jobid, "no job keeper is running", self.now())
                continue
            link = live[self._next_keeper % len(live)]
            self._next_keeper += 1
            self._owner[req.jobid] = link
            frames.setdefault(link, []).append(m.encode(m.Spawn(req)))
        if before is None:
            st.to_spawn.clear()
        for job in st.to_kill if before is None else ():
            owner = self._owner.get(job.id)
            if job.id in self.orphans:
                self.orphans.kill(job.id, self.cfg.killgrace)
            elif owner is not None:
                frames.setdefault(owner, []).append(m.encode(m.Kill(job.id, self.cfg.killgrace)))
        if before is None:
            st.to_kill.clear()
        for link, chunks in frames.items():
            link.send(b"".join(chunks))

    # -- keeper events ---------------------------------------------------------------------

    def on_keeper(self, link: _KeeperLink, msg: m.FromKeeper) -> None:
        st = self.state
        st.now = self.now()
        match msg:
            case m.Started(jobid, pid, start_tick, t):
                st.started(jobid, pid, start_tick, t)
            case m.Exited(rec):
                self._owner.pop(rec.jobid, None)
                st.exited(rec)
                self._armed_exit(link, msg)
            case m.SpawnFailed(jobid, t, reason):
                self._owner.pop(jobid, None)
                log.warning("job %d could not start: %s", jobid, reason)
                st.failed_to_start(jobid, reason, t)
            case m.Rotated(path):
                self._rotated.append(path)
            case _:
                assert_never(msg)
        link.records += 1
        if link.records >= ROTATE_EVERY:
            link.records = 0
            link.send(m.encode(m.Rotate()))
        self.want_flush()

    # -- arming: keepers start the next jobs the moment running ones end ---------------

    def _update_arm(self) -> None:
        """Keep the pipe holding a token for each job ``Queue.arm_plan`` says keepers may
        start on their own, in its order, so those starts cost no round trip through the
        daemon (two process wake-ups) on the path from one job's end to the next one's
        start. A keeper told a running job is capable takes one token as it ends.

        Tokens only ever go in behind the ones already there; any other change of plan
        takes them all back first (a token some keeper took meanwhile is a start under
        way: nothing is armed again until its exit record has said what it started)."""
        if self._unsent or not self._covered():
            return  # the next turn plans again, once these are settled
        q = self.state.queue
        runners: list[Job] = []
        if not self._stop.is_set():
            for jobid, link in self._owner.items():
                job = q.get(jobid)
                if job is None or job.state is not JobState.RUNNING or link.transport is None:
                    runners = []  # being killed as it started: wait for its end
                    break
                runners.append(job)
        if runners:
            # Taken tokens started their jobs, as far as we can tell: those take tokens too.
            runners += [e.job for e in self._taken.values()]
        level = self.arm_pipe.level() if self._tokens else 0
        low = ARM_LOW * len(runners) if len(runners) > 1 else 0
        # While enough are left for every runner's next end, top up later, several at once,
        # so that the keepers are woken once for many tokens, not once for each.
        more = 0 if self._tokens and level > low else ARM_DEPTH * len(runners) - level
        armed = [e.job for e in self._tokens.values()]
        want = q.arm_plan(runners, armed, more) if runners else []
        del want[len(self._tokens) + ArmPipe.MAX - level :]
        for i, e in enumerate(want):
            if e.job.id >= self._durable_below:  # not committed: a crash would lose it
                want = want[:i]
                break
        have = list(self._tokens.values())
        if have != want[: len(have)]:
            self._take_back()
            if self._taken:
                return  # plan again once the exit records say what those started
            have = []
        new = want[len(have) :]
        if not new and not (self._tokens and any(r.id not in self._capable for r in runners)):
            return
        entries = []
        for e in new:
            seq = next(self._seq)
            self._tokens[seq] = e
            q.arm(e.job)
            entries.append(
                m.ArmedStart(seq, self.state.spawn_request(e.job), e.after, e.need_success)
            )
        live = frozenset(self._tokens)
        for link in self.keepers:
            if link.transport is not None:
                capable = [r.id for r in runners if self._owner.get(r.id) is link]
                link.send(m.encode(m.Arm(live, tuple(capable), tuple(entries), low)))
        self._capable.update(r.id for r in runners)
        self._unsent = [seq for seq, *_ in entries]
        self._put_tokens()

    def _covered(self) -> bool:
        """Whether every token taken but not yet reported is covered by a reservation."""
        return all(e.covered for e in self._taken.values())

    def _put_tokens(self) -> None:
        """Tokens go in once the keepers hold what they stand for: data a keeper cannot
        read yet (still in our buffer) would leave it a token it cannot use."""
        if not self._unsent:
            return
        if any(
            k.transport is not None and k.transport.get_write_buffer_size() for k in self.keepers
        ):
            self.loop.call_later(0.001, self._put_tokens)
            return
        seqs, self._unsent = self._unsent, []
        self.arm_pipe.put([s for s in seqs if s in self._tokens])

    def _take_back(self) -> None:
        """Drain the pipe: each token found there is disarmed; each not found was taken
        by a keeper, whose exit record will say what it started."""
        back = set(self.arm_pipe.drain()).union(self._unsent)
        self._unsent = []
        q = self.state.queue
        for seq, e in self._tokens.items():
            if seq in back:
                q.disarm(e.job)
            else:
                self._taken[seq] = e
        self._tokens.clear()

    def _armed_exit(self, link: _KeeperLink, msg: m.Exited) -> None:
        """A running job ended; its keeper may have taken a token, and started its job."""
        q = self.state.queue
        self._capable.discard(msg.record.jobid)
        if msg.claimed is not None:
            e = self._tokens.pop(msg.claimed, None) or self._taken.pop(msg.claimed, None)
            if e is not None and msg.started_next != e.job.id:
                q.disarm(e.job)  # back among the ready jobs, for the pass that follows
        if msg.started_next is None:
            return
        self._owner[msg.started_next] = link
        started = q.get(msg.started_next)
        if started is None:
            # Killed while the keeper was starting it: it ends as the daemon recorded.
            link.send(m.encode(m.Kill(msg.started_next, self.cfg.killgrace)))
            return
        if started.state is JobState.USERHOLD:
            q.release(started.id, msg.record.time)  # held too late: it has started
        if started.state is JobState.QUEUED:
            q.start_armed(started, msg.record.time)
            self._capable.add(started.id)  # its keeper made it so
            if self._stop.is_set() and not self._keep_running:
                started.killing = True  # started as the shutdown began: it ends with it
                started.reason = "killed by shutdown"
                self.state.to_kill.append(started)

    def on_keeper_lost(self, link: _KeeperLink) -> None:
        if self._stop.is_set():
            return
        log.error("a job keeper died; the daemon stops, its jobs are re-adopted at next start")
        self.request_stop(keep_running=True)

    # -- jobs of an earlier daemon ----------------------------------------------------------

    def _orphan_exited(self, rec: ExitRecord) -> None:
        self.state.exited(rec)
        self.want_flush()

    def _orphan_lost(self, job: Job, reason: str) -> None:
        self.state.lost(job, reason, self.now())
        self.want_flush()

    # -- stopping --------------------------------------------------------------------------

    def request_stop(self, *, keep_running: bool) -> None:
        if self._stop.is_set():
            return
        self._keep_running = keep_running
        self._stop.set()

    def _check_idle(self) -> None:
        if not self.cfg.autoshutdown or self._stop.is_set():
            return
        idle = not self.state.queue.busy and not self.orphans
        if idle and self._idle_handle is None:
            self._idle_handle = self.loop.call_later(self.cfg.waittime, self._idle_expired)
        elif not idle and self._idle_handle is not None:
            self._idle_handle.cancel()
            self._idle_handle = None

    def _idle_expired(self) -> None:
        self._idle_handle = None
        if not self.state.queue.busy and not self.orphans:
            log.info("idle for %g s: shutting down (sjq.autoshutdown)", self.cfg.waittime)
            self.request_stop(keep_running=False)

    def _on_signal(self, signame: str) -> None:
        if self._stop.is_set():
            log.warning("second %s: stopping at once", signame)
            self._force = True
            self._drained.set()
            return
        log.info("%s: shutting down", signame)
        self.request_stop(keep_running=False)

    async def _shutdown(self) -> None:
        """SHUTDOWN/SIGTERM: kill what runs (it ends in K), keep what waits, then go.
        STOP: leave running jobs to the keeper; the next daemon re-adopts them."""
        st = self.state
        st.accepting = False
        self.listen.close()
        # Not listening any more: free the path now, so that a new daemon can start while
        # this one still waits for its running jobs to die.
        remove_socket(self.cfg.socket, self.socket_ident)
        if not self._keep_running:
            for job in list(st.queue.running()):
                job.killing = True
                job.reason = "killed by shutdown"
                st.queue.touched[job.id] = job
                st.to_kill.append(job)
            self.want_flush()
            deadline = self.cfg.killgrace + 5.0
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(deadline):
                    while st.queue.counts[JobState.RUNNING] and not self._force:
                        self._drained.clear()
                        await self._drained.wait()
        self._flush()

    # -- running ---------------------------------------------------------------------------

    async def run(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._drained = asyncio.Event()
        self._purge_wake = asyncio.Event()
        self._force = False
        loop = self.loop
        for signame in ("SIGTERM", "SIGINT"):
            loop.add_signal_handler(getattr(signal, signame), self._on_signal, signame)
        loop.add_signal_handler(signal.SIGHUP, lambda: None)
        for link in self.keepers:
            await loop.create_unix_connection(functools.partial(_same, link), sock=link.handle.sock)
        self.orphans.start(loop)
        # asyncio listens again on the socket it is given, with a backlog of 100 unless told:
        # a burst of clients connecting at once would be refused with EAGAIN.
        server = await loop.create_unix_server(
            lambda: Connection(self), sock=self.listen, backlog=self.cfg.backlog
        )
        log.info(
            "sjq %s serving %s (pid %d, %d CPUs, %s memory)",
            __version__,
            self.cfg.socket,
            os.getpid(),
            self.cfg.maxprocs,
            "unmanaged" if self.cfg.maxmem is None else f"{self.cfg.maxmem} bytes",
        )
        self.want_flush()
        async with asyncio.TaskGroup() as tg:
            safety = tg.create_task(self._safety_passes())
            purger = tg.create_task(self._purge_history())
            await self._stop.wait()
            safety.cancel()
            purger.cancel()
        server.close()
        await self._shutdown()
        self._retry.cancel()
        if self.state.write_error:
            log.error(
                "stopping with changes not written (%s): the keepers' journals keep the"
                " ends of jobs for the next start; kills and holds of waiting jobs since"
                " the last write are lost",
                self.state.write_error,
            )
        for conn in list(self.connections):
            conn.flush()
            conn.abort()
        self.orphans.close()
        for link in self.keepers:
            if link.transport is not None:
                link.transport.close()  # the keeper sees EOF: it detaches (STOP) or exits

    async def _safety_passes(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.schedtime)
            self.want_flush()

    async def _purge_history(self) -> None:
        """Forget finished jobs past sjq.keep / sjq.keep.count, a batch per loop turn so
        that a large purge never holds up requests; looks again at most once a second
        after jobs end, and at least every minute."""
        interval = min(60.0, max(1.0, self.cfg.keep / 10))
        while True:
            gone = self.state.purge(self.now() - self.cfg.keep, self.cfg.keepcount, PURGE_BATCH)
            if gone:
                self.want_flush()
                await asyncio.sleep(0)
                continue
            self._purge_wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._purge_wake.wait()
            await asyncio.sleep(1.0)


# -- starting the process ------------------------------------------------------------------


def _setup_logging(cfg: Config, foreground: bool) -> None:
    root = logging.getLogger()
    root.setLevel(cfg.loglevel.upper())
    fmt = logging.Formatter("%(asctime)s sjq[%(process)d] %(levelname)s %(message)s")
    handlers: list[logging.Handler] = []
    if foreground:
        handlers.append(logging.StreamHandler(sys.stderr))
    if cfg.logfile:
        # Job names, paths and reasons are nobody else's business: owner only, as the
        # database (an existing log keeps the mode its owner gave it).
        with contextlib.suppress(OSError):
            make_dirs(os.path.dirname(cfg.logfile))
            make_private_file(cfg.logfile, tighten_existing=False)
        handlers.append(logging.FileHandler(cfg.logfile))
    for h in handlers:
        h.setFormatter(fmt)
        root.addHandler(h)


def _write_pidfile(path: str) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(f"{os.getpid()}\n")
    os.replace(tmp, path)


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def file_identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def remove_socket(path: str, ident: tuple[int, int] | None) -> None:
    """Remove our socket file, unless it is no longer ours: a daemon started while this one
    was stopping may have bound a new one at the same path."""
    if ident is not None and file_identity(path) == ident:
        _unlink_quietly(path)


def _remove_pidfile(path: str) -> None:
    try:
        with open(path) as f:
            pid = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return
    if pid == os.getpid():
        _unlink_quietly(path)


def serve(cfg: Config, *, foreground: bool, ready_fd: int | None = None) -> int:
    """Run a daemon until it stops. Returns the process exit status."""
    _setup_logging(cfg, foreground)
    for fd in range(3, _max_fd()):
        with contextlib.suppress(OSError):
            if fd != ready_fd:
                os.set_inheritable(fd, False)
    # The socket first: "a daemon is already running on it" is the most useful thing to hear.
    try:
        listen = bind_socket(cfg.socket, cfg.backlog)
    except (AlreadyRunning, OSError) as e:
        return _fail(str(e), ready_fd)
    sock_ident = file_identity(cfg.socket)
    try:
        store = Store(cfg.db, sync=cfg.sync)
    except StoreError as e:
        listen.close()
        remove_socket(cfg.socket, sock_ident)
        return _fail(str(e), ready_fd)
    try:
        now = time.time()
        state = State(cfg, store, now)
        recovered = recover(state, cfg.spool, now)
        state.sync()
        store.commit()
        for path in recovered.finished_journals:
            _unlink_quietly(path)
        arm_pipe = ArmPipe()
        keepers = [
            KeeperHandle.fork(
                cfg.spool,
                cfg.rundir,
                cfg.tmpdir,
                cfg.killgrace,
                cfg.logfile,
                arm_fd=arm_pipe.read_fd,
            )
            for _ in range(cfg.keepers)
        ]
    except Exception as e:
        log.exception("cannot start")
        listen.close()
        remove_socket(cfg.socket, sock_ident)
        store.close()
        return _fail(f"cannot start: {e}", ready_fd)
    _write_pidfile(cfg.pidfile)
    if ready_fd is not None:
        os.write(ready_fd, f"OK {os.getpid()}".encode())
        os.close(ready_fd)
    daemon = Daemon(
        cfg=cfg,
        store=store,
        keepers=keepers,
        arm_pipe=arm_pipe,
        listen=listen,
        state=state,
        adopted=recovered.adopted,
        socket_ident=sock_ident,
    )
    try:
        asyncio.run(daemon.run())
    finally:
        remove_socket(cfg.socket, sock_ident)
        _remove_pidfile(cfg.pidfile)
        with contextlib.suppress(Exception):
            store.close()
        log.info("stopped")
    return 0


def _fail(message: str, ready_fd: int | None) -> int:
    log.error("%s", message)
    if ready_fd is not None:
        os.write(ready_fd, message.encode())
        os.close(ready_fd)
    return 1


def _max_fd() -> int:
    try:
        return max(int(n) for n in os.listdir("/proc/self/fd")) + 1
    except (OSError, ValueError):
        return 256


def daemonize(cfg: Config) -> int:
    """Fork a detached daemon; return only when it serves (0) or has failed (1, reason printed)."""
    import daemon as python_daemon  # noqa: PLC0415 - only the daemonizing path pays for it

    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid:
        os.close(ready_w)
        with os.fdopen(ready_r, "rb") as f:
            answer = f.read().decode(errors="replace")
        os.waitpid(pid, 0)
        if answer.startswith("OK "):
            print(f"sjq daemon started (pid {answer[3:]}) on {cfg.socket}")
            return 0
        print(
            f"sjq: {answer or 'the daemon died while starting; see ' + str(cfg.logfile)}",
            file=sys.stderr,
        )
        return 1
    os.close(ready_r)
    ctx = python_daemon.DaemonContext(
        umask=0o022, working_directory="/", files_preserve=[ready_w], detach_process=True
    )
    with ctx:
        code = serve(cfg, foreground=False, ready_fd=ready_w)
    os._exit(code)


def _overrides(pairs: Sequence[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ConfigError("command line", pair, "expected KEY=VALUE")
        out[key.strip()] = value.strip()
    return out


def build_parser(prog: str = "sjq server") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Run the sjq daemon: it listens on sjq.socket and runs the jobs sent there.",
        epilog=(
            "examples:\n"
            "  sjq server -f                      run in the foreground, log to stderr\n"
            "  sjq server -d                      detach; log to sjq.logfile\n"
            "  sjq server -f --set sjq.maxprocs=4 --set sjq.maxmem=16G\n"
            "  sjq server --stop                  stop: kill running jobs, keep the queue\n"
            "  sjq server --stop --keep-running   stop, leave running jobs running\n"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("-f", "--foreground", action="store_true", help="run in the foreground")
    mode.add_argument("-d", "--daemon", action="store_true", help="detach (as sjq.daemon=T)")
    mode.add_argument("--stop", action="store_true", help="ask the running daemon to stop")
    p.add_argument(
        "--keep-running",
        action="store_true",
        help="with --stop: running jobs go on and are re-adopted by the next daemon",
    )
    p.add_argument("-c", "--config", metavar="FILE", help="config file (default ~/.sjqrc)")
    p.add_argument(
        "--set",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="override a config key (repeatable), e.g. --set sjq.maxprocs=4",
    )
    p.add_argument("--version", action="version", version=f"sjq {__version__}")
    return p


def main(argv: Sequence[str] | None = None, prog: str = "sjq server") -> int:
    args = build_parser(prog).parse_args(argv)
    try:
        cfg = load_config(args.config, overrides=_overrides(args.set))
    except ConfigError as e:
        print(f"sjq: {e}", file=sys.stderr)
        return 2
    if args.stop:
        return _stop_running(cfg, keep_running=args.keep_running)
    if args.daemon or (cfg.daemon and not args.foreground):
        return daemonize(cfg)
    return serve(cfg, foreground=True)


def _stop_running(cfg: Config, *, keep_running: bool) -> int:
    try:
        with open(cfg.pidfile) as f:
            pid: int | None = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        pid = None
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(cfg.socket)
    except OSError:
        print(f"sjq: no daemon is running on {cfg.socket}", file=sys.stderr)
        return 1
    with s:
        s.sendall(b"STOP\n" if keep_running else b"SHUTDOWN\n")
        reply = s.recv(4096)
    if not reply.startswith(b"OK"):
        print(f"sjq: the daemon said {reply.decode(errors='replace').strip()}", file=sys.stderr)
        return 1
    # Wait until it is gone (it frees the socket at once, its database when its running
    # jobs have been killed), so that a script can start another daemon straight after.
    deadline = time.monotonic() + cfg.killgrace + 15.0
    while time.monotonic() < deadline and (
        os.path.exists(cfg.socket) or (pid is not None and proc_start_time(pid) is not None)
    ):
        time.sleep(0.02)
    return 0


if __name__ == "__main__":
    sys.exit(main(prog="python -m sjq.daemon"))
