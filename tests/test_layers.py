"""The rules of docs/architecture.md that a machine can check: who may touch processes, the
event loop and the database, and what the pure modules import (in a fresh interpreter, so
what a module pulls in through others counts too)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SJQ = Path(__file__).resolve().parent.parent / "sjq"

# What may start, signal or wait for processes, and why.
PROCESS_MODULES = {
    "sjq/keeper/": "the keeper: the parent of every job",
    "sjq/contain/": "the keeper's containment: kills a job's cgroup or process tree",
    "sjq/slurm/commands.py": "runs Slurm's commands (from worker threads, never the event loop)",
    "sjq/daemon.py": "forks to detach the daemon (python-daemon)",
}
EVENT_LOOP_MODULES = {
    "sjq/service.py",
    "sjq/commits.py",  # the daemon's commits and their timers
    "sjq/server.py",
    "sjq/links.py",
    "sjq/daemon.py",
    "sjq/slurm/backend.py",  # the Slurm back end's tasks (its commands run in worker threads)
    "sjq/slurm/submitting.py",  # the same back end's submitters, kept in a module of their own
}
DATABASE_MODULES = {"sjq/store.py"}
# calls that start, signal or reap a process
PROCESS_CALLS = {
    "posix_spawn",
    "fork",
    "kill",
    "killpg",
    "waitpid",
    "wait4",
    "waitid",
    "pidfd_open",
    "pidfd_send_signal",
    "execv",
    "execve",
}


def modules() -> list[Path]:
    return sorted(SJQ.rglob("*.py"))


def rel(path: Path) -> str:
    return str(path.relative_to(SJQ.parent))


def allowed(path: Path, table: dict[str, str] | set[str]) -> bool:
    name = rel(path)
    return any(name == p or (p.endswith("/") and name.startswith(p)) for p in table)


def imports_of(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def process_calls(tree: ast.AST) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr in PROCESS_CALLS
            and isinstance(node.value, ast.Name)
            and node.value.id in ("os", "signal")
        ):
            found.add(f"{node.value.id}.{node.attr}")
    return found


@pytest.mark.parametrize("path", modules(), ids=rel)
def test_only_the_process_modules_touch_processes(path: Path) -> None:
    tree = ast.parse(path.read_text())
    if allowed(path, PROCESS_MODULES):
        return
    assert "subprocess" not in imports_of(tree), f"{rel(path)} imports subprocess"
    assert not process_calls(tree), f"{rel(path)} calls {process_calls(tree)}"


@pytest.mark.parametrize("path", modules(), ids=rel)
def test_only_the_event_loop_modules_import_asyncio(path: Path) -> None:
    if allowed(path, EVENT_LOOP_MODULES):
        return
    assert "asyncio" not in imports_of(ast.parse(path.read_text())), rel(path)


@pytest.mark.parametrize("path", modules(), ids=rel)
def test_only_the_store_imports_sqlite(path: Path) -> None:
    if allowed(path, DATABASE_MODULES):
        return
    assert "sqlite3" not in imports_of(ast.parse(path.read_text())), rel(path)


def loaded_by(module: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"import sys, {module}; print(' '.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return set(out.split())


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        # the scheduler, its dependency graph and the arm planner are pure: state and time in,
        # decisions out
        (
            "sjq.scheduler",
            {"asyncio", "sqlite3", "subprocess", "socket", "sjq.keeper", "sjq.store"},
        ),
        ("sjq.arming", {"asyncio", "sqlite3", "subprocess", "socket", "sjq.keeper", "sjq.store"}),
        ("sjq.graph", {"asyncio", "sqlite3", "subprocess", "socket", "sjq.keeper", "sjq.store"}),
        # request handling changes memory and the open transaction, nothing else
        ("sjq.state", {"asyncio", "subprocess", "socket", "sjq.keeper", "sjq.service"}),
        ("sjq.jobs", {"asyncio", "sqlite3", "subprocess", "sjq.scheduler", "sjq.store"}),
        ("sjq.store", {"asyncio", "subprocess", "sjq.scheduler", "sjq.state", "sjq.keeper"}),
        # the keeper runs in forked processes that have no event loop and no database
        ("sjq.keeper.loop", {"asyncio", "sqlite3", "sjq.store", "sjq.state", "sjq.service"}),
        ("sjq.armer", {"asyncio", "sqlite3", "sjq.store", "sjq.state", "sjq.service"}),
    ],
)
def test_what_a_layer_pulls_in(module: str, forbidden: set[str]) -> None:
    assert not forbidden & loaded_by(module)


def test_no_module_is_a_house_of_many_rooms() -> None:
    """A module a newcomer can read in one sitting: about 500 lines at most. A module that
    grows past it has two concerns; split it along the seam rather than raise the limit."""
    long = {
        str(p.relative_to(SJQ.parent)): n
        for p in SJQ.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 500
    }
    assert not long, f"modules over 500 lines: {long}"
