"""sjq on Slurm against plain sbatch on the same private single-node Slurm; owns that cluster.

Three figures (``python -m bench --only slurm``):

- throughput: a burst of trivial jobs, from the first submission to the last job's end,
  submitted one ``sbatch`` after another as a shell loop would, and through one sjq daemon
  with ``sjq.backend = slurm`` (pipelined SUBMITs, then WAIT);
- submit-to-start latency: one job at a time on an idle cluster, from just before the
  submission (``sbatch`` or ``SUBMIT``) to the job's first line (a timestamp it writes);
- the Slurm commands the daemon ran for the burst, per 1,000 jobs (its log says at the end);
- a job array of as many trivial elements: one ``sbatch --array`` against one sjq SUBMIT with
  ARRAY (which reaches Slurm as one ``sbatch --array``), submit to last end, and the commands
  sjq ran for it per 1,000 elements;
- a dependency chain: each job submitted with ``--dependency=afterok`` on the one before (Slurm
  keeps the chain) against sjq's DEPENDS (sjq keeps it: each job reaches Slurm once its parent
  has succeeded), seconds per link.

The cluster is the test suite's (tests/slurm/cluster.py): munged, slurmctld and slurmd from
Debian's packages on loopback, a node of 4 CPUs; it needs root and those packages.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.proto import Conn, submit_request
from bench.report import Results
from bench.sjqd import Daemon

__all__ = ["measure"]

POLL = 0.1  # seconds between squeue looks of the plain-sbatch runs (a user's loop)
WAIT_S = 600.0  # seconds a burst may take before the figure fails
_COUNTS = re.compile(r"Slurm commands run: (.*)$", re.M)


def _job(stamps: Path, var: str) -> bytes:
    return f'#!/bin/sh\ndate +%s.%N > "{stamps}/${var}"\n'.encode()


class SlurmDaemon(Daemon):
    """An sjq daemon whose jobs go to the bench's cluster."""

    def command(self) -> list[str]:
        extra = {"sjq.backend": "slurm", "sjq.maxprocs": "auto", "sjq.maxmem": "auto"}
        cmd = super().command()
        for i, part in enumerate(cmd):
            key = part.partition("=")[0]
            if key in extra:
                cmd[i] = f"{key}={extra.pop(key)}"
        for key, value in extra.items():
            cmd += ["--set", f"{key}={value}"]
        return cmd

    def commands(self) -> dict[str, int]:
        """The Slurm commands it ran, from the line its log ends with (after ``stop``)."""
        found = _COUNTS.findall((self.workdir / "sjq.log").read_text(errors="replace"))
        if not found:
            raise RuntimeError("the daemon's log has no 'Slurm commands run' line")
        return {c: int(n) for c, _, n in (x.rpartition(" ") for x in found[-1].split(", "))}


@contextmanager
def cluster(root: Path) -> Iterator[dict[str, str]]:
    """A private cluster; the environment that reaches it."""
    from tests.slurm.cluster import Munge, public_dir, start_cluster

    base = public_dir("sjq-bench-slurm-")
    munge = Munge(base / "munge").start()
    try:
        c = start_cluster(base, "sjqb", munge)
        try:
            old = os.environ.get("SLURM_CONF")
            os.environ["SLURM_CONF"] = str(c.conf)  # for the daemons the bench starts
            try:
                yield c.env
            finally:
                if old is None:
                    os.environ.pop("SLURM_CONF", None)
                else:
                    os.environ["SLURM_CONF"] = old
        finally:
            c.stop()
    finally:
        munge.stop()
        shutil.rmtree(base, ignore_errors=True)


