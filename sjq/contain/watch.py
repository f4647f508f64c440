"""The watcher: samples jobs' memory, keeps peaks, judges limits. Imports no asyncio or sqlite3.

It samples each running job's memory (its whole process tree, or its cgroup), keeps its
peak, and says when a job has been over its limit for ``over`` samples in a row.

Pure parts (property-tested): ``next_due`` (when to sample) and ``Judge`` (peak and the
over-the-limit decision). Reading parts: ``ProcTree`` (which processes are a job's) and
``Watcher`` (ties them to /proc or to a job's group). The keeper calls ``Watcher.tick``
when ``Watcher.due`` says; nothing here sleeps or starts a thread.

**Schedule.** A job is first sampled ``first`` (20 ms) after its start, then at gaps
that double (20, 40, 80 ms ...) up to ``interval`` (0.25 s), and every ``interval``
after that. A job that ends sooner is never sampled and costs nothing (see
``account.usage``: what its peak is then).

**Decision.** Over the limit = resident memory above MEM in ``over`` (2) consecutive
samples: a job is stopped 0.25-0.5 s after it crosses its limit and stays above. One
sample above, then one below, resets the count (a transient spike is forgiven; the
cgroup method has no such grace).

**What slips between samples** (watch method; the cgroup method has none of this):
memory allocated and freed between two samples (a spike shorter than the interval);
in 2 x interval, a job allocating fast can go far past MEM before it is stopped (at
1 GB/s, half a gigabyte); processes born and ended between samples (their memory; their
CPU time still reaches the tree through wait4); memory that no process maps (files in
tmpfs such as /dev/shm written with write(2)).

**Which processes.** Every descendant of the job's first process, found by parent links
at each sample (this kernel has no /proc/<pid>/task/<tid>/children, so /proc is listed;
only processes not seen before are read). A process that double-forks and is reparented
(to init, or to the keeper when it is a subreaper) stays the job's if it was seen before
its parent ended; one born and orphaned between two samples is recognised by the job's
marker in its environment (``SJQ_JOBID`` and ``SJQ_SOCKET``), read only for new
processes whose parent is init or the keeper.

**Resident memory** = anonymous + shared memory (``RssAnon + RssShmem``, counters, cheap),
not program text, libraries, mapped files or page cache. Forked workers share
copy-on-write pages: summing RSS counts those once per process. So when a tree has more
than one process, the sum is corrected with ``Pss_Anon + Pss_Shmem`` from smaps_rollup
(a shared page counts 1/k in each of its k processes). That read walks page tables (~9 us
per resident MB), so a full reading of the tree is taken at most as often as keeps its
cost under ``pss_share`` (2 %) of one CPU, or four times that share when the tree changed
(a process came or went, or the RSS sum moved by a quarter: a fork of workers is such a
change). Between full readings each process keeps its last Pss/RSS ratio and a new one
counts its whole RSS. A decision that a job is over its limit is always taken on a
fresh full reading.
"""

from __future__ import annotations

import contextlib
import heapq
import os
import signal
import time
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field

from .cgroup import Group
from .procfs import CLK_TCK, ProcStat, marker_in_environ, read_pss, read_resident, read_stat

__all__ = ["Judge", "OomKill", "OverLimit", "ProcTree", "WatchPolicy", "Watcher", "next_due"]

COALESCE = 0.005  # seconds: jobs due this soon are sampled in the same tick (one /proc scan)
START_SLACK = 100  # clock ticks a process may start after the lower bound given for it


@dataclass(frozen=True, slots=True)
class WatchPolicy:
    interval: float = 0.25  # seconds between samples once a job has run a while
    first: float = 0.02  # seconds from a job's start to its first sample
    over: int = 2  # consecutive samples above the limit that stop a job
    pss_share: float = 0.02  # at most this share of one CPU spent reading smaps_rollup

    def __post_init__(self) -> None:
        if not (self.interval > 0 and 0 < self.first <= self.interval and self.over >= 1):
            raise ValueError(f"bad watch policy {self}")


def next_due(policy: WatchPolicy, start: float, last: float | None) -> float:
    """When a job started at ``start`` and last sampled at ``last`` (None: never) is
    sampled next: ``first`` after its start, then doubling gaps up to ``interval``."""
    if last is None:
        return start + policy.first
    return last + min(max(last - start, policy.first), policy.interval)


