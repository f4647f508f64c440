"""~/.sjqrc, SJQ_*, overrides -> Config. Imports no psutil/asyncio/sqlite3/subprocess/tempfile.

The ``sjq`` CLI imports this module on every start and its start-up time is measured; difflib
is imported only inside the unknown-key error. tests/test_config.py checks this in a fresh
interpreter.

Precedence, highest first: ``overrides`` (the command line), the environment (``SJQ_MAXPROCS``
for ``sjq.maxprocs``, ``SJQ_DEFAULTS_MEM`` for ``sjq.defaults.mem`` ...), the config file,
the default in ``KEYS``. Only the winning text is parsed, so a bad value in the file can be
worked around from the environment or the command line. Everything else (``Config``, the
environment names, the messages, sjqrc.example) is derived from the one table ``KEYS``.

The file is ``key = value`` lines, ``#`` comments (whole-line, or after whitespace), blank
lines. Key names are case-insensitive. A value may be quoted ("..." or '...') to keep
leading/trailing spaces or a `` #``. Paths expand ``~``, ``~user``, ``$VAR`` and ``${VAR}``
(an unset variable is an error, not an empty string); a relative path in the file is relative
to the file's directory, one from the environment or command line to the current directory.
A key set twice in the file is an error. An empty environment variable counts as unset.
``auto`` (maxprocs, maxmem, tmpdir) means "detect on this host"; ``none`` turns off logfile,
maxmem (memory accounting) and keep.count. The per-job defaults are lowered to a detected
maxprocs/maxmem, but exceeding a maxprocs/maxmem the user set is an error.
"""

from __future__ import annotations

import math
import os
import pwd
import re
from collections.abc import Callable, Mapping
from typing import Any, Final

from sjq._record import record
from sjq.units import UnitError, format_mem, parse_duration, parse_mem

__all__ = [
    "DEFAULT_PATH",
    "KEYS",
    "ClientConfig",
    "Config",
    "ConfigError",
    "Key",
    "client_config",
    "config_path",
    "load_config",
]

DEFAULT_PATH: Final = "~/.sjqrc"


class ConfigError(ValueError):
    """A setting sjq cannot use; ``str()`` is the whole message: where, which key, why.

    ``origin`` is ``file:line``, ``$SJQ_NAME`` or ``command line``; ``key`` is the key as the
    user wrote it, or None when the problem is not one key's (an unreadable file, a bad line).
    """

    def __init__(self, origin: str, key: str | None, reason: str) -> None:
        super().__init__(f"{origin}: {key}: {reason}" if key else f"{origin}: {reason}")
        self.origin = origin
        self.key = key
        self.reason = reason


@record
class Config:
    """Every setting the daemon and the clients read; built by ``load_config``."""

    socket: str
    logfile: str | None
    daemon: bool
    pidfile: str
    autoshutdown: bool
    schedtime: float
    waittime: float
    maxprocs: int
    maxmem: int | None
    default_procs: int
    default_mem: int
    db: str
    spool: str
    rundir: str
    tmpdir: str
    killgrace: float
    keepers: int
    maxsrc: int
    maxline: int
    conntimeout: float
    maxconns: int
    backlog: int
    keep: float
    keepcount: int | None
    sync: str
    loglevel: str
    source: str | None


class _Invalid(ValueError):
    """Why a value was refused, raised before the caller adds where it came from."""


# Records (sjq._record), not dataclasses or NamedTuples: both compile code at import,
# which the CLI would pay for on every start.
@record
class _Where:
    origin: str  # "~/.sjqrc:12", "$SJQ_MAXMEM", "command line" or "default"
    name: str  # the key as the user wrote it, for the message
    base: str | None  # the directory a relative path is resolved against; None: the cwd
    environ: Mapping[str, str]


Parser = Callable[[str, _Where], Any]


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
_COMMENT = r"(?:^|\s)#.*"
_INT_MAX = 2**63 - 1  # values end up in SQLite and C calls


