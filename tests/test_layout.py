"""The test tree's own rule: shared helpers come from `support`, fixtures from conftest files,
and no test module imports the top-level conftest (pytest loads it; importing it as a module
runs a second copy of it)."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def test_no_module_imports_the_top_level_conftest() -> None:
    offenders = []
    for path in sorted(TESTS.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            if any(n == "conftest" or n.endswith("._helpers") for n in names):
                offenders.append(f"{path.relative_to(TESTS)}:{node.lineno}")
    assert not offenders, f"import these from support instead: {offenders}"
