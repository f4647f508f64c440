"""What the Slurm back end tells sbatch about a job (pure: no Slurm needed): every SUBMIT option
that Slurm has a word for, GPUS as ``--gres=gpu:N``; and what must match for jobs to share one
``sbatch --array``."""

from __future__ import annotations

import os
from pathlib import Path

from sjq.config import load_config
from sjq.jobs import Job, JobLaunch, R
from sjq.slurm.args import sbatch_args
from sjq.slurm.backend import SlurmBackend
from sjq.slurm.commands import REQUIRED, Slurm


def backend(tmp_path: Path) -> SlurmBackend:
    cfg = load_config(
        os.devnull,
        environ={"HOME": str(tmp_path)},
        overrides={"sjq.backend": "slurm", "sjq.slurm.args": "-p short"},
    )
    slurm = Slurm(env={}, paths=dict.fromkeys(REQUIRED, "/bin/false"))  # never run here
    return SlurmBackend(cfg, slurm, "host-1")


def launch(jobid: int, **kw: object) -> JobLaunch:
    base = {"script": b"#!/bin/sh\n", "cwd": "/w", "stdout": f"/w/{jobid}.o",
            "stderr": f"/w/{jobid}.e", "env": {}}  # fmt: skip
    return JobLaunch(jobid, **(base | kw))  # type: ignore[arg-type]


def test_a_jobs_fields_become_sbatch_options(tmp_path: Path) -> None:
    b = backend(tmp_path)
    job = Job(id=5, name="align", state=R, procs=2, mem=3 * 2**20 + 1, gpus=2)
    args = sbatch_args(b.request(job, launch(5, time_limit=61.0)), 9)
    assert args[:2] == ["-p", "short"]
    for want in ("--job-name=align", "--cpus-per-task=2", "--mem=4M", "--gres=gpu:2",
                 "--time=0-00:02:00", "--chdir=/w", "--output=/w/5.o", "--error=/w/5.e",
                 "--comment=sjq:host-1:5"):  # fmt: skip
        assert want in args, (want, args)
    bare = sbatch_args(b.request(Job(id=6, name="x", state=R, procs=0, mem=0), launch(6)), 9)
    assert not [a for a in bare if a.startswith(("--gres", "--mem", "--cpus", "--time"))]


def test_elements_share_an_sbatch_only_when_all_but_their_own_match(tmp_path: Path) -> None:
    b = backend(tmp_path)

    def element(jobid: int, **kw: object) -> tuple[object, ...]:
        fields = {"procs": 1, "mem": 0} | kw
        job = Job(id=jobid, name="a", state=R, array=10, **fields)  # type: ignore[arg-type]
        return b._shape(job, launch(jobid))

    assert element(10) == element(11)  # own id, tag and files apart
    assert element(10) != element(12, mem=2**30)  # RETRYMEM gave it more memory
    assert element(10) != element(13, gpus=1)
