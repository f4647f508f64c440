"""A keeper's containment and measurement of its jobs (docs/containment.md): each job in a
cgroup of its own when the daemon has a backend, else watched by sampling its process tree;
stopped when it goes over its memory; its true usage at its end.

`Guard` is built in the daemon (with the cgroup backend it found) and opened in the keeper
process. The keeper asks it where to start a job (`place`), tells it the job started
(`started`) and ended (`settle`), and runs its sampling when due (`tick`). Imports nothing
of asyncio or sqlite3.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import cast

from sjq.contain.account import Usage, out_of_memory_reason, usage
from sjq.contain.alloc import AllocationError, pick_hand_over
from sjq.contain.cgroup import Backend, CgroupError, Group, GroupPool
from sjq.contain.cpus import Topology, choose_cpus
from sjq.contain.gpus import first_free
from sjq.contain.procfs import keeper_peak, pinned, set_child_subreaper
from sjq.contain.watch import Watcher, WatchPolicy
from sjq.jobs import JobLaunch
from sjq.keeper.messages import ArmedStart
from sjq.keeper.spawner import Spawner

__all__ = ["Guard", "Settled"]

log = logging.getLogger("sjq.keeper")


@dataclass(slots=True)
class _Held:
    """What the guard keeps for one running job."""

    pid: int  # its first process
    group: Group | None
    limit: int | None  # bytes; None: not enforced
    keeper_peak: int  # the keeper's own peak just after the spawn (see account)
    oom_fd: int | None = None  # the group's OOM eventfd, while registered with the keeper
    over: bool = False  # stopped for going over its memory
    reaped_utime: float = 0.0  # CPU of the job's orphans the keeper reaped
    reaped_stime: float = 0.0
    # processes killed (outside a cgroup) and not yet reaped: their CPU time just before
    dying: dict[int, tuple[float, float]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Parked:
    """The start the spawner thread waits for, in ``group`` (configured for it)."""

    jobid: int
    mem: int | None
    cpus: tuple[int, ...] | None
    group: Group


@dataclass(frozen=True, slots=True)
class Settled:
    """A job's end as the guard measured it; ``reason``: why memory stopped it, or ""."""

    usage: Usage
    reason: str


