"""ServerConnection: request lines, framing, limits and EOF, byte for byte as docs/protocol.md."""

from __future__ import annotations

import pytest

from sjq.protocol import (
    NEED_DATA,
    BadRequest,
    Closed,
    Exit,
    Hold,
    Info,
    Kill,
    Ping,
    Release,
    ServerConnection,
    ServerEvent,
    Shutdown,
    Status,
    Stop,
    Wait,
)

BAD_JOBID = BadRequest("Bad jobid", False)
UNKNOWN = BadRequest("Unknown command", False)


def drain(conn: ServerConnection) -> list[ServerEvent]:
    """Events up to NEED_DATA (not included) or the first Closed or fatal error (included)."""
    events: list[ServerEvent] = []
    while (event := conn.next_event()) is not NEED_DATA:
        events.append(event)
        if isinstance(event, Closed) or (isinstance(event, BadRequest) and event.fatal):
            break
    return events


def events_of(data: bytes, *, eof: bool = False, **limits: int) -> list[ServerEvent]:
    conn = ServerConnection(**limits)
    conn.receive_data(data)
    if eof:
        conn.receive_data(b"")
    return drain(conn)


def one(line: bytes) -> ServerEvent:
    events = events_of(line)
    assert events[1:] in ([], [Closed()]), events  # Closed after EXIT, SHUTDOWN, STOP
    return events[0]


# --- verbs -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "event"),
    [
        (b"PING\r\n", Ping()),
        (b"PING\n", Ping()),
        (b"ping\n", Ping()),
        (b"PiNg\r\n", Ping()),
        (b"PING  \t\r\n", Ping()),
        (b"  PING\n", Ping()),
        (b"EXIT\r\n", Exit()),
        (b"exit\n", Exit()),
        (b"SHUTDOWN\r\n", Shutdown()),
        (b"Shutdown\n", Shutdown()),
        (b"STOP\r\n", Stop()),
        (b"stop \n", Stop()),
        (b"STATUS\r\n", Status(None)),
        (b"STATUS\n", Status(None)),
        (b"STATUS \r\n", Status(None)),
        (b"status 3\r\n", Status(3)),
        (b"STATUS 007\n", Status(7)),
        (b"STATUS  3\n", Status(3)),
        (b"STATUS 3 \r\n", Status(3)),
        (b"KILL 5\r\n", Kill(5)),
        (b"kill 5\n", Kill(5)),
        (b"KILL 9223372036854775807\n", Kill(2**63 - 1)),
        (b"RELEASE 12\r\n", Release(12)),
        (b"release 12\n", Release(12)),
        (b"HOLD 5\r\n", Hold(5)),
        (b"hold 5\n", Hold(5)),
        (b"INFO\r\n", Info(())),
        (b"INFO \n", Info(())),
        (b"INFO 3\r\n", Info((3,))),
        (b"info 3:4:5\n", Info((3, 4, 5))),
        (b"INFO 4:3:4\n", Info((4, 3, 4))),
        (b"WAIT 3:4\r\n", Wait((3, 4))),
        (b"wait 7\n", Wait((7,))),
    ],
)
def test_request_line(line: bytes, event: ServerEvent) -> None:
    assert one(line) == event


@pytest.mark.parametrize("verb", [b"PING", b"EXIT", b"SHUTDOWN", b"STOP"])
def test_stray_argument_is_refused_not_ignored(verb: bytes) -> None:
    # "STOP 5" meant as "KILL 5" must not take the daemon down.
    assert one(verb + b" 5\r\n") == BadRequest(f"{verb.decode()} takes no argument, got '5'")


@pytest.mark.parametrize("verb", [b"KILL", b"RELEASE", b"HOLD"])
@pytest.mark.parametrize(
    "arg",
    [
        b"",
        b" ",
        b" x",
        b" 0",
        b" -1",
        b" +1",
        b" 1.0",
        b" 1e3",
        b" 1_000",
        b" 1 2",
        b" 3:4",
        b" 9223372036854775808",
        b" 99999999999999999999999999999999999",
        " \u0665".encode(),  # ARABIC-INDIC DIGIT FIVE: int() takes it, we do not
        b" \xff",
    ],
)
def test_malformed_jobid(verb: bytes, arg: bytes) -> None:
    assert one(verb + arg + b"\r\n") == BAD_JOBID


