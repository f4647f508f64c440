"""The parked spawner (sjq.keeper.spawner) in real cgroup v1 hierarchies: a thread of this
process waits in the groups of the job a keeper expects to start next, starts it there (in
them from its first instruction, pinned), and never leaves the process where a group kill
or the OOM killer could take it for a job's."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from sjq.contain.cgroup import CgroupError, GroupPool, V1Backend, detect, parse_proc_cgroup
from sjq.contain.cpus import Topology
from sjq.jobs import JobLaunch
from sjq.keeper.guard import Guard
from sjq.keeper.messages import ArmedStart
from sjq.keeper.spawner import Spawner

from .conftest import PY, _close, _spawned, _unique

MB = 1 << 20
CPUS = sorted(os.sched_getaffinity(0))

pytestmark = pytest.mark.skipif(len(CPUS) < 2, reason="needs a CPU spare besides the job's")


def launch(jobid: int, cpus: tuple[int, ...] | None = None, mem: int = 64 * MB) -> JobLaunch:
    return JobLaunch(jobid, b"#!/bin/sh\n", "/", "/dev/null", "/dev/null", {}, mem=mem, cpus=cpus)


def entry(token: int, job: JobLaunch, after: int | None = None) -> ArmedStart:
    return ArmedStart(token, job, after, False)


@pytest.fixture
def guard(v1: V1Backend) -> Iterator[Guard]:
    """A keeper's guard as ``Guard.open`` makes it, less the subreaper (this is pytest)."""
    g = Guard(v1, pool_size=3, topology=Topology.flat(CPUS))
    g.home = set(CPUS)
    g.spare = tuple(CPUS[1:])  # the running job holds CPUS[0]
    g.pool = GroupPool(v1, size=3)
    g.pool.tidy()
    g.spawner = Spawner()
    try:
        yield g
    finally:
        assert g.pool is not None
        expect(g, None, {})
        assert g.pool.close(), "a test left processes in its groups"


def expect(g: Guard, running: JobLaunch | None, entries: dict[int, ArmedStart]) -> None:
    """``Guard.expect``, and wait until the spawner thread has moved (it moves itself)."""
    g.expect(running, entries)
    assert g.spawner is not None
    g.spawner.sync()


def groups_of(tid: int) -> dict[str, str]:
    with open(f"/proc/self/task/{tid}/cgroup") as f:
        where = parse_proc_cgroup(f.read())
    return {c: where[c] for c in ("memory", "cpuacct", "cpuset")}


def in_group(where: dict[str, str], dirs: dict[str, str]) -> bool:
    return all(dirs[c].endswith(where[c]) for c in dirs)


def reap(pid: int) -> int:
    _, status = os.waitpid(pid, 0)
    _spawned.remove(pid)
    return status


def start(g: Guard, job: JobLaunch, argv: list[str]) -> tuple[int, bool]:
    """Start ``argv`` as the keeper starts ``job`` (``Guard.place``); its pid, and whether
    the spawner thread made the start."""
    group, place, call = g.place(job)
    assert group is not None

    def go() -> int:
        return os.posix_spawn(argv[0], argv, dict(os.environ), setsid=True)

    with place:
        pid = call(go) if call is not None else go()
    _spawned.append(pid)
    return pid, call is not None


def test_the_spawner_waits_in_the_next_jobs_groups_and_starts_it_there(
    guard: Guard, tmp_path: Path
) -> None:
    assert guard.spawner is not None
    tid, home = guard.spawner.tid, groups_of(os.getpid())
    running, nxt = launch(1, (CPUS[0],)), launch(2)
    expect(guard, running, {7: entry(7, nxt), 9: entry(9, launch(3))})
    parked = guard.parked
    assert parked is not None
    assert (parked.jobid, parked.cpus) == (2, (CPUS[0],))  # the lowest token, its CPUs handed over
    assert in_group(groups_of(tid), parked.group.dirs)
    assert os.sched_getaffinity(tid) == {CPUS[0]}  # the job's cpuset holds it
    assert groups_of(os.getpid()) == home  # the keeper's own thread never moves
    # cgroup.procs lists this process for its thread; the group's own listing never does
    with open(os.path.join(parked.group.path, "cgroup.procs")) as f:
        assert os.getpid() in [int(p) for p in f.read().split()]
    assert parked.group.pids() == []
    assert not parked.group.populated()

    out = tmp_path / "where"
    handed = guard.hand_over(running, entry(7, nxt))
    assert handed is not None
    cmd = f"exec sh -c 'cat /proc/self/cgroup; grep Cpus_allowed_list /proc/self/status' > {out}"
    pid, by_spawner = start(guard, handed, ["/bin/sh", "-c", cmd])
    assert by_spawner
    assert reap(pid) == 0
    text = out.read_text()
    job = parse_proc_cgroup(text)
    assert in_group({c: job[c] for c in parked.group.dirs}, parked.group.dirs)
    assert text.split()[-1] == str(CPUS[0])
    # nothing expected next: the thread goes home, the group can be reset and reused
    expect(guard, None, {})
    assert groups_of(tid) == home
    assert os.sched_getaffinity(tid) == set(CPUS)
    guard.unplace(parked.group)
    assert guard.pool is not None
    guard.pool.reset_used()
    assert parked.group in guard.pool.ready


