"""A keeper's `Guard` moving the keeper's own thread off a pinned job's CPUs (real
affinity calls, in a thread of their own so that the test process keeps its CPUs)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

import pytest

from sjq.contain.cpus import Topology
from sjq.jobs import JobLaunch
from sjq.keeper.guard import Guard

CPUS = sorted(os.sched_getaffinity(0))

needs_two = pytest.mark.skipif(len(CPUS) < 2, reason="needs two CPUs to step aside to")


def in_thread(fn: Callable[[], object]) -> object:
    out: list[object] = []
    t = threading.Thread(target=lambda: out.append(fn()))
    t.start()
    t.join(10)
    assert out, "the thread did not finish"
    return out[0]


def guard(spare: tuple[int, ...]) -> Guard:
    g = Guard(None, topology=Topology.flat(CPUS))
    g.home = set(CPUS)
    g.spare = spare
    return g


def launch(cpus: tuple[int, ...] | None) -> JobLaunch:
    return JobLaunch(1, b"#!/bin/sh\n", "/", "/dev/null", "/dev/null", {}, cpus=cpus)


@needs_two
def test_after_a_pinned_start_the_keeper_goes_on_on_spare_cpus_then_back() -> None:
    job, rest = CPUS[0], tuple(CPUS[1:])

    def run() -> tuple[set[int], set[int], set[int]]:
        g = guard((job, *rest))  # the job's own CPU may still be listed as spare: not used
        with g.context(launch((job,)), None):
            inside = os.sched_getaffinity(0)  # what a process spawned here starts with
        after = os.sched_getaffinity(0)
        g.step_back()
        return inside, after, os.sched_getaffinity(0)

    inside, after, back = in_thread(run)  # type: ignore[misc]
    assert inside == {job}
    assert after == set(rest)
    assert back == set(CPUS)


@needs_two
def test_without_a_spare_cpu_or_pinning_the_keeper_stays_where_it_may_run() -> None:
    def run() -> list[set[int]]:
        seen = []
        for spare, cpus in (((), (CPUS[0],)), ((CPUS[0],), (CPUS[0],)), (tuple(CPUS), None)):
            g = guard(spare)
            with g.context(launch(cpus), None):
                pass
            seen.append(os.sched_getaffinity(0))
            assert not g.aside
            g.step_back()
        return seen

    assert in_thread(run) == [set(CPUS)] * 3
