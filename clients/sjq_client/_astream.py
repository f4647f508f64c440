"""AsyncClient's connection: requests out as they are sent, a reader task handing each reply
to its request in order; opening one (or adopting the one a daemon start gave). Imports
asyncio, so loaded only with AsyncClient."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket as _socket_module
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from sjq.protocol import NEED_DATA, Reply, ReplyReader, Request, encode_request, expects_data
from sjq.protocol import ProtocolError as _WireProtocolError

from ._connection import BUSY_WAIT, connect_error
from ._exceptions import ProtocolError

if TYPE_CHECKING:
    from ._connection import Connection

__all__ = ["Broken", "Stream", "adopt", "forget", "open_stream"]

_RECV = 256 * 1024


class Broken(Exception):
    """The connection closed or broke before this request's reply came. Internal."""


class Stream:
    """One connection: requests go out as they are sent, a reader task matches the replies to
    them in order. Replies of requests whose callers stopped waiting (cancelled, timed out) are
    still read and dropped, so the connection never gets out of step."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str
    ) -> None:
        self.path = path
        self._reader = reader
        self._writer = writer
        self._replies = ReplyReader()
        # One entry per request sent and not yet answered: does its reply carry data, and
        # the future its caller awaits.
        self._waiting: collections.deque[tuple[bool, asyncio.Future[Reply]]] = collections.deque()
        self.broken: str | None = None  # why the connection can no longer be used
        self.retired = False  # takes no new request; closes once every reply is in
        self._task = asyncio.get_running_loop().create_task(self._read_loop())

    def send(self, requests: Sequence[Request]) -> list[asyncio.Future[Reply]]:
        """Write the requests (all at once, or none: nothing here awaits); a future per reply.

        Broken if the connection was already known to be closed: nothing was sent.
        """
        if self.broken is not None:
            raise Broken(self.broken)
        if self.retired:
            raise Broken("the daemon is stopping")
        data = b"".join(encode_request(r) for r in requests)
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[Reply]] = []
        for request in requests:
            future: asyncio.Future[Reply] = loop.create_future()
            self._waiting.append((expects_data(request), future))
            futures.append(future)
        self._writer.write(data)
        self._pump()  # a reply may already be buffered (a refusal the daemon sent on accept)
        return futures

    async def drain(self) -> None:
        """Wait while the socket's buffer is full. A broken connection is the reader's to
        report (through the futures): its errors are not raised here."""
        with contextlib.suppress(OSError):
            await self._writer.drain()

    async def _read_loop(self) -> None:
        why = "the daemon closed the connection"
        try:
            while self.broken is None:
                try:
                    data = await self._reader.read(_RECV)
                except OSError as e:
                    why = e.strerror or str(e)
                    break
                if not data:
                    break
                self._replies.receive_data(data)
                self._pump()
        finally:
            self._fail(why)

    def _pump(self) -> None:
        """Hand every complete reply to its request, oldest first."""
        while self._waiting and self.broken is None:
            expect_data, future = self._waiting[0]
            try:
                reply = self._replies.next_reply(expect_data)
            except _WireProtocolError as e:
                error = ProtocolError(
                    f"unreadable reply from {self.path}: {e}; is an sjq daemon listening there?"
                )
                self._waiting.popleft()
                if not future.done():
                    future.set_exception(error)
                self._fail(f"unreadable reply: {e}")
                return
            if reply is NEED_DATA:
                return
            self._waiting.popleft()
            if not future.done():  # else its caller has gone: the reply is dropped
                future.set_result(reply)
        if self.retired and not self._waiting:
            self.close()

    def retire(self) -> bool:
        """Take no new request (its daemon is stopping) and close once every request sent
        has its reply. True if that is still to come (else closed now)."""
        self.retired = True
        if self._waiting and self.broken is None:
            return True
        self.close()
        return False

    def _fail(self, why: str) -> None:
        """Mark the connection broken and tell every request still waiting."""
        if self.broken is None:
            self.broken = why
            self._writer.close()
        while self._waiting:
            _, future = self._waiting.popleft()
            if not future.done():
                future.set_exception(Broken(why))

    def close(self) -> None:
        """Close now; requests still waiting get Broken. The reader task ends on its own."""
        self._fail("the connection was closed")
        self._task.cancel()

    async def aclose(self) -> None:
        self.close()
        await asyncio.gather(self._task, return_exceptions=True)
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()


async def open_stream(path: str, timeout: float | None) -> Stream:
    """A connection to the daemon on ``path``; DaemonNotRunning when nothing listens there.

    As `_connection.connect`: a connect that would block (the daemon's backlog is full) is
    tried again until the timeout.
    """
    loop = asyncio.get_running_loop()
    sock = _socket_module.socket(_socket_module.AF_UNIX, _socket_module.SOCK_STREAM)
    sock.setblocking(False)
    deadline = loop.time() + (BUSY_WAIT if timeout is None else timeout)
    delay = 0.001
    try:
        while True:
            try:
                sock.connect(path)  # a UNIX socket connects at once, or not at all
                break
            except BlockingIOError as e:
                left = deadline - loop.time()
                if left <= 0:
                    raise connect_error(path, e, timeout) from None
                await asyncio.sleep(min(delay, left))
                delay = min(delay * 2, 0.05)
        try:
            reader, writer = await asyncio.open_unix_connection(sock=sock)
        except OSError as e:
            raise connect_error(path, e, timeout) from None
    except OSError as e:
        sock.close()
        raise connect_error(path, e, timeout) from None
    except BaseException:
        sock.close()
        raise
    return Stream(reader, writer, path)


async def adopt(conn: Connection) -> Stream:
    """The blocking connection a daemon start gave, as an asyncio stream (its replies are all
    read: auto-start sent only a PING)."""
    sock = _socket_module.socket(fileno=conn.sock.detach())
    try:
        reader, writer = await asyncio.open_unix_connection(sock=sock)
    except BaseException:
        sock.close()
        raise
    return Stream(reader, writer, conn.path)


def forget(futures: Iterable[asyncio.Future[Reply]]) -> None:
    """Let go of the futures of a call that has returned or given up: cancel those still
    waiting (their replies will be read and dropped), mark errors of the others as seen."""
    for future in futures:
        if not future.done():
            future.cancel()
        elif not future.cancelled():
            future.exception()
