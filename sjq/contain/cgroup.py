"""Job containment in cgroups v1 and v2, and a pool of groups. Imports no asyncio or sqlite3.

What this machine allows (a v2 delegated subtree, or the v1 memory/cpuacct/cpuset
hierarchies as root), one group per job below the daemon's own group, memory limits,
CPU sets, reading usage, killing a whole group, and a pool of reusable groups.

Layout: ``<own>/sjq.<daemon pid>/j<n>`` in every hierarchy used, where ``<own>`` is the
daemon's group there (from /proc/self/cgroup), never the hierarchy's root. Under v2 with
controllers to enable, a daemon first moves itself into the leaf ``<own>/sjq.<pid>.d``
(systemd's rule: processes live only in leaves of a delegated subtree).

How a job's first instruction is inside its group: the spawning thread (the keeper's main
thread) moves itself into the job's group, calls posix_spawn, and moves back
(``Backend.enter``/``leave``). A child starts in its parent thread's groups, so the job is
contained before it runs anything; the window holds no other process of the keeper. Under
v1 only the calling thread moves (``tasks``); under v2 the whole keeper process does
(``cgroup.procs``). Side effect, documented: pages the keeper faults in during those
microseconds are charged to the job's memory group (kilobytes). ``clone3(CLONE_INTO_CGROUP)``
would avoid the move under v2, but Python cannot call it safely (a raw clone skips libc's
fork handlers) and glibc 2.36 has no posix_spawn attribute for it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from .cpus import format_cpulist

__all__ = [
    "Backend",
    "CgroupError",
    "Detection",
    "Group",
    "GroupPool",
    "GroupSample",
    "GroupUsage",
    "Mount",
    "V1Backend",
    "V2Backend",
    "detect",
    "parse_mountinfo",
    "parse_proc_cgroup",
]

V1_CONTROLLERS = ("memory", "cpuacct", "cpuset")
KEEP_CHARGE = 4 << 20  # bytes of page cache a used group may hold and still be reused
BUSY_TIDIES = 3  # tidy passes a group may still hold dying processes before it is retired
KILL_ROUNDS = 50  # listings of a group while killing it: forks racing the kill show up in the next


class CgroupError(OSError):
    """A group could not be made, configured or entered; the message says where and why.
    The caller falls back to the watcher for that job."""


@dataclass(frozen=True, slots=True)
class Mount:
    fstype: str  # "cgroup" (v1) or "cgroup2"
    root: str  # the hierarchy path mounted here (not "/" inside some containers)
    point: str
    options: frozenset[str]  # super options: the v1 controllers of this hierarchy


def _unescape(field: str) -> str:
    # mountinfo writes space, tab, newline and backslash as \040 \011 \012 \134
    if "\\" not in field:
        return field
    out = bytearray()
    i = 0
    raw = field.encode()
    while i < len(raw):
        if raw[i] == 0x5C and i + 4 <= len(raw) and raw[i + 1 : i + 4].isdigit():
            out.append(int(raw[i + 1 : i + 4], 8))
            i += 4
        else:
            out.append(raw[i])
            i += 1
    return out.decode(errors="surrogateescape")


def parse_mountinfo(text: str) -> list[Mount]:
    """The cgroup mounts in a /proc/self/mountinfo text."""
    out: list[Mount] = []
    for line in text.splitlines():
        head, sep, tail = line.partition(" - ")
        if not sep:
            continue
        h = head.split()
        t = tail.split()
        if len(h) < 5 or len(t) < 3 or t[0] not in ("cgroup", "cgroup2"):
            continue
        out.append(Mount(t[0], _unescape(h[3]), _unescape(h[4]), frozenset(t[2].split(","))))
    return out


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """/proc/<pid>/cgroup -> {controller: path}; the v2 line's key is ``""``."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, ctrls, path = parts
        if not ctrls:
            out[""] = path
        for c in ctrls.split(","):
            if c:
                out[c] = path
    return out


def _dir_of(m: Mount, path: str) -> str | None:
    """Where a hierarchy path is visible under the mount, or None if outside its root."""
    root = m.root.rstrip("/")
    if path != root and not path.startswith(root + "/") and root:
        return None
    return os.path.join(m.point, path[len(root) :].lstrip("/")).rstrip("/") or "/"


def _write(path: str, data: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, data.encode())
    finally:
        os.close(fd)


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _kv(text: bytes, *keys: str) -> dict[str, int]:
    """``key value`` lines (memory.stat, cpu.stat, memory.events): only ``keys``."""
    want = {k.encode() for k in keys}
    out: dict[str, int] = {}
    for line in text.splitlines():
        k, _, v = line.partition(b" ")
        if k in want:
            out[k.decode()] = int(v)
    return out


