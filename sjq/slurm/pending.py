"""Jobs waiting for sbatch and each array's room under its limit; pure: imports no asyncio.

The Slurm back end (``sjq.slurm.backend``) adds the
jobs it hands over, and its submitters ``take`` them one unit at a time: a job on its own, or
the elements of one array waiting at that moment, which go to Slurm as one ``sbatch --array``
(``sjq.slurm.batch``).

An array with a limit (``%N``) may have at most N elements in Slurm's hands that could run at
once: an element counts from its sbatch (``sent``) until it has left Slurm (``gone``). A unit
of such an array comes with its *room*, N minus the elements counted, which becomes Slurm's
``%M`` for the unit; with no room its elements wait here until one of the array has gone.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Iterable

__all__ = ["Pending", "Unit"]


class Unit:
    """What one submitter takes: job ids (ascending when several), and for an array with a
    limit the most of them that may run at once (``room``, None: no limit)."""

    __slots__ = ("ids", "room")

    def __init__(self, ids: list[int], room: int | None) -> None:
        self.ids = ids
        self.room = room

    def __repr__(self) -> str:
        return f"Unit({self.ids!r}, room={self.room!r})"


class Pending:
    """Jobs to submit, in the order they were handed over; see the module docstring."""

    def __init__(self, limit_of: Callable[[int], int | None]) -> None:
        self._limit_of = limit_of  # array -> its limit (%N), or None
        self._order: deque[int] = deque()  # job ids in order; stale ones are skipped
        self._array: dict[int, int] = {}  # every waiting job -> its array (0: none)
        self._groups: dict[int, list[int]] = {}  # array -> its waiting elements, in order
        self._alone: set[int] = set()  # elements that cannot share an sbatch
        self._sent: Counter[int] = Counter()  # array -> elements in Slurm's hands
        self._sent_ids: dict[int, int] = {}  # those elements -> their array
        self._blocked: set[int] = set()  # arrays with waiting elements and no room
        self._news: list[int] = []  # arrays blocked since ``newly_blocked`` was last asked

    def __contains__(self, jobid: int) -> bool:
        return jobid in self._array

    def __len__(self) -> int:
        return len(self._array)

    def add(self, jobid: int, array: int = 0, alone: bool = False) -> None:
        """``jobid`` waits for sbatch (again: after a try whose outcome proved it absent)."""
        if jobid in self._array:
            return
        self._array[jobid] = array
        if array:
            group = self._groups.setdefault(array, [])
            group.append(jobid)
            if len(group) > 1 and group[-2] > jobid:
                group.sort()
            if alone:
                self._alone.add(jobid)
            if array in self._blocked:
                return
        self._order.append(jobid)

    def discard(self, jobid: int) -> None:
        """``jobid`` no longer waits (killed, ended)."""
        array = self._array.pop(jobid, None)
        self._alone.discard(jobid)
        if array:
            group = self._groups.get(array)
            if group is not None:
                group.remove(jobid)
                if not group:
                    del self._groups[array]
                    self._blocked.discard(array)

    def take(self, most: int = 1 << 30) -> Unit | None:
        """The next unit to submit (taken out of the waiting jobs), or None: at most ``most``
        elements of an array (the rest wait for the next). The elements of an array with a
        limit count against it from now (``sent``)."""
        while self._order:
            jobid = self._order.popleft()
            array = self._array.get(jobid)
            if array is None:
                continue  # taken with its array's elements, or discarded
            if not array:
                del self._array[jobid]
                return Unit([jobid], None)
            limit = self._limit_of(array)
            room = None if limit is None else limit - self._sent[array]
            if room is not None and room < 1:
                if array not in self._blocked:
                    self._blocked.add(array)  # until one of the array has gone
                    self._news.append(array)
                continue
            alone = jobid in self._alone
            ids = [jobid] if alone else [i for i in self._groups[array] if i not in self._alone]
            del ids[max(1, most) :]  # the rest keep their places in line
            for i in ids:
                self.discard(i)
            if room is not None:
                self.sent(ids, array)
            return Unit(ids, room)
        return None

    def put_back(self, ids: Iterable[int], array: int, alone: bool = False) -> None:
        """Elements of a unit that did not go (``alone``: to be taken one at a time), first in
        line again."""
        back = sorted(ids)
        for jobid in back:
            self._unsend(jobid)
            self.add(jobid, array, alone)
        if back and array not in self._blocked:
            # add() put them at the end; the first of them goes first again
            self._order.appendleft(back[0])

    def sent(self, ids: Iterable[int], array: int) -> None:
        """These elements of ``array`` are in Slurm's hands (or may be): they count against
        its limit until they have ``gone``. (``take`` counts what it gives; a daemon that
        starts again counts what an earlier one sent.)"""
        if not array:
            return
        for jobid in ids:
            if jobid not in self._sent_ids:
                self._sent_ids[jobid] = array
                self._sent[array] += 1

    def _unsend(self, jobid: int) -> int | None:
        array = self._sent_ids.pop(jobid, None)
        if array is not None:
            self._sent[array] -= 1
            if self._sent[array] <= 0:
                del self._sent[array]
        return array

    def gone(self, jobid: int) -> None:
        """A job sent to Slurm has left it (ended, or proven never to have reached it): its
        array has room for one more."""
        array = self._unsend(jobid)
        if array is not None and array in self._blocked:
            self._blocked.discard(array)
            group = self._groups.get(array)
            if group:
                self._order.appendleft(group[0])

    def newly_blocked(self) -> list[tuple[int, list[int]]]:
        """The arrays that have had to wait for room since the last call, with their waiting
        elements (for INFO to say why they wait)."""
        news, self._news = self._news, []
        return [(a, list(self._groups.get(a, ()))) for a in news if a in self._blocked]

    def in_slurm(self, array: int) -> int:
        """Elements of ``array`` counted against its limit."""
        return self._sent.get(array, 0)
