"""`snakemake --executor sjq` end to end: real Snakemake, real daemon (started by the plugin),
and sjq's own record of every job checked against what the rules asked for."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sjq_client import Client, DaemonNotRunning, JobInfo
from support import Gate, wait_for

from sjq.jobs import JobState

from .conftest import PLUGIN_DIR, REPO, SNAKEMAKE_TIMEOUT, Workflow

S, F, K, R = JobState.SUCCESS, JobState.FAIL, JobState.KILLED, JobState.RUNNING

pytestmark = pytest.mark.timeout(SNAKEMAKE_TIMEOUT + 30)

FAN_OUT = """
SAMPLES = ["a", "b", "c"]

rule all:
    input: "total.txt"

rule count:
    output: "counts/{sample}.txt"
    threads: 2
    resources: mem_mb=200, runtime=5
    shell: "echo {wildcards.sample} $SJQ_PROCS > {output}"

rule total:
    input: expand("counts/{sample}.txt", sample=SAMPLES)
    output: "total.txt"
    resources: mem_mib=64
    shell: "cat {input} > {output}"
"""


def test_a_workflow_runs_as_sjq_jobs(workflow: Workflow) -> None:
    workflow.write(FAN_OUT)
    done = workflow.run("--jobs", "4")
    assert done.returncode == 0, done.stderr
    assert (workflow.dir / "total.txt").read_text() == "a 2\nb 2\nc 2\n"
    jobs = workflow.jobs()
    assert sorted(jobs) == ["count[sample=a]", "count[sample=b]", "count[sample=c]", "total"]
    for sample in "abc":
        info = jobs[f"count[sample={sample}]"]
        assert (info.state, info.exit_code) == (S, 0)
        # 200 MB is 190.7 MiB, which Snakemake rounds up to mem_mib=191
        assert (info.procs, info.mem, info.time_limit) == (2, 191 * 1024**2, 300.0)
        assert info.cwd == str(workflow.dir)
        log = workflow.dir / ".snakemake" / "sjq_logs" / "count" / f"sample_{sample}.log"
        assert info.stdout == info.stderr == str(log)
        assert "Finished jobid" in log.read_text()  # the job's own Snakemake wrote there
    total = jobs["total"]
    assert (total.state, total.exit_code, total.procs, total.mem) == (S, 0, 1, 64 * 1024**2)
    assert total.time_limit is None
    assert total.started is not None
    assert all(total.started >= jobs[f"count[sample={s}]"].ended for s in "abc")  # type: ignore[operator]


FAILING = """
rule all:
    input: "total.txt", "after_a.txt"

rule count:
    output: "counts/{sample}.txt"
    log: "logs/count_{sample}.log"
    shell:
        '''
        if [ {wildcards.sample} = b ]; then echo boom >&2; exit 3; fi
        GATE
        echo {wildcards.sample} > {output}
        '''

rule after_a:
    input: "counts/a.txt"
    output: "after_a.txt"
    shell: "cp {input} {output}"

rule total:
    input: "counts/a.txt", "counts/b.txt"
    output: "total.txt"
    shell: "cat {input} > {output}"
"""


def job_states(workflow: Workflow) -> dict[str, JobInfo]:
    try:
        return workflow.jobs()
    except (DaemonNotRunning, FileNotFoundError):
        return {}  # the plugin has not started the daemon yet


@pytest.mark.parametrize("keep_going", [False, True], ids=["stops", "keep-going"])
def test_a_failing_job_is_reported_with_its_reason_and_log(
    workflow: Workflow, gate: Callable[..., Gate], keep_going: bool
) -> None:
    g = gate()
    workflow.write(FAILING.replace("GATE", g.wait.strip()))
    args = ["--jobs", "4", *(["--keep-going"] if keep_going else [])]
    run = workflow.start(*args)
    try:
        # Job a is held at its gate until Snakemake has reported b's failure, so that what
        # follows a is decided after it: with --keep-going it runs, without it never starts.
        run.until(lambda: "Error in rule count" in run.output, "job b's failure was reported")
        g.open()
        code = run.wait()
    finally:
        run.kill()
    out = run.output
    assert code != 0, out
    jobs = workflow.jobs()
    b = jobs["count[sample=b]"]
    assert (b.state, b.exit_code) == (F, 1)  # the job's Snakemake exits 1 for the rule's 3
    assert f"sjq job {b.id} failed" in out
    assert b.stdout in out
    assert "boom" in Path(b.stdout).read_text()
    assert jobs["count[sample=a]"].state is S
    assert "total" not in jobs
    if keep_going:
        assert jobs["after_a"].state is S
        assert (workflow.dir / "after_a.txt").read_text() == "a\n"
    else:
        assert "after_a" not in jobs


SLOW = """
rule all:
    input: expand("slow/{i}.txt", i=range(3))

