"""Toil's job requests and sjq's job records, each way: pure functions; imports no Toil, no I/O.

Kept apart from the batch system so that the rules (whole CPUs, byte-exact memory, which sjq
outcome is which Toil exit reason) can be tested without a leader, and with Hypothesis.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from sjq.protocol import JobState

if TYPE_CHECKING:
    from sjq_client import JobInfo

__all__ = [
    "EXIT_UNAVAILABLE",
    "MAX_NAME",
    "Outcome",
    "gpus_for",
    "job_name",
    "lost",
    "outcome",
    "procs_for",
    "time_limit_for",
    "worker_env",
    "worker_script",
]

EXIT_UNAVAILABLE = 255  # toil's EXIT_STATUS_UNAVAILABLE_VALUE: "no exit status to report"
MAX_NAME = 200  # characters of a job name; `sjq status` shows names, and Toil's can be long

Outcome = tuple[int, str, float | None]
"""(exit status, the name of a toil BatchJobExitReason, wall-clock seconds or None)."""


def procs_for(cores: float) -> int:
    """Whole CPUs for a Toil ``cores`` request: fractions round up, and every job gets one.

    sjq reserves whole CPUs; a job that asks for 0.5 cores still occupies a process slot, and
    rounding down would let two 1.5-core jobs share 2 CPUs and overcommit them.
    """
    if isinstance(cores, bool) or not isinstance(cores, int | float) or math.isnan(cores):
        raise ValueError(f"cores must be a number, got {cores!r}")
    if math.isinf(cores):
        raise ValueError("cores must be finite")
    return max(1, math.ceil(cores))


def gpus_for(accelerators: Iterable[Mapping[str, Any]]) -> int:
    """sjq's GPUS for Toil's ``accelerators`` requirement: the count of GPUs asked for.

    sjq hands out CUDA devices (its ``sjq.gpus``), so a GPU of another ``brand`` than
    nvidia or another ``api`` than cuda, or an accelerator that is not a GPU, cannot be had:
    ValueError, saying which. A ``model`` is not checked (sjq does not know its devices'
    models), as Toil's Slurm batch system does."""
    n = 0
    for acc in accelerators:
        kind, brand, api = acc.get("kind"), acc.get("brand"), acc.get("api")
        if kind != "gpu":
            raise ValueError(f"sjq hands out GPUs only, not {kind!r} accelerators")
        if brand not in (None, "nvidia") or api not in (None, "cuda"):
            raise ValueError(
                f"sjq's GPUs are NVIDIA CUDA devices; {brand or api!r} GPUs cannot be had"
            )
        count = acc.get("count", 1)
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"a GPU count must be a whole number, got {count!r}")
        n += count
    return n


def time_limit_for(walltime: float | None) -> float | None:
    """sjq's TIME for Toil's ``walltime`` requirement (seconds; 0 or None means no limit)."""
    if walltime is None or walltime <= 0:
        return None
    return float(walltime)


def job_name(toil_id: int, kind: str, tag: str) -> str:
    """The sjq NAME of a Toil job: ``toil.<tag>.<batch id> <kind>``, e.g.
    ``toil.1f0c9a2b.7 align_sample`` — the workflow, Toil's batch-system job id, and what the
    job is (Toil's unit, job or display name).

    NAME may hold no tab (STATUS records are tab-separated) and no line break; any control
    character becomes a space. Long names are cut at MAX_NAME characters.
    """
    clean = "".join(c if c.isprintable() else " " for c in kind).strip() or "job"
    return f"toil.{tag}.{toil_id} {clean}"[:MAX_NAME]


def worker_env(*layers: Mapping[str, str] | None) -> dict[str, str]:
    """The job's environment: ``layers`` merged in order, later ones winning (the leader's
    environment, then the batch system's ``setEnv`` variables, then the job's own).

    Variables the protocol cannot carry are left out, as ``sjq submit`` does: a name outside
    ``[A-Za-z_][A-Za-z0-9_]*`` (bash's exported functions, ``BASH_FUNC_f%%``) or a value with a
    line break or NUL.
    """
    merged: dict[str, str] = {}
    for layer in layers:
        if layer:
            merged.update(layer)
    return {
        name: value
        for name, value in merged.items()
        if name.isascii() and name.isidentifier() and "\n" not in value and "\0" not in value
    }


def worker_script(command: str) -> bytes:
    """The job's script: Toil's worker command line, run by ``/bin/sh`` as Toil runs it
    (one string that the shell splits; the worker found on the job's PATH) and ``exec``-ed,
    so the job's exit status and signals are the worker's own."""
    if not command.strip():
        raise ValueError("the worker command is empty")
    if "\n" in command or "\0" in command:
        raise ValueError("the worker command must be one line")
    return b"#!/bin/sh\nexec " + command.encode("utf-8", "surrogateescape") + b"\n"


def outcome(info: JobInfo) -> Outcome:
    """How an ended sjq job is reported to Toil.

    ======  =============================================  =================
    state   exit status                                    reason
    ======  =============================================  =================
    S       0                                              FINISHED
    F       the exit code; 128 + signal if a signal ended  TIMELIMIT (sjq's
            it; never 0                                    ``time limit``),
                                                           MEMLIMIT (a memory
                                                           limit), else FAILED
    K       as F (killed outside this batch system: ``sjq  KILLED
            kill``, or a daemon SHUTDOWN)
    E       255 (the job never ran)                        ERROR
    A       255 (cannot happen: no job has DEPENDS)        ERROR
    ======  =============================================  =================
    """
    wall = info.elapsed() if info.ended is not None else None
    match info.state:
        case JobState.SUCCESS:
            return 0, "FINISHED", wall
        case JobState.FAIL:
            why = info.reason.lower()
            if "time limit" in why:
                reason = "TIMELIMIT"
            elif "memory" in why:
                reason = "MEMLIMIT"
            else:
                reason = "FAILED"
            return _failed_status(info), reason, wall
        case JobState.KILLED:
            return _failed_status(info), "KILLED", wall
        case JobState.ERROR | JobState.ABORT:
            return EXIT_UNAVAILABLE, "ERROR", None
        case _:
            raise ValueError(f"sjq job {info.id} has not ended ({info.state.word})")


def lost() -> Outcome:
    """A job the daemon no longer knows (its record was removed: see ``sjq.keep``)."""
    return EXIT_UNAVAILABLE, "LOST", None


def _failed_status(info: JobInfo) -> int:
    if info.exit_code is not None and info.exit_code != 0:
        return info.exit_code
    if info.signal is not None and info.signal > 0:
        return 128 + info.signal  # as a shell reports a command a signal ended
    return EXIT_UNAVAILABLE  # a failure must never read as success
