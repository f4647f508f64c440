"""sjq.backend = slurm against a real single-node Slurm: a real daemon hands its jobs to
sbatch and follows them with squeue; KILL, HOLD and RELEASE reach Slurm; refusals end a job
in E with Slurm's words; a daemon without sbatch refuses to start."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from support import (
    Daemon,
    Gate,
    Raw,
    as_nobody,
    make_daemon,
    reap_leftovers,
    submit_bytes,
    wait_for,
)

from sjq.slurm.args import parse_tag

from .cluster import NODE_CPUS, Cluster, public_dir

WAIT = 30.0  # seconds for a job to reach a state; a trivial job needs about 1-2 s here


def slurm_daemon(make: Callable[..., Daemon], **settings: str) -> Daemon:
    """A daemon whose jobs go to the test cluster (``$SLURM_CONF``, set by the fixture)."""
    base = {"backend": "slurm", "slurm_poll": "0.2", "slurm_poll_max": "2"}
    base |= {"maxprocs": "auto", "maxmem": "auto"}  # no limit of sjq's own under Slurm
    return make(**(base | settings))


def daemon_id(d: Daemon) -> str:
    """The id in the tags of ``d``'s jobs (read from its database, which it keeps open)."""
    db = sqlite3.connect(f"file:{d.settings['sjq.db']}?mode=ro", uri=True)
    try:
        return str(db.execute("SELECT value FROM meta WHERE name = 'daemon_id'").fetchone()[0])
    finally:
        db.close()


def tagged(cluster: Cluster, d: Daemon) -> dict[str, list[str]]:
    """Every Slurm job (slurmctld still knows) that ``d`` submitted: tag -> Slurm ids."""
    ident = daemon_id(d)
    out = cluster.command("squeue", "-h", "-t", "all", "-O", "JobID:|,Comment:\x1e")
    found: dict[str, list[str]] = {}
    for rec in out.split("\x1e"):
        jobid, _, comment = rec.strip().partition("|")
        tag = parse_tag(comment.strip())
        if tag is not None and tag[0] == ident:
            found.setdefault(comment.strip(), []).append(jobid.strip())
    return found


def test_jobs_run_in_slurm_and_end_in_sjq_states(
    slurm: Cluster, daemon_factory: Callable[..., Daemon]
) -> None:
    d = slurm_daemon(daemon_factory).start()
    ok = d.submit("#!/bin/sh\necho hello from $SLURM_JOB_ID\n", name="ok", procs=2, mem="200M")
    bad = d.submit("#!/bin/sh\nexit 3\n", name="bad")
    assert d.wait_state(ok, "S", WAIT) == "S"
    assert d.wait_state(bad, "F", WAIT) == "F"
    info = d.info(ok)
    assert info["backend_id"]
    assert info["backend_id"].isdigit()
    assert info["node"] == slurm.node
    assert info["measured_by"] == "slurm"
    assert info["exit_code"] == 0
    assert info["started"]
    assert info["ended"]
    out = (d.jobs_dir / f"{ok}.stdout").read_text()
    assert out == f"hello from {info['backend_id']}\n"
    binfo = d.info(bad)
    assert (binfo["exit_code"], binfo["reason"]) == (3, "exit status 3")
    # Slurm got what the job asked for, and the tag that finds it again.
    shown = slurm.command("scontrol", "show", "job", info["backend_id"])
    assert "NumCPUs=2" in shown, shown
    assert "mem=200M" in shown, shown
    assert "JobName=ok" in shown
    assert len(tagged(slurm, d)) == 2


def test_a_job_waiting_in_slurm_shows_q_with_slurms_reason_then_runs(
    slurm: Cluster, daemon_factory: Callable[..., Daemon], gate: Callable[[str], Gate]
) -> None:
    d = slurm_daemon(daemon_factory).start()
    g = gate("g")
    big = d.submit(f"#!/bin/sh\n{g.wait}", procs=NODE_CPUS)
    d.wait_state(big, "R", WAIT)
    second = d.submit("#!/bin/sh\ntrue\n")
    wait_for(lambda: d.info(second)["backend_id"], WAIT, "the second job in Slurm")
    assert d.state(second) == "Q"
    wait_for(lambda: d.info(second)["reason"] == "Slurm: Resources", WAIT, "Slurm's reason")
    assert d.info(second)["started"] is None
    g.open()
    assert d.wait_state(big, "S", WAIT) == "S"
    assert d.wait_state(second, "S", WAIT) == "S"
    assert d.info(second)["reason"] == ""


