"""The Python client, every method, against a real daemon; transport failures against fakes."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sjq_client import (
    Client,
    ConnectionLost,
    DaemonNotRunning,
    DaemonStartFailed,
    Job,
    JobInfo,
    JobNotFinished,
    JobTimeout,
    ProtocolError,
    RequestRejected,
    SjqError,
    TransportError,
)
from support import Daemon, Gate

import sjq.protocol
from sjq.jobs import F, H, K, R, S, U
from sjq.protocol import JobState


@pytest.fixture(autouse=True)
def _no_user_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rc = tmp_path / "empty.rc"
    rc.touch()
    monkeypatch.setenv("SJQ_CONFIG", str(rc))
    for name in list(os.environ):
        if name.startswith("SJQ_") and name != "SJQ_CONFIG":
            monkeypatch.delenv(name)


@pytest.fixture
def client(daemon: Daemon, monkeypatch: pytest.MonkeyPatch) -> Iterator[Client]:
    monkeypatch.chdir(daemon.jobs_dir)  # the default cwd of jobs
    with Client(daemon.socket, autostart=False) as c:
        yield c


def output(daemon: Daemon, job: Job) -> str:
    return (daemon.jobs_dir / f"{job.id}.stdout").read_text()


def test_submit_a_script_a_path_or_a_command(
    client: Client, daemon: Daemon, tmp_path: Path
) -> None:
    text = client.submit("#!/bin/sh\necho text\n")
    raw = client.submit(b"#!/bin/sh\necho bytes\n", name="raw")
    path = tmp_path / "from_file.sh"
    path.write_text("#!/bin/sh\necho file\n")
    file = client.submit(path)
    command = client.submit(command=["printf", "%s|", "a b", "it's"])
    assert client.wait([text, raw, file, command]) == dict.fromkeys(
        [text.id, raw.id, file.id, command.id], S
    )
    assert [output(daemon, j) for j in (text, raw, file, command)] == [
        "text\n",
        "bytes\n",
        "file\n",
        "a b|it's|",
    ]
    names = [i.name for i in client.status([text, raw, file, command])]
    assert names == ["sjqjob", "raw", "from_file.sh", "printf"]


def test_submit_options(client: Client, daemon: Daemon, gate: Callable[..., Gate]) -> None:
    g = gate()
    first = client.submit("#!/bin/sh\n" + g.wait, mem=1024**3)
    (daemon.jobs_dir / "sub").mkdir()
    job = client.submit(
        command=["sh", "-c", "echo out; echo err >&2"],
        procs=2,
        mem="300M",
        after=[first, first.id],
        name="opts",
        cwd=daemon.jobs_dir / "sub",
        hold=True,
        stdout="o.txt",
        stderr=Path("e.txt"),
        time_limit="2h",
        priority=3,
    )
    info = job.info()
    assert isinstance(info, JobInfo)
    assert info.id == job.id
    assert (info.name, info.state, info.procs, info.mem) == ("opts", U, 2, 300 * 1024**2)
    assert info.depends in ((first.id, first.id), (first.id,))
    assert (info.priority, info.time_limit) == (3, 7200)
    assert info.cwd == str(daemon.jobs_dir / "sub")
    assert info.stdout == str(daemon.jobs_dir / "sub" / "o.txt")
    assert not info.finished
    assert info.elapsed() is None
    client.release(job)
    assert job.state is H
    g.open()
    assert job.wait(10) is S
    assert (daemon.jobs_dir / "sub" / "o.txt").read_text() == "out\n"
    assert (daemon.jobs_dir / "sub" / "e.txt").read_text() == "err\n"
    info = job.info()
    assert info.finished
    assert info.exit_code == 0
    assert info.elapsed() is not None
    assert info.to_dict()["state"] == "S"


def test_output_paths_are_patterns_when_asked(client: Client, daemon: Daemon) -> None:
    job = client.submit(command=["echo", "hi"], name="p", stdout="out/%x-%j.txt", patterns=True)
    assert job.wait(10) is S
    assert (daemon.jobs_dir / "out" / f"p-{job.id}.txt").read_text() == "hi\n"
    job = client.submit(command=["echo", "hi"], stdout="%x-%j.txt")  # literal by default
    assert job.wait(10) is S
    assert (daemon.jobs_dir / "%x-%j.txt").read_text() == "hi\n"
    assert job.info().stderr == str(daemon.jobs_dir / f"{job.id}.stderr")


def test_environment_choices(
    client: Client, daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SJQ_TEST_VAR", "a,B=c")
    monkeypatch.setenv("BASH_FUNC_f%%", "() {  echo\n}")  # cannot be carried: left out
    show = ["sh", "-c", 'printf "%s|%s|%s" "${SJQ_TEST_VAR-unset}" "${ONLY-unset}" "${PATH-unset}"']
    inherit = client.submit(command=show)
    daemon_env = client.submit(command=show, env="daemon")
    exact = client.submit(command=["/usr/bin/env"], env={"ONLY": "1"})  # sh would add a PATH
    client.wait([inherit, daemon_env, exact], timeout=10)
    assert output(daemon, inherit) == f"a,B=c|unset|{os.environ['PATH']}"
    assert output(daemon, daemon_env).startswith("unset|unset|/")
    names = {line.split("=", 1)[0] for line in output(daemon, exact).splitlines()}
    assert "ONLY" in names
    assert not names & {"PATH", "HOME", "SJQ_TEST_VAR"}


def test_one_connection_carries_many_requests(client: Client, daemon: Daemon) -> None:
    client.ping()
    conn = client._conn
    assert conn is not None
    jobs = [client.submit(command=["true"]) for _ in range(20)]
    assert len({j.id for j in jobs}) == 20
    client.status(jobs)
    client.kill(jobs[-1])
    assert client._conn is conn


def test_status(client: Client, daemon: Daemon) -> None:
    assert client.status() == []
    a = client.submit(command=["true"], hold=True)
    b = client.submit(command=["true"], hold=True)
    assert [i.id for i in client.status()] == [a.id, b.id]
    assert [i.id for i in client.status([b, a.id, 999])] == [a.id, b.id]  # unknown: left out
    assert [i.id for i in client.status(b)] == [b.id]
    assert client.status([]) == []
    many = list(range(1, 5001))  # more ids than fit one INFO line: sent in several
    assert [i.id for i in client.status(many)] == [a.id, b.id]
    done = client.submit(command=["true"])
    done.wait(10)
    assert [i.id for i in client.status(states=[U])] == [a.id, b.id]
    assert [i.id for i in client.status(states={S})] == [done.id]
    assert [i.id for i in client.status([a, done], states=[S])] == [done.id]
    assert client.status(states=[]) == []


def test_kill_hold_release_state_and_job(
    client: Client, daemon: Daemon, gate: Callable[..., Gate]
) -> None:
    g = gate()
    running = client.submit("#!/bin/sh\n" + g.wait)
    daemon.wait_state(running.id, "R")
    waiting = client.submit(command=["true"], after=[running])
    queued = client.submit(command=["true"], procs=2)
    client.hold([waiting, queued])
    assert (waiting.state, queued.state) == (U, U)
    client.release(queued.id)
    assert client.state(queued) in (JobState.QUEUED, R, S)
    assert client.job(running.id) == running
    assert hash(client.job(running.id)) == hash(running)
    assert repr(running) == f"<Job {running.id}>"
    assert int(running) == running.id
    assert not running.ready()
    with pytest.raises(JobNotFinished, match="has not ended yet"):
        running.successful()
    running.cancel()
    assert running.wait(10) is K
    assert running.ready()
    assert running.successful() is False
    assert client.state(waiting) is JobState.ABORT
    assert queued.wait(10) is S
    assert queued.successful() is True
    client.kill([999])  # unknown ids are ignored, as the daemon does
    with pytest.raises(RequestRejected, match="unknown job 999"):
        client.state(999)
    with pytest.raises(RequestRejected, match="unknown job 999"):
        client.job(999).info()
    assert client.outcomes([queued, waiting, running.id]) == {
        queued.id: "success",
        waiting.id: "failed",  # aborted
        running.id: "failed",  # killed
    }
    assert client.outcomes([]) == {}
    with pytest.raises(RequestRejected, match="unknown job 999"):
        client.outcomes([queued, 999])


def test_wait(client: Client, daemon: Daemon, gate: Callable[..., Gate]) -> None:
    g = gate()
    ok = client.submit(command=["true"])
    bad = client.submit(command=["false"])
    slow = client.submit("#!/bin/sh\n" + g.wait)
    assert client.wait([]) == {}
    assert client.wait([ok, bad.id]) == {ok.id: S, bad.id: F}
    with pytest.raises(JobTimeout) as caught:
        client.wait([ok, slow], timeout=0.2)
    assert caught.value.pending == (slow.id,)
    assert isinstance(caught.value, TimeoutError)
    with pytest.raises(JobTimeout):
        slow.wait(timeout=0)
    assert ok.wait(timeout=0) is S  # an ended job needs no time
    seen: list[tuple[int, JobState]] = []
    g.open()
    assert client.wait([slow, ok], progress=lambda j, s: seen.append((j, s))) == {
        slow.id: S,
        ok.id: S,
    }
    assert seen == [(slow.id, S), (ok.id, S)]
    with pytest.raises(RequestRejected, match="unknown job 999"):
        client.wait([ok, 999])
    many = [client.submit(command=["true"]) for _ in range(3)]
    ids = [j.id for j in many] * 1500  # more than one WAIT line holds
    assert set(client.wait(ids, timeout=10).values()) == {S}


def test_ping_and_shutdown(client: Client, daemon: Daemon) -> None:
    assert client.ping() == {}
    client.submit(command=["true"]).wait(10)
    client.submit(command=["true"], hold=True)
    assert client.ping() == {S: 1, U: 1}
    client.shutdown()
    assert not os.path.exists(daemon.socket)
    with pytest.raises(DaemonNotRunning) as caught:
        client.ping()
    assert caught.value.socket == daemon.socket
    assert "sjq server -d" in str(caught.value)


def test_reconnects_once_when_the_daemon_restarted(client: Client, daemon: Daemon) -> None:
    job = client.submit(command=["true"], hold=True)
    daemon.stop()
    daemon.start()
    assert job.state is U  # the same connection object would be dead: a new one is made
    assert client.submit(command=["true"]).id == job.id + 1


def test_refusals_carry_the_daemons_message(client: Client, daemon: Daemon) -> None:
    with pytest.raises(RequestRejected) as caught:
        client.submit(command=["true"], procs=64)
    assert "PROCS 64" in caught.value.message
    assert str(caught.value) == caught.value.message
    with pytest.raises(RequestRejected, match="missing shebang"):
        client.submit("echo no shebang\n")
    with pytest.raises(RequestRejected, match="there is no job 999"):
        client.submit(command=["true"], after=[999])


def test_bad_arguments_raise_before_anything_is_sent(tmp_path: Path) -> None:
    sock = str(tmp_path / "no-daemon.sock")
    c = Client(sock)  # autostart on: none of these may start a daemon
    bad: list[tuple[Callable[[], object], type[Exception]]] = [
        (c.submit, TypeError),
        (lambda: c.submit("#!/bin/sh\n", command=["true"]), TypeError),
        (lambda: c.submit(command="true"), TypeError),
        (lambda: c.submit(command=[]), ValueError),
        (lambda: c.submit(command=["true"], procs=0), ValueError),
        (lambda: c.submit(command=["true"], mem="lots"), ValueError),
        (lambda: c.submit(command=["true"], time_limit="soon"), ValueError),
        (lambda: c.submit(command=["true"], name="two\nlines"), ValueError),
        (lambda: c.submit(command=["true"], env={"1BAD": "x"}), ValueError),
        (lambda: c.submit(command=["true"], after=[0]), ValueError),
        (lambda: c.submit(command=["true"], after=[3.0]), TypeError),  # type: ignore[list-item]
        (lambda: c.submit(command=["true"], after=["three"]), ValueError),  # ids as text: 3-7
        (lambda: c.submit(command=["true"], dependency="afterok:3?afterany:4"), ValueError),
        (lambda: c.submit_array(command=["true"], array="1-"), ValueError),
        (lambda: c.kill([True]), TypeError),
    ]
    for call, error in bad:
        with pytest.raises(error):
            call()
    assert not os.path.exists(sock)


def test_autostart_off_and_calls_about_no_job_do_not_start_a_daemon(tmp_path: Path) -> None:
    sock = str(tmp_path / "no-daemon.sock")
    off = Client(sock, autostart=False)
    for call in (
        lambda: off.submit(command=["true"]),
        lambda: off.status([1]),
        lambda: off.info(1),
        lambda: off.state(1),
        lambda: off.wait([1]),
        lambda: off.kill([1]),
        lambda: off.hold([1]),
        lambda: off.release([1]),
    ):
        with pytest.raises(DaemonNotRunning):
            call()
    # With autostart, the calls about named jobs start one (test_autostart.py); these never.
    c = Client(sock)
    for call in (c.ping, c.status, c.shutdown):
        with pytest.raises(DaemonNotRunning):
            call()
    assert not os.path.exists(sock)


def test_the_exception_tree() -> None:
    for transport in (DaemonNotRunning, DaemonStartFailed, ConnectionLost):
        assert issubclass(transport, TransportError)
    for error in (TransportError, ProtocolError, RequestRejected, JobNotFinished, JobTimeout):
        assert issubclass(error, SjqError)
    assert issubclass(ProtocolError, sjq.protocol.ProtocolError)
    assert issubclass(JobNotFinished, ValueError)
    assert issubclass(JobTimeout, TimeoutError)
    import sjq_client

    assert sjq_client.__doc__
    assert "SjqError" in (sys.modules["sjq_client._exceptions"].__doc__ or "")


def test_the_client_never_prints(
    client: Client, daemon: Daemon, capfd: pytest.CaptureFixture[str]
) -> None:
    job = client.submit(command=["sh", "-c", "echo to the file"])
    job.wait(10)
    client.status()
    client.ping()
    with contextlib.suppress(RequestRejected):
        client.wait([999])
    assert capfd.readouterr() == ("", "")


# -- transport failures, against fake daemons ----------------------------------------------


@contextlib.contextmanager
def fake_daemon(path: str, handle: Callable[[socket.socket], None]) -> Iterator[None]:
    """A UNIX socket that treats each connection with ``handle``."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(8)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                handle(conn)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        server.shutdown(socket.SHUT_RDWR)
        server.close()
        t.join(5)


