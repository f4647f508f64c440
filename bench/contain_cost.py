"""What containment costs the keeper per job: each way of putting a job in a cgroup, and
the watcher's sampling, beside a plain posix_spawn measured in the same run.

    python -m bench.contain_cost [--jobs N] [--rounds R]

Unlike the rest of ``bench`` this imports ``sjq.contain`` (it measures those building
blocks, not a daemon). It needs root for the cgroup v1 rows and a writable cgroup v2
mount for the v2 rows; rows it cannot run say why. Not run by CI; run it on a quiet
machine. Jobs are ``/bin/true``, one at a time (as the dispatch-gap figure), each
reaped before the next starts.

Columns (medians over all jobs of all rounds, in microseconds):

- ``before``: work before posix_spawn (making or taking and configuring the group);
- ``spawn``: posix_spawn itself, including moving the spawning thread into the job's
  groups and back (the plain row: posix_spawn alone);
- ``reap``: work after the job ended (reading its figures, emptying and removing or
  giving back its group);
- ``tidy``: work a pool does off the critical path (resetting used groups, making new);
- ``added``: before + spawn + reap + tidy, less the plain row's spawn: what one job
  costs the keeper in all;
- ``jobs/s``: jobs started and reaped per second, one at a time, and its ratio to plain.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sjq.contain.cgroup import (
    Backend,
    CgroupError,
    GroupPool,
    V1Backend,
    V2Backend,
    detect,
    parse_mountinfo,
)
from sjq.contain.procfs import boot_ticks, keeper_peak, read_pss
from sjq.contain.watch import Watcher, WatchPolicy

ARGV = ["/bin/true"]
ENV = {"PATH": "/usr/bin:/bin"}
MB = 1 << 20


@dataclass
class Row:
    name: str
    before: list[int] = field(default_factory=list)
    spawn: list[int] = field(default_factory=list)
    reap: list[int] = field(default_factory=list)
    tidy: list[int] = field(default_factory=list)
    wall: list[float] = field(default_factory=list)  # seconds per round
    jobs: int = 0
    note: str = ""


def _med(xs: list[int]) -> float:
    return statistics.median(xs) / 1000 if xs else 0.0


def _spawn() -> int:
    return os.posix_spawn(ARGV[0], ARGV, ENV, setsid=True)


def run_plain(row: Row, n: int) -> None:
    t_round = time.perf_counter()
    for _ in range(n):
        t0 = time.perf_counter_ns()
        pid = _spawn()
        t1 = time.perf_counter_ns()
        _, _, _ru = os.wait4(pid, 0)
        t2 = time.perf_counter_ns()
        row.spawn.append(t1 - t0)
        row.reap.append(time.perf_counter_ns() - t2)
    row.wall.append(time.perf_counter() - t_round)
    row.jobs += n


def run_watch(row: Row, n: int) -> None:
    """The watcher's per-job cost when the job ends before its first sample (the common
    case for short jobs): registering it, and reading the keeper's peak."""
    w = Watcher(WatchPolicy())
    t_round = time.perf_counter()
    for i in range(n):
        t0 = time.perf_counter_ns()
        lo = boot_ticks()
        pid = _spawn()
        t1 = time.perf_counter_ns()
        kp = keeper_peak()
        w.add(i, pid, start=time.monotonic(), limit=100 * MB, start_tick=lo)
        t2 = time.perf_counter_ns()
        _, _, ru = os.wait4(pid, 0)
        t3 = time.perf_counter_ns()
        w.finish(i)
        _ = ru.ru_maxrss * 1024 > kp
        row.spawn.append(t1 - t0)
        row.before.append(t2 - t1)  # counted as keeper work around the start
        row.reap.append(time.perf_counter_ns() - t3)
    row.wall.append(time.perf_counter() - t_round)
    row.jobs += n


def run_fresh(row: Row, n: int, b: Backend) -> None:
    """A group made for each job and removed after it."""
    t_round = time.perf_counter()
    for _ in range(n):
        t0 = time.perf_counter_ns()
        g = b.new_group()
        g.configure(100 * MB if b.memory else None, [0] if b.cpuset else None)
        t1 = time.perf_counter_ns()
        with b.inside(g):
            pid = _spawn()
        t2 = time.perf_counter_ns()
        os.wait4(pid, 0)
        t3 = time.perf_counter_ns()
        g.finish()
        g.kill()
        for _ in range(1000):  # /bin/true was reaped: its group empties at once
            if g.remove():
                break
        row.before.append(t1 - t0)
        row.spawn.append(t2 - t1)
        row.reap.append(time.perf_counter_ns() - t3)
    row.wall.append(time.perf_counter() - t_round)
    row.jobs += n


def run_pool(row: Row, n: int, pool: GroupPool, b: Backend) -> None:
    """Groups taken from a pool and given back; ``tidy`` after each job (in the keeper it
    runs when idle or in a helper thread: its time is shown apart)."""
    t_round = time.perf_counter()
    for i in range(n):
        t0 = time.perf_counter_ns()
        # alternate two job shapes, so that half the takes rewrite the limits
        g = pool.take(
            (100 + 50 * (i % 2)) * MB if b.memory else None, [i % 2] if b.cpuset else None
        )
        t1 = time.perf_counter_ns()
        with b.inside(g):
            pid = _spawn()
        t2 = time.perf_counter_ns()
        os.wait4(pid, 0)
        t3 = time.perf_counter_ns()
        g.finish()
        g.kill()
        pool.give_back(g)
        t4 = time.perf_counter_ns()
        pool.tidy()
        t5 = time.perf_counter_ns()
        row.before.append(t1 - t0)
        row.spawn.append(t2 - t1)
        row.reap.append(t4 - t3)
        row.tidy.append(t5 - t4)
    row.wall.append(time.perf_counter() - t_round)
    row.jobs += n


