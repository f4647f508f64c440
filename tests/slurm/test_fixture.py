"""The test cluster itself: it starts, runs a job on the node it claims, and stops clean."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from support import wait_for

from .cluster import NODE_CPUS, NODE_MEM_MB, Cluster, Unavailable, require


def test_node_is_idle_with_the_claimed_resources(slurm: Cluster) -> None:
    out = slurm.command("sinfo", "-h", "-N", "-o", "%N|%T|%c|%m")
    assert out.strip() == f"{slurm.node}|idle|{NODE_CPUS}|{NODE_MEM_MB}"


def test_a_job_runs(slurm: Cluster, tmp_path: Path) -> None:
    assert os.environ["SLURM_CONF"] == str(slurm.conf)  # what a daemon under test inherits
    t0 = time.monotonic()
    out = subprocess.run(
        ["sbatch", "--parsable", "--wrap", "echo hello", "-o", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    ).stdout
    jobid = out.strip()
    wait_for(
        lambda: (
            slurm.command("squeue", "-h", "-t", "all", "-j", jobid, "-o", "%T").strip()
            == "COMPLETED"
        ),
        what=f"job {jobid} to complete",
    )
    print(f"submit to COMPLETED: {time.monotonic() - t0:.2f} s")
    assert (tmp_path / "o").read_text() == "hello\n"


def test_missing_packages_give_a_skip_reason() -> None:
    with pytest.raises(Unavailable, match=r"no-such-daemon not installed .*package-x"):
        require("no-such-daemon", packages="package-x")