def _pids(path: str) -> list[int]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return []
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return [int(p) for p in b"".join(chunks).split()]
    except (OSError, ValueError):
        return []
    finally:
        os.close(fd)


def _alive(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")


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
        self.counter = 0

    # subclasses provide these
    def setup(self) -> None:
        raise NotImplementedError

    def create(self, name: str) -> Group:
        raise NotImplementedError

    def enter(self, group: Group) -> None:
        raise NotImplementedError

    def leave(self) -> None:
        raise NotImplementedError

    def bases(self) -> list[str]:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def group_of(self, pid: int) -> Group | None:
        raise NotImplementedError

    @contextlib.contextmanager
    def inside(self, group: Group) -> Iterator[None]:
        """``with backend.inside(g): pid = os.posix_spawn(...)``"""
        self.enter(group)
        try:
            yield
        finally:
            self.leave()

    def new_group(self) -> Group:
        self.counter += 1
        return self.create(f"j{self.counter}")

    def teardown(self) -> None:
        """Remove our base directories (and any empty group left in them)."""
        for base in self.bases():
            _remove_tree(base)

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
                if n.startswith("sjq.") and pid and not _alive(int(pid)):
                    path = os.path.join(parent, n)
                    if _remove_tree(path):
                        removed.append(path)
        return removed


def _remove_tree(path: str) -> bool:
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
            ok = _remove_tree(e.path) and ok
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

    Its control files stay open for its whole life and are read with pread at offset 0
    (the kernel regenerates the text): ~1 us a read here, against ~17 us for an
    open/read/close in Python. A pooled group costs about a dozen descriptors. The one
    exception is cgroup.procs (``pids``)."""

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
        self.fds: dict[tuple[str, str, bool], int] = {}
        self.peak_fd: int | None = None  # v2: memory.peak opened and reset for this job
        self.oom_fd: int | None = None  # v1: an eventfd readable when the kernel OOM-kills
        self.oom_flag = False  # that eventfd fired during the current job

    @property
    def path(self) -> str:
        return next(iter(self.dirs.values()))

    def _fd(self, ctrl: str, name: str, write: bool = False) -> int:
        key = (ctrl, name, write)
        fd = self.fds.get(key)
        if fd is None:
            flags = (os.O_WRONLY if write else os.O_RDONLY) | os.O_CLOEXEC
            fd = os.open(os.path.join(self.dirs[ctrl], name), flags)
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

    def _put(self, ctrl: str, name: str, value: str) -> None:
        os.write(self._fd(ctrl, name, True), value.encode())

    def _int(self, ctrl: str, name: str) -> int:
        return int(self._get(ctrl, name))

    def pids(self) -> list[int]:
        """Every process in the group (v1: of its memory hierarchy, which holds the job).

        Opened afresh each time: v1 caches a cgroup.procs listing per open file for a
        second, so a kept descriptor would show processes that are gone."""
        return _pids(os.path.join(self.path, "cgroup.procs"))

    def populated(self) -> bool:
        return bool(self.pids())

    def oom_fired(self) -> bool:
        """Whether the kernel signalled an OOM in this group during the current job (v1:
        its eventfd; the keeper may select on ``oom_fd`` and call this when it is
        readable). The notification comes as the OOM begins; the kill is counted a
        moment later (``sample().oom_kills``)."""
        if self.oom_fd is not None and not self.oom_flag:
            try:
                os.eventfd_read(self.oom_fd)
            except BlockingIOError:
                pass
            else:
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
        for _ in range(KILL_ROUNDS):
            fresh = False
            for pid in self.pids():
                key = (pid, _start(pid))
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
            ok = _remove_tree(d) and ok
        return ok

    def close(self) -> None:
        for fd in [*self.fds.values(), self.peak_fd, self.oom_fd]:
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.fds.clear()
        self.peak_fd = self.oom_fd = None

    def state(self) -> str:
        """One word for the keeper's journal, so that a daemon re-adopting the job after a
        crash finds the group and knows its baselines (``Backend.group_from_state``)."""
        u, s = self.cpu0
        return f"{self.name}:{self.oom0}:{self.res0}:{u!r}:{s!r}"


def _start(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        return int(data[data.rindex(b")") + 2 :].split()[19])
    except (OSError, ValueError, IndexError):
        return -1


# -- cgroup v1 ----------------------------------------------------------------------------


class V1Backend(Backend):
    """The v1 memory (required), cpuacct and cpuset hierarchies, as root."""

    kind = "v1"

    def __init__(self, name: str, own: dict[str, str], mounts: dict[str, Mount]) -> None:
        """``own``: controller -> the daemon's group directory in that hierarchy, which is
        mounted at ``mounts[controller]``."""
        super().__init__(name)
        self.own = own
        self.mounts = mounts
        self.memory = "memory" in own
        self.cpu = "cpuacct" in own
        self.cpuset = "cpuset" in own
        self.home_fds: dict[str, int] = {}
        self.all_cpus = ""
        self.mems = ""

    def bases(self) -> list[str]:
        return [os.path.join(d, self.name) for d in self.own.values()]

    def describe(self) -> str:
        ctrls = ", ".join(self.own)
        return f"cgroup v1 ({ctrls}) below " + ", ".join(self.bases())

    def setup(self) -> None:
        for ctrl, d in self.own.items():
            base = os.path.join(d, self.name)
            try:
                os.makedirs(base, exist_ok=True)
                if ctrl == "cpuset":
                    # cpuset groups take no process until both are set; copy the parent's
                    self.all_cpus = _read(os.path.join(d, "cpuset.cpus")).strip()
                    self.mems = _read(os.path.join(d, "cpuset.mems")).strip()
                    _write(os.path.join(base, "cpuset.cpus"), self.all_cpus)
                    _write(os.path.join(base, "cpuset.mems"), self.mems)
                self.home_fds[ctrl] = os.open(os.path.join(d, "tasks"), os.O_WRONLY | os.O_CLOEXEC)
            except OSError as e:
                raise CgroupError(e.errno, f"cannot set up {base}: {e.strerror}") from None

    def create(self, name: str) -> Group:
        dirs: dict[str, str] = {}
        try:
            for ctrl, d in self.own.items():
                path = os.path.join(d, self.name, name)
                os.mkdir(path)
                dirs[ctrl] = path
                if ctrl == "cpuset":
                    _write(os.path.join(path, "cpuset.cpus"), self.all_cpus)
                    _write(os.path.join(path, "cpuset.mems"), self.mems)
        except OSError as e:
            for p in dirs.values():
                with contextlib.suppress(OSError):
                    os.rmdir(p)
            raise CgroupError(e.errno, f"cannot make group {name}: {e.strerror}") from None
        g = V1Group(self, name, dirs)
        g.arm_oom_event()
        return g

    def enter(self, group: Group) -> None:
        tid = str(threading.get_native_id()).encode()
        try:
            for ctrl in group.dirs:
                os.write(group._fd(ctrl, "tasks", True), tid)
        except OSError as e:
            self.leave()
            raise CgroupError(e.errno, f"cannot enter {group.name}: {e.strerror}") from None

    def leave(self) -> None:
        tid = str(threading.get_native_id()).encode()
        for fd in self.home_fds.values():
            with contextlib.suppress(OSError):
                os.write(fd, tid)

    def group_of(self, pid: int) -> Group | None:
        try:
            paths = parse_proc_cgroup(_read(f"/proc/{pid}/cgroup"))
        except OSError:
            return None
        dirs: dict[str, str] = {}
        for ctrl, own in self.own.items():
            rel = paths.get(ctrl)
            d = _dir_of(self.mounts[ctrl], rel) if rel is not None else None
            if d is None or not d.startswith(os.path.join(own, "sjq.")):
                return None
            dirs[ctrl] = d
        g = V1Group(self, os.path.basename(dirs["memory"]), dirs)
        g.fresh = False
        return g

    def group_from_state(self, pid: int, state: str) -> Group | None:
        g = self.group_of(pid)
        if g is not None:
            _restore(g, state)
        return g

    def teardown(self) -> None:
        for fd in self.home_fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self.home_fds.clear()
        super().teardown()


def _restore(g: Group, state: str) -> None:
    with contextlib.suppress(ValueError):
        _, oom0, res0, u, s = state.split(":")
        g.oom0, g.res0, g.cpu0 = int(oom0), int(res0), (float(u), float(s))


class V1Group(Group):
    backend: V1Backend

    def arm_oom_event(self) -> None:
        """An eventfd the kernel signals when this group hits an OOM (cgroup.event_control
        on memory.oom_control): the keeper can poll it instead of waiting for a sample,
        and a job whose eventfd never fired needs no read of the OOM count."""
        d = self.dirs.get("memory")
        if d is None:
            return
        efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        try:
            ofd = os.open(os.path.join(d, "memory.oom_control"), os.O_RDONLY | os.O_CLOEXEC)
            try:
                _write(os.path.join(d, "cgroup.event_control"), f"{efd} {ofd}")
            finally:
                os.close(ofd)
        except OSError:
            os.close(efd)
            return
        self.oom_fd = efd

    def configure(self, mem: int | None, cpus: Sequence[int] | None) -> None:
        d = self.dirs
        known, self.known = self.known, False  # until every write below has gone through
        try:
            if "memory" in d and (mem != self.mem or not known):
                limit = str(mem) if mem is not None else "-1"
                # memsw (memory + swap) may never be below the plain limit: raise it first,
                # lower it last. It is absent when swap accounting is off.
                order = ["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"]
                if not known:
                    order = ["memory.memsw.limit_in_bytes", *order]  # first to -1: any order
                elif mem is None or (self.mem is not None and mem > self.mem):
                    order.reverse()
                for i, name in enumerate(order):
                    try:
                        self._put("memory", name, "-1" if i == 0 and not known else limit)
                    except FileNotFoundError:
                        if name == "memory.limit_in_bytes":
                            raise
                self.mem = mem
            want = tuple(cpus) if cpus is not None else None
            if "cpuset" in d and (want != self.cpus or not known):
                text = format_cpulist(want) if want is not None else self.backend.all_cpus
                self._put("cpuset", "cpuset.cpus", text)
                self.cpus = want
        except OSError as e:
            raise CgroupError(e.errno, f"cannot configure {self.path}: {e.strerror}") from None
        self.known = True

    def _oom_count(self) -> int:
        try:
            return _kv(self._get("memory", "memory.oom_control"), "oom_kill").get("oom_kill", 0)
        except OSError:
            return 0

    def _stat(self) -> dict[str, int]:
        return _kv(self._get("memory", "memory.stat"), "total_rss", "total_shmem", "total_cache")

    def _ooms(self) -> int:
        # the count needs reading only once the eventfd said so (or if there is none)
        if self.oom_fd is not None and not self.oom_fired():
            return 0
        return self._oom_count() - self.oom0

    def sample(self) -> GroupSample:
        if "memory" not in self.dirs:
            return GroupSample(None, 0, 0)
        try:
            st = self._stat()
        except OSError:
            return GroupSample(None, 0, 0)
        resident = st.get("total_rss", 0) + st.get("total_shmem", 0) - self.res0
        return GroupSample(max(0, resident), st.get("total_cache", 0), self._ooms())

    def finish(self) -> GroupUsage:
        peak: int | None = None
        left = 0
        oom = 0
        if "memory" in self.dirs:
            with contextlib.suppress(OSError, ValueError):
                peak = self._int("memory", "memory.max_usage_in_bytes")
                # with every process gone, what is still charged is page cache (and a
                # little kernel memory)
                left = self._int("memory", "memory.usage_in_bytes")
            oom = self._ooms()
        user = sys_ = None
        if "cpuacct" in self.dirs:
            with contextlib.suppress(OSError, ValueError):
                total = self._int("cpuacct", "cpuacct.usage") / 1e9
                # The total is exact (ns of run time); the user/system split is counted in
                # clock ticks. Scale the split to the total, as the kernel does for v2's
                # cpu.stat and for getrusage (cputime_adjust).
                ticks = _kv(self._get("cpuacct", "cpuacct.stat"), "user", "system")
                u, s = ticks.get("user", 0), ticks.get("system", 0)
                user = total * u / (u + s) if u + s else total
                sys_ = total - user
        return GroupUsage(peak, left, user, sys_, oom)

    def reset(self) -> bool:
        """Make a used group ready for the next job; False if it must be retired (it still
        holds processes, or more than ``KEEP_CHARGE``, or shmem: tmpfs files a job left,
        which no reclaim can take back without swap)."""
        if self.pids():
            return False
        d = self.dirs
        try:
            if "memory" in d:
                usage = self._int("memory", "memory.usage_in_bytes")
                if usage > KEEP_CHARGE:
                    return False
                self.res0 = 0
                if usage:
                    st = self._stat()
                    if st.get("total_shmem", 0) > 0:
                        return False
                    if st.get("total_cache", 0):
                        # so that setting the next job's limit never has to reclaim on the
                        # keeper's critical path (a few MB of cache at most: cheap here)
                        with contextlib.suppress(OSError):
                            self._put("memory", "memory.force_empty", "0")
                        st = self._stat()
                    self.res0 = st.get("total_rss", 0)
                self._put("memory", "memory.max_usage_in_bytes", "0")
                with contextlib.suppress(FileNotFoundError):
                    self._put("memory", "memory.memsw.max_usage_in_bytes", "0")
                if self.oom_fired() or self.oom_fd is None:
                    self.oom0 = self._oom_count()
                self.oom_flag = False
            if "cpuacct" in d:
                self._put("cpuacct", "cpuacct.usage", "0")
                self.cpu0 = (0.0, 0.0)
        except (OSError, ValueError):
            return False
        self.fresh = self.used == 0
        return True


# -- cgroup v2 ----------------------------------------------------------------------------


class V2Backend(Backend):
    """A writable cgroup v2 group of ours (a delegated subtree, or root). Memory limits
    and CPU sets need the memory and cpuset controllers; without them (``controllers``
    empty) it still holds jobs (tracking, kill) and accounts CPU (cpu.stat is always
    there)."""

    kind = "v2"
    cpu = True

    def __init__(self, name: str, own: str, controllers: Iterable[str]) -> None:
        super().__init__(name)
        self.own = own
        self.controllers = frozenset(controllers) & {"memory", "cpuset"}
        self.memory = "memory" in self.controllers
        self.cpuset = "cpuset" in self.controllers
        self.base = os.path.join(own, name)
        self.home = ""  # the group the keeper returns to after a spawn
        self.home_fd: int | None = None
        self.all_cpus = ""

    def bases(self) -> list[str]:
        return [self.base, os.path.join(self.own, self.name + ".d")]

    def describe(self) -> str:
        what = ", ".join(sorted(self.controllers)) or "no memory or cpuset controller"
        return f"cgroup v2 ({what}) below {self.base}"

    def setup(self, pids: Iterable[int] = ()) -> None:
        """Make the base group, enabling our controllers in it. If they must first be
        enabled in our own group, the processes there (``pids``: the daemon's, default
        this one) move into the leaf ``<own>/sjq.<pid>.d`` first; another process in our
        group makes that impossible, and the message says how to give sjq a group of its
        own."""
        pids = list(pids) or [os.getpid()]
        here = parse_proc_cgroup(_read("/proc/self/cgroup")).get("")
        mount = next(
            (m for m in parse_mountinfo(_read("/proc/self/mountinfo")) if m.fstype == "cgroup2"),
            None,
        )
        current = _dir_of(mount, here) if mount and here is not None else None
        try:
            need = " ".join("+" + c for c in sorted(self.controllers))
            enabled = set(_read(os.path.join(self.own, "cgroup.subtree_control")).split())
            # the root group is exempt from the rule (and holds every other process)
            if self.controllers - enabled and os.path.ismount(self.own):
                _write(os.path.join(self.own, "cgroup.subtree_control"), need)
            elif self.controllers - enabled:
                why = _strangers(self.own, pids)
                if why:
                    raise CgroupError(errno.EBUSY, why)
                leaf = os.path.join(self.own, self.name + ".d")
                os.makedirs(leaf, exist_ok=True)
                for pid in pids:
                    _write(os.path.join(leaf, "cgroup.procs"), str(pid))
                _write(os.path.join(self.own, "cgroup.subtree_control"), need)
                current = leaf
            os.makedirs(self.base, exist_ok=True)
            if self.controllers:
                _write(os.path.join(self.base, "cgroup.subtree_control"), need)
            if self.cpuset:
                self.all_cpus = _read(os.path.join(self.base, "cpuset.cpus.effective")).strip()
            self.home = current or self.own
            self.home_fd = os.open(
                os.path.join(self.home, "cgroup.procs"), os.O_WRONLY | os.O_CLOEXEC
            )
        except CgroupError:
            raise
        except OSError as e:
            raise CgroupError(
                e.errno, f"cannot set up {self.base}: {e.strerror} ({e.filename})"
            ) from None

    def create(self, name: str) -> Group:
        path = os.path.join(self.base, name)
        try:
            os.mkdir(path)
            if self.memory:
                with contextlib.suppress(FileNotFoundError):  # no swap configured
                    _write(os.path.join(path, "memory.swap.max"), "0")
                _write(os.path.join(path, "memory.oom.group"), "1")
        except OSError as e:
            with contextlib.suppress(OSError):
                os.rmdir(path)
            raise CgroupError(e.errno, f"cannot make group {path}: {e.strerror}") from None
        g = V2Group(self, name, {"": path})
        g.cpu0 = g._cpu_now()
        return g

    def enter(self, group: Group) -> None:
        try:
            os.write(group._fd("", "cgroup.procs", True), str(os.getpid()).encode())
        except OSError as e:
            raise CgroupError(e.errno, f"cannot enter {group.path}: {e.strerror}") from None

    def leave(self) -> None:
        if self.home_fd is not None:
            with contextlib.suppress(OSError):
                os.write(self.home_fd, str(os.getpid()).encode())

    def group_of(self, pid: int) -> Group | None:
        try:
            rel = parse_proc_cgroup(_read(f"/proc/{pid}/cgroup")).get("")
            mount = next(
                m for m in parse_mountinfo(_read("/proc/self/mountinfo")) if m.fstype == "cgroup2"
            )
        except (OSError, StopIteration):
            return None
        path = _dir_of(mount, rel) if rel is not None else None
        if path is None or os.path.dirname(os.path.dirname(path)) != self.own:
            return None
        if not os.path.basename(os.path.dirname(path)).startswith("sjq."):
            return None
        g = V2Group(self, os.path.basename(path), {"": path})
        g.fresh = False
        return g

    def group_from_state(self, pid: int, state: str) -> Group | None:
        g = self.group_of(pid)
        if g is not None:
            _restore(g, state)
        return g

    def teardown(self) -> None:
        if self.home_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.home_fd)
            self.home_fd = None
        _remove_tree(self.base)


def _strangers(own: str, pids: Iterable[int]) -> str:
    """Why sjq cannot take the v2 group ``own`` for itself ("" if it can)."""
    others = set(_pids(os.path.join(own, "cgroup.procs"))) - set(pids)
    if not others:
        return ""
    return (
        f"{own} also holds processes that are not sjq's"
        f" ({', '.join(map(str, sorted(others)[:5]))}); give sjq a group of its own,"
        " e.g. systemd-run --user --scope -p Delegate=yes sjq server"
    )


class V2Group(Group):
    backend: V2Backend

    def configure(self, mem: int | None, cpus: Sequence[int] | None) -> None:
        known, self.known = self.known, False  # until every write below has gone through
        try:
            if self.backend.memory and (mem != self.mem or not known):
                self._put("", "memory.max", "max" if mem is None else str(mem))
                self.mem = mem
            want = tuple(cpus) if cpus is not None else None
            if self.backend.cpuset and (want != self.cpus or not known):
                # an empty list means the parent's (a zero-length write would do nothing)
                text = format_cpulist(want) if want is not None else "\n"
                self._put("", "cpuset.cpus", text)
                self.cpus = want
        except OSError as e:
            raise CgroupError(e.errno, f"cannot configure {self.path}: {e.strerror}") from None
        self.known = True

    def _cpu_now(self) -> tuple[float, float]:
        try:
            st = _kv(self._get("", "cpu.stat"), "user_usec", "system_usec")
        except OSError:
            return (0.0, 0.0)
        return (st.get("user_usec", 0) / 1e6, st.get("system_usec", 0) / 1e6)

    def _oom_count(self) -> int:
        try:
            return _kv(self._get("", "memory.events"), "oom_kill").get("oom_kill", 0)
        except OSError:
            return 0

    def sample(self) -> GroupSample:
        if not self.backend.memory:
            return GroupSample(None, 0, 0)
        try:
            st = _kv(self._get("", "memory.stat"), "anon", "shmem", "file")
        except OSError:
            return GroupSample(None, 0, 0)
        resident = st.get("anon", 0) + st.get("shmem", 0) - self.res0
        # memory.stat's "file" includes shmem
        cache = st.get("file", 0) - st.get("shmem", 0)
        return GroupSample(max(0, resident), cache, self._oom_count() - self.oom0)

    def finish(self) -> GroupUsage:
        peak: int | None = None
        left = 0
        oom = 0
        if self.backend.memory:
            if self.peak_fd is not None:
                with contextlib.suppress(OSError, ValueError):
                    peak = int(os.pread(self.peak_fd, 64, 0))
            elif self.fresh:
                with contextlib.suppress(OSError, ValueError):
                    peak = self._int("", "memory.peak")
            with contextlib.suppress(OSError, ValueError):
                left = self._int("", "memory.current")
            oom = self._oom_count() - self.oom0
        u, s = self._cpu_now()
        return GroupUsage(peak, left, u - self.cpu0[0], s - self.cpu0[1], oom)

    def kill(self) -> int:
        n = len(self.pids())
        try:
            self._put("", "cgroup.kill", "1")  # kernel >= 5.14
        except OSError:
            return super().kill()
        return n

    def reset(self) -> bool:
        if self.pids():
            return False
        try:
            if self.backend.memory:
                cur = self._int("", "memory.current")
                st = _kv(self._get("", "memory.stat"), "anon", "shmem")
                if cur > KEEP_CHARGE or st.get("shmem", 0) > 0:
                    return False
                self.res0 = st.get("anon", 0)
                self.oom0 = self._oom_count()
                if self.peak_fd is None:
                    with contextlib.suppress(OSError):
                        self.peak_fd = os.open(
                            os.path.join(self.path, "memory.peak"), os.O_RDWR | os.O_CLOEXEC
                        )
                if self.peak_fd is not None:
                    try:
                        os.write(self.peak_fd, b"reset\n")  # kernel >= 6.12: per-fd peak
                    except OSError:
                        os.close(self.peak_fd)
                        self.peak_fd = None
        except (OSError, ValueError):
            return False
        self.cpu0 = self._cpu_now()
        self.fresh = self.used == 0
        return True


# -- detection ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Detection:
    """What ``detect`` found: the backend to use (None: the watcher alone) and why, in
    one line for the daemon's log."""

    backend: Backend | None
    why: str


def detect(
    *,
    versions: Sequence[str] = ("v2", "v1"),
    controllers: Sequence[str] = V1_CONTROLLERS,
    v2_root: str | None = None,
    name: str | None = None,
    euid: int | None = None,
    mountinfo: str = "/proc/self/mountinfo",
    self_cgroup: str = "/proc/self/cgroup",
) -> Detection:
    """Choose how to contain jobs, without changing anything.

    Order: cgroup v2 with the memory controller; the v1 hierarchies as root; a v2 group
    without memory controller (tracking, kill and CPU accounting; memory by the watcher);
    nothing. ``versions`` limits the choice (``("v1",)``: v1 or nothing); ``controllers``
    the v1 hierarchies used (memory is required; without cpuacct CPU time comes from
    wait4, without cpuset pinning is by affinity only: each one left out saves two
    writes per job start, see docs/containment.md). ``v2_root``
    names the v2 group to use instead of our own (tests, or a group prepared for sjq).
    ``name`` is the base group's name (default ``sjq.<pid>``)."""
    name = name or f"sjq.{os.getpid()}"
    euid = os.geteuid() if euid is None else euid
    try:
        mounts = parse_mountinfo(_read(mountinfo))
        own = parse_proc_cgroup(_read(self_cgroup))
    except OSError as e:
        return Detection(None, f"watch: cannot read cgroup information: {e}")
    reasons: list[str] = []
    v2 = _v2_candidate(mounts, own, v2_root, name, reasons) if "v2" in versions else None
    if v2 is not None and v2.memory:
        return Detection(v2, v2.describe())
    v1 = None
    if "v1" in versions:
        v1 = _v1_candidate(mounts, own, euid, name, reasons, controllers=controllers)
    if v1 is not None:
        return Detection(v1, v1.describe())
    if v2 is not None:
        return Detection(
            v2,
            f"watch for memory ({'; '.join(reasons)}); {v2.describe()} for tracking,"
            " kill and CPU time",
        )
    return Detection(None, "watch: no writable cgroup hierarchy: " + "; ".join(reasons))


def _v2_candidate(
    mounts: list[Mount], own: dict[str, str], v2_root: str | None, name: str, why: list[str]
) -> V2Backend | None:
    if v2_root is None:
        mount = next((m for m in mounts if m.fstype == "cgroup2"), None)
        if mount is None:
            why.append("no cgroup v2 mount")
            return None
        rel = own.get("")
        d = _dir_of(mount, rel) if rel is not None else None
        if d is None:
            why.append("cgroup v2: our group is not visible under " + mount.point)
            return None
    else:
        d = v2_root.rstrip("/")
    if not (os.access(d, os.W_OK) and os.access(os.path.join(d, "cgroup.procs"), os.W_OK)):
        why.append(f"cgroup v2 group {d} is not writable (not delegated to us)")
        return None
    try:
        ctrls = set(_read(os.path.join(d, "cgroup.controllers")).split())
    except OSError as e:
        why.append(f"cgroup v2 group {d}: {e.strerror}")
        return None
    if "memory" not in ctrls:
        avail = ", ".join(sorted(ctrls)) or "none"
        why.append(f"cgroup v2 group {d} has no memory controller (available: {avail})")
        return V2Backend(name, d, ctrls)
    try:
        enabled = set(_read(os.path.join(d, "cgroup.subtree_control")).split())
    except OSError:
        enabled = set()
    if "memory" not in enabled and not os.path.ismount(d) and v2_root is None:
        stranger = _strangers(d, [os.getpid()])
        if stranger:
            why.append("cgroup v2: " + stranger)
            return V2Backend(name, d, ())  # tracking and CPU only
    return V2Backend(name, d, ctrls)


def _v1_candidate(
    mounts: list[Mount],
    own: dict[str, str],
    euid: int,
    name: str,
    why: list[str],
    *,
    controllers: Sequence[str] = V1_CONTROLLERS,
) -> V1Backend | None:
    dirs: dict[str, str] = {}
    used: dict[str, Mount] = {}
    for ctrl in V1_CONTROLLERS:
        if ctrl != "memory" and ctrl not in controllers:
            continue
        m = next((m for m in mounts if m.fstype == "cgroup" and ctrl in m.options), None)
        if m is None or ctrl not in own:
            continue
        d = _dir_of(m, own[ctrl])
        if d is not None and euid == 0 and os.access(d, os.W_OK):
            dirs[ctrl], used[ctrl] = d, m
    if "memory" not in dirs:
        has_v1 = any(m.fstype == "cgroup" and "memory" in m.options for m in mounts)
        if not has_v1:
            why.append("no cgroup v1 memory hierarchy")
        elif euid != 0:
            why.append("cgroup v1 needs root")
        else:
            why.append("cgroup v1 memory hierarchy: our group is not writable")
        return None
    return V1Backend(name, dirs, used)


# -- the pool --------------------------------------------------------------------------


class GroupPool:
    """Groups ready for jobs, so that a job's start makes no directory: ``take`` (on the
    keeper's critical path) pops a ready group and sets its limits, writing only what
    differs from its last job; ``give_back`` queues it; ``tidy`` (off the critical path: an
    idle moment or a helper thread) resets used groups, retires those that cannot be
    reused (processes left, shmem, much page cache) and tops the ready list up to ``size``.

    ``take`` and ``give_back`` may run in one thread while ``tidy`` runs in another:
    they share only deques, whose append and popleft are atomic."""

    def __init__(self, backend: Backend, size: int = 4) -> None:
        self.backend = backend
        self.size = size
        self.ready: deque[Group] = deque()
        self.used: deque[Group] = deque()
        self.retiring: list[Group] = []
        self.made = 0  # groups created, in all
        self.made_on_demand = 0  # ... of which on the critical path (the pool ran dry)
        self.retired = 0

    def take(self, mem: int | None, cpus: Sequence[int] | None) -> Group:
        try:
            g = self.ready.popleft()
        except IndexError:
            g = self.backend.new_group()
            self.made += 1
            self.made_on_demand += 1
        try:
            g.configure(mem, cpus)
        except CgroupError:
            self.used.append(g)  # tidy() retires it if it is broken
            raise
        g.used += 1
        return g

    def give_back(self, group: Group) -> None:
        self.used.append(group)

    def tidy(self) -> None:
        """Reset used groups and top the pool up. Never raises for one bad group."""
        for _ in range(len(self.used)):
            try:
                g = self.used.popleft()
            except IndexError:
                break
            if g.populated() and g.busy < BUSY_TIDIES:
                # killed processes take a moment to exit (and a reaper to collect them)
                g.kill()
                g.busy += 1
                self.used.append(g)
            elif g.reset():
                g.busy = 0
                self.ready.append(g)
            else:
                g.kill()
                self.retiring.append(g)
        still: list[Group] = []
        for g in self.retiring:
            if g.remove():
                self.retired += 1
            else:
                still.append(g)  # processes still exiting: next time
        self.retiring = still
        while len(self.ready) < self.size:
            try:
                g = self.backend.new_group()
            except CgroupError:
                break
            self.made += 1
            if g.reset():
                self.ready.append(g)
            else:
                g.remove()
                break

    def close(self, wait: float = 2.0) -> bool:
        """Remove every group, killing what is in them and waiting up to ``wait`` seconds
        for those processes to go; False if some group could not be removed."""
        left = [*self.ready, *self.used, *self.retiring]
        self.ready.clear()
        self.used.clear()
        self.retiring.clear()
        for g in left:
            g.kill()
        deadline = time.monotonic() + wait
        delay = 0.001
        while left:
            left = [g for g in left if not g.remove()]
            if not left or time.monotonic() > deadline:
                break
            time.sleep(delay)  # processes exiting after SIGKILL: a bounded wait
            delay = min(delay * 2, 0.05)
        self.retiring = left
        return not left