def test_kill_cancels_in_slurm_running_or_waiting(
    slurm: Cluster, daemon_factory: Callable[..., Daemon], gate: Callable[[str], Gate]
) -> None:
    d = slurm_daemon(daemon_factory).start()
    g = gate("never")
    running = d.submit(f"#!/bin/sh\n{g.wait}", procs=NODE_CPUS)
    d.wait_state(running, "R", WAIT)
    waiting = d.submit("#!/bin/sh\ntrue\n")
    wait_for(lambda: d.info(waiting)["backend_id"], WAIT, "the waiting job in Slurm")
    assert d.req(f"KILL {waiting}") == b"OK\r\n"
    assert d.req(f"KILL {running}") == b"OK\r\n"
    assert d.wait_state(waiting, "K", WAIT) == "K"
    assert d.wait_state(running, "K", WAIT) == "K"
    assert d.info(running)["reason"] == "killed by request"
    for jobid in (running, waiting):
        sid = d.info(jobid)["backend_id"]
        state = slurm.command("squeue", "-h", "-t", "all", "-j", sid, "-o", "%T").strip()
        assert state == "CANCELLED"


def test_hold_and_release_reach_slurm(
    slurm: Cluster, daemon_factory: Callable[..., Daemon], gate: Callable[[str], Gate]
) -> None:
    d = slurm_daemon(daemon_factory).start()
    g = gate("g")
    big = d.submit(f"#!/bin/sh\n{g.wait}", procs=NODE_CPUS)
    d.wait_state(big, "R", WAIT)
    job = d.submit("#!/bin/sh\ntrue\n")
    sid = wait_for(lambda: d.info(job)["backend_id"], WAIT, "the job in Slurm")
    assert d.req(f"HOLD {job}") == b"OK\r\n"
    assert d.wait_state(job, "U", WAIT) == "U"
    reason = slurm.command("squeue", "-h", "-j", sid, "-o", "%r").strip()
    assert reason == "JobHeldUser"
    g.open()
    d.wait_state(big, "S", WAIT)
    assert d.state(job) == "U"  # held in Slurm: the free node does not start it
    assert d.req(f"RELEASE {job}") == b"OK\r\n"
    assert d.wait_state(job, "S", WAIT) == "S"


def test_a_refused_submission_ends_in_e_with_slurms_message(
    slurm: Cluster, daemon_factory: Callable[..., Daemon]
) -> None:
    d = slurm_daemon(daemon_factory).start()
    huge = d.submit("#!/bin/sh\ntrue\n", mem="60G")  # the node has 4 GiB
    assert d.wait_state(huge, "E", WAIT) == "E"
    reason = d.info(huge)["reason"]
    assert reason.startswith("Slurm refused the job: "), reason
    assert "Requested node configuration is not available" in reason, reason
    dos = d.submit(b"#!/bin/sh\ntrue\r\n")
    assert d.wait_state(dos, "E", WAIT) == "E"
    assert "DOS line breaks" in d.info(dos)["reason"]


def test_sjq_slurm_args_reach_sbatch(slurm: Cluster, daemon_factory: Callable[..., Daemon]) -> None:
    d = slurm_daemon(daemon_factory, slurm_args="-p nosuch").start()
    job = d.submit("#!/bin/sh\ntrue\n")
    assert d.wait_state(job, "E", WAIT) == "E"
    assert "Invalid partition name specified" in d.info(job)["reason"]


def test_the_job_gets_exactly_its_environment(
    slurm: Cluster, daemon_factory: Callable[..., Daemon]
) -> None:
    d = slurm_daemon(daemon_factory).start()
    job = d.submit(
        "#!/bin/sh\nenv > env.txt\n", env=["PATH=/usr/bin:/bin", "ODD=a,b\\nc", "HOME=/nowhere"]
    )
    assert d.wait_state(job, "S", WAIT) == "S"
    env = dict(
        line.split("=", 1)
        for line in (d.jobs_dir / "env.txt").read_text().splitlines()
        if "=" in line
    )
    assert env["ODD"] == "a,b\\nc"
    assert env["SJQ_JOBID"] == str(job)
    assert "SJQ_SOCKET" not in env  # a compute node cannot reach the front end's socket
    assert env["SLURM_JOB_ID"] == d.info(job)["backend_id"]


