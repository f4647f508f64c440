"""The client's side of a connection: requests to bytes, reply bytes to replies. No I/O imports."""

from __future__ import annotations

from typing import assert_never

from ._array import MAX_ARRAY, MAX_INDEX, format_array
from ._dependency import KINDS, MAX_DEPENDENCY_IDS, format_dependency
from ._events import (
    NEED_DATA,
    Data,
    Error,
    Exit,
    Hold,
    Info,
    Kill,
    NeedData,
    Ok,
    Pause,
    Ping,
    ProtocolError,
    QueueInfo,
    Release,
    Reply,
    Request,
    Resume,
    Shutdown,
    Status,
    Stop,
    Submit,
    SubmitOptions,
    Wait,
)
from ._syntax import (
    MAX_INT,
    MAX_RETRY_MEM,
    MAX_TIME,
    MAX_TIME_TEXT,
    MAX_UID,
    env_line_splits,
    env_name,
    parse_uint,
    plain_decimal,
)

__all__ = ["MAX_REPLY_LINE", "ReplyReader", "encode_request", "expects_data"]

# A reply line is short (OK <jobid>, ERROR with at most ten quoted values); a longer
# one means the peer is not an sjq daemon, and buffering it without end would hang.
MAX_REPLY_LINE = 1024 * 1024


def encode_request(request: Request) -> bytes:
    """The bytes of one request, CRLF-terminated.

    Raises ValueError for a request the daemon would refuse on syntax alone (a job id
    below 1, an empty WAIT, a value holding LF or NUL, a bad ENV name, ...): such a
    request could not be read back as it was meant.
    """
    match request:
        case Ping():
            return b"PING\r\n"
        case Exit():
            return b"EXIT\r\n"
        case Shutdown():
            return b"SHUTDOWN\r\n"
        case Stop():
            return b"STOP\r\n"
        case Status(jobid=jobid):
            return b"STATUS\r\n" if jobid is None else b"STATUS %d\r\n" % _jobid(jobid)
        case Kill(jobid=jobid):
            return b"KILL %d\r\n" % _jobid(jobid)
        case Release(jobid=jobid):
            return b"RELEASE %d\r\n" % _jobid(jobid)
        case Hold(jobid=jobid):
            return b"HOLD %d\r\n" % _jobid(jobid)
        case Info(jobids=()):
            return b"INFO\r\n"
        case Info(jobids=jobids):
            return b"INFO " + _jobids(jobids) + b"\r\n"
        case Wait(jobids=jobids):
            if not jobids:
                raise ValueError("WAIT needs at least one job id")
            return b"WAIT " + _jobids(jobids) + b"\r\n"
        case Pause():
            return b"PAUSE\r\n"
        case Resume():
            return b"RESUME\r\n"
        case QueueInfo():
            return b"QUEUE\r\n"
        case Submit(options=options, script=script):
            lines = [b"SUBMIT\r\n"]
            lines.extend(_option_lines(options))
            lines.append(b"SRC %d\r\n" % len(script))
            lines.append(script)
            return b"".join(lines)
        case _:
            assert_never(request)


def expects_data(request: Request) -> bool:
    """Whether the reply to ``request`` is ``OK <n>`` and n bytes (what `ReplyReader.next_reply`
    must be told)."""
    return isinstance(request, Status | Info | QueueInfo)


def _jobid(jobid: int) -> int:
    if not 1 <= jobid <= MAX_INT:
        raise ValueError(f"job ids are whole numbers from 1 to {MAX_INT}, got {jobid}")
    return jobid


def _jobids(jobids: tuple[int, ...]) -> bytes:
    return b":".join(b"%d" % _jobid(j) for j in jobids)


