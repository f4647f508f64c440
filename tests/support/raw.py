"""A blocking client that speaks the wire protocol byte for byte."""

from __future__ import annotations

import socket
from typing import Any

from support.waiting import DEFAULT_TIMEOUT

__all__ = ["Raw"]


class Raw:
    """A blocking client that speaks the wire protocol byte for byte."""

    def __init__(self, path: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
        except OSError:
            self.sock.close()
            raise
        self.buf = b""

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Raw:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        """One reply line, CRLF included."""
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"connection closed; partial {self.buf!r}")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line + b"\r\n"

    def payload(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed mid-payload")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def data(self) -> bytes:
        """A multi-part reply: ``OK <n>`` then n bytes."""
        head = self.line()
        assert head.startswith(b"OK "), head
        return self.payload(int(head[3:-2]))

    def closed(self) -> bool:
        """True once the daemon has closed the connection (and nothing is left unread)."""
        try:
            chunk = self.sock.recv(65536)
        except TimeoutError:
            return False
        self.buf += chunk
        return not chunk

    def request(self, line: str) -> bytes:
        self.send(line.encode() + b"\n")
        return self.line()

    def submit(self, script: str | bytes, **options: Any) -> bytes:
        body = script.encode() if isinstance(script, str) else script
        lines = ["SUBMIT"]
        for key, value in options.items():
            if key in ("env", "entry"):  # repeated option lines
                lines += [f"{key.upper()} {v}" for v in value]
            elif value is True:
                lines.append(key.upper())
            else:
                lines.append(f"{key.upper()} {value}")
        lines.append(f"SRC {len(body)}")
        self.send("\n".join(lines).encode() + b"\n" + body)
        return self.line()
