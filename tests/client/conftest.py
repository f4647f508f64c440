"""Fixtures for the client tests: the `sjq` CLI run as a real subprocess against a real daemon,
and an isolated home in which the CLI or the client starts its own daemon."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import Daemon, daemon_settings, reap_leftovers, wait_for

CLI_TIMEOUT = 30.0


@dataclass
class Result:
    code: int
    out: str
    err: str


@dataclass
class Cli:
    """Runs `python -m sjq_client ARGS` (the `sjq` command) with its own environment."""

    env: dict[str, str]
    cwd: Path

    def __call__(
        self,
        *args: str,
        input: bytes | str | None = None,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Result:
        data = input.encode() if isinstance(input, str) else input
        p = subprocess.run(
            [sys.executable, "-m", "sjq_client", *args],
            input=data,
            stdin=None if data is not None else subprocess.DEVNULL,
            capture_output=True,
            env=self.env if env is None else env,
            cwd=self.cwd if cwd is None else cwd,
            timeout=CLI_TIMEOUT,
        )
        return Result(
            p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")
        )

    def ok(self, *args: str, input: bytes | str | None = None) -> str:
        """stdout of a command that must succeed."""
        r = self(*args, input=input)
        assert r.code == 0, f"sjq {' '.join(args)} -> {r.code}\nstdout: {r.out}\nstderr: {r.err}"
        return r.out

    def submit(self, *args: str, input: bytes | str | None = None) -> int:
        out = self.ok("submit", *args, input=input)
        assert out.strip().isdigit(), out
        return int(out)


def client_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a CLI run: an empty config file, so no ~/.sjqrc is read, plus
    a marker (the tmp path, in HOME) by which reap_leftovers finds strays."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    rc = tmp_path / "empty.rc"
    rc.touch()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SJQ_")}
    env.update({"HOME": str(home), "SJQ_CONFIG": str(rc), **extra})
    return env


@pytest.fixture
def cli(daemon: Daemon, tmp_path: Path) -> Cli:
    """The CLI pointed at the fixture's daemon (by SJQ_SOCKET), run in its jobs directory."""
    return Cli(client_env(tmp_path, SJQ_SOCKET=daemon.socket), daemon.jobs_dir)


@dataclass
class Home:
    """An isolated user: a config file naming every path under one directory, no daemon yet."""

    dir: Path
    rc: Path
    env: dict[str, str]

    @property
    def socket(self) -> str:
        return str(self.dir / "s.sock")

    @property
    def log(self) -> Path:
        return self.dir / "sjq.log"

    def cli(self) -> Cli:
        return Cli(self.env, self.dir / "jobs")

    def started(self) -> int:
        """How many daemons have started serving here (from the log)."""
        if not self.log.exists():
            return 0
        return self.log.read_text(errors="replace").count(" serving ")


def write_rc(base: Path, **settings: str) -> Path:
    values = daemon_settings(base) | settings
    rc = base / "sjqrc"
    rc.write_text("".join(f"{k} = {v}\n" for k, v in values.items()))
    return rc


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Home]:
    """An isolated home whose daemon (started by the code under test) is stopped afterwards."""
    base = tmp_path / "a"
    (base / "jobs").mkdir(parents=True)
    rc = write_rc(base)
    h = Home(base, rc, client_env(tmp_path, SJQ_CONFIG=str(rc)))
    try:
        yield h
    finally:
        stop_daemon(h.socket, h.env)
        reap_leftovers(str(tmp_path))


def stop_daemon(socket: str, env: dict[str, str]) -> None:
    """`sjq shutdown` if a daemon answers there, then wait for its socket to go."""
    if os.path.exists(socket):
        with contextlib.suppress(subprocess.TimeoutExpired):
            subprocess.run(
                [sys.executable, "-m", "sjq_client", "-S", socket, "shutdown"],
                env=env,
                capture_output=True,
                timeout=CLI_TIMEOUT,
            )
        wait_for(lambda: not os.path.exists(socket), 20, what=f"the daemon on {socket} to stop")


@pytest.fixture
def shell_job(tmp_path: Path) -> Callable[[str], Path]:
    """Write a script file and return its path."""

    def make(text: str, name: str = "job.sh") -> Path:
        p = tmp_path / name
        p.write_text(text)
        return p

    return make


@pytest.fixture
def sjq_main(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[..., Result]:
    """The CLI's main() in this process: for usage errors and help, which never reach a
    daemon, at a fraction of the cost of an interpreter per run. Keyword arguments set
    environment variables."""
    from sjq_client.cli import main

    for name in list(os.environ):
        if name.startswith("SJQ_"):
            monkeypatch.delenv(name)
    for name, value in client_env(tmp_path).items():
        if name in ("HOME", "SJQ_CONFIG"):
            monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)

    def run(*args: str, **env: str) -> Result:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        code = main(list(args))
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return run


def daemon_pid(pidfile: Path) -> int | None:
    """The pid in a daemon's pid file, None if there is none."""
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not: a detached daemon may never be reaped here)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat[stat.rindex(b")") + 2 :][:1] != b"Z"


def wait_stopped_by_itself(pidfile: Path, pid: int | None = None) -> None:
    """Wait until the daemon of ``pidfile`` (or ``pid``) has shut itself down (sjq.waittime):
    its process has exited and its pid file is gone. Whether a connect is refused is no
    sign: a loaded machine refuses connects to a live daemon too (a full backlog)."""
    pid = daemon_pid(pidfile) if pid is None else pid
    wait_for(
        lambda: not pidfile.exists() and (pid is None or not alive(pid)),
        20,
        what=f"the idle daemon (pid {pid}) to shut itself down",
    )