def _option_lines(o: SubmitOptions) -> list[bytes]:
    lines: list[bytes] = []
    if o.mem is not None:
        if not 0 <= o.mem <= MAX_INT:
            raise ValueError(f"MEM must be from 0 to {MAX_INT} bytes, got {o.mem}")
        lines.append(b"MEM %d\r\n" % o.mem)
    if o.procs is not None:
        if not 1 <= o.procs <= MAX_INT:
            raise ValueError(f"PROCS must be a whole number >= 1, got {o.procs}")
        lines.append(b"PROCS %d\r\n" % o.procs)
    if o.depends:
        lines.append(b"DEPENDS " + _jobids(o.depends) + b"\r\n")
    for option, text in (
        ("STDOUT", o.stdout),
        ("STDERR", o.stderr),
        ("CWD", o.cwd),
        ("NAME", o.name),
    ):
        if text is not None:
            if not text:
                raise ValueError(f"{option} must not be empty")
            if option == "NAME" and "\t" in text:
                raise ValueError("NAME must not contain a tab")
            lines.append(_line(option, text))
    if o.env is not None:
        if not o.env:
            lines.append(b"ENV\r\n")  # asks for an empty environment
        for name, value in o.env:
            if not env_name(name):
                raise ValueError(f"not a valid environment variable name: {name!r}")
            # The 2014 comma form would split "A=x,B=y" in two; SETENV never splits.
            option = "SETENV" if env_line_splits(name, value) else "ENV"
            lines.append(_line(option, f"{name}={value}"))
    for option, number in (("UID", o.uid), ("GID", o.gid)):
        if number is not None:
            if not 0 <= number <= MAX_UID:
                raise ValueError(f"{option} must be from 0 to {MAX_UID}, got {number}")
            lines.append(b"%s %d\r\n" % (option.encode(), number))
    if o.hold:
        lines.append(b"HOLD\r\n")
    if o.time_limit is not None:
        if not 0 < o.time_limit < float("inf"):
            raise ValueError(f"TIME must be a number of seconds above zero, got {o.time_limit}")
        if o.time_limit > MAX_TIME:
            raise ValueError(f"TIME {o.time_limit:g} s is too large (at most {MAX_TIME_TEXT})")
        lines.append(b"TIME %s\r\n" % plain_decimal(o.time_limit).encode())
    if o.priority:
        if not -MAX_INT <= o.priority <= MAX_INT:
            raise ValueError(f"PRIORITY must be within +/-{MAX_INT}, got {o.priority}")
        lines.append(b"PRIORITY %d\r\n" % o.priority)
    if o.dependency:
        lines.append(_line("DEPENDENCY", _dependency_text(o.dependency)))
    if o.patterns:
        lines.append(b"PATTERNS\r\n")
    if o.gpus is not None:
        if not 0 <= o.gpus <= MAX_INT:
            raise ValueError(f"GPUS must be a whole number >= 0, got {o.gpus}")
        lines.append(b"GPUS %d\r\n" % o.gpus)
    if o.retry is not None:
        if not 0 <= o.retry <= MAX_INT:
            raise ValueError(f"RETRY must be a whole number >= 0, got {o.retry}")
        lines.append(b"RETRY %d\r\n" % o.retry)
    if o.retry_mem is not None:
        if not 1 <= o.retry_mem <= MAX_RETRY_MEM:
            raise ValueError(f"RETRYMEM must be from 1 to {MAX_RETRY_MEM:g}, got {o.retry_mem}")
        lines.append(b"RETRYMEM %s\r\n" % plain_decimal(o.retry_mem).encode())
    lines += _array_lines(o)
    return lines


def _array_lines(o: SubmitOptions) -> list[bytes]:
    indexes, limit, entries = o.array, o.array_limit, o.entries
    if limit is not None and not 1 <= limit <= MAX_INT:
        raise ValueError(f"an array's limit must be a whole number >= 1, got {limit}")
    if indexes is not None:
        if not indexes:
            raise ValueError("an array needs at least one index")
        if len(indexes) > MAX_ARRAY:
            raise ValueError(f"an array may have at most {MAX_ARRAY} elements")
        if list(indexes) != sorted(set(indexes)) or not 0 <= indexes[0] <= indexes[-1] <= MAX_INDEX:
            raise ValueError(f"array indexes must be increasing, from 0 to {MAX_INDEX}")
    if entries is None:
        if indexes is None and limit is not None:
            raise ValueError("an array's limit needs indexes or entries")
        return [] if indexes is None else [_line("ARRAY", format_array(indexes, limit))]
    if not entries or len(entries) > MAX_ARRAY:
        raise ValueError(f"entries: from 1 to {MAX_ARRAY}, got {len(entries)}")
    if indexes is not None and len(indexes) != len(entries):
        raise ValueError(f"{len(indexes)} array indexes but {len(entries)} entries")
    lines = (
        [] if indexes is None and limit is None else [_line("ARRAY", format_array(indexes, limit))]
    )
    for e in entries:
        if not e:
            raise ValueError("an entry must not be empty")
        lines.append(_line("ENTRY", e))
    return lines


