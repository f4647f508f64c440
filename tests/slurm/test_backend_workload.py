"""The same workload through the local back end and through Slurm ends in the same sjq
states; dependencies, PAUSE, SHUTDOWN and an unreachable controller under Slurm."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from support import Daemon, Gate, Raw, wait_for

from .cluster import NODE_CPUS, Cluster
from .test_backend import WAIT, slurm_daemon, tagged

OK = "#!/bin/sh\necho $SJQ_JOBID >> ledger\n"
FAIL = "#!/bin/sh\necho $SJQ_JOBID >> ledger\nexit 2\n"


def workload(d: Daemon, gate: Gate) -> dict[str, str]:
    """Fan-out, a chain, a failing job and its dependents, a kill: every job's end state."""
    ids: dict[str, int] = {}

    def sub(name: str, script: str, *deps: str, kind: str = "") -> None:
        opts = {"name": name}
        if deps and kind:
            opts["dependency"] = f"{kind}:" + ":".join(str(ids[x]) for x in deps)
        elif deps:
            opts["depends"] = ":".join(str(ids[x]) for x in deps)
        ids[name] = d.submit(script, **opts)

    def sub_array(name: str, script: str, spec: str, **opts: str) -> None:
        with Raw(d.socket) as c:
            reply = c.submit(script, name=name, array=spec, cwd=str(d.jobs_dir), **opts)
        first, _, last = reply[3:-2].decode().partition("-")
        for k, jobid in enumerate(range(int(first), int(last) + 1)):
            ids[f"{name}{k}"] = jobid

    sub("root", OK)
    for i in range(4):
        sub(f"fan{i}", OK, "root")
    sub("join", OK, *(f"fan{i}" for i in range(4)))
    sub("c1", OK)
    sub("c2", OK, "c1")
    sub("c3", OK, "c2")
    sub("bad", FAIL, "c1")
    sub("after_bad", OK, "bad")
    sub("after_after", OK, "after_bad", "c3")
    sub("victim", f"#!/bin/sh\n{gate.wait}")
    sub("after_victim", OK, "victim")
    # Dependency kinds besides afterok, and an array, one of whose elements fails.
    sub("any_bad", OK, "bad", kind="afterany")
    sub("notok_bad", OK, "bad", kind="afternotok")
    sub("notok_c1", OK, "c1", kind="afternotok")
    sub("started_victim", OK, "victim", kind="after")
    sub_array("arr", '#!/bin/sh\necho $SJQ_JOBID >> ledger\n[ "$SJQ_ARRAY_INDEX" != 2 ]\n', "1-3")
    sub("after_arr", OK, "arr0", "arr2")
    sub("after_arr_bad", OK, "arr1")
    sub("notok_arr", OK, "arr1", kind="afternotok")
    d.wait_state(ids["victim"], "R", WAIT)
    assert d.req(f"KILL {ids['victim']}") == b"OK\r\n"
    for jobid in ids.values():
        d.wait_state(jobid, "SFAKE", WAIT)
    ran = (d.jobs_dir / "ledger").read_text().split()
    assert len(ran) == len(set(ran))  # nothing ran twice
    return {name: d.state(jobid) for name, jobid in ids.items()}


def test_the_same_workload_ends_the_same_locally_and_in_slurm(
    slurm: Cluster, daemon_factory: Callable[..., Daemon], gate: Callable[[str], Gate]
) -> None:
    local = workload(daemon_factory(maxprocs="2").start(), gate("local"))
    in_slurm = workload(slurm_daemon(daemon_factory), gate("slurm"))
    assert in_slurm == local
    assert local["bad"] == "F"
    assert local["after_after"] == "A"
    assert local["victim"] == "K"
    assert local["after_victim"] == "A"
    assert local["join"] == "S"
    assert (local["any_bad"], local["notok_bad"], local["notok_c1"]) == ("S", "S", "A")
    assert local["started_victim"] == "S"
    assert (local["arr0"], local["arr1"], local["arr2"]) == ("S", "F", "S")
    assert (local["after_arr"], local["after_arr_bad"], local["notok_arr"]) == ("S", "A", "S")


