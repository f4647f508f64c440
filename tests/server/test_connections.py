"""Bursts of connections: the listen backlog reaches the kernel, and clients wait out a
full one instead of failing."""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from sjq_client import Client
from sjq_client._exceptions import ConnectionLost
from support import Daemon, Raw


@contextmanager
def stopped(d: Daemon) -> Iterator[None]:
    """The daemon SIGSTOPped: it accepts nothing, so connections pile up in its backlog."""
    assert d.proc is not None
    d.proc.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        d.proc.send_signal(signal.SIGCONT)


def pile_up(path: str, n: int) -> tuple[list[socket.socket], int]:
    """Connect ``n`` sockets (with a timeout, as clients do) without the daemon accepting
    any; return those that connected and how many were refused with EAGAIN."""
    socks: list[socket.socket] = []
    refused = 0
    for _ in range(n):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(5)
        try:
            s.connect(path)
        except BlockingIOError:  # EAGAIN: the backlog is full
            refused += 1
            s.close()
        else:
            socks.append(s)
    return socks, refused


def test_three_hundred_clients_connecting_at_once_are_all_served(daemon: Daemon) -> None:
    with stopped(daemon):
        socks, refused = pile_up(daemon.socket, 300)
    assert refused == 0  # asyncio's own default backlog of 100 refused about 200 of them
    try:
        for s in socks:
            s.sendall(b"PING\n")
        for s in socks:
            assert s.recv(64).startswith(b"OK"), s
    finally:
        for s in socks:
            s.close()


def test_sjq_backlog_sets_how_many_wait(daemon_factory: Callable[..., Daemon]) -> None:
    d = daemon_factory(backlog="20").start()
    with stopped(d):
        socks, refused = pile_up(d.socket, 40)
    try:
        # Linux queues backlog + 1 on a UNIX socket
        assert 20 <= len(socks) <= 21
        assert refused == 40 - len(socks)
    finally:
        for s in socks:
            s.close()


def test_a_client_waits_out_a_full_backlog(daemon_factory: Callable[..., Daemon]) -> None:
    d = daemon_factory(backlog="1").start()
    assert d.proc is not None
    with stopped(d):
        socks, refused = pile_up(d.socket, 5)
        assert refused
        # Still full: the client tries until its own timeout, then says why.
        t0 = time.monotonic()
        with pytest.raises(ConnectionLost, match=r"did not accept a connection within 0\.5 s"):
            Client(d.socket, autostart=False, timeout=0.5).ping()
        assert time.monotonic() - t0 >= 0.5
        # The daemon comes back while the client is still trying: it is served.
        resume = threading.Timer(0.2, d.proc.send_signal, (signal.SIGCONT,))
        resume.start()
        try:
            with Client(d.socket, autostart=False, timeout=10) as c:
                assert c.ping() is not None
        finally:
            resume.join()
            for s in socks:
                s.close()
    with Raw(d.socket) as r:
        assert r.request("PING").startswith(b"OK")


def test_a_refused_connect_still_means_no_daemon(tmp_path: object) -> None:
    """ECONNREFUSED (a stale socket) is not a busy daemon: no waiting, auto-start decides."""
    from pathlib import Path

    from sjq_client import DaemonNotRunning

    path = str(Path(str(tmp_path)) / "stale.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.close()  # bound, never listening: connect is refused
    t0 = time.monotonic()
    with pytest.raises(DaemonNotRunning):
        Client(path, autostart=False, timeout=5).ping()
    assert time.monotonic() - t0 < 1
