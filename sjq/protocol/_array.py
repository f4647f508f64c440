"""ARRAY's grammar (Slurm's spec: ``1-100``, ``0-30:3``, ``1,5,7``, ``%4``); imports no I/O module.

Parsing into the sorted element indexes and the limit of elements running at once, the error
messages, and the text form."""

from __future__ import annotations

from collections.abc import Sequence

from ._syntax import parse_uint, quote

__all__ = ["MAX_ARRAY", "MAX_INDEX", "format_array", "format_runs", "parse_array"]

# Elements one SUBMIT may make: each is a job in the daemon's memory and a row on disk, all
# made in one turn (10,000 take well under a second).
MAX_ARRAY = 100_000
MAX_INDEX = 2**31 - 1  # as Slurm's, an index fits a C int; SJQ_ARRAY_INDEX is read by scripts

_EXAMPLE = "(expected e.g. 1-100, 0-30:3, 1,5,7 or 1-100%4)"


def parse_array(text: str) -> tuple[tuple[int, ...] | None, int | None] | str:
    """The indexes (sorted, each once; None when the spec is only ``%N``) and the limit
    (``%N``, or None), or the error message (without the option name)."""
    spec, percent, limit_text = text.strip(" \t").partition("%")
    limit = None
    if percent:
        n = parse_uint(limit_text)
        if not n:
            return f"the limit after % must be a whole number >= 1, got {quote(limit_text)}"
        limit = n
    if not spec.strip(" \t"):
        if not percent:
            return f"names no index {_EXAMPLE}"
        return None, limit
    found: set[int] = set()
    for raw in spec.split(","):
        piece = raw.strip(" \t")
        r = _piece(piece)
        if isinstance(r, str):
            return r
        first, last, step = r
        if (last - first) // step + 1 + len(found) > MAX_ARRAY:
            return f"more than {MAX_ARRAY} elements"
        found.update(range(first, last + 1, step))
    return tuple(sorted(found)), limit


def _piece(piece: str) -> tuple[int, int, int] | str:
    span, colon, step_text = piece.partition(":")
    first_text, dash, last_text = span.partition("-")
    first = parse_uint(first_text)
    last = parse_uint(last_text) if dash else first
    step = parse_uint(step_text) if colon else 1
    if first is None or last is None or not first_text.strip() or (dash and not last_text):
        return f"{quote(piece)} is not an index or a range {_EXAMPLE}"
    if not step:
        return f"the step of {quote(piece)} must be a whole number >= 1"
    if colon and not dash:
        return f"{quote(piece)}: a step needs a range, e.g. 0-30:3"
    if last < first:
        return f"range {quote(piece)} goes down (write the lower index first)"
    if last > MAX_INDEX:
        return f"index {last} is too large (at most {MAX_INDEX})"
    return first, last, step


def format_runs(seq: Sequence[int]) -> str:
    """Runs of consecutive numbers as ranges, in the order given: (0, 2, 3) -> ``0,2-3``
    (array indexes, CPU lists, Slurm's task numbers)."""
    pieces: list[str] = []
    i = 0
    while i < len(seq):
        j = i
        while j + 1 < len(seq) and seq[j + 1] == seq[j] + 1:
            j += 1
        pieces.append(str(seq[i]) if i == j else f"{seq[i]}-{seq[j]}")
        i = j + 1
    return ",".join(pieces)


def format_array(indexes: tuple[int, ...] | None, limit: int | None) -> str:
    """The text form, as `parse_array` reads it back: runs of consecutive indexes as ranges."""
    return format_runs(indexes or ()) + (f"%{limit}" if limit is not None else "")
