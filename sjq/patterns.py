"""Slurm-style file name patterns for a job's output (``logs/%x.%j.out``): pure text, no I/O.

The daemon expands STDOUT and STDERR with `expand` when the client sent ``PATTERNS`` or
the job is an array element, and always for the ``sjq.defaults.stdout``/``.stderr`` keys.
As in Slurm's sbatch:

    %%          a literal %
    %j  %J      the job id (%J is Slurm's jobid.stepid; sjq has no steps)
    %x          the job name, with any "/" written as "_" (a name is not a path)
    %A          the job id of the array the job belongs to; for a job outside an array,
                its own id (as Slurm)
    %a          the job's index in its array; 0 for a job outside an array (Slurm writes
                4294967294 there)
    %u          the name of the user the job runs as (its uid if it has no name)
    %N          the short host name of the machine (up to the first ".")

A number between ``%`` and the letter pads a numeric field with zeros to that width, at most
10 (``%4j`` is ``0042`` for job 42); it is ignored for %x, %u and %N. Anything else after a
``%`` (``%q``, ``%5q``, a ``%`` at the end) is kept as written, as Slurm does. Unlike Slurm,
a backslash is an ordinary character (Slurm turns all expansion off when the path holds
one): write ``%%`` for a literal ``%``.

Imports only re and sjq._record: the protocol's clients never need it.
"""

from __future__ import annotations

import re

from sjq._record import record

__all__ = ["MAX_PAD", "PatternFields", "expand"]

MAX_PAD = 10  # widest zero padding, as Slurm's
_SEQUENCE = re.compile(r"%(?:(%)|([0-9]*)([A-Za-z]))")
_NUMERIC = frozenset("jJAa")
_TEXT = frozenset("xuN")


@record
class PatternFields:
    """What a pattern can name. ``array_id``/``array_index``: None for a job outside an array."""

    jobid: int
    name: str
    user: str
    host: str
    array_id: int | None = None
    array_index: int | None = None


def expand(pattern: str, fields: PatternFields) -> str:
    """``pattern`` with every known ``%`` sequence replaced (see the module docstring)."""
    if "%" not in pattern:
        return pattern

    def one(m: re.Match[str]) -> str:
        if m[1]:
            return "%"
        pad, letter = m[2], m[3]
        if letter in _NUMERIC:
            digits = pad.lstrip("0")  # int() of thousands of digits would raise
            width = MAX_PAD if len(digits) > 2 else min(int(digits or 0), MAX_PAD)
            return str(_number(letter, fields)).zfill(width)
        if letter in _TEXT:
            return _text(letter, fields)
        return m[0]  # not a field: kept as written

    return _SEQUENCE.sub(one, pattern)


def _number(letter: str, f: PatternFields) -> int:
    if letter == "A":
        return f.jobid if f.array_id is None else f.array_id
    if letter == "a":
        return 0 if f.array_index is None else f.array_index
    return f.jobid  # j, J


def _text(letter: str, f: PatternFields) -> str:
    value = f.name if letter == "x" else f.user if letter == "u" else f.host
    return value.replace("/", "_")
