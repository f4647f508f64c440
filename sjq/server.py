"""The UNIX-socket side: one asyncio protocol object per client connection.

Moves bytes between the socket and ``sjq.protocol``; every decision is the daemon's. Imports
no sqlite3 and touches no process.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import stat
import struct
from collections import deque
from dataclasses import dataclass
from typing import Protocol

from sjq.paths import make_dirs
from sjq.protocol import (
    NEED_DATA,
    BadRequest,
    Closed,
    Data,
    Error,
    Exit,
    Ok,
    Request,
    ServerConnection,
    Shutdown,
    Stop,
    encode_reply,
)
from sjq.replies import Accepted, Peer, Waiter

__all__ = [
    "AlreadyRunning",
    "Connection",
    "Host",
    "Limits",
    "bind_socket",
    "file_identity",
    "remove_socket",
]

log = logging.getLogger("sjq.server")

_CRED = struct.Struct("3i")
# Past this many bytes of replies the client has not read, stop reading its requests.
_HIGH_WATER = 4 * 1024 * 1024


class AlreadyRunning(RuntimeError):
    """Another daemon answers on the socket."""


def file_identity(path: str) -> tuple[int, int] | None:
    """The (device, inode) of a file, to tell later whether it is still the same one."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def remove_socket(path: str, ident: tuple[int, int] | None) -> None:
    """Remove our socket file, unless it is no longer ours: a daemon started while this one
    was stopping may have bound a new one at the same path."""
    if ident is not None and file_identity(path) == ident:
        with contextlib.suppress(OSError):
            os.unlink(path)


def bind_socket(path: str, backlog: int = 512) -> socket.socket:
    """Bind the listening socket with mode 0600, cleaning up a stale one left by a crash."""
    if os.path.lexists(path):
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            raise AlreadyRunning(f"{path} exists and is not a socket; remove it or set sjq.socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(2.0)
        try:
            probe.connect(path)
        except OSError as e:
            if e.errno not in (errno.ECONNREFUSED, errno.ENOENT):
                raise
            os.unlink(path)  # nobody listens: a crashed daemon's socket
        else:
            raise AlreadyRunning(f"an sjq daemon is already running on {path}")
        finally:
            probe.close()
    make_dirs(os.path.dirname(os.path.abspath(path)))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(path)
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


@dataclass(frozen=True, slots=True)
class Limits:
    """What one connection may send: request line and script sizes, and how long it may
    stop in the middle of a request."""

    max_line: int
    max_src: int
    idle_timeout: float


class Host(Protocol):
    """What a connection needs of the daemon, and nothing more."""

    def connected(self, conn: Connection) -> str | None:
        """Take a new client (None), or say why not (the refusal is sent, then closed)."""
        ...

    def disconnected(self, conn: Connection, waits: list[Waiter]) -> None:
        """The client is gone; ``waits`` are its WAITs still unanswered."""
        ...

    def handle(
        self, conn: Connection, req: Request, peer: Peer
    ) -> Ok | Data | Error | Waiter | Accepted: ...

    def want_turn(self, conn: Connection) -> None:
        """This connection has replies for the end of the turn."""
        ...

    def answered(self, waiter: Waiter) -> None:
        """A WAIT's reply was sent."""
        ...


class Connection(asyncio.Protocol):
    """One client. Replies are queued in request order and written at the end of the turn,
    after its commit, so an ``OK <id>`` never reaches a client before its job is on disk."""

    def __init__(self, host: Host, limits: Limits) -> None:
        self.host = host
        self.limits = limits
        self.proto = ServerConnection(max_line=limits.max_line, max_src=limits.max_src)
        # Replies in request order; a SUBMIT's and a WAIT's are sent once they are final.
        self.out: deque[bytes | Waiter | Accepted] = deque()
        self.closing = False
        self.paused = False
        self.last_data = 0.0
        self.peer = Peer(0, -1, -1)
        self.transport: asyncio.Transport | None = None
        self._idle_timer: asyncio.TimerHandle | None = None

    # -- asyncio callbacks --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        pid, uid, gid = _CRED.unpack(
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CRED.size)
        )
        self.peer = Peer(pid, uid, gid)
        refusal = self.host.connected(self)
        if refusal is not None:
            self.transport.write(encode_reply(Error(refusal)))
            self.transport.close()
            self.closing = True

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self.last_data = asyncio.get_running_loop().time()
        proto = self.proto
        proto.receive_data(data)
        while True:
            ev = proto.next_event()
            if ev is NEED_DATA:
                break
            if isinstance(ev, Closed):
                self.closing = True
                break
            if isinstance(ev, BadRequest):
                self.out.append(encode_reply(Error(ev.message)))
                if ev.fatal:
                    self.closing = True
                    break
                continue
            try:
                reply = self.host.handle(self, ev, self.peer)
            except Exception as e:
                # A bug must cost one request, not the connection or the daemon.
                log.exception("internal error handling %r", ev)
                reply = Error(f"internal error: {type(e).__name__}: {e}; see the daemon log")
            if isinstance(reply, Waiter | Accepted):
                self.out.append(reply)
            else:
                self.out.append(encode_reply(reply))
            if isinstance(ev, Exit | Shutdown | Stop):
                self.closing = True  # nothing after these is read
                break
        self.host.want_turn(self)
        if proto.in_request and self._idle_timer is None:
            self._watch_idle(self.limits.idle_timeout)

    def eof_received(self) -> bool:
        self.data_received(b"")
        return True  # keep the write side open until our replies are out

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.host.disconnected(self, [w for w in self.out if isinstance(w, Waiter)])
        self.out.clear()
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def pause_writing(self) -> None:
        if self.transport is not None and not self.paused:
            self.paused = True
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and self.paused:
            self.paused = False
            self.transport.resume_reading()

    # -- the daemon's calls --

    def send_replies(self) -> None:
        """Write every reply that is ready, in order; close once the last one is out."""
        t = self.transport
        if t is None or t.is_closing():
            return
        out = self.out
        chunks: list[bytes] = []
        while out:
            head = out[0]
            if isinstance(head, Waiter):
                if not (head.done or head.error):
                    break  # its jobs have not all ended, or that is not on disk yet
                self.host.answered(head)
                chunks.append(encode_reply(head.reply()))
            elif isinstance(head, Accepted):
                if not head.ready:
                    break  # OK <id> only once the job is on disk
                chunks.append(encode_reply(head.reply()))
            else:
                chunks.append(head)
            out.popleft()
        if chunks:
            t.write(b"".join(chunks))
        if self.closing and not out:
            t.close()
        elif t.get_write_buffer_size() > _HIGH_WATER:
            self.pause_writing()

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            if self.transport is not None:
                self.transport.close()

    # -- a request left half-way --

    def _watch_idle(self, delay: float) -> None:
        self._idle_timer = asyncio.get_running_loop().call_later(delay, self._check_idle)

    def _check_idle(self) -> None:
        self._idle_timer = None
        if self.closing or not self.proto.in_request:
            return
        limit = self.limits.idle_timeout
        idle = asyncio.get_running_loop().time() - self.last_data
        if idle >= limit:
            self.out.append(encode_reply(Error(f"request incomplete after {limit:g} s; closing")))
            self.closing = True
            self.send_replies()
        else:
            self._watch_idle(limit - idle)
