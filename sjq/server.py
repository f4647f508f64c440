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
from typing import TYPE_CHECKING

from sjq.paths import make_dirs
from sjq.protocol import (
    NEED_DATA,
    BadRequest,
    Closed,
    Error,
    Exit,
    Ok,
    ServerConnection,
    Shutdown,
    Stop,
    encode_reply,
)
from sjq.state import Accepted, Peer, Waiter

if TYPE_CHECKING:
    from sjq.daemon import Daemon

__all__ = ["AlreadyRunning", "Connection", "bind_socket"]

log = logging.getLogger("sjq.server")

_CRED = struct.Struct("3i")
# Past this many bytes of replies the client has not read, stop reading its requests.
_HIGH_WATER = 4 * 1024 * 1024


class AlreadyRunning(RuntimeError):
    """Another daemon answers on the socket."""


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


class Connection(asyncio.Protocol):
    """One client. Replies are queued in request order and written after the turn's commit,
    so an ``OK <id>`` never reaches a client before its job is on disk."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.proto = ServerConnection(max_line=daemon.cfg.maxline, max_src=daemon.cfg.maxsrc)
        # Replies in request order; a SUBMIT's and a WAIT's are sent once they are final.
        self.out: deque[bytes | Waiter | Accepted] = deque()
        self.closing = False
        self.paused = False
        self.last_data = 0.0
        self.peer = Peer(0, -1, -1)
        self.transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None

    # -- asyncio callbacks --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        pid, uid, gid = _CRED.unpack(
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CRED.size)
        )
        self.peer = Peer(pid, uid, gid)
        d = self.daemon
        if uid != os.geteuid() and os.geteuid() != 0:
            self._refuse(f"permission denied: this daemon serves uid {os.geteuid()} only")
        elif len(d.connections) >= d.cfg.maxconns:
            self._refuse(f"too many connections (sjq.maxconns = {d.cfg.maxconns})")
        else:
            d.connections.add(self)

    def _refuse(self, message: str) -> None:
        assert self.transport is not None
        self.transport.write(encode_reply(Error(message)))
        self.transport.close()
        self.closing = True

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        d = self.daemon
        self.last_data = d.loop.time()
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
            if isinstance(ev, Exit):
                self.out.append(encode_reply(Ok("BYE")))
                self.closing = True
                break
            if isinstance(ev, Shutdown | Stop):
                self.out.append(encode_reply(Ok()))
                self.closing = True
                d.request_stop(keep_running=isinstance(ev, Stop))
                break
            try:
                reply = d.state.handle(ev, self.peer, d.now())
            except Exception as e:
                # A bug must cost one request, not the connection or the daemon.
                log.exception("internal error handling %r", ev)
                reply = Error(f"internal error: {type(e).__name__}: {e}; see the daemon log")
            if isinstance(reply, Waiter):
                d.waiting_conns[reply] = self
                self.out.append(reply)
            elif isinstance(reply, Accepted):
                self.out.append(reply)
            else:
                self.out.append(encode_reply(reply))
        d.want_flush(self)
        if proto.in_request and self._timer is None:
            self._timer = d.loop.call_later(d.cfg.conntimeout, self._check_idle)

    def eof_received(self) -> bool:
        self.data_received(b"")
        return True  # keep the write side open until our replies are out

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        d = self.daemon
        d.connections.discard(self)
        for item in self.out:
            if isinstance(item, Waiter):
                d.state.drop_waiter(item)
                d.waiting_conns.pop(item, None)
        self.out.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def pause_writing(self) -> None:
        if self.transport is not None and not self.paused:
            self.paused = True
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and self.paused:
            self.paused = False
            self.transport.resume_reading()

    # -- daemon callbacks --

    def flush(self) -> None:
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
                self.daemon.waiting_conns.pop(head, None)
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

    def _check_idle(self) -> None:
        self._timer = None
        if self.closing or not self.proto.in_request:
            return
        d = self.daemon
        idle = d.loop.time() - self.last_data
        if idle >= d.cfg.conntimeout:
            self.out.append(
                encode_reply(Error(f"request incomplete after {d.cfg.conntimeout:g} s; closing"))
            )
            self.closing = True
            self.flush()
        else:
            self._timer = d.loop.call_later(d.cfg.conntimeout - idle, self._check_idle)

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            if self.transport is not None:
                self.transport.close()
