"""cgroup v1 containment on this machine (root; memory, cpuacct and cpuset hierarchies):
real groups, real processes, real OOM kills."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import threading
import time
from pathlib import Path

import pytest
from support import wait_for

from sjq.contain.account import out_of_memory_reason, usage
from sjq.contain.cgroup import CgroupError, GroupPool, V1Backend, detect, parse_proc_cgroup
from sjq.contain.procfs import keeper_peak
from sjq.contain.watch import OomKill, Watcher, WatchPolicy

from .conftest import PY, gate_wait, hold, sh, spawn

MB = 1 << 20
ALLOC = (  # a Python process that holds N MB of anonymous memory until the gate opens
    "import os, sys, time\n"
    "b = bytearray({n} * 2**20)\n"
    "b[::4096] = b'x' * len(b[::4096])\n"
    "open(sys.argv[1] + '.' + str(os.getpid()), 'w').close()\n"
    "while not os.path.exists(sys.argv[2]): time.sleep(0.005)\n"
)


def alloc_cmd(n: int, ready: Path, gate: Path) -> str:
    return f'{PY} -c "{ALLOC.format(n=n)}" {ready} {gate}'


def reap(pid: int, timeout: float = 20.0) -> tuple[int, os.struct_rusage]:
    """wait4 with a bound: a job that does not end fails the test instead of hanging it."""
    deadline = time.monotonic() + timeout
    while True:
        got, status, ru = os.wait4(pid, os.WNOHANG)
        if got:
            return status, ru
        if time.monotonic() > deadline:
            os.killpg(pid, signal.SIGKILL)
            pytest.fail(f"job {pid} did not end in {timeout} s")
        time.sleep(0.005)  # polling interval of a bounded wait


def own_dir(ctrl: str) -> str:
    with open("/proc/self/cgroup") as f:
        rel = parse_proc_cgroup(f.read())[ctrl]
    return os.path.join(f"/sys/fs/cgroup/{ctrl}", rel.lstrip("/")).rstrip("/")


def test_detection_places_groups_below_our_own(v1: V1Backend) -> None:
    assert set(v1.own) == {"memory", "cpuacct", "cpuset"}
    desc = v1.describe()
    assert desc.startswith("cgroup v1 (memory, cpuacct, cpuset) below ")
    for ctrl, base in zip(v1.own, v1.bases(), strict=True):
        assert os.path.dirname(base) == own_dir(ctrl) == v1.own[ctrl]
        assert base != f"/sys/fs/cgroup/{ctrl}"  # never the hierarchy's root
        assert base in desc


def test_a_job_is_in_its_groups_from_its_first_instruction(
    v1: V1Backend, v1_pool: GroupPool, tmp_path: Path
) -> None:
    g = v1_pool.take(64 * MB, [1])
    out = tmp_path / "cgroup"
    # cat is the job itself: what it prints is where it was when it began
    pid = spawn(sh(f"exec cat /proc/self/cgroup > {out}"), backend=v1, group=g)
    status, _ = reap(pid)
    assert status == 0
    where = parse_proc_cgroup(out.read_text())
    for ctrl, d in g.dirs.items():
        assert d.endswith(where[ctrl]), (ctrl, d, where[ctrl])
    # and the spawning thread is back home
    with open("/proc/self/cgroup") as f:
        assert parse_proc_cgroup(f.read())["memory"] == where["memory"].rsplit("/sjq.", 1)[0]
    v1_pool.give_back(g)


def test_every_descendant_stays_in_the_group_and_dies_with_it(
    v1: V1Backend, v1_pool: GroupPool, tmp_path: Path
) -> None:
    g = v1_pool.take(64 * MB, None)
    ready, left = tmp_path / "ready", tmp_path / "left"
    # one child in a new session (it says so once it is in it), one double-forked daemon
    # (reparented to init)
    script = f"setsid sh -c 'touch {left}; exec sleep 60' & (sleep 61 &) ; touch {ready}; sleep 62"
    pid = spawn(sh(script), backend=v1, group=g)
    wait_for(lambda: ready.exists() and left.exists(), what="the job's children")
    pids = wait_for(lambda: p if len(p := g.pids()) >= 4 else None, what="4 processes")
    sessions = {os.getsid(p) for p in pids if os.path.exists(f"/proc/{p}")}
    assert len(sessions) >= 2  # the group holds what left the job's session
    assert g.kill() >= 4
    status, _ = reap(pid)
    assert os.WTERMSIG(status) == signal.SIGKILL
    wait_for(lambda: not g.populated(), what="the group to empty")
    v1_pool.give_back(g)


def test_out_of_memory_kills_the_whole_job(
    v1: V1Backend, v1_pool: GroupPool, tmp_path: Path
) -> None:
    g = v1_pool.take(100 * MB, None)
    with open(os.path.join(g.dirs["memory"], "memory.memsw.limit_in_bytes")) as f:
        assert int(f.read()) == 100 * MB  # swap included
    # the allocating child is OOM-killed; without sjq the shell would go on for a minute
    pid = spawn(sh(f"{PY} -c 'b = bytearray(300 * 2**20)'; sleep 60"), backend=v1, group=g)
    w = Watcher(WatchPolicy())
    w.add("j", pid, start=time.monotonic(), limit=100 * MB, group=g)
    assert g.oom_fd is not None
    r, _, _ = select.select([g.oom_fd], [], [], 20)
    assert r, "no OOM notification"
    # the notification comes as the OOM begins; the kill is counted a moment later
    wait_for(lambda: g.sample().oom_kills, what="the OOM kill")
    events = w.tick(now=time.monotonic() + 1)
    assert events == [OomKill("j", 1)]
    g.kill()
    status, ru = reap(pid)
    assert os.WTERMSIG(status) == signal.SIGKILL
    judge = w.finish("j")
    u = usage(
        judge=judge,
        group=g.finish(),
        ru_utime=ru.ru_utime,
        ru_stime=ru.ru_stime,
        ru_maxrss_kb=ru.ru_maxrss,
        keeper_peak=keeper_peak(),
    )
    assert u.oom
    assert 95 * MB <= u.maxrss <= 101 * MB
    assert out_of_memory_reason(100 * MB, u.maxrss).startswith("out of memory (limit 100M, peak")
    v1_pool.give_back(g)


def test_a_job_within_its_limit_never_notices(
    v1: V1Backend, v1_pool: GroupPool, tmp_path: Path
) -> None:
    g = v1_pool.take(100 * MB, None)
    pid = spawn(
        sh(hold(60)),
        backend=v1,
        group=g,
    )
    status, _ = reap(pid)
    assert status == 0
    assert g.finish().oom_kills == 0
    v1_pool.give_back(g)


def test_cpuset_pins_each_job_to_its_cpus(
    v1: V1Backend, v1_pool: GroupPool, tmp_path: Path
) -> None:
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two CPUs")
    seen = {}
    for cpu in (0, 1):
        g = v1_pool.take(64 * MB, [cpu])
        out = tmp_path / f"cpus{cpu}"
        # the job widens its own affinity: the cpuset still holds it
        pid = spawn(
            sh(
                "taskset -pc 0-1 $$ >/dev/null 2>&1;"
                f" grep Cpus_allowed_list /proc/self/status > {out}"
            ),
            backend=v1,
            group=g,
        )
        assert reap(pid)[0] == 0
        seen[cpu] = out.read_text().split()[-1]
        v1_pool.give_back(g)
    assert seen == {0: "0", 1: "1"}


def test_leaving_frees_the_cpus_first(v1: V1Backend, v1_pool: GroupPool) -> None:
    """``leave(then)``: ``then`` runs once the thread is out of the job's cpuset (it may
    move to another CPU) and before it leaves the job's other groups; a thread-level move
    (v1 ``tasks``), so done in a thread of its own."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("needs two CPUs")
    g = v1_pool.take(64 * MB, [cpus[0]])
    seen: list[tuple[set[int], str]] = []

    def where() -> tuple[set[int], str]:
        with open(f"/proc/self/task/{threading.get_native_id()}/cgroup") as f:
            return os.sched_getaffinity(0), parse_proc_cgroup(f.read())["memory"]

    def run() -> None:
        with v1.inside(g, lambda: seen.append(where())):
            seen.append(where())
        seen.append(where())

    t = threading.Thread(target=run)
    t.start()
    t.join(10)
    inside, between, after = seen
    assert inside[0] == {cpus[0]}
    assert between[0] == set(cpus)  # out of the cpuset ...
    assert between[1] == inside[1]  # ... still in the memory group
    assert after[1] != inside[1]
    v1_pool.give_back(g)