def _dependency_text(clauses: tuple[tuple[str, tuple[tuple[int, int], ...]], ...]) -> str:
    count = 0
    for kind, ranges in clauses:
        if kind not in KINDS:
            raise ValueError(f"dependency kinds are {', '.join(KINDS)}, got {kind!r}")
        if not ranges:
            raise ValueError(f"a {kind} condition needs at least one job id")
        for lo, hi in ranges:
            if not 1 <= lo <= hi <= MAX_INT:
                raise ValueError(f"bad job id range {lo}-{hi} in a {kind} condition")
            count += hi - lo + 1
    if count > MAX_DEPENDENCY_IDS:
        raise ValueError(f"a dependency may name at most {MAX_DEPENDENCY_IDS} jobs")
    return format_dependency(clauses)


def _line(option: str, value: str) -> bytes:
    # An LF would end the line early and a NUL is refused by the daemon. A CR is
    # fine: the line always ends in CRLF and only that one CR is stripped.
    if "\n" in value or "\0" in value:
        raise ValueError(f"{option} value must not contain LF or NUL: {value!r}")
    return b"%s %s\r\n" % (option.encode(), value.encode())


class ReplyReader:
    """Turns the bytes a daemon sends into replies (h11-style, no I/O).

    Feed bytes with `receive_data` (``b""`` for EOF), then call `next_reply` once per
    request sent, with ``expect_data=True`` for STATUS and INFO, whose ``OK <n>``
    announces n payload bytes. It returns `NEED_DATA` until the reply is complete.
    Raises `ProtocolError` on a malformed reply or an EOF before a complete one; the
    reader is unusable after that.
    """

    __slots__ = ("_buf", "_eof", "_error", "_pending", "_pos", "_scan", "max_line")

    def __init__(self, max_line: int = MAX_REPLY_LINE) -> None:
        self.max_line = max_line
        self._buf = bytearray()
        self._pos = 0
        self._scan = 0
        self._eof = False
        self._pending: int | None = None  # payload length announced by an `OK <n>` line
        self._error: ProtocolError | None = None

    def receive_data(self, data: bytes) -> None:
        """Add bytes from the daemon; ``b""`` means EOF."""
        if not data:
            self._eof = True
            return
        if self._pos:
            del self._buf[: self._pos]
            self._scan -= self._pos
            self._pos = 0
        self._buf += data

    def next_reply(self, expect_data: bool) -> Reply | NeedData:
        """The next reply, or `NEED_DATA`."""
        if self._error is not None:
            raise self._error
        try:
            return self._next_reply(expect_data)
        except ProtocolError as e:
            self._error = e
            raise

    def _next_reply(self, expect_data: bool) -> Reply | NeedData:
        if self._pending is not None:
            return self._payload(self._pending)
        buf = self._buf
        end = buf.find(b"\n", self._scan)
        if end < 0:
            if len(buf) - self._pos > self.max_line + 1:
                raise ProtocolError(f"reply line longer than {self.max_line} bytes")
            if self._eof:
                raise ProtocolError("the daemon closed the connection before replying")
            self._scan = len(buf)
            return NEED_DATA
        start = self._pos
        self._pos = self._scan = end + 1
        if end > start and buf[end - 1] == 0x0D:
            end -= 1
        raw = bytes(buf[start:end])
        try:
            line = raw.decode()
        except UnicodeDecodeError:
            raise ProtocolError(f"reply is not valid UTF-8: {raw[:80]!r}") from None
        word, space, rest = line.partition(" ")
        if word == "ERROR":
            return Error(rest)
        if word != "OK":
            raise ProtocolError(f"reply is neither OK nor ERROR: {line[:80]!r}")
        if not expect_data:
            return Ok(rest if space else None)
        n = parse_uint(rest) if rest[:1].isdigit() else None
        if n is None:
            raise ProtocolError(f"expected 'OK <length>', got {line[:80]!r}")
        self._pending = n
        return self._payload(n)

    def _payload(self, n: int) -> Data | NeedData:
        start = self._pos
        if len(self._buf) - start < n:
            if self._eof:
                raise ProtocolError(
                    f"the daemon closed the connection after {len(self._buf) - start}"
                    f" of {n} announced bytes"
                )
            return NEED_DATA
        payload = bytes(self._buf[start : start + n])
        self._pos = self._scan = start + n
        self._pending = None
        return Data(payload)
