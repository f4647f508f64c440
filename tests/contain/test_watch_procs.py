"""The watcher against real process trees, without cgroups: who belongs to a job (also
after leaving its process group, session, or parent), what the tree's resident memory is,
and when a job is over its limit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import pytest
from support import wait_for

from sjq.contain.account import usage
from sjq.contain.procfs import (
    CLK_TCK,
    boot_ticks,
    keeper_peak,
    marker_in_environ,
    read_pss,
    read_resident,
    read_stat,
)
from sjq.contain.watch import OverLimit, Watcher, WatchPolicy

from .conftest import PY, hold, sh, spawn
from .test_cgroup_v1 import ALLOC, reap

MB = 1 << 20
SOCK = "/tmp/test.sock"
MARK = (b"SJQ_JOBID=7", b"SJQ_SOCKET=" + SOCK.encode())
OTHER = (b"SJQ_JOBID=8", b"SJQ_SOCKET=" + SOCK.encode())


def job_env() -> dict[str, str]:
    return dict(os.environ, SJQ_JOBID="7", SJQ_SOCKET=SOCK)


def run_watched(w: Watcher, job: str, pid: int, limit: int | None = None) -> list[object]:
    """The keeper's loop in small: tick when due until the job's first process ends."""
    events: list[object] = []
    deadline = time.monotonic() + 30
    while os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
        if (due := w.due()) is not None and due <= time.monotonic():
            events.extend(w.tick())
        assert time.monotonic() < deadline, "job did not end"
        time.sleep(0.002)  # standing in for the keeper's select timeout
    return events


def test_readers_on_this_process() -> None:
    st = read_stat(os.getpid())
    assert st is not None
    assert st.ppid == os.getppid()
    assert st.state in "RS"
    anon = read_resident(os.getpid())
    pss = read_pss(os.getpid())
    assert anon is not None
    assert pss is not None
    assert 0 < pss <= anon + MB  # nothing we share counts in full
    assert read_stat(1 << 30) is None
    assert read_resident(1 << 30) is None


def test_keeper_size_taints_wait4_of_a_spawned_job() -> None:
    """Why wait4 cannot be trusted: an echo job started by posix_spawn reports at least
    this process's own peak size."""
    ballast = bytearray(80 * MB)
    ballast[::4096] = b"x" * len(ballast[::4096])
    pid = spawn(sh("echo hi > /dev/null"))
    kp = keeper_peak()
    _, ru = reap(pid)
    assert ru.ru_maxrss * 1024 >= 80 * MB
    u = usage(
        judge=None,
        group=None,
        ru_utime=ru.ru_utime,
        ru_stime=ru.ru_stime,
        ru_maxrss_kb=ru.ru_maxrss,
        keeper_peak=kp,
    )
    assert (u.maxrss, u.maxrss_from) == (0, "none")  # ended before any sample
    del ballast


