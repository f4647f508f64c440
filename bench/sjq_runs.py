"""The sjq side of every figure, over the raw socket protocol (never sjq's own client).

Each function starts its own daemon in a fresh directory, so one figure never
inherits another's queue; the two "sessions" group the figures that share a
queue of a given size (an empty one, and one with 100,000 held jobs).
"""

from __future__ import annotations

import contextlib
import random
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable
from pathlib import Path

from bench import scripts
from bench.floor import gaps_from
from bench.procs import Gate, Stamper
from bench.proto import TERMINAL, Conn, parse_jobid, submit_request
from bench.report import Failure, Results
from bench.sjqd import REPO, Daemon, environment

POLL = 0.001  # seconds between PINGs as the last jobs end: the 1 ms granularity
# While many jobs remain, PINGs are spaced by PER_JOB per unfinished job (at most
# MAX_POLL): a PING every millisecond throughout would tax the daemon being measured.
# PER_JOB is a rate of 10,000 jobs/s, above any we expect, so the sleep ends before the
# jobs do and the finish is still caught at 1 ms granularity.
PER_JOB = 0.0001
MAX_POLL = 0.05
PROBE_PAUSE = 0.02  # seconds after each RELEASE probe, so the next meets an idle scheduler
BULK_TIMEOUT = 600.0  # seconds allowed for pipelining the 100,000 held jobs
WARMUP = 50  # untimed PING+SUBMIT pairs before a latency figure


def wait_done(conn: Conn, total: int, timeout: float) -> dict[str, int]:
    """Poll PING until ``total`` jobs are in a terminal state; the last PING's counts."""
    deadline = time.monotonic() + timeout
    while True:
        counts = conn.ping()
        remaining = total - sum(counts.get(s, 0) for s in TERMINAL)
        if remaining <= 0:
            return counts
        if time.monotonic() > deadline:
            raise TimeoutError(f"jobs not done after {timeout:.0f} s: {counts}")
        time.sleep(min(MAX_POLL, max(POLL, remaining * PER_JOB)))


def wait_ids(conn: Conn, ids: list[int], timeout: float) -> dict[str, int]:
    """Block in ``WAIT`` until every job in ``ids`` has ended (as ``tsp -w`` does for tsp);
    the count of each final state."""
    conn.sock.settimeout(timeout)
    reply = conn.call("WAIT " + ":".join(map(str, ids)))
    if not reply.startswith("OK "):
        raise RuntimeError(f"WAIT answered {reply!r}")
    counts: dict[str, int] = {}
    for pair in reply[3:].split():
        letter = pair.rpartition(":")[2]
        counts[letter] = counts.get(letter, 0) + 1
    return counts


def _all_succeeded(counts: dict[str, int], total: int) -> None:
    if counts.get("S", 0) != total:
        raise RuntimeError(f"expected {total} jobs in S, PING says {counts}")


def _ids(replies: list[str]) -> list[int]:
    return [parse_jobid(r) for r in replies]


def throughput(
    workdir: Path, jobs: int, slots: int, settings: dict[str, str] | None = None
) -> float:
    """Jobs/s: ``jobs`` trivial SUBMITs pipelined on one connection, first byte to last end.
    ``settings``: the daemon's, beyond the bench's own."""
    with Daemon(workdir / "sjq-throughput", slots, settings) as d, d.connect() as conn:
        request = submit_request(scripts.TRIVIAL, cwd=str(d.jobs))
        t0 = time.perf_counter()
        ids = _ids(conn.pipeline(request * jobs, jobs, timeout=300))
        counts = wait_ids(conn, ids, timeout=300)
        wall = time.perf_counter() - t0
        _all_succeeded(counts, jobs)
        return jobs / wall


def chain(workdir: Path, jobs: int, slots: int, settings: dict[str, str] | None = None) -> float:
    """Wall seconds, first submit to last end, for ``jobs`` jobs each DEPENDS on the previous.

    Submitted one at a time, each naming the id the previous reply gave, as a
    pipeline runner would; jobs start while the chain is still being submitted.
    ``settings``: the daemon's, beyond the bench's own.
    """
    with Daemon(workdir / "sjq-chain", slots, settings) as d, d.connect() as conn:
        cwd = str(d.jobs)
        t0 = time.perf_counter()
        prev: list[int] = []
        ids = []
        for _ in range(jobs):
            prev = [conn.submit(submit_request(scripts.TRIVIAL, cwd=cwd, depends=prev))]
            ids += prev
        counts = wait_ids(conn, ids, timeout=300)
        wall = time.perf_counter() - t0
        _all_succeeded(counts, jobs)
        return wall


