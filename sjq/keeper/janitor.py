"""The keeper's file-system chores off its critical path: job TMPDIRs kept ready and
recycled, what ended jobs left removed, cgroups reset for reuse, by one thread; and the
private directories it works in. Imports nothing of asyncio or sqlite3."""

from __future__ import annotations

import collections
import contextlib
import itertools
import logging
import os
import queue
import shutil
import stat
import threading
from collections.abc import Callable

from sjq.paths import make_dirs

__all__ = ["Janitor", "own_tmp_base", "private_dir"]

log = logging.getLogger("sjq.keeper")


def private_dir(path: str, owner: int | None = None) -> str:
    """Create (or check) a directory only we can use: in a shared place like /dev/shm or /tmp
    someone else could have made it first, to read our scripts or plant files.

    A root daemon's directories are 0711, so that the users it runs jobs for can reach
    their own 0700 subdirectories (``owner``) without being able to list anyone else's.
    """
    mode = 0o711 if os.geteuid() == 0 and owner is None else 0o700
    make_dirs(path, mode)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid not in (os.geteuid(), owner):
        raise OSError(f"{path} is not a directory of ours; remove it or choose another place")
    if owner is not None and st.st_uid != owner:
        os.chown(path, owner, -1)
    if stat.S_IMODE(st.st_mode) != mode:
        os.chmod(path, mode)
    return path


def own_tmp_base(tmpdir: str) -> str:
    """``<tmpdir>/sjq-<uid>``; if someone else took that name first (it is guessable), a
    fresh private directory instead of refusing to start."""
    try:
        return private_dir(os.path.join(tmpdir, f"sjq-{os.geteuid()}"))
    except OSError as e:
        import tempfile  # noqa: PLC0415 - only on this rare path

        log.warning("%s; using a fresh directory for job TMPDIRs", e)
        return tempfile.mkdtemp(prefix=f"sjq-{os.geteuid()}-", dir=tmpdir)


_RECYCLE = "\0recycle:"  # a prefix no path can have


class Janitor:
    """Slow file-system work off the keeper's critical path: removing what ended jobs left
    (a TMPDIR tree can be large) and keeping a few fresh TMPDIRs ready, so that starting a
    job creates no directory on a disk file system (a millisecond each on some)."""

    POOL = 8
    BATCH = 16

    def __init__(self, base: str) -> None:
        self.base = base
        self.prefix = f"t{os.getpid()}."
        self.ready: collections.deque[str] = collections.deque()
        self.todo: queue.SimpleQueue[None] = queue.SimpleQueue()  # wake-ups
        self.pending: collections.deque[str] = collections.deque()
        self.names = itertools.count(1)  # next() is atomic: both threads take names
        self.chores: list[Callable[[], None]] = []  # more work of the thread, each wake-up
        self._sweep_dead_keepers()
        self._refill()
        self.thread = threading.Thread(target=self._run, name="janitor", daemon=True)
        self.thread.start()

    def take(self) -> str:
        """A fresh TMPDIR. The pool is topped up when the thread next wakes (to clean up
        after a job), not now: waking it here would compete with the start for the GIL."""
        try:
            return self.ready.popleft()
        except IndexError:
            self.todo.put(None)
            return self._make()

    def remove(self, path: str) -> None:
        self._queue(path)

    def recycle(self, tmpdir: str) -> None:
        """A job's TMPDIR: if the job left it empty (most do), renamed and put back in the
        pool, cheaper than removing it and making another; removed otherwise. Either way
        the path the job knew is gone soon after it has ended."""
        self._queue(_RECYCLE + tmpdir)

    def _queue(self, item: str) -> None:
        """Work is handed over in batches: each hand-over wakes the thread, which then
        competes with the keeper for the GIL. It is handed over when the pool runs low,
        when much has piled up, and whenever the keeper goes idle (``kick``)."""
        self.pending.append(item)
        if len(self.pending) >= self.BATCH or len(self.ready) < self.POOL // 2:
            self.kick()

    def kick(self) -> None:
        if self.pending or len(self.ready) < self.POOL:
            self.todo.put(None)

    def wake(self) -> None:
        """Wake the thread for its ``chores``."""
        self.todo.put(None)

    def _make(self) -> str:
        path = os.path.join(self.base, f"{self.prefix}{next(self.names)}")
        os.mkdir(path, 0o700)
        return path

    def _refill(self) -> None:
        while len(self.ready) < self.POOL:
            try:
                self.ready.append(self._make())
            except OSError:
                return

    def _run(self) -> None:
        while True:
            self.todo.get()
            while self.pending:
                self._clean(self.pending.popleft())
            self._refill()
            for chore in self.chores:
                chore()

    def _clean(self, path: str) -> None:
        if path.startswith(_RECYCLE):
            path = path[len(_RECYCLE) :]
            if self._reusable(path):
                fresh = os.path.join(self.base, f"{self.prefix}{next(self.names)}")
                try:
                    os.rename(path, fresh)
                except OSError:
                    pass
                else:
                    self.ready.append(fresh)
                    return
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.unlink(path)

    def _reusable(self, path: str) -> bool:
        try:
            st = os.lstat(path)
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
                return False  # a symlink planted by the job, or a UID job's directory
            with os.scandir(path) as it:
                if next(it, None) is not None:
                    return False
            if stat.S_IMODE(st.st_mode) != 0o700:
                os.chmod(path, 0o700)
        except OSError:
            return False
        return len(self.ready) < 2 * self.POOL

    def _sweep_dead_keepers(self) -> None:
        self.sweep(self.base, "t")

    def sweep(self, where: str, prefix: str) -> None:
        """Remove what keepers that are gone left in ``where`` (a keeper that was killed,
        or one that ended with TMPDIRs in its pool): names are ``<prefix><pid>...``."""
        with contextlib.suppress(OSError):
            for name in os.listdir(where):
                digits = name[len(prefix) :]
                pid = digits[: len(digits) - len(digits.lstrip("0123456789"))]
                if name.startswith(prefix) and pid and not os.path.exists(f"/proc/{pid}"):
                    self.pending.append(os.path.join(where, name))
        self.kick()
