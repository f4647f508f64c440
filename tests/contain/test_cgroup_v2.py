"""cgroup v2 containment in a test group of this machine's unified mount. It has no
controllers here (the memory and cpuset controllers are bound to v1), so what is tested
for real is what v2 gives without them: holding a job's whole tree, cgroup.kill, and CPU
time from cpu.stat. The memory and cpuset parts skip, saying why."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from support import wait_for

from sjq.contain.account import usage
from sjq.contain.cgroup import CgroupError, GroupPool, V2Backend, detect, parse_proc_cgroup
from sjq.contain.procfs import keeper_peak
from sjq.contain.watch import Watcher, WatchPolicy

from .conftest import PY, needs_v2_controller, sh, spawn
from .test_cgroup_v1 import ALLOC, reap

MB = 1 << 20


def test_detection_of_a_v2_group_without_controllers(v2: V2Backend) -> None:
    assert not v2.memory
    assert not v2.cpuset
    assert v2.cpu
    assert v2.describe() == f"cgroup v2 (no memory or cpuset controller) below {v2.base}"
    d = detect(versions=("v2",), v2_root=v2.own, name="sjq.1")
    assert d.why.startswith(f"watch for memory (cgroup v2 group {v2.own} has no memory")
    assert "; cgroup v2 (no memory or cpuset controller) below" in d.why
    assert d.why.endswith("for tracking, kill and CPU time")


def test_this_machine_chooses_v1_and_says_why_not_v2() -> None:
    d = detect(name="sjq.1")
    if os.geteuid() != 0:
        assert d.backend is None or d.backend.kind == "v2"
        return
    assert d.backend is not None
    if d.backend.kind == "v2":
        return  # a machine with a v2 memory controller: nothing to explain
    assert d.why.startswith("cgroup v1 (memory")


def test_a_job_and_all_its_descendants_are_held(v2: V2Backend, tmp_path: Path) -> None:
    pool = GroupPool(v2, size=1)
    pool.tidy()
    g = pool.take(None, None)
    out = tmp_path / "cgroup"
    ready = tmp_path / "ready"
    script = (
        f"cat /proc/self/cgroup > {out}; setsid sleep 60 & (sleep 61 &) ; touch {ready}; sleep 62"
    )
    pid = spawn(sh(script), backend=v2, group=g)
    wait_for(ready.exists, what="the job's children")
    assert g.path.endswith(parse_proc_cgroup(out.read_text())[""])
    with open(f"/proc/{pid}/cgroup") as f:
        assert g.path.endswith(parse_proc_cgroup(f.read())[""])  # the job itself
    pids = wait_for(lambda: p if len(p := g.pids()) >= 4 else None, what="4 processes")
    assert pid in pids
    # the spawning process is back where it was
    with open("/proc/self/cgroup") as f:
        assert not parse_proc_cgroup(f.read())[""].endswith(g.name)
    assert g.kill() >= 4  # cgroup.kill: one write
    status, _ = reap(pid)
    assert os.WTERMSIG(status) == signal.SIGKILL
    wait_for(lambda: not g.populated(), what="the group to empty")
    pool.give_back(g)
    assert pool.close()


def test_cpu_time_from_cpu_stat_and_reuse(v2: V2Backend) -> None:
    pool = GroupPool(v2, size=1)
    pool.tidy()
    g = pool.take(None, None)
    burn = (
        f"{PY} -c 'import time; t = time.process_time() + 0.2\nwhile time.process_time() < t: pass'"
    )
    pid = spawn(sh(f"{burn} & {burn} & wait"), backend=v2, group=g)
    status, ru = reap(pid)
    assert status == 0
    fin = g.finish()
    assert fin.cpu_user is not None
    assert fin.cpu_sys is not None
    assert fin.cpu_user + fin.cpu_sys >= 0.4
    assert fin.cpu_user + fin.cpu_sys == pytest.approx(ru.ru_utime + ru.ru_stime, abs=0.05)
    assert fin.peak_charge is None  # no memory controller
    pool.give_back(g)
    pool.tidy()
    again = pool.take(None, None)
    assert again is g
    pid = spawn(sh("true"), backend=v2, group=g)
    reap(pid)
    second = g.finish()
    assert second.cpu_user is not None
    assert second.cpu_user < 0.1  # cpu.stat cannot be reset: the last job's time is subtracted
    pool.give_back(g)
    assert pool.close()


def test_memory_is_sampled_over_the_groups_processes(v2: V2Backend, tmp_path: Path) -> None:
    """Without a memory controller the group still gives exact membership: the watcher
    sums its processes' memory (three 50 MB processes: about 150 MB, not 50)."""
    pool = GroupPool(v2, size=1)
    pool.tidy()
    g = pool.take(None, None)
    gate = tmp_path / "gate"
    one = f'{PY} -c "{ALLOC.format(n=50)}" {tmp_path}/r {gate}'
    pid = spawn(sh(f"{one} & {one} & {one} & wait"), backend=v2, group=g)
    w = Watcher(WatchPolicy())
    w.add("j", pid, start=time.monotonic(), limit=None, group=g)
    wait_for(lambda: len(list(tmp_path.glob("r.*"))) == 3, what="three allocations")
    assert w.sample("j") is None
    gate.touch()
    status, ru = reap(pid)
    assert status == 0
    u = usage(
        judge=w.finish("j"),
        group=g.finish(),
        ru_utime=ru.ru_utime,
        ru_stime=ru.ru_stime,
        ru_maxrss_kb=ru.ru_maxrss,
        keeper_peak=keeper_peak(),
    )
    assert u.measured_by == "sampled"
    assert 150 * MB <= u.maxrss <= 200 * MB
    pool.give_back(g)
    assert pool.close()


