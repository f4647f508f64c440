"""The plugin as a user installs it: a clean virtual environment, `pip install` of the
repository's sjq and of clients/toil-batch-system-sjq (not editable), and a workflow run
there with nothing of this checkout on its path. Toil and its dependencies come from the
package index (or pip's cache), which makes this the slowest test of the plugin."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sjq.jobs import JobState

from .conftest import PLUGIN_SRC, REPO, SjqHome, copy_data

PIP_TIMEOUT = 600.0  # a cold pip cache downloads Toil and some 30 packages


def copy_sources(to: Path) -> tuple[Path, Path]:
    """The two distributions' sources, without build leftovers: pip builds in the source tree,
    and a stale build/ directory there could put deleted modules in the wheel."""
    skip = shutil.ignore_patterns(
        ".git", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis"
    )
    sjq_src = to / "sjq-src"
    sjq_src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, sjq_src / name)
    shutil.copytree(REPO / "sjq", sjq_src / "sjq", ignore=skip)
    shutil.copytree(
        REPO / "clients" / "sjq_client", sjq_src / "clients" / "sjq_client", ignore=skip
    )
    plugin_src = shutil.copytree(PLUGIN_SRC, to / "plugin-src", ignore=skip)
    return sjq_src, plugin_src


# In the default run, though it takes minutes: it proves the plugin installs from scratch.
@pytest.mark.timeout(PIP_TIMEOUT + 200)
def test_a_clean_virtual_environment_runs_a_workflow_through_sjq(
    sjq_home: SjqHome, tmp_path: Path
) -> None:
    sjq_src, plugin_src = copy_sources(tmp_path)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    env = {k: v for k, v in sjq_home.env.items() if k != "PYTHONPATH"}
    install = subprocess.run(
        [
            python,
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            str(sjq_src),
            str(plugin_src),
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        timeout=PIP_TIMEOUT,
    )
    assert install.returncode == 0, install.stdout.decode() + install.stderr.decode()
    where = subprocess.run(
        [python, "-c", "import sjq, toil_batch_system_sjq as p; print(sjq.__file__, p.__file__)"],
        env=env,
        cwd=sjq_home.work,  # not this checkout, whose sjq/ `python -c` would import
        capture_output=True,
        check=True,
    )
    assert where.stdout.decode().count(str(venv / "lib")) == 2, where.stdout

    copy_data(["fan_out.py"], sjq_home.work)
    (sjq_home.work / "out").mkdir()
    sjq_home.env = env
    run = sjq_home.toil(
        python,
        "fan_out.py",
        "js",
        "--batchSystem",
        "sjq",
        "--out",
        "out",
        "--samples",
        "2",
        check=True,
    )

    assert "total 1" in run.log
    jobs = sjq_home.jobs()
    assert [j.name.split()[-1] for j in jobs] == ["root", "sample", "sample", "aggregate"]
    assert {j.state for j in jobs} == {JobState.SUCCESS}
    # The daemon the plugin started is the environment's own.
    pid = (sjq_home.dir / "sjq.pid").read_text().strip()
    assert Path(f"/proc/{pid}/cmdline").read_text().startswith(python)
