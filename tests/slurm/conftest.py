"""Fixtures of the Slurm tests: one real single-node cluster per session (and one with
accounting through slurmdbd and MariaDB, and one that holds jobs to their memory with
cgroups), started on first use and stopped at the end.

``slurm`` and ``slurm_acct`` give a test a cluster with no job left over from the test before
it, and set ``SLURM_CONF`` in the test's environment, so a daemon or command the test starts
talks to that cluster. Without the Debian packages (or root) these tests skip and say why.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from .cluster import (
    Cluster,
    Munge,
    Unavailable,
    public_dir,
    start_accounting_cluster,
    start_cluster,
)


@pytest.fixture(scope="session")
def slurm_base() -> Iterator[Path]:
    """The session's private directory for every Slurm daemon (0755: munge must reach it)."""
    base = public_dir("sjq-slurm-")
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def munge(slurm_base: Path) -> Iterator[Munge]:
    m = Munge(slurm_base / "munge")
    try:
        m.start()
    except Unavailable as e:
        m.stop()
        pytest.skip(str(e))
    try:
        yield m
    finally:
        m.stop()


@pytest.fixture(scope="session")
def slurm_cluster(slurm_base: Path, munge: Munge) -> Iterator[Cluster]:
    """slurmctld + slurmd without accounting (AccountingStorageType=accounting_storage/none)."""
    try:
        cluster = start_cluster(slurm_base, "sjqt", munge)
    except Unavailable as e:
        pytest.skip(str(e))
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def slurm_cgroup_cluster(slurm_base: Path, munge: Munge) -> Iterator[Cluster]:
    """A cluster whose jobs are held to their memory by cgroups (task/cgroup on cgroup v1):
    a job over its --mem ends OUT_OF_MEMORY, which the sampling of the others cannot give."""
    try:
        cluster = start_cluster(slurm_base, "sjqc", munge, cgroup=True)
    except Unavailable as e:
        pytest.skip(str(e))
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def slurm_acct_cluster(slurm_base: Path, munge: Munge) -> Iterator[Cluster]:
    """A second cluster whose jobs are stored by slurmdbd in a private MariaDB."""
    try:
        acct, cluster = start_accounting_cluster(slurm_base, "sjqa", munge)
    except Unavailable as e:
        pytest.skip(str(e))
    try:
        yield cluster
    finally:
        cluster.stop()
        acct.stop()


def _fresh(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cluster]:
    if not (cluster.ctld and cluster.ctld.running):
        cluster.start_controller()  # a test that stopped it failed before restarting it
    cluster.cancel_all()
    monkeypatch.setenv("SLURM_CONF", str(cluster.conf))
    yield cluster
    if not (cluster.ctld and cluster.ctld.running):
        cluster.start_controller()
    cluster.cancel_all()


@pytest.fixture
def slurm(slurm_cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cluster]:
    """The session's cluster with an empty queue; ``$SLURM_CONF`` points at it."""
    yield from _fresh(slurm_cluster, monkeypatch)


@pytest.fixture
def slurm_cgroup(
    slurm_cgroup_cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Cluster]:
    """The cgroup cluster with an empty queue; ``$SLURM_CONF`` points at it."""
    yield from _fresh(slurm_cgroup_cluster, monkeypatch)


@pytest.fixture
def slurm_acct(slurm_acct_cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cluster]:
    """The accounting cluster with an empty queue; ``$SLURM_CONF`` points at it."""
    yield from _fresh(slurm_acct_cluster, monkeypatch)
