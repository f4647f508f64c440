"""Several elements of one sjq array as one ``sbatch --array``; pure: imports no subprocess/asyncio.

Every element of an sjq array is a job of its own, with its own id, state and output files, and
its own variables (``SJQ_JOBID``, ``JOB_ID``, ``SJQ_ARRAY_INDEX``, ``SJQ_ENTRY``). Handing each to
``sbatch`` costs Slurm one submission and one job record per element; an array of 10,000
would reach Slurm's ``MaxJobCount`` (10,000 by default). So the elements of an array that go to
Slurm together become one Slurm array job (``Batch``), with at most ``max_tasks`` tasks:

- Slurm array task N is sjq job ``base + N`` (the batch's tag, ``sjq:<daemon>:a<base>``, says
  so: a daemon that died before it recorded sbatch's answer finds each element again by it).
  Task numbers start at 0 and stay below Slurm's ``MaxArraySize``.
- Slurm gives every task the same environment and the same script, so the script sbatch gets is
  a short ``/bin/sh`` wrapper: it sets the variables that differ between elements from
  ``SLURM_ARRAY_TASK_ID``, sends stdout and stderr to the element's own files, writes the job's
  script to a file in ``$TMPDIR`` (``/tmp`` unless the job's environment sets it), opens it as
  file descriptor 9, removes it, and execs the interpreter of its ``#!`` line on
  ``/proc/self/fd/9``, as the kernel would have. The job's process is then what it is in a
  single sbatch: same signals, same exit status. The ``#SBATCH`` lines of the job's script are
  copied into the wrapper, so Slurm reads them as before.
- An element the wrapper cannot set up (its output file cannot be opened, no room for the
  script copy) exits with status 1 before the job's script runs.
- The sjq array's limit (``%N``) becomes Slurm's (``%M``), M the room left under N
  (``sjq.slurm.backend``).

Scripts a wrapper could not run exactly as sbatch would (no ``#!``, a relative interpreter, NUL
bytes) are not batched: each element goes to sbatch alone, which refuses or runs it as always.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sjq.protocol import format_runs

__all__ = [
    "MAX_WRAPPER",
    "Batch",
    "Member",
    "array_spec",
    "build",
    "header",
    "interpreter",
    "sh_quote",
    "unbatchable",
]

# Bytes of wrapper per batch. Slurm refuses a script above its max_script_size (4 MiB by
# default); an element costs about 200 bytes plus its ENTRY line.
MAX_WRAPPER = 1 << 20
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True, slots=True)
class Member:
    """What differs between the elements of a batch: the id, the environment, the outputs."""

    jobid: int
    env: Mapping[str, str]
    stdout: str
    stderr: str


@dataclass(frozen=True, slots=True)
class Batch:
    """One ``sbatch --array``: task ``N`` is sjq job ``base + N``."""

    base: int
    jobids: tuple[int, ...]
    array: str  # --array, e.g. "0-9,12%4"
    script: bytes  # the wrapper
    env: dict[str, str]  # what every element shares; the rest is set by the wrapper


def sh_quote(text: str) -> str:
    """``text`` as one word of ``/bin/sh``, whatever it holds (but NUL)."""
    return "'" + text.replace("'", "'\\''") + "'"


def interpreter(script: bytes) -> tuple[str, str | None] | None:
    """The program and optional argument of the script's ``#!`` line, split as Linux does (the
    program up to the first blank, the rest, trimmed, as one argument); None without one."""
    first = script.lstrip().split(b"\n", 1)[0]
    if not first.startswith(b"#!"):
        return None
    line = first[2:].decode("utf-8", "surrogateescape").strip(" \t")
    prog, _, arg = line.replace("\t", " ").partition(" ")
    arg = arg.strip(" \t")
    if not prog:
        return None
    return prog, arg or None


def unbatchable(script: bytes) -> str:
    """Why elements with this script cannot share an sbatch (``""``: they can)."""
    if b"\0" in script:
        return "the script holds a NUL byte"
    found = interpreter(script)
    if found is None:
        return "the script has no #! line"
    if not found[0].startswith("/") or found[0].endswith("\r"):
        return f"the #! line names no absolute program: {found[0]!r}"
    return ""


def header(script: bytes) -> bytes:
    """The lines after ``#!`` that sbatch reads options from: every line up to the first one
    that is neither blank nor a comment (``#SBATCH`` and ``#PBS`` lines, and comments)."""
    lines = script.lstrip().split(b"\n")[1:]
    out = []
    for line in lines:
        bare = line.strip()
        if bare and not bare.startswith(b"#"):
            break
        out.append(line)
    while out and not out[-1].strip():
        out.pop()
    return b"".join(line + b"\n" for line in out)


def array_spec(offsets: Sequence[int], limit: int | None) -> str:
    """``--array`` for task numbers ``offsets`` (ascending): runs as ranges, ``%limit`` when it
    holds fewer than them all."""
    spec = format_runs(offsets)
    if limit is not None and limit < len(offsets):
        spec += f"%{limit}"
    return spec


def _delimiter(script: bytes) -> bytes:
    """A here-document delimiter that is no line of ``script``."""
    token = hashlib.sha256(script).hexdigest()[:16]
    n = 0
    while True:
        delim = f"SJQ_SCRIPT_{token}_{n}".encode()
        if delim not in script:
            return delim
        n += 1


def _env_split(members: Sequence[Member]) -> tuple[dict[str, str], list[str]] | None:
    """The variables every member has with one value, and the names of the rest (None when one
    of those cannot be set by ``/bin/sh``)."""
    first = members[0].env
    common = {k: v for k, v in first.items() if all(m.env.get(k) == v for m in members[1:])}
    own: dict[str, None] = {}
    for m in members:
        for k in m.env:
            if k not in common:
                own[k] = None
    if not all(_NAME.fullmatch(k) for k in own):
        return None
    return common, list(own)


def _branch(offset: int, m: Member, own: list[str]) -> str:
    sets = [f"{k}={sh_quote(m.env[k])}" for k in own if k in m.env]
    unset = [k for k in own if k not in m.env]
    err = "" if m.stderr == m.stdout else m.stderr
    words = [*sets, f"sjq_o={sh_quote(m.stdout)}", f"sjq_e={sh_quote(err)}"]
    line = f"{offset}) {' '.join(words)}"
    if unset:
        line += f"; unset {' '.join(unset)}"
    return line + " ;;\n"


def build(
    script: bytes,
    members: Sequence[Member],
    limit: int | None,
    max_tasks: int,
) -> Batch | str:
    """The batch of the first of ``members`` (ascending ids; one array, one script) and as many
    after it as fit: task numbers below ``max_tasks``, a wrapper of at most ``MAX_WRAPPER``
    bytes (at least the first). ``limit``: at most that many of them run at once. Why not,
    when these members cannot share an sbatch at all (``unbatchable``, or a variable that
    differs between them has a name ``/bin/sh`` cannot set)."""
    why = unbatchable(script) or ("" if members else "no members")
    if why:
        return why
    found = interpreter(script)
    split = _env_split(members)
    if split is None:
        return "a variable that differs between the elements has a name /bin/sh cannot set"
    assert found is not None  # unbatchable() checked it
    base = members[0].jobid
    body = script.lstrip()
    delim = _delimiter(body)
    prog, arg = found
    run = " ".join(sh_quote(w) for w in (prog, *([arg] if arg else []), "/proc/self/fd/9"))
    head = b"#!/bin/sh\n" + header(body)
    preamble = (
        f"# sjq: Slurm array task N is sjq job {base}+N. This sets the job's own variables\n"
        "# and output files, then runs its script as its #! line says (docs/slurm.md).\n"
        "case ${SLURM_ARRAY_TASK_ID-} in\n"
    ).encode()
    size = len(head) + len(preamble) + len(body) + 1024
    common, own = split
    chosen: list[Member] = []
    branches: list[str] = []
    for m in members:
        offset = m.jobid - base
        if chosen and offset >= max_tasks:
            break
        if chosen and m.jobid <= chosen[-1].jobid:
            raise ValueError("members must have ascending ids")
        line = _branch(offset, m, own)
        size += len(line.encode("utf-8", "surrogateescape"))
        if chosen and size > MAX_WRAPPER:
            break
        chosen.append(m)
        branches.append(line)
    if len(chosen) < len(members):  # fewer members: fewer variables may differ
        split = _env_split(chosen)
        assert split is not None  # a subset of names that could be set
        common, own = split
        branches = [_branch(m.jobid - base, m, own) for m in chosen]
    names = " ".join(own)
    tail = (
        '*) echo "sjq: Slurm array task ${SLURM_ARRAY_TASK_ID-} is no job of this batch" >&2;'
        " exit 1 ;;\nesac\n"
        + (f"export {names}\n" if names else "")
        + 'if [ -n "$sjq_e" ]; then command exec >"$sjq_o" 2>"$sjq_e"\n'
        + 'else command exec >"$sjq_o" 2>&1; fi || exit 1\n'
        + "sjq_f=$(mktemp) || exit 1\n"
        + f"head -c {len(body)} >\"$sjq_f\" <<'{delim.decode()}' || exit 1\n"
    )
    ending = (
        f"{delim.decode()}\n"
        'exec 9<"$sjq_f" || exit 1\n'
        'rm -f "$sjq_f"\n'
        "unset sjq_f sjq_o sjq_e\n"
        f"exec {run}\n"
    )
    wrapper = b"".join([
        head,
        preamble,
        "".join(branches).encode("utf-8", "surrogateescape"),
        tail.encode(),
        body,
        b"" if body.endswith(b"\n") else b"\n",
        ending.encode("utf-8", "surrogateescape"),
    ])  # fmt: skip
    offsets = [m.jobid - base for m in chosen]
    return Batch(
        base=base,
        jobids=tuple(m.jobid for m in chosen),
        array=array_spec(offsets, limit),
        script=wrapper,
        env=common,
    )
