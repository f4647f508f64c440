"""The running daemon: owns the state, the keeper channels, the client connections and every
task and timer; ends each event-loop turn with one scheduling pass, one commit and then the
replies. Requests themselves are handled by ``sjq.state``; when changes are committed is
``sjq.commits``; processes are the keepers' (``sjq.keeper``); starting the process (pid file,
logging, daemonizing) is ``sjq.daemon``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from typing import Any, assert_never

from sjq import __version__
from sjq.armer import Armer
from sjq.arming import could_start
from sjq.commits import Commits
from sjq.config import Config
from sjq.devices import Handover
from sjq.jobs import ExitRecord, Job, JobState
from sjq.keeper import ArmPipe, KeeperHandle
from sjq.keeper import messages as m
from sjq.keeper.adopt import Adoption, Orphans
from sjq.links import KeeperLink, Timer, keeper_protocol
from sjq.protocol import Data, Error, Ok, Request
from sjq.replies import Accepted, Peer, Waiter
from sjq.server import Connection, Limits, remove_socket
from sjq.slurm.backend import SlurmBackend
from sjq.state import State
from sjq.store import Store

__all__ = ["Daemon"]

log = logging.getLogger("sjq")

PURGE_BATCH = 500  # finished jobs forgotten per loop turn: purging never stalls requests
ROTATE_EVERY = 20_000  # keeper records between journal rotations (bounded journal size)
STOP_GRACE = 5.0  # seconds beyond sjq.killgrace a SHUTDOWN waits for killed jobs to end


class Daemon:
    """Everything that runs in the daemon's event loop. Build it with the state recovery
    left and the keepers already forked; `run` serves until a stop is requested."""

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
        backend: SlurmBackend | None = None,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.state = state
        self.listen = listen
        self.socket_ident = socket_ident
        self.backend = backend  # sjq.backend = slurm: jobs go to Slurm, not to the keepers
        self.limits = Limits(
            max_line=cfg.maxline,
            max_src=cfg.maxsrc,
            idle_timeout=cfg.conntimeout,
        )
        self.keepers = [KeeperLink(self, k) for k in keepers]
        self._owner: dict[int, KeeperLink] = {}  # running job -> the keeper that runs it
        self._next_keeper = 0
        self.armer = Armer(
            arm_pipe, state.queue, state.spawn_request, self._later, devices=state.devices
        )
        self.commits = Commits(state, store, self._later, self.want_turn, self._internal_error)
        self.orphans = Orphans(
            adopted,
            on_exit=self._orphan_exited,
            on_lost=self._orphan_lost,
            on_journal_done=self.commits.rotated.append,
        )
        self.connections: set[Connection] = set()
        self.waiting_conns: dict[Waiter, Connection] = {}
        self._dirty: dict[Connection, None] = {}  # connections with replies to send this turn
        self._turn = Timer()  # the end of this turn, soon
        self._idle = Timer()  # sjq.autoshutdown
        self._stop: asyncio.Event
        self._keep_running = False
        self._force = False
        self.loop: asyncio.AbstractEventLoop

    def now(self) -> float:
        return time.time()

    @property
    def keep_running(self) -> bool:
        """Whether the daemon stopped leaving running jobs to their keepers (STOP)."""
        return self._keep_running

    def _later(self, delay: float, fn: Callable[[], None]) -> asyncio.TimerHandle:
        return self.loop.call_later(delay, fn)

    # -- what connections ask (server.Host) -------------------------------------------------

    def connected(self, conn: Connection) -> str | None:
        """Take a new client, or say why not."""
        if conn.peer.uid != os.geteuid() and os.geteuid() != 0:
            return f"permission denied: this daemon serves uid {os.geteuid()} only"
        if len(self.connections) >= self.cfg.maxconns:
            return f"too many connections (sjq.maxconns = {self.cfg.maxconns})"
        self.connections.add(conn)
        return None

    def disconnected(self, conn: Connection, waits: list[Waiter]) -> None:
        self.connections.discard(conn)
        self._dirty.pop(conn, None)
        for w in waits:
            self.state.drop_waiter(w)
            self.waiting_conns.pop(w, None)

    def handle(
        self, conn: Connection, req: Request, peer: Peer
    ) -> Ok | Data | Error | Waiter | Accepted:
        st = self.state
        st.now = self.now()
        reply = st.handle(req, peer)
        if isinstance(reply, Waiter):
            self.waiting_conns[reply] = conn
        if st.stop_requested is not None:
            self.request_stop(keep_running=st.stop_requested == "stop")
            st.stop_requested = None
        return reply

    def answered(self, waiter: Waiter) -> None:
        self.waiting_conns.pop(waiter, None)

    # -- the turn ------------------------------------------------------------------------

    def want_turn(self, conn: Connection | None = None) -> None:
        """End this turn soon (once the loop has run what is ready), and then send
        ``conn``'s replies."""
        if conn is not None:
            self._dirty[conn] = None
        if not self._turn:
            self._turn.set(self.loop.call_soon(self._end_turn))

    def end_turn_now(self) -> None:
        if self._turn:
            self._turn.cancel()
            self._end_turn()

    def _end_turn(self) -> None:
        """End of a turn: schedule, write, commit once, then answer and act.

        Replies wait for the commit: an ``OK <id>`` means the job is on disk. A job whose
        submission was committed in an earlier turn is started before this commit, to
        keep the commit off the path from one job's exit to the next one's start: if the
        daemon dies in between, recovery learns from the keeper's journal that it started.
        """
        self._turn.handle = None
        st = self.state
        st.now = self.now()
        try:
            armed = self.armer.armed()
            if armed and could_start(st.queue, armed):
                # The pass must see the armed jobs again (and no keeper may take one on a
                # budget the pass is about to spend): take every token back first.
                self.armer.take_back()
            if self.armer.covered():  # else the pass waits for the exit records that say
                st.schedule()  # which jobs those tokens started
            if st.to_spawn and st.to_spawn[0].jobid < self.commits.durable_below:
                self._send_to_keepers(before=self.commits.durable_below)
            if st.queue.ended:
                st.queue.ended = 0
                self._purge_wake.set()
            st.write_changes()
            if self._dirty or st.ready_waiters or self._stop.is_set():
                self.commits.commit()
            else:
                # Only keeper news this turn (starts, exits): the keepers' journals already
                # hold it durably, so its commit can wait a moment and share a transaction.
                self.commits.commit_soon()
        except Exception as e:
            self._internal_error(e)
            return
        if st.to_spawn or st.to_kill or st.to_hold:
            self._send_to_keepers()
        # Before the replies: a HOLD or KILL of an armed job is answered once its token
        # is back (or known taken).
        self._update_arm()
        self._answer_waits()
        dirty, self._dirty = self._dirty, {}
        for conn in dirty:
            conn.send_replies()
        if self._stop.is_set():
            self._drained.set()
        self._check_idle()

    def _answer_waits(self) -> None:
        """WAITs are answered once what they report is on disk; one that names a job which
        was never recorded is answered at once, with an error."""
        st = self.state
        if st.write_error:
            ready = [w for w in st.ready_waiters if w.error]
            st.ready_waiters = [w for w in st.ready_waiters if not w.error]
        else:
            ready, st.ready_waiters = st.ready_waiters, []
        for w in ready:
            w.done = True
            conn = self.waiting_conns.get(w)
            if conn is not None:
                self._dirty[conn] = None

    def _internal_error(self, e: Exception) -> None:
        log.exception("internal error; stopping so that nothing is acknowledged unsaved")
        self.state.write_failed(f"internal error: {e}")  # unsaved SUBMITs get an ERROR
        self.request_stop(keep_running=True)

    def _send_to_keepers(self, before: int | None = None) -> None:
        """Spawns go round-robin over the keepers, so that the (slow) exec of one job
        overlaps with another's; a kill goes to the keeper that runs the job. With
        ``before``, only the spawns of jobs with smaller ids, and no kills."""
        st = self.state
        if self.backend is not None:  # only what is committed goes to Slurm
            if before is None:
                self.backend.take(st)
            return
        frames: dict[KeeperLink, list[bytes]] = {}
        live = [k for k in self.keepers if k.alive]
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
            for job in st.to_kill:
                owner = self._owner.get(job.id)
                if job.id in self.orphans:
                    self.orphans.kill(job.id, self.cfg.killgrace)
                elif owner is not None:
                    kill = m.encode(m.Kill(job.id, self.cfg.killgrace))
                    frames.setdefault(owner, []).append(kill)
            st.to_kill.clear()
        for link, chunks in frames.items():
            link.send(b"".join(chunks))

    # -- keeper events ---------------------------------------------------------------------

    def on_keeper(self, link: KeeperLink, msg: m.FromKeeper) -> None:
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
                self.commits.rotated.append(path)
            case _:
                assert_never(msg)
        link.records += 1
        if link.records >= ROTATE_EVERY:
            link.records = 0
            link.send(m.encode(m.Rotate()))
        self.want_turn()

    def on_keeper_lost(self, link: KeeperLink) -> None:
        if self._stop.is_set():
            return
        log.error("a job keeper died; the daemon stops, its jobs are re-adopted at next start")
        self.request_stop(keep_running=True)

    # -- arming: keepers start the next jobs the moment running ones end ---------------

    def _update_arm(self) -> None:
        if self.state.pause.paused:
            self.armer.disarm_all()  # a paused queue starts nothing, armed or not
            return
        runners: list[tuple[Job, Any]] = []
        if not self._stop.is_set():
            for jobid, link in self._owner.items():
                job = self.state.queue.get(jobid)
                if job is None or job.state is not JobState.RUNNING or not link.alive:
                    runners = []  # being killed as it started: wait for its end
                    break
                runners.append((job, link))
        self.armer.update(runners, self.keepers, self.commits.durable_below)

    def _armed_exit(self, link: KeeperLink, msg: m.Exited) -> None:
        """A running job ended; its keeper may have taken a token, and started its job."""
        self.armer.exited(msg)
        if msg.started_next is None:
            return
        self._owner[msg.started_next] = link
        devices = Handover(msg.claimed, msg.cpus, msg.gpus)
        started = self.state.armed_start(msg.started_next, msg.record.time, devices)
        if started is None:
            # Killed while the keeper was starting it: it ends as the daemon recorded.
            link.send(m.encode(m.Kill(msg.started_next, self.cfg.killgrace)))
            return
        self.armer.capable.add(started.id)  # its keeper made it so
        if self._stop.is_set() and not self._keep_running:
            self.state.kill_running(started, "killed by shutdown")

    # -- jobs of an earlier daemon ----------------------------------------------------------

    def _orphan_exited(self, rec: ExitRecord) -> None:
        self.state.exited(rec)
        self.want_turn()

    def _orphan_lost(self, job: Job, reason: str) -> None:
        self.state.lost(job, reason, self.now())
        self.want_turn()

    # -- stopping --------------------------------------------------------------------------

    def request_stop(self, *, keep_running: bool) -> None:
        if self._stop.is_set():
            return
        self._keep_running = keep_running
        self._stop.set()

    def _check_idle(self) -> None:
        if not self.cfg.autoshutdown or self._stop.is_set():
            return
        idle = not self.state.busy and not self.orphans
        if idle and not self._idle:
            self._idle.set(self.loop.call_later(self.cfg.waittime, self._idle_expired))
        elif not idle:
            self._idle.cancel()

    def _idle_expired(self) -> None:
        self._idle.handle = None
        if not self.state.busy and not self.orphans:
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
            # No keeper may start an armed job as the killed ones end: the tokens first.
            self.armer.take_back()
            for job in self._running():
                st.kill_running(job, "killed by shutdown")
            self.want_turn()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.cfg.killgrace + STOP_GRACE):
                    while self._running() and not self._force:
                        self._drained.clear()
                        await self._drained.wait()
        self._turn.cancel()
        self._end_turn()

    def _running(self) -> list[Job]:
        """The jobs a SHUTDOWN kills: those that run (in Slurm: not those waiting there)."""
        b = self.backend
        return [j for j in self.state.queue.running() if b is None or b.running(j)]

    # -- running ---------------------------------------------------------------------------

    async def run(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._drained = asyncio.Event()
        self._purge_wake = asyncio.Event()
        loop = self.loop
        for signame in ("SIGTERM", "SIGINT"):
            loop.add_signal_handler(getattr(signal, signame), self._on_signal, signame)
        loop.add_signal_handler(signal.SIGHUP, lambda: None)
        for link in self.keepers:
            factory = functools.partial(keeper_protocol, link)
            await loop.create_unix_connection(factory, sock=link.handle.sock)
        self.orphans.start(loop)
        # asyncio listens again on the socket it is given, with a backlog of 100 unless told:
        # a burst of clients connecting at once would be refused with EAGAIN.
        server = await loop.create_unix_server(
            lambda: Connection(self, self.limits), sock=self.listen, backlog=self.cfg.backlog
        )
        log.info(
            "sjq %s serving %s (pid %d, %d CPUs, %s memory)",
            __version__,
            self.cfg.socket,
            os.getpid(),
            self.cfg.maxprocs,
            "unmanaged" if self.cfg.maxmem is None else f"{self.cfg.maxmem} bytes",
        )
        self.want_turn()
        async with asyncio.TaskGroup() as tg:
            safety = tg.create_task(self._safety_passes())
            purger = tg.create_task(self._purge_history())
            slurm = tg.create_task(self.backend.run(self)) if self.backend else None
            await self._stop.wait()
            safety.cancel()
            purger.cancel()
            server.close()
            await self._shutdown()  # the back end still runs: it cancels what SHUTDOWN kills
            if slurm is not None:
                slurm.cancel()
        for timer in (self._turn, self._idle):
            timer.cancel()
        self.commits.close()
        self.armer.close()
        self.orphans.close()
        if self.state.write_error:
            log.error(
                "stopping with changes not written (%s): the keepers' journals keep the"
                " ends of jobs for the next start; kills and holds of waiting jobs since"
                " the last write are lost",
                self.state.write_error,
            )
        for conn in list(self.connections):
            conn.send_replies()
            conn.abort()
        for link in self.keepers:
            if link.transport is not None:
                link.transport.close()  # the keeper sees EOF: it detaches (STOP) or exits

    async def _safety_passes(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.schedtime)
            self.want_turn()

    async def _purge_history(self) -> None:
        """Forget finished jobs past sjq.keep / sjq.keep.count, a batch per loop turn so
        that a large purge never holds up requests; looks again at most once a second
        after jobs end, and at least every minute."""
        interval = min(60.0, max(1.0, self.cfg.keep / 10))
        while True:
            gone = self.state.purge(self.now() - self.cfg.keep, self.cfg.keepcount, PURGE_BATCH)
            if gone:
                self.want_turn()
                await asyncio.sleep(0)
                continue
            self._purge_wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._purge_wake.wait()
            await asyncio.sleep(1.0)
