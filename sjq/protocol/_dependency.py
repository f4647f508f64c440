"""DEPENDENCY's grammar (Slurm's words, ``afterok:3:4,afterany:10-19``); imports no I/O module.

Parsing, the error messages, and the text form."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TypeAlias

from ._syntax import parse_jobid, quote

__all__ = [
    "KINDS",
    "MAX_DEPENDENCY_IDS",
    "Clause",
    "dependency_ids",
    "format_dependency",
    "parse_dependency",
]

# Each kind as Slurm names it; what must have happened to the jobs named.
KINDS = ("afterok", "afterany", "afternotok", "after")
# Slurm's other forms, refused by name rather than as typos.
_SLURM_ONLY = {
    "singleton": "one job of a name at a time",
    "aftercorr": "element by element of two arrays",
    "afterburstbuffer": "burst buffers",
    "expand": "growing a job",
}
# Ids one DEPENDENCY may name, ranges counted element by element: each becomes an edge in
# the daemon's memory, and each that has ended is looked up on disk at SUBMIT.
MAX_DEPENDENCY_IDS = 100_000

Clause: TypeAlias = tuple[str, tuple[tuple[int, int], ...]]
"""One kind and its ids as inclusive ranges: ``afterok:3:10-19`` is
``("afterok", ((3, 3), (10, 19)))``."""

_EXAMPLE = "(expected e.g. afterok:3:4,afterany:10-19)"


def parse_dependency(text: str) -> tuple[Clause, ...] | str:
    """The clauses of a DEPENDENCY value, or the error message (without the option name).
    Kinds are case-insensitive; a clause of bare ids (``3:4``) means afterok, as DEPENDS."""
    text = text.strip(" \t")
    if "?" in text:
        return (
            "'?' (any one of) is not supported: every condition joined with ',' must hold,"
            f" e.g. afterok:3,afterany:4; got {quote(text)}"
        )
    clauses: list[Clause] = []
    count = 0
    for raw in text.split(","):
        clause = raw.strip(" \t")
        if not clause:
            return f"empty condition in {quote(text)} {_EXAMPLE}"
        head, _, rest = clause.partition(":")
        kind = head.strip(" \t").lower()
        if kind in KINDS:
            pieces = rest.split(":") if rest.strip(" \t") else []
            if not pieces:
                return f"{quote(clause)} names no job (expected {kind}:<id>[:<id>...])"
        elif kind in _SLURM_ONLY:
            return f"{kind} ({_SLURM_ONLY[kind]}) is Slurm's; sjq knows {', '.join(KINDS)}"
        elif _id_like(kind):
            kind, pieces = "afterok", clause.split(":")
        else:
            return f"unknown kind {quote(head)}; sjq knows {', '.join(KINDS)} {_EXAMPLE}"
        ranges = []
        for piece in pieces:
            r = _range(piece.strip(" \t"))
            if isinstance(r, str):
                return r
            count += r[1] - r[0] + 1
            if count > MAX_DEPENDENCY_IDS:
                return f"names more than {MAX_DEPENDENCY_IDS} jobs"
            ranges.append(r)
        clauses.append((kind, tuple(ranges)))
    return tuple(clauses)


def _id_like(word: str) -> bool:
    return word[:1].isdigit()


def _range(piece: str) -> tuple[int, int] | str:
    if "+" in piece:
        return (
            f"{quote(piece)}: a delay after the start (+minutes) is not supported;"
            " give the ids alone"
        )
    if "_" in piece:
        return (
            f"{quote(piece)} is Slurm's array element syntax; each element of an sjq array"
            " has an id of its own (a range such as 10-109 names them all)"
        )
    first, dash, last = piece.partition("-")
    lo = parse_jobid(first)
    hi = parse_jobid(last) if dash else lo
    if not piece or lo is None or hi is None or not first.strip() or (dash and not last.strip()):
        return f"{quote(piece)} is not a job id or an id range {_EXAMPLE}"
    if hi < lo:
        return f"id range {quote(piece)} goes down (write the lower id first)"
    return lo, hi


def format_dependency(clauses: tuple[Clause, ...]) -> str:
    """The text form, as `parse_dependency` reads it back."""
    return ",".join(
        kind + "".join(f":{lo}" if lo == hi else f":{lo}-{hi}" for lo, hi in ranges)
        for kind, ranges in clauses
    )


def dependency_ids(clauses: tuple[Clause, ...]) -> Iterator[tuple[str, int]]:
    """Every (kind, job id) the clauses name, ranges expanded, in order."""
    for kind, ranges in clauses:
        for lo, hi in ranges:
            for jobid in range(lo, hi + 1):
                yield kind, jobid
