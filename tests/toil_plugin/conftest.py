"""Fixtures for the Toil batch system's tests: an isolated sjq home (a config naming every path
under tmp_path, no daemon: the plugin starts one, as the CLI does), and Toil run as a
subprocess that finds the plugin by Toil's own prefix scan of its sys.path.

The plugin is found the way an installed one would be: its source directory,
clients/toil-batch-system-sjq, is on the PYTHONPATH of every Toil process (and on this
process's sys.path for the in-process tests), so `pkgutil.iter_modules()` lists
`toil_batch_system_sjq`. A default editable install (setuptools' import-hook finder) would not
be listed; test_install checks a real, non-editable install.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from sjq_client import Client, DaemonNotRunning, JobInfo, SjqError
from support import daemon_settings, reap_leftovers, wait_for

REPO = Path(__file__).resolve().parents[2]
PLUGIN_SRC = REPO / "clients" / "toil-batch-system-sjq"
DATA = Path(__file__).resolve().parent / "data"
TOIL_TIMEOUT = 150.0  # one Toil run, leader start to exit, on a busy two-core machine

if importlib.util.find_spec("toil") is None or shutil.which("toil-cwl-runner") is None:
    pytest.skip(
        "Toil is not installed: pip install -e '.[test]' installs toil[cwl]==9.6.0",
        allow_module_level=True,
    )

if str(PLUGIN_SRC) not in sys.path:
    sys.path.insert(0, str(PLUGIN_SRC))  # for the in-process tests (test_api)


@dataclass
class ToilRun:
    code: int
    log: str  # the leader's stdout and stderr


@dataclass
class SjqHome:
    """A user of sjq and Toil: a config file, a working directory, an environment."""

    dir: Path
    rc: Path
    work: Path
    env: dict[str, str]

    @property
    def socket(self) -> str:
        return str(self.dir / "s.sock")

    def client(self) -> Client:
        return Client(config=self.rc, autostart=False)

    def jobs(self, *, started: bool = True) -> list[JobInfo]:
        """sjq's record of every job this home's daemon knows, ordered by id. With
        ``started=False``, no daemon yet (the plugin has not submitted anything) is no job."""
        try:
            with self.client() as c:
                return c.status()
        except DaemonNotRunning:
            if started:
                raise
            return []

    def toil(self, *args: str, timeout: float = TOIL_TIMEOUT, check: bool | None = None) -> ToilRun:
        """Run a Toil command (a program and its arguments) as a subprocess in ``work``."""
        p = self.popen(*args)
        try:
            out, _ = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            out, _ = p.communicate()
            pytest.fail(f"{args[0]} ran more than {timeout:g} s:\n{out.decode(errors='replace')}")
        run = ToilRun(p.returncode, out.decode(errors="replace"))
        if check is not None:
            assert (run.code == 0) is check, f"{' '.join(args)} -> {run.code}\n{run.log}"
        return run

    def popen(self, *args: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            list(args),
            cwd=self.work,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            # A shell that runs pytest in the background leaves SIGINT ignored, and an ignored
            # signal stays ignored across exec: give Toil Python's default (KeyboardInterrupt).
            preexec_fn=_default_sigint,  # noqa: PLW1509 -- no threads of ours run yet
        )

    def stop(self) -> None:
        if os.path.exists(self.socket):
            with contextlib.suppress(SjqError), self.client() as c:
                c.shutdown(timeout=20)


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def toil_env(home: Path, rc: Path, **extra: str) -> dict[str, str]:
    """The environment of a Toil leader: the plugin's sources on PYTHONPATH, an sjq config,
    a private HOME, TMPDIR and coordination directory (Toil keeps its history under HOME, its
    work directory and the batch system's log files under TMPDIR, and its lock files in
    /run/lock, where a killed worker leaves its own behind)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SJQ_", "TOIL_"))}
    path = [str(PLUGIN_SRC), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    for name in ("home", "tmp", "coord"):
        (home / name).mkdir(exist_ok=True)
    env.update(
        PYTHONPATH=os.pathsep.join(path),
        SJQ_CONFIG=str(rc),
        HOME=str(home / "home"),
        TMPDIR=str(home / "tmp"),
        TOIL_COORDINATION_DIR=str(home / "coord"),
        **extra,
    )
    return env


@pytest.fixture
def sjq_home(tmp_path: Path) -> Iterator[SjqHome]:
    """An sjq home with 4 CPUs and 8G to hand out, no daemon yet; it is stopped afterwards."""
    base = tmp_path / "h"
    work = tmp_path / "work"
    base.mkdir()
    work.mkdir()
    settings = daemon_settings(base) | {"sjq.maxprocs": "4"}
    rc = base / "sjqrc"
    rc.write_text("".join(f"{k} = {v}\n" for k, v in settings.items()))
    home = SjqHome(base, rc, work, toil_env(tmp_path, rc))
    try:
        yield home
    finally:
        home.stop()
        reap_leftovers(str(tmp_path))


def copy_data(names: Sequence[str], to: Path) -> None:
    for name in names:
        shutil.copy(DATA / name, to / name)


def live_processes_in_groups(groups: Sequence[int]) -> list[int]:
    """Processes, other than zombies, whose process group is one of ``groups``. (This
    container's process 1 reaps no orphans, so a killed job's children may linger as zombies:
    they hold no resources and run no code.)"""
    wanted = set(groups)
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{name}/stat").read_text()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()  # state, ppid, pgrp, ...
        if fields[0] != "Z" and int(fields[2]) in wanted:
            found.append(int(name))
    return found


def no_process_left(pids: Sequence[int], timeout: float = 10.0) -> None:
    """Wait until no process is left in the process groups of these jobs (each job leads
    its own group); fail the test if one is."""
    wait_for(
        lambda: not live_processes_in_groups(pids),
        timeout,
        what=f"every process of the jobs led by {list(pids)} to end",
    )
