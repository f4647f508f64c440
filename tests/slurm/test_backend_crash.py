"""A daemon with sjq.backend = slurm SIGKILLed in the middle of a workload: after each restart
it reconciles what it had handed to Slurm by the jobs' tags, so every job runs once, none is
submitted twice, and each ends in the state its script and dependencies give it."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable

import pytest
from support import Daemon, wait_for

from .cluster import Cluster
from .test_backend import slurm_daemon, tagged

JOBS = 36


def fates(rng: random.Random) -> list[tuple[bool, list[int]]]:
    """Each job's (fails, indexes of the jobs it depends on)."""
    out: list[tuple[bool, list[int]]] = []
    for i in range(JOBS):
        deps = rng.sample(range(i), k=min(i, rng.choice([0, 0, 1, 2])))
        out.append((rng.random() < 0.15, deps))
    return out


@pytest.mark.timeout(180)
def test_sigkill_mid_workload_submits_nothing_twice(
    slurm: Cluster, daemon_factory: Callable[..., Daemon]
) -> None:
    rng = random.Random(1414)
    d = slurm_daemon(daemon_factory).start()
    ledger = d.jobs_dir / "ledger"
    ids: list[int] = []
    expected: dict[int, str] = {}
    for i, (fails, deps) in enumerate(fates(rng)):
        script = (
            f'#!/bin/sh\necho "$SJQ_JOBID" >> "{ledger}"\n'
            f"sleep {rng.choice(['0', '0.1', '0.3', '1'])}\nexit {1 if fails else 0}\n"
        )
        opts = {"name": f"j{i}"}
        if deps:
            opts["depends"] = ":".join(str(ids[p]) for p in deps)
        jobid = d.submit(script, **opts)
        ids.append(jobid)
        bad = any(expected[ids[p]] != "S" for p in deps)
        expected[jobid] = "A" if bad else "F" if fails else "S"
        if i in (4, 15, 27):  # SIGKILL (sbatch commands may be under way) and restart
            d.kill9()
            d.start()

    def settled() -> bool:
        return all(d.state(i) in "SFAKE" for i in ids)

    wait_for(settled, 120, "every job to end")
    got = {i: d.state(i) for i in ids}
    assert got == expected
    ran = Counter(int(x) for x in ledger.read_text().split())
    assert all(n == 1 for n in ran.values()), ran
    assert set(ran) == {i for i, s in expected.items() if s != "A"}
    tags = tagged(slurm, d)
    assert all(len(v) == 1 for v in tags.values()), tags  # nothing submitted twice
    assert len(tags) == len(ran)
    for i in ids:
        if expected[i] != "A":
            assert d.info(i)["backend_id"] is not None
