"""What containment costs the scheduler: throughput and dispatch gap with each job in a cgroup
of its own (``sjq.enforce = cgroup``) against no containment (``sjq.enforce = none``), the
two measured in the same run, round after round, so that a burst of load elsewhere hits both.

A machine where no cgroup can hold a job's memory (not root, no delegated cgroup v2 group)
cannot run the cgroup side: its daemon refuses to start and the row says why.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

from bench import sjq_runs
from bench.procs import Stamper
from bench.report import Results

__all__ = ["METHODS", "measure"]

METHODS = ("none", "cgroup")


def measure(
    r: Results,
    fresh: Callable[[], Path],
    stamper: Stamper,
    *,
    jobs: int,
    gap_jobs: int,
    slots: int,
) -> None:
    """One round of each figure under each method: ``contain.<method>.tp`` (jobs/s) and
    ``contain.<method>.gap`` (gaps in seconds)."""
    for method in METHODS:
        settings = {"sjq.enforce": method}
        r.measure(f"contain.{method}.tp", partial(_tp, fresh, jobs, slots, settings))
        r.measure(f"contain.{method}.gap", partial(_gap, fresh, stamper, gap_jobs, settings))


def _tp(fresh: Callable[[], Path], jobs: int, slots: int, settings: dict[str, str]) -> float:
    return sjq_runs.throughput(fresh(), jobs, slots, settings)


def _gap(
    fresh: Callable[[], Path], stamper: Stamper, jobs: int, settings: dict[str, str]
) -> list[float]:
    return sjq_runs.dispatch_gaps(fresh(), stamper, jobs, settings)
