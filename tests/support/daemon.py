"""A real ``sjq.daemon`` process with every file under one directory, and the clean-up of
what a test that ended early left running."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from support.raw import Raw
from support.waiting import DEFAULT_TIMEOUT, wait_for

__all__ = ["Daemon", "daemon_settings", "make_daemon", "reap_leftovers"]


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
