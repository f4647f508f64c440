"""Shared fixtures: a real daemon on a socket under tmp_path, a raw protocol client,
bounded waits and gate files. No test needs a sleep to order events."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

T = TypeVar("T")

DEFAULT_TIMEOUT = 10.0


def wait_for(predicate: Callable[[], T], timeout: float = DEFAULT_TIMEOUT, what: str = "") -> T:
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(delay)  # polling interval of a bounded wait, not an ordering sleep
        delay = min(delay * 2, 0.05)


@dataclass
class Gate:
    """A file a job waits for: the test decides when the job may go on."""

    path: Path

    @property
    def wait(self) -> str:
        """Shell lines that block until the gate opens (bounded, so a failed test cannot
        leave a job behind for ever)."""
        return (
            f'i=0; while [ ! -e "{self.path}" ] && [ $i -lt 6000 ];'
            " do sleep 0.01; i=$((i+1)); done\n"
        )

    def open(self) -> None:
        self.path.touch()


@pytest.fixture
def gate(tmp_path: Path) -> Callable[[str], Gate]:
    def make(name: str = "gate") -> Gate:
        return Gate(tmp_path / f"{name}.gate")

    return make


class Raw:
    """A blocking client that speaks the wire protocol byte for byte."""

    def __init__(self, path: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
        except OSError:
            self.sock.close()
            raise
        self.buf = b""

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Raw:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        """One reply line, CRLF included."""
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"connection closed; partial {self.buf!r}")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line + b"\r\n"

    def payload(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed mid-payload")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def data(self) -> bytes:
        """A multi-part reply: ``OK <n>`` then n bytes."""
        head = self.line()
        assert head.startswith(b"OK "), head
        return self.payload(int(head[3:-2]))

    def closed(self) -> bool:
        """True once the daemon has closed the connection (and nothing is left unread)."""
        try:
            chunk = self.sock.recv(65536)
        except TimeoutError:
            return False
        self.buf += chunk
        return not chunk

    def request(self, line: str) -> bytes:
        self.send(line.encode() + b"\n")
        return self.line()

    def submit(self, script: str | bytes, **options: Any) -> bytes:
        body = script.encode() if isinstance(script, str) else script
        lines = ["SUBMIT"]
        for key, value in options.items():
            if key in ("env", "entry"):  # repeated option lines
                lines += [f"{key.upper()} {v}" for v in value]
            elif value is True:
                lines.append(key.upper())
            else:
                lines.append(f"{key.upper()} {value}")
        lines.append(f"SRC {len(body)}")
        self.send("\n".join(lines).encode() + b"\n" + body)
        return self.line()


@dataclass
class Daemon:
    """A real ``sjq.daemon`` process with all its files under one directory."""

    dir: Path
    settings: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    clients: list[Raw] = field(default_factory=list)

    @property
    def socket(self) -> str:
        return self.settings["sjq.socket"]

    @property
    def log(self) -> str:
        p = Path(self.settings["sjq.logfile"])
        return p.read_text(errors="replace") if p.exists() else ""

    @property
    def jobs_dir(self) -> Path:
        return self.dir / "jobs"

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "sjq.daemon", "-f"]
        for key, value in self.settings.items():
            cmd += ["--set", f"{key}={value}"]
        return cmd

    def start(self, wait: bool = True) -> Daemon:
        if self.proc is not None:
            self.proc.wait(15)  # an earlier daemon of this fixture that was told to stop
        env = dict(os.environ, SJQ_CONFIG=str(self.dir / "none.rc"))
        (self.dir / "none.rc").touch()
        with open(self.dir / "stderr.log", "ab") as stderr:
            self.proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                env=env,
                cwd=self.dir,
            )
        if wait:
            wait_for(self.answers, what=f"daemon on {self.socket}\n{self.log}")
        return self

    def answers(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            stderr = (self.dir / "stderr.log").read_text(errors="replace")
            pytest.fail(f"daemon exited with {self.proc.returncode}:\n{stderr}\n{self.log}")
        try:
            with Raw(self.socket, timeout=2) as c:
                return c.request("PING").startswith(b"OK")
        except OSError:
            return False

    def client(self) -> Raw:
        c = Raw(self.socket)
        self.clients.append(c)
        return c

    def req(self, line: str) -> bytes:
        with Raw(self.socket) as c:
            return c.request(line)

    def submit(self, script: str | bytes, **options: Any) -> int:
        options.setdefault("cwd", str(self.jobs_dir))
        with Raw(self.socket) as c:
            reply = c.submit(script, **options)
        assert reply.startswith(b"OK "), reply
        return int(reply[3:-2])

    def info(self, jobid: int) -> dict[str, Any]:
        import json

        with Raw(self.socket) as c:
            c.send(f"INFO {jobid}\n".encode())
            data = c.data()
        rows = [json.loads(x) for x in data.decode().splitlines()]
        assert len(rows) == 1, rows
        return rows[0]  # type: ignore[no-any-return]

    def state(self, jobid: int) -> str:
        with Raw(self.socket) as c:
            c.send(f"STATUS {jobid}\n".encode())
            data = c.data().decode()
        return data.split("\t")[2] if data else ""

    def wait_state(self, jobid: int, states: str, timeout: float = DEFAULT_TIMEOUT) -> str:
        return wait_for(
            lambda: (s := self.state(jobid)) in states and s,
            timeout,
            what=f"job {jobid} to reach one of {states!r}",
        )

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        for c in self.clients:
            c.close()
        self.clients.clear()
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                self.req("SHUTDOWN")
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


def reap_leftovers(marker: str) -> None:
    """Kill every process whose environment mentions ``marker`` (jobs and keepers of a test
    that ended early), so one failing test cannot disturb the next."""
    me = os.getpid()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            env = Path(f"/proc/{name}/environ").read_bytes()
            cmd = Path(f"/proc/{name}/cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in env or marker.encode() in cmd:
            with contextlib.suppress(OSError):
                os.kill(int(name), signal.SIGKILL)


def daemon_settings(base: Path) -> dict[str, str]:
    """A test daemon's settings: every file under ``base``, small and fixed resources."""
    return {
        "sjq.socket": str(base / "s.sock"),
        "sjq.db": str(base / "state.db"),
        "sjq.spool": str(base / "spool"),
        "sjq.pidfile": str(base / "sjq.pid"),
        "sjq.logfile": str(base / "sjq.log"),
        "sjq.tmpdir": str(base / "tmp"),
        # not the shared per-user default in /dev/shm: each test cleans up its own
        "sjq.rundir": str(base / "run"),
        "sjq.maxprocs": "2",
        "sjq.maxmem": "8G",
        "sjq.defaults.mem": "100M",
        "sjq.killgrace": "2",
        # jobs are not held to their MEM (usage is still measured): the tests of
        # containment choose their method themselves
        "sjq.enforce": "none",
    }


def make_daemon(tmp_path: Path, **settings: str) -> Daemon:
    base = tmp_path / "d"
    base.mkdir(exist_ok=True)
    (base / "jobs").mkdir(exist_ok=True)
    defaults = daemon_settings(base) | {"sjq.autoshutdown": "F"}
    # maxprocs="1" -> sjq.maxprocs, defaults_mem="1G" -> sjq.defaults.mem
    defaults.update({"sjq." + k.replace("_", "."): v for k, v in settings.items()})
    return Daemon(base, defaults)


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    """Make (not start) daemons; every one made is stopped and cleaned up afterwards."""
    made: list[Daemon] = []

    def make(**settings: str) -> Daemon:
        d = make_daemon(tmp_path, **settings)
        made.append(d)
        return d

    try:
        yield make
    finally:
        for d in made:
            d.stop()
        reap_leftovers(str(tmp_path))


@pytest.fixture
def daemon(daemon_factory: Callable[..., Daemon]) -> Daemon:
    """A running daemon: 2 CPUs, 8G, default job memory 100M, no auto-shutdown."""
    return daemon_factory().start()
