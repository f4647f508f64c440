"""`sjq submit`'s option values (command line and #SJQ lines) as Client.submit's keyword
arguments, each checked: a bad one is a UsageError naming the option. On the CLI's hot
path: imports sjq.units and sjq.protocol's syntax only (arrays and dependency kinds when
used)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sjq.protocol._syntax import MAX_RETRY_MEM
from sjq.units import UnitError, parse_duration, parse_mem

from ._args import UsageError
from ._script import exportable
from .cli import job_ids

__all__ = ["options"]


def _text(values: Mapping[str, object], dest: str) -> str | None:
    value = values.get(dest)
    return value if isinstance(value, str) else None


def _mem(value: str) -> int:
    try:
        return parse_mem(value)
    except UnitError as e:
        raise UsageError(f"--mem: {e}") from None


def _procs(value: str) -> int:
    if not (value.isascii() and value.isdigit() and int(value) >= 1):
        raise UsageError(f"--procs must be a whole number from 1, got {value!r}")
    return int(value)


def _count(option: str) -> Callable[[str], int]:
    def check(value: str) -> int:
        if not (value.isascii() and value.isdigit()):
            raise UsageError(f"--{option} must be a whole number from 0, got {value!r}")
        return int(value)

    return check


def _retry_mem(value: str) -> float:
    plain = value.isascii() and value.replace(".", "", 1).isdigit()
    factor = float(value) if plain else 0.0
    if not 1 <= factor <= MAX_RETRY_MEM:
        raise UsageError(
            f"--retry-mem must be a number from 1 to {MAX_RETRY_MEM:g}, e.g. 2, got {value!r}"
        )
    return factor


def _time(value: str) -> float:
    try:
        seconds = parse_duration(value)
    except UnitError as e:
        raise UsageError(f"--time: {e}") from None
    if not 0 < seconds < float("inf"):
        raise UsageError(f"--time must be more than zero, got {value!r}")
    return seconds


def _priority(value: str) -> int:
    digits = value[1:] if value[:1] in "+-" else value
    if not (digits.isascii() and digits.isdigit()):
        raise UsageError(f"--priority must be a whole number, e.g. 10 or -5, got {value!r}")
    return int(value)


def _one_line(option: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        if not value:
            raise UsageError(f"--{option} must not be empty")
        if "\n" in value or "\0" in value:
            raise UsageError(f"--{option} must not contain a line break or NUL")
        return value

    return check


def _cwd(value: str) -> str:
    path = os.path.abspath(_one_line("cwd")(value))
    if not os.path.isdir(path):
        raise UsageError(f"--cwd: {path} is not a directory")
    return path


# Option -> (Client.submit keyword, converter); the converters raise UsageError.
_CONVERT: dict[str, tuple[str, Callable[[str], Any]]] = {
    "mem": ("mem", _mem),
    "procs": ("procs", _procs),
    "gpus": ("gpus", _count("gpus")),
    "retry": ("retry", _count("retry")),
    "retry_mem": ("retry_mem", _retry_mem),
    "time": ("time_limit", _time),
    "priority": ("priority", _priority),
    "name": ("name", _one_line("name")),
    "stdout": ("stdout", _one_line("stdout")),
    "stderr": ("stderr", _one_line("stderr")),
    "cwd": ("cwd", _cwd),
}


def options(values: Mapping[str, str | bool | list[str]]) -> dict[str, Any]:
    """Client.submit keyword arguments from the option values; UsageError for a bad one."""
    out: dict[str, Any] = {"cwd": os.getcwd(), "hold": bool(values.get("hold"))}
    for dest, (keyword, convert) in _CONVERT.items():
        if isinstance(value := values.get(dest), str):
            out[keyword] = convert(value)
    after = values.get("after")
    if isinstance(after, list):
        out["after"] = job_ids(after, required=False)
    for kind in ("afterany", "afternotok"):
        if isinstance(ids := values.get(kind), list):
            out[kind] = job_ids(ids, required=False)
    spec, each = values.get("array"), values.get("each_line")
    if isinstance(spec, str):
        indexes, limit = _array(spec)
        if indexes is not None and isinstance(each, str):
            raise UsageError("--each-line makes its own array: --array may only add %N to it")
        if indexes is None and not isinstance(each, str):
            raise UsageError(f"--array {spec}: a limit alone names no job; give indexes")
        out["array"], out["limit"] = indexes, limit
    if isinstance(each, str):
        out["entries"] = _lines(each)
    if isinstance(specs := values.get("dependency"), list):
        bare, dependency = _dependency(specs)
        out["after"] = [*out.get("after", []), *bare]
        if dependency:
            out["dependency"] = dependency
    env = values.get("env")
    out["env"] = _environment(_text(values, "export"), env if isinstance(env, list) else [])
    return out


def _array(spec: str) -> tuple[tuple[int, ...] | None, int | None]:
    """--array's indexes (None for a limit alone, %N) and limit."""
    from sjq.protocol._array import parse_array  # noqa: PLC0415 - arrays only

    parsed = parse_array(spec)
    if isinstance(parsed, str):
        raise UsageError(f"--array: {parsed}")
    return parsed