def test_cpu_time_of_the_whole_tree(v1: V1Backend, v1_pool: GroupPool) -> None:
    g = v1_pool.take(64 * MB, None)
    burn = (
        f"{PY} -c 'import time; t = time.process_time() + 0.2\nwhile time.process_time() < t: pass'"
    )
    pid = spawn(sh(f"{burn} & {burn} & wait"), backend=v1, group=g)
    status, ru = reap(pid)
    assert status == 0
    fin = g.finish()
    assert fin.cpu_user is not None
    assert fin.cpu_sys is not None
    total = fin.cpu_user + fin.cpu_sys
    assert total >= 0.4
    # wait4 sees the same tree here (both children were waited for)
    assert total == pytest.approx(ru.ru_utime + ru.ru_stime, abs=0.05)
    assert fin.cpu_user == pytest.approx(ru.ru_utime, abs=0.1)
    v1_pool.give_back(g)


def test_true_peak_memory(v1: V1Backend, v1_pool: GroupPool, tmp_path: Path) -> None:
    """The three cases of issue 12, under cgroup v1: an echo job, a job of three 50 MB
    processes, and a job that writes and reads back a 300 MB file."""
    results = {}
    gate = tmp_path / "gate"
    cases = {
        "echo": "echo hello > /dev/null",
        "three": " & ".join([alloc_cmd(50, tmp_path / "r", gate)] * 3) + " & wait",
        "io": f"dd if=/dev/zero of={tmp_path}/big bs=1M count=300 status=none;"
        f" cat {tmp_path}/big > /dev/null; rm {tmp_path}/big",
    }
    for name, script in cases.items():
        g = v1_pool.take(1 << 30, None)
        w = Watcher(WatchPolicy())
        t0 = time.monotonic()
        pid = spawn(sh(script), backend=v1, group=g)
        kp = keeper_peak()
        w.add(name, pid, start=t0, limit=1 << 30, group=g)
        if name == "three":
            wait_for(lambda: len(list(tmp_path.glob("r.*"))) == 3, what="three allocations")
            w.sample(name)
            gate.touch()
        while os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
            if (due := w.due()) is not None and due <= time.monotonic():
                w.tick()
            time.sleep(0.002)  # the keeper's loop, standing still between samples
        status, ru = reap(pid)
        assert status == 0
        fin = g.finish()
        u = usage(
            judge=w.finish(name),
            group=fin,
            ru_utime=ru.ru_utime,
            ru_stime=ru.ru_stime,
            ru_maxrss_kb=ru.ru_maxrss,
            keeper_peak=kp,
        )
        results[name] = (u, fin, ru.ru_maxrss * 1024)
        v1_pool.give_back(g)
        v1_pool.tidy()
    echo, _echo_fin, echo_ru = results["echo"]
    assert echo_ru >= keeper_peak() // 2  # wait4 reports this process's size ...
    assert echo.maxrss < 5 * MB  # ... the group says what the job used
    assert echo.measured_by == "cgroup"
    three, _, three_ru = results["three"]
    assert 150 * MB <= three.maxrss <= 200 * MB, three  # the sum, not the largest
    # wait4: the largest process, or this process's own size (a long test run grows it),
    # never the sum
    assert three_ru <= max(keeper_peak(), 100 * MB)
    io, io_fin, _ = results["io"]
    assert io.maxrss < 20 * MB, io  # page cache is not resident memory
    assert io_fin.peak_charge is not None
    assert io_fin.peak_charge > 100 * MB


