"""sjq.protocol stays sans-I/O and cheap to import; every module says what it must not import."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import sjq.protocol

# json too: nothing in the protocol needs it, and the CLI's start-up time matters.
FORBIDDEN = ("asyncio", "socket", "subprocess", "sqlite3", "psutil", "selectors", "json")
PACKAGE = Path(sjq.protocol.__file__).parent


def test_importing_the_protocol_loads_no_io_module() -> None:
    code = (
        f"import sys, sjq.protocol; print(' '.join(m for m in {FORBIDDEN!r} if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == ""


def test_every_module_opens_with_a_one_line_docstring() -> None:
    modules = sorted(PACKAGE.glob("*.py"))
    assert len(modules) >= 4
    for path in modules:
        doc = ast.get_docstring(ast.parse(path.read_text()))
        assert doc, path
        first = doc.splitlines()[0]
        assert "import" in first.lower(), (path, first)


def test_public_names() -> None:
    for name in sjq.protocol.__all__:
        assert hasattr(sjq.protocol, name), name
