"""Shared fixtures: a real daemon on a socket under tmp_path, and gate files. The helpers
behind them (bounded waits, the raw protocol client, the daemon process) are in `support`;
tests import those from there, never from a conftest."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support import Daemon, Gate, Spares, make_daemon, reap_leftovers


@pytest.fixture
def gate(tmp_path: Path) -> Callable[[str], Gate]:
    def make(name: str = "gate") -> Gate:
        return Gate(tmp_path / f"{name}.gate")

    return make


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    """Make (not start) daemons; every one made is stopped and cleaned up afterwards."""
    made: list[Daemon] = []

    def make(**settings: str) -> Daemon:
        d = make_daemon(tmp_path, **settings)
        made.append(d)
        return d

    try:
        yield make
    finally:
        for d in made:
            d.stop()
        reap_leftovers(str(tmp_path))


@pytest.fixture(scope="session")
def _spare_daemons(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Spares]:
    spares = Spares(lambda: tmp_path_factory.mktemp("daemon"))
    try:
        yield spares
    finally:
        spares.close()


@pytest.fixture
def daemon(_spare_daemons: Spares, tmp_path: Path) -> Iterator[Daemon]:
    """A running daemon of this test's own: 2 CPUs, 8G, default job memory 100M, no
    auto-shutdown. Its files are in a directory of their own, not under tmp_path: it was
    started while the test before ran (support.Spares)."""
    d = _spare_daemons.take()
    try:
        yield d
    finally:
        _spare_daemons.give_back(d)
        reap_leftovers(str(tmp_path))
