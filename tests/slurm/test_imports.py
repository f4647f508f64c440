"""The pure Slurm modules stay pure, and the command runner never pulls in asyncio: each
module's first line says what it must not import, and a fresh interpreter checks it."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import sjq.slurm

PACKAGE = Path(sjq.slurm.__file__).parent
IO = ("asyncio", "subprocess", "sqlite3", "socket", "selectors", "psutil")


def loaded(module: str, names: tuple[str, ...]) -> list[str]:
    code = f"import sys, {module}; print(' '.join(m for m in {names!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.split()


@pytest.mark.parametrize(
    "module",
    [
        "sjq.slurm.args",
        "sjq.slurm.parse",
        "sjq.slurm.states",
        "sjq.slurm.errors",
        "sjq.slurm.track",
        "sjq.slurm.batch",
        "sjq.slurm.pending",
    ],
)
def test_pure_modules_load_no_io(module: str) -> None:
    assert loaded(module, IO) == []


def test_commands_never_load_asyncio() -> None:
    assert loaded("sjq.slurm.commands", ("asyncio", "sqlite3", "psutil")) == []


def test_every_module_opens_with_what_it_must_not_import() -> None:
    modules = sorted(PACKAGE.glob("*.py"))
    assert len(modules) == 12
    for path in modules:
        doc = ast.get_docstring(ast.parse(path.read_text()))
        assert doc, path
        assert "import" in doc.splitlines()[0], path
