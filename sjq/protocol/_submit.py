"""The option lines of a SUBMIT: syntax checks and error messages. Imports no I/O module."""

from __future__ import annotations

from collections.abc import Callable

from sjq.units import UnitError, parse_duration, parse_mem

from ._array import MAX_ARRAY, parse_array
from ._dependency import parse_dependency
from ._events import SubmitOptions
from ._syntax import (
    MAX_ERRORS,
    MAX_RETRY_MEM,
    MAX_TIME,
    MAX_TIME_TEXT,
    MAX_UID,
    env_name,
    parse_int,
    parse_jobids,
    parse_uint,
    quote,
    split_env,
)

__all__ = ["CR_SHEBANG", "MISSING_SHEBANG", "SubmitBuilder", "has_shebang", "shebang_has_cr"]

MISSING_SHEBANG = "Don't know how to run script (missing shebang)"  # spec text, verbatim


# The kernel would look for an interpreter named "sh\r": the job could never start.
CR_SHEBANG = (
    "the #! line ends in a carriage return (the script has Windows line endings);"
    " convert it with dos2unix or sed -i 's/\\r$//'"
)


def shebang_has_cr(script: bytes) -> bool:
    """Whether the ``#!`` line ends in CR (a script saved with Windows line ends)."""
    head = script if script[:2] == b"#!" else script.lstrip()
    end = head.find(b"\n")
    line = head if end < 0 else head[:end]
    return line.endswith(b"\r")


def has_shebang(script: bytes) -> bool:
    # Leading whitespace is allowed (spec); lstrip would copy a 16 MiB body, so look
    # at the start only unless it really begins with whitespace.
    if script[:2] == b"#!":
        return True
    return script.lstrip()[:2] == b"#!"


class SubmitBuilder:
    """Collects the options of one SUBMIT and every error found in them, in line order."""

    __slots__ = ("entries", "env", "errors", "seen", "size", "values")

    def __init__(self) -> None:
        # SubmitOptions field -> value, for the options given (the rest keep their defaults)
        self.values: dict[str, object] = {}
        self.env: list[tuple[str, str]] | None = None  # ENV and SETENV lines add up
        self.entries: list[str] | None = None  # ENTRY lines add up
        self.errors: list[str] = []
        self.seen: set[bytes] = set()
        self.size = 0  # bytes of option lines so far, bounded by the connection's max_src

    def option(self, name_bytes: bytes | bytearray, value_bytes: bytes | bytearray) -> None:
        """One ``NAME VALUE`` line, split at its first space. ``SRC`` is not handled here."""
        key = bytes(name_bytes).upper()
        handler = _OPTIONS.get(key)
        if handler is None:
            shown = name_bytes[:_NAME_SHOWN].decode(errors="replace")
            dots = "..." if len(name_bytes) > _NAME_SHOWN else ""
            self.errors.append(f"unknown option {shown}{dots}")
            return
        if key in self.seen and key not in _REPEATABLE:
            self.errors.append(f"{key.decode()} given more than once")
            return
        self.seen.add(key)
        try:
            value = value_bytes.decode()
        except UnicodeDecodeError:
            self.errors.append(f"{key.decode()}: value is not valid UTF-8")
            return
        if not value and key not in _NO_VALUE_OK:
            self.errors.append(f"{key.decode()} needs a value")
            return
        if "\0" in value:
            # No path, name or environment string can hold a NUL; refusing it here
            # spares the daemon a ValueError from open() or execve().
            self.errors.append(f"{key.decode()}: value must not contain a NUL character")
            return
        message = handler(self, value)
        if message is not None:
            self.errors.append(message)

    def finish(self) -> None:
        """Checks across options, once every option line is in."""
        array, entries = self.values.get("array"), self.entries
        if entries is not None and len(entries) > MAX_ARRAY:
            self.errors.append(f"more than {MAX_ARRAY} ENTRY lines")
        elif entries is not None and isinstance(array, tuple) and len(array) != len(entries):
            self.errors.append(
                f"ARRAY names {len(array)} elements but {len(entries)} ENTRY lines were given"
            )
        elif entries is None and array is None and "array_limit" in self.values:
            self.errors.append(
                "ARRAY: a limit alone (%N) names no element; give indexes"
                " (e.g. 1-100%4) or ENTRY lines"
            )

    def error_message(self) -> str | None:
        """All errors as one line, or None when the request is good."""
        errors = self.errors
        if not errors:
            return None
        if len(errors) > MAX_ERRORS:
            more = len(errors) - MAX_ERRORS
            errors = [*errors[:MAX_ERRORS], f"and {more} more error{'s' * (more > 1)}"]
        return "; ".join(errors)

    def build(self) -> SubmitOptions:
        if self.env is not None:
            self.values["env"] = tuple(self.env)
        if self.entries is not None:
            self.values["entries"] = tuple(self.entries)
        return SubmitOptions(**self.values)  # type: ignore[arg-type]


