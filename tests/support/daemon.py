"""A real ``sjq.daemon`` process with every file under one directory, and the clean-up of
what a test that ended early left running."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from support.raw import Raw
from support.waiting import DEFAULT_TIMEOUT, wait_for

__all__ = ["Daemon", "Spares", "daemon_settings", "make_daemon", "reap_leftovers"]


@dataclass
class Daemon:
    """A real ``sjq.daemon`` process with all its files under one directory."""

    dir: Path
    settings: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    clients: list[Raw] = field(default_factory=list)
    environ: Mapping[str, str] | None = None  # None: this process's, at each start

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

    def start(self, wait: bool = True, environ: Mapping[str, str] | None = None) -> Daemon:
        """Start the daemon with ``environ`` (kept for later starts), or else the one it was
        first given, or else this process's environment."""
        if self.proc is not None:
            self.proc.wait(15)  # an earlier daemon of this fixture that was told to stop
        if environ is not None:
            self.environ = environ
        env = dict(os.environ if self.environ is None else self.environ)
        env["SJQ_CONFIG"] = str(self.dir / "none.rc")
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
        self.tell_to_stop()
        if self.proc is None:
            return
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def tell_to_stop(self) -> None:
        """SHUTDOWN (running jobs are killed), without waiting for the daemon to exit."""
        for c in self.clients:
            c.close()
        self.clients.clear()
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            self.req("SHUTDOWN")
        except OSError:
            # No connection to be had (its backlog still full, say): SIGTERM does the same.
            with contextlib.suppress(OSError):
                self.proc.send_signal(signal.SIGTERM)


def reap_leftovers(*markers: str) -> None:
    """Kill every process whose environment or command line mentions one of ``markers``
    (jobs and keepers of a test that ended early), so one failing test cannot disturb the
    next."""
    me = os.getpid()
    wanted = [m.encode() for m in markers]
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            env = Path(f"/proc/{name}/environ").read_bytes()
            cmd = Path(f"/proc/{name}/cmdline").read_bytes()
        except OSError:
            continue
        if any(m in env or m in cmd for m in wanted):
            with contextlib.suppress(OSError):
                os.kill(int(name), signal.SIGKILL)


@contextlib.contextmanager
def started_for_another_user(
    daemon_factory: Callable[..., Daemon], **settings: str
) -> Iterator[tuple[Daemon, Path]]:
    """A started daemon whose run and TMPDIR directories another user can reach, and a
    directory ``jobs`` that user may write in (tmp_path is 0700: the job's user could not
    enter it). The daemon is stopped before the directories go: its keepers' janitors keep
    TMPDIRs ready below them until then."""
    base = Path(tempfile.mkdtemp(prefix="sjq-test-"))
    d = daemon_factory(rundir=str(base / "run"), tmpdir=str(base / "tmp"), **settings)
    try:
        base.chmod(0o711)
        jobs = base / "jobs"
        jobs.mkdir()
        jobs.chmod(0o777)
        yield d.start(), jobs
    finally:
        d.stop()
        shutil.rmtree(base)


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


class Spares:
    """Daemons with the default settings, each started one test ahead: a test that asks for
    one gets a daemon that is already (or nearly) serving, and the next one starts while
    that test runs. A test's daemon is told to stop at its end, and waited for (and what
    it left reaped) at the next test's start: its shutdown overlaps that test's set-up. Each
    test still has a new daemon, with a new database, of its own.

    Spares are started with the environment this process had when the first was made, less
    any SJQ_* variable: what a test does to its own environment never reaches them."""

    def __init__(self, new_dir: Callable[[], Path]) -> None:
        self._new_dir = new_dir
        self._environ = {k: v for k, v in os.environ.items() if not k.startswith("SJQ_")}
        self._next: Daemon | None = None
        self._stopping: list[Daemon] = []

    def take(self) -> Daemon:
        d = self._next if self._next is not None else self._start()
        self._next = self._start()
        self._finish_stopping()
        wait_for(d.answers, what=f"daemon on {d.socket}\n{d.log}")
        return d

    def give_back(self, d: Daemon) -> None:
        """A test is done with ``d``: it is told to stop now, and waited for later."""
        d.tell_to_stop()
        self._stopping.append(d)

    def _start(self) -> Daemon:
        return make_daemon(self._new_dir()).start(wait=False, environ=self._environ)

    def _finish_stopping(self) -> None:
        if not self._stopping:
            return
        for d in self._stopping:
            d.stop()
        reap_leftovers(*(str(d.dir) for d in self._stopping))
        self._stopping.clear()

    def close(self) -> None:
        if self._next is not None:
            self._stopping.append(self._next)
            self._next = None
        self._finish_stopping()
