"""Jobs in cgroup v2 groups through a real daemon (sjq.cgroup = a v2 group of the test's own,
in the unified mount). On this machine that mount has no controllers, so the daemon holds
each job's whole tree, kills it with cgroup.kill and counts its CPU from cpu.stat, and
samples its memory over the group's processes: all tested for real. What needs the v2
memory or cpuset controller (the kernel's memory limit, memory.peak, cpuset pinning) is
skipped here, saying why: those controllers are bound to the v1 hierarchies."""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support import SH, Daemon, Gate, alive, wait_for

from sjq.contain.cgroup import parse_mountinfo, parse_proc_cgroup

from .test_containment import ended, helper, hog

MB = 1 << 20
_names = itertools.count(1)


@pytest.fixture
def v2_group() -> Iterator[Path]:
    """A cgroup v2 group of this test's own, removed afterwards (a test asks for it before
    its daemons, so that they have stopped, and removed their groups, by then)."""
    if os.geteuid() != 0:
        pytest.skip("the cgroup v2 mount is writable here only by root")
    mounts = parse_mountinfo(Path("/proc/self/mountinfo").read_text())
    mount = next((m.point for m in mounts if m.fstype == "cgroup2"), None)
    if mount is None:
        pytest.skip("no cgroup v2 mount on this machine")
    path = Path(mount) / f"sjq-test-daemon.{os.getpid()}-{next(_names)}"
    try:
        path.mkdir()
    except OSError as e:
        pytest.skip(f"cannot make a cgroup v2 group in {mount}: {e.strerror}")
    try:
        yield path
    finally:
        wait_for(lambda: not list(path.glob("sjq.*")), what="the daemon's groups to go")
        path.rmdir()


def controllers(group: Path) -> set[str]:
    return set((group / "cgroup.controllers").read_text().split())


def test_a_job_is_in_its_v2_group_from_its_first_instruction(
    v2_group: Path, daemon_factory: Callable[..., Daemon]
) -> None:
    d = daemon_factory(enforce="auto", cgroup=str(v2_group)).start()
    out = d.jobs_dir / "where"
    info = ended(d, d.submit(SH + f"exec cat /proc/self/cgroup > {out}\n"))
    assert info["state"] == "S", info
    assert d.proc is not None
    where = parse_proc_cgroup(out.read_text())[""]
    mount_rel = "/" + v2_group.name
    assert where.startswith(f"{mount_rel}/sjq.{d.proc.pid}/j"), where
    line = next(x for x in d.log.splitlines() if "containment:" in x)
    assert f"cgroup v2 (no memory or cpuset controller) below {v2_group}/sjq." in line
    assert info["measured_by"] == "sampled"  # no memory controller: sampled over the group
    d.stop()
    assert not list(v2_group.glob("sjq.*")), "a stopped daemon leaves no group behind"


def test_what_left_the_jobs_session_dies_with_it(
    v2_group: Path, daemon_factory: Callable[..., Daemon]
) -> None:
    d = daemon_factory(enforce="auto", cgroup=str(v2_group)).start()
    pids = d.jobs_dir / "pids"
    script = SH + (
        f"setsid sleep 60 & echo $! >> {pids}\n"  # a new session
        f"(sleep 61 & echo $! >> {pids}) \n"  # double-forked: reparented
        f'while [ "$(wc -l < {pids})" -lt 2 ]; do sleep 0.01; done\n'
    )
    info = ended(d, d.submit(script))
    assert info["state"] == "S", info
    left = [int(p) for p in pids.read_text().split()]
    for pid in left:
        wait_for(lambda p=pid: not alive(p), what=f"process {pid} to be killed")  # type: ignore[misc]


