"""Resource fidelity through a real daemon: each job held to its MEM (sjq.enforce) and its
true usage recorded (INFO maxrss, cpu_user, cpu_sys, measured_by), real processes. The
cgroup method runs in the real cgroup v1 hierarchies (root on this machine)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support import SH, Daemon, Gate, wait_for

from sjq.contain.cgroup import detect, parse_proc_cgroup

MB = 1 << 20
PY = f"#!{sys.executable}\n"

HELLO = (Path(__file__).resolve().parents[2] / "examples" / "hello.sh").read_text()


def hog(mb: int, gate: Gate | None = None, seconds: float = 30.0) -> str:
    """A Python job that touches ``mb`` MB of its own memory, then waits (for ``gate``, or
    at most ``seconds``) holding it."""
    wait = (
        f"while not os.path.exists({str(gate.path)!r}) and time.time() < end:\n"
        "    time.sleep(0.01)\n"
        if gate is not None
        else "while time.time() < end:\n    time.sleep(0.01)\n"
    )
    return (
        PY + "import os, time\n"
        f"end = time.time() + {seconds}\n"
        f"b = bytearray({mb} * 2**20)\n"
        "b[::4096] = b'x' * len(b[::4096])\n" + wait
    )


def helper(d: Daemon, name: str, body: str) -> str:
    """A Python script in the jobs' directory; the command that runs it."""
    path = d.jobs_dir / name
    path.write_text("import os, sys, time\n" + body)
    return f"{sys.executable} {path}"


def ended(d: Daemon, jobid: int, timeout: float = 30.0) -> dict[str, Any]:
    d.wait_state(jobid, "SFAKE", timeout)
    return d.info(jobid)


def cgroup_or_skip() -> None:
    if os.geteuid() != 0:
        pytest.skip("cgroups are writable here only by root (v1)")
    det = detect(controllers=("memory", "cpuacct"))
    if det.backend is None or not det.backend.memory:
        pytest.skip(f"no cgroup can hold a job's memory here: {det.why}")


@pytest.fixture(params=["cgroup", "watch"])
def method(request: pytest.FixtureRequest) -> str:
    """Each containment method that enforces MEM."""
    if request.param == "cgroup":
        cgroup_or_skip()
    return str(request.param)


def measured(method: str) -> str:
    return "cgroup" if method == "cgroup" else "sampled"


@pytest.mark.parametrize("how", ["cgroup", "watch", "none"])
def test_an_echo_job_shows_a_tiny_peak_never_the_keepers_size(
    daemon_factory: Callable[..., Daemon], how: str
) -> None:
    if how == "cgroup":
        cgroup_or_skip()
    d = daemon_factory(enforce=how).start()
    info = ended(d, d.submit(HELLO, mem="10M"))
    assert info["state"] == "S", info
    assert isinstance(info["maxrss"], int)
    assert 0 <= info["maxrss"] < 5 * MB, info  # wait4 alone said ~19 MB: the keeper's size
    assert info["measured_by"] == measured(how)


def test_several_processes_report_their_summed_peak(
    daemon_factory: Callable[..., Daemon], gate: Callable[[str], Gate], method: str
) -> None:
    d = daemon_factory(enforce=method).start()
    g = gate("three")
    ready = d.jobs_dir / "ready"
    one = helper(
        d,
        "hold50.py",
        "b = bytearray(50 * 2**20)\n"
        "b[::4096] = b'x' * len(b[::4096])\n"
        f"open({str(ready)!r} + str(os.getpid()), 'w').close()\n"
        f"while not os.path.exists({str(g.path)!r}): time.sleep(0.01)\n",
    )
    jid = d.submit(SH + f"{one} &\n{one} &\n{one} &\nwait\n", mem="1G")
    wait_for(lambda: len(list(d.jobs_dir.glob("ready*"))) == 3, what="three 50 MB processes")
    # two samples at the 0.25 s interval see all three at their size
    wait_for(lambda: d.info(jid)["state"] == "R" and _sampled_long(d, jid), what="sampling")
    g.open()
    info = ended(d, jid)
    assert info["state"] == "S", info
    assert 150 * MB <= info["maxrss"] <= 200 * MB, info  # ru_maxrss would say one: ~60 MB
    assert info["measured_by"] == measured(method)


def _sampled_long(d: Daemon, jid: int) -> bool:
    started = d.info(jid)["started"]
    return started is not None and time.time() - started > 1.0


