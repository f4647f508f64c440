"""sbatch command lines and sbatch's answer; pure: imports no subprocess/asyncio/sqlite3/sjq.

Only the standard library: every function here is a function of its arguments.

**Where a job's settings come from**, weakest first (Slurm applies them in this order, a later
one overriding an earlier one): the cluster's defaults; ``#SBATCH`` lines in the script (sbatch
reads them from the script it is given on stdin); ``SBATCH_*`` variables in the environment of
the process that runs sbatch (the daemon's own); ``sjq.slurm.args``; the job's own fields that
are set (a field left ``None`` is not passed, so a ``#SBATCH`` line or the cluster's default
applies); last, the options sjq must own (``--parsable``, ``--export``, ``--export-file``,
``--comment``), which ``split_args`` refuses in ``sjq.slurm.args``.

**Units.** Slurm's ``--mem`` is in MiB; sjq's MEM is bytes, so it is rounded *up* to whole
MiB (never a smaller request than asked). ``--mem=0`` means "all the node's memory" to Slurm,
so a MEM of 0 (reserve nothing) passes no ``--mem`` at all and the cluster's default applies.
Slurm keeps time limits in whole minutes: TIME is rounded *up* to minutes and written
``D-HH:MM:SS``; Slurm checks limits about every 30 s, so a job runs up to ~30 s past its limit.

**Environment.** The job gets exactly its sjq environment: it is written NUL-separated to a
file descriptor (``export_file``) passed as ``--export-file=<fd>`` with ``--export=ALL``, which
makes sbatch send those variables and *not* its own environment. Slurm adds its own on the node
(``SLURM_*``, ``ENVIRONMENT=BATCH``, ``HOSTNAME``, ``PWD``, and ``TMPDIR=/tmp`` when unset).
(``--export=NONE`` would ignore the file and load the user's login environment.)

**Paths.** ``--output``/``--error`` are Slurm *filename patterns* (``%j`` is the job id,
``%%`` a percent sign; any backslash turns patterns off and is itself removed unless doubled),
so a literal path is escaped (``filename_pattern``); ``Pattern`` passes one through unchanged.
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "ArgsError",
    "Pattern",
    "SbatchRequest",
    "Submitted",
    "export_file",
    "filename_pattern",
    "make_batch_tag",
    "make_tag",
    "mem_arg",
    "parse_attempt_tag",
    "parse_batch_tag",
    "parse_sbatch_output",
    "parse_tag",
    "sbatch_args",
    "script_for_sbatch",
    "split_args",
    "time_arg",
]

MIB = 1024 * 1024
TAG_PREFIX = "sjq"
# The daemon part of a tag; letters, digits and ._- keep a tag one token in any output.
_DAEMON_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_ARRAY = re.compile(r"\d+(-\d+(:\d+)?)?(,\d+(-\d+(:\d+)?)?)*(%\d+)?")
_SLURM_ID = re.compile(r"\d+(_\d+)?")
_ENV_NAME = re.compile(r"[^=\0]+")

# Options sjq sets itself or that would break how sjq talks to sbatch; refused in
# sjq.slurm.args. Long names are matched by prefix too: sbatch (getopt_long) accepts any
# unambiguous abbreviation, so "--wai" is "--wait".
MANAGED_LONG = (
    "array",  # the job's ARRAY
    "clusters",  # sjq follows jobs on the cluster its commands see by default
    "comment",  # the tag that finds a job again after a crash
    "dependency",  # sjq's dependencies
    "export",  # the job's environment
    "export-file",
    "get-user-env",  # would add the login environment to the job's
    "help",
    "hold",  # HOLD/RELEASE
    "parsable",  # sjq reads the job id from it
    "test-only",  # submits nothing
    "usage",
    "version",
    "wait",  # would block until the job ends
    "wrap",  # the script comes on stdin
)
MANAGED_SHORT = {"a": "array", "d": "dependency", "H": "hold", "h": "help", "M": "clusters",
                 "V": "version", "W": "wait"}  # fmt: skip
# sbatch's short options that take no value, so "-Qv" is two options and "-pdebug" is one.
_SHORT_FLAGS = set("HOQVWhksvI")
# sbatch's long options that take no value or only an "=value" (sbatch --help, 22.05); every
# other long option written without "=" takes the next word as its value.
_LONG_NO_VALUE = (
    "contiguous", "exclusive", "get-user-env", "help", "hold", "ignore-pbs", "nice", "no-kill",
    "no-requeue", "overcommit", "oversubscribe", "parsable", "propagate", "quiet", "reboot",
    "requeue", "spread-job", "test-only", "usage", "use-min-nodes", "verbose", "version",
    "wait", "wrap", "export",
)  # fmt: skip


class ArgsError(ValueError):
    """A job or ``sjq.slurm.args`` that cannot become an sbatch command line; says why."""


@dataclass(frozen=True, slots=True)
class Pattern:
    """An output file name given as a Slurm filename pattern (``%j``, ``%a`` ...), unescaped."""

    text: str


@dataclass(frozen=True, slots=True)
class SbatchRequest:
    """What sbatch is told about one job. ``None`` fields are not passed at all."""

    tag: str  # --comment; unique per sjq job and attempt (make_tag): how a crashed daemon finds it
    name: str | None = None  # --job-name
    procs: int | None = None  # --cpus-per-task (one task)
    mem: int | None = None  # bytes; --mem in MiB rounded up; 0 or None: not passed
    time_limit: float | None = None  # seconds; --time rounded up to whole minutes
    gpus: int | None = None  # --gres=gpu:N; 0 or None: not passed
    cwd: str | None = None  # --chdir
    stdout: str | Pattern | None = None  # --output; a str is a literal path
    stderr: str | Pattern | None = None  # --error; a str is a literal path
    array: str | None = None  # --array, Slurm's syntax: 1-10, 1,3,5, 0-99:3, 1-1000%50
    after_ok: tuple[int | str, ...] = ()  # --dependency=afterok:... (ids, or 120_4 array tasks)
    hold: bool = False  # --hold: submitted held (scontrol release lets it go)
    extra: tuple[str, ...] = ()  # sjq.slurm.args, already split by split_args


@dataclass(frozen=True, slots=True)
class Submitted:
    """``sbatch --parsable``'s answer."""

    job_id: int
    cluster: str | None = None


