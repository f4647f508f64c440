"""How Toil finds the plugin: by its prefix scan, in every Toil command; and a plugin that
cannot load must not break Toil commands that do not use it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .conftest import SjqHome

pytestmark = pytest.mark.timeout(120)


def test_toil_lists_the_batch_system_and_its_options(sjq_home: SjqHome) -> None:
    run = sjq_home.toil("toil-cwl-runner", "--help", check=True)
    assert "sjq" in run.log.partition("--batchSystem")[2][:400]
    assert "--sjqSocket" in run.log
    assert "--sjqConfig" in run.log


def test_a_broken_sjq_install_breaks_no_other_toil_command(
    sjq_home: SjqHome, tmp_path: Path
) -> None:
    # An sjq client that fails on import, first on the path: as a half-upgraded install.
    broken = tmp_path / "broken" / "sjq_client"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise RuntimeError('sjq_client is broken on purpose')\n")
    sjq_home.env["PYTHONPATH"] = os.pathsep.join([str(broken.parent), sjq_home.env["PYTHONPATH"]])
    (sjq_home.work / "echo.cwl").write_text(
        "cwlVersion: v1.2\nclass: CommandLineTool\nbaseCommand: [echo, hi]\n"
        "inputs: []\noutputs: []\n"
    )

    assert sjq_home.toil("toil-cwl-runner", "--help").code == 0
    ok = sjq_home.toil(
        "toil-cwl-runner", "--jobStore", str(sjq_home.work / "js1"), "echo.cwl", check=True
    )
    assert "Success: True" in ok.log

    # Asked for by name, it fails and says why.
    run = sjq_home.toil(
        "toil-cwl-runner",
        "--batchSystem",
        "sjq",
        "--jobStore",
        str(sjq_home.work / "js2"),
        "echo.cwl",
    )
    assert run.code != 0
    assert "the sjq batch system cannot be loaded" in run.log
    assert "sjq_client is broken on purpose" in run.log
