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

import os
import re
from collections.abc import Mapping
from typing import Any, Final

from sjq._record import record
from sjq.config_keys import COMMENT, KEYS, LEGACY, Invalid, Key, Where, home
from sjq.units import UnitError, format_mem

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
PILOT: Final = "the Slurm allocation ($SLURM_JOB_ID)"  # where pilot-mode values come from
SLURM_AUTO_PROCS: Final = 1 << 20  # sjq.maxprocs = auto under sjq.backend = slurm: no limit


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
    default_stdout: str
    default_stderr: str
    db: str
    spool: str
    rundir: str
    tmpdir: str
    killgrace: float
    maxbypass: float | None
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
    enforce: str
    cgroup: str
    pin: bool
    gpus: str
    backend: str
    slurm_args: tuple[str, ...] | None
    slurm_poll: float
    slurm_poll_max: float
    slurm_timeout: float
    source: str | None


# --- loading ----------------------------------------------------------------------------------


@record
class _Setting:
    text: str
    where: Where


def config_path(environ: Mapping[str, str] | None = None) -> str:
    """The config file sjq reads: ``$SJQ_CONFIG`` if set and not empty, else ``~/.sjqrc``."""
    env = os.environ if environ is None else environ
    named = env.get("SJQ_CONFIG")
    try:
        return os.path.abspath(_expand_user(named or DEFAULT_PATH, env))
    except Invalid as e:
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
    maxline: int  # the daemon's sjq.maxline, as this config says: how long a request line may be


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
        maxline=_parse(KEYS["sjq.maxline"], settings, env),
    )


def _parse(key: Key, settings: Mapping[str, _Setting], env: Mapping[str, str]) -> Any:
    setting = settings.get(key.name) or _Setting(key.default, Where("default", key.name, None, env))
    try:
        return key.parse(setting.text, setting.where)
    except (Invalid, UnitError) as e:
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
            settings[key.name] = _Setting(text, Where(f"${key.env}", key.name, None, env))
    for name, raw in (overrides or {}).items():
        known = KEYS.get(name.lower())
        if known is None:
            raise ConfigError("command line", name, _unknown(name))
        if not raw.strip():
            raise ConfigError("command line", name, "empty value")
        settings[known.name] = _Setting(raw.strip(), Where("command line", name, None, env))
    for name, text in _pilot(settings, env).items():
        if name not in settings or settings[name].text.lower() == "auto":
            settings[name] = _Setting(text, Where(PILOT, name, None, env))
    return settings, source, env


def _pilot(settings: Mapping[str, _Setting], env: Mapping[str, str]) -> dict[str, str]:
    """Inside a Slurm job (``$SLURM_JOB_ID``) with the local back end: the allocation's CPUs
    and memory for ``auto``, and files of this allocation alone instead of the shared
    ``$HOME/.sjq.*`` (several nodes would share those over NFS). docs/slurm.md, pilot mode."""
    jobid = env.get("SLURM_JOB_ID", "")
    backend = settings.get("sjq.backend")
    if not (jobid.isascii() and jobid.isdigit()) or (backend and backend.text.lower() != "local"):
        return {}
    out: dict[str, str] = {}
    cpus = env.get("SLURM_CPUS_ON_NODE", "")
    if cpus.isascii() and cpus.isdigit() and int(cpus) > 0:
        out["sjq.maxprocs"] = cpus
    mem = _allocation_mem(env, int(cpus) if cpus.isdigit() else 0)
    if mem:
        out["sjq.maxmem"] = f"{mem}M"
    here = f"{_temp_dir(env)}/sjq-{os.getuid()}-slurm-{jobid}"
    files = {"socket": "sjq.sock", "db": "sjq.db", "pidfile": "sjq.pid", "logfile": "sjq.log",
             "spool": "spool", "rundir": "run"}  # fmt: skip
    out |= {f"sjq.{key}": f"{here}/{name}" for key, name in files.items()}
    out["sjq.tmpdir"] = here
    return out


def _allocation_mem(env: Mapping[str, str], cpus: int) -> int:
    """The allocation's memory on this node in MiB (0: not known)."""
    per_node = env.get("SLURM_MEM_PER_NODE", "")
    if per_node.isascii() and per_node.isdigit():
        return int(per_node)
    per_cpu = env.get("SLURM_MEM_PER_CPU", "")
    if per_cpu.isascii() and per_cpu.isdigit() and cpus:
        return int(per_cpu) * cpus
    return 0


def _temp_dir(env: Mapping[str, str]) -> str:
    """Node-local: Slurm's per-job TMPDIR if it set one, else /tmp."""
    tmp = env.get("TMPDIR", "")
    return tmp if tmp.startswith("/") and os.path.isdir(tmp) else "/tmp"


def _expand_user(path: str, environ: Mapping[str, str]) -> str:
    if path == "~" or path.startswith("~/"):
        return home(environ) + path[1:]
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
        key = KEYS.get(name.lower()) or KEYS.get(LEGACY.get(name.lower(), ""))
        if key is None:
            raise ConfigError(origin, name, _unknown(name))
        if key.name in first_seen:
            raise ConfigError(
                origin, name, f"set twice (also on line {first_seen[key.name]}); keep one"
            )
        first_seen[key.name] = number
        try:
            value = _unquote(rest)
        except Invalid as e:
            raise ConfigError(origin, name, str(e)) from None
        if not value:
            raise ConfigError(
                origin, name, f"no value after '='; delete the line for the default ({key.default})"
            )
        settings[key.name] = _Setting(value, Where(origin, name, base, environ))
    return file


def _unquote(rest: str) -> str:
    value = rest.strip()
    if value[:1] in {'"', "'"}:
        end = value.find(value[0], 1)
        if end < 0:
            raise Invalid(f"no closing {value[0]}")
        after = value[end + 1 :].strip()
        if after and not after.startswith("#"):
            raise Invalid(f"unexpected text after the closing quote: {_clip(after)}")
        return value[1:end]
    return re.sub(COMMENT, "", value).rstrip()


def _reconcile(values: dict[str, Any], settings: Mapping[str, _Setting]) -> None:
    """Keep the per-job defaults within the machine. A detected limit caps a default silently
    (one ~/.sjqrc is often shared by hosts of different sizes); two values the user gave that
    contradict each other are an error."""

    def detected(name: str) -> bool:
        setting = settings.get(name)
        return setting is None or setting.text.lower() == "auto" or setting.where.origin == PILOT

    if values["backend"] == "slurm":
        # Under Slurm the limits are the largest job this front end accepts, and Slurm refuses
        # what no node can hold: this machine's own size is no limit then.
        if detected("sjq.maxprocs"):
            values["maxprocs"] = SLURM_AUTO_PROCS
        if detected("sjq.maxmem"):
            values["maxmem"] = None
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
    _reconcile_pin(values, settings)
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


def _reconcile_pin(values: dict[str, Any], settings: Mapping[str, _Setting]) -> None:
    """Pinning gives each running job CPUs of its own: only possible where sjq hands out no
    more CPUs than this process may run on."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    room = values["maxprocs"] <= cpus and values["backend"] == "local"
    if values["pin"] is None:
        values["pin"] = room
    elif values["pin"] and not room:
        mine = settings["sjq.pin"]
        why = (
            "jobs run in Slurm (sjq.backend = slurm)"
            if values["backend"] != "local"
            else f"sjq.maxprocs ({values['maxprocs']}) is more than the {cpus} CPUs this"
            " daemon may run on, so running jobs cannot each have CPUs of their own"
        )
        raise ConfigError(
            mine.where.origin, mine.where.name, f"cannot pin CPUs: {why}; set it to F"
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