class Guard:
    """Containment of one keeper's jobs. ``backend``: the cgroup backend the daemon set up
    (None: the watcher alone); ``pool_size``: groups kept ready in this keeper."""

    def __init__(
        self, backend: Backend | None, *, pool_size: int = 4, topology: Topology | None = None
    ) -> None:
        self.backend = backend
        self.pool_size = pool_size
        self.topology = topology  # the CPUs jobs are pinned to (None: no pinning)
        self.pool: GroupPool | None = None
        self.watcher = Watcher(WatchPolicy())
        self.jobs: dict[int, _Held] = {}
        self._tidy_lock = threading.Lock()
        self.spare: tuple[int, ...] = ()  # CPUs no job holds, as the daemon last said
        self.home: set[int] | None = None  # the keeper's own CPUs (``open``)
        self.aside = False  # the keeper runs on spare CPUs until ``step_back``
        self.spawner: Spawner | None = None  # a thread that can wait in a job's groups
        self.parked: _Parked | None = None  # the start it waits for
        self.spawner_in: Group | None = None  # the group it is in, or is moving to (None: home)
        self._spawner_at: Group | None = None  # ... where it is: its own thread's word
        self._expected: tuple[int, int, tuple[int, ...]] | None = None  # what ``expect`` saw

    def keep_fds(self) -> list[int]:
        """Descriptors the keeper must keep when it drops what it inherited."""
        return self.backend.held_fds() if self.backend is not None else []

    def open(self) -> None:
        """In the keeper process, once: orphans of jobs come to us (so their usage does
        too), the watcher knows us as a reaper, the pool is filled."""
        if not set_child_subreaper():
            log.warning("cannot become a child subreaper: orphans of jobs go to init")
        self.watcher = Watcher(WatchPolicy(), reapers={1, os.getpid()})
        if self.topology is not None:
            self.home = os.sched_getaffinity(0)
        if self.backend is not None:
            self.pool = GroupPool(self.backend, size=self.pool_size)
            self.tidy()
            if self.backend.threads:
                self.spawner = Spawner()

    def close(self) -> None:
        """Remove this keeper's groups (every job has ended)."""
        self.expect(None, {})
        if self.spawner is not None:
            self.spawner.sync()
        if self.pool is not None:
            with self._tidy_lock:
                self.pool.close(wait=0.5)

    # -- a job's start -------------------------------------------------------------------

    def place(
        self, req: JobLaunch
    ) -> tuple[
        Group | None, AbstractContextManager[None], Callable[[Callable[[], int]], int] | None
    ]:
        """Where ``req`` starts: its group (taken from the pool, limits set), the context
        to run its spawn in, so that its first instruction is inside, and the thread to
        run it in (None: this one). That is the spawner thread while a CPU is spare: waiting
        in the group already (``expect``), or moved there now, which the keeper's own
        thread would have to undo after the spawn. A group that cannot be had leaves the
        job to the watcher, with a log line: never an error for the job."""
        parked, self.parked = self.parked, None
        if parked is not None:
            if (parked.jobid, parked.mem, parked.cpus) == (req.jobid, req.mem, req.cpus):
                return parked.group, contextlib.nullcontext(), self._call_in(parked.group)
            self._unpark(parked)
        group = None
        if self.pool is not None and req.mem is not None:
            try:
                group = self.pool.take(req.mem, req.cpus)
            except CgroupError as e:
                log.warning("job %d: %s; its memory is watched instead", req.jobid, e.strerror or e)
        if group is not None and self._hands_over(req):
            return group, contextlib.nullcontext(), self._call_in(group)
        return group, self.context(req, group), None

    def _hands_over(self, req: JobLaunch) -> bool:
        """Whether the spawner thread starts ``req``: it can (cgroup v1, the keeper's
        user, the job's CPUs pinned by its cpuset: the spawner never takes a job's
        affinity), and a CPU other than the job's is spare, so the two wake-ups of handing
        the spawn over are cheap (on a busy machine one may wait a time slice)."""
        return (
            self.spawner is not None
            and req.uid is None
            and (req.cpus is None or (self.backend is not None and self.backend.cpuset))
            and bool(set(self.spare).difference(req.cpus or ()))
        )

    def _call_in(self, group: Group) -> Callable[[Callable[[], int]], int]:
        """How to start a job in ``group`` by the spawner thread: there already (parked),
        or entering it first; a ``CgroupError`` if it cannot (it is then home)."""
        spawner, backend = self.spawner, self.backend
        assert spawner is not None
        assert backend is not None
        self.spawner_in = group

        def call(start: Callable[[], int]) -> int:
            def inside() -> int:  # in the spawner's thread
                if self._spawner_at is not group:
                    self._spawner_go(group, quiet=False)
                return start()

            return spawner.call(inside)

        return call

    def expect(self, running: JobLaunch | None, entries: Mapping[int, ArmedStart]) -> None:
        """Before the keeper waits: send the spawner thread into the group of the job the
        end of ``running`` (the keeper's only job whose end takes an arm token) would start,
        so that ``place`` needs no cgroup move then; home when the keeper runs no such job.
        It moves itself, while the keeper goes on. ``entries``: the keeper's armed starts;
        the token its end takes is the lowest one live. Only while a CPU is spare
        (``_hands_over``)."""
        want = None
        key = None
        if running is not None and entries and self.spare and self.spawner is not None:
            key = (running.jobid, min(entries), self.spare)
            if key == self._expected and self.parked is not None:
                return  # nothing changed since the last turn
            entry = entries[key[1]]
            launch = None
            if entry.after in (None, running.jobid):
                launch = self.hand_over(running, entry, quiet=True)
            if launch is not None and launch.mem is not None and self._hands_over(launch):
                want = (launch.jobid, launch.mem, launch.cpus)
        self._expected = key
        parked = self.parked
        if parked is not None and want == (parked.jobid, parked.mem, parked.cpus):
            return
        if parked is not None:
            self.parked = None
            self._unpark(parked)
        if want is not None and self.pool is not None:
            try:
                group = self.pool.take(want[1], want[2])
            except CgroupError:
                pass  # the start takes one (or is watched), and says why
            else:
                self._move_spawner(group)
                self.parked = _Parked(want[0], want[1], want[2], group)
                return
        if running is None:
            self._move_spawner(None)
        # else it may stay in the group of the job it started (which ``settle`` will send it
        # out of): a move home now would run on that job's CPU as it starts, and the next
        # park would move it again

    def _move_spawner(self, group: Group | None) -> None:
        """Send the spawner thread into ``group`` (None: home); it moves itself."""
        spawner = self.spawner
        if group is self.spawner_in or spawner is None:
            return
        self.spawner_in = group
        spawner.post(partial(self._spawner_go, group))

    def _spawner_go(self, group: Group | None, *, quiet: bool = True) -> None:
        """In the spawner's thread: move into ``group`` (None: home), but not into the
        cpuset it is in already (v1 cpusets are shared by CPU set). A group it cannot enter
        (it is home then) is entered again, or not, at the start (``_call_in``); there
        the error is raised (not ``quiet``)."""
        backend = self.backend
        assert backend is not None
        here, self._spawner_at = self._spawner_at, None
        if group is None:
            backend.leave()
            return
        # (a group it is in is never reconfigured: ``_give_back`` sends it home first)
        same = here is not None and here.dirs.get("cpuset") == group.dirs.get("cpuset")
        try:
            backend.enter(group, ("cpuset",) if same else ())
        except CgroupError as e:  # it is home: ``enter`` left
            if not quiet:
                raise
            log.warning("cannot move the spawner thread into %s: %s", group.name, e.strerror or e)
            return
        self._spawner_at = group

    def _unpark(self, parked: _Parked) -> None:
        """The start the spawner waited for is not coming (as expected): its group back."""
        self._give_back(parked.group)

    def _give_back(self, group: Group) -> None:
        """``group`` back to the pool, the spawner thread out of it first."""
        if self.spawner_in is group and self.spawner is not None:
            self._move_spawner(None)
            self.spawner.sync()
        if self.pool is not None:
            self.pool.give_back(group)

    def context(self, req: JobLaunch, group: Group | None) -> AbstractContextManager[None]:
        """Its group (whose cpuset pins it, when it has one), or its CPUs by affinity. On
        the way out the keeper steps aside (``aside_of``)."""
        aside = self.aside_of(req.cpus)
        if group is not None and self.backend is not None:
            if req.cpus is not None and not self.backend.cpuset:
                return _both(self.backend.inside(group), pinned(req.cpus, aside))
            step = None if aside is None else partial(_set_affinity, aside)
            return self.backend.inside(group, step)
        return pinned(req.cpus, aside)

    def hand_over(
        self, ended: JobLaunch, entry: ArmedStart, *, quiet: bool = False
    ) -> JobLaunch | None:
        """The armed job ``entry`` starts as ``ended`` ends: it gets CPUs and GPUs of those
        ``ended`` held and of those the daemon set aside for it (the exit record tells the
        daemon which). None if they are too few (a bookkeeping bug: the daemon starts it;
        logged unless ``quiet``)."""
        launch = entry.launch
        try:
            cpus = gpus = None
            if ended.cpus is not None or entry.cpus:
                topo = self.topology or Topology.flat([*(ended.cpus or ()), *entry.cpus])

                def choose(free: Collection[int], n: int) -> Sequence[int] | None:
                    return choose_cpus(free, n, topo)

                cpus, _ = pick_hand_over(ended.cpus or (), entry.cpus, launch.procs, choose)
            if ended.gpus is not None or entry.gpus:
                gpus, _ = pick_hand_over(ended.gpus or (), entry.gpus, launch.ngpus, first_free)
        except AllocationError as e:
            if not quiet:
                log.error("job %d cannot follow job %d: %s", launch.jobid, ended.jobid, e)
            return None
        return launch._replace(cpus=cpus, gpus=gpus)

    def unplace(self, group: Group | None) -> None:
        """The job did not start (or not in ``group``): the group goes back."""
        if group is not None:
            self._give_back(group)

    def started(self, req: JobLaunch, pid: int, tick_lo: int, group: Group | None) -> int | None:
        """``req`` runs as ``pid`` (started at clock tick ``tick_lo`` or later); its OOM
        eventfd for the keeper to watch, if its group has one."""
        held = _Held(pid, group, req.mem, keeper_peak())
        self.jobs[req.jobid] = held
        sock = req.env.get("SJQ_SOCKET", "")
        marker = (b"SJQ_JOBID=%d" % req.jobid, b"SJQ_SOCKET=" + os.fsencode(sock))
        self.watcher.add(
            req.jobid,
            pid,
            start=time.monotonic(),
            limit=req.mem,
            marker=marker,
            group=group,
            start_tick=tick_lo,
        )
        if group is not None and group.oom_fd is not None:
            held.oom_fd = group.oom_fd
        return held.oom_fd

    def aside_of(self, cpus: Sequence[int] | None) -> set[int] | None:
        """Where the keeper goes on once it has started a job pinned to ``cpus`` (its spawn
        ran on them): a spare CPU, if there is one, so that what it does next (measuring
        the job that ended, journal, news for the daemon) does not hold the new job back;
        None: where it is. A hint: a spare CPU another job took meanwhile is merely
        shared. ``step_back`` undoes it before the keeper waits."""
        if cpus is None or self.home is None:
            return None
        aside = self.home.intersection(self.spare).difference(cpus)
        if not aside:
            return None
        self.aside = True
        return aside

    def step_back(self) -> None:
        """Before the keeper waits: back to all its CPUs, so that it wakes wherever it can
        run soonest (widening moves nothing: a cheap call)."""
        if self.aside and self.home is not None:
            self.aside = False
            with contextlib.suppress(OSError):
                os.sched_setaffinity(0, self.home)

    # -- while jobs run ------------------------------------------------------------------

    def due(self) -> float | None:
        """When ``tick`` should run next (monotonic), or None."""
        return self.watcher.due()

    def tick(self) -> list[int]:
        """Sample the jobs that are due; the jobs just stopped for their memory."""
        # every event the watcher reports (OverLimit, OomKill) ends a job
        return self._stop([cast("int", ev.job) for ev in self.watcher.tick()])

    def oom_event(self, jobid: int) -> list[int]:
        """A group's OOM eventfd is readable: the kernel found the job over its limit and
        kills a process of it; the rest of the job is stopped at once (the kernel counts
        the kill a moment later: not waited for)."""
        held = self.jobs.get(jobid)
        if held is None or held.group is None or not held.group.oom_fired():
            return []
        self.watcher.sample(jobid)  # the memory it had, for its peak
        return self._stop([jobid])

    def _stop(self, jobids: list[int]) -> list[int]:
        out = []
        for jobid in jobids:
            held = self.jobs.get(jobid)
            if held is None or held.over:
                continue
            held.over = True
            held.dying.update(self.watcher.stop(jobid))
            log.info("job %d is over its memory (MEM): stopped", jobid)
            out.append(jobid)
        return out

    def out_of_memory(self, jobid: int) -> bool:
        """Whether memory stopped the job, as far as known now (cheap: before the keeper
        decides whether an armed job that needs this one's success may start)."""
        held = self.jobs.get(jobid)
        if held is None:
            return False
        return held.over or (held.group is not None and held.group.oom_fired())

    def orphan(self, pid: int, ru_utime: float, ru_stime: float) -> None:
        """The keeper (a subreaper) reaped ``pid``, which is not a job's first process: its
        CPU time is its job's, if the job is still running."""
        owner = self.watcher.owner(pid)
        held = self.jobs.get(owner) if isinstance(owner, int) else None
        if held is not None:
            held.dying.pop(pid, None)  # exact now
            held.reaped_utime += ru_utime
            held.reaped_stime += ru_stime

    # -- a job's end ---------------------------------------------------------------------

    def settle(self, jobid: int, ru: resource.struct_rusage) -> Settled:
        """The job's first process has been reaped: kill what is left of it (its whole
        group, or every process of its tree the watcher knows), measure it, give its group
        back."""
        held = self.jobs.pop(jobid)
        held.dying.update(self.watcher.stop(jobid, reaped=held.pid))
        held.dying.pop(held.pid, None)  # wait4 counted it (an earlier stop may have listed it)
        for u_, s_ in held.dying.values():
            held.reaped_utime += u_
            held.reaped_stime += s_
        judge = self.watcher.finish(jobid)
        group_usage = None
        if held.group is not None:
            group_usage = held.group.finish()
        u = usage(
            judge=judge,
            group=group_usage,
            ru_utime=ru.ru_utime,
            ru_stime=ru.ru_stime,
            ru_maxrss_kb=ru.ru_maxrss,
            keeper_peak=held.keeper_peak,
            reaped_utime=held.reaped_utime,
            reaped_stime=held.reaped_stime,
        )
        reason = ""
        if held.over or u.oom:
            limit = held.limit if held.limit is not None else u.maxrss
            reason = out_of_memory_reason(limit, u.maxrss)
        if held.group is not None:
            self._give_back(held.group)
        return Settled(u, reason)

    def reset_used(self) -> bool:
        """Reset the groups jobs gave back, in the keeper's thread once its news is sent
        (each in tens of microseconds, its files still in the caches: cheaper than waking
        the janitor thread for it). True if the janitor should tidy now (``wants_tidy``):
        a group still held processes, or the pool runs low."""
        pool = self.pool
        if pool is None or not pool.used:
            return False
        try:
            pool.reset_used()
        except Exception:
            log.exception("cannot reset used groups")
        return self.wants_tidy()

    def wants_tidy(self, idle: bool = False) -> bool:
        """Whether groups wait for the janitor thread's tidy (retiring, killing what a job
        left, making new ones): when the keeper is ``idle``, or when the pool runs low."""
        pool = self.pool
        if pool is None or not pool.used or self._tidy_lock.locked():
            return False
        return idle or len(pool.ready) <= pool.size // 2

    def tidy(self) -> None:
        """Reset used groups and top the pool up: off the critical path (the janitor thread,
        or the keeper when idle). Never raises."""
        if self.pool is None:
            return
        with self._tidy_lock:
            try:
                self.pool.tidy()
            except Exception:
                log.exception("cannot tidy the group pool")


def _set_affinity(cpus: set[int]) -> None:
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, cpus)


@contextmanager
def _both(
    first: AbstractContextManager[None], second: AbstractContextManager[None]
) -> Iterator[None]:
    with first, second:
        yield
