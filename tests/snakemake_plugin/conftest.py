"""Fixtures for the Snakemake executor plugin: a workflow directory, an sjq config whose daemon
the plugin starts itself, and `snakemake` run as a real subprocess that finds the plugin."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sjq_client import Client, JobInfo
from support import client_env, reap_leftovers, stop_daemon, wait_for, write_rc

REPO = Path(__file__).resolve().parents[2]
PLUGIN_DIR = REPO / "clients" / "snakemake-executor-plugin-sjq"
SNAKEMAKE_TIMEOUT = 150.0  # seconds for one small workflow; each job starts a Python of its own

pytest.importorskip("snakemake", reason="needs snakemake (the test extra installs it)")


@dataclass
class Workflow:
    """A workflow directory and the sjq home its jobs go to."""

    dir: Path
    rc: Path
    socket: str
    env: dict[str, str]

    def write(self, snakefile: str) -> None:
        (self.dir / "Snakefile").write_text(snakefile)

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "snakemake", "--executor", "sjq", "--nocolor", *args]

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run snakemake to its end; its outcome (warnings it prints are its own)."""
        return subprocess.run(
            self.command(*args),
            cwd=self.dir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=SNAKEMAKE_TIMEOUT,
        )

    def start(self, *args: str) -> Running:
        """Start snakemake; its output is collected as it comes."""
        proc = subprocess.Popen(
            self.command(*args),
            cwd=self.dir,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        return Running(proc)

    def jobs(self) -> dict[str, JobInfo]:
        """sjq's record of every job it ran, by name."""
        with Client(self.socket, config=self.rc, autostart=False) as c:
            infos = c.status()
        by_name = {i.name: i for i in infos}
        assert len(by_name) == len(infos), [i.name for i in infos]
        return by_name


class Running:
    """A snakemake process whose output a thread reads (so that it never blocks on a full
    pipe, and a test can wait for a line)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self._lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self._lines)

    def until(self, predicate: Callable[[], object], what: str) -> None:
        """Wait for ``predicate`` while snakemake runs; fail with its output if it ends first."""

        def check() -> object:
            if self.proc.poll() is not None:
                self._reader.join(5)
                pytest.fail(
                    f"snakemake exited ({self.proc.returncode}) before {what}:\n{self.output}"
                )
            return predicate()

        wait_for(check, SNAKEMAKE_TIMEOUT, what=what)

    def wait(self) -> int:
        """Its exit status, once it has ended and all its output is read."""
        code = self.proc.wait(SNAKEMAKE_TIMEOUT)
        self._reader.join(10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.wait()


@pytest.fixture
def workflow(tmp_path: Path) -> Iterator[Workflow]:
    base = tmp_path / "sjq"
    base.mkdir()
    rc = write_rc(base, **{"sjq.maxprocs": "4", "sjq.killgrace": "2"})
    wf = tmp_path / "wf"
    wf.mkdir()
    path = os.pathsep.join(
        [str(PLUGIN_DIR), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    )
    env = client_env(tmp_path, SJQ_CONFIG=str(rc), PYTHONPATH=path)
    w = Workflow(wf, rc, str(base / "s.sock"), env)
    try:
        yield w
    finally:
        stop_daemon(w.socket, env)
        reap_leftovers(str(tmp_path))
