"""The daemon as a process: socket and pid file, a second daemon, stale files, signals,
idle auto-shutdown, connection limits and timeouts, configuration errors at start."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support import (
    NOBODY,
    SH,
    Daemon,
    Gate,
    Raw,
    alive,
    as_nobody,
    exited,
    make_daemon,
    no_socket,
    states,
    submit_bytes,
    wait_dead,
    wait_for,
)

import sjq


def test_socket_is_0600_and_pid_file_names_the_daemon(
    daemon_factory: Callable[..., Daemon],
) -> None:
    d = daemon_factory().start()
    st = os.lstat(d.socket)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600
    pidfile = Path(d.settings["sjq.pidfile"])
    assert d.proc is not None
    assert pidfile.read_text() == f"{d.proc.pid}\n"
    assert d.req("SHUTDOWN") == b"OK\r\n"
    assert exited(d) == 0
    assert not pidfile.exists()
    assert no_socket(d)


def run_to_end(cmd: list[str], rc: Path) -> subprocess.CompletedProcess[str]:
    """Run a daemon command line to its end, ``rc`` its only config file (an empty one is
    made if it is missing: no ~/.sjqrc of the user's may count)."""
    if not rc.exists():
        rc.touch()
    return subprocess.run(
        cmd,
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
        env=dict(os.environ, SJQ_CONFIG=str(rc)),
    )


def second(d: Daemon, tmp_path: Path, **changes: str) -> subprocess.CompletedProcess[str]:
    """Run another daemon with ``d``'s settings but its own files, except ``changes``."""
    other = tmp_path / "other"
    other.mkdir(exist_ok=True)
    settings = dict(
        d.settings,
        **{
            "sjq.db": str(other / "state.db"),
            "sjq.spool": str(other / "spool"),
            "sjq.pidfile": str(other / "sjq.pid"),
            "sjq.logfile": str(other / "sjq.log"),
        },
    )
    settings.update(changes)
    cmd = [sys.executable, "-m", "sjq.daemon", "-f"]
    for key, value in settings.items():
        cmd += ["--set", f"{key}={value}"]
    return run_to_end(cmd, other / "none.rc")


def test_a_second_daemon_on_the_same_socket_refuses_to_start(
    daemon: Daemon, tmp_path: Path
) -> None:
    jid = daemon.submit(SH, hold=True)
    res = second(daemon, tmp_path)
    assert res.returncode != 0
    assert f"an sjq daemon is already running on {daemon.socket}" in res.stderr
    # The first one is untouched: same socket, same pid file, same jobs.
    assert daemon.state(jid) == "U"
    assert daemon.proc is not None
    assert Path(daemon.settings["sjq.pidfile"]).read_text() == f"{daemon.proc.pid}\n"


def test_a_second_daemon_on_the_same_database_refuses_to_start(
    daemon: Daemon, tmp_path: Path
) -> None:
    own_socket = str(tmp_path / "other.sock")
    res = second(
        daemon, tmp_path, **{"sjq.db": daemon.settings["sjq.db"], "sjq.socket": own_socket}
    )
    assert res.returncode != 0
    assert "is in use by another sjq daemon" in res.stderr
    assert not os.path.exists(own_socket)
    assert daemon.req("PING") == b"OK \r\n"


def test_a_stale_socket_and_pid_file_are_cleaned_up(daemon_factory: Callable[..., Daemon]) -> None:
    d = daemon_factory()
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(d.socket)
    stale.close()  # the file stays, nobody listens: what a crashed daemon leaves
    Path(d.settings["sjq.pidfile"]).write_text("999999\n")
    d.start()
    assert d.req("PING") == b"OK \r\n"
    assert d.proc is not None
    assert Path(d.settings["sjq.pidfile"]).read_text() == f"{d.proc.pid}\n"


def test_a_file_that_is_not_a_socket_is_not_removed(
    daemon_factory: Callable[..., Daemon], tmp_path: Path
) -> None:
    d = daemon_factory()
    Path(d.socket).write_text("precious\n")
    d.start(wait=False)
    assert d.proc is not None
    assert d.proc.wait(30) != 0
    d.proc = None
    assert "is not a socket" in (d.dir / "stderr.log").read_text()
    assert Path(d.socket).read_text() == "precious\n"


def test_sigterm_kills_running_keeps_queued_and_exits_0(
    daemon_factory: Callable[..., Daemon], gate: Callable[[str], Gate]
) -> None:
    d = daemon_factory(maxprocs="1").start()
    g = gate("g")
    running = d.submit(SH + g.wait)
    queued = d.submit(SH + "echo later\n")
    d.wait_state(running, "R")
    pid = wait_for(lambda: d.info(running)["pid"])
    assert d.proc is not None
    d.proc.send_signal(signal.SIGTERM)
    assert exited(d) == 0
    wait_dead(pid)
    assert no_socket(d)
    assert not Path(d.settings["sjq.pidfile"]).exists()
    d2 = daemon_factory(maxprocs="1").start()
    assert d2.state(running) == "K"
    d2.wait_state(queued, "S")
    assert (d2.jobs_dir / f"{queued}.stdout").read_text() == "later\n"


def test_idle_auto_shutdown(daemon_factory: Callable[..., Daemon]) -> None:
    d = daemon_factory(autoshutdown="T", waittime="1").start()
    assert d.req("PING") == b"OK \r\n"
    assert exited(d) == 0
    assert no_socket(d)
    assert not Path(d.settings["sjq.pidfile"]).exists()
    assert "sjq.autoshutdown" in d.log


def test_user_held_jobs_do_not_keep_the_daemon_alive(
    daemon_factory: Callable[..., Daemon],
) -> None:
    d = daemon_factory(autoshutdown="T", waittime="1").start()
    held = d.submit(SH + "echo released\n", hold=True)
    assert exited(d) == 0
    d2 = daemon_factory(autoshutdown="F").start()
    assert states(d2) == {held: "U"}
    d2.req(f"RELEASE {held}")
    d2.wait_state(held, "S")


def test_jobs_waiting_only_on_held_jobs_do_not_keep_the_daemon_alive(
    daemon_factory: Callable[..., Daemon],
) -> None:
    d = daemon_factory(autoshutdown="T", waittime="0.5").start()
    held = d.submit(SH, hold=True)
    waiting = d.submit(SH, depends=str(held))
    assert d.state(waiting) == "H"
    assert exited(d, timeout=3) == 0


def test_running_jobs_keep_the_daemon_alive(daemon_factory: Callable[..., Daemon]) -> None:
    d = daemon_factory(autoshutdown="T", waittime="0.3").start()
    jid = d.submit(SH + "sleep 1\necho done\n")
    assert exited(d) == 0  # only once the job is over and the wait has passed again
    d2 = daemon_factory(autoshutdown="F").start()
    assert d2.state(jid) == "S"  # not K: the daemon did not stop under it
    assert (d2.jobs_dir / f"{jid}.stdout").read_text() == "done\n"


def test_a_connection_idle_mid_request_is_closed(daemon_factory: Callable[..., Daemon]) -> None:
    d = daemon_factory(conntimeout="1").start()
    with d.client() as idle, d.client() as stuck:
        assert idle.request("PING") == b"OK \r\n"
        stuck.send(b"SUBMIT\nNAME half\n")  # ... and nothing more
        assert stuck.line() == b"ERROR request incomplete after 1 s; closing\r\n"
        assert wait_for(stuck.closed, what="the stuck connection to close")
        # A connection idle between requests is not in the middle of one: it stays.
        assert idle.request("PING") == b"OK \r\n"
        # Neither is one half-way through a line, once more bytes keep coming in time.
        assert idle.request("STATUS 1") == b"OK 0\r\n"


def test_maxconns_refuses_extra_connections(daemon_factory: Callable[..., Daemon]) -> None:
    d = daemon_factory(maxconns="2").start()
    a, b = d.client(), d.client()
    assert a.request("PING") == b"OK \r\n"
    assert b.request("PING") == b"OK \r\n"
    with Raw(d.socket) as c:
        assert c.line() == b"ERROR too many connections (sjq.maxconns = 2)\r\n"
        assert wait_for(c.closed, what="the refused connection to close")
    a.close()

    def third_is_served() -> bool:
        with Raw(d.socket) as c:
            return c.request("PING") == b"OK \r\n"

    wait_for(third_is_served, what="a free slot after a close")
    assert b.request("PING") == b"OK \r\n"


def test_daemonized_server_writes_its_pid_file_and_log(
    daemon_factory: Callable[..., Daemon],
) -> None:
    d = daemon_factory()
    cmd = [sys.executable, "-m", "sjq.daemon", "-d", *d.command()[4:]]
    res = run_to_end(cmd, d.dir / "none.rc")
    assert res.returncode == 0, res.stderr
    pid = int(Path(d.settings["sjq.pidfile"]).read_text())
    assert f"(pid {pid})" in res.stdout
    assert alive(pid)
    assert d.req("PING") == b"OK \r\n"
    assert f"serving {d.socket} (pid {pid}" in d.log
    assert d.req("SHUTDOWN") == b"OK\r\n"
    wait_dead(pid)
    assert no_socket(d)
    assert not Path(d.settings["sjq.pidfile"]).exists()


@pytest.mark.parametrize(
    ("setting", "words"),
    [
        ("sjq.bogus=1", "sjq.bogus"),
        ("sjq.maxprocs=many", "sjq.maxprocs"),
        ("sjq.maxmem=lots", "sjq.maxmem"),
        ("sjq.autoshutdown=maybe", "sjq.autoshutdown"),
        ("sjq.killgrace=-1", "sjq.killgrace"),
        ("no-equals-sign", "no-equals-sign"),
    ],
)
def test_config_errors_at_start_name_the_key(
    daemon_factory: Callable[..., Daemon], setting: str, words: str
) -> None:
    d = daemon_factory()
    cmd = [*d.command(), "--set", setting]
    res = run_to_end(cmd, d.dir / "none.rc")
    assert res.returncode != 0
    assert words in res.stderr, res.stderr
    assert no_socket(d)


def test_config_file_error_names_file_and_line(daemon_factory: Callable[..., Daemon]) -> None:
    d = daemon_factory()
    rc = d.dir / "bad.rc"
    rc.write_text("# a comment\nsjq.maxprocs = 2\nsjq.colour = blue\n")
    res = run_to_end(d.command(), rc)
    assert res.returncode != 0
    assert f"{rc}:3" in res.stderr, res.stderr
    assert "sjq.colour" in res.stderr
    assert no_socket(d)


SYSTEM_PYTHON = "/usr/bin/python3"  # the test's own interpreter may sit under /root (0700)


@pytest.fixture
def nobody_daemon(public_dir: Path) -> Iterator[Daemon]:
    """A daemon running as user nobody, all its files in a directory of nobody's."""
    if os.geteuid() != 0:
        pytest.skip("needs root to start a daemon as another user")
    home = public_dir / "nobody"
    home.mkdir()
    os.chown(home, NOBODY, NOBODY)
    package_root = str(Path(sjq.__file__).resolve().parent.parent)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "PYTHONPATH": package_root}
    probe = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import sys, sjq.daemon; assert sys.version_info >= (3, 11)"],
        check=False,
        capture_output=True,
        env=env,
        user=NOBODY,
        group=NOBODY,
        extra_groups=[],
        cwd="/",
        timeout=30,
    )
    if probe.returncode != 0:
        pytest.skip(f"no Python 3.11+ that user nobody can run sjq with: {probe.stderr!r}")
    d = make_daemon(public_dir)
    for key in list(d.settings):
        if d.settings[key].startswith(str(d.dir)):
            d.settings[key] = d.settings[key].replace(str(d.dir), str(home), 1)
    (home / "none.rc").touch()
    with open(d.dir / "stderr.log", "ab") as stderr:
        d.proc = subprocess.Popen(
            [SYSTEM_PYTHON, *d.command()[1:]],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=dict(env, SJQ_CONFIG=str(home / "none.rc")),
            user=NOBODY,
            group=NOBODY,
            extra_groups=[],
            cwd=home,
        )
    try:
        wait_for(lambda: os.path.exists(d.socket) or d.proc.poll() is not None, what="socket")
        assert d.proc.poll() is None, (d.dir / "stderr.log").read_text()
        yield d
    finally:
        if d.proc.poll() is None:
            d.proc.terminate()
            d.proc.wait(15)
        d.proc = None


def test_a_daemon_serves_its_own_user_only(nobody_daemon: Daemon) -> None:
    d = nobody_daemon
    # root is another user to this daemon: refused, whatever the socket's mode lets through.
    with Raw(d.socket) as c:
        assert (
            c.line()
            == f"ERROR permission denied: this daemon serves uid {NOBODY} only\r\n".encode()
        )
        assert wait_for(c.closed, what="the refused connection to close")
    home = Path(d.settings["sjq.db"]).parent  # nobody's
    script = b"#!/bin/sh\nid -u\n"
    replies = as_nobody(
        d.socket,
        b"PING\n"
        + submit_bytes(script, uid="0")
        + submit_bytes(script, gid="0")
        + submit_bytes(script, cwd=str(home), stdout="out.txt")
        + b"WAIT 1\n",
        5,
    )
    assert replies == [
        b"OK \r\n",
        b"ERROR UID 0: only root may run jobs as another user or group\r\n",
        b"ERROR GID 0: only root may run jobs as another user or group\r\n",
        b"OK 1\r\n",
        b"OK 1:S\r\n",
    ]
    assert (home / "out.txt").read_text() == f"{NOBODY}\n"
