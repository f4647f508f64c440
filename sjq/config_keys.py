"""The settings sjq knows: one table, ``KEYS``, with each key's default, parser and meaning,
and the value parsers and host detection (``auto``) behind them. ``sjq.config`` reads files
and the environment against this table; the docs check, ``sjqrc.example`` and the messages
are derived from it. Imports no psutil/asyncio/sqlite3/subprocess (the CLI loads it).
"""

from __future__ import annotations

import math
import os
import pwd
import re
from collections.abc import Callable, Mapping
from typing import Any, Final

from sjq._record import record
from sjq.units import parse_duration, parse_mem

__all__ = ["COMMENT", "KEYS", "LEGACY", "Invalid", "Key", "Where", "home"]


class Invalid(ValueError):
    """Why a value was refused, raised before the caller adds where it came from."""


# Records (sjq._record), not dataclasses or NamedTuples: both compile code at import,
# which the CLI would pay for on every start.
@record
class Where:
    origin: str  # "~/.sjqrc:12", "$SJQ_MAXMEM", "command line" or "default"
    name: str  # the key as the user wrote it, for the message
    base: str | None  # the directory a relative path is resolved against; None: the cwd
    environ: Mapping[str, str]


Parser = Callable[[str, Where], Any]


@record
class Key:
    """One setting. ``default`` is text read by ``parse`` like a user's value, so it can be
    shown in sjqrc.example exactly as a user would write it."""

    name: str
    attr: str
    default: str
    parse: Parser
    meaning: str
    group: str

    @property
    def env(self) -> str:
        return "SJQ_" + self.name.removeprefix("sjq.").upper().replace(".", "_")


# --- value parsers ----------------------------------------------------------------------------

_TRUE = frozenset({"t", "true", "y", "yes", "1", "on"})
_FALSE = frozenset({"f", "false", "n", "no", "0", "off"})
# Compiled on first use: a client that reads no rc file never pays for them.
_VAR = r"\$(?:([A-Za-z_][A-Za-z0-9_]*)|\{([A-Za-z_][A-Za-z0-9_]*)\})"
COMMENT = r"(?:^|\s)#.*"
_INT_MAX = 2**63 - 1  # values end up in SQLite and C calls


def _bool(text: str, where: Where) -> bool:
    word = text.lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise Invalid(f"expected T or F (or true/false, yes/no, 1/0), got {text!r}")


def _count(minimum: int) -> Parser:
    def parse(text: str, where: Where) -> int:
        digits = text[1:] if text[0] in "+-" else text
        if not (digits.isascii() and digits.isdigit()):
            raise Invalid(f"expected a whole number, got {text!r}")
        n = int(text)
        if n < minimum:
            raise Invalid(f"must be at least {minimum}, got {n}")
        if n > _INT_MAX:
            raise Invalid(f"{text} is too large")
        return n

    return parse


def _size(*, positive: bool) -> Parser:
    def parse(text: str, where: Where) -> int:
        n = parse_mem(text)
        if positive and n == 0:
            raise Invalid(f"must be more than 0, got {text!r}")
        return n

    return parse


def _seconds(*, positive: bool = False) -> Parser:
    def parse(text: str, where: Where) -> float:
        s = parse_duration(text)
        if not math.isfinite(s):
            raise Invalid(f"duration {text!r} is too large")
        if positive and s <= 0:
            raise Invalid(f"must be more than 0 seconds, got {text!r}")
        return s

    return parse


def _choice(*words: str) -> Parser:
    def parse(text: str, where: Where) -> str:
        word = text.lower()
        if word not in words:
            raise Invalid(f"expected one of {', '.join(words)}, got {text!r}")
        return word

    return parse


def _auto_bool(text: str, where: Where) -> bool | None:
    """T/F, or None for auto (decided once the other settings are known)."""
    return None if text.lower() == "auto" else _bool(text, where)


# GPU ids as NVIDIA names them: indexes (0, 1) or UUIDs (GPU-..., MIG-...)
_GPU_ID = r"[A-Za-z0-9][A-Za-z0-9:/._-]*"


def _gpu_ids(text: str, where: Where) -> str:
    """auto, none, or a comma-separated list of device ids (kept as text: the daemon
    discovers what auto means when it starts)."""
    if text.lower() in ("auto", "none"):
        return text.lower()
    ids = [p.strip() for p in text.split(",")]
    for p in ids:
        if not re.fullmatch(_GPU_ID, p):
            raise Invalid(
                f"cannot read GPU id {p!r} (expected auto, none, or ids such as 0,1 or"
                " GPU-..., MIG-... UUIDs, separated by commas)"
            )
    if len(set(ids)) != len(ids):
        raise Invalid(f"a GPU id is listed twice in {text!r}")
    return ",".join(ids)


