"""How the daemon holds jobs to their resources (``sjq.enforce``): chosen once at start, said
once in the log, handed to every keeper as its `Guard`. Imports no asyncio or sqlite3.

``cgroup``: each job in a cgroup of its own (v2, or v1 as root), the kernel enforcing MEM;
``watch``: each job's process tree sampled and stopped when over MEM; ``none``: nothing
enforced. Every method measures a job's true usage (docs/containment.md).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from sjq.config import Config, ConfigError
from sjq.contain.cgroup import Backend, CgroupError, detect
from sjq.contain.cpus import Topology, format_cpulist
from sjq.contain.gpus import GpuError, discover_gpus
from sjq.devices import Devices
from sjq.keeper.guard import Guard

__all__ = ["Containment", "choose", "devices"]

log = logging.getLogger("sjq")


@dataclass(slots=True)
class Containment:
    """The method in use (INFO's ``measured_by`` follows from it), the cgroup backend when
    there is one, and the line the daemon logs at start."""

    method: str  # "cgroup", "watch", "none" or "slurm"
    backend: Backend | None
    line: str

    def guard(self, pool_size: int, topology: Topology | None) -> Guard:
        """One keeper's guard (built before the keeper is forked); ``topology``: the CPUs
        jobs are pinned to (None: no pinning)."""
        return Guard(self.backend, pool_size=pool_size, topology=topology)

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
    # Pinning under v1 is the job's cpuset (it cannot widen its affinity); without pinning
    # the cpuset hierarchy would only cost two writes per start.
    versions = ("v1",) if cfg.cgroup == "v1" else ("v2",) if cfg.cgroup != "auto" else ("v2", "v1")
    v2_root = cfg.cgroup if cfg.cgroup.startswith("/") else None
    det = detect(
        versions=versions,
        v2_root=v2_root,
        controllers=("memory", "cpuacct", *(("cpuset",) if cfg.pin else ())),
    )
    backend, why = det.backend, det.why
    if cfg.enforce == "cgroup" and backend is not None and not backend.memory:
        backend = None  # refused below, before anything is made
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


def devices(cfg: Config, contained: Containment) -> Devices:
    """The CPUs jobs are pinned to (``sjq.pin``) and the GPUs they are given (``sjq.gpus``),
    each said once in the log. Raises ConfigError for GPU ids that cannot be read (e.g.
    a malformed SJQ_GPUS of the job a daemon was started in)."""
    if contained.method == "slurm":
        return Devices()
    topology = None
    if cfg.pin:
        topology = Topology.read()
        how = (
            "the job's cpuset"
            if contained.backend is not None and contained.backend.cpuset
            else "affinity"
        )
        log.info(
            "pinning: each job gets CPUs of its own among %s (sjq.pin = T; by %s)",
            format_cpulist(topology.cpus),
            how,
        )
    try:
        gpus = discover_gpus(cfg.gpus, os.environ)
    except GpuError as e:
        raise ConfigError("sjq.gpus", None, str(e)) from None
    if gpus.ids:
        log.info("gpus: %s, from %s", ",".join(gpus.ids), gpus.source)
    else:
        log.info("gpus: none (%s)", gpus.source)
    return Devices(topology, gpus.ids)
