"""Starting the Slurm back end; imports no asyncio/sqlite3 (the checks before the loop runs).

Whether Slurm's commands can be used at all (a daemon with ``sjq.backend = slurm`` refuses to
start without them), the id that marks this database's jobs in Slurm, and the wait for any
``sbatch`` an earlier daemon left running.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import time

from sjq.config import Config
from sjq.slurm.commands import Slurm

__all__ = ["daemon_id", "open_slurm", "wait_for_orphans"]

log = logging.getLogger("sjq.slurm")


def open_slurm(cfg: Config) -> Slurm:
    """Slurm's commands, checked: ``SlurmError`` (not installed, no configuration) says why a
    daemon with ``sjq.backend = slurm`` cannot start. A controller that is down is no reason."""
    slurm = Slurm(timeout=cfg.slurm_timeout)
    slurm.check()
    return slurm


def daemon_id(store_meta: str | None) -> str:
    """The id in this database's tags: the stored one, or a new one (host name and a random
    part, so that two databases of one user never share tags)."""
    if store_meta:
        return store_meta
    host = re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname())[:32] or "host"
    return f"{host}-{os.urandom(4).hex()}"


def wait_for_orphans(prefix: str, timeout: float) -> int:
    """Wait (blocking, bounded) until no ``sbatch`` of an earlier daemon of this database is
    still running: one that outlived its daemon may still queue a job, and the tags it finds
    must be final before anything is submitted again. How many there were."""
    needle = f"--comment={prefix}".encode()
    deadline = time.monotonic() + timeout
    found = 0
    while True:
        alive = []
        for name in os.listdir("/proc"):
            if name.isdigit():
                try:
                    with open(f"/proc/{name}/cmdline", "rb") as f:
                        if needle in f.read():
                            alive.append(name)
                except OSError:
                    continue
        found = max(found, len(alive))
        if not alive or time.monotonic() > deadline:
            if alive:
                log.warning("sbatch of an earlier daemon still running: pids %s", alive)
            return found
        time.sleep(0.05)  # polling interval of a bounded wait for other processes
