"""Starting, watching and stopping one private sjq daemon; owns the daemon process.

All of a daemon's state lives under its own directory: socket, database, spool,
pid file, log, and HOME (so no ~/.sjqrc of the user leaks in, and a CLI run
against it finds it at the default ``$HOME/.sjq.sock``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench.procs import (
    descendants,
    die_with_parent,
    proc_cpu_seconds,
    proc_rss_bytes,
    spare,
    unspare,
)
from bench.proto import Conn, ProtocolError

REPO = Path(__file__).resolve().parent.parent

# How the bench starts sjq: one constant, so a change of interface is one edit.
# Fields: {python} {socket} {db} {spool} {maxprocs} {pidfile} {logfile}.
DAEMON_CMD: tuple[str, ...] = (
    "{python}",
    "-m",
    "sjq.daemon",
    "-f",
    "--set",
    "sjq.socket={socket}",
    "--set",
    "sjq.db={db}",
    "--set",
    "sjq.spool={spool}",
    "--set",
    "sjq.maxprocs={maxprocs}",
    "--set",
    "sjq.autoshutdown=F",
    "--set",
    "sjq.pidfile={pidfile}",
    "--set",
    "sjq.logfile={logfile}",
)
DAEMON_MODULE = "sjq.daemon"
START_TIMEOUT = 20.0  # seconds until PING must answer; recovery of an empty db is instant
STOP_TIMEOUT = 15.0  # seconds after SHUTDOWN before SIGKILL


class DaemonUnavailable(Exception):
    """There is no sjq daemon to measure (module missing, or it would not start)."""


def environment(home: Path) -> dict[str, str]:
    """The environment of the daemon and of CLI runs: the user's, minus SJQ_* config."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SJQ_")}
    env["HOME"] = str(home)
    # A source checkout runs without being installed.
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO), str(REPO / "clients"), env.get("PYTHONPATH", "")) if p
    )
    return env


def available(workdir: Path) -> str | None:
    """None if ``python -m sjq.daemon`` can run here, else why not."""
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import importlib.util as u, sys; sys.exit(u.find_spec({DAEMON_MODULE!r}) is None)",
        ],
        env=environment(workdir),
        cwd=workdir,
        capture_output=True,
        timeout=30,
        check=False,
    )
    return None if probe.returncode == 0 else "daemon not available"


class Daemon:
    """One sjq daemon in ``workdir``, started on enter and stopped on exit."""

    def __init__(
        self, workdir: Path, maxprocs: int, settings: dict[str, str] | None = None
    ) -> None:
        """``settings``: more config keys for this daemon, e.g. {"sjq.enforce": "none"}."""
        workdir.mkdir(parents=True)
        self.settings = dict(settings or {})
        self.workdir = workdir
        self.socket = str(workdir / ".sjq.sock")
        self.pidfile = workdir / "sjq.pid"
        self.jobs = workdir / "jobs"  # CWD of every job: its .stdout/.stderr land here
        self.jobs.mkdir()
        self.maxprocs = maxprocs
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Daemon:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def command(self) -> list[str]:
        fields = {
            "python": sys.executable,
            "socket": self.socket,
            "db": str(self.workdir / "state.db"),
            "spool": str(self.workdir / "spool"),
            "maxprocs": str(self.maxprocs),
            "pidfile": str(self.pidfile),
            "logfile": str(self.workdir / "sjq.log"),
        }
        extra = [x for key, value in self.settings.items() for x in ("--set", f"{key}={value}")]
        return [part.format(**fields) for part in DAEMON_CMD] + extra

    def start(self) -> None:
        out = open(self.workdir / "daemon.out", "wb")  # noqa: SIM115 - the child keeps it
        with out:
            self.proc = subprocess.Popen(
                self.command(),
                cwd=self.workdir,
                env=environment(self.workdir),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in the terminal reaches the bench only
                preexec_fn=die_with_parent,  # noqa: PLW1509 - the bench is single-threaded
            )
        spare(self.proc.pid)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise DaemonUnavailable(f"daemon exited ({self.proc.returncode}): {self._tail()}")
            try:
                with Conn(self.socket, timeout=5) as conn:
                    conn.ping()
                return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise DaemonUnavailable(f"no PING answer after {START_TIMEOUT:.0f} s")
            time.sleep(0.01)

    def _tail(self) -> str:
        lines = (self.workdir / "daemon.out").read_text(errors="replace").strip().splitlines()
        return lines[-1] if lines else "no output"

    def connect(self, timeout: float = 60.0) -> Conn:
        return Conn(self.socket, timeout=timeout)

    @property
    def pid(self) -> int:
        """The daemon's pid: its pid file if it wrote one, else the process we started."""
        try:
            return int(self.pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            assert self.proc is not None
            return self.proc.pid

    def rss_bytes(self) -> int:
        return proc_rss_bytes(self.pid)

    def helpers(self) -> list[int]:
        """Processes the daemon forked without exec (a job keeper, say): same command line."""
        own = Path(f"/proc/{self.pid}/cmdline").read_bytes()
        out = []
        for pid in descendants(root=self.pid):
            try:
                if Path(f"/proc/{pid}/cmdline").read_bytes() == own:
                    out.append(pid)
            except OSError:
                pass
        return out

    def helpers_rss_bytes(self) -> int:
        return sum(proc_rss_bytes(pid) for pid in self.helpers())

    def cpu_seconds(self) -> float:
        return proc_cpu_seconds(self.pid)

    def stop(self) -> None:
        """SHUTDOWN, then SIGKILL if it is still there after STOP_TIMEOUT."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            if proc.poll() is None:
                try:
                    with Conn(self.socket, timeout=5) as conn:
                        conn.call("SHUTDOWN")
                except (OSError, ProtocolError):
                    proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        finally:
            unspare(proc.pid)