def test_a_job_over_its_mem_is_stopped(daemon_factory: Callable[..., Daemon], method: str) -> None:
    d = daemon_factory(enforce=method).start()
    info = ended(d, d.submit(hog(300), mem="100M"))
    assert info["state"] == "F", info
    reason = str(info["reason"])
    assert reason.startswith("out of memory (limit 100M, peak "), reason
    # the cgroup's limit is exact: the kernel stops it at 100M; the watcher a little later
    assert info["maxrss"] >= 95 * MB
    assert info["measured_by"] == measured(method)


def test_every_process_of_a_job_over_its_mem_is_stopped(
    daemon_factory: Callable[..., Daemon], method: str
) -> None:
    """A shell whose child goes over: the kernel (cgroup) or the watcher stops the child,
    and the keeper the rest of the job: the shell does not sleep on."""
    d = daemon_factory(enforce=method).start()
    hogs = helper(
        d,
        "hog.py",
        "b = bytearray(300 * 2**20)\nb[::4096] = b'x' * len(b[::4096])\ntime.sleep(60)\n",
    )
    jid = d.submit(SH + f"{hogs}\nsleep 60\n", mem="100M")
    info = ended(d, jid, timeout=30)
    assert info["state"] == "F", info
    assert str(info["reason"]).startswith("out of memory (limit 100M, peak ")
    assert f"job {jid} is over its memory" in d.log


def test_a_job_that_did_not_ask_is_held_to_the_default(
    daemon_factory: Callable[..., Daemon], method: str
) -> None:
    d = daemon_factory(enforce=method, defaults_mem="100M").start()
    info = ended(d, d.submit(hog(300)))
    assert info["state"] == "F", info
    assert str(info["reason"]).startswith("out of memory (limit 100M, peak ")


def test_a_job_within_its_mem_never_notices(
    daemon_factory: Callable[..., Daemon], gate: Callable[[str], Gate], method: str
) -> None:
    d = daemon_factory(enforce=method).start()
    g = gate()
    jid = d.submit(hog(50, g), mem="100M")
    wait_for(lambda: _sampled_long(d, jid), what="a second of sampling")
    g.open()
    info = ended(d, jid)
    assert info["state"] == "S", info
    assert 50 * MB <= info["maxrss"] < 100 * MB


def test_none_holds_no_job_to_its_mem_but_measures_it(
    daemon_factory: Callable[..., Daemon], gate: Callable[[str], Gate]
) -> None:
    d = daemon_factory(enforce="none").start()
    g = gate()
    jid = d.submit(hog(300, g), mem="100M")
    wait_for(lambda: _sampled_long(d, jid), what="a second of sampling")
    g.open()
    info = ended(d, jid)
    assert info["state"] == "S", info
    assert info["maxrss"] >= 300 * MB
    assert "containment: none (sjq.enforce = none)" in d.log


def test_file_io_is_not_counted_as_the_jobs_memory(
    daemon_factory: Callable[..., Daemon], method: str
) -> None:
    """300 MB written and read back by a job of MEM 150M: the page cache it fills is not its
    memory (the cgroup's own peak is near its limit), so it runs and shows a small peak."""
    d = daemon_factory(enforce=method).start()
    big = d.jobs_dir / "big"
    jid = d.submit(
        SH + f"dd if=/dev/zero of={big} bs=1M count=300 status=none\n"
        f"cat {big} > /dev/null\nrm {big}\n",
        mem="150M",
    )
    info = ended(d, jid)
    assert info["state"] == "S", info
    assert info["maxrss"] < 20 * MB, info


def test_cpu_time_covers_the_whole_tree(daemon_factory: Callable[..., Daemon], method: str) -> None:
    """Two children busy in the background, one of them left behind when the job ends: the
    job's CPU time holds what each child says it used."""
    d = daemon_factory(enforce=method).start()
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
    assert info["state"] == "S", info
    children = sum(float(p.read_text()) for p in d.jobs_dir.glob("cpu*"))
    assert children >= 0.6
    assert info["cpu_user"] + info["cpu_sys"] >= children * 0.9, (info, children)


