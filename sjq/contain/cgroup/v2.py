"""cgroup v2: a delegated group of ours, or root. Imports no asyncio or sqlite3.

Memory limits and CPU sets need the memory and cpuset controllers; without them a v2
group still holds a job's whole tree (exact membership, ``cgroup.kill``) and accounts its
CPU (``cpu.stat``). The whole keeper process moves into a job's group around its spawn
(``cgroup.procs``: v2 moves processes, not threads).
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable, Collection, Iterable, Sequence

from sjq.contain.cpus import format_cpulist

from .base import KEEP_CHARGE, Backend, Group, GroupSample, GroupUsage, remove_tree
from .fs import (
    CgroupError,
    dir_of,
    key_values,
    parse_mountinfo,
    parse_proc_cgroup,
    pids_in,
    read_file,
    write_file,
)

__all__ = ["V2Backend", "V2Group", "strangers"]


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

    def held_fds(self) -> list[int]:
        return [] if self.home_fd is None else [self.home_fd]

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
        here = parse_proc_cgroup(read_file("/proc/self/cgroup")).get("")
        mount = next(
            (
                m
                for m in parse_mountinfo(read_file("/proc/self/mountinfo"))
                if m.fstype == "cgroup2"
            ),
            None,
        )
        current = dir_of(mount, here) if mount and here is not None else None
        try:
            need = " ".join("+" + c for c in sorted(self.controllers))
            enabled = set(read_file(os.path.join(self.own, "cgroup.subtree_control")).split())
            # the root group is exempt from the rule (and holds every other process)
            if self.controllers - enabled and os.path.ismount(self.own):
                write_file(os.path.join(self.own, "cgroup.subtree_control"), need)
            elif self.controllers - enabled:
                why = strangers(self.own, pids)
                if why:
                    raise CgroupError(errno.EBUSY, why)
                leaf = os.path.join(self.own, self.name + ".d")
                os.makedirs(leaf, exist_ok=True)
                for pid in pids:
                    write_file(os.path.join(leaf, "cgroup.procs"), str(pid))
                write_file(os.path.join(self.own, "cgroup.subtree_control"), need)
                current = leaf
            os.makedirs(self.base, exist_ok=True)
            if self.controllers:
                write_file(os.path.join(self.base, "cgroup.subtree_control"), need)
            if self.cpuset:
                self.all_cpus = read_file(os.path.join(self.base, "cpuset.cpus.effective")).strip()
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
                    write_file(os.path.join(path, "memory.swap.max"), "0")
                write_file(os.path.join(path, "memory.oom.group"), "1")
        except OSError as e:
            with contextlib.suppress(OSError):
                os.rmdir(path)
            raise CgroupError(e.errno, f"cannot make group {path}: {e.strerror}") from None
        g = V2Group(self, name, {"": path})
        g.cpu0 = g._cpu_now()
        return g

    def enter(self, group: Group, skip: Collection[str] = ()) -> None:
        try:
            os.write(group._fd("", "cgroup.procs", True), str(os.getpid()).encode())
        except OSError as e:
            raise CgroupError(e.errno, f"cannot enter {group.path}: {e.strerror}") from None

    def leave(self, then: Callable[[], None] | None = None) -> None:
        if self.home_fd is not None:
            with contextlib.suppress(OSError):
                os.write(self.home_fd, str(os.getpid()).encode())
        if then is not None:
            then()

    def group_of(self, pid: int) -> Group | None:
        try:
            rel = parse_proc_cgroup(read_file(f"/proc/{pid}/cgroup")).get("")
            mount = next(
                m
                for m in parse_mountinfo(read_file("/proc/self/mountinfo"))
                if m.fstype == "cgroup2"
            )
        except (OSError, StopIteration):
            return None
        path = dir_of(mount, rel) if rel is not None else None
        if path is None or os.path.dirname(os.path.dirname(path)) != self.own:
            return None
        if not os.path.basename(os.path.dirname(path)).startswith("sjq."):
            return None
        g = V2Group(self, os.path.basename(path), {"": path})
        g.fresh = False
        return g

    def teardown(self) -> None:
        if self.home_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.home_fd)
            self.home_fd = None
        remove_tree(self.base)


def strangers(own: str, pids: Iterable[int]) -> str:
    """Why sjq cannot take the v2 group ``own`` for itself ("" if it can)."""
    others = set(pids_in(os.path.join(own, "cgroup.procs"))) - set(pids)
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
                self._put("", "memory.max", "max" if mem is None else str(mem), keep=False)
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
            st = key_values(self._get("", "cpu.stat"), "user_usec", "system_usec")
        except OSError:
            return (0.0, 0.0)
        return (st.get("user_usec", 0) / 1e6, st.get("system_usec", 0) / 1e6)

    def _oom_count(self) -> int:
        try:
            return key_values(self._get("", "memory.events"), "oom_kill").get("oom_kill", 0)
        except OSError:
            return 0

    def sample(self) -> GroupSample:
        if not self.backend.memory:
            return GroupSample(None, 0, 0)
        try:
            st = key_values(self._get("", "memory.stat"), "anon", "shmem", "file")
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
        self.empty = not n
        if not n:
            return 0
        try:
            self._put("", "cgroup.kill", "1", keep=False)  # kernel >= 5.14
        except OSError:
            return super().kill()
        return n

    def reset(self) -> bool:
        if self.populated():
            return False
        try:
            if self.backend.memory:
                cur = self._int("", "memory.current")
                st = key_values(self._get("", "memory.stat"), "anon", "shmem")
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