def test_from_one_job_to_the_next_the_thread_moves_group_to_group(guard: Guard) -> None:
    assert guard.spawner is not None
    tid = guard.spawner.tid
    expect(guard, launch(1, (CPUS[0],)), {1: entry(1, launch(2))})
    first = guard.parked
    assert first is not None
    job = guard.hand_over(launch(1, (CPUS[0],)), entry(1, launch(2)))
    assert job is not None
    pid, by_spawner = start(guard, job, ["/bin/sleep", "30"])
    assert by_spawner
    expect(guard, job, {2: entry(2, launch(3), after=2)})  # the next job waits for this one
    second = guard.parked
    assert second is not None
    assert second.group is not first.group
    assert in_group(groups_of(tid), second.group.dirs)
    # the sleeping job alone is left in its group
    assert Path(first.group.dirs["memory"], "tasks").read_text().split() == [str(pid)]
    assert first.group.pids() == [pid]
    os.kill(pid, signal.SIGKILL)
    reap(pid)
    guard.unplace(first.group)


def test_a_start_other_than_the_expected_one_gets_a_group_of_its_own(guard: Guard) -> None:
    assert guard.spawner is not None
    assert guard.pool is not None
    tid, home = guard.spawner.tid, groups_of(os.getpid())
    expect(guard, launch(1, (CPUS[0],)), {4: entry(4, launch(2))})
    first = guard.parked
    assert first is not None
    # a job other than the one expected (the daemon took the token back): the parked group
    # goes back, and the spawner is moved into the job's own group for its start
    group, _, call = guard.place(launch(3, (CPUS[0],)))
    assert call is not None
    assert group is not None
    assert group is not first.group
    assert first.group in guard.pool.used
    assert guard.parked is None
    assert groups_of(tid) == home  # it went home, and enters the group only to start the job
    where = call(lambda: groups_of(threading.get_native_id()))  # type: ignore[arg-type,return-value]
    assert in_group(where, group.dirs)
    assert in_group(groups_of(tid), group.dirs)
    guard.unplace(group)  # (as if the start failed): the spawner goes home
    assert groups_of(tid) == home
    # the expected job, but on the CPU that was spare: no CPU is spare for the hand-over,
    # so the keeper's own thread starts it (entering the group around the spawn)
    expect(guard, launch(1, (CPUS[0],)), {4: entry(4, launch(2))})
    second = guard.parked
    assert second is not None
    group, place, call = guard.place(launch(2, (CPUS[1],)))
    assert call is None
    assert group is not None
    assert group is not second.group
    assert groups_of(tid) == home
    with place:
        assert in_group(groups_of(threading.get_native_id()), group.dirs)
    assert groups_of(os.getpid()) == home
    guard.unplace(group)
    guard.pool.reset_used()


@pytest.mark.parametrize(
    "what",
    ["no spare CPU", "another job's end", "another user", "no memory limit", "no entry"],
)
def test_the_spawner_stays_home_when_no_start_can_be_expected(guard: Guard, what: str) -> None:
    assert guard.spawner is not None
    home = groups_of(os.getpid())
    running = launch(1, (CPUS[0],))
    entries = {1: entry(1, launch(2))}
    if what == "no spare CPU":
        guard.spare = ()  # the hand-over costs wake-ups: not on a busy machine
    elif what == "another job's end":
        entries = {1: entry(1, launch(2), after=5)}
    elif what == "another user":
        entries = {1: entry(1, launch(2)._replace(uid=1000, gid=1000))}
    elif what == "no memory limit":
        entries = {1: entry(1, launch(2)._replace(mem=None))}
    else:
        entries = {}
    expect(guard, running, entries)
    assert guard.parked is None
    assert groups_of(guard.spawner.tid) == home


def test_the_oom_killer_takes_the_job_never_the_keeper_for_its_thread(guard: Guard) -> None:
    """A thread is not its process: the memory this process uses is not charged to the
    group the thread waits in, and the kernel's OOM kill picks among the group's processes."""
    expect(guard, launch(1, (CPUS[0],)), {1: entry(1, launch(2, mem=100 * MB))})
    parked = guard.parked
    assert parked is not None
    before = parked.group.sample().resident
    ballast = bytearray(50 * MB)  # this process's memory, while its thread is parked
    ballast[:: 1 << 12] = b"x" * len(ballast[:: 1 << 12])
    assert parked.group.sample().resident == before
    del ballast
    job = guard.hand_over(launch(1, (CPUS[0],)), entry(1, launch(2, mem=100 * MB)))
    assert job is not None
    grab = "b = bytearray(300 * 2**20); b[::4096] = b'x' * len(b[::4096])"
    pid, by_spawner = start(guard, job, [PY, "-c", grab])
    assert by_spawner
    status = reap(pid)
    assert os.WIFSIGNALED(status)
    assert os.WTERMSIG(status) == signal.SIGKILL
    assert parked.group.sample().oom_kills >= 1
    expect(guard, None, {})
    guard.unplace(parked.group)


