"""The `sjq` command run as a real subprocess with an environment of its own, and isolated
homes in which the command or the client starts its own daemon."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from support.daemon import daemon_settings
from support.jobs import alive
from support.waiting import wait_for

__all__ = [
    "CLI_TIMEOUT",
    "Cli",
    "Home",
    "Result",
    "client_env",
    "daemon_pid",
    "stop_daemon",
    "wait_stopped_by_itself",
    "write_rc",
]

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


def daemon_pid(pidfile: Path) -> int | None:
    """The pid in a daemon's pid file, None if there is none."""
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


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