def _lines(path: str) -> list[str]:
    """--each-line: the lines of FILE (- for stdin), without line ends, empty ones skipped."""
    try:
        if path == "-":
            data = sys.stdin.buffer.read()
        else:
            with open(path, "rb") as f:
                data = f.read()
        text = data.decode()
    except OSError as e:
        raise UsageError(f"--each-line: cannot read {path}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise UsageError(f"--each-line: {path} is not UTF-8 text ({e.reason})") from None
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    out = [line for line in lines if line]
    if any("\0" in line for line in out):
        raise UsageError(f"--each-line: {path} has a NUL byte in a line")
    if not out:
        raise UsageError(f"--each-line: {path} has no lines")
    return out


def _dependency(specs: Sequence[str]) -> tuple[list[int], str]:
    """-d values: ids alone (``3:4``, ``3,4``, ``3-7``) are --after, as -d always meant and
    STATUS's DEPS column shows; the rest, with Slurm's kinds, is DEPENDENCY, checked here."""
    bare: list[int] = []
    clauses: list[str] = []
    for spec in specs:
        text = spec.strip()
        if all(c.isdigit() or c in ":,- \t" for c in text):  # '' too: no dependency
            bare += job_ids([text], required=False)
            continue
        from sjq.protocol._dependency import parse_dependency  # noqa: PLC0415

        parsed = parse_dependency(text)
        if isinstance(parsed, str):
            raise UsageError(f"--dependency: {parsed}")
        clauses.append(text)
    return bare, ",".join(clauses)


def _environment(export: str | None, settings: Sequence[str]) -> Mapping[str, str] | str:
    """Client.submit's env argument for --export and --env."""
    extra: dict[str, str] = {}
    for item in settings:
        name, eq, value = item.partition("=")
        if not eq or not _env_name(name):
            raise UsageError(f"--env takes NAME=VALUE (NAME: letters, digits, _), got {item!r}")
        if "\n" in value:
            raise UsageError(f"--env {name}: a value cannot hold a line break")
        extra[name] = value
    mode = (export or "ALL").strip()
    if mode.upper() == "ALL":
        return {**dict(exportable(os.environ)), **extra}
    if mode.upper() == "NONE":
        return extra if extra else "daemon"
    names = [n.strip() for n in mode.split(",") if n.strip()]
    for name in names:
        if not _env_name(name):
            raise UsageError(
                f"--export takes ALL, NONE or variable names (PATH,HOME), got {name!r}"
            )
    chosen = {n: os.environ[n] for n in names if n in os.environ and "\n" not in os.environ[n]}
    return {**chosen, **extra}


def _env_name(name: str) -> bool:
    return (
        bool(name)
        and (name[0].isalpha() or name[0] == "_")
        and name.isascii()
        and (name.replace("_", "a").isalnum())
    )