# Each handler stores the value, or returns the error message for it.
_Handler = Callable[[SubmitBuilder, str], str | None]


def _mem(b: SubmitBuilder, value: str) -> str | None:
    # Plain bytes are read exactly: parse_mem goes through a float, which is exact
    # only up to 2**53, and clients send MEM in bytes.
    n = parse_uint(value)
    if n is not None:
        b.values["mem"] = n
        return None
    try:
        b.values["mem"] = parse_mem(value)
    except UnitError as e:
        return "MEM: " + str(e).replace(repr(value), quote(value))
    return None


def _procs(b: SubmitBuilder, value: str) -> str | None:
    n = parse_uint(value)
    if not n:
        return f"PROCS must be a whole number >= 1, got {quote(value)}"
    b.values["procs"] = n
    return None


def _depends(b: SubmitBuilder, value: str) -> str | None:
    ids = parse_jobids(value)
    if ids is None:
        bad = next(p for p in value.strip(" \t").split(":") if parse_jobids(p) is None)
        if not bad.strip(" \t"):
            return f"DEPENDS: empty job id in {quote(value)} (expected ids like 3:4:5)"
        return f"DEPENDS: {quote(bad)} is not a job id"
    b.values["depends"] = ids
    return None


def _text(attr: str) -> _Handler:
    def handler(b: SubmitBuilder, value: str) -> str | None:
        b.values[attr] = value
        return None

    return handler


def _name(b: SubmitBuilder, value: str) -> str | None:
    # STATUS records are tab-separated: a tab in a name would shift every field after it.
    if "\t" in value:
        return f"NAME must not contain a tab, got {quote(value)}"
    b.values["name"] = value
    return None


def _env(b: SubmitBuilder, value: str) -> str | None:
    if b.env is None:
        b.env = []
    if not value:
        return None  # `ENV` alone: an empty environment, apart from sjq's own variables
    assignments = split_env(value)
    if assignments is None:
        return (
            f"ENV: expected NAME=VALUE, got {quote(value)}"
            " (NAME is letters, digits and _, not starting with a digit)"
        )
    b.env.extend(assignments)
    return None


def _setenv(b: SubmitBuilder, value: str) -> str | None:
    # SETENV is ENV without the 2014 comma splitting: a value may contain ",X=".
    name, eq, val = value.partition("=")
    if not eq or not env_name(name):
        return (
            f"SETENV: expected NAME=VALUE, got {quote(value)}"
            " (NAME is letters, digits and _, not starting with a digit)"
        )
    if b.env is None:
        b.env = []
    b.env.append((name, val))
    return None


def _id_number(attr: str, option: str) -> _Handler:
    def handler(b: SubmitBuilder, value: str) -> str | None:
        n = parse_uint(value)
        if n is None or n > MAX_UID:
            return f"{option} must be a whole number from 0 to {MAX_UID}, got {quote(value)}"
        b.values[attr] = n
        return None

    return handler