rule slow:
    output: "slow/{i}.txt"
    threads: 2
    shell: '''GATE; touch {output}'''
"""


def sessions_alive(sids: set[int]) -> set[int]:
    alive = set()
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                sid = os.getsid(int(name))
            except OSError:
                continue
            if sid in sids:
                alive.add(sid)
    return alive


def test_sigint_kills_every_job_of_the_run(workflow: Workflow, gate: Callable[..., Gate]) -> None:
    g = gate()  # never opened: the jobs run until killed
    workflow.write(SLOW.replace("GATE", g.wait.strip()))
    run = workflow.start("--jobs", "3")
    try:
        run.until(
            lambda: (
                len(js := job_states(workflow)) == 3
                and sum(i.state is R and i.pid is not None for i in js.values()) == 2
            ),
            "three jobs were submitted, two of them running (their pids known)",
        )
        sids = {i.pid for i in workflow.jobs().values() if i.pid}
        assert len(sids) == 2
        assert sessions_alive(sids) == sids  # each job leads a session of its own
        run.proc.send_signal(signal.SIGINT)
        interrupted = time.monotonic()
        code = run.wait()
    finally:
        run.kill()
    out = run.output
    assert code != 0, out
    grace = 2.0  # sjq.killgrace of the fixture's daemon
    wait_for(
        lambda: all(i.state is K for i in workflow.jobs().values()),
        grace + 5,
        what="every job of the run killed",
    )
    assert time.monotonic() - interrupted < SNAKEMAKE_TIMEOUT
    ended = [i.ended for i in workflow.jobs().values()]
    assert all(e is not None for e in ended)
    wait_for(lambda: not sessions_alive(sids), grace + 5, what="no process of the jobs left")
    assert "sjq: killed 3 job(s)" in out


class Recorder(socketserver.ThreadingUnixStreamServer):
    """A proxy between the plugin and the daemon that keeps what each connection sent."""

    daemon_threads = True

    def __init__(self, path: str, target: str) -> None:
        self.target = target
        self.sent: list[bytearray] = []  # per connection, in the order they were opened
        self.lock = threading.Lock()
        super().__init__(path, _Pump)

    def lines(self) -> list[list[bytes]]:
        with self.lock:
            return [bytes(b).splitlines() for b in self.sent]


class _Pump(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server = self.server
        assert isinstance(server, Recorder)
        with server.lock:
            sent = bytearray()
            server.sent.append(sent)
        up = socket.socket(socket.AF_UNIX)
        up.connect(server.target)

        def back() -> None:
            while data := up.recv(65536):
                self.request.sendall(data)
            self.request.shutdown(socket.SHUT_WR)

        replies = threading.Thread(target=back, daemon=True)
        replies.start()
        try:
            while data := self.request.recv(65536):
                with server.lock:
                    sent += data
                up.sendall(data)
            up.shutdown(socket.SHUT_WR)
            replies.join(30)
        except OSError:
            pass
        finally:
            up.close()


def info_ids(line: bytes) -> set[int]:
    assert line.startswith(b"INFO "), line
    return {int(i) for i in line[5:].split(b":")}


def test_status_is_one_request_per_poll_over_one_connection(
    workflow: Workflow, gate: Callable[..., Gate], tmp_path: Path
) -> None:
    g = gate()
    workflow.write(SLOW.replace("range(3)", "range(5)").replace("threads: 2", "threads: 1")
                   .replace("GATE", g.wait.strip()))  # fmt: skip
    started = subprocess.run(
        [sys.executable, "-m", "sjq_client", "server", "-d"],
        env=workflow.env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    proxy = str(tmp_path / "proxy.sock")
    recorder = Recorder(proxy, workflow.socket)
    serving = threading.Thread(target=recorder.serve_forever, daemon=True)
    serving.start()
    try:
        run = workflow.start("--jobs", "5", "--sjq-socket", proxy, "--sjq-status-interval", "0.2")
        try:

            def polls_of_all_five() -> int:
                return sum(
                    len(info_ids(line)) == 5
                    for conn in recorder.lines()
                    for line in conn
                    if line.startswith(b"INFO ")
                )

            # Four run (sjq.maxprocs 4) and one waits in sjq: Snakemake has all five active.
            run.until(lambda: polls_of_all_five() >= 3, "three polls of the five jobs")
            g.open()
            code = run.wait()
        finally:
            run.kill()
    finally:
        recorder.shutdown()
        recorder.server_close()
    assert code == 0, run.output
    ids = {i.id for i in workflow.jobs().values()}
    assert len(ids) == 5
    polling = [conn for conn in recorder.lines() if any(x.startswith(b"INFO ") for x in conn)]
    assert len(polling) == 1, "every poll goes over the one connection"
    (polls,) = polling
    assert all(line.startswith(b"INFO ") for line in polls), polls  # it carries nothing else
    # Each poll is one INFO line naming every job still active, never a request per job.
    assert all(info_ids(line) <= ids for line in polls)
    assert sum(len(info_ids(line)) == 5 for line in polls) >= 3
    # Submits go over one connection of their own: two connections in all, not one per job.
    assert len(recorder.lines()) == 2, [c[:1] for c in recorder.lines()]


GPU_RULE = """
rule gpu:
    output: "g.txt"
    resources: gpu=1
    shell: "echo $CUDA_VISIBLE_DEVICES $SJQ_GPUS > {output}"
