"""A thread that waits inside the next job's cgroups and makes its spawn there, so that the
keeper's start of an armed job needs no cgroup move (docs/containment.md, "The parked
spawner"). Imports nothing of asyncio or sqlite3.

Under cgroup v1 a job's first instruction is inside its groups because the thread that
spawns it is inside them at the clone. The keeper's own thread can enter them only at the
start itself (it must not wait in a job's groups: its memory would be charged to the job);
this thread can, because it is not the process's leader: the memory a process uses is
charged to its leader's memory group, and the kernel's OOM killer, which picks among the
processes of a group, does not see the keeper through a thread. So while the job before
runs, this thread moves itself into the groups the next job will have (off the critical
path), and at that job's start the keeper hands it the spawn: a wake-up instead of six
moves on the job's CPU. A thread moves itself (it writes 0 to ``tasks``) because a move
by thread id takes a kernel lock that can wait milliseconds (sjq.contain.cgroup.v1).
"""

from __future__ import annotations

import _thread
import threading
from collections.abc import Callable
from typing import TypeVar

__all__ = ["Spawner"]

T = TypeVar("T")


class Spawner:
    """One thread that runs what the keeper hands it, one thing at a time: ``call`` waits
    for the result, ``post`` does not (the next ``call``, ``post`` or ``sync`` waits for
    it first). ``tid`` names the thread."""

    def __init__(self) -> None:
        # bare locks: the cheapest wake-up Python has (a futex each)
        self._go = _thread.allocate_lock()
        self._go.acquire()
        self._done = _thread.allocate_lock()
        self._done.acquire()
        self._fn: Callable[[], object] | None = None
        self._result: object = None
        self._error: BaseException | None = None
        self._pending = False  # a posted function may still be running
        self.tid = 0
        threading.Thread(target=self._run, name="spawner", daemon=True).start()
        self._done.acquire()  # until ``tid`` is known

    def _run(self) -> None:
        self.tid = threading.get_native_id()
        self._done.release()
        while True:
            self._go.acquire()
            fn, self._fn = self._fn, None
            try:
                self._result = fn() if fn is not None else None
                self._error = None
            except BaseException as e:  # handed back to the caller, raised there
                self._result, self._error = None, e
            self._done.release()

    def sync(self) -> None:
        """Wait until what was posted has run (what it raised is dropped: a posted
        function reports its own failures)."""
        if self._pending:
            self._done.acquire()
            self._pending = False
            self._result = self._error = None

    def post(self, fn: Callable[[], object]) -> None:
        """Have ``fn()`` run in the spawner's thread; return at once."""
        self.sync()
        self._fn = fn
        self._pending = True
        self._go.release()

    def call(self, fn: Callable[[], T]) -> T:
        """``fn()`` run in the spawner's thread (where it stands in the cgroups); its
        result, or its exception raised here. From one thread only (the keeper's)."""
        self.sync()
        self._fn = fn
        self._go.release()
        self._done.acquire()
        result, error = self._result, self._error
        self._result = self._error = None
        if error is not None:
            raise error
        return result  # type: ignore[return-value]