def _hold(b: SubmitBuilder, value: str) -> str | None:
    if value.strip(" \t"):
        return f"HOLD takes no value, got {quote(value)}"
    b.values["hold"] = True
    return None


def _patterns(b: SubmitBuilder, value: str) -> str | None:
    if value.strip(" \t"):
        return f"PATTERNS takes no value, got {quote(value)}"
    b.values["patterns"] = True
    return None


def _time(b: SubmitBuilder, value: str) -> str | None:
    try:
        seconds = parse_duration(value)
    except UnitError as e:
        return "TIME: " + str(e).replace(repr(value), quote(value))
    # A zero limit would kill the job at once.
    if seconds <= 0:
        return f"TIME must be a duration above zero, e.g. 90s or 1:00:00, got {quote(value)}"
    if seconds > MAX_TIME:
        return f"TIME {quote(value)} is too large (at most {MAX_TIME_TEXT})"
    b.values["time_limit"] = seconds
    return None


def _priority(b: SubmitBuilder, value: str) -> str | None:
    n = parse_int(value)
    if n is None:
        return f"PRIORITY must be a whole number, e.g. 10 or -5, got {quote(value)}"
    b.values["priority"] = n
    return None


def _dependency(b: SubmitBuilder, value: str) -> str | None:
    parsed = parse_dependency(value)
    if isinstance(parsed, str):
        return "DEPENDENCY: " + parsed
    b.values["dependency"] = parsed
    return None


def _array(b: SubmitBuilder, value: str) -> str | None:
    parsed = parse_array(value)
    if isinstance(parsed, str):
        return "ARRAY: " + parsed
    indexes, limit = parsed
    if indexes is not None:
        b.values["array"] = indexes
    if limit is not None:
        b.values["array_limit"] = limit
    return None


def _entry(b: SubmitBuilder, value: str) -> str | None:
    if b.entries is None:
        b.entries = []
    b.entries.append(value)
    return None


def _count(attr: str, option: str) -> _Handler:
    def handler(b: SubmitBuilder, value: str) -> str | None:
        n = parse_uint(value)
        if n is None:
            return f"{option} must be a whole number >= 0, got {quote(value)}"
        b.values[attr] = n
        return None

    return handler


def _retry_mem(b: SubmitBuilder, value: str) -> str | None:
    text = value.strip(" \t")
    # digits with at most one point: float() alone would take "inf", "1e3" and "_"
    plain = text.isascii() and text.replace(".", "", 1).isdigit()
    factor = float(text) if plain else 0.0
    if not 1 <= factor <= MAX_RETRY_MEM:
        return (
            f"RETRYMEM must be a number from 1 to {MAX_RETRY_MEM:g}, e.g. 2 or 1.5,"
            f" got {quote(value)}"
        )
    b.values["retry_mem"] = factor
    return None


_OPTIONS: dict[bytes, _Handler] = {
    b"MEM": _mem,
    b"PROCS": _procs,
    b"DEPENDS": _depends,
    b"STDOUT": _text("stdout"),
    b"STDERR": _text("stderr"),
    b"ENV": _env,
    b"SETENV": _setenv,
    b"CWD": _text("cwd"),
    b"NAME": _name,
    b"UID": _id_number("uid", "UID"),
    b"GID": _id_number("gid", "GID"),
    b"HOLD": _hold,
    b"TIME": _time,
    b"PRIORITY": _priority,
    b"DEPENDENCY": _dependency,
    b"ARRAY": _array,
    b"ENTRY": _entry,
    b"PATTERNS": _patterns,
    b"GPUS": _count("gpus", "GPUS"),
    b"RETRY": _count("retry", "RETRY"),
    b"RETRYMEM": _retry_mem,
}
_REPEATABLE = frozenset({b"ENV", b"SETENV", b"ENTRY"})
_NO_VALUE_OK = frozenset({b"HOLD", b"ENV", b"PATTERNS"})
_NAME_SHOWN = 40  # bytes of an unknown option name quoted back