def _sid(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except ProcessLookupError:
        return None


def test_tree_includes_what_left_the_group_session_and_parent(tmp_path: Path) -> None:
    ready, left = tmp_path / "ready", tmp_path / "left"
    script = (
        # a child in its own session (it says so once it is in it), a double fork
        # (reparented), and a grandchild
        f"setsid sh -c 'touch {left}; exec sleep 60' & (sleep 61 &) ; sh -c 'sleep 62' & "
        f"touch {ready}; sleep 63"
    )
    w = Watcher(WatchPolicy())
    lo = boot_ticks()  # as the keeper does: a lower bound of the start, no /proc read
    pid = spawn(sh(script), env=job_env())
    w.add("j", pid, start=time.monotonic(), limit=None, marker=MARK, start_tick=lo)
    wait_for(lambda: ready.exists() and left.exists(), what="the job's processes")
    w.sample("j")
    pids = wait_for(
        lambda: p if len(p := w.pids("j")) >= 5 else (w.sample("j") and None), what="5 processes"
    )
    assert pid in pids
    # (a sample may also have caught the subshell of the double fork, gone since)
    assert len({sid for p in pids if (sid := _sid(p)) is not None}) >= 2
    assert all(w.owner(p) == "j" for p in pids)
    assert w.owner(os.getpid()) is None
    # killing what the watcher knows reaches what killpg would miss
    assert w.kill("j") >= 5
    status, _ = reap(pid)
    assert os.WTERMSIG(status) == signal.SIGKILL
    wait_for(lambda: not w.pids("j"), what="every process to go")
    w.finish("j")


def test_the_cpu_time_of_a_process_dead_but_not_reaped_is_kept(tmp_path: Path) -> None:
    """A job's process killed with its process group an instant before the job is measured
    is a zombie until the keeper reaps it, which is after: ``stop`` records its CPU time
    (final by then) as it does for the processes it kills."""
    done = tmp_path / "done"
    busy = (
        "import time; t = time.process_time()\n"
        "while time.process_time() - t < 0.2: pass\n"
        f"open({str(done)!r}, 'w').write('x')\n"
    )
    # the busy child's parent becomes `sleep`, which never waits for it: a zombie it stays
    pid = spawn(sh(f'{PY} -c "{busy}" & exec sleep 60'), env=job_env())
    w = Watcher(WatchPolicy())
    w.add("j", pid, start=time.monotonic(), limit=None, marker=MARK)
    child = wait_for(
        lambda: (w.sample("j"), next((p for p in w.pids("j") if p != pid), None))[1],
        what="the busy child",
    )
    wait_for(done.exists, what="the busy child's CPU time")
    stat = wait_for(
        lambda: st if (st := read_stat(child)) is not None and st.state == "Z" else None,
        what="the child to be a zombie",
    )
    used = w.stop("j", reaped=None)
    assert child in used
    user, system = used[child]
    assert user + system >= 0.15
    assert (user, system) == pytest.approx((stat.utime / CLK_TCK, stat.stime / CLK_TCK), abs=0.02)
    reap(pid)
    w.finish("j")


def test_an_orphan_born_between_samples_is_known_by_its_marker(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    w = Watcher(WatchPolicy())
    # the intermediate shell is born and gone before any sample: the sleep is an orphan
    # whose parent the watcher never saw. The job then waits in one process (exec), so that
    # every process the watcher lists is alive when the test reads its environment.
    pid = spawn(sh(f"(sleep 64 &) ; touch {ready}; exec sleep 60"), env=job_env())
    w.add("j", pid, start=time.monotonic(), limit=None, marker=MARK)
    wait_for(ready.exists, what="the double fork")
    w.sample("j")
    orphans = [p for p in w.pids("j") if p != pid and read_stat(p) and read_stat(p).ppid == 1]
    assert orphans, w.pids("j")
    assert marker_in_environ(orphans[0], MARK)
    # a process of another job (other marker) is not taken
    other = spawn(sh("(sleep 65 &)"), env=dict(os.environ, SJQ_JOBID="8", SJQ_SOCKET=SOCK))
    reap(other)
    stranger = wait_for(_other_jobs_orphan, what="the other job's orphan")
    try:
        w.sample("j")
        taken = w.pids("j")
        assert stranger not in taken
        assert all(marker_in_environ(p, MARK) for p in taken)
    finally:
        os.kill(stranger, signal.SIGKILL)
        w.kill("j")
        reap(pid)
    w.finish("j")


def _other_jobs_orphan() -> int | None:
    """The ``sleep 65`` the other job (SJQ_JOBID=8) left behind, once it runs."""
    found = subprocess.run(["pgrep", "-fx", "sleep 65"], capture_output=True, text=True)
    return next((int(p) for p in found.stdout.split() if marker_in_environ(int(p), OTHER)), None)


SUBREAPER = textwrap.dedent(
    """
    import json, os, signal, sys, time
    from sjq.contain.procfs import read_stat, set_child_subreaper
    from sjq.contain.watch import Watcher
    ready, gate, out = sys.argv[1:4]
    assert set_child_subreaper()
    w = Watcher()
    inner = f"sleep 66 & touch {ready}; while [ ! -e {gate} ]; do sleep 0.01; done"
    pid = os.posix_spawn("/bin/sh", ["sh", "-c", f"sh -c '{inner}'"], dict(os.environ),
                         setsid=True)
    w.add("j", pid, start=time.monotonic(), limit=None)  # no marker: parentage only
    try:
        while not os.path.exists(ready):
            time.sleep(0.005)
        w.sample("j")  # sees the sleep while its parent lives
        open(gate, "w").close()
        os.waitpid(pid, 0)  # the job's first process ends; its child shell too
        w.sample("j")
        left = w.pids("j")
        parents = [read_stat(p).ppid for p in left]
        w.kill("j")
        reaped = [(os.wait4(p, 0)[0], w.owner(p)) for p in left]
    finally:
        w.kill("j")
    with open(out, "w") as f:
        json.dump({"left": left, "parents": parents, "me": os.getpid(), "reaped": reaped}, f)
    """
)


def test_a_subreaper_keeper_keeps_and_reaps_orphans(tmp_path: Path) -> None:
    """With PR_SET_CHILD_SUBREAPER the sleep left behind is reparented to the keeper, not
    to init: it stays in the tree, and the keeper reaps it (and learns its rusage)."""
    out = tmp_path / "out.json"
    args = [str(tmp_path / "ready"), str(tmp_path / "gate"), str(out)]
    r = subprocess.run(
        [PY, "-c", SUBREAPER, *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0, r.stderr
    got = json.loads(out.read_text())
    assert len(got["left"]) == 1
    assert got["parents"] == [got["me"]]
    assert got["reaped"] == [[got["left"][0], "j"]]


def test_forked_workers_are_not_counted_twice(tmp_path: Path) -> None:
    """A 100 MB process forks three workers: RSS would say 400 MB, Pss says ~100."""
    gate = tmp_path / "gate"
    ready = tmp_path / "r"
    code = textwrap.dedent(f"""
        import os, time
        b = bytearray(100 * 2**20)
        b[::4096] = b'x' * len(b[::4096])
        for i in range(3):
            if os.fork() == 0:
                open('{ready}.' + str(os.getpid()), 'w').close()
                while not os.path.exists('{gate}'): time.sleep(0.005)
                os._exit(0)
        while not os.path.exists('{gate}'): time.sleep(0.005)
        for i in range(3): os.wait()
    """)
    w = Watcher(WatchPolicy())
    pid = spawn([PY, "-c", code])
    w.add("j", pid, start=time.monotonic(), limit=None)
    wait_for(lambda: len(list(tmp_path.glob("r.*"))) == 3, what="three workers")
    w.sample("j")
    rss_sum = sum(read_resident(p) or 0 for p in w.pids("j"))
    gate.touch()
    reap(pid)
    judge = w.finish("j")
    assert judge is not None
    assert rss_sum >= 380 * MB
    assert 95 * MB <= judge.peak <= 130 * MB, judge


def test_three_processes_report_their_sum_and_echo_almost_nothing(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    one = f'{PY} -c "{ALLOC.format(n=50)}" {tmp_path}/r {gate}'
    w = Watcher(WatchPolicy())
    pid = spawn(sh(f"{one} & {one} & {one} & wait"))
    kp = keeper_peak()
    w.add("three", pid, start=time.monotonic(), limit=None)
    wait_for(lambda: len(list(tmp_path.glob("r.*"))) == 3, what="three allocations")
    w.sample("three")
    gate.touch()
    _, ru = reap(pid)
    three = usage(
        judge=w.finish("three"),
        group=None,
        ru_utime=ru.ru_utime,
        ru_stime=ru.ru_stime,
        ru_maxrss_kb=ru.ru_maxrss,
        keeper_peak=kp,
    )
    assert 150 * MB <= three.maxrss <= 200 * MB
    # wait4: the largest process, or this process's own size, never the sum
    assert ru.ru_maxrss * 1024 <= max(kp, 60 * MB)
    assert three.measured_by == "sampled"
    # an echo job that lives long enough to be sampled: its shell's own memory
    gate2 = tmp_path / "gate2"
    pid = spawn(sh(f"while [ ! -e {gate2} ]; do sleep 0.01; done; echo hi > /dev/null"))
    w.add("echo", pid, start=time.monotonic(), limit=None)
    wait_for(
        lambda: w.sample("echo") is None and w.jobs["echo"].judge.samples >= 2, what="two samples"
    )
    gate2.touch()
    _, ru = reap(pid)
    echo = usage(
        judge=w.finish("echo"),
        group=None,
        ru_utime=ru.ru_utime,
        ru_stime=ru.ru_stime,
        ru_maxrss_kb=ru.ru_maxrss,
        keeper_peak=keeper_peak(),
    )
    assert 0 < echo.maxrss < 5 * MB, echo
    assert echo.maxrss_from == "samples"


def test_io_heavy_job_is_not_its_page_cache(tmp_path: Path) -> None:
    w = Watcher(WatchPolicy(interval=0.05, first=0.01))
    big = tmp_path / "big"
    pid = spawn(sh(f"dd if=/dev/zero of={big} bs=1M count=300 status=none; cat {big} >/dev/null"))
    w.add("io", pid, start=time.monotonic(), limit=None)
    run_watched(w, "io", pid)
    assert reap(pid)[0] == 0
    judge = w.finish("io")
    assert judge is not None
    assert judge.samples >= 2
    assert judge.peak < 10 * MB


def test_over_the_limit_after_consecutive_samples(tmp_path: Path) -> None:
    w = Watcher(WatchPolicy(interval=0.05, first=0.01, over=2))
    pid = spawn(sh(hold(200, 30)))
    w.add("big", pid, start=time.monotonic(), limit=100 * MB)
    small = spawn(sh(hold(30, 0.5)))
    w.add("small", small, start=time.monotonic(), limit=100 * MB)
    events: list[object] = []
    deadline = time.monotonic() + 20
    while not events:
        assert time.monotonic() < deadline
        if (due := w.due()) is not None and due <= time.monotonic():
            events.extend(w.tick())
        time.sleep(0.002)  # standing in for the keeper's select timeout
    assert len(events) == 1
    ev = events[0]
    assert isinstance(ev, OverLimit)
    assert ev.job == "big"
    assert ev.limit == 100 * MB
    assert ev.resident > 100 * MB
    assert w.jobs["big"].judge.samples >= 2
    w.kill("big")
    assert os.WTERMSIG(reap(pid)[0]) == signal.SIGKILL
    run_watched(w, "small", small)
    assert reap(small)[0] == 0
    assert w.finish("small").peak < 100 * MB  # type: ignore[union-attr]
    w.finish("big")
