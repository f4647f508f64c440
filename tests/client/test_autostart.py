"""Auto-start: the first submit starts a daemon (exactly one, however many race), reads never do."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from sjq_client import AsyncClient, Client, DaemonStartFailed
from support import (
    CLI_TIMEOUT,
    Home,
    client_env,
    stop_daemon,
    wait_for,
    wait_stopped_by_itself,
    write_rc,
)

from sjq.protocol import JobState


def test_submit_starts_a_daemon_with_auto_shutdown(home: Home) -> None:
    cli = home.cli()
    r = cli("submit", "--wait", "--", "true")
    assert r.code == 0, r.err
    assert r.out == "1\n"
    assert r.err.startswith("sjq: started a daemon (pid ")
    pid = int(r.err.split("(pid ")[1].split(")")[0])
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert cmdline[1:6] == [b"-m", b"sjq.daemon", b"-d", b"--set", b"sjq.autoshutdown=T"]
    assert home.started() == 1
    r = cli("submit", "--", "true")  # the next submit uses it
    assert (r.code, r.out, r.err) == (0, "2\n", "")
    assert home.started() == 1


def test_reads_of_named_jobs_start_the_daemon_that_went_idle(tmp_path: Path) -> None:
    """A workflow that polls less often than sjq.waittime finds no daemon: its jobs' records
    are in the database all the same, so the commands about named jobs start one to answer."""
    base = tmp_path / "idle"
    (base / "jobs").mkdir(parents=True)
    rc = write_rc(base, **{"sjq.waittime": "0.2"})
    h = Home(base, rc, client_env(tmp_path, SJQ_CONFIG=str(rc)))
    cli = h.cli()
    try:
        done = cli.submit("--", "true")
        held = cli.submit("--hold", "--", "true")
        failed = cli.submit("--", "false")
        commands = [
            (["state", str(done)], "success\n"),
            (["status", str(done)], f"{done}  true "),
            (["info", str(failed)], "exit status 1"),
            (["wait", str(done)], ""),
            (["status", "--json", str(held)], '"state": "U"'),
            (["release", str(held)], ""),
            (["wait", str(held), str(done)], ""),
            (["kill", str(done)], ""),
            (["hold", str(done)], ""),
        ]
        for args, shown in commands:
            # Each time, the daemon has shut itself down: nothing runs or waits.
            wait_stopped_by_itself(base / "sjq.pid")
            before = h.started()
            r = cli(*args)
            assert r.code == 0, (args, r)
            assert shown in r.out, (args, r.out)
            assert r.err == "", (args, r.err)
            assert h.started() == before + 1, args
        r = cli("wait", str(failed))
        assert (r.code, r.err) == (1, f"sjq: job {failed} failed: exit status 1\n")
        wait_stopped_by_itself(base / "sjq.pid")
        r = cli("info", "99")
        assert (r.code, r.out) == (1, "")
        assert "unknown job 99" in r.err
    finally:
        stop_daemon(h.socket, h.env)


def test_status_and_ping_never_start_a_daemon(home: Home) -> None:
    cli = home.cli()
    for command in ("status", "ping"):
        r = cli(command)
        assert r.code == 1
        assert f"no sjq daemon is running on {home.socket}" in r.err
    assert not os.path.exists(home.socket)
    assert home.started() == 0


def test_twenty_concurrent_first_submits_start_exactly_one_daemon(home: Home) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "sjq_client", "submit", "--", "true"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=home.env,
            cwd=home.dir / "jobs",
        )
        for _ in range(20)
    ]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        results.append((p.returncode, out.decode(), err.decode()))
    assert [code for code, _, _ in results] == [0] * 20, results
    ids = sorted(int(out) for _, out, _ in results)
    assert ids == list(range(1, 21))
    starters = [err for _, _, err in results if "started a daemon" in err]
    assert len(starters) == 1, results
    assert home.started() == 1


def test_a_stale_socket_file_does_not_stop_a_start(home: Home) -> None:
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(home.socket)  # bound, never listening, then closed: what a crash leaves
    dead.close()
    r = home.cli()("submit", "--", "true")
    assert r.code == 0, r.err
    assert "started a daemon" in r.err


def test_a_failed_start_says_why_and_shows_the_log(tmp_path: Path) -> None:
    base = tmp_path / "broken"
    (base / "jobs").mkdir(parents=True)
    (base / "not-a-dir").write_text("")
    rc = write_rc(base, **{"sjq.db": str(base / "not-a-dir" / "state.db")})
    env = dict(os.environ, HOME=str(tmp_path), SJQ_CONFIG=str(rc))
    env.pop("SJQ_SOCKET", None)
    p = subprocess.run(
        [sys.executable, "-m", "sjq_client", "submit", "--", "true"],
        capture_output=True,
        text=True,
        env=env,
        cwd=base / "jobs",
        timeout=CLI_TIMEOUT,
    )
    assert p.returncode == 1
    assert p.stdout == ""
    assert f"could not start an sjq daemon on {base / 's.sock'}" in p.stderr
    assert f"last lines of {base / 'sjq.log'}:" in p.stderr
    assert "not-a-dir" in p.stderr
    assert not os.path.exists(base / "s.sock")


def test_the_client_starts_a_daemon_too(home: Home, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(home.dir / "jobs")
    with Client(config=home.rc) as c:
        assert c.socket == home.socket
        job = c.submit(command=["true"])
        assert c.started_pid is not None
        assert job.wait(10).value == "S"
    with Client(config=home.rc) as c:
        c.submit(command=["true"])
        assert c.started_pid is None  # one was running
    assert home.started() == 1


def test_the_client_answers_for_the_jobs_of_a_daemon_that_went_idle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = tmp_path / "idle"
    (base / "jobs").mkdir(parents=True)
    monkeypatch.chdir(base / "jobs")
    rc = write_rc(base, **{"sjq.waittime": "0.2"})
    sock = str(base / "s.sock")
    try:
        with Client(config=rc) as c:
            job = c.submit(command=["true"])
            assert job.wait(10).value == "S"
            wait_stopped_by_itself(base / "sjq.pid", c.started_pid)
            before = c.started_pid
            assert job.info().exit_code == 0
            assert c.started_pid not in (None, before)
            wait_stopped_by_itself(base / "sjq.pid", c.started_pid)
            before = c.started_pid
            assert c.outcomes(job) == {job.id: "success"}
            assert c.started_pid != before
    finally:
        stop_daemon(sock, client_env(tmp_path, SJQ_CONFIG=str(rc)))


def test_the_client_starts_it_on_the_socket_it_was_given(
    home: Home, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(home.dir / "jobs")
    other = str(tmp_path / "other.sock")
    try:
        with Client(other, config=home.rc) as c:
            c.submit(command=["true"]).wait(10)
            assert os.path.exists(other)
            assert not os.path.exists(home.socket)
    finally:
        stop_daemon(other, home.env)


def test_a_failed_start_from_the_client_raises(tmp_path: Path) -> None:
    base = tmp_path / "broken"
    base.mkdir()
    (base / "file").write_text("")
    rc = write_rc(base, **{"sjq.spool": str(base / "file" / "spool")})
    with pytest.raises(DaemonStartFailed) as caught:
        Client(config=rc).submit(command=["true"])
    assert caught.value.reason
    assert str(base / "sjq.log") in str(caught.value)


def _job_ignoring_sigterm(home: Home) -> None:
    """A daemon running a job that ignores SIGTERM: a SHUTDOWN waits its kill grace for it."""
    ready = home.dir / "jobs" / "ignoring"
    home.cli().submit("--", "sh", "-c", f"trap '' TERM; touch {ready}; sleep 30")
    wait_for(ready.exists, what="the job to ignore SIGTERM")


def _stopping(home: Home) -> subprocess.Popen[bytes]:
    """`sjq shutdown`: the daemon stops listening at once, and answers the connections it
    has until its kill grace is over."""
    return subprocess.Popen(
        [sys.executable, "-m", "sjq_client", "shutdown"],
        env=home.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def test_a_submit_while_the_daemon_is_still_stopping_waits_for_it(home: Home) -> None:
    cli = home.cli()
    _job_ignoring_sigterm(home)
    stopping = _stopping(home)
    try:
        # It stops listening at once, but holds its database for sjq.killgrace (2 s) more.
        wait_for(lambda: not answers(home.socket), what="the daemon to stop listening")
        r = cli("submit", "--", "true")
        assert r.code == 0, r.err
        assert r.out == "2\n"
        assert "started a daemon" in r.err
    finally:
        stopping.wait(30)
    assert home.started() == 2
    # The old daemon, gone now, must not have taken the new one's socket with it.
    assert answers(home.socket)
    assert cli.ok("ping").startswith(f"sjq daemon on {home.socket}")


def answers(path: str) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
    except OSError:
        return False
    finally:
        s.close()
    return True


def test_server_starts_and_stops_the_daemon(home: Home) -> None:
    cli = home.cli()
    r = cli("server", "-d")
    assert r.code == 0, r.err
    assert r.out.startswith("sjq daemon started (pid ")
    assert cli.ok("ping").startswith(f"sjq daemon on {home.socket}")
    r = cli("server", "-d")
    assert r.code == 1
    assert "already running" in r.err
    assert cli("server", "--stop").code == 0
    assert not os.path.exists(home.socket)


def test_a_submit_a_stopping_daemon_refuses_goes_to_the_next_one(home: Home) -> None:
    """A connection opened before the daemon began to stop (SHUTDOWN, or idle) still reaches
    it, and it refuses a SUBMIT there (nothing queued): the client sends the job to the
    daemon it starts next instead of failing."""
    _job_ignoring_sigterm(home)
    with Client(config=home.rc) as c:
        c.ping()  # the connection to the first daemon is open
        stopping = _stopping(home)
        try:
            wait_for(lambda: not answers(home.socket), what="the daemon to stop listening")
            job = c.submit(command=["true"], cwd=home.dir / "jobs")
            assert job.id == 2
            assert c.started_pid is not None
        finally:
            stopping.wait(30)
        assert job.wait(timeout=30) is JobState.SUCCESS
    assert home.started() == 2


def test_the_asyncio_client_sends_a_refused_submit_to_the_next_daemon(home: Home) -> None:
    """AsyncClient likewise; a status asked on the same connection at the same time still
    gets its answer from the stopping daemon."""

    _job_ignoring_sigterm(home)

    async def main() -> None:
        async with AsyncClient(config=home.rc) as c:
            await c.ping()
            stopping = _stopping(home)
            try:
                wait_for(lambda: not answers(home.socket), what="the daemon to stop listening")
                job, states = await asyncio.gather(
                    c.submit(command=["true"], cwd=home.dir / "jobs"), c.status([1])
                )
                assert job.id == 2
                assert [s.id for s in states] == [1]
                assert c.started_pid is not None
            finally:
                await asyncio.to_thread(stopping.wait, 30)
            assert await job.wait(timeout=30) is JobState.SUCCESS

    asyncio.run(main())
    assert home.started() == 2