def test_a_connection_closed_before_the_reply_is_connection_lost(tmp_path: Path) -> None:
    path = str(tmp_path / "f.sock")

    def close_at_once(conn: socket.socket) -> None:
        conn.recv(65536)

    with fake_daemon(path, close_at_once):
        c = Client(path)
        with pytest.raises(ConnectionLost, match="closed the connection"):
            c.ping()  # tried twice: idempotent requests are retried once
        with pytest.raises(ConnectionLost, match="may or may not have been queued"):
            c.submit(command=["true"])


def test_garbage_is_a_protocol_error(tmp_path: Path) -> None:
    path = str(tmp_path / "f.sock")

    def garbage(conn: socket.socket) -> None:
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")

    with (
        fake_daemon(path, garbage),
        pytest.raises(ProtocolError, match="is an sjq daemon listening there"),
    ):
        Client(path).ping()


def test_silence_is_connection_lost_after_the_timeout(tmp_path: Path) -> None:
    path = str(tmp_path / "f.sock")
    done = threading.Event()

    def silent(conn: socket.socket) -> None:
        conn.recv(65536)
        done.wait(10)

    with fake_daemon(path, silent):
        with pytest.raises(ConnectionLost, match=r"did not answer within 0\.2 s"):
            Client(path, timeout=0.2).ping()
        done.set()


def test_importing_the_package_is_cheap() -> None:
    code = (
        "import sys, sjq_client\n"
        "names = ('socket', 'sjq.protocol', 'sjq_client._client')\n"
        "loaded = [m for m in names if m in sys.modules]\n"
        "print(loaded)\n"
        "from sjq_client import Client\n"
        "print('sjq_client._client' in sys.modules)\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert p.stdout.splitlines() == ["[]", "True"]


def test_a_script_over_the_limit_is_refused_with_the_reason(
    daemon_factory: Callable[..., Daemon], monkeypatch: pytest.MonkeyPatch
) -> None:
    d = daemon_factory(maxsrc="64K").start()
    monkeypatch.chdir(d.jobs_dir)
    with Client(d.socket, autostart=False) as c:
        big = "#!/bin/sh\n" + "# padding\n" * 400_000  # 4 MB: more than the socket buffers
        with pytest.raises(RequestRejected, match="over the limit"):
            c.submit(big)
        assert c.submit(command=["true"]).id == 1  # and nothing was queued