def time_arg(seconds: float) -> str:
    """``--time`` for a limit in seconds: rounded up to whole minutes, as ``D-HH:MM:SS``."""
    if not (math.isfinite(seconds) and seconds > 0):
        raise ArgsError(f"a time limit must be a positive number of seconds, got {seconds!r}")
    minutes = max(1, math.ceil(seconds / 60))
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    return f"{days}-{hours:02d}:{minutes:02d}:00"


def mem_arg(nbytes: int) -> str:
    """``--mem`` for a size in bytes: whole MiB, rounded up (``1`` byte asks for ``1M``)."""
    if nbytes <= 0:
        raise ArgsError(f"a memory request must be positive (got {nbytes}); 0 is not passed")
    return f"{-(-nbytes // MIB)}M"


def filename_pattern(path: str) -> str:
    """The Slurm filename pattern that names exactly ``path``.

    Without a backslash, ``%`` starts a replacement, so each becomes ``%%``. A backslash
    anywhere turns replacements off for the whole name and is removed itself unless doubled
    (seen on Slurm 22.05: ``a\\b%j`` names ``ab%j``, ``a\\\\b`` names ``a\\b``).
    """
    if "\\" in path:
        return path.replace("\\", "\\\\")
    return path.replace("%", "%%")


def export_file(env: Mapping[str, str]) -> bytes:
    """The job's environment as ``--export-file`` reads it: ``NAME=value``, each NUL-ended."""
    parts = []
    for name, value in env.items():
        if not _ENV_NAME.fullmatch(name):
            raise ArgsError(f"environment variable name {name!r} cannot be passed to Slurm")
        if "\0" in value:
            raise ArgsError(f"environment variable {name} holds a NUL character")
        parts.append(f"{name}={value}\0".encode("utf-8", "surrogateescape"))
    return b"".join(parts)


