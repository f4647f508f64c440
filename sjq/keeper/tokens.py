"""The arm-token pipe shared by the daemon and its keepers (see docs/architecture.md,
"Arming"). Pure file-descriptor work: no asyncio, no sqlite3."""

from __future__ import annotations

import fcntl
import os
import select
import struct
import sys
import termios

__all__ = ["ArmPipe", "take_token", "token_level"]

_TOKEN = struct.Struct("!Q")


class ArmPipe:
    """The tokens of armed jobs, shared by the daemon and all its keepers.

    The daemon tells every keeper, over its socket, which job each token number stands
    for, then writes the tokens here in the order they must be taken. A keeper whose
    running job ends reads one token: pipe reads of one token are atomic and first in,
    first out, so each token is taken once, the first end takes the first job, and the
    daemon takes back what no keeper has taken by draining the pipe itself."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    MAX = select.PIPE_BUF // _TOKEN.size  # tokens one write puts in at once, whole

    def put(self, seqs: list[int]) -> None:
        """Append tokens: at most MAX (the daemon arms a few per CPU slot, far fewer than
        fill a pipe, so the write never blocks)."""
        if seqs:
            os.write(self.write_fd, b"".join(_TOKEN.pack(s) for s in seqs))

    def level(self) -> int:
        """How many tokens no keeper has taken yet."""
        return token_level(self.read_fd)

    def drain(self) -> list[int]:
        """Take back every token still in the pipe."""
        data = b""
        while True:
            try:
                chunk = os.read(self.read_fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            data += chunk
        return [t for (t,) in _TOKEN.iter_unpack(data)]


def token_level(fd: int) -> int:
    """How many tokens the pipe holds (FIONREAD: no read, nothing taken)."""
    n = fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0")
    return int.from_bytes(n, sys.byteorder) // _TOKEN.size


def take_token(fd: int) -> int | None:
    """One token, or None if the pipe is empty (or its daemon is gone)."""
    try:
        data = os.read(fd, _TOKEN.size)
    except BlockingIOError:
        return None
    if len(data) != _TOKEN.size:  # end of file: only tokens ever go in, whole
        return None
    return int(_TOKEN.unpack(data)[0])
