"""Shared fixtures: a real daemon on a socket under tmp_path, and gate files. The helpers
behind them (bounded waits, the raw protocol client, the daemon process) are in `support`;
tests import those from there, never from a conftest."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support import Daemon, Gate, make_daemon, reap_leftovers


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


@pytest.fixture
def daemon(daemon_factory: Callable[..., Daemon]) -> Daemon:
    """A running daemon: 2 CPUs, 8G, default job memory 100M, no auto-shutdown."""
    return daemon_factory().start()