@pytest.mark.parametrize("arg", [b"x", b"abc", b"0", b"-3", b"3:4", b"\xff", b"1 2"])
def test_status_of_anything_that_is_not_a_job_id_names_no_job(arg: bytes) -> None:
    # The 2014 daemon answered OK 0 for these; old scripts rely on STATUS never failing.
    assert one(b"STATUS " + arg + b"\r\n") == Status(0)


@pytest.mark.parametrize("arg", [b"x", b"3::4", b"3:", b":3", b"0", b"3,4", b"3:x:5"])
def test_info_and_wait_malformed_ids(arg: bytes) -> None:
    message = f"Bad jobid in {arg.decode()!r} (expected ids like 3 or 3:4:5)"
    assert one(b"INFO " + arg + b"\n") == BadRequest(message)
    assert one(b"WAIT " + arg + b"\n") == BadRequest(message)


def test_wait_needs_an_id() -> None:
    expected = BadRequest("WAIT needs at least one job id, e.g. WAIT 3:4")
    assert one(b"WAIT\r\n") == expected
    assert one(b"WAIT  \r\n") == expected


@pytest.mark.parametrize(
    "line",
    [
        b"FOO\r\n",
        b"PINGPONG\n",
        b"KILL\t5\n",
        b"   \n",
        b"\t\r\n",
        b"\xff\xfe\n",
        b"S\xc3\xbcBMIT\n",
    ],
)
def test_unknown_command_keeps_the_connection(line: bytes) -> None:
    assert events_of(line + b"PING\n") == [UNKNOWN, Ping()]


def test_unicode_case_folding_does_not_make_a_verb() -> None:
    # LATIN SMALL LETTER LONG S upper-cases to "S" in Python; only ASCII folds here.
    assert one("\u017ftatus\n".encode()) == UNKNOWN


def test_errors_are_not_fatal() -> None:
    stream = b"KILL x\nFOO\nPING x\nWAIT\nINFO 3::4\nSTATUS 1\n"
    events = events_of(stream)
    assert events[-1] == Status(1)
    assert all(isinstance(e, BadRequest) and not e.fatal for e in events[:-1])


# --- closing -----------------------------------------------------------------------


@pytest.mark.parametrize("line", [b"\n", b"\r\n"])
def test_empty_line_closes(line: bytes) -> None:
    conn = ServerConnection()
    conn.receive_data(b"PING\n" + line + b"PING\n")
    assert drain(conn) == [Ping(), Closed()]
    assert conn.next_event() == Closed()
    conn.receive_data(b"PING\n")  # ignored once closed
    assert conn.next_event() == Closed()
    assert not conn.in_request


@pytest.mark.parametrize("verb", [b"EXIT", b"SHUTDOWN", b"STOP"])
def test_requests_after_exit_shutdown_stop_are_not_read(verb: bytes) -> None:
    events = events_of(verb + b"\r\nPING\r\nSHUTDOWN\r\n")
    assert events == [events[0], Closed()]
    assert not isinstance(events[0], BadRequest)


def test_eof_after_complete_requests() -> None:
    assert events_of(b"PING\nSTATUS 2\n", eof=True) == [Ping(), Status(2), Closed()]


@pytest.mark.parametrize(
    "partial",
    [b"", b"PING", b"PING\r", b"SUBMIT\n", b"SUBMIT\nNAME x\n", b"SUBMIT\nSRC 10\n#!/bin"],
)
def test_eof_mid_request_closes_without_a_reply(partial: bytes) -> None:
    assert events_of(partial, eof=True) == [Closed()]


def test_data_after_eof_is_a_programming_error() -> None:
    conn = ServerConnection()
    conn.receive_data(b"PI")
    conn.receive_data(b"")
    with pytest.raises(RuntimeError):
        conn.receive_data(b"NG\n")


# --- framing -----------------------------------------------------------------------