def dispatch_gaps(
    workdir: Path, stamper: Stamper, jobs: int, settings: dict[str, str] | None = None
) -> list[float]:
    """Gaps (s) between consecutive jobs on one CPU slot, the queue filled behind a gate job.
    ``settings``: the daemon's, beyond the bench's own."""
    gate = Gate(workdir)
    try:
        with Daemon(workdir / "sjq-gap", 1, settings) as d, d.connect() as conn:
            cwd = str(d.jobs)
            conn.submit(submit_request(gate.script, cwd=cwd))
            prefix = stamper.prefix("sjq")
            data = b"".join(
                submit_request(scripts.gap(stamper.fifo, f"{prefix}{i}"), cwd=cwd)
                for i in range(jobs)
            )
            _ids(conn.pipeline(data, jobs, timeout=120))
            gate.open()
            gaps = gaps_from(stamper, prefix, jobs, timeout=120)
            _all_succeeded(wait_done(conn, jobs + 1, timeout=60), jobs + 1)
            return gaps
    finally:
        gate.close()


def _timed(fn: Callable[[], object], samples: int) -> list[float]:
    out: list[float] = []
    for _ in range(samples):
        t0 = time.perf_counter_ns()
        fn()
        out.append((time.perf_counter_ns() - t0) / 1e9)
    return out


def _submit_latency(conn: Conn, cwd: str, samples: int) -> tuple[list[float], list[int]]:
    """One HOLD submit at a time (held, so nothing runs meanwhile); latencies and ids."""
    request = submit_request(scripts.TRIVIAL, cwd=cwd, hold=True)
    ids: list[int] = []
    latencies = _timed(lambda: ids.append(conn.submit(request)), samples)
    return latencies, ids


def _release_latency(conn: Conn, stamper: Stamper, cwd: str, probes: int) -> list[float]:
    """Seconds from sending RELEASE of a held probe job to the probe's first line."""
    prefix = stamper.prefix("sjq")
    ids = [
        conn.submit(submit_request(scripts.probe(stamper.fifo, f"{prefix}{k}"), cwd=cwd, hold=True))
        for k in range(probes)
    ]
    out: list[float] = []
    for k, jobid in enumerate(ids):
        t0 = time.monotonic_ns()
        conn.expect_ok(f"RELEASE {jobid}")
        out.append((stamper.wait_for(f"r {prefix}{k}", 30) - t0) / 1e9)
        time.sleep(PROBE_PAUSE)
    return out


def _queue_figures(
    r: Results, d: Daemon, conn: Conn, stamper: Stamper, *, tag: str, samples: int, probes: int
) -> None:
    """PING, SUBMIT, STATUS <id> and RELEASE->start latencies on the queue as it is."""
    cwd = str(d.jobs)
    # Untimed warm-up: a fresh daemon's first requests pay one-off costs (imports on
    # first use, database pages, allocator growth) that are not the queue's size.
    for _ in range(WARMUP):
        conn.ping()
        conn.submit(submit_request(scripts.TRIVIAL, cwd=cwd, hold=True))
    r.measure(f"sjq.ping.{tag}", lambda: _timed(conn.ping, samples))
    ids: list[int] = []

    def submits() -> list[float]:
        latencies, new = _submit_latency(conn, cwd, samples)
        ids.extend(new)
        return latencies

    r.measure(f"sjq.submit.{tag}", submits)
    r.measure(f"sjq.count.{tag}", lambda: float(conn.ping().get("U", 0)))
    if ids:
        pick = random.Random(6).choices(ids, k=samples)
        it = iter(pick)
        r.measure(f"sjq.status.{tag}", lambda: _timed(lambda: conn.status(next(it)), samples))
    r.measure(f"sjq.release.{tag}", lambda: _release_latency(conn, stamper, cwd, probes))