def test_a_readopted_job_is_still_held_to_its_mem(
    daemon_factory: Callable[..., Daemon], gate: Callable[[str], Gate], method: str
) -> None:
    """The daemon is SIGKILLed while a job runs; the job's keeper goes on holding it."""
    d = daemon_factory(enforce=method).start()
    g = gate()
    script = PY + (
        "import os, time\n"
        f"while not os.path.exists({str(g.path)!r}): time.sleep(0.01)\n"
        "b = bytearray(300 * 2**20)\n"
        "b[::4096] = b'x' * len(b[::4096])\n"
        "time.sleep(30)\n"
    )
    jid = d.submit(script, mem="100M")
    wait_for(lambda: d.info(jid)["pid"], what="the job's pid")
    d.kill9()
    d.start()
    g.open()
    info = ended(d, jid)
    assert info["state"] == "F", info
    assert str(info["reason"]).startswith("out of memory (limit 100M, peak ")
    assert info["measured_by"] == measured(method)


def test_a_job_whose_keeper_was_killed_stays_held_and_measured(
    daemon_factory: Callable[..., Daemon], gate: Callable[[str], Gate]
) -> None:
    """Its keeper is SIGKILLed (the daemon stops, as for STOP); the next daemon finds the
    job's cgroup again: the kernel still holds it to its MEM, the whole job is stopped
    when it goes over, and its usage comes from the group (its exit status is lost)."""
    cgroup_or_skip()
    d = daemon_factory(enforce="cgroup", keepers="1").start()
    g = gate()
    script = PY + (
        "import os, time\n"
        f"while not os.path.exists({str(g.path)!r}): time.sleep(0.01)\n"
        "b = bytearray(300 * 2**20)\n"
        "b[::4096] = b'x' * len(b[::4096])\n"
        "time.sleep(30)\n"
    )
    over = d.submit(script, mem="100M")
    calm = d.submit(SH + g.wait + "true\n", mem="100M")
    wait_for(lambda: d.info(over)["pid"] and d.info(calm)["pid"], what="both jobs' pids")
    keeper = next(Path(d.settings["sjq.spool"]).glob("keeper-*.journal")).name.split("-")[1]
    os.kill(int(keeper), 9)
    assert d.proc is not None
    assert d.proc.wait(15) == 0
    d.start()
    assert "its keeper is gone; held in " in d.log
    g.open()
    info = ended(d, over)
    assert info["state"] == "F", info
    assert str(info["reason"]).startswith("out of memory (limit 100M, peak ")
    assert str(info["reason"]).endswith("its exit status was lost")
    assert info["measured_by"] == "cgroup"
    info = ended(d, calm)
    assert (info["state"], info["measured_by"]) == ("F", "cgroup"), info
    assert str(info["reason"]).startswith("exit status lost")
    assert 0 < info["maxrss"] < 5 * MB


def test_job_groups_are_below_the_daemons_own(daemon_factory: Callable[..., Daemon]) -> None:
    cgroup_or_skip()
    d = daemon_factory(enforce="cgroup").start()
    out = d.jobs_dir / "where"
    info = ended(d, d.submit(SH + f"cat /proc/self/cgroup > {out}\n"))
    assert info["state"] == "S", info
    assert d.proc is not None
    own = parse_proc_cgroup(Path(f"/proc/{d.proc.pid}/cgroup").read_text())
    job = parse_proc_cgroup(out.read_text())
    for ctrl in ("memory", "cpuacct", "cpuset"):  # cpuset: jobs are pinned (sjq.pin auto)
        base = own[ctrl].rstrip("/") + f"/sjq.{d.proc.pid}/"
        assert job[ctrl].startswith(base), (ctrl, job[ctrl], base)
    line = next(x for x in d.log.splitlines() if "containment:" in x)
    assert "cgroup (sjq.enforce = cgroup): cgroup v1 (memory, cpuacct, cpuset) below " in line


def test_a_stopped_daemon_leaves_no_group_behind(daemon_factory: Callable[..., Daemon]) -> None:
    cgroup_or_skip()
    d = daemon_factory(enforce="cgroup").start()
    ended(d, d.submit(SH + "true\n"))
    assert d.proc is not None
    pid = d.proc.pid
    own = parse_proc_cgroup(Path(f"/proc/{pid}/cgroup").read_text())
    ctrls = ("memory", "cpuacct", "cpuset")
    bases = [f"/sys/fs/cgroup/{c}{own[c].rstrip('/')}/sjq.{pid}" for c in ctrls]
    assert all(os.path.isdir(b) for b in bases)
    d.stop()
    assert not [b for b in bases if os.path.exists(b)]


