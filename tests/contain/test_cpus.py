"""CPU lists, topology and placement: properties of ``choose_cpus`` and the allocator, and the
real sysfs of this machine."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sjq.contain.alloc import AllocationError, Allocator, device_env, pick_hand_over
from sjq.contain.cpus import CpuListError, Topology, choose_cpus, format_cpulist, parse_cpulist
from sjq.contain.procfs import pinned

cpu_sets = st.frozensets(st.integers(0, 300), max_size=60)


@given(cpu_sets)
def test_format_then_parse_is_identity(cpus: frozenset[int]) -> None:
    text = format_cpulist(cpus)
    assert parse_cpulist(text) == tuple(sorted(cpus))
    assert " " not in text


def test_cpulist_examples() -> None:
    assert format_cpulist([0, 2, 3]) == "0,2-3"
    assert format_cpulist([5, 1, 2, 3, 9, 10]) == "1-3,5,9-10"
    assert format_cpulist([]) == ""
    assert parse_cpulist("0-3,8,10-11\n") == (0, 1, 2, 3, 8, 10, 11)
    assert parse_cpulist(" 3, 1 ") == (1, 3)
    assert parse_cpulist("") == ()


@pytest.mark.parametrize("bad", ["a", "1-", "3-1", "1,,2", "-1", "1-2-3", "0x1", "99999999"])
def test_bad_cpulists_name_the_text(bad: str) -> None:
    with pytest.raises(CpuListError, match="CPU list"):
        parse_cpulist(bad)


@st.composite
def topologies(draw: st.DrawFn) -> Topology:
    """Nodes of cores of 1-4 threads, with some CPUs not managed."""
    cpus: list[int] = []
    core: dict[int, int] = {}
    node: dict[int, int] = {}
    nxt = 0
    for nd in range(draw(st.integers(1, 3))):
        for _ in range(draw(st.integers(1, 4))):
            threads = draw(st.integers(1, 4))
            ids = list(range(nxt, nxt + threads))
            nxt += threads
            for c in ids:
                core[c], node[c] = ids[0], nd
            cpus.extend(ids)
    managed = draw(st.lists(st.sampled_from(cpus), unique=True, min_size=1))
    return Topology(tuple(sorted(managed)), core, node)


@given(topologies(), st.data())
def test_choose_gives_n_distinct_free_cpus(topo: Topology, data: st.DataObject) -> None:
    free = data.draw(st.frozensets(st.sampled_from(topo.cpus)))
    n = data.draw(st.integers(0, len(topo.cpus) + 1))
    got = choose_cpus(free, n, topo)
    if n > len(free):
        assert got is None
        return
    assert got is not None
    assert len(got) == n == len(set(got))
    assert set(got) <= free
    assert list(got) == sorted(got)
    assert choose_cpus(free, n, topo) == got  # deterministic


@given(topologies(), st.data())
def test_one_node_is_used_when_one_fits(topo: Topology, data: st.DataObject) -> None:
    free = data.draw(st.frozensets(st.sampled_from(topo.cpus), min_size=1))
    per_node: dict[int, int] = {}
    for c in free:
        per_node[topo.node_of(c)] = per_node.get(topo.node_of(c), 0) + 1
    n = data.draw(st.integers(1, max(per_node.values())))
    got = choose_cpus(free, n, topo)
    assert got is not None
    assert len({topo.node_of(c) for c in got}) == 1


def test_whole_cores_first_and_partial_cores_for_the_odd_part() -> None:
    # two nodes of two 2-thread cores: node 0 = cores {0,1} {2,3}; node 1 = {4,5} {6,7}
    core = {c: c - c % 2 for c in range(8)}
    node = {c: c // 4 for c in range(8)}
    topo = Topology(tuple(range(8)), core, node)
    assert choose_cpus(range(8), 2, topo) == (0, 1)  # one whole core, not two halves
    # CPU 0 is taken by another job: a 1-CPU job goes to its sibling, keeping whole cores
    assert choose_cpus(range(1, 8), 1, topo) == (1,)
    # 3 CPUs: a whole core and the lone free thread, all on node 0
    assert choose_cpus(range(1, 8), 3, topo) == (1, 2, 3)
    # best-fit node: node 1 has exactly 2 free
    assert choose_cpus([0, 1, 2, 6, 7], 2, topo) == (6, 7)
    # no node has 5: spread over both, the larger first
    assert choose_cpus([1, 2, 3, 5, 6, 7], 5, topo) == (1, 2, 3, 6, 7)


def test_topology_of_this_machine() -> None:
    topo = Topology.read()
    assert set(topo.cpus) <= os.sched_getaffinity(0)
    assert topo.cpus
    for c in topo.cpus:
        assert topo.core_of(c) <= c


def test_topology_from_a_sysfs_tree(tmp_path: Path) -> None:
    """Reading a sysfs laid out as the kernel does, for a machine unlike this one: 2 nodes,
    2 threads per core, CPU 3 offline."""
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "online").write_text("0-2,4-7\n")
    for c in range(8):
        t = tmp_path / "cpu" / f"cpu{c}" / "topology"
        t.mkdir(parents=True)
        t.joinpath("thread_siblings_list").write_text(format_cpulist([c - c % 2, c - c % 2 + 1]))
    for nd in (0, 1):
        d = tmp_path / "node" / f"node{nd}"
        d.mkdir(parents=True)
        d.joinpath("cpulist").write_text(f"{nd * 4}-{nd * 4 + 3}\n")
    topo = Topology.read(range(8), sysfs=str(tmp_path))
    assert topo.cpus == (0, 1, 2, 4, 5, 6, 7)
    assert [topo.core_of(c) for c in topo.cpus] == [0, 0, 2, 4, 4, 6, 6]
    assert [topo.node_of(c) for c in topo.cpus] == [0, 0, 0, 1, 1, 1, 1]
    # an unreadable tree degrades to one core per CPU, not an error
    flat = Topology.read([0, 1], sysfs=str(tmp_path / "missing"))
    assert flat.cpus == (0, 1)
    assert flat.core_of(1) == 1


# -- the allocator: never one CPU to two running jobs --------------------------------

ops = st.lists(
    st.tuples(
        st.sampled_from(["take", "release", "hand_over", "reserve"]),
        st.integers(0, 9),
        st.integers(0, 9),
        st.integers(0, 4),
    ),
    max_size=60,
)


@given(topologies(), ops)
def test_allocator_never_gives_a_cpu_to_two_jobs(topo: Topology, program: list) -> None:
    alloc: Allocator[int] = Allocator(topo.cpus, lambda free, n: choose_cpus(free, n, topo))
    for op, a, b, n in program:
        try:
            if op == "take":
                alloc.take(a, n)
            elif op == "release":
                alloc.release(a)
            elif op == "reserve":
                alloc.reserve(("entry", a), n)
            elif a in alloc.held and b not in alloc.held:
                before = set(alloc.held[a]) | set(alloc.reserved.get(("entry", b), ()))
                got = alloc.hand_over(a, b, n, ("entry", b))
                assert set(got) <= before
        except AllocationError:
            pass
        held = [c for ids in [*alloc.held.values(), *alloc.reserved.values()] for c in ids]
        assert len(held) == len(set(held)), alloc.held
        assert set(held).isdisjoint(alloc.free)
        assert set(held) | alloc.free == set(topo.cpus)


def test_hand_over_passes_the_ended_jobs_cpus() -> None:
    topo = Topology.flat(range(4))
    alloc: Allocator[int] = Allocator(topo.cpus, lambda free, n: choose_cpus(free, n, topo))
    assert alloc.take("a", 2) == (0, 1)
    assert alloc.take("b", 1) == (2,)
    # the armed job after "a" needs 1 CPU: one of a's, the other is free again
    assert alloc.hand_over("a", "c", 1) == (0,)
    assert alloc.free == {1, 3}
    # a job armed with an extra CPU set aside (one runner, free CPUs usable too)
    assert alloc.reserve("e", 1) == (1,)
    assert alloc.hand_over("b", "d", 2, "e") == (1, 2)
    assert alloc.free == {3}
    with pytest.raises(AllocationError, match="needs 3"):
        alloc.hand_over("c", "x", 3)
    # the keeper's pure computation gives the daemon's answer
    assert pick_hand_over((0, 1), (), 1, lambda f, n: choose_cpus(f, n, topo)) == ((0,), (1,))


def test_assign_refuses_held_cpus() -> None:
    alloc: Allocator[int] = Allocator(range(2), lambda f, n: choose_cpus(f, n, Topology.flat(f)))
    alloc.assign(7, [1])
    with pytest.raises(AllocationError, match="not free"):
        alloc.assign(8, [1, 0])
    assert alloc.free == {0}


def test_a_job_spawned_while_pinned_starts_on_its_cpus(tmp_path: Path) -> None:
    """Pinning without cgroups: the spawning thread takes the job's affinity around the
    spawn, so the job runs nowhere else from its first instruction."""
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two CPUs")
    before = os.sched_getaffinity(0)
    want = {max(before)}
    out = tmp_path / "cpus"
    with pinned(want):
        assert os.sched_getaffinity(0) == want
        pid = os.posix_spawn(
            "/bin/sh", ["sh", "-c", f"grep Cpus_allowed_list /proc/self/status > {out}"], {}
        )
    assert os.sched_getaffinity(0) == before
    _, status = os.waitpid(pid, 0)
    assert status == 0
    assert parse_cpulist(out.read_text().split()[-1]) == tuple(want)
    with pinned(None):
        assert os.sched_getaffinity(0) == before


def test_device_env() -> None:
    env = device_env(
        {"PATH": "/bin", "OMP_NUM_THREADS": "8"}, procs=2, cpus=[0, 2, 3], gpus=["1", "MIG-x"]
    )
    assert env == {
        "PATH": "/bin",
        "SJQ_CPUS": "0,2-3",
        "OMP_NUM_THREADS": "8",  # the job's own setting stays
        "MKL_NUM_THREADS": "2",
        "OPENBLAS_NUM_THREADS": "2",
        "CUDA_VISIBLE_DEVICES": "1,MIG-x",
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
        "SJQ_GPUS": "1,MIG-x",
    }
    assert device_env({"A": "b"}, procs=1) == {"A": "b"}  # not pinned, no GPU setting
    assert device_env({}, procs=1, gpus=[])["CUDA_VISIBLE_DEVICES"] == ""