"""


def test_a_gpu_request_gets_gpus_of_its_own(workflow: Workflow) -> None:
    with open(workflow.rc, "a") as f:
        f.write("sjq.gpus = 0,1\n")  # the devices the daemon hands out (no GPU here)
    workflow.write(GPU_RULE)
    done = workflow.run("--jobs", "1")
    assert done.returncode == 0, done.stderr
    info = workflow.jobs()["gpu"]
    assert (info.state, info.gpus) == (S, ("0",))
    assert (workflow.dir / "g.txt").read_text() == "0 0\n"


def test_a_gpu_request_the_daemon_cannot_meet_fails_with_its_reason(workflow: Workflow) -> None:
    with open(workflow.rc, "a") as f:
        f.write("sjq.gpus = none\n")
    workflow.write(GPU_RULE)
    done = workflow.run("--jobs", "1")
    assert done.returncode != 0
    assert "GPUS 1 is more than the 0 GPUs this daemon manages (sjq.gpus)" in done.stderr


def test_settings_are_command_line_options(workflow: Workflow, tmp_path: Path) -> None:
    done = subprocess.run(
        [*workflow.command("--help")], env=workflow.env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    for option in ("--sjq-socket", "--sjq-config", "--sjq-logdir", "--sjq-status-interval"):
        assert option in done.stdout
    # --sjq-socket and --sjq-config point the run at another daemon.
    other = tmp_path / "other"
    other.mkdir()
    rc = other / "sjqrc"
    rc.write_text(workflow.rc.read_text().replace(str(workflow.rc.parent), str(other)))
    workflow.write(FAN_OUT)
    done = workflow.run(
        "--jobs", "4", "--sjq-config", str(rc), "--sjq-socket", str(other / "x.sock"),
        "--sjq-logdir", "sjqlogs", "--sjq-status-interval", "0.2", "total.txt",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert not os.path.exists(workflow.socket)
    with Client(other / "x.sock", config=rc, autostart=False) as c:
        infos = c.status()
        assert len(infos) == 4
        assert all(i.stdout.startswith(str(workflow.dir / "sjqlogs")) for i in infos)
        c.shutdown()


def copy_sources(dest: Path) -> tuple[Path, Path]:
    """Copies of the sjq distribution and of the plugin's: building them in place would leave
    build/ and *.egg-info in the repository."""
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    sjq = dest / "sjq-src"
    sjq.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, sjq / name)
    shutil.copytree(REPO / "sjq", sjq / "sjq", ignore=ignore)
    shutil.copytree(REPO / "clients" / "sjq_client", sjq / "clients" / "sjq_client", ignore=ignore)
    plugin = dest / "plugin-src"
    shutil.copytree(PLUGIN_DIR, plugin, ignore=ignore)
    return sjq, plugin


# About a minute (a new virtual environment and Snakemake installed into it), and in the
# default run all the same: it proves the plugin installs from scratch.
@pytest.mark.timeout(900)
def test_a_clean_virtual_environment_installs_and_runs_it(
    workflow: Workflow, tmp_path: Path
) -> None:
    sjq_src, plugin_src = copy_sources(tmp_path / "src")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    env = {k: v for k, v in workflow.env.items() if k != "PYTHONPATH"}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(venv)
    install = subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         str(sjq_src), str(plugin_src), "snakemake==9.27.1"],
        env=env, capture_output=True, text=True, timeout=800,
    )  # fmt: skip
    assert install.returncode == 0, install.stdout + install.stderr
    code = "import snakemake_executor_plugin_sjq as p, sjq; print(p.__file__, sjq.__file__)"
    where = subprocess.run(
        [python, "-c", code],
        cwd=workflow.dir, env=env, capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    assert where.count(str(venv)) == 2, where  # the installed copies, not the repository's
    workflow.write(FAN_OUT)
    done = subprocess.run(
        [str(venv / "bin" / "snakemake"), "--executor", "sjq", "--jobs", "4", "--nocolor"],
        cwd=workflow.dir, env=env, capture_output=True, text=True, timeout=SNAKEMAKE_TIMEOUT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (workflow.dir / "total.txt").read_text() == "a 2\nb 2\nc 2\n"
    jobs = workflow.jobs()
    assert {name: i.state for name, i in jobs.items()} == dict.fromkeys(
        ["count[sample=a]", "count[sample=b]", "count[sample=c]", "total"], S
    )
