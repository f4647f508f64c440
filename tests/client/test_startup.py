"""Start-up cost: the commands pipelines run thousands of times import nothing heavy.

Checked in fresh interpreters by the modules loaded when the command ends; timings are in the
benchmark, not here (a test that measures wall time on a loaded CI machine only flakes).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from support import Daemon, client_env

HEAVY = {
    "asyncio",
    "psutil",
    "sqlite3",
    "_sqlite3",
    "argparse",  # replaced by sjq_client._args: several ms per run
    "sjq.daemon",
    "sjq.store",
    "sjq.keeper",
    "sjq.state",
    "sjq.server",
    "sjq.scheduler",
    "sjq.graph",
    "sjq.recovery",
    "sjq.service",
    "sjq.commits",
    "sjq.armer",
    "sjq.arming",
    "sjq.jobs",
    "sjq.contain",
    "daemon",  # python-daemon
    # dataclasses and inspect compile code at import (the reason for sjq._record)
    "dataclasses",
    "inspect",
    # `sjq stats` alone loads its code
    "sjq_client._stats",
    "sjq_client._stats_advice",
    "sjq_client._stats_plan",
    "sjq_client._cli_stats",
}

RUN = (
    "import sys\n"
    "from sjq_client.cli import main\n"
    "code = main(sys.argv[2:])\n"
    "with open(sys.argv[1], 'w') as f:\n"
    "    f.write('\\n'.join(sorted(sys.modules)))\n"
    "sys.exit(code)\n"
)


def modules_after(args: list[str], env: dict[str, str], cwd: Path, out: Path) -> set[str]:
    p = subprocess.run(
        [sys.executable, "-c", RUN, str(out), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=30,
    )
    assert p.returncode == 0, p.stderr
    return set(out.read_text().split())


@pytest.mark.parametrize(
    "args",
    [
        ["--version"],
        ["submit", "--", "true"],
        ["submit", "--mem", "1G", "-p", "1", "--after", "1", "--wait", "--", "true"],
        ["kill", "1"],
        ["state", "1"],
    ],
    ids=["version", "submit", "submit-wait", "kill", "state"],
)
def test_hot_commands_import_nothing_heavy(args: list[str], daemon: Daemon, tmp_path: Path) -> None:
    daemon.submit("#!/bin/sh\ntrue\n")
    env = client_env(tmp_path, SJQ_SOCKET=daemon.socket)
    loaded = modules_after(args, env, daemon.jobs_dir, tmp_path / "modules.txt")
    assert not HEAVY & loaded
    if args == ["submit", "--", "true"]:
        assert not {"sjq.protocol._states"} & loaded
    if args == ["--version"]:
        assert not {"socket", "sjq.protocol", "sjq.config", "sjq_client._client"} & loaded
    if args[0] == "state":  # polled for every job of a workflow: not even the JobState enum
        assert not {"sjq.jobs", "json", "dataclasses", "sjq_client._models"} & loaded


def test_status_imports_nothing_of_the_daemon(daemon: Daemon, tmp_path: Path) -> None:
    env = client_env(tmp_path, SJQ_SOCKET=daemon.socket)
    loaded = modules_after(["status", "--all"], env, daemon.jobs_dir, tmp_path / "modules.txt")
    assert not HEAVY & loaded


def test_stats_imports_nothing_of_the_daemon(daemon: Daemon, tmp_path: Path) -> None:
    daemon.submit("#!/bin/sh\ntrue\n")
    daemon.wait_state(1, "S")
    env = client_env(tmp_path, SJQ_SOCKET=daemon.socket)
    loaded = modules_after(["stats", "-n", "x*"], env, daemon.jobs_dir, tmp_path / "modules.txt")
    stats = {m for m in HEAVY if m.startswith(("sjq_client._stats", "sjq_client._cli_stats"))}
    assert len(stats) == 4
    assert not (HEAVY - stats) & loaded
    assert stats <= loaded
