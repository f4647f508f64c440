"""A job's group and the interface of a cgroup backend. Imports no asyncio or sqlite3.

``Backend`` is what one cgroup version does (make, enter, leave, find groups); ``Group``
is one job's group in every hierarchy of its backend, with its control files kept open;
``GroupSample`` and ``GroupUsage`` are what a group reports during and after a job.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import select
import signal
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass

from .fs import CgroupError, alive, pids_in, write_file

__all__ = [
    "BUSY_TIDIES",
    "KEEP_CHARGE",
    "KILL_ROUNDS",
    "Backend",
    "CgroupError",
    "Group",
    "GroupSample",
    "GroupUsage",
    "remove_tree",
    "restore",
]

KEEP_CHARGE = 4 << 20  # bytes of page cache a used group may hold and still be reused
BUSY_TIDIES = 3  # tidy passes a group may still hold dying processes before it is retired
KILL_ROUNDS = 50  # listings of a group while killing it: forks racing the kill show up in the next
# Control files a group both reads and writes (a peak or a counter reset for each job): one
# descriptor each. Every descriptor a keeper holds is copied into each job it spawns and
# closed again at the job's exec (close-on-exec), so a pool of groups keeps few.
READ_WRITE = frozenset({"memory.max_usage_in_bytes", "cpuacct.usage"})


# -- what a group reports ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GroupSample:
    """A look at a running job's group (one or two file reads)."""

    resident: int | None  # anon + shmem bytes charged to the group; None: no memory controller
    cache: int  # page cache charged to the group (not resident by sjq's definition)
    oom_kills: int  # processes the kernel killed for the group's limit since the job began


@dataclass(frozen=True, slots=True)
class GroupUsage:
    """A group's figures once its job has ended."""

    peak_charge: int | None  # the kernel's peak: resident + page cache + kernel memory
    cache: int  # what is still charged once every process has gone: page cache, mostly
    cpu_user: float | None  # seconds; None without CPU accounting
    cpu_sys: float | None
    oom_kills: int


# -- backends -----------------------------------------------------------------------------


class Backend:
    """One cgroup version's way of doing things; ``detect`` builds the one to use."""

    kind = ""
    memory = False  # can limit and measure memory
    cpu = False  # can account CPU time
    cpuset = False  # can pin CPUs

    def __init__(self, name: str) -> None:
        self.name = name  # sjq.<pid>
        self._names = itertools.count(1)  # next() is atomic: a pool may tidy in a thread

    # subclasses provide these
    def setup(self) -> None:
        raise NotImplementedError

    def create(self, name: str) -> Group:
        raise NotImplementedError

    def enter(self, group: Group, skip: Collection[str] = ()) -> None:
        """Move the calling thread (v1) or process (v2) into ``group``; ``skip``: v1
        hierarchies it is known to be in already."""
        raise NotImplementedError

    def leave(self, then: Callable[[], None] | None = None) -> None:
        """Back to the daemon's groups; ``then`` runs as soon as the thread may run on any
        of its CPUs again (its cpuset left), before the rest."""
        raise NotImplementedError

    # ``enter`` and ``leave`` move the calling thread alone (v1), not the whole process
    threads = False

    def bases(self) -> list[str]:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def group_of(self, pid: int) -> Group | None:
        raise NotImplementedError

    def group_from_state(self, pid: int, state: str) -> Group | None:
        """The group of a job re-adopted after a crash, with the baselines its keeper's
        journal recorded (``Group.state``); None if ``pid`` is in no group of ours."""
        g = self.group_of(pid)
        if g is not None:
            restore(g, state)
        return g

    @contextlib.contextmanager
    def inside(self, group: Group, then: Callable[[], None] | None = None) -> Iterator[None]:
        """``with backend.inside(g): pid = os.posix_spawn(...)``; ``then``: see ``leave``."""
        self.enter(group)
        try:
            yield
        finally:
            self.leave(then)

    def held_fds(self) -> list[int]:
        """Descriptors the backend keeps open (the files that move a thread home): a
        process forked after ``setup`` that closes what it inherited must keep these."""
        return []

    def new_group(self) -> Group:
        # Each keeper (a process forked from the daemon) makes groups below the same base:
        # its pid in the name keeps theirs apart.
        return self.create(f"j{os.getpid()}.{next(self._names)}")

    def teardown(self) -> None:
        """Remove our base directories (and any empty group left in them)."""
        for base in self.bases():
            remove_tree(base)

    def sweep_stale(self) -> list[str]:
        """Remove what daemons that are gone left (``sjq.<pid>`` of a dead pid), where no
        process of theirs remains; returns what was removed."""
        removed: list[str] = []
        for base in self.bases():
            parent = os.path.dirname(base)
            try:
                names = os.listdir(parent)
            except OSError:
                continue
            for n in names:
                rest = n.removeprefix("sjq.")
                pid = rest[: len(rest) - len(rest.lstrip("0123456789"))]
                if n.startswith("sjq.") and pid and not alive(int(pid)):
                    path = os.path.join(parent, n)
                    if remove_tree(path):
                        removed.append(path)
        return removed


