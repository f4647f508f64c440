"""How the daemon holds jobs to their resources (``sjq.enforce``): chosen once at start, said
once in the log, handed to every keeper as its `Guard`. Imports no asyncio or sqlite3.

``cgroup``: each job in a cgroup of its own (v2, or v1 as root), the kernel enforcing MEM;
``watch``: each job's process tree sampled and stopped when over MEM; ``none``: nothing
enforced. Every method measures a job's true usage (docs/containment.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from sjq.config import Config, ConfigError
from sjq.contain.cgroup import Backend, CgroupError, detect
from sjq.keeper.guard import Guard

__all__ = ["Containment", "choose"]


@dataclass(slots=True)
class Containment:
    """The method in use (INFO's ``measured_by`` follows from it), the cgroup backend when
    there is one, and the line the daemon logs at start."""

    method: str  # "cgroup", "watch", "none" or "slurm"
    backend: Backend | None
    line: str

    def guard(self, pool_size: int) -> Guard:
        """One keeper's guard (built before the keeper is forked)."""
        return Guard(self.backend, pool_size=pool_size)

    def close(self) -> None:
        """The daemon stops: remove what is left of its groups (those still holding jobs
        that run on stay, and the next daemon finds them)."""
        if self.backend is not None:
            self.backend.teardown()


def choose(cfg: Config) -> Containment:
    """The method ``sjq.enforce`` asks for, as this machine allows it; its groups set up.
    Raises ConfigError when ``cgroup`` is asked for and cannot be had."""
    if cfg.backend == "slurm":
        return Containment(
            "slurm", None, "Slurm's (sjq.backend = slurm): no job runs on this machine"
        )
    if cfg.enforce == "none":
        return Containment(
            "none",
            None,
            "none (sjq.enforce = none): jobs are not held to their MEM; their usage is sampled",
        )
    watch = (
        f"watch (sjq.enforce = {cfg.enforce}): each job's process tree is sampled and"
        " stopped when it is over its MEM"
    )
    if cfg.enforce == "watch":
        return Containment("watch", None, watch)
    det = detect(controllers=("memory", "cpuacct"))
    backend, why = det.backend, det.why
    if backend is not None:
        try:
            backend.sweep_stale()
            backend.setup()
        except CgroupError as e:
            why = f"{backend.describe()}: {e.strerror or e}"
            backend = None
    if cfg.enforce == "cgroup" and (backend is None or not backend.memory):
        raise ConfigError(
            "sjq.enforce",
            None,
            f"cgroup: no cgroup can hold a job's memory here ({why}); use sjq.enforce = watch"
            " or auto",
        )
    if backend is None:
        return Containment("watch", None, f"{watch}: {why}")
    if not backend.memory:
        return Containment(
            "cgroup",
            backend,
            f"cgroup (sjq.enforce = {cfg.enforce}): {why}; memory sampled over each job's group",
        )
    return Containment(
        "cgroup",
        backend,
        f"cgroup (sjq.enforce = {cfg.enforce}): {why}; the kernel holds each job to its MEM",
    )
