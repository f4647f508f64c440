"""The daemon's end of a keeper: `KeeperHandle.fork` starts the keeper process (`sjq.keeper.loop`)
and keeps the socket pair to it. Imports nothing of asyncio or sqlite3."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time

from sjq.keeper.guard import Guard
from sjq.keeper.janitor import own_tmp_base, private_dir
from sjq.keeper.loop import Keeper
from sjq.paths import make_dirs

__all__ = ["KeeperHandle", "await_keepers"]

log = logging.getLogger("sjq.keeper")


class KeeperHandle:
    """The daemon's end of the keeper: fork it, then exchange frames over a socket pair."""

    def __init__(self, pid: int, sock: socket.socket, journal_path: str) -> None:
        self.pid = pid
        self.sock = sock
        self.journal_path = journal_path

    @classmethod
    def fork(
        cls,
        spool: str,
        rundir: str,
        tmpdir: str,
        killgrace: float,
        logfile: str | None,
        *,
        arm_fd: int,
        guard: Guard,
    ) -> KeeperHandle:
        """Fork the keeper. Call before the event loop exists and before any thread."""
        make_dirs(spool)
        private_dir(rundir)
        tmpbase = own_tmp_base(tmpdir)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        ready_r, ready_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the keeper process
            try:
                ours.close()
                os.close(ready_r)
                Keeper(
                    theirs,
                    spool=spool,
                    rundir=rundir,
                    tmpbase=tmpbase,
                    killgrace=killgrace,
                    logfile=logfile,
                    ready=ready_w,
                    arm_fd=arm_fd,
                    guard=guard,
                ).run()
            except BaseException:
                with contextlib.suppress(BaseException):
                    log.exception("keeper failed")
            os._exit(70)
        theirs.close()
        os.close(ready_w)
        # The keeper reports the journal it opened (or why it could not) before we go on.
        with os.fdopen(ready_r, "rb") as f:
            answer = f.read().decode()
        if not answer.startswith("/"):
            raise OSError(f"the job keeper could not start: {answer or 'it died'}")
        return cls(pid, ours, answer)


def await_keepers(keepers: list[KeeperHandle], timeout: float) -> None:
    """Wait (bounded) for keepers that have seen the daemon go and have no job left."""
    deadline = time.monotonic() + timeout
    left = {k.pid for k in keepers}
    while left and time.monotonic() < deadline:
        for pid in list(left):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                left.discard(pid)
        if left:
            time.sleep(0.01)  # polling a bounded wait: the keepers exit within milliseconds
