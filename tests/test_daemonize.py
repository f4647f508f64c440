"""Starting the daemon as a detached process, and running jobs as another user (root only)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from support import Daemon, Raw, started_for_another_user, wait_for


def run_server(d: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "sjq.daemon", *args]
    for key, value in d.settings.items():
        cmd += ["--set", f"{key}={value}"]
    env = dict(os.environ, SJQ_CONFIG=str(d.dir / "none.rc"))
    (d.dir / "none.rc").touch()
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)


def test_detach_writes_pidfile_and_log_and_serves(daemon_factory: Callable[..., Daemon]) -> None:
    d = daemon_factory()
    proc = run_server(d, "-d")
    assert proc.returncode == 0, proc.stderr
    pid = int(Path(d.settings["sjq.pidfile"]).read_text())
    assert f"(pid {pid})" in proc.stdout
    assert d.socket in proc.stdout
    try:
        assert os.getsid(pid) != os.getsid(0), "a detached daemon leaves our session"
        jid = d.submit("#!/bin/sh\necho detached\n")
        assert d.wait_state(jid, "SF") == "S"
        assert "serving" in d.log
        assert oct(os.stat(d.socket).st_mode & 0o777) == "0o600"
        again = run_server(d, "-d")
        assert again.returncode == 1
        assert "already running" in again.stderr
    finally:
        stop = run_server(d, "--stop")
        assert stop.returncode == 0, stop.stderr
    wait_for(lambda: not Path(f"/proc/{pid}").exists(), what="the daemon to exit")
    assert not Path(d.settings["sjq.pidfile"]).exists()
    assert not Path(d.socket).exists()


def test_detach_reports_a_failure_to_start(daemon_factory: Callable[..., Daemon]) -> None:
    d = daemon_factory()
    Path(d.settings["sjq.db"]).write_bytes(b"garbage" * 200)
    proc = run_server(d, "-d")
    assert proc.returncode == 1
    assert "is corrupt" in proc.stderr


def test_stop_with_no_daemon(daemon_factory: Callable[..., Daemon]) -> None:
    proc = run_server(daemon_factory(), "--stop")
    assert proc.returncode == 1
    assert "no daemon is running" in proc.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="only a root daemon runs jobs as another user")
def test_root_daemon_runs_job_as_requested_user(daemon_factory: Callable[..., Daemon]) -> None:
    with started_for_another_user(daemon_factory) as (d, out):
        with Raw(d.socket) as c:
            reply = c.submit(
                '#!/bin/sh\nid -u; id -g; echo $TMPDIR; test -w "$TMPDIR" && echo writable\n',
                uid="65534",
                gid="65534",
                cwd=str(out),
            )
        jid = int(reply[3:-2])
        assert d.wait_state(jid, "SFE") == "S", d.info(jid)
        lines = (out / f"{jid}.stdout").read_text().split()
        assert lines[:2] == ["65534", "65534"]
        assert lines[-1] == "writable"
        assert (out / f"{jid}.stdout").stat().st_uid == 65534, "output is opened as the user"
