"""The daemon's side of a connection: bytes to request events, replies to bytes. No I/O imports."""

from __future__ import annotations

from collections.abc import Callable
from typing import assert_never

from ._events import (
    NEED_DATA,
    BadRequest,
    Closed,
    Data,
    Error,
    Exit,
    Hold,
    Info,
    Kill,
    Ok,
    Pause,
    Ping,
    QueueInfo,
    Release,
    Reply,
    Request,
    Resume,
    ServerEvent,
    Shutdown,
    Status,
    Stop,
    Submit,
    Wait,
)
from ._submit import CR_SHEBANG, MISSING_SHEBANG, SubmitBuilder, has_shebang, shebang_has_cr
from ._syntax import parse_jobid, parse_jobids, parse_uint, quote

__all__ = ["MAX_LINE", "MAX_SRC", "ServerConnection", "encode_reply"]

MAX_LINE = 64 * 1024  # sjq.maxline: a full environment on one 2014-style ENV line fits
MAX_SRC = 16 * 1024 * 1024  # sjq.maxsrc: scripts are text; data belongs in files

BAD_JOBID = "Bad jobid"  # spec text, verbatim
UNKNOWN_COMMAND = "Unknown command"  # spec text, verbatim

_CLOSED = Closed()

# Where the parser is in the stream.
_REQUEST = 0  # expecting a request line
_OPTIONS = 1  # inside a SUBMIT, expecting option lines up to SRC
_BODY = 2  # inside a SUBMIT, expecting the script body
_DONE = 3  # closed: every further event is Closed


class _Fatal(Exception):
    """The stream cannot be resynchronised; the message is sent as ``ERROR``."""


def encode_reply(reply: Reply) -> bytes:
    """The bytes of one reply, CRLF-terminated."""
    match reply:
        case Ok(text=text):
            return b"OK\r\n" if text is None else b"OK " + _one_line(text) + b"\r\n"
        case Data(payload=payload):
            return b"OK %d\r\n" % len(payload) + payload
        case Error(message=message):
            return b"ERROR " + _one_line(message) + b"\r\n"
        case _:
            assert_never(reply)


def _one_line(text: str) -> bytes:
    # A stray CR or LF would end the reply line early and desynchronise the client.
    # "replace" because a reply must go out even if a message holds a lone surrogate.
    return text.replace("\r", " ").replace("\n", " ").encode("utf-8", "replace")


class ServerConnection:
    """Turns the bytes a client sends into request events (h11-style, no I/O).

    Feed bytes with `receive_data` (``b""`` for EOF), then call `next_event` until it
    returns `NEED_DATA`. Each `BadRequest` must be answered with `Error`; after a fatal
    one, or after `Closed`, `Exit`, `Shutdown` or `Stop`, every event is `Closed`.
    Chunking never changes the events: byte-at-a-time input gives the same sequence.
    """

    __slots__ = (
        "_body_len",
        "_buf",
        "_eof",
        "_pos",
        "_scan",
        "_state",
        "_submit",
        "max_line",
        "max_src",
    )

    def __init__(self, max_line: int = MAX_LINE, max_src: int = MAX_SRC) -> None:
        self.max_line = max_line
        self.max_src = max_src
        # Unread bytes are _buf[_pos:]; consumed bytes are dropped on the next
        # receive_data, which is cheap because CPython trims a bytearray's head in place.
        self._buf = bytearray()
        self._pos = 0
        self._scan = 0  # no LF in _buf[_pos:_scan]: byte-at-a-time input is not quadratic
        self._eof = False
        self._state = _REQUEST
        self._submit: SubmitBuilder | None = None
        self._body_len = 0

    @property
    def in_request(self) -> bool:
        """True while part of a request has been received: the idle timeout applies."""
        if self._state == _DONE:
            return False
        return self._state != _REQUEST or self._pos < len(self._buf)

    def receive_data(self, data: bytes) -> None:
        """Add bytes from the client; ``b""`` means EOF."""
        if self._state == _DONE:
            return
        if not data:
            self._eof = True
            return
        if self._eof:
            raise RuntimeError("receive_data() after EOF")
        if self._pos:
            del self._buf[: self._pos]
            self._scan -= self._pos
            self._pos = 0
        self._buf += data

    def send(self, reply: Reply) -> bytes:
        """The bytes of a reply; the connection's state does not depend on replies."""
        return encode_reply(reply)

    def next_event(self) -> ServerEvent:
        """The next request, `BadRequest`, `Closed`, or `NEED_DATA`."""
        try:
            return self._next_event()
        except _Fatal as e:
            self._close()
            return BadRequest(str(e), fatal=True)

    def _close(self) -> Closed:
        self._state = _DONE
        self._buf = bytearray()
        self._pos = self._scan = 0
        self._submit = None
        return _CLOSED

    def _next_event(self) -> ServerEvent:
        state = self._state
        if state == _REQUEST:
            line = self._line()
            if line is None:
                return self._close() if self._eof else NEED_DATA
            return self._request(line)
        if state == _OPTIONS:
            return self._options()
        if state == _BODY:
            return self._body()
        return _CLOSED

    def _line(self) -> bytearray | None:
        """The next line without its LF and optional CR, or None if it is not all here."""
        buf = self._buf
        end = buf.find(b"\n", self._scan)
        start = self._pos
        if end < 0:
            # +1: the CR of a line of exactly max_line bytes may be here without its LF.
            if len(buf) - start > self.max_line + 1:
                raise _Fatal(self._too_long())
            self._scan = len(buf)
            return None
        self._pos = self._scan = end + 1
        if end > start and buf[end - 1] == 0x0D:
            end -= 1
        if end - start > self.max_line:
            raise _Fatal(self._too_long())
        return buf[start:end]

    def _too_long(self) -> str:
        return f"line longer than {self.max_line} bytes (the limit, sjq.maxline); closing"

    def _request(self, line: bytearray) -> ServerEvent:
        if not line:
            return self._close()
        line = line.strip(b" \t")
        verb, _, arg = line.partition(b" ")
        verb = verb.upper()
        if verb == b"SUBMIT":
            # Even "SUBMIT junk" starts a SUBMIT: its option lines and body must be
            # consumed, or the script's lines would be read as commands.
            self._submit = SubmitBuilder()
            self._state = _OPTIONS
            if arg:
                self._submit.errors.append(f"SUBMIT takes no argument, got {_quote(arg)}")
            return self._options()
        parse = _VERBS.get(bytes(verb))
        if parse is None:
            return BadRequest(UNKNOWN_COMMAND, False)
        event = parse(arg.decode(errors="replace"))
        if isinstance(event, Exit | Shutdown | Stop):
            # The daemon closes after these; requests pipelined behind them are moot.
            self._close()
        return event

    def _options(self) -> ServerEvent:
        # One loop over every option line already here: the CLI sends a SUBMIT with
        # an ENV line per variable, and the daemon reads thousands of SUBMITs a second.
        submit = self._submit
        assert submit is not None
        while (line := self._line()) is not None:
            submit.size += len(line) + 1
            if submit.size > self.max_src:
                raise _Fatal(
                    f"SUBMIT option lines longer than {self.max_src} bytes in all; closing"
                )
            if not line:
                continue  # blank lines between options are harmless
            name, _, value = line.partition(b" ")
            if name.upper() == b"SRC":
                self._body_len = self._script_length(value)
                self._state = _BODY
                return self._body()
            submit.option(name, value)
        return self._close() if self._eof else NEED_DATA

    def _script_length(self, arg: bytearray) -> int:
        text = arg.decode(errors="replace").strip(" \t")
        if not (text.isascii() and text.isdigit()):
            raise _Fatal(
                f"SRC: cannot read script length {quote(text)}; closing, as the"
                " script that follows cannot be skipped"
            )
        n = parse_uint(text)  # None when over 2**63: over any limit too
        if n is None or n > self.max_src:
            raise _Fatal(
                f"SRC: script length {text if len(text) <= 20 else text[:20] + '...'} is over"
                f" the limit of {self.max_src} bytes (sjq.maxsrc); closing"
            )
        return n

    def _body(self) -> ServerEvent:
        n = self._body_len
        start = self._pos
        if len(self._buf) - start < n:
            return self._close() if self._eof else NEED_DATA
        script = bytes(self._buf[start : start + n])
        self._pos = self._scan = start + n
        self._state = _REQUEST
        submit = self._submit
        assert submit is not None
        self._submit = None
        submit.finish()
        if not has_shebang(script):
            submit.errors.append(MISSING_SHEBANG)
        elif shebang_has_cr(script):
            submit.errors.append(CR_SHEBANG)
        message = submit.error_message()
        if message is not None:
            return BadRequest(message, False)
        return Submit(submit.build(), script)