def script_for_sbatch(script: bytes) -> bytes:
    """The script as sbatch wants it: ``#!`` at its first byte (sjq allows whitespace first)."""
    stripped = script.lstrip()
    return stripped if stripped.startswith(b"#!") else script


def make_tag(daemon_id: str, jobid: int, attempt: int = 1) -> str:
    """``sjq:<daemon-id>:<jobid>``, the comment that marks a Slurm job as this sjq job's; for
    its attempts after the first (RETRY) ``sjq:<daemon-id>:<jobid>.<attempt>``, so that each
    attempt is found by a tag of its own and an earlier one's record is never taken for it."""
    if not _DAEMON_ID.fullmatch(daemon_id):
        raise ArgsError(f"daemon id {daemon_id!r}: use 1-64 letters, digits, '.', '_' or '-'")
    if attempt > 1:
        return f"{TAG_PREFIX}:{daemon_id}:{jobid}.{attempt}"
    return f"{TAG_PREFIX}:{daemon_id}:{jobid}"


def parse_tag(comment: str) -> tuple[str, int] | None:
    """``(daemon_id, jobid)`` from a comment ``make_tag`` wrote, else None."""
    parts = comment.split(":")
    if len(parts) != 3 or parts[0] != TAG_PREFIX or not _DAEMON_ID.fullmatch(parts[1]):
        return None
    if not parts[2].isascii() or not parts[2].isdigit():
        return None
    return parts[1], int(parts[2])


def parse_attempt_tag(comment: str) -> tuple[str, int, int] | None:
    """``(daemon_id, jobid, attempt)`` from a comment ``make_tag`` wrote for any attempt (a
    plain tag is attempt 1), else None."""
    head, sep, last = comment.rpartition(":")
    number, dot, attempt = last.partition(".")
    n = 1
    if dot:
        if not (attempt.isascii() and attempt.isdigit()) or attempt[0] == "0":
            return None
        n = int(attempt)
        if n < 2:
            return None  # (attempt 1 is written without one)
    tag = parse_tag(f"{head}{sep}{number}")
    if tag is None or str(tag[1]) != number:
        return None  # (make_tag writes no leading zeros)
    return tag[0], tag[1], n


def make_batch_tag(daemon_id: str, base: int) -> str:
    """``sjq:<daemon-id>:a<base>``, the comment of one ``sbatch --array`` that runs several
    sjq jobs: its array task N is sjq job ``base + N`` (``sjq.slurm.batch``)."""
    return f"{make_tag(daemon_id, base).rpartition(':')[0]}:a{base}"


def parse_batch_tag(comment: str) -> tuple[str, int] | None:
    """``(daemon_id, base)`` from a comment ``make_batch_tag`` wrote, else None."""
    head, sep, last = comment.rpartition(":")
    if not (sep and last.startswith("a")):
        return None
    return parse_tag(f"{head}:{last[1:]}")


