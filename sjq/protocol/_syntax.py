"""Lexical rules shared by the parser and the encoder (ids, env names). Imports no I/O module."""

from __future__ import annotations

# Ids, sizes and priorities end up in SQLite INTEGER columns, which are signed 64-bit.
MAX_INT = 2**63 - 1
# uid_t is 32 bits and (uid_t)-1 means "leave unchanged" to setreuid(), so it is not an id.
MAX_UID = 2**32 - 2
# A job's time limit, seconds: no job runs for a century, and a longer one hides a typo.
MAX_TIME = 100 * 365 * 86400
MAX_TIME_TEXT = "100 years, 36500-00:00:00"


# How much of a client's value an error message quotes: enough to recognise it,
# short enough that one bad 64 KiB line does not make a 64 KiB reply.
_QUOTE_MAX = 40
# How many option errors one SUBMIT reports; the rest are counted, not listed.
MAX_ERRORS = 10


# A factor of RETRYMEM above this is a typo: a job's MEM would reach sjq.maxmem at once anyway.
MAX_RETRY_MEM = 1000.0


def quote(text: str) -> str:
    """``repr`` of a client's value, shortened for an error message."""
    if len(text) > _QUOTE_MAX:
        return repr(text[:_QUOTE_MAX]) + "..."
    return repr(text)


def parse_uint(text: str) -> int | None:
    """A whole number of ASCII digits (spaces around allowed) up to MAX_INT, else None.

    ``int()`` alone would also take ``+5``, ``5_000``, Arabic-Indic digits and would raise on more
    than 4300 digits, so the digits are checked first.
    """
    t = text.strip(" \t")
    if not (t.isascii() and t.isdigit()):
        return None
    t = t.lstrip("0") or "0"
    if len(t) > 19:
        return None
    n = int(t)
    return n if n <= MAX_INT else None


def parse_int(text: str) -> int | None:
    """Like `parse_uint`, with an optional sign."""
    t = text.strip(" \t")
    if t[:1] in ("+", "-"):
        n = parse_uint(t[1:]) if t[1:2].isdigit() else None
        return None if n is None else (-n if t[0] == "-" else n)
    return parse_uint(t)


def parse_jobid(text: str) -> int | None:
    """A positive job id, or None."""
    n = parse_uint(text)
    return n if n else None


def parse_jobids(text: str) -> tuple[int, ...] | None:
    """Colon-separated positive job ids (``3:4:5``), or None if any piece is not one."""
    ids = []
    for piece in text.strip(" \t").split(":"):
        n = parse_jobid(piece)
        if n is None:
            return None
        ids.append(n)
    return tuple(ids)


def env_name(name: str) -> bool:
    """``[A-Za-z_][A-Za-z0-9_]*`` (string methods, not a regular expression: compiling
    one costs a client more than all its parsing)."""
    return name.isascii() and name.isidentifier()


def _assigns(piece: str) -> bool:
    name, eq, _ = piece.partition("=")
    return bool(eq) and env_name(name)


def split_env(value: str) -> list[tuple[str, str]] | None:
    """The assignments of one ``ENV`` value, or None if it is not ``NAME=VALUE``.

    The 2014 client sent the whole environment on one line, joined by commas; such a
    line is recognised by every comma-separated piece starting with ``NAME=``.
    """
    if "," in value:
        pieces = value.split(",")
        if all(_assigns(p) for p in pieces):
            return [_assignment(p) for p in pieces]
    if not _assigns(value):
        return None
    return [_assignment(value)]


def _assignment(piece: str) -> tuple[str, str]:
    name, _, value = piece.partition("=")
    return name, value


def env_line_splits(name: str, value: str) -> bool:
    """True if ``ENV name=value`` would be read back as several assignments."""
    return "," in value and len(split_env(f"{name}={value}") or ()) > 1


def plain_decimal(x: float) -> str:
    """The shortest round-tripping form of a finite float, without an exponent.

    TIME values go through `sjq.units.parse_duration`, which reads ``0.00001``
    but not ``1e-05``.
    """
    r = repr(x)
    if "e" not in r:
        return r
    mantissa, _, exp_text = r.partition("e")
    exp = int(exp_text)
    whole, _, frac = mantissa.partition(".")
    digits = whole + frac
    point = len(whole) + exp  # where the decimal point goes in `digits`
    if point <= 0:
        return "0." + "0" * -point + digits
    if point >= len(digits):
        return digits + "0" * (point - len(digits))
    return digits[:point] + "." + digits[point:]
