"""A pool of groups reused from job to job. Imports no asyncio or sqlite3.

A job's start then makes no directory: see ``GroupPool``.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence

from .base import BUSY_TIDIES, Backend, Group
from .fs import CgroupError

__all__ = ["GroupPool"]


class GroupPool:
    """Groups ready for jobs, so that a job's start makes no directory: ``take`` (on the
    keeper's critical path) pops a ready group and sets its limits, writing only what
    differs from its last job; ``give_back`` queues it; ``tidy`` (off the critical path: an
    idle moment or a helper thread) resets used groups, retires those that cannot be
    reused (processes left, shmem, much page cache) and makes new ones while the pool
    holds fewer than ``size`` (ready, used or held by jobs: every group costs each spawn a
    little, see ``Group``). A ``take`` that finds none ready resets a used one itself.

    ``take`` and ``give_back`` may run in one thread while ``tidy`` runs in another:
    they share only deques, whose append and popleft are atomic."""

    def __init__(self, backend: Backend, size: int = 4) -> None:
        self.backend = backend
        self.size = size
        self.ready: deque[Group] = deque()
        self.used: deque[Group] = deque()
        self.retiring: list[Group] = []
        self.made = 0  # groups created, in all
        self.made_on_demand = 0  # ... of which on the critical path (the pool ran dry)
        self.retired = 0
        self.taken: set[Group] = set()  # given to jobs and not back yet

    def take(self, mem: int | None, cpus: Sequence[int] | None) -> Group:
        try:
            g = self.ready.popleft()
        except IndexError:
            g = self._reuse() or self._make()
        try:
            g.configure(mem, cpus)
        except CgroupError:
            self.used.append(g)  # tidy() retires it if it is broken
            raise
        g.used += 1
        g.empty = False  # a job goes in
        self.taken.add(g)
        return g

    def reset_used(self) -> None:
        """Reset the groups given back since, here and now (the keeper, once it has sent
        its news): a group just left by a job is cheapest to reset at once, its files
        still in the caches, and without waking a thread for it. What cannot be reset
        (a process of its job still exiting) is marked busy and left to ``tidy``: not
        listed again at every turn of the keeper's loop."""
        for _ in range(len(self.used)):
            try:
                g = self.used.popleft()
            except IndexError:
                break
            if g.busy == 0 and g.reset():
                self.ready.append(g)
            else:
                g.busy = max(g.busy, 1)
                self.used.append(g)

    def _reuse(self) -> Group | None:
        """The pool ran dry before ``tidy`` came: reset a used group here (tens of
        microseconds) rather than make one (hundreds, and one group more for good)."""
        try:
            g = self.used.popleft()
        except IndexError:
            return None
        if g.reset():
            g.busy = 0
            return g
        self.used.append(g)  # tidy deals with it
        return None

    def _make(self) -> Group:
        g = self.backend.new_group()
        self.made += 1
        self.made_on_demand += 1
        return g

    def give_back(self, group: Group) -> None:
        self.taken.discard(group)  # (a re-adopted job's group was never taken)
        self.used.append(group)

    def tidy(self) -> None:
        """Reset used groups and top the pool up. Never raises for one bad group."""
        for _ in range(len(self.used)):
            try:
                g = self.used.popleft()
            except IndexError:
                break
            if g.populated() and g.busy < BUSY_TIDIES:
                # killed processes take a moment to exit (and a reaper to collect them)
                g.kill()
                g.busy += 1
                self.used.append(g)
            elif g.reset():
                g.busy = 0
                self.ready.append(g)
            else:
                g.kill()
                self.retiring.append(g)
        still: list[Group] = []
        for g in self.retiring:
            if g.remove():
                self.retired += 1
            else:
                still.append(g)  # processes still exiting: next time
        self.retiring = still
        while len(self.ready) + len(self.used) + len(self.taken) < self.size:
            try:
                g = self.backend.new_group()
            except CgroupError:
                break
            self.made += 1
            if g.reset():
                self.ready.append(g)
            else:
                g.remove()
                break

    def close(self, wait: float = 2.0) -> bool:
        """Remove every group, killing what is in them and waiting up to ``wait`` seconds
        for those processes to go; False if some group could not be removed."""
        left = [*self.ready, *self.used, *self.retiring]
        self.ready.clear()
        self.used.clear()
        self.retiring.clear()
        for g in left:
            g.kill()
        deadline = time.monotonic() + wait
        delay = 0.001
        while left:
            left = [g for g in left if not g.remove()]
            if not left or time.monotonic() > deadline:
                break
            time.sleep(delay)  # processes exiting after SIGKILL: a bounded wait
            delay = min(delay * 2, 0.05)
        self.retiring = left
        return not left
