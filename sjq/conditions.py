"""Dependency conditions (DEPENDS, and DEPENDENCY in Slurm's kinds): what each kind needs of
the job it names, one kind per named job, and how a new or recovered job's condition stands
against the jobs the daemon knows. Pure: imports no I/O module; ended jobs' states come
through the caller's lookup.

Kinds: ``afterok`` (the job succeeded: ``S``), ``afterany`` (it ended, however),
``afternotok`` (it ended in ``F``, ``K``, ``E`` or ``A``), ``after`` (it started, or ended
without starting). Several conditions on one job reduce to the strongest (``afterok`` and
``afterany`` is ``afterok``); ``afterok`` and ``afternotok`` together can never hold.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from sjq.jobs import Job, JobState, R, S
from sjq.protocol._dependency import Clause, dependency_ids, parse_dependency

__all__ = [
    "AFTER",
    "AFTERANY",
    "AFTERNOTOK",
    "AFTEROK",
    "NAMES",
    "NEVER",
    "Resolved",
    "condition_text",
    "holds_after_end",
    "missing_errors",
    "parents",
    "resolve",
]

# Small ints, so that an edge of the dependency index packs into one int (child << 2 | kind).
AFTEROK, AFTERANY, AFTERNOTOK, AFTER = 0, 1, 2, 3
NEVER = -1  # afterok and afternotok on the same job
CODES = {"afterok": AFTEROK, "afterany": AFTERANY, "afternotok": AFTERNOTOK, "after": AFTER}
NAMES = {code: name for name, code in CODES.items()}


def combine(a: int | None, b: int) -> int:
    """Both conditions on one job, as one."""
    if a is None or a == b:
        return b
    both = {a, b}
    if NEVER in both or both == {AFTEROK, AFTERNOTOK}:
        return NEVER
    if AFTEROK in both:
        return AFTEROK
    if AFTERNOTOK in both:
        return AFTERNOTOK
    return AFTERANY  # afterany and after


def holds_after_end(kind: int, state: JobState) -> bool:
    """Whether a condition of ``kind`` holds once its job has ended in ``state``; if not, it
    never will."""
    if kind == AFTEROK:
        return state is S
    if kind == AFTERNOTOK:
        return state is not S
    return kind != NEVER


def ended_reason(parent: int, state: JobState, kind: int) -> str:
    """Why a job is aborted: ``dependency 3 ended in F`` (afterok, as DEPENDS always said),
    ``dependency 3 ended in S (afternotok)``."""
    base = f"dependency {parent} ended in {state.value}"
    return base if kind == AFTEROK else f"{base} ({NAMES[kind]})"


def never_reason(parent: int) -> str:
    return f"dependency {parent}: afterok and afternotok cannot both hold"


def parents(depends: tuple[int, ...], dependency: str | tuple[Clause, ...]) -> dict[int, int]:
    """Each job named, with the one kind its conditions reduce to, in id order. The dict
    is shared by the callers that ask for the same condition (an array's elements all
    have one): read it, never change it."""
    return _parents(tuple(depends), dependency)


@functools.lru_cache(maxsize=256)
def _parents(depends: tuple[int, ...], dependency: str | tuple[Clause, ...]) -> dict[int, int]:
    kinds: dict[int, int] = {}
    for d in depends:
        kinds[d] = combine(kinds.get(d), AFTEROK)
    if not dependency:
        return dict(sorted(kinds.items()))
    clauses = parse_dependency(dependency) if isinstance(dependency, str) else dependency
    if isinstance(clauses, str):  # cannot happen for text this daemon wrote
        raise ValueError(f"stored dependency is unreadable: {clauses}")
    for kind, parent in dependency_ids(clauses):
        kinds[parent] = combine(kinds.get(parent), CODES[kind])
    return dict(sorted(kinds.items()))


def condition_text(depends: Iterable[int], dependency: str) -> str:
    """The whole condition in DEPENDENCY's syntax (DEPENDS as afterok): INFO's ``dependency``."""
    ids = ":".join(map(str, depends))
    head = f"afterok:{ids}" if ids else ""
    return ",".join(p for p in (head, dependency) if p)


@dataclass(slots=True)
class Resolved:
    """A condition against the jobs the daemon knows: ``afterok`` ids still to wait for
    (``unmet``), the other kinds' (``conds``: id and kind), why it can never hold
    (``doomed``), and ids named that no job has (``missing``)."""

    unmet: list[int] = field(default_factory=list)
    conds: list[tuple[int, int]] = field(default_factory=list)
    doomed: str = ""
    missing: list[int] = field(default_factory=list)


def resolve(
    kinds: dict[int, int],
    active: Callable[[int], Job | None],
    ended: Callable[[int], JobState | None],
    started: Callable[[Job], bool] = lambda job: job.state is R,
) -> Resolved:
    """Sort each job named into met, waited for, doomed or missing. ``active``: a job that
    has not ended; ``ended``: the final state of one that has (None: no such job);
    ``started``: whether an active job has started (under Slurm: runs there)."""
    out = Resolved()
    for parent, kind in kinds.items():
        job = active(parent)
        if job is not None:
            if kind == NEVER:
                out.doomed = out.doomed or never_reason(parent)
            elif kind == AFTER and started(job):
                continue  # it has started
            elif kind == AFTEROK:
                out.unmet.append(parent)
            else:
                out.conds.append((parent, kind))
            continue
        state = ended(parent)
        if state is None:
            out.missing.append(parent)
        elif kind == NEVER:
            out.doomed = out.doomed or never_reason(parent)
        elif not holds_after_end(kind, state):
            out.doomed = out.doomed or ended_reason(parent, state, kind)
    return out


def missing_errors(missing: list[int], depends: set[int]) -> list[str]:
    """SUBMIT's errors for ids no job has: each DEPENDS id, and the first DEPENDENCY id with
    a count of the rest (a mistyped range may miss thousands)."""
    out = [f"DEPENDS: there is no job {i}" for i in missing if i in depends]
    other = [i for i in missing if i not in depends]
    if other:
        more = f" (nor {len(other) - 1} more of the ids named)" if len(other) > 1 else ""
        out.append(f"DEPENDENCY: there is no job {other[0]}{more}")
    return out
