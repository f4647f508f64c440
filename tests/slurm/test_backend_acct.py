"""sjq.backend = slurm on a cluster with slurmdbd: CPU time and peak memory come from sacct
after a job's end, and sacct says who cancelled a job; TIME maps to Slurm's time limit."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
from support import Daemon, Gate, wait_for

from .cluster import Cluster
from .test_backend import WAIT, slurm_daemon

WORK = (
    '#!/bin/sh\npython3 -c "\n'
    "import time\n"
    "b = bytearray(200 * 2**20)\n"
    "for i in range(0, len(b), 4096): b[i] = 1\n"
    "t = time.process_time()\n"
    "while time.process_time() - t < 1.5: pass\n"
    'time.sleep(1.2)"\n'
)


def test_cpu_time_and_peak_memory_come_from_sacct(
    slurm_acct: Cluster, daemon_factory: Callable[..., Daemon]
) -> None:
    d = slurm_daemon(daemon_factory).start()
    job = d.submit(WORK, mem="400M")
    assert d.wait_state(job, "S", WAIT) == "S"

    def measured() -> dict[str, object] | None:
        info = d.info(job)
        return info if info["maxrss"] is not None and info["cpu_user"] is not None else None

    info = wait_for(measured, WAIT, "sacct's figures in INFO")
    assert info["measured_by"] == "slurm"
    assert isinstance(info["cpu_user"], float)
    assert info["cpu_user"] >= 1.4
    assert isinstance(info["maxrss"], int)
    assert 200 * 2**20 <= info["maxrss"] < 400 * 2**20


def test_sacct_says_who_cancelled_a_job_outside_sjq(
    slurm_acct: Cluster, daemon_factory: Callable[..., Daemon], gate: Callable[[str], Gate]
) -> None:
    d = slurm_daemon(daemon_factory).start()
    g = gate("never")
    job = d.submit(f"#!/bin/sh\n{g.wait}")
    d.wait_state(job, "R", WAIT)
    slurm_acct.command("scancel", d.info(job)["backend_id"])
    assert d.wait_state(job, "K", WAIT) == "K"
    assert d.info(job)["reason"].startswith("cancelled in Slurm")
    who = f"cancelled in Slurm by uid {os.geteuid()}"
    wait_for(lambda: d.info(job)["reason"] == who, WAIT, "sacct to say who cancelled")


def test_time_maps_to_slurms_limit(slurm: Cluster, daemon_factory: Callable[..., Daemon]) -> None:
    d = slurm_daemon(daemon_factory).start()
    job = d.submit("#!/bin/sh\nsleep 1\n", time="61")
    sid = wait_for(lambda: d.info(job)["backend_id"], WAIT, "the job in Slurm")
    shown = slurm.command("scontrol", "show", "job", sid)
    assert "TimeLimit=00:02:00" in shown, shown  # whole minutes, rounded up
    assert d.wait_state(job, "S", WAIT) == "S"


@pytest.mark.slow
@pytest.mark.timeout(200)
def test_a_job_past_its_time_ends_in_f_time_limit(
    slurm: Cluster, daemon_factory: Callable[..., Daemon], request: pytest.FixtureRequest
) -> None:
    if "slow" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("takes 60-90 s: Slurm's limits are whole minutes, checked every 30 s;"
                    " run with -m slow")  # fmt: skip
    d = slurm_daemon(daemon_factory).start()
    job = d.submit("#!/bin/sh\nsleep 600\n", time="1m")
    assert d.wait_state(job, "F", 150) == "F"
    info = d.info(job)
    assert info["reason"] == "time limit"
    assert info["started"] is not None
    assert info["ended"] - info["started"] >= 60
