"""The README's Snakemake cluster-generic lines, run as written with the real Snakemake: a small
workflow through `sjq submit`, `sjq state` and `sjq-kill`, checked against sjq's own record.

`sjq` and `sjq-kill` are found on PATH, as a user's shell finds them: launchers made here from
pyproject's [project.scripts], exactly what pip installs, so the test needs no install of its
own. The daemon is started by the first submit and stops after 0.3 s idle, so the workflow's
polls also start it again now and then, as a slow workflow's would.
"""

from __future__ import annotations

import re
import shlex
import signal
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sjq_client import Client, JobInfo
from support import Gate, client_env, stop_daemon, wait_for, write_rc

REPO = Path(__file__).resolve().parents[2]
SNAKEMAKE_TIMEOUT = 50.0
MiB = 1024**2

SNAKEFILE = """\
SAMPLES = ["a", "b"]

rule all:
    input: "out/all.txt"

rule count:
    output: "out/{s}.txt"
    params: command=config.get("command", ":")
    threads: 2
    resources: mem_mb=300
    shell: "{params.command} && echo {wildcards.s} > {output}"

rule merge:
    input: expand("out/{s}.txt", s=SAMPLES)
    output: "out/all.txt"
    shell: "cat {input} > {output}"
"""


def readme_block(start: str, language: str) -> str:
    """The README's fenced block of ``language`` whose text starts with ``start``."""
    text = (REPO / "README.md").read_text()
    found = re.search(rf"^```{language}\n({re.escape(start)}.*?)^```$", text, re.M | re.S)
    assert found, f"no {language} block starting with {start!r} in README.md"
    return found[1]


def command_line() -> list[str]:
    # As the shell reads it: a backslash-newline joins the lines.
    return shlex.split(
        readme_block("snakemake --executor cluster-generic", "sh").replace("\\\n", " ")
    )


@dataclass
class Workflow:
    dir: Path
    env: dict[str, str]
    rc: Path
    socket: str

    def start(self, *extra: str) -> subprocess.Popen[str]:
        args = [*command_line()[1:], "--seconds-between-status-checks", "1", *extra]
        return subprocess.Popen(
            [sys.executable, "-m", "snakemake", *args],
            cwd=self.dir,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def run(self, *extra: str) -> tuple[int, str]:
        p = self.start(*extra)
        out, _ = p.communicate(timeout=SNAKEMAKE_TIMEOUT)
        return p.returncode, out

    def log(self) -> str:
        """What Snakemake has logged so far."""
        logs = sorted((self.dir / ".snakemake" / "log").glob("*.snakemake.log"))
        return logs[-1].read_text() if logs else ""

    def jobs(self) -> list[JobInfo]:
        """sjq's record of every job (the database is this test's own: ids from 1)."""
        with Client(config=self.rc) as client:
            return client.status(range(1, 20))


@pytest.fixture
def workflow(tmp_path: Path) -> Iterator[Workflow]:
    base = tmp_path / "sjq"
    base.mkdir()
    rc = write_rc(base, **{"sjq.waittime": "0.3", "sjq.maxmem": "8G"})
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert {"sjq", "sjq-kill"} <= set(scripts)
    for name, target in scripts.items():
        module, function = target.split(":")
        launcher = bin_dir / name
        launcher.write_text(
            f"#!{sys.executable}\nimport sys\nfrom {module} import {function}\n"
            f"sys.exit({function}())\n"
        )
        launcher.chmod(0o755)
    env = client_env(tmp_path, SJQ_CONFIG=str(rc))
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    wf = tmp_path / "wf"
    wf.mkdir()
    (wf / "Snakefile").write_text(SNAKEFILE)
    w = Workflow(wf, env, rc, str(base / "s.sock"))
    try:
        yield w
    finally:
        stop_daemon(w.socket, env)


def by_name(jobs: list[JobInfo]) -> dict[str, list[JobInfo]]:
    out: dict[str, list[JobInfo]] = {}
    for job in jobs:
        out.setdefault(job.name, []).append(job)
    return out


def test_a_workflow_runs_through_the_readme_lines(workflow: Workflow) -> None:
    code, out = workflow.run()
    assert code == 0, out
    assert (workflow.dir / "out" / "all.txt").read_text() == "a\nb\n"
    jobs = by_name(workflow.jobs())
    assert sorted(jobs) == ["smk.count", "smk.merge"]
    counts, (merge,) = jobs["smk.count"], jobs["smk.merge"]
    assert len(counts) == 2
    for job in [*counts, merge]:
        assert job.state.value == "S", job
        logs = workflow.dir / "logs"
        assert job.stdout == str(logs / f"{job.name}.{job.id}.out")
        assert job.stderr == str(logs / f"{job.name}.{job.id}.err")
        assert Path(job.stderr).exists()
    assert [(j.procs, j.mem) for j in counts] == [(2, 300 * MiB)] * 2
    assert (merge.procs, merge.mem) == (1, 2048 * MiB)  # --default-resources mem_mb=2048
    assert sorted(merge.depends) == sorted(j.id for j in counts)  # --after '{dependencies}'


def test_a_failing_rule_through_the_readme_profile(workflow: Workflow, tmp_path: Path) -> None:
    profile = tmp_path / "profile"
    profile.mkdir()
    (profile / "config.yaml").write_text(readme_block("executor: cluster-generic", "yaml"))
    p = subprocess.run(
        [
            sys.executable, "-m", "snakemake", "--profile", str(profile),
            "--seconds-between-status-checks", "1", "--config", "command=exit 3",
        ],
        cwd=workflow.dir, env=workflow.env, capture_output=True, text=True,
        timeout=SNAKEMAKE_TIMEOUT,
    )  # fmt: skip
    out = p.stdout + p.stderr
    assert p.returncode != 0, out
    assert "Error in rule count" in out
    jobs = by_name(workflow.jobs())
    assert sorted(jobs) == ["smk.count"]  # merge was never submitted
    for job in jobs["smk.count"]:
        # The job is Snakemake's own job script, which exits 1 whatever the rule's status.
        assert (job.state.value, job.exit_code, job.reason) == ("F", 1, "exit status 1")
        assert "non-zero exit status 3" in Path(job.stderr).read_text()


def test_ctrl_c_kills_the_running_jobs_through_sjq_kill(workflow: Workflow, tmp_path: Path) -> None:
    (workflow.dir / "wait.sh").write_text(Gate(tmp_path / "never.gate").wait)
    p = workflow.start("--config", "command=sh wait.sh")
    try:
        # Ctrl-C once Snakemake has taken note of both submissions (it forgets a job whose
        # submit command it is still running), and the first job runs.
        wait_for(
            lambda: (
                workflow.log().count("with external jobid") == 2
                and any(j.state.value == "R" for j in workflow.jobs())
            ),
            30,
            what="the workflow's jobs to be submitted and one to run",
        )
        p.send_signal(signal.SIGINT)  # Ctrl-C
        out, _ = p.communicate(timeout=SNAKEMAKE_TIMEOUT)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode != 0, out
    jobs = workflow.jobs()
    # Both count jobs had been submitted (one running, one queued: each takes both CPUs).
    assert [(j.name, j.state.value) for j in jobs] == [("smk.count", "K")] * 2, out
