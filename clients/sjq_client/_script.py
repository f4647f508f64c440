"""What a job runs: script bytes from text, a file or a wrapped command, and the env it gets.

Pure functions of their arguments; imports os, shlex and sjq's lexical rules only.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from sjq.protocol._syntax import env_name

__all__ = ["exportable", "script_body", "wrap_command"]


def wrap_command(argv: Sequence[str], *, entry: bool = False) -> bytes:
    """A ``#!/bin/sh`` script that runs ``argv`` exactly, quoting preserved: ``exec 'a b' c``.
    With ``entry``, each ``{}`` in an argument stands for the element's line, ``$SJQ_ENTRY``
    (as xargs -I {} and GNU parallel): ``gzip {}`` runs ``gzip "$SJQ_ENTRY"``.

    ``exec`` so that the job's process is the command itself: its exit status and signals
    are the command's, and KILL reaches it directly.
    """
    if not argv:
        raise ValueError("command must name a program to run")
    import shlex  # noqa: PLC0415 - only `sjq submit -- CMD` pays for it

    def word(a: str) -> str:
        if not (entry and "{}" in a):
            return shlex.quote(a)
        return '"$SJQ_ENTRY"'.join(shlex.quote(p) if p else "" for p in a.split("{}"))

    line = " ".join(word(a) for a in argv)
    # surrogateescape: arguments that are not UTF-8 (os.fsdecode'd) go back as their bytes.
    return b"#!/bin/sh\nexec " + line.encode("utf-8", "surrogateescape") + b"\n"


def exportable(environ: Mapping[str, str]) -> list[tuple[str, str]]:
    """The variables of ``environ`` that the protocol can carry, in order: not one whose
    name is outside ``[A-Za-z_][A-Za-z0-9_]*`` (bash exports functions as
    ``BASH_FUNC_name%%``) or whose value has a line break or a NUL."""
    return [
        (name, value)
        for name, value in environ.items()
        if env_name(name) and "\n" not in value and "\0" not in value
    ]


def script_body(
    script: str | bytes | os.PathLike[str] | None, command: Sequence[str] | None
) -> tuple[bytes, str | None]:
    """The script's bytes and the job name it suggests."""
    if (script is None) == (command is None):
        raise TypeError("give exactly one of script= and command=")
    if command is not None:
        if isinstance(command, str | bytes):
            raise TypeError("command is a list of arguments, e.g. ['sort', '-o', 'out', 'in']")
        return wrap_command([os.fsdecode(a) for a in command]), os.path.basename(command[0])
    if isinstance(script, os.PathLike):
        with open(script, "rb") as f:
            return f.read(), os.path.basename(os.fspath(script))
    assert script is not None
    return (script.encode() if isinstance(script, str) else bytes(script)), None