def remove_tree(path: str) -> bool:
    """rmdir a group and its child groups, deepest first (a cgroup directory cannot be
    removed with rm -r); False if a group still holds processes."""
    ok = True
    try:
        entries = list(os.scandir(path))
    except FileNotFoundError:
        return True
    except OSError:
        return False
    for e in entries:
        if e.is_dir(follow_symlinks=False):
            ok = remove_tree(e.path) and ok
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass
    except OSError:
        return False
    return ok


class Group:
    """One job's group (in every hierarchy of its backend). Made by ``Backend.create``,
    reused through ``GroupPool``.

    The control files it reads or writes for every job stay open for its whole life and
    are read with pread at offset 0 (the kernel regenerates the text): ~1 us a read here,
    against ~17 us for an open/read/close in Python. A pooled v1 group keeps seven
    control-file descriptors and its OOM eventfd (the cpusets it is pinned by are shared:
    their ``tasks`` descriptors are the backend's); files written only when a job's limits
    differ from the last job's are opened for that write (``_put(..., keep=False)``), and
    cgroup.procs for each listing (``pids``)."""

    def __init__(self, backend: Backend, name: str, dirs: dict[str, str]) -> None:
        self.backend = backend
        self.name = name
        self.dirs = dirs  # controller (or "" for v2) -> directory
        self.mem: int | None = None  # the memory limit now set (None: none)
        self.cpus: tuple[int, ...] | None = None  # the CPU set now set (None: the parent's)
        self.known = True  # mem and cpus are what the kernel has (not after a failed write)
        self.oom0 = 0  # the OOM-kill count when the current job began
        self.res0 = 0  # resident charge left from before the current job (usually 0)
        self.cpu0 = (0.0, 0.0)  # CPU counters when the current job began (v2: no reset)
        self.fresh = True  # never held a job (v2 memory.peak covers its whole life)
        self.used = 0  # jobs it has held
        self.busy = 0  # tidy passes that found processes still in it
        self.fds: dict[tuple[str, str], int] = {}
        self.peak_fd: int | None = None  # v2: memory.peak opened and reset for this job
        self.oom_fd: int | None = None  # v1: an eventfd readable when the kernel OOM-kills
        self._oom_poll: select.poll | None = None  # ... asked without a read that fails
        self.oom_flag = False  # that eventfd fired during the current job
        # ``kill`` found no process in it since its last job ended: nothing can have come
        # in (only the keeper puts processes in a group), so tidying need not list it again
        self.empty = False

    @property
    def path(self) -> str:
        return next(iter(self.dirs.values()))

    def _fd(self, ctrl: str, name: str, write: bool = False) -> int:
        key = (ctrl, name)
        fd = self.fds.get(key)
        if fd is None:
            rw = name in READ_WRITE
            mode = os.O_RDWR if rw else os.O_WRONLY if write else os.O_RDONLY
            fd = os.open(os.path.join(self.dirs[ctrl], name), mode | os.O_CLOEXEC)
            self.fds[key] = fd
        return fd

    def _get(self, ctrl: str, name: str) -> bytes:
        fd = self._fd(ctrl, name)
        size = 8192
        while True:
            data = os.pread(fd, size, 0)
            if len(data) < size:
                return data
            size *= 4  # a long cgroup.procs

    def _put(self, ctrl: str, name: str, value: str, keep: bool = True) -> None:
        """Write ``value`` to a control file; ``keep``: through a descriptor kept open (a
        file written for most jobs), else opened for this write only."""
        if keep:
            os.write(self._fd(ctrl, name, True), value.encode())
        else:
            write_file(os.path.join(self.dirs[ctrl], name), value)

    def _int(self, ctrl: str, name: str) -> int:
        return int(self._get(ctrl, name))

    def pids(self) -> list[int]:
        """Every process in the group (v1: of its memory hierarchy, which holds the job).

        Opened afresh each time: v1 caches a cgroup.procs listing per open file for a
        second, so a kept descriptor would show processes that are gone."""
        # never this process: under v1 a thread of the keeper may wait in a group
        # (sjq.keeper.spawner), and cgroup.procs then lists the keeper
        me = os.getpid()
        return [p for p in pids_in(os.path.join(self.path, "cgroup.procs")) if p != me]

    def populated(self) -> bool:
        return not self.empty and bool(self.pids())

    def arm_oom_event(self) -> None:
        """Make ``oom_fd`` (v1: an eventfd the kernel signals on an OOM in the group); a
        group made by ``group_of`` has none until then. Nothing to do under v2, where
        memory.oom.group kills the whole group."""

    def _set_oom_fd(self, efd: int) -> None:
        """``efd`` is the group's OOM eventfd (``arm_oom_event``)."""
        self.oom_fd = efd
        self._oom_poll = select.poll()
        self._oom_poll.register(efd, select.POLLIN)

    def oom_fired(self) -> bool:
        """Whether the kernel signalled an OOM in this group during the current job (v1:
        its eventfd; the keeper may select on ``oom_fd`` and call this when it is
        readable). The notification comes as the OOM begins; the kill is counted a
        moment later (``sample().oom_kills``)."""
        # poll first: a read of an empty eventfd raises, which costs twice as much
        poll, fd = self._oom_poll, self.oom_fd
        if not self.oom_flag and poll is not None and fd is not None and poll.poll(0):
            with contextlib.suppress(BlockingIOError):
                os.eventfd_read(fd)
                self.oom_flag = True
        return self.oom_flag

    # implemented per backend
    def configure(self, mem: int | None, cpus: Sequence[int] | None) -> None:
        raise NotImplementedError

    def sample(self) -> GroupSample:
        raise NotImplementedError

    def finish(self) -> GroupUsage:
        raise NotImplementedError

    def reset(self) -> bool:
        raise NotImplementedError

    def kill(self) -> int:
        """SIGKILL every process in the group, again while new ones show up (a fork
        racing the kill); returns how many were signalled. Processes already signalled
        may still be listed while they exit (uninterruptible sleep)."""
        sent: set[tuple[int, int]] = set()
        for i in range(KILL_ROUNDS):
            fresh = False
            pids = self.pids()
            self.empty = i == 0 and not pids
            for pid in pids:
                key = (pid, start_of(pid))
                if key in sent:
                    continue
                sent.add(key)
                fresh = True
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            if not fresh:
                break
        return len(sent)

    def remove(self) -> bool:
        self.close()
        ok = True
        for d in self.dirs.values():
            ok = remove_tree(d) and ok
        return ok

    def close(self) -> None:
        for fd in [*self.fds.values(), self.peak_fd, self.oom_fd]:
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.fds.clear()
        self.peak_fd = self.oom_fd = self._oom_poll = None

    def state(self) -> str:
        """One word for the keeper's journal, so that a daemon re-adopting the job after a
        crash finds the group and knows its baselines (``Backend.group_from_state``)."""
        u, s = self.cpu0
        return f"{self.name}:{self.oom0}:{self.res0}:{u!r}:{s!r}"


def start_of(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        return int(data[data.rindex(b")") + 2 :].split()[19])
    except (OSError, ValueError, IndexError):
        return -1


def restore(g: Group, state: str) -> None:
    with contextlib.suppress(ValueError):
        _, oom0, res0, u, s = state.split(":")
        g.oom0, g.res0, g.cpu0 = int(oom0), int(res0), (float(u), float(s))
