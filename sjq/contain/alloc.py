"""Devices held by running jobs (CPU and GPU ids). Pure; imports no asyncio or sqlite3.

Never one device to two jobs.

One ``Allocator`` per kind of device, owned by whoever decides which job runs (the
daemon). Three ways a job gets devices:

- ``take(job, n)``: a job the daemon starts; ``choose`` picks which (for CPUs
  ``cpus.choose_cpus``, for GPUs the first free in the managed order).
- ``hand_over(ended, started, n, extra)``: a keeper started an armed job the moment
  another ended, without asking the daemon. The new job gets ``n`` of what the ended job
  held, plus ``extra`` (devices the daemon set aside for that armed start, when the plan
  let it use more than the ended job held); what it does not take is free again. The
  keeper computes the same answer with the pure ``pick_hand_over`` and reports it; the
  daemon replays it here (``assign`` checks the ids are really available).
- ``assign(job, ids)``: ids decided elsewhere (a keeper's hand-over, a job re-adopted
  after a crash, whose CPUs are read back from its affinity).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Hashable, Iterable, Mapping, Sequence
from typing import Generic, TypeVar

from .cpus import format_cpulist

__all__ = ["THREAD_VARS", "AllocationError", "Allocator", "device_env", "pick_hand_over"]

# Thread-pool sizes of the usual numeric libraries: set to the job's CPUs unless the job
# sets them itself (a job that reserved 4 CPUs should not start 64 OpenMP threads).
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")

D = TypeVar("D", bound=Hashable)  # a device id: a CPU number or a GPU id


class AllocationError(RuntimeError):
    """Devices asked for are not available: a bug in the caller's bookkeeping (the
    scheduler only starts what fits), so the message names the job and the ids."""


def pick_hand_over(
    ended: Sequence[D],
    extra: Sequence[D],
    n: int,
    choose: Callable[[Collection[D], int], Sequence[D] | None],
) -> tuple[tuple[D, ...], tuple[D, ...]]:
    """(what the started job gets, what is left free) when an armed job needs ``n``
    devices and may use those of the job that ended plus ``extra``."""
    pool = list(dict.fromkeys([*ended, *extra]))
    got = choose(pool, n)
    if got is None:
        raise AllocationError(
            f"an armed job needs {n} device(s) but the job it follows leaves {len(pool)}"
        )
    taken = set(got)
    return tuple(got), tuple(d for d in pool if d not in taken)


class Allocator(Generic[D]):
    """Which job holds which device; every device is free or held by exactly one job."""

    def __init__(
        self, devices: Iterable[D], choose: Callable[[Collection[D], int], Sequence[D] | None]
    ) -> None:
        self.devices: tuple[D, ...] = tuple(dict.fromkeys(devices))
        self.choose = choose
        self.free: set[D] = set(self.devices)
        self.held: dict[Hashable, tuple[D, ...]] = {}
        self.reserved: dict[Hashable, tuple[D, ...]] = {}  # set aside for an armed start

    def __len__(self) -> int:
        return len(self.devices)

    def available(self) -> int:
        return len(self.free)

    def take(self, job: Hashable, n: int) -> tuple[D, ...]:
        if job in self.held:
            raise AllocationError(f"job {job} already holds {self.held[job]}")
        got = self.choose(self.free_in_order(), n)
        if got is None:
            raise AllocationError(f"job {job} needs {n} device(s); {len(self.free)} free")
        return self.assign(job, got)

    def assign(self, job: Hashable, ids: Iterable[D]) -> tuple[D, ...]:
        got = tuple(ids)
        if job in self.held:
            raise AllocationError(f"job {job} already holds {self.held[job]}")
        bad = [d for d in got if d not in self.free]
        if bad or len(set(got)) != len(got):
            raise AllocationError(f"job {job} cannot have {got}: not free: {bad}")
        self.free.difference_update(got)
        self.held[job] = got
        return got

    def release(self, job: Hashable) -> tuple[D, ...]:
        """What ``job`` held (nothing if it held nothing), free again."""
        got = self.held.pop(job, ())
        self.free.update(got)
        return got

    def reserve(self, entry: Hashable, n: int) -> tuple[D, ...]:
        """Set ``n`` free devices aside for an armed start (``hand_over``'s ``extra``)."""
        if entry in self.reserved:
            raise AllocationError(f"entry {entry} already has {self.reserved[entry]} set aside")
        got = self.take(entry, n)
        self.reserved[entry] = self.held.pop(entry)
        return got

    def unreserve(self, entry: Hashable) -> None:
        self.free.update(self.reserved.pop(entry, ()))

    def hand_over(
        self, ended: Hashable, started: Hashable, n: int, entry: Hashable | None = None
    ) -> tuple[D, ...]:
        """``ended`` is over and ``started`` took its place (plus what was reserved for
        ``entry``). Returns the started job's devices."""
        extra = self.reserved.get(entry, ()) if entry is not None else ()
        # chosen before anything changes: a hand-over that cannot be made changes nothing
        got, _ = pick_hand_over(self.held.get(ended, ()), extra, n, self.choose)
        self.reserved.pop(entry, None)
        self.release(ended)
        self.free.update(extra)
        return self.assign(started, got)

    def free_in_order(self) -> list[D]:
        return [d for d in self.devices if d in self.free]


def device_env(
    env: Mapping[str, str],
    *,
    procs: int,
    cpus: Sequence[int] | None = None,
    gpus: Sequence[str] | None = None,
) -> dict[str, str]:
    """The job's environment with its devices: ``SJQ_CPUS`` (``0,2-3``) and the thread
    variables when it is pinned (a variable the job's own environment sets is kept);
    ``CUDA_VISIBLE_DEVICES``, ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` and ``SJQ_GPUS`` when it
    has GPUs (an empty ``CUDA_VISIBLE_DEVICES`` when it asked for none, so that it cannot
    use a GPU another job holds)."""
    out = dict(env)
    if cpus is not None:
        out["SJQ_CPUS"] = format_cpulist(cpus)
        for var in THREAD_VARS:
            out.setdefault(var, str(procs))
    if gpus is not None:
        ids = ",".join(gpus)
        out["CUDA_VISIBLE_DEVICES"] = ids
        out["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
        out["SJQ_GPUS"] = ids
    return out