def _cgroup(text: str, where: Where) -> str:
    """auto, v1, v2, or the absolute path of a cgroup v2 group prepared for sjq."""
    word = text.lower()
    if word in ("auto", "v1", "v2"):
        return word
    if not text.startswith("/") or "\0" in text:
        raise Invalid(
            f"expected auto, v1, v2 or the absolute path of a cgroup v2 group, got {text!r}"
        )
    return os.path.normpath(text)


def _sbatch_args(text: str, where: Where) -> tuple[str, ...]:
    from sjq.slurm.args import ArgsError, split_args  # noqa: PLC0415 - only when it is set

    try:
        return split_args(text, where.name)
    except ArgsError as e:
        raise Invalid(str(e).removeprefix(f"{where.name}: ")) from None


def _path(text: str, where: Where) -> str:
    if text.lower() == "none":
        raise Invalid("cannot be none; give a path")
    if "\0" in text:
        raise Invalid("path contains a NUL byte")
    path = _expand(text, where.environ)
    return os.path.normpath(os.path.join(where.base, path) if where.base else os.path.abspath(path))


def _output(text: str, where: Where) -> str:
    """A job's output file as a pattern (sjq.patterns). ``~`` and ``$VAR`` are expanded now;
    a relative path stays relative, to each job's own working directory."""
    if "\0" in text:
        raise Invalid("path contains a NUL byte")
    if text.endswith("/"):
        raise Invalid(f"{text!r} names a directory; end it with a file name, e.g. logs/%j.out")
    return _expand(text, where.environ)


def _optional(parse: Parser) -> Parser:
    def optional(text: str, where: Where) -> Any:
        return None if text.lower() == "none" else parse(text, where)

    return optional


def _auto(parse: Parser, detect: Callable[[Mapping[str, str]], Any]) -> Parser:
    def auto(text: str, where: Where) -> Any:
        return detect(where.environ) if text.lower() == "auto" else parse(text, where)

    return auto


def home(environ: Mapping[str, str]) -> str:
    home = environ.get("HOME")
    if home:
        return home
    try:
        return pwd.getpwuid(os.getuid()).pw_dir
    except KeyError:
        raise Invalid(
            f"cannot tell the home directory: $HOME is not set and user id {os.getuid()} "
            "is not in the password database"
        ) from None


def _expand(text: str, environ: Mapping[str, str]) -> str:
    """``~``, ``~user``, ``$VAR``, ``${VAR}``, as a shell would, but from ``environ``."""
    head = ""
    if text.startswith("~"):
        user, slash, rest = text[1:].partition("/")
        if user:
            try:
                head = pwd.getpwnam(user).pw_dir
            except KeyError:
                raise Invalid(f"no user {user!r} for ~{user}") from None
        else:
            head = home(environ)
        # A home directory containing "$" must not be expanded a second time.
        head, text = head + slash, rest

    def var(m: re.Match[str]) -> str:
        name = m[1] or m[2]
        if name == "HOME":
            return home(environ)
        value = environ.get(name)
        if value is None:
            raise Invalid(f"${name} is not set")
        return value

    return head + re.sub(_VAR, var, text)


# --- detected defaults ("auto") ---------------------------------------------------------------


def _detect_cpus(environ: Mapping[str, str]) -> int:
    try:
        return len(os.sched_getaffinity(0))  # taskset/cpusets shrink this; cpu_count() ignores them
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _detect_mem(environ: Mapping[str, str]) -> int | None:
    """Physical memory, or the cgroup limit if lower: in a container, reserving more than the
    limit only gets jobs OOM-killed. None (no accounting) if the system will not say."""
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return None
    limit = _cgroup_memory_limit()
    if total <= 0:
        return limit
    return total if limit is None else min(total, limit)


def _cgroup_memory_limit(root: str = "/") -> int | None:
    """The lowest memory limit on this process's cgroup or its ancestors (cgroup v2 or v1).

    Best effort, from the usual mount points: any surprise means "no limit known". ``root``
    lets a test lay out a fake /proc and /sys.
    """
    try:
        with open(os.path.join(root, "proc/self/cgroup"), encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    found: list[int] = []
    for line in lines:
        _, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if controllers == "":
            mount, leaf = "sys/fs/cgroup", "memory.max"
        elif "memory" in controllers.split(","):
            mount, leaf = "sys/fs/cgroup/memory", "memory.limit_in_bytes"
        else:
            continue
        # Without a cgroup namespace the path names a directory that is not mounted here,
        # so walk up: the limit may be set on any ancestor.
        path = path or "/"
        while True:
            limit = _read_limit(os.path.join(root, mount + path, leaf))
            if limit is not None:
                found.append(limit)
            if path == "/":
                break
            path = os.path.dirname(path)
    return min(found, default=None)


def _read_limit(file: str) -> int | None:
    try:
        with open(file, encoding="ascii") as f:
            text = f.read().strip()
        return int(text) if text != "max" and int(text) > 0 else None
    except (OSError, ValueError):
        return None


def _detect_rundir(environ: Mapping[str, str]) -> str:
    """A per-user directory in memory (tmpfs) for the scripts of running jobs: creating and
    removing a file there costs microseconds, on a disk file system often a millisecond."""
    xdg = environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isdir(xdg) and os.access(xdg, os.W_OK | os.X_OK):
        return os.path.join(xdg, "sjq")
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK | os.X_OK):
        return f"/dev/shm/sjq-{os.getuid()}"
    return os.path.join(home(environ), ".sjq.spool", "run")


