"""The floor: the same job scripts spawned straight from Python with os.posix_spawn.

What no scheduler can beat on this machine: one posix_spawn per job (new
session, stdin /dev/null, stdout/stderr to a per-job file, as sjq does),
reaped through a pidfd, the next job spawned the moment a slot frees.
"""

from __future__ import annotations

import os
import select
import time
from collections.abc import Callable
from pathlib import Path

from bench import scripts
from bench.procs import Stamper

JOB_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/", "LANG": "C.UTF-8"}
OUT_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC


def spawn(argv: list[str], outdir: Path, n: int) -> int:
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, str(outdir / f"{n}.stdout"), OUT_FLAGS, 0o644),
        (os.POSIX_SPAWN_OPEN, 2, str(outdir / f"{n}.stderr"), OUT_FLAGS, 0o644),
    ]
    return os.posix_spawn(argv[0], argv, JOB_ENV, file_actions=actions, setsid=True)


def run_pool(count: int, slots: int, argv: Callable[[int], list[str]], outdir: Path) -> float:
    """Run ``count`` jobs, at most ``slots`` at once; wall seconds from first spawn to last reap."""
    poller = select.poll()
    running: dict[int, int] = {}  # pidfd -> pid
    started = done = 0
    try:
        t0 = time.perf_counter()
        while done < count:
            while len(running) < slots and started < count:
                pid = spawn(argv(started), outdir, started)
                fd = os.pidfd_open(pid)
                running[fd] = pid
                poller.register(fd, select.POLLIN)
                started += 1
            for fd, _ in poller.poll():
                pid = running.pop(fd)
                poller.unregister(fd)
                os.close(fd)
                _, status = os.waitpid(pid, 0)
                if os.waitstatus_to_exitcode(status) != 0:
                    raise RuntimeError(f"floor job {argv(0)[0]} exited with status {status}")
                done += 1
        return time.perf_counter() - t0
    finally:
        for fd, pid in running.items():
            os.close(fd)
            os.kill(pid, 9)
            os.waitpid(pid, 0)


def throughput(workdir: Path, jobs: int, slots: int) -> float:
    """Jobs per second for ``jobs`` trivial jobs, ``slots`` at a time."""
    script = str(scripts.write(workdir / "trivial.sh", scripts.TRIVIAL))
    return jobs / run_pool(jobs, slots, lambda _: [script], workdir)


def chain(workdir: Path, jobs: int) -> float:
    """Wall seconds for ``jobs`` trivial jobs one after the other."""
    script = str(scripts.write(workdir / "trivial.sh", scripts.TRIVIAL))
    return run_pool(jobs, 1, lambda _: [script], workdir)


def dispatch_gaps(workdir: Path, stamper: Stamper, jobs: int) -> list[float]:
    """Gaps (s) from one job's last line to the next job's first, one slot."""
    prefix = stamper.prefix("floor")
    script = str(scripts.write(workdir / "gap.sh", scripts.gap(stamper.fifo, f"{prefix}$1")))
    run_pool(jobs, 1, lambda i: [script, str(i)], workdir)
    return gaps_from(stamper, prefix, jobs, timeout=10)


def gaps_from(stamper: Stamper, prefix: str, jobs: int, timeout: float) -> list[float]:
    """Turn ``s/e <prefix><i>`` stamps of jobs 0..jobs-1 into start-after-end gaps."""
    stamper.wait_for(f"e {prefix}{jobs - 1}", timeout)
    gaps: list[float] = []
    for i in range(jobs - 1):
        end = stamper.wait_for(f"e {prefix}{i}", 1)
        start = stamper.wait_for(f"s {prefix}{i + 1}", 1)
        if start < end:
            raise RuntimeError(f"job {i + 1} started before job {i} ended: not one slot")
        gaps.append((start - end) / 1e9)
    return gaps


def spawn_to_start(workdir: Path, stamper: Stamper, probes: int) -> list[float]:
    """Seconds from just before posix_spawn to the job's first line, ``probes`` times."""
    prefix = stamper.prefix("floor")
    script = str(scripts.write(workdir / "probe.sh", scripts.probe(stamper.fifo, f"{prefix}$1")))
    out: list[float] = []
    for k in range(probes):
        t0 = time.monotonic_ns()
        pid = spawn([script, str(k)], workdir, k)
        try:
            out.append((stamper.wait_for(f"r {prefix}{k}", 10) - t0) / 1e9)
        finally:
            os.waitpid(pid, 0)
    return out