def test_without_sbatch_the_daemon_refuses_to_start(tmp_path: Path) -> None:
    env = dict(os.environ, PATH=str(tmp_path), SJQ_CONFIG=os.devnull)
    p = subprocess.run(
        [sys.executable, "-m", "sjq.daemon", "-f", "--set", "sjq.backend=slurm",
         "--set", f"sjq.socket={tmp_path / 's.sock'}", "--set", f"sjq.db={tmp_path / 'db'}",
         "--set", "sjq.logfile=none"],
        env=env, capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert p.returncode == 1
    assert "sjq.backend = slurm: no sbatch, squeue, scontrol, scancel on PATH" in p.stderr
    assert not (tmp_path / "s.sock").exists()


def test_sbatch_lines_apply_where_the_job_sets_nothing(
    slurm: Cluster, daemon_factory: Callable[..., Daemon]
) -> None:
    d = slurm_daemon(daemon_factory).start()
    script = "#!/bin/sh\n#SBATCH -c 3\n#SBATCH --mem=300M\ntrue\n"
    plain = d.submit(script)
    mine = d.submit(script, procs=1, mem="100M")  # the job's own fields win
    for jobid, cpus, mem in ((plain, 3, "300M"), (mine, 1, "100M")):
        assert d.wait_state(jobid, "S", WAIT) == "S"
        shown = slurm.command("scontrol", "show", "job", d.info(jobid)["backend_id"])
        assert f"NumCPUs={cpus}" in shown, shown
        assert f"mem={mem}" in shown, shown
    assert (d.info(plain)["procs"], d.info(plain)["mem"]) == (0, 0)  # not given: Slurm's


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
def test_a_root_front_end_refuses_other_users_jobs(slurm: Cluster) -> None:
    """sbatch from a root daemon would run everybody's jobs as root."""
    base = public_dir("sjq-slurm-root-")
    try:
        d = make_daemon(base, backend="slurm").start()
        try:
            os.chmod(d.socket, 0o666)
            os.chmod(d.dir, 0o755)
            reply = as_nobody(d.socket, submit_bytes(b"#!/bin/sh\ntrue\n", cwd="/tmp"), 1)
            assert reply == [
                b"ERROR under sjq.backend = slurm jobs go to Slurm as the daemon's user only\r\n"
            ]
        finally:
            d.stop()
    finally:
        reap_leftovers(str(base))
        shutil.rmtree(base, ignore_errors=True)


def test_a_working_directory_gone_by_the_time_the_job_runs_is_an_e(
    slurm: Cluster, daemon_factory: Callable[..., Daemon], gate: Callable[[str], Gate]
) -> None:
    d = slurm_daemon(daemon_factory).start()
    g = gate("g")
    work = d.jobs_dir / "work"
    work.mkdir()
    first = d.submit(f"#!/bin/sh\n{g.wait}")
    later = d.submit("#!/bin/sh\ntrue\n", depends=str(first), cwd=str(work))
    d.wait_state(first, "R", WAIT)
    work.rmdir()
    g.open()
    assert d.wait_state(later, "E", WAIT) == "E"
    assert d.info(later)["reason"].startswith("Slurm could not start the job"), d.info(later)


def test_gpus_reach_slurm_as_gres_and_its_refusal_ends_the_job(
    slurm: Cluster, daemon_factory: Callable[..., Daemon]
) -> None:
    # The test node has no GPU (none can be configured here): Slurm refuses --gres=gpu:N as
    # any cluster without GPUs does, which shows that the request reached it. An array's
    # elements are refused together (one sbatch).
    d = slurm_daemon(daemon_factory).start()
    job = d.submit("#!/bin/sh\ntrue\n", gpus=2)
    with Raw(d.socket) as c:
        reply = c.submit("#!/bin/sh\ntrue\n", gpus=1, array="1-3", cwd=str(d.jobs_dir))
    first, _, last = reply[3:-2].decode().partition("-")
    for jobid in [job, *range(int(first), int(last) + 1)]:
        assert d.wait_state(jobid, "SFAKE", WAIT) == "E"
        reason = d.info(jobid)["reason"]
        assert reason.startswith("Slurm refused the job: "), reason
        assert "Invalid generic resource (gres) specification" in reason
        assert not d.info(jobid)["gpus"]  # Slurm, not sjq, would pick the devices


HOG = '#!/bin/sh\nexec python3 -c "import time; x = bytearray(300 * 2**20); time.sleep(3)"\n'


def test_a_job_over_its_memory_ends_out_of_memory(
    slurm_cgroup: Cluster, daemon_factory: Callable[..., Daemon]
) -> None:
    d = slurm_daemon(daemon_factory).start()
    job = d.submit(HOG, mem="100M")
    assert d.wait_state(job, "SFAKE", WAIT) == "F"
    assert d.info(job)["reason"] == "out of memory"