@dataclass(slots=True)
class Judge:
    """One job's samples: the peak, and whether the job is over its limit (pure)."""

    limit: int | None
    over_after: int = 2
    streak: int = 0  # consecutive samples above the limit, up to now
    peak: int = 0
    samples: int = 0
    last: int = 0

    def observe(self, resident: int) -> bool:
        """Take one sample; True when the last ``over_after`` samples were all above."""
        self.samples += 1
        self.last = resident
        self.peak = max(self.peak, resident)
        if self.limit is not None and resident > self.limit:
            self.streak += 1
        else:
            self.streak = 0
        return self.streak >= self.over_after


# -- which processes belong to which job -------------------------------------------------


class ProcTree:
    """Processes by job, kept up to date by ``scan`` (incremental: only pids not seen
    before are read, since a process cannot change which job it belongs to)."""

    def __init__(self, proc: str = "/proc", reapers: Iterable[int] | None = None) -> None:
        self.proc = proc
        self.reapers = set(reapers) if reapers is not None else {1, os.getpid()}
        self.seen: dict[int, tuple[int, Hashable | None]] = {}  # pid -> (start, job)
        self.members: dict[Hashable, dict[int, int]] = {}  # job -> {pid: start}
        self.markers: dict[Hashable, tuple[bytes, ...]] = {}
        self.since: dict[Hashable, int] = {}  # job -> its first process's start tick

    def add(
        self, job: Hashable, pid: int, marker: tuple[bytes, ...] = (), start: int | None = None
    ) -> bool:
        """Track ``job`` from its first process; False if that is gone already. ``start``:
        its start in clock ticks since boot, or a lower bound (the keeper's tick before the
        spawn): reading /proc/<pid>/stat of a process in the middle of its exec costs
        ~45 us here, more than the rest of this."""
        if start is None:
            st = read_stat(pid, self.proc)
            if st is None:
                self.members[job] = {}
                self.markers[job] = marker
                self.since[job] = 1 << 62
                return False
            start = st.start
        self.members[job] = {pid: start}
        self.markers[job] = marker
        self.since[job] = start
        self.seen[pid] = (start, job)
        return True

    def drop(self, job: Hashable) -> dict[int, int]:
        """Stop tracking ``job``; its processes as last seen ({pid: start})."""
        pids = self.members.pop(job, {})
        self.markers.pop(job, None)
        self.since.pop(job, None)
        for pid in pids:
            self.seen.pop(pid, None)
        return pids

    def owner(self, pid: int) -> Hashable | None:
        entry = self.seen.get(pid)
        return entry[1] if entry else None

    def scan(self) -> None:
        try:
            names = os.listdir(self.proc)
        except OSError:
            return
        now = {int(n) for n in names if n.isdigit()}
        for pid in [p for p in self.seen if p not in now]:
            _, job = self.seen.pop(pid)
            if job is not None and job in self.members:
                self.members[job].pop(pid, None)
        new = []
        for pid in now - self.seen.keys():
            st = read_stat(pid, self.proc)
            if st is not None:
                new.append(st)
        # parents before children: a parent starts no later than its child
        new.sort(key=lambda s: (s.start, s.pid))
        for st in new:
            job = None
            parent = self.seen.get(st.ppid)
            if parent is not None and parent[1] is not None and parent[0] <= st.start:
                job = parent[1]
            elif st.ppid in self.reapers:
                job = self._by_marker(st.pid, st.start)
            self.seen[st.pid] = (st.start, job)
            if job is not None:
                self.members[job][st.pid] = st.start

    def _by_marker(self, pid: int, start: int) -> Hashable | None:
        for job, marker in self.markers.items():
            if marker and self.since[job] <= start and marker_in_environ(pid, marker, self.proc):
                return job
        return None

    def pids(self, job: Hashable) -> dict[int, int]:
        return dict(self.members.get(job, {}))


# -- the watcher ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OverLimit:
    """A watched job was above its limit for ``policy.over`` samples: stop it."""

    job: Hashable
    resident: int
    limit: int
    peak: int


