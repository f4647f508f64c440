"""Fixtures of the real-daemon tests that the rest of the suite does not need."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support import Daemon, make_daemon, reap_leftovers


@pytest.fixture(scope="module")
def shared_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """One daemon for a whole module, for tests that neither count jobs nor change settings:
    2 CPUs, 8G, small request limits (sjq.maxline=1K, sjq.maxsrc=4K)."""
    tmp = tmp_path_factory.mktemp("shared")
    d = make_daemon(tmp, maxline="1K", maxsrc="4K")
    try:
        yield d.start()
    finally:
        d.stop()
        reap_leftovers(str(tmp))


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A directory that user nobody can reach (the pytest tmp tree is 0700 root)."""
    path = Path(tempfile.mkdtemp(prefix="sjq-test-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        reap_leftovers(str(path))
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def public_daemon(public_dir: Path, daemon_factory: Callable[..., Daemon]) -> Iterator[Daemon]:
    """A root daemon whose socket, spool and TMPDIR root user nobody can reach."""
    (public_dir / "tmp").mkdir(mode=0o1777)
    (public_dir / "tmp").chmod(0o1777)
    d = daemon_factory(
        socket=str(public_dir / "s.sock"),
        spool=str(public_dir / "spool"),
        rundir=str(public_dir / "run"),
        tmpdir=str(public_dir / "tmp"),
    ).start()
    os.chmod(d.socket, 0o666)  # as an admin would, to share a root daemon
    yield d
    d.stop()  # before public_dir goes
