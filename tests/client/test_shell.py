"""clients/shell/sjq.sh, run by /bin/sh over `nc -U` and over socat, against a real daemon.

Needs the Debian packages netcat-openbsd (`nc -U`) and socat; a transport that is not
installed is skipped, saying which package it needs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from support import Daemon, Gate, Raw

SCRIPT = Path(__file__).parents[2] / "clients" / "shell" / "sjq.sh"
PACKAGE = {"nc": "netcat-openbsd", "socat": "socat"}


def nc_has_unix_sockets() -> bool:
    nc = shutil.which("nc")
    if nc is None:
        return False
    p = subprocess.run([nc, "-h"], capture_output=True, text=True, check=False)
    return "-U" in p.stdout + p.stderr


@pytest.fixture(params=["nc", "socat"])
def sh(
    request: pytest.FixtureRequest, daemon: Daemon
) -> Callable[..., subprocess.CompletedProcess[str]]:
    transport: str = request.param
    if transport == "nc" and not nc_has_unix_sockets():
        pytest.skip("needs `nc -U`: apt-get install netcat-openbsd")
    if transport == "socat" and shutil.which("socat") is None:
        pytest.skip("needs socat: apt-get install socat")
    env = dict(os.environ, SJQ_SOCKET=daemon.socket, SJQ_TRANSPORT=transport)

    def run(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["/bin/sh", str(SCRIPT), *args],
            input=input,
            capture_output=True,
            text=True,
            env=env,
            cwd=daemon.jobs_dir,
            timeout=30,
        )

    return run


def test_submit_status_kill_ping(
    sh: Callable[..., subprocess.CompletedProcess[str]],
    daemon: Daemon,
    gate: Callable[..., Gate],
) -> None:
    g = gate()
    job = daemon.jobs_dir / "job.sh"
    job.write_text('#!/bin/sh\necho "$GREETING from $SJQ_JOBID in $PWD"\n' + g.wait)
    p = sh("submit", "-m", "300M", "-p", "2", "-n", "shell job", "-x", "GREETING,UNSET", "job.sh")
    assert p.returncode == 0, p.stderr
    first = int(p.stdout)
    info = daemon.info(first)
    assert (info["name"], info["mem"], info["procs"]) == ("shell job", 300 * 1024**2, 2)
    assert info["cwd"] == str(daemon.jobs_dir)

    p = sh("submit", "-d", str(first), "-H", "-", input="#!/bin/sh\necho piped\n")
    second = int(p.stdout)
    assert daemon.info(second)["depends"] == [first]
    assert daemon.state(second) == "U"

    daemon.wait_state(first, "R")
    p = sh("status")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].split() == ["ID", "NAME", "STATE", "DEPENDS"]
    assert lines[1].split() == [str(first), "shell", "job", "running", "-"]
    assert lines[2].split() == [str(second), "sjqjob", "held", str(first)]
    assert sh("status", str(second)).stdout.splitlines()[1].split()[0] == str(second)
    assert sh("status", "999").stdout == ""

    assert sh("ping").stdout == "R:1 U:1\n"
    p = sh("kill", str(first), str(second))
    assert (p.returncode, p.stdout, p.stderr) == (0, "", "")
    assert daemon.wait_state(first, "SFAKE") == "K"
    assert daemon.state(second) == "K"


def test_the_environment_is_passed_only_by_name(
    sh: Callable[..., subprocess.CompletedProcess[str]], daemon: Daemon
) -> None:
    script = '#!/bin/sh\nprintf \'%s|%s\' "${A-unset}" "${B-unset}"\n'
    env_run = subprocess.run(
        ["/bin/sh", str(SCRIPT), "submit", "-x", "A", "-"],
        input=script,
        capture_output=True,
        text=True,
        env=dict(os.environ, SJQ_SOCKET=daemon.socket, A="x,y=1", B="2"),
        cwd=daemon.jobs_dir,
        timeout=30,
        check=True,
    )
    jid = int(env_run.stdout)
    assert daemon.wait_state(jid, "SFAKE") == "S"
    assert (daemon.jobs_dir / f"{jid}.stdout").read_text() == "x,y=1|unset"


def test_output_files_are_patterns_as_sjq_submit_sends_them(
    sh: Callable[..., subprocess.CompletedProcess[str]], daemon: Daemon
) -> None:
    p = sh(
        "submit", "-n", "align", "-o", "logs/%x.%j.out", "-e", "logs/%x.%j.err", "-",
        input="#!/bin/sh\necho out; echo err >&2\n",
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    jid = int(p.stdout)
    assert daemon.wait_state(jid, "SFAKE") == "S"
    logs = daemon.jobs_dir / "logs"  # made by the daemon: patterns' directories are
    info = daemon.info(jid)
    assert (info["stdout"], info["stderr"]) == (
        str(logs / f"align.{jid}.out"),
        str(logs / f"align.{jid}.err"),
    )
    assert (logs / f"align.{jid}.out").read_text() == "out\n"
    assert (logs / f"align.{jid}.err").read_text() == "err\n"
    # Without -o/-e no PATTERNS is sent, and the daemon's defaults apply as for any client.
    plain = int(sh("submit", "-", input="#!/bin/sh\necho plain\n").stdout)
    assert daemon.wait_state(plain, "SFAKE") == "S"
    assert (daemon.jobs_dir / f"{plain}.stdout").read_text() == "plain\n"


def queue_paused(daemon: Daemon) -> bool:
    with Raw(daemon.socket) as c:
        c.send(b"QUEUE\n")
        doc = json.loads(c.data())
    assert isinstance(doc["paused"], bool)
    return doc["paused"]


def test_pause_resume_hold_release(
    sh: Callable[..., subprocess.CompletedProcess[str]], daemon: Daemon
) -> None:
    p = sh("pause")
    assert (p.returncode, p.stdout, p.stderr) == (0, "", "")
    assert queue_paused(daemon)
    script = "#!/bin/sh\ntrue\n"
    first = int(sh("submit", "-", input=script).stdout)
    second = int(sh("submit", "-", input=script).stdout)
    assert (p := sh("hold", str(first), str(second))).returncode == 0, p.stderr
    assert (daemon.state(first), daemon.state(second)) == ("U", "U")
    assert (p := sh("release", str(first))).returncode == 0, p.stderr
    assert (daemon.state(first), daemon.state(second)) == ("Q", "U")
    assert (p := sh("resume")).returncode == 0, p.stderr
    assert not queue_paused(daemon)
    assert daemon.wait_state(first, "SFAKE") == "S"
    assert daemon.state(second) == "U"  # still held: resume does not release
    assert sh("release", str(second)).returncode == 0
    assert daemon.wait_state(second, "SFAKE") == "S"


def test_errors(sh: Callable[..., subprocess.CompletedProcess[str]], daemon: Daemon) -> None:
    p = sh("submit", "-m", "lots", "-", input="#!/bin/sh\ntrue\n")
    assert p.returncode == 1
    assert "the daemon said: MEM" in p.stderr
    p = sh("kill", "x")
    assert p.returncode == 2
    assert "not a job id" in p.stderr
    p = sh("submit", "missing.sh")
    assert p.returncode == 2
    assert sh("bogus").returncode == 2
    for args in (("hold",), ("release", "x"), ("pause", "1"), ("resume", "now")):
        p = sh(*args)
        assert p.returncode == 2, args
        assert "see `sjq.sh -h`" in p.stderr, args
    assert sh("-h").stdout.startswith("usage: sjq.sh")
    p = sh("-S", str(daemon.dir / "none.sock"), "ping")
    assert p.returncode == 1
    assert "no sjq daemon is running on" in p.stderr
