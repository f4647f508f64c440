"""A Snakemake workflow of short jobs, three ways: Snakemake's own local execution, the sjq
executor plugin (`--executor sjq`), and the cluster-generic executor driving the `sjq` CLI
with the README's template lines. Wall time of the whole `snakemake` run, each with two
CPUs for jobs, each against a fresh daemon of its own (the daemon starts on the first job,
as it would for a user, so its start is counted).

Both remote executors poll once a second (the plugin's default; cluster-generic told so
with --seconds-between-status-checks, its default being 10 s) and may submit every job at
once (--jobs = the number of jobs): sjq decides what runs.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from bench.report import Failure, Results
from bench.sjqd import REPO, environment

PLUGIN = REPO / "clients" / "snakemake-executor-plugin-sjq"
CPUS = 2
TIMEOUT = 900.0

SNAKEFILE = """\
N = {n}
rule all:
    input: "done.txt"

rule one:
    output: "out/{{i}}.txt"
    threads: 1
    resources: mem_mb=256
    shell: "echo {{wildcards.i}} > {{output}}"

rule gather:
    input: expand("out/{{i}}.txt", i=range(N - 2))
    output: "done.txt"
    threads: 1
    resources: mem_mb=256
    shell: "cat {{input}} | wc -l > {{output}}"
"""
# N - 2 short jobs, the gathering job and the `all` target: N - 1 jobs run (the target runs
# nothing), so n = 201 gives 200.

SUBMIT = (
    "sjq submit --after '{dependencies}' --name smk.{rule} --procs {threads}"
    " --mem {resources.mem_mb}M --stdout 'logs/%x.%j.out' --stderr 'logs/%x.%j.err'"
)


def available() -> str | None:
    """None if snakemake and both executors can run here, else why not."""
    if shutil.which("snakemake") is None:
        return "snakemake not installed"
    try:
        import snakemake_executor_plugin_cluster_generic  # noqa: F401
    except ImportError:
        return "snakemake-executor-plugin-cluster-generic not installed"
    if not PLUGIN.is_dir():
        return f"{PLUGIN} missing"
    return None


def _workflow(workdir: Path, n: int) -> Path:
    workdir.mkdir(parents=True)
    (workdir / "Snakefile").write_text(SNAKEFILE.format(n=n + 1))
    rc = workdir / "sjqrc"
    rc.write_text(
        f"sjq.socket = {workdir}/s.sock\n"
        f"sjq.db = {workdir}/state.db\n"
        f"sjq.spool = {workdir}/spool\n"
        f"sjq.pidfile = {workdir}/sjq.pid\n"
        f"sjq.logfile = {workdir}/sjq.log\n"
        f"sjq.rundir = {workdir}/run\n"
        f"sjq.tmpdir = {workdir}/tmp\n"
        f"sjq.maxprocs = {CPUS}\n"
        "sjq.waittime = 5\n"
    )
    return rc


def _run(workdir: Path, args: list[str], rc: Path | None) -> float:
    env = environment(workdir)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PLUGIN), env["PYTHONPATH"]) if p)
    env["PATH"] = os.pathsep.join((str(Path(sys.executable).parent), env.get("PATH", "")))
    if rc is not None:
        env["SJQ_CONFIG"] = str(rc)
    t0 = time.perf_counter()
    out = subprocess.run(
        ["snakemake", "--quiet", "all", *args],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    wall = time.perf_counter() - t0
    if out.returncode != 0 or not (workdir / "done.txt").exists():
        raise RuntimeError(
            f"snakemake {' '.join(args)}: exit {out.returncode}: {out.stderr[-800:]}"
        )
    if rc is not None:
        subprocess.run(
            [sys.executable, "-m", "sjq_client", "shutdown"],
            env=env,
            cwd=workdir,
            capture_output=True,
            timeout=60,
            check=False,
        )
    return wall


def local(workdir: Path, n: int) -> float:
    _workflow(workdir, n)
    return _run(workdir, ["--cores", str(CPUS)], None)


def plugin(workdir: Path, n: int) -> float:
    rc = _workflow(workdir, n)
    args = ["--executor", "sjq", "--jobs", str(n), "--sjq-config", str(rc)]
    return _run(workdir, args, rc)


def generic(workdir: Path, n: int) -> float:
    rc = _workflow(workdir, n)
    args = [
        "--executor",
        "cluster-generic",
        "--jobs",
        str(n),
        "--seconds-between-status-checks",
        "1",
        "--cluster-generic-submit-cmd",
        SUBMIT,
        "--cluster-generic-status-cmd",
        "sjq state",
        "--cluster-generic-cancel-cmd",
        "sjq-kill",
    ]
    return _run(workdir, args, rc)


def busy_seconds(workdir: Path) -> float:
    """What the workflow's jobs themselves took: the sum of their run times (from the
    daemon's database) over the CPUs. Every job of a remote executor runs Snakemake again
    (to run its rule), seconds each: the wall time above this is the executor's own."""
    with sqlite3.connect(workdir / "state.db") as db:
        (total,) = db.execute("SELECT sum(ended - started) FROM jobs").fetchone()
    return float(total or 0.0) / CPUS


def measure(r: Results, workdir: Path, n: int) -> None:
    """The figure's keys: snakemake.{local,plugin,generic} (wall seconds) and
    snakemake.{plugin,generic}.jobs (the jobs' own run time over the CPUs)."""
    why = available()
    if why is not None:
        for key in ("snakemake.local", "snakemake.plugin", "snakemake.generic"):
            r.set(key, Failure(why))
        return
    r.measure("snakemake.local", lambda: local(workdir / "local", n))
    for name, run in (("plugin", plugin), ("generic", generic)):
        where = workdir / name
        r.measure(f"snakemake.{name}", lambda run=run, where=where: run(where, n))
        if (where / "state.db").exists():
            r.set(f"snakemake.{name}.jobs", busy_seconds(where))
