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

Modules: ``fs`` (mounts, paths, control files), ``base`` (``Backend``, ``Group`` and what a
group reports), ``v1`` and ``v2`` (the two versions), ``detect`` (which one this machine
allows), ``pool`` (``GroupPool``).
"""

from __future__ import annotations

from .base import Backend, Group, GroupSample, GroupUsage
from .detect import Detection, detect
from .fs import CgroupError, Mount, parse_mountinfo, parse_proc_cgroup
from .pool import GroupPool
from .v1 import V1_CONTROLLERS, V1Backend, V1Group
from .v2 import V2Backend, V2Group

__all__ = [
    "V1_CONTROLLERS",
    "Backend",
    "CgroupError",
    "Detection",
    "Group",
    "GroupPool",
    "GroupSample",
    "GroupUsage",
    "Mount",
    "V1Backend",
    "V1Group",
    "V2Backend",
    "V2Group",
    "detect",
    "parse_mountinfo",
    "parse_proc_cgroup",
]
