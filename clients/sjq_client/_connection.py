"""One blocking connection to the daemon, replies in request order; imports _socket, protocol.

Never asyncio, subprocess or anything of the daemon: it is on the path of every `sjq submit`.
"""

from __future__ import annotations

# The C module, not `socket`: socket.py builds four IntEnums on import, several ms of every
# `sjq submit`; the plain socket object has every method used here.
import _socket
import time
from collections.abc import Sequence

from sjq.protocol import NEED_DATA, Reply, ReplyReader, Request, encode_request, expects_data
from sjq.protocol import ProtocolError as _WireProtocolError

from ._exceptions import ConnectionLost, DaemonNotRunning, ProtocolError, TransportError

__all__ = ["BATCH_BYTES", "Connection", "Dropped", "connect", "connect_error", "no_answer"]

# Requests are pipelined in batches of about this many bytes: the daemon stops reading from a
# client whose replies pile up unread (4 MiB), so a client that wrote a million KILLs before
# reading any reply would block for ever. One batch always fits in the socket's buffer.
BATCH_BYTES = 32 * 1024
_RECV = 256 * 1024
LEFTOVER_WAIT = 1.0  # seconds to read what a daemon said before it closed the connection
# A connect that would block (EAGAIN: the daemon's listen backlog is full, a burst of clients)
# is tried again for this long when the client has no timeout of its own.
BUSY_WAIT = 10.0


class Dropped(Exception):
    """The daemon closed the connection (or it broke) before every reply was in.

    ``answered`` replies had arrived. ``sent``: the request after them had been sent in full,
    so it may have been carried out; if not, the daemon cannot have acted on it. Internal: the
    client turns it into a retry or a ConnectionLost.
    """

    def __init__(self, answered: int, why: str, *, sent: bool) -> None:
        super().__init__(why)
        self.answered = answered
        self.sent = sent


def connect(path: str, timeout: float | None) -> Connection:
    """A connection to the daemon on ``path``; DaemonNotRunning when nothing listens there."""
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    sock.settimeout(timeout)
    deadline = None
    delay = 0.001
    while True:
        try:
            sock.connect(path)
        except BlockingIOError:
            # The daemon's backlog is full (many clients at once, or a daemon that is busy
            # or stopped): it is there, so try again for a while before giving up.
            now = time.monotonic()
            if deadline is None:
                deadline = now + (BUSY_WAIT if timeout is None else timeout)
            if now >= deadline:
                sock.close()
                raise ConnectionLost(_busy(path, timeout), path) from None
            time.sleep(min(delay, deadline - now))
            delay = min(delay * 2, 0.05)
            continue
        except OSError as e:
            sock.close()
            raise connect_error(path, e, timeout) from None
        return Connection(sock, path)


def connect_error(path: str, e: OSError, timeout: float | None) -> TransportError:
    """The error for a connect to ``path`` that failed with ``e`` (for a BlockingIOError: that
    kept failing so until the client's timeout)."""
    if isinstance(e, FileNotFoundError | ConnectionRefusedError):
        # No socket file, or one left behind by a daemon that died: nobody is listening.
        return DaemonNotRunning(path)
    if isinstance(e, TimeoutError | BlockingIOError):
        return ConnectionLost(_busy(path, timeout), path)
    return TransportError(f"cannot connect to {path}: {e.strerror or e}", path)


def _busy(path: str, timeout: float | None) -> str:
    wait = BUSY_WAIT if timeout is None else timeout
    return (
        f"the sjq daemon on {path} did not accept a connection within {wait:g} s;"
        " it may be overloaded (sjq.maxconns, sjq.backlog) or stopped, try again"
    )


def no_answer(path: str, timeout: float | None) -> ConnectionLost:
    """The error for a request not answered within ``timeout`` seconds."""
    return ConnectionLost(
        f"the sjq daemon on {path} did not answer within {timeout:g} s; it may be"
        " busy: try again, or give the client a longer timeout",
        path,
    )