def split_args(text: str, origin: str = "sjq.slurm.args") -> tuple[str, ...]:
    """Split ``sjq.slurm.args`` like a shell would; refuse the options sjq must own."""
    try:
        args = tuple(shlex.split(text))
    except ValueError as e:
        raise ArgsError(f"{origin}: {e} in {text!r}") from None
    expect_value = False
    for arg in args:
        if expect_value:
            expect_value = False
            continue
        if arg.startswith("--") and len(arg) > 2:
            name, eq, _ = arg[2:].partition("=")
            for managed in MANAGED_LONG:
                if managed.startswith(name):
                    raise ArgsError(f"{origin}: {arg} is not allowed: sjq sets --{managed} itself")
            expect_value = not eq and not any(o.startswith(name) for o in _LONG_NO_VALUE)
        elif arg == "--":
            raise ArgsError(f"{origin}: '--' is not allowed: the script comes from sjq")
        elif arg.startswith("-") and len(arg) > 1:
            for i, ch in enumerate(arg[1:], 1):
                if ch in MANAGED_SHORT:
                    raise ArgsError(
                        f"{origin}: {arg} is not allowed: sjq sets --{MANAGED_SHORT[ch]} itself"
                    )
                if ch not in _SHORT_FLAGS:
                    expect_value = i == len(arg) - 1  # "-p debug": the value is the next word
                    break
        else:
            raise ArgsError(f"{origin}: {arg!r} is not an option (sbatch would run it as a script)")
    if expect_value:
        raise ArgsError(f"{origin}: {args[-1]} needs a value")
    return args


def sbatch_args(req: SbatchRequest, export_fd: int) -> list[str]:
    """sbatch's arguments (without the program) for ``req``; the script goes on stdin and the
    environment (``export_file``) on file descriptor ``export_fd``."""
    args = list(req.extra)
    if req.name is not None:
        args.append(f"--job-name={req.name}")
    if req.procs is not None:
        if req.procs < 1:
            raise ArgsError(f"PROCS must be at least 1, got {req.procs}")
        args.append(f"--cpus-per-task={req.procs}")
    if req.mem:
        args.append(f"--mem={mem_arg(req.mem)}")
    if req.time_limit is not None:
        args.append(f"--time={time_arg(req.time_limit)}")
    if req.gpus:
        if req.gpus < 0:
            raise ArgsError(f"GPUS must not be negative, got {req.gpus}")
        args.append(f"--gres=gpu:{req.gpus}")
    if req.cwd is not None:
        args.append(f"--chdir={req.cwd}")
    for option, path in (("--output", req.stdout), ("--error", req.stderr)):
        if isinstance(path, Pattern):
            args.append(f"{option}={path.text}")
        elif path is not None:
            args.append(f"{option}={filename_pattern(path)}")
    if req.array is not None:
        if not _ARRAY.fullmatch(req.array):
            raise ArgsError(f"ARRAY {req.array!r}: expected e.g. 1-10, 1,3,5, 0-99:3 or 1-1000%50")
        args.append(f"--array={req.array}")
    if req.after_ok:
        ids = [str(i) for i in req.after_ok]
        for i in ids:
            if not _SLURM_ID.fullmatch(i):
                raise ArgsError(f"{i!r} is not a Slurm job id")
        # A dependency that fails makes Slurm cancel the job (reason DependencyNeverSatisfied)
        # instead of keeping it pending for ever; states.progress maps that to sjq's A.
        args += [f"--dependency=afterok:{':'.join(ids)}", "--kill-on-invalid-dep=yes"]
    if req.hold:
        args.append("--hold")
    for value, what in ((req.tag, "tag"), (req.name, "NAME"), (req.cwd, "CWD")):
        if value is not None and ("\0" in value or "\n" in value):
            raise ArgsError(f"{what} must not contain a NUL or newline character")
    args += [
        "--parsable",
        "--export=ALL",
        f"--export-file={export_fd}",
        f"--comment={req.tag}",
    ]
    return args


def parse_sbatch_output(stdout: str) -> Submitted:
    """``jobid`` or ``jobid;cluster`` (the last non-empty line); ``ValueError`` otherwise."""
    lines = [line.strip() for line in stdout.splitlines() if line.strip()]
    if not lines:
        raise ValueError("sbatch printed no job id")
    jobid, sep, cluster = lines[-1].partition(";")
    if not (jobid.isascii() and jobid.isdigit()):
        raise ValueError(f"sbatch printed {lines[-1]!r}, not a job id")
    return Submitted(int(jobid), cluster if sep and cluster else None)
