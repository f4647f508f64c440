"""The asyncio side of the server (sjq.server.Connection) in this process, no daemon: a real
listening UNIX socket (`bind_socket`, as the daemon binds it) served by
``loop.create_unix_server`` with a `Connection` per client, real socket clients, and a small
`Host` of the test's own that answers requests as the test says and ends each turn as the
daemon does (``call_soon``, then `send_replies` on every connection that asked for it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from sjq.protocol import (
    Data,
    Error,
    Exit,
    Kill,
    Ok,
    Ping,
    Request,
    Shutdown,
    Status,
    Stop,
    Submit,
    Wait,
)
from sjq.replies import Accepted, Peer, Waiter
from sjq.server import Connection, Limits, bind_socket

pytestmark = pytest.mark.asyncio

LIMITS = Limits(max_line=256, max_src=1024, idle_timeout=5.0)
TIMEOUT = 5.0  # seconds any one wait of these tests may take


class Host:
    """The daemon's part, as small as a test needs: PING is ``OK``, STATUS a payload, SUBMIT
    an `Accepted` and WAIT a `Waiter` (both ready when the test says), KILL a bug."""

    def __init__(self, refusal: str | None = None) -> None:
        self.refusal = refusal
        self.conns: list[Connection] = []
        self.handled: list[tuple[Request, Peer]] = []
        self.accepted: list[Accepted] = []
        self.waiters: list[Waiter] = []
        self.gone: list[tuple[Connection, list[Waiter]]] = []
        self.answered_waits: list[Waiter] = []
        self.turns = 0
        self._dirty: dict[Connection, None] = {}
        self._turn: asyncio.Handle | None = None

    # -- sjq.server.Host --

    def connected(self, conn: Connection) -> str | None:
        if self.refusal is None:
            self.conns.append(conn)
        return self.refusal

    def disconnected(self, conn: Connection, waits: list[Waiter]) -> None:
        self.gone.append((conn, waits))

    def handle(
        self, conn: Connection, req: Request, peer: Peer
    ) -> Ok | Data | Error | Waiter | Accepted:
        self.handled.append((req, peer))
        match req:
            case Ping():
                return Ok("")
            case Status(jobid):
                return Data(f"{jobid}\tname\tQ\t\r\n".encode())
            case Submit():
                self.accepted.append(Accepted(len(self.accepted) + 1))
                return self.accepted[-1]
            case Wait(ids):
                self.waiters.append(Waiter(ids, dict.fromkeys(ids, "S")))
                return self.waiters[-1]
            case Kill():
                raise RuntimeError("boom")
            case Exit():
                return Ok("BYE")
            case _:
                return Ok()

    def want_turn(self, conn: Connection) -> None:
        self._dirty[conn] = None
        if self._turn is None:
            self._turn = asyncio.get_running_loop().call_soon(self.end_turn)

    def answered(self, waiter: Waiter) -> None:
        self.answered_waits.append(waiter)

    # -- the daemon's end of a turn --

    def end_turn(self) -> None:
        self._turn = None
        dirty, self._dirty = self._dirty, {}
        for conn in dirty:
            conn.send_replies()
        self.turns += 1

    def ready(self, conn: Connection) -> None:
        """Replies became ready (a commit, a job's end): send them at the end of the turn."""
        self.want_turn(conn)


class Client:
    """A real socket client, non-blocking, read through the event loop."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    async def send(self, data: bytes) -> None:
        await asyncio.get_running_loop().sock_sendall(self.sock, data)

    async def _recv(self) -> bytes:
        async with asyncio.timeout(TIMEOUT):
            return await asyncio.get_running_loop().sock_recv(self.sock, 65536)

    async def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = await self._recv()
            if not chunk:
                raise ConnectionError(f"closed; partial {self.buf!r}")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line + b"\r\n"

    async def payload(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = await self._recv()
            if not chunk:
                raise ConnectionError("closed mid-payload")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    async def rest(self) -> bytes:
        """Everything until the server closes the connection."""
        while chunk := await self._recv():
            self.buf += chunk
        data, self.buf = self.buf, b""
        return data

    def nothing_sent(self) -> bool:
        """Whether nothing has arrived (what the server wrote is in our buffer at once)."""
        try:
            chunk = self.sock.recv(65536)
        except BlockingIOError:
            return self.buf == b""
        self.buf += chunk
        return False


async def until(predicate: Callable[[], object], what: str) -> None:
    """A bounded wait for something the event loop will make true."""
    deadline = time.monotonic() + TIMEOUT
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.001)


class Server:
    def __init__(self, path: str, host: Host) -> None:
        self.path = path
        self.host = host
        self.clients: list[Client] = []

    async def client(self) -> Client:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.setblocking(False)
        c = Client(s)
        self.clients.append(c)
        await asyncio.get_running_loop().sock_connect(s, self.path)
        return c

    async def settled(self, requests: int) -> None:
        """Once the host has handled ``requests`` requests in all and ended the turn."""
        host = self.host
        await until(
            lambda: len(host.handled) >= requests and host._turn is None and host.turns,
            f"{requests} requests to be handled",
        )


@contextlib.asynccontextmanager
async def serving(
    tmp_path: Path, host: Host | None = None, limits: Limits = LIMITS
) -> AsyncIterator[Server]:
    host = host or Host()
    path = str(tmp_path / "s.sock")
    loop = asyncio.get_running_loop()
    listener = await loop.create_unix_server(
        lambda: Connection(host, limits), sock=bind_socket(path)
    )
    server = Server(path, host)
    try:
        yield server
    finally:
        for c in server.clients:
            c.sock.close()
        listener.close()
        await listener.wait_closed()
        for conn in host.conns:
            conn.abort()
        await asyncio.sleep(0)  # the transports' close callbacks


def submit(body: bytes = b"#!/bin/sh\n") -> bytes:
    return b"SUBMIT\nSRC %d\n" % len(body) + body


async def test_pipelined_requests_are_answered_in_order(tmp_path: Path) -> None:
    async with serving(tmp_path) as srv:
        c = await srv.client()
        await c.send(b"PING\nSTATUS 3\nBOGUS\nPING\n")
        assert await c.line() == b"OK \r\n"
        assert await c.line() == b"OK 11\r\n"
        assert await c.payload(11) == b"3\tname\tQ\t\r\n"
        assert await c.line() == b"ERROR Unknown command\r\n"
        assert await c.line() == b"OK \r\n"
        assert [type(req) for req, _ in srv.host.handled] == [Ping, Status, Ping]


async def test_the_host_learns_who_the_client_is(tmp_path: Path) -> None:
    async with serving(tmp_path) as srv:
        c = await srv.client()
        await c.send(b"PING\n")
        assert await c.line() == b"OK \r\n"
        ((_, peer),) = srv.host.handled
        assert peer == Peer(os.getpid(), os.getuid(), os.getgid())


async def test_a_submit_is_answered_once_durable_and_holds_back_what_follows(
    tmp_path: Path,
) -> None:
    async with serving(tmp_path) as srv:
        c = await srv.client()
        await c.send(submit() + b"PING\n" + submit())
        await srv.settled(3)
        assert c.nothing_sent(), "neither the SUBMIT's reply nor the PING's behind it"
        first, second = srv.host.accepted
        second.durable = True
        srv.host.ready(srv.host.conns[0])
        await srv.settled(3)
        assert c.nothing_sent(), "replies go in request order"
        first.durable = True
        srv.host.ready(srv.host.conns[0])
        assert await c.line() == b"OK 1\r\n"
        assert await c.line() == b"OK \r\n"
        assert await c.line() == b"OK 2\r\n"


async def test_a_submit_that_could_not_be_recorded_is_answered_with_its_error(
    tmp_path: Path,
) -> None:
    async with serving(tmp_path) as srv:
        c = await srv.client()
        await c.send(submit())
        await srv.settled(1)
        (accepted,) = srv.host.accepted
        accepted.error = "cannot record the job: database or disk is full"
        srv.host.ready(srv.host.conns[0])
        assert await c.line() == b"ERROR cannot record the job: database or disk is full\r\n"


async def test_a_wait_is_answered_once_done(tmp_path: Path) -> None:
    async with serving(tmp_path) as srv:
        c = await srv.client()
        await c.send(b"WAIT 4:5\nPING\n")
        await srv.settled(2)
        assert c.nothing_sent()
        (w,) = srv.host.waiters
        w.done = True
        srv.host.ready(srv.host.conns[0])
        assert await c.line() == b"OK 4:S 5:S\r\n"
        assert await c.line() == b"OK \r\n"
        assert srv.host.answered_waits == [w]


async def test_a_wait_whose_job_was_never_recorded_is_answered_with_an_error(
    tmp_path: Path,
) -> None:
    async with serving(tmp_path) as srv:
        c = await srv.client()
        await c.send(b"WAIT 4\n")
        await srv.settled(1)
        (w,) = srv.host.waiters
        w.error = "unknown job 4"
        srv.host.ready(srv.host.conns[0])
        assert await c.line() == b"ERROR unknown job 4\r\n"


async def test_a_client_gone_leaves_its_unanswered_waits_to_the_host(tmp_path: Path) -> None:
    async with serving(tmp_path) as srv:
        c = await srv.client()
        await c.send(b"PING\nWAIT 1\nPING\nWAIT 2\n")
        await srv.settled(4)
        # It goes without reading the first PING's reply: a reset, which the server notices
        # at once (a clean close is only noticed when the replies are written: a client may
        # have shut down only its sending side and still wait for them).
        c.sock.close()
        await until(lambda: srv.host.gone, "the connection to be lost")
        ((conn, waits),) = srv.host.gone
        assert conn is srv.host.conns[0]
        assert waits == srv.host.waiters
        assert len(waits) == 2


async def test_an_answered_wait_is_not_left_to_the_host(tmp_path: Path) -> None:
    async with serving(tmp_path) as srv:
        c = await srv.client()
        await c.send(b"WAIT 1\nWAIT 2\nPING\n")
        await srv.settled(3)
        first, second = srv.host.waiters
        first.done = True
        srv.host.ready(srv.host.conns[0])
        await srv.settled(3)
        c.sock.close()  # the first reply unread
        await until(lambda: srv.host.gone, "the connection to be lost")
        assert srv.host.gone[0][1] == [second]
        assert srv.host.answered_waits == [first]


async def test_a_wait_after_which_the_client_stops_sending_is_still_answered(
    tmp_path: Path,
) -> None:
    """``echo 'WAIT 1' | nc -N -U s.sock``: the request, then EOF, then the reply."""
    async with serving(tmp_path) as srv:
        c = await srv.client()
        await c.send(b"WAIT 1\n")
        c.sock.shutdown(socket.SHUT_WR)
        await srv.settled(1)
        (w,) = srv.host.waiters
        w.done = True
        srv.host.ready(srv.host.conns[0])
        assert await c.rest() == b"OK 1:S\r\n"
        await until(lambda: srv.host.gone, "the connection to be closed")
        assert srv.host.gone[0][1] == []


async def test_an_incomplete_request_is_cut_after_the_idle_timeout(tmp_path: Path) -> None:
    limits = Limits(max_line=256, max_src=1024, idle_timeout=0.2)
    async with serving(tmp_path, limits=limits) as srv:
        c = await srv.client()
        t0 = time.monotonic()
        await c.send(b"SUBMIT\nNAME x\n")
        assert await c.line() == b"ERROR request incomplete after 0.2 s; closing\r\n"
        assert time.monotonic() - t0 >= 0.2
        assert await c.rest() == b""
        assert srv.host.handled == []


async def test_data_keeps_a_slow_request_alive(tmp_path: Path) -> None:
    limits = Limits(max_line=256, max_src=1024, idle_timeout=0.4)
    async with serving(tmp_path, limits=limits) as srv:
        c = await srv.client()
        t0 = time.monotonic()
        for part in (b"SUBMIT\n", b"NAME x\n", b"PRIORITY 1\n", b"SRC 10\n", b"#!/bin/sh"):
            await c.send(part)
            # A request that takes longer than the idle limit, but is never idle that long.
            await asyncio.sleep(0.1)
        await c.send(b"\n")
        await srv.settled(1)
        assert time.monotonic() - t0 > 0.4
        srv.host.accepted[0].durable = True
        srv.host.ready(srv.host.conns[0])
        assert await c.line() == b"OK 1\r\n"


async def test_between_requests_a_connection_may_stay_idle(tmp_path: Path) -> None:
    limits = Limits(max_line=256, max_src=1024, idle_timeout=0.05)
    async with serving(tmp_path, limits=limits) as srv:
        c = await srv.client()
        await c.send(b"PING\n")
        assert await c.line() == b"OK \r\n"
        await asyncio.sleep(0.2)  # a bounded look for a cut that must not come
        assert c.nothing_sent()
        await c.send(b"PING\n")
        assert await c.line() == b"OK \r\n"


async def test_a_fatal_bad_request_is_answered_then_the_connection_closed(
    tmp_path: Path,
) -> None:
    async with serving(tmp_path) as srv:
        c = await srv.client()
        await c.send(b"PING\n" + b"X" * 300 + b"\nPING\n")
        assert await c.line() == b"OK \r\n"
        error = await c.line()
        assert error.startswith(b"ERROR "), error
        assert await c.rest() == b"", "nothing after it is read"
        assert [type(req) for req, _ in srv.host.handled] == [Ping]
        await until(lambda: srv.host.gone, "the connection to be lost")


async def test_a_script_over_the_limit_is_fatal(tmp_path: Path) -> None:
    async with serving(tmp_path) as srv:
        c = await srv.client()
        await c.send(b"SUBMIT\nSRC 2000\n")
        assert (await c.line()).startswith(b"ERROR ")
        assert await c.rest() == b""


@pytest.mark.parametrize(
    ("line", "reply", "kind"),
    [(b"EXIT", b"OK BYE", Exit), (b"SHUTDOWN", b"OK", Shutdown), (b"STOP", b"OK", Stop)],
)
async def test_exit_shutdown_and_stop_close_after_their_reply(
    tmp_path: Path, line: bytes, reply: bytes, kind: type
) -> None:
    async with serving(tmp_path) as srv:
        c = await srv.client()
        await c.send(line + b"\nPING\n")
        assert await c.rest() == reply + b"\r\n"
        assert [type(req) for req, _ in srv.host.handled] == [kind], "nothing after it is read"


async def test_a_refused_connection_gets_its_error_and_is_closed(tmp_path: Path) -> None:
    host = Host(refusal="too many connections (sjq.maxconns = 1)")
    async with serving(tmp_path, host) as srv:
        c = await srv.client()
        assert await c.rest() == b"ERROR too many connections (sjq.maxconns = 1)\r\n"
        eager = await srv.client()
        await eager.send(b"PING\n")  # before the refusal arrived: never read
        assert await eager.line() == b"ERROR too many connections (sjq.maxconns = 1)\r\n"
        with contextlib.suppress(ConnectionResetError):  # the server closed with it unread
            assert await eager.rest() == b""
        assert host.handled == []
        assert host.conns == []


async def test_eof_after_a_request_still_gets_its_reply(tmp_path: Path) -> None:
    async with serving(tmp_path) as srv:
        c = await srv.client()
        await c.send(submit())
        c.sock.shutdown(socket.SHUT_WR)
        await srv.settled(1)
        srv.host.accepted[0].durable = True
        srv.host.ready(srv.host.conns[0])
        assert await c.rest() == b"OK 1\r\n"


async def test_a_bug_in_the_host_costs_one_request(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with serving(tmp_path) as srv:
        c = await srv.client()
        with caplog.at_level(logging.ERROR, logger="sjq.server"):
            await c.send(b"KILL 1\nPING\n")
            assert await c.line() == (
                b"ERROR internal error: RuntimeError: boom; see the daemon log\r\n"
            )
            assert await c.line() == b"OK \r\n"
        assert "internal error handling Kill(jobid=1)" in caplog.text


async def test_clients_are_served_side_by_side(tmp_path: Path) -> None:
    async with serving(tmp_path) as srv:
        a, b = await srv.client(), await srv.client()
        await a.send(submit())
        await srv.settled(1)
        await b.send(b"PING\n")
        assert await b.line() == b"OK \r\n", "one client's pending reply holds up no other"
        assert a.nothing_sent()
        srv.host.accepted[0].durable = True
        srv.host.ready(srv.host.conns[0])
        assert await a.line() == b"OK 1\r\n"