def test_an_unknown_enforce_value_is_a_config_error(
    daemon_factory: Callable[..., Daemon],
) -> None:
    d = daemon_factory(enforce="strict")
    d.start(wait=False)
    assert d.proc is not None
    assert d.proc.wait(30) != 0
    d.proc = None
    err = (d.dir / "stderr.log").read_text()
    assert "sjq.enforce" in err
    assert "expected one of auto, cgroup, watch, none, got 'strict'" in err


def test_a_job_whose_group_cannot_be_had_is_watched_instead(
    daemon_factory: Callable[..., Daemon],
) -> None:
    """The groups the keeper keeps ready are removed behind its back: the next jobs cannot
    be placed in them, and run under the watcher (never E for that), held to their MEM."""
    cgroup_or_skip()
    d = daemon_factory(enforce="cgroup", keepers="1").start()
    assert d.proc is not None
    own = parse_proc_cgroup(Path(f"/proc/{d.proc.pid}/cgroup").read_text())
    ready = wait_for(
        lambda: list(Path(f"/sys/fs/cgroup/memory{own['memory']}/sjq.{d.proc.pid}").glob("j*")),
        what="the keeper's ready groups",
    )
    for g in ready:
        g.rmdir()  # empty groups: root may remove them
    ok = ended(d, d.submit(SH + "true\n"))
    assert (ok["state"], ok["measured_by"]) == ("S", "sampled"), ok
    assert "its memory is watched instead" in d.log
    over = ended(d, d.submit(hog(300), mem="100M"))
    assert over["state"] == "F", over
    assert str(over["reason"]).startswith("out of memory (limit 100M, peak ")


def _sjq_groups(pid: int, tid: int, daemon: int) -> dict[str, str] | None:
    """The job groups (of the daemon ``daemon``) thread ``tid`` of ``pid`` is in; None: home."""
    try:
        where = parse_proc_cgroup(Path(f"/proc/{pid}/task/{tid}/cgroup").read_text())
    except OSError:
        return None
    found = {c: where[c] for c in ("memory", "cpuacct", "cpuset") if f"/sjq.{daemon}/" in where[c]}
    return found or None


def test_the_next_armed_job_starts_from_a_thread_waiting_in_its_groups(
    daemon_factory: Callable[..., Daemon],
) -> None:
    """With a CPU spare, while a job runs, a thread of its keeper waits in the groups the
    next armed job will have; that job starts there, pinned, and the keeper's own thread
    never enters a job's group (docs/containment.md, "The parked spawner")."""
    cgroup_or_skip()
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs a CPU spare besides the job's")
    d = daemon_factory(enforce="cgroup", maxprocs="1", keepers="1").start()
    assert d.proc is not None
    gate = Gate(d.jobs_dir / "gate")
    first, second = d.jobs_dir / "first", d.jobs_dir / "second"
    show = "cat /proc/self/cgroup; grep Cpus_allowed_list /proc/self/status"
    a = d.submit(SH + f"echo $PPID > {first}.ppid; ({show}) > {first}\n" + gate.wait)
    b = d.submit(SH + f"({show}) > {second}\n")
    wait_for(lambda: first.exists() and first.read_text().count("Cpus") == 1, what="job a")
    keeper = int(Path(f"{first}.ppid").read_text())
    mine = parse_proc_cgroup(first.read_text())  # job a's groups

    def parked() -> tuple[int, dict[str, str]] | None:
        for task in os.listdir(f"/proc/{keeper}/task"):
            groups = _sjq_groups(keeper, int(task), d.proc.pid)  # type: ignore[union-attr]
            if groups is not None and groups["memory"] != mine["memory"]:
                return int(task), groups
        return None

    tid, groups = wait_for(parked, what="a keeper thread in the next job's groups")
    assert tid != keeper  # never the keeper's own (main) thread
    assert _sjq_groups(keeper, keeper, d.proc.pid) is None
    assert set(groups) == {"memory", "cpuacct", "cpuset"}
    gate.open()
    info = ended(d, b)
    assert info["state"] == "S", info
    assert ended(d, a)["state"] == "S"
    text = second.read_text()
    job = parse_proc_cgroup(text)
    assert {c: job[c] for c in groups} == groups  # started where the thread waited
    assert text.split()[-1] == ",".join(map(str, info["cpus"]))
    # nothing more to start: the thread goes home
    wait_for(
        lambda: _sjq_groups(keeper, tid, d.proc.pid) is None,  # type: ignore[union-attr]
        what="the thread back home",
    )