def test_memory_limit_and_oom_group(v2: V2Backend, tmp_path: Path) -> None:
    needs_v2_controller(v2, "memory", "memory limits, memory.peak and OOM kills")
    pool = GroupPool(v2, size=1)
    pool.tidy()
    g = pool.take(100 * MB, None)
    with open(os.path.join(g.path, "memory.max")) as f:
        assert int(f.read()) == 100 * MB
    with open(os.path.join(g.path, "memory.oom.group")) as f:
        assert f.read().strip() == "1"
    pid = spawn(sh(f"{PY} -c 'b = bytearray(300 * 2**20)'; sleep 60"), backend=v2, group=g)
    status, _ = reap(pid)
    assert os.WTERMSIG(status) == signal.SIGKILL  # oom.group took the shell too
    fin = g.finish()
    assert fin.oom_kills >= 1
    pool.give_back(g)
    assert pool.close()


def test_cpuset(v2: V2Backend, tmp_path: Path) -> None:
    needs_v2_controller(v2, "cpuset", "CPU pinning")
    pool = GroupPool(v2, size=1)
    pool.tidy()
    g = pool.take(None, [0])
    out = tmp_path / "cpus"
    pid = spawn(sh(f"grep Cpus_allowed_list /proc/self/status > {out}"), backend=v2, group=g)
    assert reap(pid)[0] == 0
    assert out.read_text().split()[-1] == "0"
    pool.give_back(g)
    assert pool.close()


def test_setup_moves_the_daemon_into_a_leaf_to_enable_controllers(v2_root: str) -> None:
    """systemd's rule: with controllers enabled below it, a group holds no process, so
    the daemon moves into the leaf ``sjq.<pid>.d`` first; a stranger in its group makes
    that impossible and the message says how to give sjq a group of its own."""
    d = detect(versions=("v2",), v2_root=v2_root, name="sjq.1")
    assert isinstance(d.backend, V2Backend)
    needs_v2_controller(d.backend, "memory", "enabling controllers in a delegated group")
    stranger = spawn(sh("exec sleep 30"))
    with open(os.path.join(v2_root, "cgroup.procs"), "w") as f:
        f.write(str(stranger))
    with pytest.raises(CgroupError, match="also holds processes that are not sjq's"):
        d.backend.setup(pids=[os.getpid()])
    os.kill(stranger, signal.SIGKILL)
    reap(stranger)
    b = detect(versions=("v2",), v2_root=v2_root, name=f"sjq.{os.getpid()}").backend
    assert isinstance(b, V2Backend)
    b.setup(pids=[os.getpid()])
    try:
        with open("/proc/self/cgroup") as f:
            assert parse_proc_cgroup(f.read())[""].endswith(f"/sjq.{os.getpid()}.d")
        with open(os.path.join(v2_root, "cgroup.subtree_control")) as f:
            assert "memory" in f.read().split()
    finally:
        mount = os.path.dirname(v2_root)
        with open(os.path.join(mount, "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))
        b.teardown()
        os.rmdir(os.path.join(v2_root, f"sjq.{os.getpid()}.d"))