def _bool(text: str, where: _Where) -> bool:
    word = text.lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise _Invalid(f"expected T or F (or true/false, yes/no, 1/0), got {text!r}")


def _count(minimum: int) -> Parser:
    def parse(text: str, where: _Where) -> int:
        digits = text[1:] if text[0] in "+-" else text
        if not (digits.isascii() and digits.isdigit()):
            raise _Invalid(f"expected a whole number, got {text!r}")
        n = int(text)
        if n < minimum:
            raise _Invalid(f"must be at least {minimum}, got {n}")
        if n > _INT_MAX:
            raise _Invalid(f"{text} is too large")
        return n

    return parse


def _size(*, positive: bool) -> Parser:
    def parse(text: str, where: _Where) -> int:
        n = parse_mem(text)
        if positive and n == 0:
            raise _Invalid(f"must be more than 0, got {text!r}")
        return n

    return parse


def _seconds(*, positive: bool = False) -> Parser:
    def parse(text: str, where: _Where) -> float:
        s = parse_duration(text)
        if not math.isfinite(s):
            raise _Invalid(f"duration {text!r} is too large")
        if positive and s <= 0:
            raise _Invalid(f"must be more than 0 seconds, got {text!r}")
        return s

    return parse


def _choice(*words: str) -> Parser:
    def parse(text: str, where: _Where) -> str:
        word = text.lower()
        if word not in words:
            raise _Invalid(f"expected one of {', '.join(words)}, got {text!r}")
        return word

    return parse


def _path(text: str, where: _Where) -> str:
    if text.lower() == "none":
        raise _Invalid("cannot be none; give a path")
    if "\0" in text:
        raise _Invalid("path contains a NUL byte")
    path = _expand(text, where.environ)
    return os.path.normpath(os.path.join(where.base, path) if where.base else os.path.abspath(path))


def _optional(parse: Parser) -> Parser:
    def optional(text: str, where: _Where) -> Any:
        return None if text.lower() == "none" else parse(text, where)

    return optional


def _auto(parse: Parser, detect: Callable[[Mapping[str, str]], Any]) -> Parser:
    def auto(text: str, where: _Where) -> Any:
        return detect(where.environ) if text.lower() == "auto" else parse(text, where)

    return auto


def _home(environ: Mapping[str, str]) -> str:
    home = environ.get("HOME")
    if home:
        return home
    try:
        return pwd.getpwuid(os.getuid()).pw_dir
    except KeyError:
        raise _Invalid(
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
                raise _Invalid(f"no user {user!r} for ~{user}") from None
        else:
            head = _home(environ)
        # A home directory containing "$" must not be expanded a second time.
        head, text = head + slash, rest

    def var(m: re.Match[str]) -> str:
        name = m[1] or m[2]
        if name == "HOME":
            return _home(environ)
        value = environ.get(name)
        if value is None:
            raise _Invalid(f"${name} is not set")
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
    return os.path.join(_home(environ), ".sjq.spool", "run")


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
)
# fmt: on
KEYS: Final[Mapping[str, Key]] = {k.name: k for k in _KEY_LIST}

# Names used by sjq 0.1 (2014) rc files, read so that an old ~/.sjqrc still works. sjq.maxjobs
# capped all jobs held in memory, dropping finished ones first: the nearest is keep.count.
_LEGACY: Final[Mapping[str, str]] = {
    "sjq.log": "sjq.logfile",
    "sjq.daemonize": "sjq.daemon",
    "sjq.maxjobs": "sjq.keep.count",
}


# --- loading ----------------------------------------------------------------------------------


@record
class _Setting:
    text: str
    where: _Where


def config_path(environ: Mapping[str, str] | None = None) -> str:
    """The config file sjq reads: ``$SJQ_CONFIG`` if set and not empty, else ``~/.sjqrc``."""
    env = os.environ if environ is None else environ
    named = env.get("SJQ_CONFIG")
    try:
        return os.path.abspath(_expand_user(named or DEFAULT_PATH, env))
    except _Invalid as e:
        raise ConfigError("$SJQ_CONFIG" if named else DEFAULT_PATH, None, str(e)) from None


