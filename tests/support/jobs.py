"""Small helpers of the real-daemon tests: raw STATUS, process checks, job scripts, requests
from another user."""

from __future__ import annotations

import os
from pathlib import Path

from support.daemon import Daemon
from support.raw import Raw
from support.waiting import DEFAULT_TIMEOUT, wait_for

__all__ = [
    "NOBODY",
    "SH",
    "alive",
    "as_nobody",
    "exited",
    "job_pid",
    "no_socket",
    "read_when",
    "states",
    "status",
    "submit_bytes",
    "wait_dead",
]

SH = "#!/bin/sh\n"


def status(d: Daemon, arg: str = "") -> bytes:
    """The raw payload of ``STATUS [arg]``."""
    with Raw(d.socket) as c:
        c.send(f"STATUS {arg}".rstrip().encode() + b"\n")
        return c.data()


def states(d: Daemon) -> dict[int, str]:
    """Every job's state letter, from one STATUS snapshot."""
    out = {}
    for rec in status(d).decode().split("\r\n"):
        if rec:
            jobid, _, state, _ = rec.split("\t")
            out[int(jobid)] = state
    return out


def recorded_states(d: Daemon, jobid: int) -> str:
    """The job's states in order as the daemon's database recorded them (``QRQRS``): the
    daemon is stopped first, so that everything it did is on disk."""
    from sjq.store import Store

    d.stop()
    store = Store(d.settings["sjq.db"])
    try:
        return "".join(s for s, _ in store.events(jobid))
    finally:
        store.close()


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie counts as dead: it runs no code)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat[stat.rindex(b")") + 2 :][:1] != b"Z"


def wait_dead(pid: int, timeout: float = DEFAULT_TIMEOUT) -> None:
    wait_for(lambda: not alive(pid), timeout, what=f"process {pid} to die")


def read_when(path: Path, timeout: float = DEFAULT_TIMEOUT) -> str:
    """The text of ``path`` once it exists and ends with a newline (fully written)."""
    return wait_for(
        lambda: path.exists() and (t := path.read_text()).endswith("\n") and t,
        timeout,
        what=f"{path} to be written",
    )


def job_pid(d: Daemon, jobid: int) -> int:
    """The pid of a running job, once the keeper has reported it."""
    pid: int = wait_for(lambda: d.info(jobid)["pid"], what=f"pid of job {jobid}")
    return pid


def exited(d: Daemon, timeout: float = 15.0) -> int:
    """The exit status of a daemon that stops by itself."""
    assert d.proc is not None
    code = d.proc.wait(timeout)
    d.proc = None
    return code


def no_socket(d: Daemon) -> bool:
    return not os.path.lexists(d.socket)


# -- another user ---------------------------------------------------------------------------

NOBODY = 65534


def as_nobody(sock_path: str, request: bytes, nlines: int) -> list[bytes]:
    """Send ``request`` from a forked process running as uid/gid 65534; return the first
    ``nlines`` reply lines (fewer if the daemon closes the connection first)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            c = Raw(sock_path, timeout=10)
            c.send(request)
            for _ in range(nlines):
                try:
                    os.write(w, c.line())
                except ConnectionError:
                    break
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        out = f.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, out
    return [line + b"\r\n" for line in out.split(b"\r\n")[:-1]]


def submit_bytes(script: bytes, **options: str) -> bytes:
    """One SUBMIT request, ready to send."""
    lines = [b"SUBMIT"] + [f"{k.upper()} {v}".encode() for k, v in options.items()]
    return b"\n".join([*lines, b"SRC %d" % len(script)]) + b"\n" + script