@dataclass(frozen=True, slots=True)
class OomKill:
    """The kernel OOM-killed processes of a job's group (cgroup method). Under v1 the
    rest of the job lives on: stop it (``Group.kill``); v2's memory.oom.group has already
    killed it all."""

    job: Hashable
    kills: int


Event = OverLimit | OomKill


@dataclass(slots=True)
class _Job:
    start: float
    judge: Judge
    group: Group | None
    last: float | None = None
    # the last full Pss reading: pid -> (RSS, Pss) then; its time, cost and RSS sum
    pss: dict[int, tuple[int, int]] = field(default_factory=dict)
    pss_at: float = -1e9
    pss_cost: float = 0.0
    pss_upper: int = 0
    oom_seen: int = 0
    done: bool = False  # an event that ends the job was reported


class Watcher:
    """Samples jobs when they are due. ``add`` at spawn, ``tick`` when ``due``, ``finish``
    at reap. A job with a ``group`` is measured from the group (exact membership, and the
    kernel's counters when it has a memory controller); others from ``ProcTree``."""

    def __init__(
        self,
        policy: WatchPolicy | None = None,
        *,
        proc: str = "/proc",
        reapers: Iterable[int] | None = None,
    ) -> None:
        self.policy = policy or WatchPolicy()
        self.tree = ProcTree(proc, reapers)
        self.proc = proc
        self.jobs: dict[Hashable, _Job] = {}
        self.heap: list[tuple[float, int, Hashable]] = []
        self.seq = 0
        self.scans = 0

    def add(
        self,
        job: Hashable,
        pid: int,
        *,
        start: float,
        limit: int | None,
        marker: tuple[bytes, ...] = (),
        group: Group | None = None,
        start_tick: int | None = None,
    ) -> None:
        """Watch ``job``, whose first process ``pid`` started at ``start`` (monotonic;
        ``start_tick``: in clock ticks since boot, or a lower bound, see ``ProcTree.add``).
        ``marker``: ``NAME=value`` items of the job's environment that recognise its
        orphans. ``group``: its cgroup, if it has one."""
        self.jobs[job] = _Job(start, Judge(limit, self.policy.over), group)
        if group is None:
            self.tree.add(job, pid, marker, start_tick)
        self._push(job, next_due(self.policy, start, None))

    def due(self) -> float | None:
        """When ``tick`` should next run (monotonic), or None with nothing to watch."""
        while self.heap and self.heap[0][2] not in self.jobs:
            heapq.heappop(self.heap)
        return self.heap[0][0] if self.heap else None

    def tick(self, now: float | None = None) -> list[Event]:
        """Sample every job due by ``now`` (a little later too, to share the /proc scan)."""
        now = time.monotonic() if now is None else now
        batch: list[Hashable] = []
        while self.heap and self.heap[0][0] <= now + COALESCE:
            _, _, job = heapq.heappop(self.heap)
            if job in self.jobs and job not in batch:
                batch.append(job)
        if not batch:
            return []
        if any(self.jobs[j].group is None for j in batch):
            self.tree.scan()
            self.scans += 1
        events: list[Event] = []
        for job in batch:
            w = self.jobs[job]
            ev = self._sample(job, w, now)
            if ev is not None and not w.done:
                events.append(ev)
                w.done = isinstance(ev, OverLimit) or w.done
            w.last = now
            self._push(job, next_due(self.policy, w.start, now))
        return events

    def sample(self, job: Hashable, now: float | None = None) -> Event | None:
        """Sample one job now, off schedule (e.g. once more at its end)."""
        w = self.jobs.get(job)
        if w is None:
            return None
        if w.group is None:
            self.tree.scan()
            self.scans += 1
        return self._sample(job, w, time.monotonic() if now is None else now)

    def finish(self, job: Hashable) -> Judge | None:
        """Stop watching ``job``; its samples (peak, count)."""
        w = self.jobs.pop(job, None)
        self.tree.drop(job)
        return None if w is None else w.judge

    def owner(self, pid: int) -> Hashable | None:
        """The job a process belongs to (e.g. an orphan the keeper just reaped)."""
        return self.tree.owner(pid)

    def pids(self, job: Hashable) -> list[int]:
        """The job's processes still alive, as far as the watcher knows."""
        w = self.jobs.get(job)
        if w is not None and w.group is not None:
            return w.group.pids()
        return [st.pid for st in self._alive(job)]

    def _alive(
        self, job: Hashable, reaped: int | None = None, zombies: bool = False
    ) -> list[ProcStat]:
        # A start may be a lower bound (``ProcTree.add``): the same process starts at
        # most START_SLACK later; a recycled pid, only after the pid space has wrapped.
        # ``reaped``: a process known gone (waited for), not looked for; ``zombies``:
        # with those dead but not waited for (their CPU time is final).
        gone = "X" if zombies else "ZX"
        return [
            st
            for pid, start in self.tree.pids(job).items()
            if pid != reaped
            and (st := read_stat(pid, self.proc)) is not None
            and start <= st.start <= start + START_SLACK
            and st.state not in gone
        ]

    def stop(self, job: Hashable, reaped: int | None = None) -> dict[int, tuple[float, float]]:
        """SIGKILL every process of the job (its group, or every process of its tree the
        watcher knows but ``reaped``, one already waited for); for a tree, the CPU time
        (user, system seconds) each process had used just before, so that the time of a
        process nobody will wait for is not lost."""
        w = self.jobs.get(job)
        if w is not None and w.group is not None:
            w.group.kill()
            return {}
        used: dict[int, tuple[float, float]] = {}
        # Zombies too: a process killed with its job's process group an instant before
        # is dead, and reaped (as an orphan of the keeper's) only once the job is
        # measured; its time must not be lost in between. (A signal to a zombie is a
        # no-op.)
        for st in self._alive(job, reaped, zombies=True):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(st.pid, signal.SIGKILL)
                used[st.pid] = (st.utime / CLK_TCK, st.stime / CLK_TCK)
        return used

    def kill(self, job: Hashable, sig: int = signal.SIGKILL) -> int:
        """Signal every process of the job the watcher knows (those that left its process
        group included); returns how many."""
        w = self.jobs.get(job)
        if w is not None and w.group is not None and sig == signal.SIGKILL:
            return w.group.kill()
        n = 0
        for pid in self.pids(job):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
                n += 1
        return n

    # -- measuring --

    def _push(self, job: Hashable, when: float) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (when, self.seq, job))

    def _sample(self, job: Hashable, w: _Job, now: float) -> Event | None:
        if w.group is not None:
            s = w.group.sample()
            if s.oom_kills > w.oom_seen:
                w.oom_seen = s.oom_kills
                if s.resident is not None:
                    w.judge.observe(s.resident)
                return OomKill(job, s.oom_kills)
            if s.resident is not None:
                w.judge.observe(s.resident)  # the kernel enforces the limit itself
                return None
            pids = w.group.pids()
        else:
            pids = list(self.tree.pids(job))
        resident = self._resident(w, pids, now)
        if resident is None:
            return None
        if w.judge.observe(resident):
            assert w.judge.limit is not None
            return OverLimit(job, resident, w.judge.limit, w.judge.peak)
        return None

    def _resident(self, w: _Job, pids: list[int], now: float) -> int | None:
        rss: dict[int, int] = {}
        for pid in pids:
            r = read_resident(pid, self.proc)
            if r is not None:
                rss[pid] = r
        if not rss:
            return None
        upper = sum(rss.values())
        if len(rss) == 1:
            w.pss.clear()
            return upper
        # Between full Pss readings: a process read before keeps its Pss/RSS ratio, a new
        # one counts its whole RSS (an upper bound).
        estimate = 0
        for pid, r in rss.items():
            cached = w.pss.get(pid)
            estimate += r if cached is None or not cached[0] else cached[1] * r // cached[0]
        limit = w.judge.limit
        changed = rss.keys() != w.pss.keys() or abs(upper - w.pss_upper) * 4 > w.pss_upper
        since = now - w.pss_at
        if (limit is None or estimate <= limit) and not (
            since >= w.pss_cost / self.policy.pss_share
            or (changed and since * 4 >= w.pss_cost / self.policy.pss_share)
        ):
            return estimate
        t0 = time.perf_counter()
        total = 0
        w.pss = {}
        for pid, r in rss.items():
            p = read_pss(pid, self.proc)
            p = r if p is None else p
            w.pss[pid] = (r, p)
            total += p
        w.pss_cost = max(time.perf_counter() - t0, 1e-6)
        w.pss_at = now
        w.pss_upper = upper
        return total