def test_cpu_time_comes_from_the_group(
    v2_group: Path, daemon_factory: Callable[..., Daemon]
) -> None:
    d = daemon_factory(enforce="auto", cgroup=str(v2_group)).start()
    out = d.jobs_dir / "cpu"
    busy = helper(
        d,
        "busy.py",
        "t = time.process_time()\n"
        "while time.process_time() - t < 0.3: pass\n"
        f"open({str(out)!r} + str(os.getpid()), 'w').write(repr(time.process_time()))\n"
        "if sys.argv[1] == 'stay': time.sleep(60)\n",
    )
    jid = d.submit(
        SH + f"{busy} wait &\n{busy} stay &\n"
        f'while [ "$(ls {out}* 2>/dev/null | wc -l)" -lt 2 ]; do sleep 0.01; done\n'
    )
    info = ended(d, jid)
    children = sum(float(p.read_text()) for p in d.jobs_dir.glob("cpu*"))
    assert info["cpu_user"] + info["cpu_sys"] >= children * 0.9, (info, children)


def test_memory_is_sampled_over_the_group_and_held_to_mem(
    v2_group: Path, daemon_factory: Callable[..., Daemon], gate: Callable[[str], Gate]
) -> None:
    if "memory" in controllers(v2_group):
        pytest.skip("this group has the memory controller: the kernel holds the limit")
    d = daemon_factory(enforce="auto", cgroup=str(v2_group)).start()
    info = ended(d, d.submit(hog(300), mem="100M"))
    assert info["state"] == "F", info
    assert str(info["reason"]).startswith("out of memory (limit 100M, peak ")
    assert info["measured_by"] == "sampled"
    g = gate()
    one = sys.executable + f" -c 'b = bytearray(50 * 2**20); b[::4096] = b\"x\" * {50 * 256}'"
    ok = d.submit(SH + f"{one}; {g.wait}", mem="1G")
    wait_for(lambda: d.info(ok)["state"] == "R", what="the job running")
    g.open()
    assert ended(d, ok)["state"] == "S"


def test_sjq_enforce_cgroup_needs_a_memory_controller(
    v2_group: Path, daemon_factory: Callable[..., Daemon]
) -> None:
    if "memory" in controllers(v2_group):
        pytest.skip("this group has the memory controller")
    d = daemon_factory(enforce="cgroup", cgroup=str(v2_group))
    d.start(wait=False)
    assert d.proc is not None
    assert d.proc.wait(30) != 0
    d.proc = None
    err = (d.dir / "stderr.log").read_text()
    assert "sjq.enforce: cgroup: no cgroup can hold a job's memory here" in err
    assert "has no memory controller" in err


@pytest.mark.parametrize("what", ["memory", "cpuset"])
def test_v2_memory_limits_and_cpusets(
    v2_group: Path, daemon_factory: Callable[..., Daemon], what: str
) -> None:
    """The kernel's memory limit (memory.max, memory.oom.group, memory.peak) and pinning by
    cpuset under v2: only where the v2 group has those controllers."""
    if what not in controllers(v2_group):
        mounts = parse_mountinfo(Path("/proc/self/mountinfo").read_text())
        v1 = next((m.point for m in mounts if m.fstype == "cgroup" and what in m.options), None)
        bound = f"; it is bound to the cgroup v1 hierarchy at {v1}" if v1 else ""
        pytest.skip(
            f"no cgroup v2 {what} controller in {v2_group}{bound}: v2 {what} limits cannot be"
            " tested on this machine"
        )
    d = daemon_factory(enforce="cgroup", cgroup=str(v2_group)).start()
    if what == "memory":
        info = ended(d, d.submit(hog(300), mem="100M"))
        assert (info["state"], info["measured_by"]) == ("F", "cgroup"), info
        assert str(info["reason"]).startswith("out of memory (limit 100M, peak ")
    else:
        out = d.jobs_dir / "cpus"
        info = ended(d, d.submit(SH + f"grep Cpus_allowed_list /proc/self/status > {out}\n"))
        assert out.read_text().split()[-1] == ",".join(map(str, info["cpus"]))
