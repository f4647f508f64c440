"""The daemon's side of arming: which token stands for which job, what is in the pipe, what
keepers took (docs/architecture.md, "Arming").

A keeper told that a running job is *capable* takes one token from the shared pipe as that
job ends and starts the job the token stands for, with no round trip through the daemon.
`Armer` keeps the pipe holding tokens for the jobs `sjq.arming.arm_plan` names, in order,
and takes them back when the plan changes. It runs in the daemon's event loop but has no
asyncio in it: it is driven through `update`, `take_back` and `exited`, and sends through
the small `Link` interface, so a test can drive it with a real pipe and no daemon.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Protocol

from sjq.arming import ARM_DEPTH, ARM_LOW, ArmEntry, arm_plan
from sjq.jobs import Job, JobLaunch
from sjq.keeper import messages as m
from sjq.keeper.tokens import ArmPipe
from sjq.scheduler import Queue

__all__ = ["Armer", "Link"]

PUT_RETRY = 0.001  # seconds until tokens are put again while keepers have unread data


class Link(Protocol):
    """A keeper, as the armer sees it."""

    @property
    def alive(self) -> bool: ...
    def unread(self) -> int:
        """Bytes sent to the keeper that it has not read yet."""
        ...

    def send(self, data: bytes) -> None: ...


class _Cancellable(Protocol):
    def cancel(self) -> None: ...


class Reserver(Protocol):
    """Devices set aside for an armed start that may use more than the job it follows
    holds (`sjq.devices.Devices`)."""

    def reserve(self, token: int) -> tuple[tuple[int, ...], tuple[str, ...]]: ...
    def unreserve(self, token: int) -> None: ...
    def spare(self) -> tuple[int, ...]:
        """The CPUs no running job holds and no armed start has set aside."""
        ...


class Armer:
    """Tokens in the pipe (``tokens``), tokens keepers took whose exit records have not yet
    said what they started (``taken``), and the running jobs whose keepers know they may
    take one (``capable``). ``launch(job)`` builds what a keeper needs to start a job;
    ``later(delay, fn)`` runs ``fn`` later (an event loop's ``call_later``)."""

    def __init__(
        self,
        pipe: ArmPipe,
        queue: Queue,
        launch: Callable[[Job], JobLaunch],
        later: Callable[[float, Callable[[], None]], _Cancellable],
        *,
        devices: Reserver | None = None,
    ) -> None:
        self.pipe = pipe
        self._devices = devices
        self.queue = queue
        self._launch = launch
        self._later = later
        self.tokens: dict[int, ArmEntry] = {}
        self.taken: dict[int, ArmEntry] = {}
        self.capable: set[int] = set()
        self._unsent: list[int] = []  # tokens waiting for their entries to reach the keepers
        # What each live token starts, as sent; the keepers that run no job are not woken
        # for new entries (``_behind``) and get all the live ones with their first job.
        self._entries: dict[int, m.ArmedStart] = {}
        self._behind: set[Link] = set()
        self._links: Sequence[Link] = ()
        self._seq = itertools.count(1)
        self._put_timer: _Cancellable | None = None

    def armed(self) -> list[Job]:
        """The jobs keepers may start, or may have started, on their own."""
        return [e.job for e in itertools.chain(self.tokens.values(), self.taken.values())]

    def covered(self) -> bool:
        """Whether every token taken but not yet reported is covered by a reservation (so a
        pass may run before those exit records arrive)."""
        return all(e.covered for e in self.taken.values())

    def update(
        self,
        runners: list[tuple[Job, Link]],
        links: Sequence[Link],
        durable_below: int,
    ) -> None:
        """Keep the pipe holding a token for each job the plan says keepers may start on
        their own, in its order. ``runners``: the running jobs and their keepers (empty:
        arm nothing); ``durable_below``: only jobs whose submission is committed are armed
        (a crash must not lose a job a keeper started).

        Tokens only ever go in behind the ones already there; any other change of plan
        takes them all back first (a token some keeper took meanwhile is a start under
        way: nothing is armed again until its exit record has said what it started)."""
        if self._unsent or not self.covered():
            return  # the next turn plans again, once these are settled
        jobs = [job for job, _ in runners]
        if jobs:
            # Taken tokens started their jobs, as far as we can tell: those take tokens too.
            jobs += [e.job for e in self.taken.values()]
        level = self.pipe.level() if self.tokens else 0
        low = ARM_LOW * len(jobs) if len(jobs) > 1 else 0
        # While enough are left for every runner's next end, top up later, several at once,
        # so that the keepers are woken once for many tokens, not once for each.
        more = 0 if self.tokens and level > low else ARM_DEPTH * len(jobs) - level
        armed = [e.job for e in self.tokens.values()]
        want = arm_plan(self.queue, jobs, armed, more) if jobs else []
        del want[len(self.tokens) + ArmPipe.MAX - level :]
        for i, e in enumerate(want):
            if e.job.id >= durable_below:
                want = want[:i]
                break
        have = list(self.tokens.values())
        if have != want[: len(have)]:
            self.take_back()
            if self.taken:
                return  # plan again once the exit records say what those started
            have = []
        new = want[len(have) :]
        if not new and not (self.tokens and any(j.id not in self.capable for j in jobs)):
            return
        entries = []
        for e in new:
            seq = next(self._seq)
            self.tokens[seq] = e
            self.queue.arm(e.job)
            cpus: tuple[int, ...] = ()
            gpus: tuple[str, ...] = ()
            if not e.covered and self._devices is not None:
                cpus, gpus = self._devices.reserve(seq)  # the free ones: no pass runs meanwhile
            launch = self._launch(e.job)
            entries.append(m.ArmedStart(seq, launch, e.after, e.need_success, cpus, gpus))
        self._entries.update((e.token, e) for e in entries)
        live = frozenset(self.tokens)
        spare = self._devices.spare() if self._devices is not None else ()
        for link in links:
            if not link.alive:
                continue
            capable = tuple(job.id for job, owner in runners if owner is link)
            if not capable:
                # It takes no token until it runs a job: no wake-up now (it would share the
                # CPU of a pinned job for nothing). It hears of the live entries then.
                if entries:
                    self._behind.add(link)
                continue
            sent = tuple(entries)
            if link in self._behind:
                self._behind.discard(link)
                sent = tuple(self._entries[s] for s in self.tokens)
            link.send(m.encode(m.Arm(live, capable, sent, low, spare)))
        self.capable.update(job.id for job in jobs)
        self._unsent = [e.token for e in entries]
        self._links = links
        self._put()

    def _put(self) -> None:
        """Tokens go in once the keepers hold what they stand for: data a keeper cannot
        read yet (still in our buffer) would leave it a token it cannot use."""
        self._put_timer = None
        if not self._unsent:
            return
        if any(link.alive and link.unread() for link in self._links):
            self._put_timer = self._later(PUT_RETRY, self._put)
            return
        seqs, self._unsent = self._unsent, []
        self.pipe.put([s for s in seqs if s in self.tokens])

    def take_back(self) -> None:
        """Drain the pipe: each token found there is disarmed; each not found was taken
        by a keeper, whose exit record will say what it started."""
        back = set(self.pipe.drain()).union(self._unsent)
        self._unsent = []
        for seq, e in self.tokens.items():
            if seq in back:
                self.queue.disarm(e.job)
                self._unreserve(seq)
            else:
                self.taken[seq] = e
        self.tokens.clear()
        self._entries.clear()
        self._behind.clear()  # no live entry left to miss

    def disarm_all(self) -> None:
        """Take every token back (a PAUSE): none is left for a keeper to take."""
        if self.tokens or self._unsent:
            self.take_back()

    def exited(self, msg: m.Exited) -> None:
        """A running job ended; its keeper may have taken a token, and started its job."""
        self.capable.discard(msg.record.jobid)
        if msg.claimed is not None:
            e = self.tokens.pop(msg.claimed, None) or self.taken.pop(msg.claimed, None)
            self._entries.pop(msg.claimed, None)
            if e is not None and msg.started_next != e.job.id:
                self.queue.disarm(e.job)  # back among the ready jobs, for the next pass
                self._unreserve(msg.claimed)
            # (a start from it took over what was set aside: State.armed_start)

    def _unreserve(self, token: int) -> None:
        if self._devices is not None:
            self._devices.unreserve(token)

    def close(self) -> None:
        if self._put_timer is not None:
            self._put_timer.cancel()
            self._put_timer = None
