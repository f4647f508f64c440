"""Crash test: SIGKILL the daemon at random moments under a workload with dependencies and
failures, restart it each time, and check that nothing was lost, run twice or misreported.

The short run is in the default test run (CI runs it); a long one (250 jobs, 12 kills) is
marked slow: `python -m pytest -m slow`. SJQ_CRASH_JOBS and SJQ_CRASH_KILLS scale the short
one, SJQ_CRASH_PROCS sets the CPU slots of both, SJQ_CRASH_SEED replays.
"""

from __future__ import annotations

import os
import random
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from support import Daemon, Raw, wait_for

from sjq.contain.cgroup import detect

JOBS = int(os.environ.get("SJQ_CRASH_JOBS", "150"))
KILLS = int(os.environ.get("SJQ_CRASH_KILLS", "8"))
# 1 slot: every start is one a keeper was armed with; 2: mostly starts decided by a pass
PROCS = os.environ.get("SJQ_CRASH_PROCS", "2")


class Driver:
    """Submits the workload, riding through daemon deaths. A submit whose reply was lost
    is settled by looking its unique name up once the daemon is back."""

    def __init__(self, d: Daemon, ledger: Path, rng: random.Random) -> None:
        self.d = d
        self.ledger = ledger
        self.rng = rng
        self.expected: dict[int, str] = {}  # job id -> the terminal state it must reach
        self.uncertain: dict[str, tuple[str, list[int]]] = {}  # name -> (own fate, deps)
        self.pace = threading.Event()  # never set: a bounded, interruptible pause

    def script(self, fails: bool) -> str:
        # Mostly quick jobs, and some that outlive a daemon restart so they are re-adopted.
        pause = self.rng.choice(["0", "0.01", "0.03", "0.05"] * 5 + ["0.6", "1.2"])
        return (
            "#!/bin/sh\n"
            f'echo "$SJQ_JOBID" >> "{self.ledger}"\n'
            f"sleep {pause}\n"
            f"exit {1 if fails else 0}\n"
        )

    def fate(self, fails: bool, deps: list[int]) -> str:
        if any(self.expected[p] != "S" for p in deps):
            return "A"
        return "F" if fails else "S"

    def settle(self, conn: Raw) -> None:
        """Find out which of the submits in doubt the daemon accepted."""
        if not self.uncertain:
            return
        conn.send(b"STATUS\n")
        rows = conn.data().decode().splitlines()
        by_name = {r.split("\t")[1]: int(r.split("\t")[0]) for r in rows}
        for name, (fate, _deps) in list(self.uncertain.items()):
            if name in by_name:
                self.expected[by_name[name]] = fate
            del self.uncertain[name]

    def run(self, n: int, crashed: Callable[[], None]) -> None:
        conn: Raw | None = None
        i = 0
        while i < n:
            try:
                if conn is None:
                    conn = Raw(self.d.socket, timeout=5)
                    self.settle(conn)
                known = list(self.expected)
                deps = self.rng.sample(known, k=min(len(known), self.rng.choice([0, 0, 1, 2])))
                fails = self.rng.random() < 0.1
                name = f"job{i}"
                fate = self.fate(fails, deps)
                self.uncertain[name] = (fate, deps)
                opts: dict[str, str] = {"name": name, "cwd": str(self.d.jobs_dir)}
                if deps:
                    opts["depends"] = ":".join(map(str, deps))
                reply = conn.submit(self.script(fails), **opts)
                assert reply.startswith(b"OK "), reply
                del self.uncertain[name]
                self.expected[int(reply[3:-2])] = fate
                i += 1
                # Spread the submits over the kills, so that some land mid-request.
                self.pace.wait(self.rng.uniform(0, 0.02))
            except (OSError, ConnectionError):
                if conn is not None:
                    conn.close()
                conn = None
                crashed()
        if conn is not None:
            conn.close()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("enforce", ["none", "cgroup"])
def test_sigkill_at_random_moments_loses_nothing_and_runs_nothing_twice(
    daemon_factory: Callable[..., Daemon], tmp_path: Path, enforce: str
) -> None:
    """Under each containment: with cgroups, every job in a group of its own, re-adopted
    jobs held in theirs by their keepers."""
    if enforce == "cgroup":
        det = detect(controllers=("memory", "cpuacct"))
        if os.geteuid() != 0 or det.backend is None or not det.backend.memory:
            pytest.skip(f"no cgroup can hold a job's memory here: {det.why}")
    crash_loop(daemon_factory, tmp_path, JOBS, KILLS, enforce)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_long_crash_loop_loses_nothing_and_runs_nothing_twice(
    daemon_factory: Callable[..., Daemon], tmp_path: Path
) -> None:
    crash_loop(daemon_factory, tmp_path, 250, 12, "none")


def crash_loop(
    daemon_factory: Callable[..., Daemon],
    tmp_path: Path,
    jobs: int,
    kill_count: int,
    enforce: str,
) -> None:
    seed = int(os.environ.get("SJQ_CRASH_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    print(f"SJQ_CRASH_SEED={seed}")
    d = daemon_factory(maxprocs=PROCS, enforce=enforce).start()
    ledger = tmp_path / "ledger"
    ledger.touch()
    driver = Driver(d, ledger, rng)

    lock = threading.Lock()
    stop = threading.Event()
    kills = 0

    def restart() -> None:
        with lock:
            if d.proc is not None and d.proc.poll() is None:
                return
            d.start()

    def killer() -> None:
        nonlocal kills
        krng = random.Random(seed + 1)
        while kills < kill_count and not stop.wait(krng.uniform(0.05, 0.4)):
            with lock:
                d.kill9()
                kills += 1
                d.start()

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    try:
        driver.run(jobs, restart)
        t.join(60)  # the remaining kills hit the daemon while the jobs run and end
    finally:
        stop.set()
        t.join(30)
    restart()
    with Raw(d.socket) as c:
        driver.settle(c)

    def all_ended() -> bool:
        with Raw(d.socket) as c:
            c.send(b"STATUS\n")
            rows = c.data().decode().splitlines()
        return all(r.split("\t")[2] in "SFAKE" for r in rows)

    wait_for(all_ended, timeout=120, what="every job to end")
    with Raw(d.socket) as c:
        c.send(b"STATUS\n")
        rows = [r.split("\t") for r in c.data().decode().splitlines()]
    states = {int(r[0]): r[2] for r in rows}

    assert kills >= 1
    assert set(states) == set(driver.expected), "a job was lost or appeared from nowhere"
    wrong = {
        j: (states[j], want, d.info(j)["reason"])
        for j, want in driver.expected.items()
        if states[j] != want
    }
    assert not wrong, f"jobs in the wrong terminal state (seed {seed}): {wrong}\n{d.log[-3000:]}"
    runs = Counter(int(x) for x in ledger.read_text().split())
    twice = {j: n for j, n in runs.items() if n > 1}
    assert not twice, f"jobs that ran more than once (seed {seed}): {twice}"
    should_run = {j for j, s in driver.expected.items() if s in "SF"}
    assert set(runs) == should_run, (
        f"missing runs {should_run - set(runs)}, unexpected runs {set(runs) - should_run}"
    )
