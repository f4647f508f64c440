"""Cgroup mounts, paths and control files. Imports no asyncio or sqlite3.

Reading /proc/self/mountinfo and /proc/<pid>/cgroup, where a hierarchy path is visible,
and the small file helpers every backend uses.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = [
    "CgroupError",
    "Mount",
    "alive",
    "dir_of",
    "key_values",
    "parse_mountinfo",
    "parse_proc_cgroup",
    "pids_in",
    "read_file",
    "write_file",
]


class CgroupError(OSError):
    """A group could not be made, configured or entered; the message says where and why.
    The caller falls back to the watcher for that job."""


@dataclass(frozen=True, slots=True)
class Mount:
    fstype: str  # "cgroup" (v1) or "cgroup2"
    root: str  # the hierarchy path mounted here (not "/" inside some containers)
    point: str
    options: frozenset[str]  # super options: the v1 controllers of this hierarchy


def _unescape(field: str) -> str:
    # mountinfo writes space, tab, newline and backslash as \040 \011 \012 \134
    if "\\" not in field:
        return field
    out = bytearray()
    i = 0
    raw = field.encode()
    while i < len(raw):
        if raw[i] == 0x5C and i + 4 <= len(raw) and raw[i + 1 : i + 4].isdigit():
            out.append(int(raw[i + 1 : i + 4], 8))
            i += 4
        else:
            out.append(raw[i])
            i += 1
    return out.decode(errors="surrogateescape")


def parse_mountinfo(text: str) -> list[Mount]:
    """The cgroup mounts in a /proc/self/mountinfo text."""
    out: list[Mount] = []
    for line in text.splitlines():
        head, sep, tail = line.partition(" - ")
        if not sep:
            continue
        h = head.split()
        t = tail.split()
        if len(h) < 5 or len(t) < 3 or t[0] not in ("cgroup", "cgroup2"):
            continue
        out.append(Mount(t[0], _unescape(h[3]), _unescape(h[4]), frozenset(t[2].split(","))))
    return out


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """/proc/<pid>/cgroup -> {controller: path}; the v2 line's key is ``""``."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, ctrls, path = parts
        if not ctrls:
            out[""] = path
        for c in ctrls.split(","):
            if c:
                out[c] = path
    return out


def dir_of(m: Mount, path: str) -> str | None:
    """Where a hierarchy path is visible under the mount, or None if outside its root."""
    root = m.root.rstrip("/")
    if path != root and not path.startswith(root + "/") and root:
        return None
    return os.path.join(m.point, path[len(root) :].lstrip("/")).rstrip("/") or "/"


def write_file(path: str, data: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, data.encode())
    finally:
        os.close(fd)


def read_file(path: str) -> str:
    with open(path) as f:
        return f.read()


def key_values(text: bytes, *keys: str) -> dict[str, int]:
    """``key value`` lines (memory.stat, cpu.stat, memory.events): only ``keys``.

    Each key is looked for, not every line split: memory.stat has some forty lines, and
    a pool resets a group (reading it) after every job."""
    out: dict[str, int] = {}
    for key in keys:
        k = key.encode() + b" "
        if text.startswith(k):
            i = 0
        else:
            i = text.find(b"\n" + k) + 1
            if not i:
                continue
        i += len(k)
        j = text.find(b"\n", i)
        out[key] = int(text[i:j] if j >= 0 else text[i:])
    return out


def pids_in(path: str) -> list[int]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return []
    try:
        chunks = []
        size = 4096  # a job's group lists a few pids, most often none
        while chunk := os.read(fd, size):
            chunks.append(chunk)
            size = 65536
        return [int(p) for p in b"".join(chunks).split()]
    except (OSError, ValueError):
        return []
    finally:
        os.close(fd)


def alive(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")
