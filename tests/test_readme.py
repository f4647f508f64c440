"""The README's plugin lines name what the repository holds: each `pip install` line installs
a directory whose pyproject names the distribution as the line does, and the `snakemake` and
`toil-cwl-runner` lines name the executor and batch system the plugins provide."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")
PLUGINS = {
    "snakemake-executor-plugin-sjq": "snakemake_executor_plugin_sjq",
    "toil-batch-system-sjq": "toil_batch_system_sjq",
}


@pytest.mark.parametrize("dist", sorted(PLUGINS))
def test_each_install_line_names_a_distribution_of_this_repository(dist: str) -> None:
    line = f"python -m pip install . ./clients/{dist}"
    assert line in README
    project = tomllib.loads((REPO / "clients" / dist / "pyproject.toml").read_text())
    assert project["project"]["name"] == dist
    package = REPO / "clients" / dist / PLUGINS[dist]
    assert (package / "__init__.py").is_file()
    # Each plugin's own README gives the same command (with or without `python -m`).
    own = (REPO / "clients" / dist / "README.md").read_text(encoding="utf-8")
    assert re.search(rf"^(python -m )?pip install \. \./clients/{dist}$", own, re.M), dist


def test_the_snakemake_line_names_the_plugins_executor() -> None:
    # Snakemake takes the executor's name from the package name after its prefix.
    dist = REPO / "clients" / "snakemake-executor-plugin-sjq"
    (package,) = dist.glob("snakemake_executor_plugin_*/__init__.py")
    executor = package.parent.name.removeprefix("snakemake_executor_plugin_")
    assert f"snakemake --executor {executor} --jobs" in README


def test_the_toil_line_names_the_registered_batch_system() -> None:
    assert "toil-cwl-runner --batchSystem sjq " in README
    source = REPO / "clients" / "toil-batch-system-sjq" / "toil_batch_system_sjq" / "__init__.py"
    names = [
        node.value.value
        for node in ast.walk(ast.parse(source.read_text()))
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "NAME" for t in node.targets)
        and isinstance(node.value, ast.Constant)
    ]
    assert names == ["sjq"]
