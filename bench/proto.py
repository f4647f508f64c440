"""A small blocking client for the sjq wire protocol; owns sockets, imports nothing from sjq.

Only what the benchmarks need: one request at a time (``call``), ``OK <n>``
payloads (``status``), and many single-line requests pipelined over one
connection without deadlocking on full socket buffers (``pipeline``).
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import time
from collections.abc import Iterable

TERMINAL = "SFAKE"  # job states that never change again (protocol.md, "Job states")
CHUNK = 256 * 1024  # bytes per send/recv; large enough that 100k submits are not syscall-bound


class ProtocolError(Exception):
    """The daemon answered something other than what the protocol promises."""


def submit_request(
    script: bytes,
    *,
    cwd: str | None = None,
    hold: bool = False,
    depends: Iterable[int] = (),
    mem: str | None = "64M",
) -> bytes:
    """The bytes of one SUBMIT request.

    ``MEM 64M`` by default: the daemon's default reservation (2G) must never be
    what limits parallelism on a small machine (the benchmark measures CPU slots), and
    under containment MEM is a real limit, which the job must fit in with room (a
    ``#!/bin/sh`` job is charged about 1 MB: held to 1M, every start would reclaim).
    """
    lines = ["SUBMIT"]
    if cwd is not None:
        lines.append(f"CWD {cwd}")
    if mem is not None:
        lines.append(f"MEM {mem}")
    deps = ":".join(str(d) for d in depends)
    if deps:
        lines.append(f"DEPENDS {deps}")
    if hold:
        lines.append("HOLD")
    lines.append(f"SRC {len(script)}")
    return ("\r\n".join(lines) + "\r\n").encode() + script


def parse_ping(reply: str) -> dict[str, int]:
    """``OK Q:3 R:2 S:10`` -> {"Q": 3, "R": 2, "S": 10}."""
    if not reply.startswith("OK"):
        raise ProtocolError(f"PING answered {reply!r}")
    counts: dict[str, int] = {}
    for item in reply[2:].split():
        letter, _, count = item.partition(":")
        counts[letter] = int(count)
    return counts


def parse_jobid(reply: str) -> int:
    """``OK 17`` -> 17; anything else is an error carrying the daemon's text."""
    word, _, rest = reply.partition(" ")
    if word != "OK" or not rest.isdigit():
        raise ProtocolError(f"SUBMIT answered {reply!r}")
    return int(rest)


class Conn:
    """One connection to the daemon's UNIX socket."""

    def __init__(self, path: str, timeout: float = 30.0) -> None:
        self.timeout = timeout
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
        except BaseException:
            self.sock.close()
            raise
        self._buf = bytearray()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Conn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> None:
        chunk = self.sock.recv(CHUNK)
        if not chunk:
            raise ProtocolError("daemon closed the connection")
        self._buf += chunk

    def read_line(self) -> str:
        """One reply line without its CRLF."""
        while (end := self._buf.find(b"\n")) < 0:
            self._fill()
        line = bytes(self._buf[:end]).rstrip(b"\r")
        del self._buf[: end + 1]
        return line.decode("utf-8", "replace")

    def read_exact(self, n: int) -> bytes:
        while len(self._buf) < n:
            self._fill()
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data

    def call(self, line: str) -> str:
        """Send one single-line request, return its one-line reply."""
        self.send(line.encode() + b"\r\n")
        return self.read_line()

    def ping(self) -> dict[str, int]:
        return parse_ping(self.call("PING"))

    def submit(self, request: bytes) -> int:
        self.send(request)
        return parse_jobid(self.read_line())

    def status(self, jobid: int) -> bytes:
        """``STATUS <id>``: the ``OK <n>`` payload."""
        head = self.call(f"STATUS {jobid}")
        word, _, size = head.partition(" ")
        if word != "OK" or not size.isdigit():
            raise ProtocolError(f"STATUS answered {head!r}")
        return self.read_exact(int(size))

    def expect_ok(self, line: str) -> None:
        reply = self.call(line)
        if reply != "OK":
            raise ProtocolError(f"{line} answered {reply!r}")

    def pipeline(self, data: bytes, count: int, timeout: float) -> list[str]:
        """Send ``data`` (``count`` requests, each with a one-line reply) while reading.

        Writing everything before reading would deadlock once the daemon's
        replies fill our receive buffer and it stops reading; so send and
        receive interleave on a non-blocking socket.
        """
        sock = self.sock
        view = memoryview(data)
        sent = 0
        replies: list[str] = []
        deadline = time.monotonic() + timeout
        sel = selectors.DefaultSelector()
        sock.setblocking(False)
        sel.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
        try:
            while len(replies) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"{len(replies)} of {count} pipelined replies after {timeout:.0f} s"
                    )
                for _, events in sel.select(min(remaining, 1.0)):
                    if events & selectors.EVENT_WRITE and sent < len(data):
                        with contextlib.suppress(BlockingIOError):
                            sent += sock.send(view[sent : sent + CHUNK])
                        if sent == len(data):
                            sel.modify(sock, selectors.EVENT_READ)
                    if events & selectors.EVENT_READ:
                        try:
                            self._fill()
                        except BlockingIOError:
                            continue
                        self._take_lines(replies)
        finally:
            sel.close()
            sock.settimeout(self.timeout)
        return replies

    def _take_lines(self, out: list[str]) -> None:
        buf = self._buf
        start = 0
        while (end := buf.find(b"\n", start)) >= 0:
            out.append(bytes(buf[start:end]).rstrip(b"\r").decode("utf-8", "replace"))
            start = end + 1
        del buf[:start]
