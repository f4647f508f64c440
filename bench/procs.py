"""Process plumbing for the bench: child subreaping, cleanup, the timestamp collector.

The bench makes itself a child subreaper, so every process started under it
(task-spooler's self-daemonizing server and its per-job clients, jobs of a
daemon that died) stays in its subtree; ``kill_descendants`` can then end all of
them by pid, and nothing outlives a run, even after Ctrl-C.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
F_SETPIPE_SZ = 1031
STAMPER = Path(__file__).with_name("stamper.py")

_libc = ctypes.CDLL(None, use_errno=True)


def become_subreaper() -> None:
    _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def die_with_parent() -> None:
    """preexec_fn: SIGKILL this child if the bench dies, so nothing outlives a kill -9."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    return children


# Long-lived helpers (the stamper) that a sweep between measurements must spare.
_spared: set[int] = set()


def spare(pid: int) -> None:
    _spared.add(pid)


def unspare(pid: int) -> None:
    _spared.discard(pid)


def descendants(skip: set[int] | None = None, root: int | None = None) -> list[int]:
    """All processes below ``root`` (default: this one), parents first, not entering ``skip``."""
    skip = skip or set()
    children = _children_map()
    out: list[int] = []
    todo = [p for p in children.get(root or os.getpid(), []) if p not in skip]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(c for c in children.get(p, []) if c not in skip)
    return out


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return False


def reap_zombies() -> None:
    """Reap exited children we did not start ourselves (orphans handed to us as subreaper)."""
    for pid in _children_map().get(os.getpid(), []):
        if pid not in _spared and _is_zombie(pid):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)


def kill_descendants(*, everything: bool = False) -> int:
    """SIGKILL every process below this one (but spared helpers) and reap them.

    Returns how many there were. ``everything`` includes the spared helpers: the
    last sweep of a run.
    """
    victims = descendants(None if everything else _spared)
    for pid in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    pending = set(victims)
    while pending and time.monotonic() < deadline:
        for pid in list(pending):
            try:
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    pending.discard(pid)
            except ChildProcessError:
                # Not (yet) our child: gone, or about to be handed to us as subreaper.
                if not Path(f"/proc/{pid}").exists():
                    pending.discard(pid)
        if pending:
            time.sleep(0.005)
    return len(victims)


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of one process, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


class Stamper:
    """A helper process that stamps each line jobs write to a FIFO with CLOCK_MONOTONIC.

    A ``#!/bin/sh`` job has no clock finer than 10 ms that costs no process;
    ``echo "s 5" > FIFO`` is a shell builtin plus an open(2), and the stamper,
    blocked in read(2), timestamps it within microseconds. The stamps share
    CLOCK_MONOTONIC with ``time.monotonic_ns()`` in the bench.
    """

    def __init__(self, workdir: Path) -> None:
        self.fifo = workdir / "stamps.fifo"
        os.mkfifo(self.fifo)
        self.events: dict[str, int] = {}
        self._buf = b""
        self._prefixes = 0
        self.proc = subprocess.Popen(
            [sys.executable, str(STAMPER), str(self.fifo)],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent,  # noqa: PLW1509 - the bench is single-threaded
        )
        spare(self.proc.pid)
        assert self.proc.stdout is not None
        self._out = self.proc.stdout.fileno()
        # A floor run does not read stamps until it is done: room for ~40k lines.
        try:
            import fcntl

            fcntl.fcntl(self._out, F_SETPIPE_SZ, 1 << 20)
        except OSError:
            pass
        self.wait_for("ready", 10.0)

    def prefix(self, name: str) -> str:
        """A tag prefix no other measurement of this run uses: ``name`` + a counter."""
        self._prefixes += 1
        return f"{name}{self._prefixes}-"

    def wait_for(self, tag: str, timeout: float) -> int:
        """The stamp (monotonic ns) of the line ``tag``, waiting for it if needed."""
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(self._out, selectors.EVENT_READ)
            while tag not in self.events:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no {tag!r} stamp after {timeout:.0f} s")
                if sel.select(remaining):
                    self._read()
        return self.events[tag]

    def _read(self) -> None:
        chunk = os.read(self._out, 1 << 16)
        if not chunk:
            raise RuntimeError("the stamper exited")
        self._buf += chunk
        *lines, self._buf = self._buf.split(b"\n")
        for line in lines:
            stamp, _, tag = line.decode().partition(" ")
            self.events.setdefault(tag, int(stamp))

    def close(self) -> None:
        try:
            fd = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
            os.write(fd, b"quit\n")
            os.close(fd)
            self.proc.wait(5)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        finally:
            unspare(self.proc.pid)
            assert self.proc.stdout is not None
            self.proc.stdout.close()


class Gate:
    """A FIFO a gate job blocks on (``read x < GATE``) until the bench opens it."""

    def __init__(self, workdir: Path) -> None:
        self.path = workdir / "gate.fifo"
        os.mkfifo(self.path)
        # O_RDWR: the job's open for reading never blocks, its read(2) does.
        self._fd = os.open(self.path, os.O_RDWR | os.O_NONBLOCK)

    @property
    def script(self) -> bytes:
        return f'#!/bin/sh\nread x < "{self.path}"\n'.encode()

    def open(self) -> None:
        os.write(self._fd, b"go\n" * 8)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.open()  # never leave a gate job blocked
        os.close(self._fd)