def _quote(arg: bytes | bytearray) -> str:
    return quote(arg.decode(errors="replace"))


def _no_argument(verb: str, event: Request) -> Callable[[str], ServerEvent]:
    # A stray argument is refused rather than ignored: "STOP 5" or "SHUTDOWN 5" typed
    # for "KILL 5" must not take the daemon down.
    def parse(arg: str) -> ServerEvent:
        if arg:
            return BadRequest(f"{verb} takes no argument, got {quote(arg)}", False)
        return event

    return parse


def _one_id(make: Callable[[int], Request]) -> Callable[[str], ServerEvent]:
    def parse(arg: str) -> ServerEvent:
        jobid = parse_jobid(arg)
        return BadRequest(BAD_JOBID, False) if jobid is None else make(jobid)

    return parse


def _status(arg: str) -> ServerEvent:
    if not arg:
        return Status(None)
    jobid = parse_jobid(arg)
    return Status(0 if jobid is None else jobid)


def _id_list(arg: str) -> tuple[int, ...] | BadRequest:
    ids = parse_jobids(arg)
    if ids is None:
        return BadRequest(f"{BAD_JOBID} in {quote(arg)} (expected ids like 3 or 3:4:5)", False)
    return ids


def _info(arg: str) -> ServerEvent:
    if not arg:
        return Info(())
    ids = _id_list(arg)
    return ids if isinstance(ids, BadRequest) else Info(ids)


def _wait(arg: str) -> ServerEvent:
    if not arg:
        return BadRequest("WAIT needs at least one job id, e.g. WAIT 3:4", False)
    ids = _id_list(arg)
    return ids if isinstance(ids, BadRequest) else Wait(ids)


_VERBS: dict[bytes, Callable[[str], ServerEvent]] = {
    b"PING": _no_argument("PING", Ping()),
    b"EXIT": _no_argument("EXIT", Exit()),
    b"SHUTDOWN": _no_argument("SHUTDOWN", Shutdown()),
    b"STOP": _no_argument("STOP", Stop()),
    b"STATUS": _status,
    b"KILL": _one_id(Kill),
    b"RELEASE": _one_id(Release),
    b"HOLD": _one_id(Hold),
    b"INFO": _info,
    b"WAIT": _wait,
    b"PAUSE": _no_argument("PAUSE", Pause()),
    b"RESUME": _no_argument("RESUME", Resume()),
    b"QUEUE": _no_argument("QUEUE", QueueInfo()),
}
