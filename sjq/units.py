"""Memory and duration parsing and formatting (``2G``, ``1.5G``, ``90s``, ``1-02:00:00``).

Pure: imports nothing of sjq and nothing heavy.
"""

from __future__ import annotations

import math
import re

__all__ = ["UnitError", "format_duration", "format_mem", "parse_duration", "parse_mem"]

# Binary multiples, as the seed README defines them (G = 1024^3).
_MEM_SUFFIX = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4, "P": 1024**5}
# Pattern texts, compiled (and cached by re) on first use: the CLI imports this module on
# every start and most runs parse no size at all.
_MEM_RE = r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([KMGTPB]?)(?:I?B)?\s*"
_DUR_RE = r"\s*([0-9]+(?:\.[0-9]*)?)\s*(ms|s|m|h|d|)\s*"
_DUR_UNIT = {"ms": 0.001, "s": 1.0, "": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


class UnitError(ValueError):
    """A memory or duration value could not be read; the message says what was expected."""


def parse_mem(text: str) -> int:
    """Bytes from ``100M``, ``2G``, ``512K``, ``1.5G``, ``2GiB``, ``2gb`` or plain bytes.

    Fractions are rounded up to a whole byte. Zero is allowed (a job that reserves no memory).
    """
    m = re.fullmatch(_MEM_RE, text, re.IGNORECASE)
    if m is None:
        raise UnitError(f"cannot read memory size {text!r} (expected e.g. 512M, 2G, 1.5G)")
    number, suffix = m.groups()
    value = float(number) * _MEM_SUFFIX[suffix.upper()]
    if not math.isfinite(value) or value >= 2**63:
        raise UnitError(f"memory size {text!r} is too large")
    return math.ceil(value)


def format_mem(nbytes: int) -> str:
    """Shortest exact (or one-decimal) binary form: 2147483648 -> ``2G``, 1.5 GiB -> ``1.5G``."""
    for suffix in ("P", "T", "G", "M", "K"):
        unit = _MEM_SUFFIX[suffix]
        if nbytes >= unit:
            value = nbytes / unit
            if value == int(value):
                return f"{int(value)}{suffix}"
            return f"{value:.1f}{suffix}"
    return f"{nbytes}B" if nbytes else "0"


def parse_duration(text: str) -> float:
    """Seconds from ``90``, ``90s``, ``500ms``, ``5m``, ``2h``, ``1d``, ``[D-]HH:MM:SS``."""
    t = text.strip()
    if ":" in t or "-" in t:
        return _parse_clock(text, t)
    m = re.fullmatch(_DUR_RE, t, re.IGNORECASE)
    if m is None:
        raise UnitError(
            f"cannot read duration {text!r} (expected e.g. 30, 90s, 5m, 2h, 1-00:00:00)"
        )
    return float(m.group(1)) * _DUR_UNIT[m.group(2).lower()]


def _parse_clock(text: str, t: str) -> float:
    days = 0
    if "-" in t:
        d, _, t = t.partition("-")
        if not d.isdigit():
            raise UnitError(f"cannot read duration {text!r} (days must be a whole number)")
        days = int(d)
    parts = t.split(":")
    if not 1 <= len(parts) <= 3 or not all(p.isdigit() for p in parts):
        raise UnitError(f"cannot read duration {text!r} (expected [D-]HH:MM:SS)")
    seconds = 0
    for p in parts:
        seconds = seconds * 60 + int(p)
    if len(parts) == 1 and days:
        seconds *= 3600  # "1-2" reads as one day and two hours, as in Slurm
    try:
        return float(days * 86400 + seconds)
    except OverflowError:
        return float("inf")  # far too large: callers say so


def format_duration(seconds: float) -> str:
    """``0:00:05``, ``1:02:03``, ``2-03:04:05``: what a person reads in a status table."""
    s = max(0, round(seconds))
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    clock = f"{hours}:{minutes:02d}:{s:02d}"
    return f"{days}-{hours:02d}:{minutes:02d}:{s:02d}" if days else clock