def small_session(
    r: Results,
    workdir: Path,
    queue: Stamper | None,
    *,
    samples: int,
    probes: int,
    idle: float | None,
) -> None:
    """A fresh daemon: its RSS, its idle CPU over ``idle`` s, then (given a stamper for the
    RELEASE probes) the latencies as its queue fills."""
    with Daemon(workdir / "sjq-small", 2) as d:
        r.measure("sjq.rss.empty", lambda: float(d.rss_bytes()))
        if idle is not None:
            duration = idle

            def idle_cpu() -> float:
                c0 = d.cpu_seconds()
                time.sleep(duration)
                return d.cpu_seconds() - c0

            r.measure("sjq.idle", idle_cpu)
        if queue is not None:
            with d.connect() as conn:
                _queue_figures(r, d, conn, queue, tag="empty", samples=samples, probes=probes)


def held_session(
    r: Results, workdir: Path, queue: Stamper | None, *, held: int, samples: int, probes: int
) -> None:
    """A daemon with ``held`` HOLD jobs: its RSS and (given a stamper) the latencies."""
    with Daemon(workdir / "sjq-held", 2) as d, d.connect(timeout=BULK_TIMEOUT) as conn:
        request = submit_request(scripts.TRIVIAL, cwd=str(d.jobs), hold=True)

        def bulk() -> float:
            t0 = time.perf_counter()
            _ids(conn.pipeline(request * held, held, timeout=BULK_TIMEOUT))
            return held / (time.perf_counter() - t0)

        r.measure("sjq.bulk", bulk)
        r.measure("sjq.rss.held", lambda: float(d.rss_bytes()))
        r.measure("sjq.rss.helpers", lambda: float(d.helpers_rss_bytes()))
        if queue is not None:
            _queue_figures(r, d, conn, queue, tag="held", samples=samples, probes=probes)


def cli_command() -> list[str]:
    """How to run the CLI: the installed console script (what a user types), else ``-m``.

    The console script is taken from this interpreter's scripts directory, not
    from PATH, where a pyenv shim (a bash wrapper) would add its own startup.
    """
    script = Path(sysconfig.get_path("scripts")) / "sjq"
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-m", "sjq_client"]


def cli_times(r: Results, workdir: Path, runs: int, with_sjq: bool) -> None:
    """Wall times of ``python -c pass`` and, with a daemon, ``sjq submit`` and ``sjq --version``.

    One untimed warm-up round, then ``runs`` interleaved rounds, so drift in
    machine load hits every command alike.
    """
    with contextlib.ExitStack() as stack:
        env = environment(workdir)
        # As a user runs it: with the bytecode cache written (pip writes it at install; a
        # source checkout on its first run). PYTHONDONTWRITEBYTECODE, set in some shells,
        # would make every run recompile every module the CLI imports.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        subprocess.run(
            [sys.executable, "-m", "compileall", "-q", str(REPO / "sjq"), str(REPO / "clients")],
            env=env,
            stdout=subprocess.DEVNULL,
            check=False,
        )
        commands = {"base.pass": [sys.executable, "-c", "pass"]}
        if with_sjq:
            d = stack.enter_context(Daemon(workdir / "sjq-cli", 2))
            env |= {"SJQ_SOCKET": d.socket}
            cli = cli_command()
            job = scripts.write(workdir / "cli-job.sh", scripts.TRIVIAL)
            commands["sjq.cli.submit"] = [*cli, "submit", str(job)]
            commands["sjq.cli.version"] = [*cli, "--version"]
        times: dict[str, list[float]] = {key: [] for key in commands}
        failed: dict[str, Failure] = {}
        for round_ in range(runs + 1):
            for key, cmd in commands.items():
                if key in failed:
                    continue
                try:
                    wall = _wall(cmd, env, workdir)
                except (OSError, RuntimeError, subprocess.TimeoutExpired) as e:
                    failed[key] = Failure(f"{type(e).__name__}: {e}")
                    continue
                if round_:
                    times[key].append(wall)
        for key in commands:
            r.set(key, failed.get(key) or times[key])


def _wall(cmd: list[str], env: dict[str, str], cwd: Path) -> float:
    t0 = time.perf_counter()
    out = subprocess.run(
        cmd,
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        timeout=60,
        check=False,
    )
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        err = out.stderr.decode(errors="replace").strip().splitlines()[-1:]
        raise RuntimeError(f"{' '.join(cmd[1:])}: exit {out.returncode} {' '.join(err)}")
    return wall