def test_a_failed_start_sends_the_thread_home(guard: Guard) -> None:
    assert guard.spawner is not None
    home = groups_of(os.getpid())
    expect(guard, launch(1, (CPUS[0],)), {1: entry(1, launch(2))})
    parked = guard.parked
    assert parked is not None
    job = guard.hand_over(launch(1, (CPUS[0],)), entry(1, launch(2)))
    assert job is not None
    with pytest.raises(FileNotFoundError):
        start(guard, job, ["/nonexistent/job"])
    assert in_group(groups_of(guard.spawner.tid), parked.group.dirs)
    guard.unplace(parked.group)  # what the keeper does with a job that cannot start
    assert groups_of(guard.spawner.tid) == home


def test_a_call_returns_or_raises_in_the_caller() -> None:
    s = Spawner()
    assert s.tid != 0
    assert s.tid != os.getpid()
    assert s.call(lambda: 42) == 42
    with pytest.raises(ZeroDivisionError):
        s.call(lambda: 1 // 0)
    assert s.call(lambda: "again") == "again"  # and goes on after an exception


def test_a_group_the_spawner_cannot_enter_is_an_error_for_the_keeper_to_handle(
    guard: Guard,
) -> None:
    """The keeper's answer to a CgroupError at a start is the watcher (tested with a real
    daemon in tests/server/test_containment.py); here: the error reaches it, and the thread
    is home, never half in the group."""
    assert guard.spawner is not None
    home = groups_of(os.getpid())
    group, _, call = guard.place(launch(2, (CPUS[0],)))
    assert group is not None
    assert call is not None
    # a cpuset group without CPUs takes no task (ENOSPC)
    Path(group.dirs["cpuset"], "cpuset.cpus").write_text("\n")
    with pytest.raises(CgroupError):
        call(lambda: os.posix_spawn("/bin/true", ["/bin/true"], {}))
    assert groups_of(guard.spawner.tid) == home
    guard.unplace(group)
    assert groups_of(guard.spawner.tid) == home


def test_with_nowhere_to_go_the_spawner_stays_with_the_job_it_started(guard: Guard) -> None:
    """A move home would run on the new job's CPU as it starts; the spawner stays in its
    group (the keeper never listed there) until a park or the job's end sends it on."""
    assert guard.spawner is not None
    home = groups_of(os.getpid())
    job = launch(2, (CPUS[0],))
    group, _, call = guard.place(job)
    assert group is not None
    assert call is not None
    pid = call(lambda: os.posix_spawn("/bin/sleep", ["/bin/sleep", "30"], {}, setsid=True))
    _spawned.append(pid)
    expect(guard, job, {})  # nothing armed behind it yet
    assert in_group(groups_of(guard.spawner.tid), group.dirs)
    assert group.pids() == [pid]
    expect(guard, job, {1: entry(1, launch(3))})  # now there is: straight to its group
    parked = guard.parked
    assert parked is not None
    assert in_group(groups_of(guard.spawner.tid), parked.group.dirs)
    os.kill(pid, signal.SIGKILL)
    reap(pid)
    guard.unplace(group)
    expect(guard, None, {})  # the keeper runs no job: home
    assert groups_of(guard.spawner.tid) == home


def test_without_a_cpuset_a_pinned_job_is_started_by_the_keepers_thread() -> None:
    """Without the cpuset hierarchy a job is pinned by the affinity of the thread that
    starts it, which the spawner never takes: such a start stays with the keeper's thread."""
    if os.geteuid() != 0:
        pytest.skip("cgroup v1 hierarchies are writable only by root")
    d = detect(versions=("v1",), controllers=("memory", "cpuacct"), name=_unique())
    if not isinstance(d.backend, V1Backend):
        pytest.skip(f"no usable cgroup v1 memory hierarchy here ({d.why})")
    b = d.backend
    b.setup()
    g = Guard(b, pool_size=2, topology=Topology.flat(CPUS))
    g.home, g.spare = set(CPUS), tuple(CPUS[1:])
    g.pool = GroupPool(b, size=2)
    g.spawner = Spawner()
    try:
        group, _, call = g.place(launch(2, (CPUS[0],)))
        assert group is not None
        assert call is None  # pinned: the keeper's thread, by affinity
        g.unplace(group)
        group, _, call = g.place(launch(3, None))
        assert group is not None
        assert call is not None  # not pinned: the spawner may
        g.unplace(group)
    finally:
        g.close()
        _close(b)
