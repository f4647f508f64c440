"""``python -m bench``: run the figures, print one table; owns the run's processes and temp dir.

Every process the run starts is below it (it is a child subreaper) and every
file is under one temp dir; both are gone when it ends, by error or Ctrl-C too.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path
from types import FrameType

from bench import (
    floor,
    sjq_arrays,
    sjq_backfill,
    sjq_contain,
    sjq_runs,
    sjqd,
    slurm_runs,
    snakemake_runs,
    tsp,
)
from bench.procs import Stamper, become_subreaper, kill_descendants
from bench.report import QUICK, Failure, Results, Sizes, Table, Value, build, percentile, render

FIGURES = (
    "throughput", "latency", "gap", "chain", "rss", "status", "release", "cli", "idle", "slurm",
    "array", "backfill", "snakemake", "contain",
)  # fmt: skip
QUEUE_FIGURES = {"latency", "status", "release"}  # measured on the empty and the held queue
SLOTS = 2  # CPU slots for throughput and chain: issue 6's 2-core machine


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description=(
            "Benchmark sjq against its baselines, all measured in this run: the floor "
            "(the same job scripts spawned directly with os.posix_spawn) and task-spooler "
            "(tsp), when installed. Prints one table; see docs/performance.md."
        ),
        epilog="figures: " + ", ".join(FIGURES),
    )
    p.add_argument(
        "--quick", action="store_true", help="smaller sizes (200 jobs, 10k held): well under 1 min"
    )
    p.add_argument(
        "--only", metavar="NAME[,NAME]", help="run only these figures (names listed below)"
    )
    p.add_argument("--jobs", type=int, metavar="N", help="jobs in the throughput figure")
    p.add_argument("--held", type=int, metavar="N", help="held jobs in the scale figures")
    p.add_argument(
        "--rounds", type=int, metavar="N", help="repeats of throughput, gap, chain (default 3)"
    )
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    args = p.parse_args(argv)
    if args.only:
        unknown = set(args.only.split(",")) - set(FIGURES)
        if unknown:
            p.error(f"unknown figure(s) {', '.join(sorted(unknown))}; choose from {FIGURES}")
    for name, least in (("jobs", 2), ("held", 2), ("rounds", 1)):
        value = getattr(args, name)
        if value is not None and value < least:
            p.error(f"--{name} must be at least {least}")
    return args


def machine() -> dict[str, str]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {
        "cpus": str(len(os.sched_getaffinity(0))),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": f"{platform.python_version()} ({sys.executable})",
        "loadavg": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
    }


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _workroot() -> Path:
    base = tempfile.gettempdir()
    # UNIX socket paths are limited to 107 bytes; keep ours well inside.
    if len(base) > 40:
        base = "/tmp"
    return Path(tempfile.mkdtemp(prefix="sjq-bench-", dir=base))


def measure(
    r: Results, figures: set[str], z: Sizes, root: Path, *, tsp_bin: str | None, sjq_ok: bool
) -> None:
    dirs = iter(range(1_000_000))

    def fresh() -> Path:
        d = root / f"w{next(dirs)}"
        d.mkdir()
        return d

    # The stamper times job starts: for the gaps, and for the RELEASE probes that
    # the queue sessions run.
    stamper = Stamper(root) if figures & ({"gap", "contain"} | QUEUE_FIGURES) else None
    try:
        # Rounds interleave the systems, so a burst of load elsewhere hits all alike.
        for _ in range(z.rounds):
            if "throughput" in figures:
                r.measure("floor.tp", lambda: floor.throughput(fresh(), z.jobs, SLOTS))
                if tsp_bin:
                    r.measure("tsp.tp", lambda: tsp.throughput(tsp_bin, fresh(), z.jobs, SLOTS))
                if sjq_ok:
                    r.measure("sjq.tp", lambda: sjq_runs.throughput(fresh(), z.jobs, SLOTS))
            if "gap" in figures:
                assert stamper is not None
                r.measure("floor.gap", lambda: floor.dispatch_gaps(fresh(), stamper, z.gap_jobs))
                if tsp_bin:
                    r.measure(
                        "tsp.gap", lambda: tsp.dispatch_gaps(tsp_bin, fresh(), stamper, z.gap_jobs)
                    )
                if sjq_ok:
                    r.measure(
                        "sjq.gap", lambda: sjq_runs.dispatch_gaps(fresh(), stamper, z.gap_jobs)
                    )
            if "contain" in figures and sjq_ok:
                assert stamper is not None
                sjq_contain.measure(
                    r, fresh, stamper, jobs=z.jobs, gap_jobs=z.gap_jobs, slots=SLOTS
                )
            if "chain" in figures:
                r.measure("floor.chain", lambda: floor.chain(fresh(), z.chain))
                if tsp_bin:
                    r.measure("tsp.chain", lambda: tsp.chain(tsp_bin, fresh(), z.chain, SLOTS))
                if sjq_ok:
                    r.measure("sjq.chain", lambda: sjq_runs.chain(fresh(), z.chain, SLOTS))
        if "release" in figures:
            assert stamper is not None
            r.measure("floor.release", lambda: floor.spawn_to_start(fresh(), stamper, z.probes))
        queue = stamper if figures & QUEUE_FIGURES else None
        if sjq_ok and (queue or figures & {"rss", "idle"}):
            sjq_runs.small_session(
                r,
                fresh(),
                queue,
                samples=z.samples,
                probes=z.probes,
                idle=z.idle if "idle" in figures else None,
            )
        if sjq_ok and (queue or "rss" in figures):
            sjq_runs.held_session(
                r, fresh(), queue, held=z.held, samples=z.samples, probes=z.probes
            )
        if "cli" in figures:
            sjq_runs.cli_times(r, fresh(), z.cli_runs, with_sjq=sjq_ok)
        if "slurm" in figures and sjq_ok:
            slurm_runs.measure(r, fresh(), z.slurm_jobs, z.slurm_probes, z.slurm_chain)
        if "array" in figures and sjq_ok:
            sjq_arrays.measure(r, fresh(), z.array)
        if "backfill" in figures and sjq_ok:
            sjq_backfill.measure(r, fresh(), z.held, z.samples)
        if "snakemake" in figures and sjq_ok:
            snakemake_runs.measure(r, fresh(), z.snakemake)
    finally:
        if stamper is not None:
            stamper.close()


def _json_value(v: Value) -> object:
    if isinstance(v, Failure):
        return {"error": v.reason}
    if isinstance(v, list):
        if not v:
            return {"n": 0}
        return {
            "n": len(v),
            "p50_s": percentile(v, 0.5),
            "p99_s": percentile(v, 0.99),
            "mean_s": sum(v) / len(v),
            "min_s": min(v),
            "max_s": max(v),
        }
    return v


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    z = QUICK if args.quick else Sizes()
    if args.jobs:
        z = replace(z, jobs=args.jobs)
    if args.held:
        z = replace(z, held=args.held)
    if args.rounds:
        z = replace(z, rounds=args.rounds)
    figures = set(args.only.split(",")) if args.only else set(FIGURES)

    become_subreaper()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    started = dt.datetime.now(dt.UTC)
    info = machine()
    root = _workroot()
    tsp_bin = tsp.find()
    info["tsp"] = tsp.version(tsp_bin) if tsp_bin else "not installed"
    sjq_na = sjqd.available(root)
    print(
        f"sjq bench {'--quick ' if args.quick else ''}on {info['cpus']} CPUs ({info['cpu']}), "
        f"load {info['loadavg']}; tsp: {info['tsp']}; sjq: {sjq_na or 'python -m sjq.daemon'}",
        file=sys.stderr,
    )
    r = Results()
    t0 = time.monotonic()
    try:
        measure(r, figures, z, root, tsp_bin=tsp_bin, sjq_ok=sjq_na is None)
    except KeyboardInterrupt:
        print("\ninterrupted: cleaning up", file=sys.stderr)
        return 130
    finally:
        kill_descendants(everything=True)
        shutil.rmtree(root, ignore_errors=True)

    table = Table(r, z, sjq_na, None if tsp_bin else "not installed")
    build(table, figures)
    print(
        f"\nsjq benchmark, {started:%Y-%m-%d %H:%M} UTC, {time.monotonic() - t0:.0f} s; "
        f"{info['cpus']} CPUs {info['cpu']}, Linux {info['kernel']}, Python {info['python']}; "
        f"load average at start {info['loadavg']}\n"
    )
    print(render(table.rows))
    for i, note in enumerate(table.notes, 1):
        print(f"\n{i}. {note}" if i == 1 else f"{i}. {note}")
    if args.json:
        doc = {
            "date": started.isoformat(timespec="seconds"),
            "machine": info,
            "sizes": asdict(z),
            "figures": sorted(figures),
            "sjq": sjq_na or "available",
            "results": {k: _json_value(v) for k, v in sorted(r.values.items())},
            "rounds": {
                k: [_json_value(v) for v in vs] for k, vs in sorted(r.rounds.items()) if len(vs) > 1
            },
            "table": [asdict(row) for row in table.rows],
            "notes": table.notes,
        }
        Path(args.json).write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
