"""Which CPUs and GPUs each running job holds, on the daemon's side: chosen as a job starts,
handed over when a keeper starts an armed job in place of one that ended, set aside for an
armed start that may use more than the job it follows, read back for jobs re-adopted after
a crash. Never one device to two running jobs (`sjq.contain.alloc`). Pure bookkeeping: no
I/O (GPU discovery, which runs nvidia-smi, is `sjq.containment`'s).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Hashable, Sequence
from typing import NamedTuple, TypeVar

from sjq.contain.alloc import AllocationError, Allocator
from sjq.contain.cpus import Topology, choose_cpus
from sjq.jobs import Job

__all__ = ["Devices", "Handover"]

log = logging.getLogger("sjq")

D = TypeVar("D", bound=Hashable)


def _first_free(free: Collection[str], n: int) -> tuple[str, ...] | None:
    """GPUs go in the managed order (``sjq.contain.gpus.first_free``, without its module's
    discovery imports)."""
    ids = list(free)
    return tuple(ids[:n]) if n <= len(ids) else None


class Handover(NamedTuple):
    """What a keeper reported of an armed start: the arm token it took, and the CPUs and
    GPUs it gave the job (None: not pinned, no GPUs managed)."""

    token: int | None
    cpus: tuple[int, ...] | None
    gpus: tuple[str, ...] | None


class Devices:
    """``topology``: the CPUs to pin jobs to (None: no pinning); ``gpus``: the GPU ids
    handed out, in order."""

    def __init__(self, topology: Topology | None = None, gpus: Sequence[str] = ()) -> None:
        self.topology = topology
        self.cpus: Allocator[int] | None = None
        if topology is not None:
            topo = topology

            def choose(free: Collection[int], n: int) -> Sequence[int] | None:
                return choose_cpus(free, n, topo)

            self.cpus = Allocator(topology.cpus, choose)
        self.gpus: Allocator[str] | None = Allocator(gpus, _first_free) if gpus else None

    @property
    def gpu_count(self) -> int:
        return 0 if self.gpus is None else len(self.gpus)

    def take(self, job: Job) -> None:
        """``job`` starts (a pass chose it): its CPUs and GPUs, in ``job.cpu_ids`` and
        ``job.gpu_ids``. The scheduler only starts what fits, so there are enough."""
        try:
            if self.cpus is not None:
                job.cpu_ids = self.cpus.take(job.id, job.procs)
            if self.gpus is not None:
                job.gpu_ids = self.gpus.take(job.id, job.gpus)
        except AllocationError as e:
            # A bookkeeping bug: the job runs unpinned rather than not at all.
            log.error("job %d: %s; it runs on any CPU", job.id, e)
            self.release(job.id)
            job.cpu_ids = None

    def release(self, jobid: int) -> None:
        """The job ended (or never started): its devices are free again."""
        for a in (self.cpus, self.gpus):
            if a is not None:
                a.release(jobid)

    def reserve(self, token: int) -> tuple[tuple[int, ...], tuple[str, ...]]:
        """Set every free device aside for the armed start ``token``, which may use more
        than the job it follows holds (its keeper picks from those and that job's)."""
        cpus: tuple[int, ...] = ()
        gpus: tuple[str, ...] = ()
        if self.cpus is not None and self.cpus.available():
            cpus = self.cpus.reserve(("token", token), self.cpus.available())
        if self.gpus is not None and self.gpus.available():
            gpus = self.gpus.reserve(("token", token), self.gpus.available())
        return cpus, gpus

    def spare(self) -> tuple[int, ...]:
        """The CPUs no running job holds and no armed start has set aside (none when jobs
        are not pinned): a keeper's own work is best done there."""
        return tuple(self.cpus.free_in_order()) if self.cpus is not None else ()

    def unreserve(self, token: int) -> None:
        for a in (self.cpus, self.gpus):
            if a is not None:
                a.unreserve(("token", token))

    def handed_over(
        self,
        jobid: int,
        token: int | None,
        cpus: Sequence[int] | None,
        gpus: Sequence[str] | None,
    ) -> tuple[tuple[int, ...] | None, tuple[str, ...] | None]:
        """A keeper started ``jobid`` from arm token ``token`` on ``cpus`` and ``gpus`` (of
        the job that ended, whose devices are free again, and of what was set aside)."""
        if token is not None:
            self.unreserve(token)
        return self.assign(jobid, cpus, gpus)

    def assign(
        self, jobid: int, cpus: Sequence[int] | None, gpus: Sequence[str] | None
    ) -> tuple[tuple[int, ...] | None, tuple[str, ...] | None]:
        """``jobid`` runs on these devices, decided elsewhere (a keeper's hand-over, a job
        re-adopted after a crash); what is recorded for it."""
        return _assign(self.cpus, jobid, cpus, "CPUs"), _assign(self.gpus, jobid, gpus, "GPUs")


def _assign(
    a: Allocator[D] | None, jobid: int, ids: Sequence[D] | None, what: str
) -> tuple[D, ...] | None:
    if a is None or ids is None:
        return None
    try:
        return a.assign(jobid, [d for d in ids if d in a.devices])
    except AllocationError as e:
        log.error("job %d runs on %s another job holds: %s", jobid, what, e)
        return None
