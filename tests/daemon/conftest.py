"""Fixtures of the real-daemon tests that the rest of the suite does not need."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from conftest import Daemon, make_daemon, reap_leftovers


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
