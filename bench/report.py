"""Measurements in, one table out: the figures, their baselines, targets and verdicts.

Pure formatting and arithmetic; runs no process. The targets are issue 6's;
their wording here is the single place they are written down in code.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

MB = 1e6  # the RSS target is 200 MB; decimal megabytes keep the check strict
HELD_BUDGET = 200 * MB  # the daemon's RSS target with 100,000 held jobs (issue 6)


@dataclass(frozen=True, slots=True)
class Failure:
    reason: str


Value = float | list[float] | Failure


@dataclass(frozen=True, slots=True)
class Sizes:
    jobs: int = 1000  # throughput figure: trivial jobs
    gap_jobs: int = 500  # dispatch gap: jobs on one slot (gaps = jobs - 1)
    chain: int = 200  # dependency chain length
    held: int = 100_000  # held jobs for the scale figures
    samples: int = 1000  # latency samples per figure
    probes: int = 50  # RELEASE->start probes per queue size
    cli_runs: int = 20  # timed runs of each command line
    idle: float = 10.0  # seconds of idle-CPU observation
    rounds: int = 3  # interleaved repeats of throughput, gap and chain (median / pooled)
    slurm_jobs: int = 300  # the Slurm figures: a burst of trivial jobs through Slurm
    slurm_probes: int = 10  # one-at-a-time submit-to-start samples through Slurm
    slurm_chain: int = 20  # links of the dependency chain through Slurm
    array: int = 10_000  # elements of the job array figure (as issue 13 asks, quick too)
    snakemake: int = 200  # jobs of the Snakemake workflow figure


QUICK = Sizes(
    jobs=200,
    gap_jobs=100,
    chain=50,
    held=10_000,
    samples=200,
    probes=20,
    cli_runs=5,
    idle=2.0,
    rounds=1,
    slurm_jobs=40,
    slurm_probes=5,
    slurm_chain=6,
    snakemake=50,
)


class Results:
    """Named measurements of one run; a failed measurement keeps its reason.

    Measuring a key again adds a round: the value is then the median of the
    rounds (a number) or all rounds' samples pooled (a series); one failed
    round fails the key.
    """

    def __init__(self) -> None:
        self.values: dict[str, Value] = {}
        self.rounds: dict[str, list[Value]] = {}

    def measure(self, key: str, fn: Callable[[], float | list[float]]) -> None:
        """Run ``fn`` and keep its value, or its exception as a Failure; report progress."""
        t0 = time.monotonic()
        try:
            value: Value = fn()
        except Exception as e:
            value = Failure(f"{type(e).__name__}: {e}")
        self.set(key, value, time.monotonic() - t0)

    def set(self, key: str, value: Value, elapsed: float | None = None) -> None:
        rounds = self.rounds.setdefault(key, [])
        rounds.append(value)
        self.values[key] = _combine(rounds)
        took = f"({elapsed:.1f} s)" if elapsed is not None else ""
        print(f"  {key:<18} {summary(value):<44} {took}", file=sys.stderr, flush=True)

    def get(self, key: str) -> Value | None:
        return self.values.get(key)

    def number(self, key: str) -> float | None:
        v = self.values.get(key)
        return v if isinstance(v, float) else None

    def series(self, key: str) -> list[float] | None:
        v = self.values.get(key)
        return v if isinstance(v, list) and v else None


def _combine(rounds: list[Value]) -> Value:
    for v in rounds:
        if isinstance(v, Failure):
            return v
    if all(isinstance(v, float) for v in rounds):
        return statistics.median(v for v in rounds if isinstance(v, float))
    return [x for v in rounds if isinstance(v, list) for x in v]


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    s = sorted(values)
    pos = (len(s) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def summary(value: Value) -> str:
    if isinstance(value, Failure):
        return f"FAILED {value.reason}"
    if isinstance(value, list):
        return f"n={len(value)} p50={percentile(value, 0.5) * 1e3:.3f} ms" if value else "n=0"
    return f"{value:.6g}"


def ms(x: float) -> str:
    v = x * 1e3
    return f"{v:.3f}" if v < 1 else f"{v:.2f}" if v < 100 else f"{v:.0f}"


@dataclass(frozen=True, slots=True)
class Row:
    figure: str
    sjq: str
    baselines: str
    target: str
    met: str


class Table:
    """Builds the rows from a Results, knowing why a column may be empty."""

    def __init__(self, r: Results, sizes: Sizes, sjq_na: str | None, tsp_na: str | None) -> None:
        self.r = r
        self.sizes = sizes
        self.sjq_na = sjq_na
        self.tsp_na = tsp_na
        self.rows: list[Row] = []
        self.notes: list[str] = []
        self._noted: dict[str, int] = {}

    # -- cells ---------------------------------------------------------------------------

    def _why(self, key: str) -> str:
        """What an empty cell says: the error (as a note), or why it was not measured."""
        v = self.r.get(key)
        if isinstance(v, Failure):
            if key not in self._noted:
                self.notes.append(f"{key}: {v.reason}")
                self._noted[key] = len(self.notes)
            return f"error (note {self._noted[key]})"
        system = key.split(".", 1)[0]
        if system == "tsp" and self.tsp_na:
            return self.tsp_na
        if system == "sjq" and self.sjq_na:
            return f"n/a ({self.sjq_na})"
        return "not measured"

    def num(self, key: str, fmt: Callable[[float], str]) -> str:
        v = self.r.number(key)
        return fmt(v) if v is not None else self._why(key)

    def pct(self, key: str) -> str:
        v = self.r.series(key)
        if v is None:
            return self._why(key)
        return f"{ms(percentile(v, 0.5))} / {ms(percentile(v, 0.99))} ms"

    def median(self, key: str) -> str:
        v = self.r.series(key)
        return f"{ms(statistics.median(v))} ms" if v is not None else self._why(key)

    def p50(self, key: str) -> float | None:
        v = self.r.series(key)
        return percentile(v, 0.5) if v is not None else None

    def verdict(self, ok: bool | None) -> str:
        if ok is None:
            return "pending" if self.sjq_na else "—"
        return "yes" if ok else "NO"

    def add(
        self, figure: str, sjq: str, baselines: str, target: str, ok: bool | None, *, why: str = ""
    ) -> None:
        """One row; ``why`` qualifies a verdict reached on part of the target only."""
        met = self.verdict(ok)
        self.rows.append(
            Row(figure, sjq, baselines, target, f"{met} {why}" if ok is not None and why else met)
        )


def build(t: Table, figures: set[str]) -> None:
    """Append the rows of the selected ``figures`` to ``t``."""
    r, z = t.r, t.sizes

    def rate(v: float) -> str:
        return f"{v:,.0f} jobs/s"

    def secs(v: float) -> str:
        return f"{v:.3f} s"

    def mbytes(v: float) -> str:
        return f"{v / MB:.1f} MB"

    if "throughput" in figures:
        s, f, q = r.number("sjq.tp"), r.number("floor.tp"), r.number("tsp.tp")
        ok = None
        if s is not None and f is not None:
            ok = s >= 0.5 * f and (q is None or s >= 1.5 * q)
        target = "≥ 0.5x floor" + (f" ({0.5 * f:,.0f})" if f else "")
        target += " and ≥ 1.5x tsp" + (f" ({1.5 * q:,.0f})" if q else "")
        t.add(
            f"throughput, {z.jobs} trivial jobs, 2 CPUs",
            t.num("sjq.tp", rate),
            f"floor {t.num('floor.tp', rate)}; tsp {t.num('tsp.tp', rate)}",
            target,
            ok,
            why="" if q is not None else "(floor only)",
        )
    if "latency" in figures:
        t.add(
            "SUBMIT latency p50 / p99, empty queue",
            t.pct("sjq.submit.empty"),
            f"PING {t.pct('sjq.ping.empty')}",
            "(reference for the next row)",
            None,
        )
        e, h = t.p50("sjq.submit.empty"), t.p50("sjq.submit.held")
        t.add(
            f"SUBMIT latency p50 / p99, {z.held:,} held",
            t.pct("sjq.submit.held"),
            f"PING {t.pct('sjq.ping.held')}",
            "p50 ≤ 1.5x empty" + (f" (≤ {ms(1.5 * e)} ms)" if e is not None else ""),
            h <= 1.5 * e if h is not None and e is not None else None,
        )
    if "gap" in figures:
        g = r.series("sjq.gap")
        t.add(
            f"dispatch gap p50 / p99, 1 slot, {z.gap_jobs} jobs",
            t.pct("sjq.gap"),
            f"floor {t.pct('floor.gap')}; tsp -S 1 {t.pct('tsp.gap')}",
            "p50 ≤ 2 ms, p99 ≤ 10 ms",
            None if g is None else percentile(g, 0.5) <= 0.002 and percentile(g, 0.99) <= 0.010,
        )
    if "chain" in figures:
        s, q = r.number("sjq.chain"), r.number("tsp.chain")
        t.add(
            f"{z.chain}-job dependency chain, wall",
            t.num("sjq.chain", secs),
            f"floor {t.num('floor.chain', secs)}; tsp -D {t.num('tsp.chain', secs)}",
            "≤ tsp -D",
            s <= q if s is not None and q is not None else None,
        )
    if "rss" in figures:
        h = r.number("sjq.rss.held")
        t.add(
            f"daemon RSS, {z.held:,} held",
            t.num("sjq.rss.held", mbytes),
            f"empty daemon {t.num('sjq.rss.empty', mbytes)}",
            "≤ 200 MB",
            h <= 200 * MB if h is not None else None,
        )
    if "status" in figures:
        s50 = t.p50("sjq.status.held")
        n = r.number("sjq.count.empty")
        t.add(
            f"STATUS <id> p50 / p99, {z.held:,} held",
            t.pct("sjq.status.held"),
            f"PING {t.pct('sjq.ping.held')}; "
            f"STATUS with {n or 0:,.0f} held {t.pct('sjq.status.empty')}",
            "p50 ≤ 2 ms",
            s50 <= 0.002 if s50 is not None else None,
        )
    if "release" in figures:
        s, e = t.p50("sjq.release.held"), t.p50("sjq.release.empty")
        n = r.number("sjq.count.empty")
        t.add(
            f"RELEASE → job start p50 / p99, {z.held:,} held",
            t.pct("sjq.release.held"),
            f"{n or 0:,.0f} held {t.pct('sjq.release.empty')}; "
            f"posix_spawn → start {t.pct('floor.release')}",
            f"p50 ≤ 1.5x with {n or 0:,.0f} held",
            s <= 1.5 * e if s is not None and e is not None else None,
        )
    if "cli" in figures:
        c, p = t.p50("sjq.cli.submit"), t.p50("base.pass")
        t.add(
            "`sjq submit` wall, median",
            t.median("sjq.cli.submit"),
            f"python -c pass {t.median('base.pass')}",
            "≤ python -c pass + 15 ms",
            c <= p + 0.015 if c is not None and p is not None else None,
        )
        t.add(
            "`sjq --version` wall, median",
            t.median("sjq.cli.version"),
            f"python -c pass {t.median('base.pass')}",
            "(information)",
            None,
        )
    if "idle" in figures:
        i = r.number("sjq.idle")
        t.add(
            f"idle daemon CPU over {z.idle:g} s",
            t.num("sjq.idle", lambda v: f"{v * 1e3:.0f} ms"),
            "0 ms",
            "≤ 10 ms (one clock tick)",
            i <= 0.010 if i is not None else None,
        )
    if "slurm" in figures:
        s, b = r.number("sjqslurm.tp"), r.number("slurm.tp")
        t.add(
            f"Slurm: {z.slurm_jobs} trivial jobs, submit to last end",
            t.num("sjqslurm.tp", lambda v: f"{v:,.1f} jobs/s"),
            f"sbatch loop {t.num('slurm.tp', lambda v: f'{v:,.1f} jobs/s')}",
            "≥ 0.8x sbatch loop",
            s >= 0.8 * b if s is not None and b is not None else None,
        )
        s50, b50 = t.p50("sjqslurm.lat"), t.p50("slurm.lat")
        t.add(
            "Slurm: submit → start p50 / p99, idle cluster",
            t.pct("sjqslurm.lat"),
            f"sbatch {t.pct('slurm.lat')}",
            "p50 ≤ sbatch + sjq.slurm.poll (0.5 s)",
            s50 <= b50 + 0.5 if s50 is not None and b50 is not None else None,
        )
        parts = sorted(k.rsplit(".", 1)[1] for k in r.values if k.startswith("sjqslurm.cmds."))
        split = ", ".join(f"{p} {r.number('sjqslurm.cmds.' + p) or 0:,.0f}" for p in parts)
        sb = r.number("sjqslurm.cmds.sbatch")
        t.add(
            "Slurm commands sjq ran per 1,000 jobs",
            t.num("sjqslurm.cmds", lambda v: f"{v:,.0f}"),
            split or "not measured",
            "1 sbatch per job (+1 check); squeue per poll, not per job",
            sb <= 1000 + 1000 / z.slurm_jobs + 1e-9 if sb is not None else None,
        )
    if "slurm" in figures:
        s, b = r.number("sjqslurm.array.tp"), r.number("slurm.array.tp")
        t.add(
            f"Slurm: {z.slurm_jobs}-element array, submit to last end",
            t.num("sjqslurm.array.tp", lambda v: f"{v:,.1f} jobs/s"),
            f"sbatch --array {t.num('slurm.array.tp', lambda v: f'{v:,.1f} jobs/s')}",
            "≥ 0.8x sbatch --array",
            s >= 0.8 * b if s is not None and b is not None else None,
        )
        parts = sorted(
            k.rsplit(".", 1)[1] for k in r.values if k.startswith("sjqslurm.array.cmds.")
        )
        split = ", ".join(f"{p} {r.number('sjqslurm.array.cmds.' + p) or 0:,.0f}" for p in parts)
        sb = r.number("sjqslurm.array.cmds.sbatch")
        t.add(
            "Slurm commands sjq ran per 1,000 array elements",
            t.num("sjqslurm.array.cmds", lambda v: f"{v:,.0f}"),
            split or "not measured",
            "1 sbatch per array (+1 check)",
            sb <= 2000 / z.slurm_jobs + 1e-9 if sb is not None else None,
        )
        c, bc = r.number("sjqslurm.chain"), r.number("slurm.chain")
        t.add(
            f"Slurm: {z.slurm_chain}-job afterok chain, per link",
            t.num("sjqslurm.chain", secs),
            f"sbatch --dependency {t.num('slurm.chain', secs)}",
            "≤ sbatch --dependency + 2 x sjq.slurm.poll (1 s)",
            c <= bc + 1.0 if c is not None and bc is not None else None,
        )
    if "array" in figures:
        a = r.number("sjq.array.accept")
        t.add(
            f"{z.array:,}-element array, SUBMIT to reply",
            t.num("sjq.array.accept", secs),
            f"{z.array:,} SUBMITs pipelined {t.num('sjq.singles.accept', secs)}; "
            f"`sjq submit --array` wall {t.num('sjq.array.cli', secs)}",
            "< 1 s",
            a < 1.0 if a is not None else None,
        )
        ar, sr = r.number("sjq.array.rss"), r.number("sjq.singles.rss")
        per_job = HELD_BUDGET / 100_000

        def per(v: float) -> str:
            return f"{v:,.0f} B per job"

        t.add(
            f"daemon RSS per queued job, {z.array:,}-element array",
            t.num("sjq.array.rss", per),
            f"one SUBMIT per job {t.num('sjq.singles.rss', per)}",
            f"≤ {per_job:,.0f} B (200 MB for 100,000 held) and ≤ 1.1x one SUBMIT per job",
            ar <= per_job and ar <= 1.1 * sr if ar is not None and sr is not None else None,
        )
    if "backfill" in figures:
        e, q = t.p50("sjq.backfill.empty"), t.p50("sjq.backfill.queued")
        t.add(
            f"SUBMIT latency p50 / p99, a reservation and {z.held:,} queued behind it",
            t.pct("sjq.backfill.queued"),
            f"nothing queued behind it {t.pct('sjq.backfill.empty')}",
            "p50 ≤ 1.5x nothing queued" + (f" (≤ {ms(1.5 * e)} ms)" if e is not None else ""),
            q <= 1.5 * e if q is not None and e is not None else None,
        )
    if "snakemake" in figures:

        def wall(v: float) -> str:
            return f"{v:.1f} s"

        def over(key: str) -> str:
            w, busy = r.number(key), r.number(key + ".jobs")
            return f" (jobs' own {busy:.1f} s)" if w is not None and busy is not None else ""

        t.add(
            f"Snakemake workflow of {z.snakemake} short jobs, wall, 2 CPUs",
            "--executor sjq " + t.num("snakemake.plugin", wall) + over("snakemake.plugin"),
            f"local {t.num('snakemake.local', wall)}; cluster-generic + sjq CLI "
            f"{t.num('snakemake.generic', wall)}" + over("snakemake.generic"),
            "(information)",
            None,
        )
    if "contain" in figures:
        c, n = r.number("contain.cgroup.tp"), r.number("contain.none.tp")
        t.add(
            f"throughput, {z.jobs} trivial jobs, each in a cgroup (sjq.enforce = cgroup)",
            t.num("contain.cgroup.tp", rate),
            f"sjq.enforce = none {t.num('contain.none.tp', rate)}",
            "≥ 0.8x none" + (f" ({0.8 * n:,.0f})" if n else ""),
            c >= 0.8 * n if c is not None and n is not None else None,
        )
        cg, ng = t.p50("contain.cgroup.gap"), t.p50("contain.none.gap")
        t.add(
            f"dispatch gap p50 / p99, 1 slot, {z.gap_jobs} jobs, in cgroups",
            t.pct("contain.cgroup.gap"),
            f"sjq.enforce = none {t.pct('contain.none.gap')}",
            "p50 ≤ 1.1x none" + (f" (≤ {ms(1.1 * ng)} ms)" if ng is not None else ""),
            cg <= 1.1 * ng if cg is not None and ng is not None else None,
        )
    helpers = r.number("sjq.rss.helpers")
    if "rss" in figures and helpers:
        t.notes.append(
            f"RSS is the daemon process's VmRSS; the processes it forked without exec "
            f"(its job keeper) hold another {helpers / MB:.1f} MB of VmRSS, much of it "
            "shared copy-on-write with the daemon."
        )
    bulk = r.number("sjq.bulk")
    if bulk is not None:
        t.notes.append(f"{z.held:,} held jobs were pipelined at {bulk:,.0f} SUBMITs/s.")


def render(rows: list[Row]) -> str:
    """A Markdown table, padded so that it also reads well in a terminal."""
    head = Row("figure", "sjq", "baseline(s)", "target", "met?")
    cells = [[head.figure, head.sjq, head.baselines, head.target, head.met]]
    cells += [[x.figure, x.sjq, x.baselines, x.target, x.met] for x in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(5)]

    def line(c: list[str]) -> str:
        return "| " + " | ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(cells[0]), sep, *(line(c) for c in cells[1:])])
