"""CPUs and GPUs of running jobs, daemon and keeper together (Hypothesis): jobs started by
the daemon, armed jobs started by a keeper as another ends (with devices set aside when it
may use more than the job it follows), jobs ending: no device is ever held by two running
jobs, and each running job holds as many as it reserved."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sjq.contain.cpus import Topology
from sjq.devices import Devices, Handover
from sjq.jobs import Job, JobLaunch, Q
from sjq.keeper.guard import Guard
from sjq.keeper.messages import ArmedStart

GPUS = ("0", "1", "2", "GPU-8a1c")


def launch_of(job: Job) -> JobLaunch:
    return JobLaunch(
        job.id, b"#!/bin/sh\n", "/", "/dev/null", "/dev/null", {}, procs=job.procs,
        cpus=job.cpu_ids, gpus=job.gpu_ids, ngpus=job.gpus,
    )  # fmt: skip


ops = st.lists(
    st.tuples(
        st.sampled_from(["start", "start", "armed", "end"]),
        st.integers(0, 100),  # which running job
        st.integers(1, 4),  # procs of a new job
        st.integers(0, 3),  # gpus of a new job
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([2, 4, 8]), ops)
def test_no_device_is_held_by_two_running_jobs(ncpus: int, program: list) -> None:  # type: ignore[type-arg]
    # two threads per core, as a hyperthreaded machine (placement prefers whole cores)
    topo = Topology(tuple(range(ncpus)), {c: c - c % 2 for c in range(ncpus)})
    devices = Devices(topo, GPUS)
    keeper = Guard(None, topology=topo)
    running: dict[int, Job] = {}
    next_id, token = 1, 0

    def free() -> tuple[int, int]:
        used = list(running.values())
        return ncpus - sum(j.procs for j in used), len(GPUS) - sum(j.gpus for j in used)

    for op, pick, procs, gpus in program:
        if op == "start":
            if procs > free()[0] or gpus > free()[1]:
                continue  # the scheduler starts only what fits
            j = Job(next_id, "j", Q, procs, 0, gpus=gpus)
            next_id += 1
            devices.take(j)
            running[j.id] = j
        elif op == "end" and running:
            x = running.pop(sorted(running)[pick % len(running)])
            devices.release(x.id)
        elif op == "armed" and running:
            x = running[sorted(running)[pick % len(running)]]
            fp, fg = free()
            if procs > x.procs + fp or gpus > x.gpus + fg:
                continue  # arm_plan arms only what fits once x has ended
            y = Job(next_id, "j", Q, procs, 0, gpus=gpus)
            next_id += 1
            token += 1
            covered = procs <= x.procs and gpus <= x.gpus
            cpus, gids = devices.reserve(token) if not covered else ((), ())
            entry = ArmedStart(token, launch_of(y), None, False, cpus, gids)
            started = keeper.hand_over(launch_of(x), entry)  # in the keeper, as x ends
            assert started is not None
            assert started.cpus is not None
            assert len(started.cpus) == procs
            assert started.gpus is not None
            assert len(started.gpus) == gpus
            # the daemon hears of x's end, then of y's start
            del running[x.id]
            devices.release(x.id)
            y.cpu_ids, y.gpu_ids = devices.handed_over(
                y.id, *Handover(token, started.cpus, started.gpus)
            )
            assert (y.cpu_ids, y.gpu_ids) == (started.cpus, started.gpus)
            running[y.id] = y
        held_cpus = [c for j in running.values() for c in j.cpu_ids or ()]
        held_gpus = [g for j in running.values() for g in j.gpu_ids or ()]
        assert len(held_cpus) == len(set(held_cpus)) == sum(j.procs for j in running.values())
        assert len(held_gpus) == len(set(held_gpus)) == sum(j.gpus for j in running.values())
        assert devices.cpus is not None
        assert devices.gpus is not None
        assert set(held_cpus) | devices.cpus.free == set(topo.cpus)
        assert set(held_gpus) | devices.gpus.free == set(GPUS)