def v2_backend() -> tuple[V2Backend | None, str, str]:
    with open("/proc/self/mountinfo") as f:
        mount = next((m.point for m in parse_mountinfo(f.read()) if m.fstype == "cgroup2"), None)
    if mount is None:
        return None, "", "no cgroup v2 mount"
    root = os.path.join(mount, f"sjq-bench-{os.getpid()}")
    try:
        os.mkdir(root)
    except OSError as e:
        return None, "", f"cannot make a group in {mount}: {e.strerror}"
    d = detect(versions=("v2",), v2_root=root)
    if not isinstance(d.backend, V2Backend):
        os.rmdir(root)
        return None, "", d.why
    d.backend.setup()
    return d.backend, root, d.backend.describe()


def sampling_costs(lines: list[str]) -> None:
    """What a watcher tick costs with k running jobs, by /proc and by group; Pss per MB."""
    for k in (1, 4, 16):
        pids = [os.posix_spawn("/bin/sleep", ["sleep", "30"], ENV, setsid=True) for _ in range(k)]
        w = Watcher(WatchPolicy())
        now = time.monotonic()
        for i, p in enumerate(pids):
            w.add(i, p, start=now - 10, limit=100 * MB)
        w.tick(now)  # the first scan reads every process on the machine
        times = []
        for r in range(50):
            t0 = time.perf_counter_ns()
            w.tick(now + 1 + r)
            times.append(time.perf_counter_ns() - t0)
        for p in pids:
            os.kill(p, 9)
            os.waitpid(p, 0)
        lines.append(f"| watcher tick, {k} job(s) of 1 process, /proc | {_med(times):.0f} us |")
    for mb in (100, 1000):
        ballast = bytearray(mb * MB)
        ballast[::4096] = b"x" * len(ballast[::4096])
        times = []
        for _ in range(5):
            t0 = time.perf_counter_ns()
            read_pss(os.getpid())
            times.append(time.perf_counter_ns() - t0)
        del ballast
        lines.append(f"| smaps_rollup of a {mb} MB process | {_med(times):.0f} us |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.contain_cost", description=__doc__)
    ap.add_argument("--jobs", type=int, default=300, help="jobs per method per round")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    rows: dict[str, Row] = {}
    runners: list[tuple[str, Callable[[Row, int], None]]] = [
        ("plain posix_spawn", run_plain),
        ("watch (job ends before its first sample)", run_watch),
    ]
    cleanup: list[Callable[[], None]] = []
    notes: list[str] = []
    v1 = detect(versions=("v1",)).backend
    if isinstance(v1, V1Backend):
        v1.setup()
        pool1 = GroupPool(v1, size=4)
        pool1.tidy()
        runners += [
            ("cgroup v1, group made and removed per job", lambda r, n: run_fresh(r, n, v1)),
            ("cgroup v1, pool", lambda r, n: run_pool(r, n, pool1, v1)),
        ]
        cleanup += [pool1.close, v1.teardown]
        notes.append(f"v1: {v1.describe()}; jobs pinned to CPU 0 and 1 in turn")
        for ctrls in (("memory", "cpuacct"), ("memory",)):
            b = detect(versions=("v1",), controllers=ctrls, name=f"sjq.{os.getpid()}-{len(ctrls)}")
            assert isinstance(b.backend, V1Backend)
            bk = b.backend
            bk.setup()
            p = GroupPool(bk, size=4)
            p.tidy()
            runners.append(
                (
                    f"cgroup v1, pool, {' + '.join(ctrls)} only",
                    lambda r, n, p=p, bk=bk: run_pool(r, n, p, bk),
                )
            )
            cleanup += [p.close, bk.teardown]
    else:
        notes.append("cgroup v1 rows not run: " + detect(versions=("v1",)).why)
    v2, v2root, why = v2_backend()
    if v2 is not None:
        pool2 = GroupPool(v2, size=4)
        pool2.tidy()
        runners += [
            ("cgroup v2, group made and removed per job", lambda r, n: run_fresh(r, n, v2)),
            ("cgroup v2, pool", lambda r, n: run_pool(r, n, pool2, v2)),
        ]
        cleanup += [pool2.close, v2.teardown, lambda: os.rmdir(v2root)]
        notes.append(f"v2: {why}")
    else:
        notes.append("cgroup v2 rows not run: " + why)
    try:
        for rnd in range(args.rounds):
            for name, fn in runners:  # interleaved: a burst of load hits all alike
                print(f"round {rnd + 1}: {name}", file=sys.stderr)
                fn(rows.setdefault(name, Row(name)), args.jobs)
    except CgroupError as e:
        print(f"cgroup error: {e}", file=sys.stderr)
        return 1
    finally:
        for c in cleanup:
            c()
    plain = rows["plain posix_spawn"]
    base_rate = plain.jobs / sum(plain.wall)
    base_spawn = _med(plain.spawn)
    print(f"{args.jobs} jobs x {args.rounds} rounds per method, /bin/true, one at a time\n")
    print("| method | before | spawn | reap | tidy | added | jobs/s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows.values():
        added = _med(r.before) + _med(r.spawn) + _med(r.reap) + _med(r.tidy) - base_spawn
        rate = r.jobs / sum(r.wall)
        print(
            f"| {r.name} | {_med(r.before):.0f} | {_med(r.spawn):.0f} | {_med(r.reap):.0f} |"
            f" {_med(r.tidy):.0f} | {added:.0f} | {rate:,.0f} ({rate / base_rate:.2f}x) |"
        )
    print()
    lines = ["| sampling | median |", "|---|---|"]
    sampling_costs(lines)
    print("\n".join(lines))
    print()
    for n in notes:
        print(f"- {n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