def load_config(
    path: str | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, str] | None = None,
) -> Config:
    """Read the config file, then the environment, then ``overrides`` ({"sjq.maxprocs": "2"}).

    ``path`` (or ``$SJQ_CONFIG``) names a file that must exist; a missing ``~/.sjqrc`` just
    means defaults. ``environ`` defaults to ``os.environ``. Raises ConfigError.
    """
    settings, source, env = _gather(path, environ, overrides)
    values: dict[str, Any] = {}
    for key in KEYS.values():
        values[key.attr] = _parse(key, settings, env)
    _reconcile(values, settings)
    return Config(**values, source=source)


@record
class ClientConfig:
    """The settings a client needs: where the daemon is, and for starting one, its files."""

    socket: str
    logfile: str | None
    pidfile: str
    source: str | None


def client_config(
    path: str | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, str] | None = None,
) -> ClientConfig:
    """Like ``load_config`` (same sources, same precedence, the same errors for unknown keys
    and bad values) but without working out what is not set: detecting the machine's CPUs
    and memory for ``auto`` is not worth a command's start-up, and the daemon does it."""
    settings, source, env = _gather(path, environ, overrides)
    for name, setting in settings.items():
        if setting.text.lower() != "auto":
            _parse(KEYS[name], settings, env)
    return ClientConfig(
        socket=_parse(KEYS["sjq.socket"], settings, env),
        logfile=_parse(KEYS["sjq.logfile"], settings, env),
        pidfile=_parse(KEYS["sjq.pidfile"], settings, env),
        source=source,
    )


def _parse(key: Key, settings: Mapping[str, _Setting], env: Mapping[str, str]) -> Any:
    setting = settings.get(key.name) or _Setting(
        key.default, _Where("default", key.name, None, env)
    )
    try:
        return key.parse(setting.text, setting.where)
    except (_Invalid, UnitError) as e:
        raise ConfigError(setting.where.origin, setting.where.name, str(e)) from None


def _gather(
    path: str | None,
    environ: Mapping[str, str] | None,
    overrides: Mapping[str, str] | None,
) -> tuple[dict[str, _Setting], str | None, Mapping[str, str]]:
    """The winning text of every key that is set, and where it came from."""
    env = os.environ if environ is None else environ
    if path is not None:
        file, named_by = os.path.abspath(_expand_user(path, env)), "named on the command line"
    else:
        file, named_by = config_path(env), "named by $SJQ_CONFIG" if env.get("SJQ_CONFIG") else ""

    settings: dict[str, _Setting] = {}
    source = _read_file(file, named_by, env, settings)
    for key in KEYS.values():
        text = env.get(key.env, "").strip()
        if text:
            settings[key.name] = _Setting(text, _Where(f"${key.env}", key.name, None, env))
    for name, raw in (overrides or {}).items():
        known = KEYS.get(name.lower())
        if known is None:
            raise ConfigError("command line", name, _unknown(name))
        if not raw.strip():
            raise ConfigError("command line", name, "empty value")
        settings[known.name] = _Setting(raw.strip(), _Where("command line", name, None, env))
    return settings, source, env


def _expand_user(path: str, environ: Mapping[str, str]) -> str:
    if path == "~" or path.startswith("~/"):
        return _home(environ) + path[1:]
    return path