def test_a_dependent_job_reaches_slurm_only_once_its_parent_succeeded(
    slurm: Cluster, daemon_factory: Callable[..., Daemon], gate: Callable[[str], Gate]
) -> None:
    d = slurm_daemon(daemon_factory).start()
    g = gate("g")
    parent = d.submit(f"#!/bin/sh\n{g.wait}")
    child = d.submit(OK, depends=str(parent))
    d.wait_state(parent, "R", WAIT)
    assert d.state(child) == "H"
    assert d.info(child)["backend_id"] is None  # sjq holds it: Slurm never saw it
    g.open()
    assert d.wait_state(child, "S", WAIT) == "S"
    assert d.info(child)["started"] >= d.info(parent)["ended"]


def test_after_waits_until_slurm_runs_the_parent(
    slurm: Cluster, daemon_factory: Callable[..., Daemon], gate: Callable[[str], Gate]
) -> None:
    d = slurm_daemon(daemon_factory).start()
    g, h = gate("g"), gate("h")
    big = d.submit(f"#!/bin/sh\n{g.wait}", procs=NODE_CPUS)
    d.wait_state(big, "R", WAIT)
    parent = d.submit(f"#!/bin/sh\n{h.wait}", procs=2)
    child = d.submit(OK, dependency=f"after:{parent}", procs=1)
    wait_for(lambda: d.info(parent)["backend_id"], WAIT, "the parent in Slurm")
    wait_for(lambda: d.info(parent)["reason"] == "Slurm: Resources", WAIT, "the parent waiting")
    # Handed to Slurm is not started: the child waits in sjq, and Slurm has not seen it.
    assert d.state(child) == "H"
    assert d.info(child)["backend_id"] is None
    assert d.info(child)["waiting_for"] == f"job {parent}"
    g.open()
    assert d.wait_state(parent, "R", WAIT) == "R"
    assert d.wait_state(child, "SFAKE", WAIT) == "S"
    assert d.info(child)["started"] >= d.info(parent)["started"]
    h.open()
    assert d.wait_state(parent, "SFAKE", WAIT) == "S"


def test_pause_stops_handing_jobs_to_slurm(
    slurm: Cluster, daemon_factory: Callable[..., Daemon]
) -> None:
    d = slurm_daemon(daemon_factory).start()
    assert d.req("PAUSE") == b"OK\r\n"
    job = d.submit(OK)
    first = d.submit(OK)
    assert d.state(job) == "Q"
    assert d.info(job)["backend_id"] is None
    assert not tagged(slurm, d)
    assert d.req("RESUME") == b"OK\r\n"
    assert d.wait_state(job, "S", WAIT) == "S"
    assert d.wait_state(first, "S", WAIT) == "S"


def test_shutdown_cancels_what_runs_in_slurm_and_the_next_daemon_follows_the_rest(
    slurm: Cluster, daemon_factory: Callable[..., Daemon], gate: Callable[[str], Gate]
) -> None:
    d = slurm_daemon(daemon_factory).start()
    g = gate("g")
    running = d.submit(f"#!/bin/sh\n{g.wait}", procs=NODE_CPUS)
    d.wait_state(running, "R", WAIT)
    waiting = d.submit(OK)
    wait_for(lambda: d.info(waiting)["backend_id"], WAIT, "the waiting job in Slurm")
    d.stop()  # SHUTDOWN
    d.start()
    assert d.state(running) == "K"
    assert d.info(running)["reason"] == "killed by shutdown"
    assert d.wait_state(waiting, "S", WAIT) == "S"
    assert len(tagged(slurm, d)) == 2


@pytest.mark.timeout(120)
def test_an_unreachable_controller_delays_jobs_and_loses_none(
    slurm: Cluster, daemon_factory: Callable[..., Daemon]
) -> None:
    d = slurm_daemon(daemon_factory, slurm_timeout="3").start()
    with slurm.controller_stopped():
        job = d.submit(OK)

        def waiting_for_slurm() -> bool:
            return d.info(job)["reason"].startswith("waiting for Slurm: ")

        wait_for(waiting_for_slurm, 30, "INFO to say why the job waits")
        assert d.state(job) == "Q"
        assert d.info(job)["backend_id"] is None
    assert d.wait_state(job, "S", 60) == "S"
    assert d.info(job)["reason"] == ""
    assert len(tagged(slurm, d)) == 1  # submitted once, though sbatch was tried more than once
    assert (d.jobs_dir / "ledger").read_text().split() == [str(job)]
