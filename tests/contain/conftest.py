"""Fixtures of the containment tests: a real cgroup v1 backend below this process's own
groups, a real cgroup v2 backend in a test directory of the unified mount, and a helper
that spawns a job the way the keeper does (posix_spawn, own session, inside its group)."""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytest

from sjq.contain.cgroup import (
    Backend,
    Group,
    GroupPool,
    V1Backend,
    V2Backend,
    detect,
    parse_mountinfo,
)

PY = sys.executable
_names = itertools.count(1)
_spawned: list[int] = []


def _unique() -> str:
    # the pid first: a crashed test run's leftovers are swept as a dead daemon's
    return f"sjq.{os.getpid()}-t{next(_names)}"


def spawn(
    argv: Sequence[str],
    *,
    backend: Backend | None = None,
    group: Group | None = None,
    env: Mapping[str, str] | None = None,
) -> int:
    """Start a job as the keeper does: posix_spawn, a new session, inside ``group``."""
    e = dict(os.environ if env is None else env)
    if backend is not None and group is not None:
        with backend.inside(group):
            pid = os.posix_spawn(argv[0], list(argv), e, setsid=True)
    else:
        pid = os.posix_spawn(argv[0], list(argv), e, setsid=True)
    _spawned.append(pid)
    return pid


@pytest.fixture(autouse=True)
def _reap_jobs() -> Iterator[None]:
    """A failed test may leave its jobs running: kill their sessions and reap them, so
    that the group fixtures can still remove their groups."""
    yield
    while _spawned:
        pid = _spawned.pop()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


def sh(script: str) -> list[str]:
    return ["/bin/sh", "-c", script]


def hold(mb: int, seconds: float = 0.0) -> str:
    """A shell command: a Python process that touches ``mb`` MB and then sleeps."""
    return (
        f"{PY} -c 'import time; b = bytearray({mb} * 2**20);"
        f' b[::4096] = b"x" * len(b[::4096]); time.sleep({seconds})\''
    )


def gate_wait(path: Path) -> str:
    """Shell lines that wait (bounded, 30 s) for a gate file."""
    return f'i=0; while [ ! -e "{path}" ] && [ $i -lt 3000 ]; do sleep 0.01; i=$((i+1)); done; '


@pytest.fixture
def v1() -> Iterator[V1Backend]:
    if os.geteuid() != 0:
        pytest.skip("cgroup v1 hierarchies are writable only by root")
    d = detect(versions=("v1",), name=_unique())
    if not isinstance(d.backend, V1Backend):
        pytest.skip(f"no usable cgroup v1 memory hierarchy here ({d.why})")
    b = d.backend
    b.setup()
    try:
        yield b
    finally:
        b.leave()
        _close(b)


@pytest.fixture
def v1_pool(v1: V1Backend) -> Iterator[GroupPool]:
    pool = GroupPool(v1, size=2)
    pool.tidy()
    try:
        yield pool
    finally:
        assert pool.close(), "a test left processes in its groups"


def _v2_mount() -> str | None:
    with open("/proc/self/mountinfo") as f:
        for m in parse_mountinfo(f.read()):
            if m.fstype == "cgroup2":
                return m.point
    return None


@pytest.fixture
def v2_root() -> Iterator[str]:
    """A directory of our own in the cgroup v2 mount, removed afterwards."""
    mount = _v2_mount()
    if mount is None:
        pytest.skip("no cgroup v2 mount on this machine")
    path = os.path.join(mount, f"sjq-test.{os.getpid()}-{next(_names)}")
    try:
        os.mkdir(path)
    except OSError as e:
        pytest.skip(f"cannot make a cgroup v2 group in {mount}: {e.strerror}")
    try:
        yield path
    finally:
        os.rmdir(path)


@pytest.fixture
def v2(v2_root: str) -> Iterator[V2Backend]:
    d = detect(versions=("v2",), v2_root=v2_root, name=_unique())
    assert isinstance(d.backend, V2Backend), d.why
    b = d.backend
    b.setup()
    try:
        yield b
    finally:
        b.leave()
        _close(b)


def _close(b: Backend) -> None:
    b.teardown()
    left = [p for p in b.bases() if os.path.exists(p)]
    assert not left, f"groups left behind: {left}"


def needs_v2_controller(b: V2Backend, ctrl: str, what: str) -> None:
    """Skip, saying exactly why, when the v2 group has no ``ctrl`` controller."""
    if ctrl in b.controllers:
        return
    with open(os.path.join(b.own, "cgroup.controllers")) as f:
        have = f.read().split()
    with open("/proc/self/mountinfo") as f:
        v1 = [m.point for m in parse_mountinfo(f.read()) if ctrl in m.options]
    where = f"; it is bound to the cgroup v1 hierarchy at {v1[0]}" if v1 else ""
    pytest.skip(
        f"no cgroup v2 {ctrl} controller (cgroup.controllers of {b.own}:"
        f" {' '.join(have) or 'none'}{where}): v2 {what} cannot be tested on this machine"
    )
