"""CPU lists, cores, NUMA nodes and which CPUs a job gets. Imports no asyncio or sqlite3.

The ``0,2-3`` list format, the machine's topology (``Topology.read``: sysfs; the rest is
pure), and placement.

Placement (``choose_cpus``) is a cheap greedy rule, not an optimiser:

1. NUMA: the job's CPUs come from one node if any node has enough free ones (the node
   with the fewest free CPUs that still fits: best fit keeps large holes for large jobs);
   otherwise from as few nodes as possible, largest free first.
2. Cores: within those, whole free cores first (so a job never shares a core's hyper-
   threads with another job when it can be avoided); the part that does not fill a whole
   core goes to a core that is already partly in use if one has exactly that many free
   threads (so whole cores stay free for others), else the smallest hole that fits.
3. Ties go to the lowest ids, so the result is deterministic: the daemon and a keeper
   that hands CPUs over compute the same answer from the same free set.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

from sjq.protocol import format_runs

__all__ = ["CpuListError", "Topology", "choose_cpus", "format_cpulist", "parse_cpulist"]

MAX_CPU = 1 << 16  # the kernel's NR_CPUS tops out at 8192; anything far above is a typo


class CpuListError(ValueError):
    """A CPU list could not be read; the message quotes it and says what was expected."""


def parse_cpulist(text: str) -> tuple[int, ...]:
    """``0,2-3`` -> (0, 2, 3): the format of sysfs, cpusets, ``taskset -c`` and SJQ_CPUS.

    Sorted and without repeats; an empty string (or only blanks) is the empty list.
    """
    out: set[int] = set()
    for raw in text.strip().split(","):
        part = raw.strip()
        if not part:
            if text.strip():
                raise CpuListError(f"cannot read CPU list {text!r}: empty item")
            continue
        lo_s, dash, hi_s = part.partition("-")
        try:
            lo = int(lo_s)
            hi = int(hi_s) if dash else lo
        except ValueError:
            raise CpuListError(
                f"cannot read CPU list {text!r} (expected ids and ranges, e.g. 0,2-3)"
            ) from None
        if lo < 0 or hi < lo or hi >= MAX_CPU:
            raise CpuListError(f"cannot read CPU list {text!r}: bad range {part!r}")
        out.update(range(lo, hi + 1))
    return tuple(sorted(out))


def format_cpulist(cpus: Iterable[int]) -> str:
    """(0, 2, 3) -> ``0,2-3``; the inverse of ``parse_cpulist``."""
    return format_runs(sorted(set(cpus)))


@dataclass(frozen=True, slots=True)
class Topology:
    """The CPUs sjq may hand out, each with its core and NUMA node.

    ``core`` maps a CPU to the lowest id among its hardware threads (the core's name);
    ``node`` to its NUMA node. A CPU missing from either is its own core on node 0.
    """

    cpus: tuple[int, ...]
    core: Mapping[int, int] = field(default_factory=dict)
    node: Mapping[int, int] = field(default_factory=dict)

    @classmethod
    def flat(cls, cpus: Iterable[int]) -> Topology:
        """Every CPU a core of its own, one node: for tests and for machines whose sysfs
        says nothing."""
        return cls(tuple(sorted(set(cpus))))

    @classmethod
    def read(
        cls,
        allowed: Collection[int] | None = None,
        *,
        sysfs: str = "/sys/devices/system",
    ) -> Topology:
        """The online CPUs in ``allowed`` (default: this process's affinity), with cores from
        ``cpu*/topology/thread_siblings_list`` and nodes from ``node/node*/cpulist``.
        Unreadable parts degrade to ``flat`` rather than fail: placement is a preference."""
        if allowed is None:
            allowed = os.sched_getaffinity(0)
        cpus = set(allowed)
        online = _read_list(os.path.join(sysfs, "cpu", "online"))
        if online is not None:
            cpus &= set(online)
        core: dict[int, int] = {}
        for c in cpus:
            base = os.path.join(sysfs, "cpu", f"cpu{c}", "topology")
            sib = _read_list(os.path.join(base, "core_cpus_list"))
            if sib is None:
                sib = _read_list(os.path.join(base, "thread_siblings_list"))
            if sib:
                core[c] = min(sib)
        node: dict[int, int] = {}
        nodes_dir = os.path.join(sysfs, "node")
        try:
            names = os.listdir(nodes_dir)
        except OSError:
            names = []
        for name in names:
            if name.startswith("node") and name[4:].isdigit():
                for c in _read_list(os.path.join(nodes_dir, name, "cpulist")) or ():
                    if c in cpus:
                        node[c] = int(name[4:])
        return cls(tuple(sorted(cpus)), core, node)

    def core_of(self, cpu: int) -> int:
        return self.core.get(cpu, cpu)

    def node_of(self, cpu: int) -> int:
        return self.node.get(cpu, 0)


def _read_list(path: str) -> tuple[int, ...] | None:
    try:
        with open(path) as f:
            return parse_cpulist(f.read())
    except (OSError, CpuListError):
        return None


def choose_cpus(free: Collection[int], n: int, topo: Topology) -> tuple[int, ...] | None:
    """``n`` CPUs out of ``free`` by the rule in the module docstring; None if there are
    fewer than ``n``. Sorted."""
    if n < 0:
        raise ValueError("a job cannot ask for a negative number of CPUs")
    pool = sorted(set(free))
    if n > len(pool):
        return None
    if n == 0:
        return ()
    by_node: dict[int, list[int]] = {}
    for c in pool:
        by_node.setdefault(topo.node_of(c), []).append(c)
    fitting = [(len(cs), nd) for nd, cs in by_node.items() if len(cs) >= n]
    if fitting:
        order = [min(fitting)[1]]
    else:
        order = [nd for _, nd in sorted((-len(cs), nd) for nd, cs in by_node.items())]
    # The size of each core counts all its threads sjq manages, free or not, so that a
    # core another job uses part of is seen as partly used.
    size: dict[int, int] = {}
    for c in topo.cpus:
        size[topo.core_of(c)] = size.get(topo.core_of(c), 0) + 1
    out: list[int] = []
    need = n
    for nd in order:
        if need == 0:
            break
        take = _from_cores(by_node[nd], min(need, len(by_node[nd])), topo, size)
        out.extend(take)
        need -= len(take)
    return tuple(sorted(out))


def _from_cores(cpus: list[int], n: int, topo: Topology, size: dict[int, int]) -> list[int]:
    cores: dict[int, list[int]] = {}
    for c in cpus:
        cores.setdefault(topo.core_of(c), []).append(c)
    out: list[int] = []
    # Whole free cores, as many as fit entirely.
    for k in sorted(cores):
        cs = cores[k]
        if len(cs) >= size.get(k, 1) and len(out) + len(cs) <= n:
            out.extend(cs)
            del cores[k]
    # The rest, a hole at a time (see the module docstring for the order).
    while len(out) < n:
        need = n - len(out)
        k = min(cores, key=lambda k: _hole_rank(len(cores[k]), need, size.get(k, 1), k))
        out.extend(cores.pop(k)[:need])
    return out


def _hole_rank(free: int, need: int, size: int, core: int) -> tuple[int, int, int, int]:
    whole = int(free >= size)
    if free == need:
        return (0, whole, 0, core)
    if free > need:
        return (1, free, whole, core)
    return (2, -free, whole, core)
