"""cgroup v1: the memory, cpuacct and cpuset hierarchies, as root. Imports no asyncio or sqlite3.

The daemon's groups go below its own group in each hierarchy; a job's first instruction
is inside its group because the spawning thread (only it: v1 moves threads, ``tasks``)
is in the job's groups at the spawn (it enters them around the spawn, or waits in them:
``sjq.keeper.spawner``).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Collection, Sequence

from sjq.contain.cpus import format_cpulist

from .base import KEEP_CHARGE, Backend, Group, GroupSample, GroupUsage, remove_tree
from .fs import CgroupError, Mount, dir_of, key_values, parse_proc_cgroup, read_file, write_file

__all__ = ["V1_CONTROLLERS", "V1Backend", "V1Group"]

V1_CONTROLLERS = ("memory", "cpuacct", "cpuset")

# What a thread writes to a ``tasks`` file to move itself. Not its thread id: a move by id
# takes the kernel's cgroup thread-group lock for writing, which waits for an RCU grace
# period unless another move came shortly before (5-20 ms for a start's six moves when
# starts are 0.1 s apart, against ~0.1 ms this way); a thread moving itself needs no lock.
_ME = b"0"


class V1Backend(Backend):
    """The v1 memory (required), cpuacct and cpuset hierarchies, as root."""

    kind = "v1"
    threads = True

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
        self.mems = ""
        # The cpuset groups, one per CPU set and shared by every job pinned to it, whatever
        # group of the pool it has otherwise: the CPUs are the whole of a cpuset, and a
        # thread that waits for the next job on the same CPUs (sjq.keeper.spawner) then
        # needs no cpuset move. CPU set (None: every CPU, the base) -> directory; and
        # directory -> its ``tasks`` descriptor.
        self.cpusets: dict[tuple[int, ...] | None, str] = {}
        self.cpuset_fds: dict[str, int] = {}
        # made from the keeper's thread, its spawner and its janitor (a pool's new group)
        self._cpuset_lock = threading.Lock()

    def held_fds(self) -> list[int]:
        return list(self.home_fds.values())

    def bases(self) -> list[str]:
        return [os.path.join(d, self.name) for d in self.own.values()]

    def describe(self) -> str:
        ctrls = ", ".join(self.own)
        return f"cgroup v1 ({ctrls}) below " + ", ".join(self.bases())

    def setup(self) -> None:
        # the cpuset first: ``leave`` goes home in this order (``home_fds``)
        for ctrl, d in sorted(self.own.items(), key=lambda item: item[0] != "cpuset"):
            base = os.path.join(d, self.name)
            try:
                os.makedirs(base, exist_ok=True)
                if ctrl == "cpuset":
                    # cpuset groups take no process until both are set; copy the parent's
                    cpus = read_file(os.path.join(d, "cpuset.cpus")).strip()
                    self.mems = read_file(os.path.join(d, "cpuset.mems")).strip()
                    write_file(os.path.join(base, "cpuset.cpus"), cpus)
                    write_file(os.path.join(base, "cpuset.mems"), self.mems)
                self.home_fds[ctrl] = os.open(os.path.join(d, "tasks"), os.O_WRONLY | os.O_CLOEXEC)
            except OSError as e:
                raise CgroupError(e.errno, f"cannot set up {base}: {e.strerror}") from None

    def cpuset_for(self, cpus: tuple[int, ...] | None) -> str:
        """The cpuset group of the jobs pinned to ``cpus`` (None: every CPU), made on first
        use and kept until ``teardown``."""
        path = self.cpusets.get(cpus)
        if path is not None:
            return path
        with self._cpuset_lock:
            return self._make_cpuset(cpus)

    def _make_cpuset(self, cpus: tuple[int, ...] | None) -> str:
        path = self.cpusets.get(cpus)
        if path is not None:
            return path
        base = os.path.join(self.own["cpuset"], self.name)
        path = base if cpus is None else os.path.join(base, "cpus-" + format_cpulist(cpus))
        made = False
        try:
            if cpus is not None:
                try:
                    os.mkdir(path)
                    made = True
                except FileExistsError:
                    pass  # another keeper of this daemon made it
                # cpuset groups take no process until both are set
                write_file(os.path.join(path, "cpuset.cpus"), format_cpulist(cpus))
                write_file(os.path.join(path, "cpuset.mems"), self.mems)
            self._open_cpuset(path)
        except OSError as e:
            if made:
                with contextlib.suppress(OSError):
                    os.rmdir(path)
            raise CgroupError(e.errno, f"cannot make the cpuset {path}: {e.strerror}") from None
        self.cpusets[cpus] = path
        return path

    def _cpuset_fd(self, path: str) -> int:
        fd = self.cpuset_fds.get(path)
        if fd is None:
            with self._cpuset_lock:
                fd = self._open_cpuset(path)
        return fd

    def _open_cpuset(self, path: str) -> int:
        fd = self.cpuset_fds.get(path)
        if fd is None:
            fd = os.open(os.path.join(path, "tasks"), os.O_WRONLY | os.O_CLOEXEC)
            self.cpuset_fds[path] = fd
        return fd

    def create(self, name: str) -> Group:
        dirs: dict[str, str] = {}
        try:
            for ctrl, d in self.own.items():
                if ctrl == "cpuset":
                    dirs[ctrl] = self.cpuset_for(None)  # until ``configure`` pins it
                    continue
                path = os.path.join(d, self.name, name)
                os.mkdir(path)
                dirs[ctrl] = path
        except OSError as e:  # (a CgroupError too)
            for c, p in dirs.items():
                if c != "cpuset":
                    with contextlib.suppress(OSError):
                        os.rmdir(p)
            raise CgroupError(e.errno, f"cannot make group {name}: {e.strerror}") from None
        g = V1Group(self, name, dirs)
        g.arm_oom_event()
        return g

    def enter(self, group: Group, skip: Collection[str] = ()) -> None:
        try:
            for ctrl, path in group.dirs.items():
                if ctrl in skip:
                    continue
                fd = self._cpuset_fd(path) if ctrl == "cpuset" else group._fd(ctrl, "tasks", True)
                os.write(fd, _ME)
        except OSError as e:
            self.leave()
            raise CgroupError(e.errno, f"cannot enter {group.name}: {e.strerror}") from None

    def leave(self, then: Callable[[], None] | None = None) -> None:
        # the cpuset first (``setup``): once out of the job's CPUs the thread may go on
        # elsewhere (``then``) while it leaves the rest
        for ctrl, fd in self.home_fds.items():
            with contextlib.suppress(OSError):
                os.write(fd, _ME)
            if then is not None and ctrl == "cpuset":
                then()
                then = None
        if then is not None:
            then()

    def group_of(self, pid: int) -> Group | None:
        try:
            paths = parse_proc_cgroup(read_file(f"/proc/{pid}/cgroup"))
        except OSError:
            return None
        dirs: dict[str, str] = {}
        for ctrl, own in self.own.items():
            rel = paths.get(ctrl)
            d = dir_of(self.mounts[ctrl], rel) if rel is not None else None
            if d is None or not d.startswith(os.path.join(own, "sjq.")):
                return None
            dirs[ctrl] = d
        g = V1Group(self, os.path.basename(dirs["memory"]), dirs)
        g.fresh = False
        # its limits and CPUs are not known here: the next job it holds sets them all (and
        # takes this daemon's cpuset for its CPUs, not the one this job had)
        g.known = False
        return g

    def teardown(self) -> None:
        for fd in [*self.home_fds.values(), *self.cpuset_fds.values()]:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.home_fds.clear()
        self.cpuset_fds.clear()
        self.cpusets.clear()
        super().teardown()


class V1Group(Group):
    backend: V1Backend
    base = 0  # bytes still charged from earlier jobs when the current one began

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
                write_file(os.path.join(d, "cgroup.event_control"), f"{efd} {ofd}")
            finally:
                os.close(ofd)
        except OSError:
            os.close(efd)
            return
        self._set_oom_fd(efd)

    def configure(self, mem: int | None, cpus: Sequence[int] | None) -> None:
        d = self.dirs
        known, self.known = self.known, False  # until every write below has gone through
        try:
            if "memory" in d and mem is not None and mem <= self.base:
                # what earlier jobs left charged would hold the limit back (EBUSY); the
                # peak starts again from what is left
                with contextlib.suppress(OSError):
                    self._put("memory", "memory.force_empty", "0", keep=False)
                    self._put("memory", "memory.max_usage_in_bytes", "0")
                    self.base = self._int("memory", "memory.usage_in_bytes")
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
                        value = "-1" if i == 0 and not known else limit
                        self._put("memory", name, value, keep=False)
                    except FileNotFoundError:
                        if name == "memory.limit_in_bytes":
                            raise
                self.mem = mem
            want = tuple(cpus) if cpus is not None else None
            if "cpuset" in d and (want != self.cpus or not known):
                d["cpuset"] = self.backend.cpuset_for(want)  # shared: see V1Backend.cpusets
                self.cpus = want
        except OSError as e:
            raise CgroupError(e.errno, f"cannot configure {self.path}: {e.strerror}") from None
        self.known = True

    def remove(self) -> bool:
        # a shared cpuset (``V1Backend.cpusets``) is not the group's to remove; a group of
        # an earlier sjq had a cpuset of its own, named as its other directories
        self.close()
        ok = True
        for ctrl, d in self.dirs.items():
            if ctrl != "cpuset" or os.path.basename(d) == self.name:
                ok = remove_tree(d) and ok
        return ok

    def _oom_count(self) -> int:
        try:
            return key_values(self._get("memory", "memory.oom_control"), "oom_kill").get(
                "oom_kill", 0
            )
        except OSError:
            return 0

    def _stat(self) -> dict[str, int]:
        return key_values(
            self._get("memory", "memory.stat"), "total_rss", "total_shmem", "total_cache"
        )

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
                # little kernel memory); what earlier jobs left counts as left even if
                # the kernel reclaimed some of it meanwhile
                left = max(self.base, self._int("memory", "memory.usage_in_bytes"))
            oom = self._ooms()
        user = sys_ = None
        if "cpuacct" in self.dirs:
            with contextlib.suppress(OSError, ValueError):
                total = self._int("cpuacct", "cpuacct.usage") / 1e9
                # The total is exact (ns of run time); the user/system split is counted in
                # clock ticks. Scale the split to the total, as the kernel does for v2's
                # cpu.stat and for getrusage (cputime_adjust).
                ticks = key_values(self._get("cpuacct", "cpuacct.stat"), "user", "system")
                u, s = ticks.get("user", 0), ticks.get("system", 0)
                user = total * u / (u + s) if u + s else total
                sys_ = total - user
        return GroupUsage(peak, left, user, sys_, oom)

    def reset(self) -> bool:
        """Make a used group ready for the next job; False if it must be retired (it still
        holds processes, or more than ``KEEP_CHARGE``, or shmem: tmpfs files a job left,
        which no reclaim can take back without swap).

        What is still charged (page cache, kernel memory: a few hundred KB after a shell
        script) stays: reclaiming it costs ~0.5 ms here and the next job faults the same
        pages straight back. The peak starts from it (``base``), and a limit below it is
        reclaimed first (``configure``)."""
        if self.populated():
            return False
        d = self.dirs
        try:
            if "memory" in d:
                usage = self._int("memory", "memory.usage_in_bytes")
                if usage > KEEP_CHARGE:
                    return False
                st = self._stat() if usage else {}
                if st.get("total_shmem", 0) > 0:
                    return False
                self.res0 = st.get("total_rss", 0)
                self._put("memory", "memory.max_usage_in_bytes", "0")  # = the usage now
                self.base = usage
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
