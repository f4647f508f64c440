"""The dependency graph of the active jobs, indexed parent -> children; pure: imports no I/O.

``sjq.scheduler.Queue`` keeps one, so that a job's start or end touches only the jobs that
waited on it: ``_children`` holds the conditions on a job's end (each child id packed with
its kind, ``child << 2 | kind``, kinds from ``sjq.conditions``), ``_starters`` the children
waiting for it to start (``after``). The graph only indexes; the queue decides what a start
or an end does to each child. ``child_key`` and ``abort_key`` are what the arm planner's cut
(``sjq.arming``) reads.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sjq.conditions import AFTER, AFTEROK, parents
from sjq.jobs import Job

__all__ = ["NO_KEY", "Graph"]

NO_KEY = (1 << 62, 0)  # sorts after every (-priority, id)


class Graph:
    """Who waits on whom, among the active jobs (``jobs``: the queue's own dict, shared)."""

    __slots__ = ("_abort_key", "_child_key", "_children", "_jobs", "_starters")

    def __init__(self, jobs: dict[int, Job]) -> None:
        self._jobs = jobs
        self._children: dict[int, list[int]] = {}  # parent -> [child << 2 | kind]
        self._starters: dict[int, list[int]] = {}  # parent -> children waiting for its start
        # parent -> the smallest (-priority, id) among the jobs that waited on it: never
        # larger than the true minimum (a child that left is not taken out), which is the
        # safe side for ``arm_plan``'s cut.
        self._child_key: dict[int, tuple[int, int]] = {}
        # job -> the smallest (-priority, id) among the jobs its abort could make ready: its
        # afterany/afternotok/after children, and (as an abort cascades down afterok
        # conditions) those of its afterok children's aborts. Same safe side as _child_key,
        # which counts these too for each parent whose end could abort the job.
        self._abort_key: dict[int, tuple[int, int]] = {}

    # -- queries ---------------------------------------------------------------

    def child_key(self, parent: int) -> tuple[int, int]:
        """The smallest ``(-priority, id)`` of the jobs that waited on ``parent`` (never
        larger than the true minimum), or NO_KEY."""
        return self._child_key.get(parent, NO_KEY)

    def abort_key(self, jobid: int) -> tuple[int, int]:
        """The smallest ``(-priority, id)`` of the jobs an abort of ``jobid`` could make
        ready (never larger than the true minimum), or NO_KEY."""
        return self._abort_key.get(jobid, NO_KEY)

    def children_of(self, parent: int) -> list[int]:
        """The ids of the jobs waiting for ``parent`` to end."""
        return [edge >> 2 for edge in self._children.get(parent, ())]

    def edges_of(self, parent: int) -> list[tuple[int, int]]:
        """The jobs waiting for ``parent`` to end, each with the kind of its condition."""
        return [(edge >> 2, edge & 3) for edge in self._children.get(parent, ())]

    def waits_for_start(self, jobid: int) -> bool:
        """Whether a job waits for ``jobid`` to start (``after``)."""
        return jobid in self._starters

    # -- changes ---------------------------------------------------------------

    def link(self, job: Job, edges: Iterable[tuple[int, int]]) -> None:
        """``job`` waits on each ``(parent, kind)`` of ``edges``."""
        key = (-job.priority, job.id)
        for parent, kind in edges:
            if kind == AFTER:
                self._starters.setdefault(parent, []).append(job.id)
            else:
                self._children.setdefault(parent, []).append(job.id << 2 | kind)
            if key < self._child_key.get(parent, NO_KEY):
                self._child_key[parent] = key
            if kind != AFTEROK:
                self._lower_abort_key(parent, key)

    def unlink(self, job: Job) -> None:
        """Forget ``job`` (never recorded, see ``Queue.drop``), as a child and as a parent."""
        for parent in parents(job.depends, job.dependency):
            ends = self._children.get(parent)
            if ends:
                ends[:] = [c for c in ends if c >> 2 != job.id]
            starts = self._starters.get(parent)
            if starts:
                starts[:] = [c for c in starts if c != job.id]
        for index in (self._children, self._starters, self._child_key, self._abort_key):
            index.pop(job.id, None)

    def started(self, jobid: int) -> Sequence[int]:
        """``jobid`` started (or began in Slurm): the jobs whose ``after`` condition it met,
        forgotten here."""
        return self._starters.pop(jobid, ())

    def ended(self, jobid: int) -> tuple[Sequence[int], Sequence[int]]:
        """``jobid`` ended: the jobs that waited for its start (it ended without starting: as
        Slurm, that will do) and the conditions on its end (``child << 2 | kind``), both
        forgotten here."""
        self._child_key.pop(jobid, None)
        self._abort_key.pop(jobid, None)
        return self._starters.pop(jobid, ()), self._children.pop(jobid, ())

    def _lower_abort_key(self, jobid: int, key: tuple[int, int]) -> None:
        """A job of ``key`` would become ready if ``jobid`` were aborted: so it could at the
        end of each job ``jobid`` waits on, and at the abort of each it waits on to succeed.
        Stops where the key is no news (usually at once: ids grow)."""
        todo = [jobid]
        while todo:
            c = todo.pop()
            job = self._jobs.get(c)
            if job is None or key >= self._abort_key.get(c, NO_KEY):
                continue
            self._abort_key[c] = key
            for p, kind in parents(job.depends, job.dependency).items():
                if p in self._jobs:
                    if key < self._child_key.get(p, NO_KEY):
                        self._child_key[p] = key
                    if kind == AFTEROK:
                        todo.append(p)
