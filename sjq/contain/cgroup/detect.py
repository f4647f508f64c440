"""Which cgroup backend this machine allows (changes nothing). Imports no asyncio or sqlite3.

Order: cgroup v2 with the memory controller; the v1 hierarchies as root; a v2 group
without memory controller (tracking, kill and CPU accounting; memory by the watcher);
nothing (the watcher alone).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from .base import Backend
from .fs import Mount, dir_of, parse_mountinfo, parse_proc_cgroup, read_file
from .v1 import V1_CONTROLLERS, V1Backend
from .v2 import V2Backend, strangers

__all__ = ["Detection", "detect"]


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
        mounts = parse_mountinfo(read_file(mountinfo))
        own = parse_proc_cgroup(read_file(self_cgroup))
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
        d = dir_of(mount, rel) if rel is not None else None
        if d is None:
            why.append("cgroup v2: our group is not visible under " + mount.point)
            return None
    else:
        d = v2_root.rstrip("/")
    if not (os.access(d, os.W_OK) and os.access(os.path.join(d, "cgroup.procs"), os.W_OK)):
        why.append(f"cgroup v2 group {d} is not writable (not delegated to us)")
        return None
    try:
        ctrls = set(read_file(os.path.join(d, "cgroup.controllers")).split())
    except OSError as e:
        why.append(f"cgroup v2 group {d}: {e.strerror}")
        return None
    if "memory" not in ctrls:
        avail = ", ".join(sorted(ctrls)) or "none"
        why.append(f"cgroup v2 group {d} has no memory controller (available: {avail})")
        return V2Backend(name, d, ctrls)
    try:
        enabled = set(read_file(os.path.join(d, "cgroup.subtree_control")).split())
    except OSError:
        enabled = set()
    if "memory" not in enabled and not os.path.ismount(d) and v2_root is None:
        stranger = strangers(d, [os.getpid()])
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
        d = dir_of(m, own[ctrl])
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