def _detect_tmpdir(environ: Mapping[str, str]) -> str:
    """tempfile.gettempdir()'s choice, from ``environ``, without importing tempfile (~8 ms)."""
    for d in (environ.get("TMPDIR"), environ.get("TEMP"), environ.get("TMP")):
        if d and os.path.isdir(d) and os.access(d, os.W_OK | os.X_OK):
            return os.path.abspath(d)
    for d in ("/tmp", "/var/tmp", "/usr/tmp"):
        if os.path.isdir(d) and os.access(d, os.W_OK | os.X_OK):
            return d
    return "/tmp"


# --- the table --------------------------------------------------------------------------------

# fmt: off
_KEY_LIST = (
    Key("sjq.socket", "socket", "$HOME/.sjq.sock", _path,
        "UNIX socket the daemon listens on and clients connect to", "daemon"),
    Key("sjq.logfile", "logfile", "$HOME/.sjq.log", _optional(_path),
        "the daemon's log file; none = no log file", "daemon"),
    Key("sjq.daemon", "daemon", "F", _bool,
        "T: detach from the terminal on start; F: stay in the foreground", "daemon"),
    Key("sjq.pidfile", "pidfile", "$HOME/.sjq.pid", _path,
        "file holding the running daemon's process id", "daemon"),
    Key("sjq.autoshutdown", "autoshutdown", "T", _bool,
        "T: exit after sjq.waittime with nothing running, queued or waiting", "daemon"),
    Key("sjq.schedtime", "schedtime", "60", _seconds(positive=True),
        "interval of the periodic safety scheduling pass (jobs start on events, not on this)",
        "scheduling"),
    Key("sjq.waittime", "waittime", "60", _seconds(),
        "idle time before auto-shutdown", "daemon"),
    Key("sjq.maxprocs", "maxprocs", "auto", _auto(_count(1), _detect_cpus),
        "CPUs to hand out to jobs; auto = the CPUs this process may run on", "resources"),
    Key("sjq.maxmem", "maxmem", "auto", _optional(_auto(_size(positive=True), _detect_mem)),
        "memory to hand out to jobs; auto = physical memory (or the cgroup limit if lower); "
        "none = no memory accounting", "resources"),
    Key("sjq.defaults.procs", "default_procs", "1", _count(1),
        "CPUs reserved for a job that does not ask (PROCS)", "resources"),
    Key("sjq.defaults.mem", "default_mem", "2G", _size(positive=False),
        "memory reserved for a job that does not ask (MEM); capped at sjq.maxmem", "resources"),
    Key("sjq.defaults.stdout", "default_stdout", "%j.stdout", _output,
        "stdout file of a job that does not name one (STDOUT); a pattern (%j, %x ...), relative "
        "to the job's CWD; missing directories are created", "output"),
    Key("sjq.defaults.stderr", "default_stderr", "%j.stderr", _output,
        "stderr file of a job that does not name one (STDERR); as sjq.defaults.stdout",
        "output"),
    Key("sjq.db", "db", "$HOME/.sjq.db", _path,
        "SQLite database holding every job's state", "storage"),
    Key("sjq.spool", "spool", "$HOME/.sjq.spool", _path,
        "private directory for job scripts and process journals", "storage"),
    Key("sjq.rundir", "rundir", "auto", _auto(_path, _detect_rundir),
        "private directory for the scripts of running jobs; auto = $XDG_RUNTIME_DIR/sjq, "
        "else /dev/shm/sjq-<uid> (memory-backed, so starting a job touches no disk)",
        "storage"),
    Key("sjq.tmpdir", "tmpdir", "auto", _auto(_path, _detect_tmpdir),
        "each job gets a private TMPDIR under here; auto = $TMPDIR if usable, else /tmp",
        "resources"),
    Key("sjq.killgrace", "killgrace", "5", _seconds(),
        "time between SIGTERM and SIGKILL when a job is killed (Slurm's KillWait)",
        "scheduling"),
    Key("sjq.maxbypass", "maxbypass", "10m", _optional(_seconds()),
        "a waiting job that no running job's TIME says when it can start is passed by later"
        " jobs for this long at most, then the machine drains for it; none = no bound",
        "scheduling"),
    Key("sjq.keepers", "keepers", "auto", _auto(_count(1), lambda env: min(4, _detect_cpus(env))),
        "processes that start and watch jobs, each starting one job at a time; "
        "auto = the CPU count, at most 4",
        "scheduling"),
    Key("sjq.maxsrc", "maxsrc", "16M", _size(positive=True),
        "largest job script accepted", "limits"),
    Key("sjq.maxline", "maxline", "64K", _size(positive=True),
        "longest request line accepted", "limits"),
    Key("sjq.conntimeout", "conntimeout", "30", _seconds(positive=True),
        "a connection idle this long in the middle of a request is closed", "limits"),
    Key("sjq.maxconns", "maxconns", "1024", _count(1),
        "most client connections served at once", "limits"),
    Key("sjq.backlog", "backlog", "512", _count(1),
        "connections the kernel queues until the daemon accepts them (a burst of clients);"
        " the kernel caps it at net.core.somaxconn", "limits"),
    Key("sjq.keep", "keep", "7d", _seconds(),
        "how long finished jobs are remembered", "storage"),
    Key("sjq.keep.count", "keepcount", "none", _optional(_count(0)),
        "remember at most this many finished jobs too; none = no count limit", "storage"),
    Key("sjq.sync", "sync", "normal", _choice("normal", "full"),
        "full: fsync every commit, so an acknowledged job survives power loss", "storage"),
    Key("sjq.loglevel", "loglevel", "info", _choice("debug", "info", "warning", "error"),
        "least severe message written to the log", "daemon"),
    Key("sjq.enforce", "enforce", "auto", _choice("auto", "cgroup", "watch", "none"),
        "how jobs are held to their MEM: cgroup = a cgroup per job (v2 delegated, or v1 as "
        "root); watch = sample each job's process tree and stop it when over; none = not held "
        "(usage is still measured); auto = cgroup if one can be made, else watch",
        "resources"),
    Key("sjq.cgroup", "cgroup", "auto", _cgroup,
        "where jobs' cgroups go under sjq.enforce = cgroup or auto: v1, v2, or the path of a "
        "cgroup v2 group prepared for sjq (delegated to you); auto = below the daemon's own "
        "group, v2 with the memory controller first, else v1 as root", "resources"),
    Key("sjq.pin", "pin", "auto", _auto_bool,
        "T: each running job gets PROCS CPUs of its own (affinity, and its cgroup's cpuset), "
        "named in SJQ_CPUS; auto = T where sjq.maxprocs is no more than the CPUs this daemon "
        "may run on (T is refused otherwise)", "resources"),
    Key("sjq.gpus", "gpus", "auto", _gpu_ids,
        "GPUs handed out to jobs (GPUS), ids as NVIDIA names them (0,1 or GPU-.../MIG-... "
        "UUIDs); auto = the devices nvidia-smi -L (or /proc/driver/nvidia/gpus) lists, "
        "limited by the daemon's CUDA_VISIBLE_DEVICES; none = no GPUs", "resources"),
    Key("sjq.backend", "backend", "local", _choice("local", "slurm"),
        "local: the daemon runs jobs on this machine; slurm: it hands each job to Slurm "
        "(sbatch) once its dependencies allow, and follows it there (docs/slurm.md)", "slurm"),
    Key("sjq.slurm.args", "slurm_args", "none", _optional(_sbatch_args),
        "sbatch options added to every job under sjq.backend = slurm, split like a shell "
        "line (e.g. -p big --account lab); the job's own PROCS, MEM ... override them; "
        "none = no extra options", "slurm"),
    Key("sjq.slurm.poll", "slurm_poll", "0.5", _seconds(positive=True),
        "shortest interval between two status queries (one squeue for all jobs), used while "
        "jobs are about to start or end", "slurm"),
    Key("sjq.slurm.poll.max", "slurm_poll_max", "10", _seconds(positive=True),
        "longest interval between two status queries, reached when nothing changes; also the "
        "longest wait between two tries while Slurm cannot be reached", "slurm"),
    Key("sjq.slurm.timeout", "slurm_timeout", "30", _seconds(positive=True),
        "a Slurm command that has not answered after this long counts as a transient failure",
        "slurm"),
)
# fmt: on
KEYS: Final[Mapping[str, Key]] = {k.name: k for k in _KEY_LIST}

# Names used by sjq 0.1 (2014) rc files, read so that an old ~/.sjqrc still works. sjq.maxjobs
# capped all jobs held in memory, dropping finished ones first: the nearest is keep.count.
LEGACY: Final[Mapping[str, str]] = {
    "sjq.log": "sjq.logfile",
    "sjq.daemonize": "sjq.daemon",
    "sjq.maxjobs": "sjq.keep.count",
}