def test_pool_reuses_groups_and_resets_them(v1: V1Backend) -> None:
    pool = GroupPool(v1, size=1)
    pool.tidy()
    g = pool.take(100 * MB, None)
    pid = spawn(
        sh(
            f"{PY} -c 'b = bytearray(300 * 2**20)'; "
            "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done"
        ),
        backend=v1,
        group=g,
    )
    reap(pid)
    first = g.finish()
    assert first.oom_kills == 1
    assert first.cpu_user is not None
    assert first.cpu_user > 0
    pool.give_back(g)
    pool.tidy()
    again = pool.take(50 * MB, None)
    assert again is g  # reused, not remade
    with open(os.path.join(g.dirs["memory"], "memory.limit_in_bytes")) as f:
        assert int(f.read()) == 50 * MB
    pid = spawn(sh("true"), backend=v1, group=g)
    assert reap(pid)[0] == 0
    fin = g.finish()
    assert fin.oom_kills == 0  # the last job's OOM is not this one's
    assert fin.peak_charge is not None
    assert fin.peak_charge < 5 * MB
    assert fin.cpu_user is not None
    assert fin.cpu_user < first.cpu_user
    assert pool.made == 1
    pool.give_back(g)
    assert pool.close()


def test_what_a_job_leaves_charged_stays_and_is_not_counted_for_the_next(
    v1: V1Backend, tmp_path: Path
) -> None:
    """A reused group keeps the page cache a job left (reclaiming it would cost every
    reset ~0.5 ms and the next job would fault the same pages back); the next job's kernel
    peak does not count it, and a limit below it still goes through (emptied first)."""
    pool = GroupPool(v1, size=1)
    pool.tidy()
    g = pool.take(100 * MB, None)
    try:
        data = tmp_path / "data"  # on disk: page cache, not shmem
        pid = spawn(
            sh(f"head -c 2000000 /dev/zero > {data}; cat {data} > /dev/null"), backend=v1, group=g
        )
        assert reap(pid)[0] == 0
        g.finish()
        pool.give_back(g)
        pool.tidy()
        assert pool.take(100 * MB, None) is g  # reused
        with open(os.path.join(g.dirs["memory"], "memory.usage_in_bytes")) as f:
            left = int(f.read())
        assert left >= MB, left  # not reclaimed
        pid = spawn(sh("echo hello > /dev/null"), backend=v1, group=g)
        status, ru = reap(pid)
        assert status == 0
        fin = g.finish()
        assert fin.cache >= MB
        u = usage(judge=None, group=fin, ru_utime=ru.ru_utime, ru_stime=ru.ru_stime,
                  ru_maxrss_kb=ru.ru_maxrss, keeper_peak=keeper_peak())  # fmt: skip
        assert u.maxrss_from == "kernel"
        assert u.maxrss < MB, u  # the echo alone, not what the first job left
        pool.give_back(g)
        pool.tidy()
        assert pool.take(MB // 2, None) is g  # below what is still charged
        with open(os.path.join(g.dirs["memory"], "memory.limit_in_bytes")) as f:
            assert int(f.read()) == MB // 2
        with open(os.path.join(g.dirs["memory"], "memory.max_usage_in_bytes")) as f:
            assert int(f.read()) < MB // 2  # the peak starts from what is left, not from before
        pool.give_back(g)
    finally:
        assert pool.close()


def test_a_group_left_holding_shmem_is_retired(v1: V1Backend, tmp_path: Path) -> None:
    pool = GroupPool(v1, size=1)
    pool.tidy()
    g = pool.take(100 * MB, None)
    shm = Path("/dev/shm") / f"sjq-test-{os.getpid()}"
    try:
        pid = spawn(sh(f"head -c 8000000 /dev/zero > {shm}"), backend=v1, group=g)
        assert reap(pid)[0] == 0
        assert g.sample().resident is not None
        assert g.sample().resident >= 7 * MB
        pool.give_back(g)
        pool.tidy()
        assert pool.retired == 1
        assert g not in pool.ready
        assert not os.path.exists(g.dirs["memory"])
    finally:
        shm.unlink(missing_ok=True)
        assert pool.close()


def test_an_adopted_job_finds_its_group(v1: V1Backend, v1_pool: GroupPool, tmp_path: Path) -> None:
    g = v1_pool.take(64 * MB, [0])
    gate = tmp_path / "gate"
    pid = spawn(sh(gate_wait(gate)), backend=v1, group=g)
    state = g.state()
    found = v1.group_from_state(pid, state)
    assert found is not None
    assert found.dirs == g.dirs
    assert found.state() == state
    assert v1.group_of(os.getpid()) is None  # not in one of ours
    gate.touch()
    assert reap(pid)[0] == 0
    v1_pool.give_back(g)
    # once its job has ended it may hold the next one, whose limits and CPUs are set in
    # full: what the group found had is not known (here: the next job is not pinned)
    found.configure(32 * MB, None)
    assert found.dirs["cpuset"] == v1.cpuset_for(None)
    with open(os.path.join(found.dirs["memory"], "memory.limit_in_bytes")) as f:
        assert int(f.read()) == 32 * MB


def test_stale_groups_of_a_dead_daemon_are_swept(v1: V1Backend) -> None:
    dead = os.posix_spawn("/bin/true", ["true"], {})
    os.waitpid(dead, 0)
    stale = [os.path.join(d, f"sjq.{dead}") for d in v1.own.values()]
    for s in stale:
        os.makedirs(os.path.join(s, "j1"))
    removed = v1.sweep_stale()
    assert set(stale) <= set(removed)
    assert not any(os.path.exists(s) for s in stale)
    assert all(os.path.exists(b) for b in v1.bases())  # ours stay


def test_a_group_that_cannot_be_configured_is_a_clear_error(v1_pool: GroupPool) -> None:
    with pytest.raises(CgroupError, match=r"cannot configure .*sjq\."):
        v1_pool.take(64 * MB, [4095])
    v1_pool.tidy()  # the pool keeps working
    g = v1_pool.take(64 * MB, [0])
    v1_pool.give_back(g)


def test_hierarchies_can_be_left_out() -> None:
    if os.geteuid() != 0:
        pytest.skip("cgroup v1 hierarchies are writable only by root")
    d = detect(versions=("v1",), controllers=("memory",), name="sjq.1")
    if not isinstance(d.backend, V1Backend):
        pytest.skip(f"no usable cgroup v1 memory hierarchy here ({d.why})")
    assert list(d.backend.own) == ["memory"]
    assert d.backend.memory
    assert not d.backend.cpu
    assert not d.backend.cpuset
    assert d.why.startswith("cgroup v1 (memory) below ")


def test_a_pool_that_runs_dry_resets_a_used_group_rather_than_make_one(v1: V1Backend) -> None:
    """Every group a keeper holds costs each spawn its descriptors: a ``take`` that finds
    none ready (the janitor has not come yet) resets a used group itself, and ``tidy``
    makes new ones only while the pool holds fewer than its size, used ones included."""
    pool = GroupPool(v1, size=2)
    pool.tidy()
    a, b = pool.take(100 * MB, None), pool.take(100 * MB, None)
    assert pool.made == 2
    pool.give_back(a)
    pool.tidy()  # a is ready again; b is a job's: nothing to make
    assert pool.made == 2
    assert pool.take(100 * MB, None) is a
    pool.give_back(a)
    pool.give_back(b)
    pool.tidy()
    c, d = pool.take(100 * MB, None), pool.take(100 * MB, None)
    pool.give_back(c)  # used, not reset: the next take resets it in place
    assert pool.take(100 * MB, None) is c
    assert pool.made == 2
    assert pool.made_on_demand == 0
    pool.give_back(c)
    pool.give_back(d)
    pool.tidy()
    assert pool.made == 2
    assert len(pool.ready) == 2
    assert pool.close()


def test_a_pool_that_runs_dry_with_a_busy_group_makes_one(v1: V1Backend) -> None:
    pool = GroupPool(v1, size=1)
    pool.tidy()
    g = pool.take(100 * MB, None)
    pid = spawn(sh("exec sleep 30"), backend=v1, group=g)
    try:
        pool.give_back(g)  # still holds a process: it cannot be reset for the next job
        other = pool.take(100 * MB, None)
        assert other is not g
        assert pool.made_on_demand == 1
        pool.give_back(other)
    finally:
        os.kill(pid, signal.SIGKILL)
        reap(pid)
    assert pool.close()


def test_a_group_still_holding_a_process_is_left_to_tidy(v1: V1Backend) -> None:
    """The keeper resets the groups of ended jobs in its own thread; one that still holds
    a process is marked busy and left to the janitor's ``tidy`` (not listed again at
    every turn of the loop), which makes it ready once the process is gone."""
    pool = GroupPool(v1, size=2)
    pool.tidy()
    g = pool.take(100 * MB, None)
    pid = spawn(sh("exec sleep 30"), backend=v1, group=g)
    try:
        pool.give_back(g)
        pool.reset_used()
        assert g not in pool.ready
        assert g.busy == 1
        pool.reset_used()  # skipped: busy
        assert g.busy == 1
        assert g in pool.used
    finally:
        os.kill(pid, signal.SIGKILL)
        reap(pid)
    pool.tidy()
    assert g in pool.ready
    assert g.busy == 0
    assert pool.close()


def test_a_group_keeps_one_descriptor_per_control_file(v1: V1Backend) -> None:
    """Descriptors are copied into every job spawned (and closed at its exec): a file both
    read and written for each job has one, and limits written only on a change none."""
    pool = GroupPool(v1, size=1)
    pool.tidy()
    for mem in (100 * MB, 50 * MB, 100 * MB):
        g = pool.take(mem, [0])
        pid = spawn(sh("true"), backend=v1, group=g)
        reap(pid)
        g.finish()
        g.kill()
        pool.give_back(g)
        pool.tidy()
    kept = {
        "tasks",
        "memory.max_usage_in_bytes",
        "memory.usage_in_bytes",
        "memory.stat",
        "cpuacct.usage",
        "cpuacct.stat",
        "cpuset.cpus",
    }
    assert {name for _, name in g.fds} <= kept
    # what the process really holds: one descriptor per file, also for those both read
    # and written (the peak reset, cpuacct.usage zeroed)
    held = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if any(target.startswith(d + "/") for d in g.dirs.values()):
                held.append(target)
    # ... and the backend one for the cpuset of the group's CPUs, shared by every group
    # pinned to them (V1Backend.cpusets)
    shared = [t for t in held if t.startswith(g.dirs["cpuset"] + "/")]
    assert shared == [os.path.join(v1.cpuset_for((0,)), "tasks")]
    assert len(held) == len(set(held)) == len(g.fds) + 1 <= 9
    assert pool.close()


def test_a_failed_configuration_is_rewritten_in_full_next_time(v1: V1Backend) -> None:
    pool = GroupPool(v1, size=1)
    pool.tidy()
    g = pool.take(200 * MB, [0])
    pool.give_back(g)
    pool.tidy()
    with pytest.raises(CgroupError):
        pool.take(100 * MB, [4095])  # the memory limit went through, the CPU set did not
    pool.tidy()
    again = pool.take(200 * MB, [0])  # what the group had before: written again all the same
    assert again is g
    for name in ("memory.limit_in_bytes", "memory.memsw.limit_in_bytes"):
        with open(os.path.join(g.dirs["memory"], name)) as f:
            assert int(f.read()) == 200 * MB, name
    with open(os.path.join(g.dirs["cpuset"], "cpuset.cpus")) as f:
        assert f.read().strip() == "0"
    pool.give_back(again)
    assert pool.close()


def test_groups_pinned_to_the_same_cpus_share_one_cpuset(v1: V1Backend) -> None:
    """A cpuset is the CPUs and nothing else: one per CPU set, shared by every group of the
    pool pinned to it (a thread waiting for the next job on those CPUs need not move), kept
    when a group goes and removed with the daemon's base."""
    pool = GroupPool(v1, size=3)
    a, b, c = pool.take(64 * MB, [0]), pool.take(64 * MB, [0]), pool.take(64 * MB, None)
    assert a.dirs["cpuset"] == b.dirs["cpuset"] == v1.cpuset_for((0,))
    assert a.dirs["memory"] != b.dirs["memory"]
    assert c.dirs["cpuset"] == v1.cpuset_for(None) == v1.bases()[list(v1.own).index("cpuset")]
    with open(os.path.join(a.dirs["cpuset"], "cpuset.cpus")) as f:
        assert f.read().strip() == "0"
    pid = spawn(sh("exec sleep 30"), backend=v1, group=a)
    with open(os.path.join(a.dirs["cpuset"], "tasks")) as f:
        assert int(f.read().split()[0]) == pid
    os.kill(pid, signal.SIGKILL)
    reap(pid)
    for g in (a, b, c):
        pool.give_back(g)
    assert pool.close()
    assert os.path.isdir(v1.cpuset_for((0,)))  # the groups went, the shared cpuset stays
    # skipping a hierarchy the thread is known to be in: only the others are written
    g = pool.take(64 * MB, [0])

    def where() -> dict[str, str]:
        with open(f"/proc/self/task/{threading.get_native_id()}/cgroup") as f:
            return parse_proc_cgroup(f.read())

    home = where()
    v1.enter(g, ("cpuset",))
    try:
        inside = where()
    finally:
        v1.leave()
    assert inside["cpuset"] == home["cpuset"]
    assert g.dirs["memory"].endswith(inside["memory"])
    pool.give_back(g)
    assert pool.close()
