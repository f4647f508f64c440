"""Throughput, dispatch gap and chain of this checkout against another one, in the same run:
``python -m bench.compare OTHER_CHECKOUT``.

The main bench compares sjq with baselines that are not sjq (the floor, tsp); this compares
sjq with an earlier sjq, which is how a change is judged against "today's figures". Each
round runs every variant in turn (the other checkout with its defaults, then this one under
each containment method, with and without pinning), so that load elsewhere hits all alike;
the medians of the rounds are printed. Everything runs in ``--dir`` (default /dev/shm), so
the root file system's slow file creation after mass deletions (docs/performance.md) does
not decide the result. A variant whose daemon refuses its settings (no cgroup here) says so.

    git worktree add --detach /tmp/before <commit>
    python -m bench.compare /tmp/before --rounds 3
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from bench import sjq_runs, sjqd
from bench.procs import Stamper, become_subreaper

__all__ = ["main"]

FIGURES = ("throughput jobs/s", "gap p50 ms", "chain s")


# (what it is, whether the other checkout runs it, its settings); --only numbers them from 1
VARIANTS: list[tuple[str, bool, dict[str, str]]] = [
    ("defaults", True, {}),
    ("enforce=none, pin=F", False, {"sjq.enforce": "none", "sjq.pin": "F"}),
    ("enforce=none", False, {"sjq.enforce": "none"}),
    ("enforce=watch", False, {"sjq.enforce": "watch"}),
    ("enforce=cgroup", False, {"sjq.enforce": "cgroup"}),
    # the other checkout under this one's settings, where it has them
    ("enforce=none, pin=F", True, {"sjq.enforce": "none", "sjq.pin": "F"}),
    ("enforce=none", True, {"sjq.enforce": "none"}),
    ("enforce=cgroup", True, {"sjq.enforce": "cgroup"}),
]
DEFAULT_ONLY = "1,2,3,4,5"


def variants(other: Path) -> list[tuple[str, Path, dict[str, str]]]:
    return [
        (f"{other.name} {what}" if theirs else what, other if theirs else sjqd.REPO, settings)
        for what, theirs, settings in VARIANTS
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__.split("\n")[0])
    p.add_argument("other", type=Path, help="another sjq checkout (e.g. a git worktree)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--jobs", type=int, default=1000, help="throughput jobs (default 1000)")
    p.add_argument("--dir", default="/dev/shm", help="where the daemons run (default /dev/shm)")
    listed = "; ".join(
        f"{i}: {'the other checkout, ' if theirs else ''}{what}"
        for i, (what, theirs, _) in enumerate(VARIANTS, 1)
    )
    p.add_argument(
        "--only",
        default=DEFAULT_ONLY,
        help=f"comma-separated numbers of the variants to run ({listed}; default {DEFAULT_ONLY})",
    )
    args = p.parse_args(argv)
    if not (args.other / "sjq" / "daemon.py").is_file():
        p.error(f"{args.other} is not an sjq checkout")
    become_subreaper()
    root = Path(tempfile.mkdtemp(prefix="sjq-compare-", dir=args.dir))
    stamper = Stamper(root)
    every = variants(args.other.resolve())
    picked = args.only.split(",")
    if not all(i.isdigit() and 1 <= int(i) <= len(every) for i in picked):
        p.error(f"--only: numbers from 1 to {len(every)}, got {args.only!r}")
    table = [every[int(i) - 1] for i in picked]
    results: dict[str, list[list[float]]] = {name: [[], [], []] for name, _, _ in table}
    here, n = sjqd.REPO, 0

    def fresh() -> Path:
        nonlocal n
        n += 1
        d = root / f"r{n}"
        d.mkdir()
        return d

    try:
        for r in range(args.rounds):
            for name, repo, settings in table:
                sjqd.REPO = repo  # the daemon runs from that checkout (its PYTHONPATH)
                try:
                    tp = sjq_runs.throughput(fresh(), args.jobs, 2, settings)
                    gap = statistics.median(sjq_runs.dispatch_gaps(fresh(), stamper, 500, settings))
                    ch = sjq_runs.chain(fresh(), 200, 2, settings)
                except Exception as e:  # a variant that cannot run here: say why, go on
                    print(f"round {r + 1}: {name}: {e}", file=sys.stderr)
                    continue
                finally:
                    sjqd.REPO = here
                for measured, value in zip(results[name], (tp, gap * 1e3, ch), strict=True):
                    measured.append(value)
                print(f"round {r + 1}: {name}: {tp:.0f} jobs/s, gap {gap * 1e3:.3f} ms, "
                      f"chain {ch:.3f} s", file=sys.stderr)  # fmt: skip
    finally:
        stamper.close()
        shutil.rmtree(root, ignore_errors=True)
    print("| variant | " + " | ".join(FIGURES) + " |")
    print("|---|" + "---|" * len(FIGURES))
    for name, figures in results.items():
        cells = [f"{statistics.median(v):.3f}" if v else "n/a" for v in figures]
        print(f"| {name} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
