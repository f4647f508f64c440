"""Job arrays against one SUBMIT per job: how fast 10,000 elements are accepted, and what
each queued job costs the daemon's memory (bytes of RSS per job) either way.

Each side gets a fresh daemon, warmed up with a few submits, so that its one-off costs
(imports, database pages) are not counted as the queue's. The jobs are held: nothing runs.
The CLI row times `sjq submit --array 1-N --hold` as a user types it.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from bench import scripts
from bench.proto import parse_jobid, submit_request
from bench.report import Results
from bench.sjq_runs import BULK_TIMEOUT, cli_command
from bench.sjqd import Daemon, environment

WARMUP = 50  # held SUBMITs before the first RSS reading


def _warm(d: Daemon) -> None:
    with d.connect() as conn:
        request = submit_request(scripts.TRIVIAL, cwd=str(d.jobs), hold=True)
        conn.pipeline(request * WARMUP, WARMUP, timeout=60)


def singles(workdir: Path, n: int) -> tuple[float, float]:
    """``n`` held SUBMITs pipelined on one connection: seconds from first byte to last
    reply, and RSS bytes per job."""
    with Daemon(workdir / "sjq-singles", 2) as d:
        _warm(d)
        rss0 = d.rss_bytes()
        with d.connect(timeout=BULK_TIMEOUT) as conn:
            request = submit_request(scripts.TRIVIAL, cwd=str(d.jobs), hold=True)
            t0 = time.perf_counter()
            replies = conn.pipeline(request * n, n, timeout=BULK_TIMEOUT)
            wall = time.perf_counter() - t0
            for reply in replies:
                parse_jobid(reply)
            if conn.ping().get("U", 0) != n + WARMUP:
                raise RuntimeError(f"expected {n + WARMUP} held jobs, PING says {conn.ping()}")
        return wall, (d.rss_bytes() - rss0) / n


def array(workdir: Path, n: int) -> tuple[float, float]:
    """One held SUBMIT with ``ARRAY 1-n``: seconds to its reply, and RSS bytes per job."""
    with Daemon(workdir / "sjq-array", 2) as d:
        _warm(d)
        rss0 = d.rss_bytes()
        with d.connect(timeout=BULK_TIMEOUT) as conn:
            body = scripts.TRIVIAL
            head = f"SUBMIT\r\nCWD {d.jobs}\r\nMEM 1M\r\nHOLD\r\nARRAY 1-{n}\r\nSRC {len(body)}\r\n"
            t0 = time.perf_counter()
            conn.send(head.encode() + body)
            reply = conn.read_line()
            wall = time.perf_counter() - t0
            first, dash, last = reply.removeprefix("OK ").partition("-")
            if not reply.startswith("OK ") or not dash or int(last) - int(first) + 1 != n:
                raise RuntimeError(f"SUBMIT ARRAY 1-{n} answered {reply!r}")
            if conn.ping().get("U", 0) != n + WARMUP:
                raise RuntimeError(f"expected {n + WARMUP} held jobs, PING says {conn.ping()}")
        return wall, (d.rss_bytes() - rss0) / n


def cli_array(workdir: Path, n: int) -> float:
    """Wall seconds of `sjq submit --array 1-n --hold job.sh` against a running daemon."""
    with Daemon(workdir / "sjq-cli-array", 2) as d:
        env = environment(workdir) | {"SJQ_SOCKET": d.socket}
        job = scripts.write(workdir / "array-job.sh", scripts.TRIVIAL)
        cmd = [*cli_command(), "submit", "--array", f"1-{n}", "--hold", "--mem", "1M", str(job)]
        t0 = time.perf_counter()
        out = subprocess.run(
            cmd, env=env, cwd=d.jobs, capture_output=True, text=True, timeout=120, check=False
        )
        wall = time.perf_counter() - t0
        if out.returncode != 0:
            raise RuntimeError(f"sjq submit --array: exit {out.returncode}: {out.stderr.strip()}")
        return wall


def measure(r: Results, workdir: Path, n: int) -> None:
    """The figure's keys: sjq.array.{accept,rss}, sjq.singles.{accept,rss}, sjq.array.cli."""
    s: dict[str, float] = {}

    def run_singles() -> float:
        s["wall"], s["rss"] = singles(workdir, n)
        return s["wall"]

    a: dict[str, float] = {}

    def run_array() -> float:
        a["wall"], a["rss"] = array(workdir, n)
        return a["wall"]

    r.measure("sjq.singles.accept", run_singles)
    if "rss" in s:
        r.set("sjq.singles.rss", s["rss"])
    r.measure("sjq.array.accept", run_array)
    if "rss" in a:
        r.set("sjq.array.rss", a["rss"])
    r.measure("sjq.array.cli", lambda: cli_array(workdir, n))
