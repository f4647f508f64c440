"""Pilot mode: `sjq` inside a Slurm allocation (``$SLURM_JOB_ID``) with the local back end
takes its limits from the allocation and keeps its socket, database and files per
allocation, so many short jobs run inside one Slurm job at sjq's speed."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from support import reap_leftovers, wait_for

from sjq.config import load_config

from .cluster import Cluster

WAIT = 60.0

PILOT = """#!/bin/sh
set -e
ids=""
for i in $(seq 12); do ids="$ids $(sjq submit -- sh -c 'echo "$SJQ_JOBID on $SLURM_JOB_ID"')"; done
sjq wait $ids
sjq server --stop
echo "done $ids"
"""


def test_config_inside_an_allocation_is_the_allocations() -> None:
    env = {"HOME": "/nonexistent", "SLURM_JOB_ID": "77", "SLURM_CPUS_ON_NODE": "3",
           "SLURM_MEM_PER_CPU": "100", "TMPDIR": "/tmp"}  # fmt: skip
    cfg = load_config(os.devnull, environ=env)
    assert (cfg.maxprocs, cfg.maxmem) == (3, 300 * 2**20)
    assert cfg.default_mem == 300 * 2**20  # the 2G default is capped to the allocation
    here = f"/tmp/sjq-{os.getuid()}-slurm-77"
    assert (cfg.socket, cfg.db, cfg.spool) == (
        f"{here}/sjq.sock",
        f"{here}/sjq.db",
        f"{here}/spool",
    )
    # What the user set wins; the Slurm back end is no pilot.
    mine = load_config(os.devnull, environ=env, overrides={"sjq.maxprocs": "2", "sjq.socket": "/s"})
    assert (mine.maxprocs, mine.socket) == (2, "/s")
    front = load_config(os.devnull, environ=env | {"SJQ_BACKEND": "slurm"})
    assert front.socket == "/nonexistent/.sjq.sock"


def test_a_pilot_runs_many_jobs_inside_one_allocation(slurm: Cluster, tmp_path: Path) -> None:
    script = tmp_path / "pilot.sh"
    script.write_text(PILOT)
    env = {**slurm.env, "SJQ_CONFIG": os.devnull}
    out = tmp_path / "pilot.out"
    sid = subprocess.run(
        ["sbatch", "--parsable", "-c", "2", "--mem=600M", f"--chdir={tmp_path}",
         f"--output={out}", str(script)],
        env=env, capture_output=True, text=True, check=True, timeout=30,
    ).stdout.strip()  # fmt: skip
    here = Path(f"/tmp/sjq-{os.getuid()}-slurm-{sid}")
    try:
        state = wait_for(
            lambda: (
                (s := slurm.command("squeue", "-h", "-t", "all", "-j", sid, "-o", "%T")).strip()
                in ("COMPLETED", "FAILED")
                and s.strip()
            ),
            WAIT,
            "the pilot job to end",
        )
        text = out.read_text()
        assert state == "COMPLETED", text
        last = text.strip().splitlines()[-1]
        assert last.startswith("done ")
        assert len(last.split()) == 13
        log = (here / "sjq.log").read_text()
        assert "(pid" in log
        assert "2 CPUs, 629145600 bytes memory" in log  # the allocation, not the machine
        assert (here / "sjq.db").exists()
        for jobid in last.split()[1:]:
            assert (tmp_path / f"{jobid}.stdout").read_text() == f"{jobid} on {sid}\n"
    finally:
        reap_leftovers(str(here))
        shutil.rmtree(here, ignore_errors=True)