def _sbatch(env: dict[str, str], script: Path, cwd: Path) -> str:
    p = subprocess.run(
        ["sbatch", "--parsable", f"--chdir={cwd}", "--output=/dev/null", str(script)],
        env=env, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return p.stdout.strip().split(";")[0]


def _busy(env: dict[str, str], ids: list[str]) -> bool:
    out = subprocess.run(
        ["squeue", "-h", "-t", "PD,R,CG,CF", "-o", "%i", f"--jobs={','.join(ids)}"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    return bool(out.stdout.strip())


def _started(stamps: Path, name: str, deadline: float) -> float:
    path = stamps / name
    while True:
        try:
            text = path.read_text().strip()
            if text:
                return float(text)
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {name} did not start")
        time.sleep(0.005)  # polling a file the job writes


def sbatch_throughput(env: dict[str, str], work: Path, n: int) -> float:
    stamps = work / "stamps"
    stamps.mkdir(parents=True)
    script = work / "job.sh"
    script.write_bytes(_job(stamps, "SLURM_JOB_ID"))
    t0 = time.monotonic()
    ids = [_sbatch(env, script, work) for _ in range(n)]
    deadline = t0 + WAIT_S
    while _busy(env, ids):
        if time.monotonic() > deadline:
            raise TimeoutError("the sbatch burst did not end")
        time.sleep(POLL)
    return n / (time.monotonic() - t0)


def sbatch_latency(env: dict[str, str], work: Path, n: int) -> list[float]:
    stamps = work / "stamps"
    stamps.mkdir(parents=True)
    script = work / "job.sh"
    script.write_bytes(_job(stamps, "SLURM_JOB_ID"))
    out = []
    for _ in range(n):
        t = time.time()
        jobid = _sbatch(env, script, work)
        out.append(_started(stamps, jobid, time.monotonic() + 60) - t)
        while _busy(env, [jobid]):
            time.sleep(POLL)
    return out


def sjq_throughput(work: Path, n: int, commands: dict[str, int]) -> float:
    stamps = work / "stamps"
    stamps.mkdir(parents=True)
    d = SlurmDaemon(work / "d", maxprocs=1)
    with d:
        req = submit_request(_job(stamps, "SJQ_JOBID"), cwd=str(d.jobs), mem=None)
        with d.connect(timeout=WAIT_S) as conn:
            t0 = time.monotonic()
            replies = conn.pipeline(req * n, n, timeout=WAIT_S)
            ids = [r.split()[1] for r in replies]
            reply = conn.call("WAIT " + ":".join(ids))
            rate = n / (time.monotonic() - t0)
        if not reply.startswith("OK"):
            raise RuntimeError(f"WAIT answered {reply!r}")
    commands.update(d.commands())
    return rate


def sbatch_array(env: dict[str, str], work: Path, n: int) -> float:
    stamps = work / "stamps"
    stamps.mkdir(parents=True)
    script = work / "job.sh"
    script.write_bytes(_job(stamps, "SLURM_ARRAY_TASK_ID"))
    t0 = time.monotonic()
    p = subprocess.run(
        ["sbatch", "--parsable", f"--array=1-{n}", f"--chdir={work}", "--output=/dev/null",
         str(script)],
        env=env, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    ids = [p.stdout.strip().split(";")[0]]
    deadline = t0 + WAIT_S
    while _busy(env, ids):
        if time.monotonic() > deadline:
            raise TimeoutError("the sbatch array did not end")
        time.sleep(POLL)
    return n / (time.monotonic() - t0)


def sjq_array(work: Path, n: int, commands: dict[str, int]) -> float:
    stamps = work / "stamps"
    stamps.mkdir(parents=True)
    d = SlurmDaemon(work / "d", maxprocs=1)
    with d:
        script = _job(stamps, "SJQ_JOBID")
        req = submit_request(script, cwd=str(d.jobs), mem=None)
        req = req.replace(b"SRC ", f"ARRAY 1-{n}\r\nSRC ".encode(), 1)
        with d.connect(timeout=WAIT_S) as conn:
            t0 = time.monotonic()
            reply = _submit_raw(conn, req)
            first, _, last = reply.split()[1].partition("-")
            reply = conn.call("WAIT " + ":".join(map(str, range(int(first), int(last) + 1))))
            rate = n / (time.monotonic() - t0)
        if not reply.startswith("OK"):
            raise RuntimeError(f"WAIT answered {reply!r}")
    commands.update(d.commands())
    return rate


def _submit_raw(conn: Conn, req: bytes) -> str:
    conn.send(req)
    reply = conn.read_line()
    if not reply.startswith("OK"):
        raise RuntimeError(f"SUBMIT answered {reply!r}")
    return reply


def sbatch_chain(env: dict[str, str], work: Path, n: int) -> float:
    script = work / "job.sh"
    script.write_bytes(b"#!/bin/sh\ntrue\n")
    t0 = time.monotonic()
    ids: list[str] = []
    for _ in range(n):
        dep = [f"--dependency=afterok:{ids[-1]}", "--kill-on-invalid-dep=yes"] if ids else []
        p = subprocess.run(
            ["sbatch", "--parsable", *dep, f"--chdir={work}", "--output=/dev/null", str(script)],
            env=env, capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        ids.append(p.stdout.strip().split(";")[0])
    deadline = t0 + WAIT_S
    while _busy(env, ids):
        if time.monotonic() > deadline:
            raise TimeoutError("the sbatch chain did not end")
        time.sleep(POLL)
    return (time.monotonic() - t0) / n


def sjq_chain(work: Path, n: int) -> float:
    d = SlurmDaemon(work / "d", maxprocs=1)
    with d, d.connect(timeout=WAIT_S) as conn:
        t0 = time.monotonic()
        ids: list[int] = []
        for _ in range(n):
            req = submit_request(b"#!/bin/sh\ntrue\n", cwd=str(d.jobs), mem=None, depends=ids[-1:])
            ids.append(conn.submit(req))
        reply = conn.call("WAIT " + ":".join(map(str, ids)))
        per_link = (time.monotonic() - t0) / n
    if not reply.startswith("OK"):
        raise RuntimeError(f"WAIT answered {reply!r}")
    return per_link


def sjq_latency(work: Path, n: int) -> list[float]:
    stamps = work / "stamps"
    stamps.mkdir(parents=True)
    d = SlurmDaemon(work / "d", maxprocs=1)
    out = []
    with d, d.connect(timeout=120) as conn:
        req = submit_request(_job(stamps, "SJQ_JOBID"), cwd=str(d.jobs), mem=None)
        for _ in range(n):
            t = time.time()
            jobid = conn.submit(req)
            out.append(_started(stamps, str(jobid), time.monotonic() + 60) - t)
            conn.call(f"WAIT {jobid}")
    return out


def measure(r: Results, root: Path, jobs: int, probes: int, chain: int = 10) -> None:
    """The Slurm figures into ``r`` (``slurm.*`` and ``sjqslurm.*`` keys)."""
    try:
        ctx = cluster(root)
        env = ctx.__enter__()
    except Exception as e:  # no root, no packages: every figure says why
        for key in ("slurm.tp", "sjqslurm.tp", "slurm.lat", "sjqslurm.lat", "sjqslurm.cmds",
                    "slurm.array.tp", "sjqslurm.array.tp", "sjqslurm.array.cmds",
                    "slurm.chain", "sjqslurm.chain"):  # fmt: skip
            r.measure(key, lambda e=e: _raise(e))  # type: ignore[misc]
        return
    try:
        dirs = iter(range(1000))

        def fresh() -> Path:
            p = root / f"slurm{next(dirs)}"
            p.mkdir()
            return p

        commands: dict[str, int] = {}
        r.measure("slurm.tp", lambda: sbatch_throughput(env, fresh(), jobs))
        r.measure("sjqslurm.tp", lambda: sjq_throughput(fresh(), jobs, commands))
        r.measure("sjqslurm.cmds", lambda: _per_thousand(commands, jobs))
        for name, count in sorted(commands.items()):
            r.set(f"sjqslurm.cmds.{name}", 1000.0 * count / jobs)
        r.measure("slurm.lat", lambda: sbatch_latency(env, fresh(), probes))
        r.measure("sjqslurm.lat", lambda: sjq_latency(fresh(), probes))
        array_cmds: dict[str, int] = {}
        r.measure("slurm.array.tp", lambda: sbatch_array(env, fresh(), jobs))
        r.measure("sjqslurm.array.tp", lambda: sjq_array(fresh(), jobs, array_cmds))
        r.measure("sjqslurm.array.cmds", lambda: _per_thousand(array_cmds, jobs))
        for name, count in sorted(array_cmds.items()):
            r.set(f"sjqslurm.array.cmds.{name}", 1000.0 * count / jobs)
        r.measure("slurm.chain", lambda: sbatch_chain(env, fresh(), chain))
        r.measure("sjqslurm.chain", lambda: sjq_chain(fresh(), chain))
    finally:
        ctx.__exit__(None, None, None)


def _raise(e: Exception) -> float:
    raise e


def _per_thousand(commands: dict[str, int], jobs: int) -> float:
    if not commands:
        raise RuntimeError("no command count: the sjq run failed")
    return 1000.0 * sum(commands.values()) / jobs
