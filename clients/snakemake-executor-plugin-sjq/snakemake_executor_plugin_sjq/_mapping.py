"""What a Snakemake job asks of sjq: its resources, name and output files as submit arguments.

Pure functions of the job's attributes (read through duck typing, so they can be tested without
a workflow); imports neither snakemake nor sjq's I/O.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

__all__ = [
    "GPU_RESOURCES",
    "MappingError",
    "gpus",
    "job_name",
    "memory",
    "output_file",
    "time_limit",
]

GPU_RESOURCES = ("gpus", "gpu")
MAX_NAME = 200  # characters of a job name: enough for a rule and its wildcards in `sjq status`


class MappingError(ValueError):
    """A resource value the plugin cannot turn into an sjq request."""


def _number(resources: Mapping[str, Any], name: str) -> float | None:
    value = resources.get(name)
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value
    if isinstance(value, str) and value.strip():
        try:
            return float(value)
        except ValueError:
            raise MappingError(f"resource {name}={value!r} is not a number") from None
    return None


def memory(resources: Mapping[str, Any]) -> int | None:
    """Bytes to reserve, None if not given.

    Snakemake turns whichever of ``mem``, ``mem_mb`` and ``mem_mib`` a rule gives into both
    ``mem_mb`` (megabytes, 10**6 bytes) and ``mem_mib`` (2**20 bytes), rounding the mebibytes
    up: ``mem_mib`` is exact or a little more than asked, never less, so it is the one used.
    """
    mib = _number(resources, "mem_mib")
    if mib is not None:
        return int(mib * 1024 * 1024)
    mb = _number(resources, "mem_mb")
    if mb is not None:
        return int(mb * 1_000_000)
    return None


def time_limit(resources: Mapping[str, Any]) -> float | None:
    """Seconds of wall-clock time: ``runtime`` is in minutes. None (no limit) if not given or 0."""
    minutes = _number(resources, "runtime")
    if minutes is None or minutes <= 0:
        return None
    return minutes * 60.0


def gpus(resources: Mapping[str, Any]) -> int:
    """GPUs asked for (``gpus`` or ``gpu``); 0 if none."""
    for name in GPU_RESOURCES:
        count = _number(resources, name)
        if count:
            if count < 0 or count != int(count):
                raise MappingError(f"resource {name}={count:g} is not a whole number of GPUs")
            return int(count)
    return 0


def job_name(rule: str, wildcards: Mapping[str, Any] | None) -> str:
    """``rule`` or ``rule[sample=a,lane=1]``: what `sjq status` shows. Tabs, line breaks and
    NULs (which the wire refuses in a name) become spaces; cut to MAX_NAME characters."""
    name = rule
    if wildcards:
        name += "[" + ",".join(f"{k}={v}" for k, v in wildcards.items()) + "]"
    name = name.translate(_UNSENDABLE)
    if not name.strip():
        name = "snakemake-job"
    return name if len(name) <= MAX_NAME else name[: MAX_NAME - 3] + "..."


_UNSENDABLE = dict.fromkeys(map(ord, "\t\n\r\0"), " ")


def output_file(suggestion: str, workdir: str) -> str:
    """The absolute path of the job's sjq output (STDOUT and STDERR both), its directory made.

    Not the rule's own ``log:`` files: Snakemake removes those before the job runs, so the
    job's messages written there would be lost, and the rule's own writes clobbered.
    """
    path = os.path.join(workdir, suggestion)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return path