class Connection:
    """A connected socket and the reader of its replies. Not thread-safe."""

    __slots__ = ("path", "reader", "sock")

    def __init__(self, sock: _socket.socket, path: str) -> None:
        self.sock = sock
        self.path = path
        self.reader = ReplyReader()

    def close(self) -> None:
        self.sock.close()

    def is_stale(self) -> bool:
        """True if the daemon has closed this (idle) connection, e.g. because it restarted.

        A non-blocking peek: EOF or an error means stale. Bytes waiting on an idle connection
        (a refusal such as ``ERROR too many connections``) are left for the next read.
        """
        # Non-blocking mode, not just MSG_DONTWAIT: with a timeout set, Python polls for up
        # to the timeout before it calls recv at all. `exchange` sets the timeout again.
        self.sock.setblocking(False)
        try:
            data = self.sock.recv(1, _socket.MSG_PEEK)
        except BlockingIOError:
            return False  # open, nothing to read: the normal case
        except OSError:
            return True
        return not data

    def exchange(self, requests: Sequence[Request], timeout: float | None) -> list[Reply]:
        """Send ``requests`` pipelined, in batches, and return their replies in order.

        Raises Dropped (connection closed or broken), ConnectionLost (no reply within
        ``timeout`` seconds; the connection is then useless) or ProtocolError.
        """
        self.sock.settimeout(timeout)
        replies: list[Reply] = []
        start = 0
        while start < len(requests):
            size, end = 0, start
            chunks: list[bytes] = []
            while end < len(requests) and (end == start or size < BATCH_BYTES):
                data = encode_request(requests[end])
                chunks.append(data)
                size += len(data)
                end += 1
            try:
                self.sock.sendall(b"".join(chunks))
            except TimeoutError:
                raise self._timed_out(timeout) from None
            except OSError as e:  # EPIPE, ECONNRESET: the daemon closed the connection
                # It may have said why first (a script over sjq.maxsrc: ERROR, then close).
                replies += self._leftover_replies(requests[len(replies) : end])
                if len(replies) == len(requests):
                    return replies
                raise Dropped(len(replies), e.strerror or str(e), sent=False) from None
            try:
                for request in requests[start:end]:
                    replies.append(self._read(expects_data(request), len(replies)))
            except TimeoutError:
                raise self._timed_out(timeout) from None
            start = end
        return replies

    def _leftover_replies(self, requests: Sequence[Request]) -> list[Reply]:
        """Replies already sent by a daemon that has closed the connection on us."""
        out: list[Reply] = []
        self.sock.settimeout(LEFTOVER_WAIT)
        try:
            for request in requests:
                out.append(self._read(expects_data(request), 0))
        except (Dropped, TimeoutError, ProtocolError):
            pass
        return out

    def _read(self, expect_data: bool, answered: int) -> Reply:
        """The next reply; TimeoutError when the socket's timeout passes first."""
        reader = self.reader
        while True:
            try:
                reply = reader.next_reply(expect_data)
            except _WireProtocolError as e:
                raise ProtocolError(
                    f"unreadable reply from {self.path}: {e}; is an sjq daemon listening there?"
                ) from None
            if reply is not NEED_DATA:
                return reply
            try:
                data = self.sock.recv(_RECV)
            except TimeoutError:
                raise
            except OSError as e:
                raise Dropped(answered, e.strerror or str(e), sent=True) from None
            if not data:
                # EOF is not fed to the reader: it would call it a protocol error, but a daemon
                # that stops (SHUTDOWN, auto-shutdown, a crash) closes connections this way.
                raise Dropped(answered, "the daemon closed the connection", sent=True)
            reader.receive_data(data)

    def _timed_out(self, timeout: float | None) -> ConnectionLost:
        self.close()  # a reply may still come; this connection can no longer be kept in step
        return no_answer(self.path, timeout)

    def wait_reply(self, timeout: float | None) -> Reply:
        """The next reply of a WAIT already sent. Raises TimeoutError after ``timeout`` seconds
        (the connection must then be closed: that reply may still come)."""
        self.sock.settimeout(timeout)
        return self._read(False, 0)

    def send(self, requests: Sequence[Request]) -> None:
        """Send requests without reading replies (WAIT, whose replies are read one by one)."""
        try:
            self.sock.sendall(b"".join(encode_request(r) for r in requests))
        except OSError as e:
            raise Dropped(0, e.strerror or str(e), sent=False) from None
