"""sjq.contain imports nothing of asyncio or sqlite3 (the keeper imports it), and each of its
modules says so on its first line."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import sjq.contain

FORBIDDEN = ("asyncio", "sqlite3")
PACKAGE = Path(sjq.contain.__file__).parent
MODULES = sorted(
    ".".join(p.relative_to(PACKAGE).with_suffix("").parts).removesuffix(".__init__")
    for p in PACKAGE.rglob("*.py")
    if p.name != "__init__.py" or p.parent != PACKAGE
)


def test_importing_every_module_loads_neither_asyncio_nor_sqlite3() -> None:
    imports = "; ".join(f"import sjq.contain.{m}" for m in MODULES)
    code = f"import sys; {imports}; print(' '.join(m for m in {FORBIDDEN!r} if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == ""


def test_every_module_opens_with_a_one_line_docstring_naming_what_it_does_not_import() -> None:
    assert len(MODULES) >= 7
    for path in PACKAGE.rglob("*.py"):
        doc = ast.get_docstring(ast.parse(path.read_text()))
        assert doc, path
        first = doc.splitlines()[0]
        assert "imports no asyncio or sqlite3" in first.lower(), (path, first)