def test_need_data_until_the_line_ends() -> None:
    conn = ServerConnection()
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"STAT")
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"US 4\r")
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"\n")
    assert conn.next_event() == Status(4)
    assert conn.next_event() is NEED_DATA


def test_pipelined_requests_in_one_chunk() -> None:
    stream = (
        b"PING\r\nSTATUS\r\nSTATUS 3\nKILL 4\r\nRELEASE 5\nHOLD 6\nINFO 1:2\nWAIT 2\n"
        b"SUBMIT\r\nSRC 10\r\n#!/bin/sh\nPING\nEXIT\r\n"
    )
    events = events_of(stream)
    assert [type(e).__name__ for e in events] == [
        "Ping",
        "Status",
        "Status",
        "Kill",
        "Release",
        "Hold",
        "Info",
        "Wait",
        "Submit",
        "Ping",
        "Exit",
        "Closed",
    ]


def test_byte_at_a_time_gives_the_same_events() -> None:
    stream = (
        b"PING\r\nKILL x\r\nSUBMIT\r\nNAME a\r\nPROCS zz\r\nSRC 12\r\n#!/bin/sh\r\nx\n"
        b"SUBMIT\nENV A=1,B=2\nSRC 3\n#!x" + b"INFO\nWAIT 1:2\n\n"
    )
    whole = events_of(stream)
    conn = ServerConnection()
    split: list[ServerEvent] = []
    for i in range(len(stream)):
        conn.receive_data(stream[i : i + 1])
        split.extend(drain(conn))
        if split and split[-1] == Closed():
            break
    assert split == whole
    assert whole[-1] == Closed()


def busy(conn: ServerConnection) -> bool:
    # A function, not the bare property: mypy would narrow the property across asserts.
    return conn.in_request


def test_in_request_tracks_partial_requests() -> None:
    conn = ServerConnection()
    assert not busy(conn)
    conn.receive_data(b"PI")
    assert busy(conn)
    conn.receive_data(b"NG\n")
    assert conn.next_event() == Ping()
    assert not busy(conn)
    conn.receive_data(b"SUBMIT\n")
    assert conn.next_event() is NEED_DATA
    assert busy(conn)  # nothing buffered, but a SUBMIT has begun
    conn.receive_data(b"SRC 4\n#!")
    assert conn.next_event() is NEED_DATA
    assert busy(conn)
    conn.receive_data(b"x\n")
    assert conn.next_event() == events_of(b"SUBMIT\nSRC 4\n#!x\n")[0]
    assert not busy(conn)


# --- limits ------------------------------------------------------------------------


LIMIT = BadRequest("line longer than 16 bytes (the limit, sjq.maxline); closing", True)


@pytest.mark.parametrize("end", [b"\n", b"\r\n"])
def test_line_of_exactly_max_line_is_read(end: bytes) -> None:
    line = b"STATUS 123456789"
    assert len(line) == 16
    assert events_of(line + end, max_line=16) == [Status(123456789)]


def test_line_over_max_line_is_fatal() -> None:
    conn = ServerConnection(max_line=16)
    conn.receive_data(b"PING\nSTATUS 1234567890\nPING\n")
    assert drain(conn) == [Ping(), LIMIT]
    assert conn.next_event() == Closed()


def test_endless_line_is_refused_without_waiting_for_its_end() -> None:
    conn = ServerConnection(max_line=16)
    conn.receive_data(b"x" * 17)  # 16 bytes and a CR would still be a legal line
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"x")
    assert conn.next_event() == LIMIT
    assert conn.next_event() == Closed()


def test_option_lines_are_bounded_too() -> None:
    events = events_of(b"SUBMIT\nNAME " + b"n" * 20 + b"\nSRC 0\n", max_line=16)
    assert events == [LIMIT]


def test_default_limits() -> None:
    conn = ServerConnection()
    assert (conn.max_line, conn.max_src) == (65536, 16 * 1024 * 1024)
    line = b"STATUS " + b"0" * (65536 - 8) + b"1"
    assert events_of(line + b"\r\n") == [Status(1)]
    assert events_of(b"0" + line + b"\r\n")[0] == BadRequest(
        "line longer than 65536 bytes (the limit, sjq.maxline); closing", True
    )
