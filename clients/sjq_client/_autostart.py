"""Starting a daemon when none answers, under a lock file; runs sjq.daemon, never imports it.

Imported only when a daemon must be started. Runs the daemon as a separate program
(``python -m sjq.daemon -d``): never imports sjq.daemon, asyncio or psutil itself.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import sys
import time
from collections.abc import Callable

from sjq.paths import make_dirs
from sjq.protocol import Ok, Ping

from ._connection import Connection, Dropped, connect
from ._exceptions import (
    ConnectionLost,
    DaemonNotRunning,
    DaemonStartFailed,
    ProtocolError,
    TransportError,
)

__all__ = ["START_TIMEOUT", "connect_answering", "start_daemon"]

# How long a start may take, from launching to the first PING answered. The daemon opens its
# database, recovers and forks its keeper before answering: well under a second normally, but a
# loaded machine (20 starts racing on 2 cores) can stretch that a lot.
START_TIMEOUT = 15.0
LOG_TAIL_LINES = 20


def start_daemon(
    socket: str,
    *,
    config: str | None,
    socket_given: bool,
    logfile: str | None,
    pidfile: str | None,
    connect: Callable[[], Connection],
    timeout: float = START_TIMEOUT,
) -> tuple[Connection, int | None]:
    """A connection to a daemon on ``socket``, starting one if none answers.

    Concurrent callers (20 first submits at once) serialise on an exclusive ``flock`` of
    ``<socket>.start.lock`` and look again once they hold it, so exactly one daemon is started
    and the others connect to it. Returns the connection and the pid of the daemon this call
    started (None if another caller started it). Raises DaemonStartFailed.

    A daemon that is still stopping (SHUTDOWN, auto-shutdown: it stops listening at once but
    may take sjq.killgrace seconds to finish) holds the state database, so a new one could not
    start; ``pidfile`` lets this wait for it to exit first.
    """
    deadline = time.monotonic() + timeout
    lock_path = socket + ".start.lock"
    try:
        make_dirs(os.path.dirname(os.path.abspath(socket)))
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as e:
        reason = f"cannot open the lock file {lock_path}: {e.strerror or e}"
        raise DaemonStartFailed(socket, reason, "", None) from None
    try:
        _lock(fd, lock_path, socket, deadline + timeout)
        with contextlib.suppress(DaemonNotRunning):
            return connect(), None  # someone else started it while we waited for the lock
        if pidfile is not None:
            _until_gone(_previous_daemon(pidfile), socket, deadline)
        pid = _launch(socket, config, socket_given, logfile, deadline)
        return _until_it_answers(socket, logfile, connect, deadline), pid
    finally:
        os.close(fd)  # releases the lock


def connect_answering(socket: str, timeout: float | None) -> Connection:
    """A connection to a daemon that has answered a PING (a socket that accepts is not yet a
    daemon that serves); DaemonNotRunning when nothing listens."""
    conn = connect(socket, timeout)
    try:
        reply = conn.exchange([Ping()], timeout)[0]
    except Dropped as e:
        conn.close()
        raise ConnectionLost(f"the new daemon closed the connection: {e}", socket) from None
    except BaseException:
        conn.close()
        raise
    if not isinstance(reply, Ok):
        conn.close()
        raise ProtocolError(f"PING answered {reply!r}")
    return conn


def _lock(fd: int, lock_path: str, socket: str, deadline: float) -> None:
    # Polled rather than blocking, so a starter stuck holding the lock (stopped with ^Z) makes
    # the others fail with a reason instead of hanging; the holder itself is bounded by `timeout`.
    delay = 0.002
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise DaemonStartFailed(
                    socket,
                    f"another process has held {lock_path} too long while starting",
                    "",
                    None,
                ) from None
            time.sleep(delay)
            delay = min(delay * 2, 0.05)


def _previous_daemon(pidfile: str) -> int | None:
    """The pid in the pid file, if that process is alive and is an sjq daemon."""
    try:
        with open(pidfile, "rb") as f:
            pid = int(f.read().strip() or b"0")
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
    except (OSError, ValueError):
        return None  # no pid file, or its process is gone (or /proc is not there to tell)
    return pid if pid > 0 and b"sjq" in cmdline else None


def _until_gone(pid: int | None, socket: str, deadline: float) -> None:
    delay = 0.005
    while pid is not None and os.path.exists(f"/proc/{pid}"):
        if time.monotonic() > deadline:
            raise DaemonStartFailed(
                socket,
                f"the previous daemon (pid {pid}) is still stopping; try again in a moment",
                "",
                None,
            )
        time.sleep(delay)  # polling a bounded wait for the old daemon to exit
        delay = min(delay * 2, 0.05)


def _launch(
    socket: str, config: str | None, socket_given: bool, logfile: str | None, deadline: float
) -> int | None:
    command = [sys.executable, "-m", "sjq.daemon", "-d", "--set", "sjq.autoshutdown=T"]
    if config is not None:
        command += ["-c", config]
    if socket_given:
        command += ["--set", f"sjq.socket={socket}"]
    try:
        # `-d` returns once the daemon serves or has failed; it closes every inherited
        # descriptor when it detaches, so the pipes reach EOF.
        done = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=max(1.0, deadline - time.monotonic()),
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise DaemonStartFailed(
            socket, "the daemon did not report ready in time", _tail(logfile), logfile
        ) from None
    except OSError as e:
        raise DaemonStartFailed(socket, f"cannot run {sys.executable}: {e}", "", None) from None
    out = done.stdout.decode(errors="replace")
    if done.returncode != 0:
        reason = done.stderr.decode(errors="replace").strip() or f"exit status {done.returncode}"
        raise DaemonStartFailed(socket, reason.removeprefix("sjq: "), _tail(logfile), logfile)
    # "sjq daemon started (pid N) on SOCK"
    _, found, rest = out.partition("(pid ")
    digits = rest.partition(")")[0]
    return int(digits) if found and digits.isdigit() else None


def _until_it_answers(
    socket: str, logfile: str | None, connect: Callable[[], Connection], deadline: float
) -> Connection:
    delay = 0.002
    while True:
        try:
            return connect()
        except TransportError as e:
            if time.monotonic() > deadline:
                raise DaemonStartFailed(
                    socket, f"it started but does not answer: {e}", _tail(logfile), logfile
                ) from None
        time.sleep(delay)  # polling a bounded wait for the socket to appear
        delay = min(delay * 2, 0.05)


def _tail(logfile: str | None, lines: int = LOG_TAIL_LINES) -> str:
    if not logfile:
        return ""
    try:
        with open(logfile, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            data = f.read()
    except OSError:
        return ""
    return "\n".join(data.decode(errors="replace").splitlines()[-lines:])
