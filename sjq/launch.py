"""What a job starts with: its environment (the submitter's, or a minimal login-like one,
plus sjq's own variables) and identity, as the `JobLaunch` a keeper receives. No I/O but
the password database."""

from __future__ import annotations

import os
import pwd
from functools import lru_cache
from typing import Protocol

from sjq.jobs import Job, JobLaunch
from sjq.store import JobSpec

__all__ = ["default_environment", "home_of", "job_launch"]

# Variables every job gets from sjq, whatever its submitter sent.
PROTECTED = (
    *("JOB_ID", "SJQ_JOBID", "SJQ_JOBNAME", "SJQ_PROCS", "SJQ_MEM", "SJQ_SOCKET", "TMPDIR"),
    *("SJQ_ARRAY_ID", "SJQ_ARRAY_INDEX", "SJQ_ENTRY"),  # never inherited from a submitting job
    *("SJQ_CPUS", "SJQ_GPUS"),  # set by the keeper from what the job gets
)


class Host(Protocol):
    """What of the daemon's state a launch depends on."""

    default_env: dict[str, str]
    is_root: bool
    enforce: bool  # jobs are held to their MEM (sjq.enforce is not none)

    @property
    def socket(self) -> str: ...


@lru_cache(maxsize=256)
def home_of(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_dir
    except KeyError:
        return "/"


def default_environment() -> dict[str, str]:
    """What a job gets when its submitter sent no ENV: a minimal, sane login-like set."""
    try:
        pw = pwd.getpwuid(os.getuid())
        home, user, shell = pw.pw_dir, pw.pw_name, pw.pw_shell or "/bin/sh"
    except KeyError:
        home, user, shell = "/", str(os.getuid()), "/bin/sh"
    return {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "HOME": home,
        "USER": user,
        "LOGNAME": user,
        "SHELL": shell,
        "LANG": os.environ.get("LANG", "C.UTF-8"),
    }


def job_launch(job: Job, spec: JobSpec, host: Host) -> JobLaunch:
    """``job`` as a keeper starts it: a root daemon runs a job as its submitter (or the
    UID/GID a root peer asked for), anyone else as itself."""
    env = dict(host.default_env if spec.env is None else spec.env)
    for name in PROTECTED:
        env.pop(name, None)
    env.update(
        JOB_ID=str(job.id),
        SJQ_JOBID=str(job.id),
        SJQ_JOBNAME=job.name,
        SJQ_PROCS=str(job.procs),
        SJQ_MEM=str(job.mem),
        SJQ_SOCKET=host.socket,
    )
    if spec.array_id is not None:
        env.update(SJQ_ARRAY_ID=str(spec.array_id), SJQ_ARRAY_INDEX=str(spec.array_index))
        if spec.entry is not None:
            env["SJQ_ENTRY"] = spec.entry
    as_user = host.is_root and job.uid not in (-1, 0)
    return JobLaunch(
        jobid=job.id,
        script=spec.script,
        cwd=spec.cwd,
        stdout=spec.stdout,
        stderr=spec.stderr,
        env=env,
        time_limit=spec.time_limit,
        uid=job.uid if as_user else None,
        gid=job.gid if as_user else None,
        procs=job.procs,
        mem=job.mem if host.enforce else None,
        makedirs=spec.makedirs,
        cpus=job.cpu_ids,
        gpus=job.gpu_ids,
        ngpus=job.gpus,
    )
