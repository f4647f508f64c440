"""The daemon's asyncio plumbing: a timer with an owner that cancels it, and the channel to
one keeper process (an asyncio protocol over the socket pair made at its fork)."""

from __future__ import annotations

import asyncio
from typing import Protocol

from sjq.keeper import KeeperHandle
from sjq.keeper import messages as m

__all__ = ["KeeperEvents", "KeeperLink", "Timer", "keeper_protocol"]


class KeeperEvents(Protocol):
    """What a keeper channel reports to the daemon."""

    def on_keeper(self, link: KeeperLink, msg: m.FromKeeper) -> None: ...
    def end_turn_now(self) -> None: ...
    def on_keeper_lost(self, link: KeeperLink) -> None: ...


class Timer:
    """One pending timer and the owner that cancels it: every timer of the daemon is one of
    these, and `Daemon.run` cancels them all when it stops."""

    __slots__ = ("handle",)

    def __init__(self) -> None:
        self.handle: asyncio.TimerHandle | asyncio.Handle | None = None

    def __bool__(self) -> bool:
        return self.handle is not None

    def set(self, handle: asyncio.TimerHandle | asyncio.Handle) -> None:
        self.cancel()
        self.handle = handle

    def cancel(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None


class KeeperLink(asyncio.Protocol):
    """The daemon's channel to one keeper process."""

    def __init__(self, daemon: KeeperEvents, handle: KeeperHandle) -> None:
        self.daemon = daemon
        self.handle = handle
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.records = 0  # journal records since the last rotation

    @property
    def alive(self) -> bool:
        return self.transport is not None

    def unread(self) -> int:
        return self.transport.get_write_buffer_size() if self.transport is not None else 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        for msg in m.decode_from_keeper(self.buf):
            self.daemon.on_keeper(self, msg)
        # A job's exit is the event that starts the next job: act on it in this loop turn
        # rather than the next (the dispatch gap is what users of short jobs feel).
        self.daemon.end_turn_now()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.daemon.on_keeper_lost(self)

    def send(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)


def keeper_protocol(link: KeeperLink) -> KeeperLink:
    """The protocol factory of a keeper channel: the link itself."""
    return link
