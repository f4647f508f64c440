"""The test cluster itself: it starts, runs a job on the node it claims, and stops clean."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from .cluster import NODE_CPUS, NODE_MEM_MB, Cluster


def test_node_is_idle_with_the_claimed_resources(slurm: Cluster) -> None:
    out = slurm.command("sinfo", "-h", "-N", "-o", "%N|%T|%c|%m")
    assert out.strip() == f"{slurm.node}|idle|{NODE_CPUS}|{NODE_MEM_MB}"


def test_a_job_runs(slurm: Cluster, tmp_path: Path) -> None:
    t0 = time.monotonic()
    out = subprocess.run(
        ["sbatch", "--parsable", "--wrap", "echo hello", "-o", str(tmp_path / "o")],
        env=slurm.env,
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    ).stdout
    jobid = out.strip()
    while (
        slurm.command("squeue", "-h", "-t", "all", "-j", jobid, "-o", "%T").strip() != "COMPLETED"
    ):
        assert time.monotonic() - t0 < 30
        time.sleep(0.05)
    print(f"submit to COMPLETED: {time.monotonic() - t0:.2f} s")
    assert (tmp_path / "o").read_text() == "hello\n"