def _read_file(
    file: str, named_by: str, environ: Mapping[str, str], settings: dict[str, _Setting]
) -> str | None:
    shown = _shorten(file, environ)
    try:
        with open(file, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        if not named_by:
            return None
        raise ConfigError(shown, None, f"no such config file ({named_by})") from None
    except OSError as e:
        raise ConfigError(shown, None, f"cannot read config file: {e.strerror}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        bad_line = data.count(b"\n", 0, e.start) + 1
        raise ConfigError(f"{shown}:{bad_line}", None, "not UTF-8 text") from None

    base = os.path.dirname(file)
    first_seen: dict[str, int] = {}
    # split("\n"), not splitlines(): form feeds and U+2028 must not shift the line numbers.
    for number, raw in enumerate(text.split("\n"), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        origin = f"{shown}:{number}"
        name, eq, rest = line.partition("=")
        name = name.strip()
        if not eq or not name:
            raise ConfigError(origin, None, f"expected 'key = value', got {_clip(line)}")
        key = KEYS.get(name.lower()) or KEYS.get(_LEGACY.get(name.lower(), ""))
        if key is None:
            raise ConfigError(origin, name, _unknown(name))
        if key.name in first_seen:
            raise ConfigError(
                origin, name, f"set twice (also on line {first_seen[key.name]}); keep one"
            )
        first_seen[key.name] = number
        try:
            value = _unquote(rest)
        except _Invalid as e:
            raise ConfigError(origin, name, str(e)) from None
        if not value:
            raise ConfigError(
                origin, name, f"no value after '='; delete the line for the default ({key.default})"
            )
        settings[key.name] = _Setting(value, _Where(origin, name, base, environ))
    return file


def _unquote(rest: str) -> str:
    value = rest.strip()
    if value[:1] in {'"', "'"}:
        end = value.find(value[0], 1)
        if end < 0:
            raise _Invalid(f"no closing {value[0]}")
        after = value[end + 1 :].strip()
        if after and not after.startswith("#"):
            raise _Invalid(f"unexpected text after the closing quote: {_clip(after)}")
        return value[1:end]
    return re.sub(_COMMENT, "", value).rstrip()


def _reconcile(values: dict[str, Any], settings: Mapping[str, _Setting]) -> None:
    """Keep the per-job defaults within the machine. A detected limit caps a default silently
    (one ~/.sjqrc is often shared by hosts of different sizes); two values the user gave that
    contradict each other are an error."""

    def detected(name: str) -> bool:
        setting = settings.get(name)
        return setting is None or setting.text.lower() == "auto"

    if values["default_procs"] > values["maxprocs"]:
        if detected("sjq.maxprocs"):
            values["default_procs"] = values["maxprocs"]
        else:
            mine, theirs = settings["sjq.defaults.procs"], settings["sjq.maxprocs"]
            raise ConfigError(
                mine.where.origin,
                mine.where.name,
                f"{values['default_procs']} is more than sjq.maxprocs "
                f"({values['maxprocs']}, from {theirs.where.origin})",
            )
    maxmem = values["maxmem"]
    if maxmem is not None and values["default_mem"] > maxmem:
        if "sjq.defaults.mem" not in settings or detected("sjq.maxmem"):
            values["default_mem"] = maxmem
        else:
            mine, theirs = settings["sjq.defaults.mem"], settings["sjq.maxmem"]
            raise ConfigError(
                mine.where.origin,
                mine.where.name,
                f"{format_mem(values['default_mem'])} is more than sjq.maxmem "
                f"({format_mem(maxmem)}, from {theirs.where.origin})",
            )


def _unknown(name: str) -> str:
    import difflib  # noqa: PLC0415 -- only on this error path; it costs the CLI start-up time

    # Compared without the shared "sjq." prefix, which would make any short word look close.
    probe = name.lower().replace("_", ".").removeprefix("sjq.")
    match = difflib.get_close_matches(probe, [k.removeprefix("sjq.") for k in KEYS], n=1)
    if match:
        return f"unknown key; did you mean sjq.{match[0]}?"
    return "unknown key; the keys are " + ", ".join(KEYS)


def _shorten(file: str, environ: Mapping[str, str]) -> str:
    home = environ.get("HOME", "").rstrip("/")
    if home and file.startswith(home + "/"):
        return "~" + file[len(home) :]
    return file


def _clip(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")
