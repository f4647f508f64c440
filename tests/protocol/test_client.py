"""encode_request, encode_reply and ReplyReader: the bytes on the wire, exactly."""

from __future__ import annotations

import pytest

from sjq.protocol import (
    NEED_DATA,
    Data,
    Error,
    Exit,
    Hold,
    Info,
    Kill,
    Ok,
    Ping,
    ProtocolError,
    Release,
    Reply,
    ReplyReader,
    Request,
    ServerConnection,
    Shutdown,
    Status,
    Stop,
    Submit,
    SubmitOptions,
    Wait,
    encode_reply,
    encode_request,
)

# --- encode_request ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_", "wire"),
    [
        (Ping(), b"PING\r\n"),
        (Exit(), b"EXIT\r\n"),
        (Shutdown(), b"SHUTDOWN\r\n"),
        (Stop(), b"STOP\r\n"),
        (Status(None), b"STATUS\r\n"),
        (Status(), b"STATUS\r\n"),
        (Status(12), b"STATUS 12\r\n"),
        (Kill(5), b"KILL 5\r\n"),
        (Release(6), b"RELEASE 6\r\n"),
        (Hold(7), b"HOLD 7\r\n"),
        (Info(()), b"INFO\r\n"),
        (Info((3,)), b"INFO 3\r\n"),
        (Info((3, 4, 5)), b"INFO 3:4:5\r\n"),
        (Wait((3, 4)), b"WAIT 3:4\r\n"),
        (Submit(SubmitOptions(), b"#!/bin/sh\n"), b"SUBMIT\r\nSRC 10\r\n#!/bin/sh\n"),
    ],
)
def test_encode_request(request_: Request, wire: bytes) -> None:
    assert encode_request(request_) == wire


def test_encode_submit_with_every_option() -> None:
    options = SubmitOptions(
        mem=2 * 1024**3,
        procs=4,
        depends=(1, 2),
        stdout="o.txt",
        stderr="e.txt",
        env=(("PATH", "/bin"), ("LIST", "a,b"), ("OPTS", "x,Y=1")),
        cwd="/tmp/ñ",
        name="job 1",
        uid=1000,
        gid=100,
        hold=True,
        time_limit=5400.0,
        priority=-2,
        patterns=True,
    )
    script = "#!/bin/sh\necho ✓\n".encode()
    assert encode_request(Submit(options, script)) == (
        b"SUBMIT\r\n"
        b"MEM 2147483648\r\n"
        b"PROCS 4\r\n"
        b"DEPENDS 1:2\r\n"
        b"STDOUT o.txt\r\n"
        b"STDERR e.txt\r\n"
        b"CWD /tmp/\xc3\xb1\r\n"
        b"NAME job 1\r\n"
        b"ENV PATH=/bin\r\n"
        b"ENV LIST=a,b\r\n"
        b"SETENV OPTS=x,Y=1\r\n"  # ENV would read it as two variables
        b"UID 1000\r\n"
        b"GID 100\r\n"
        b"HOLD\r\n"
        b"TIME 5400.0\r\n"
        b"PRIORITY -2\r\n"
        b"PATTERNS\r\n"
        b"SRC %d\r\n" % len(script) + script
    )


def test_encode_submit_edge_values() -> None:
    wire = encode_request(Submit(SubmitOptions(env=(), time_limit=1e-05), b"#!x"))
    assert wire == b"SUBMIT\r\nENV\r\nTIME 0.00001\r\nSRC 3\r\n#!x"
    wire = encode_request(Submit(SubmitOptions(time_limit=3.1e9, mem=0), b"#!x"))
    assert b"MEM 0\r\nTIME 3100000000.0\r\n" in wire


@pytest.mark.parametrize(
    "request_",
    [
        Status(0),
        Kill(0),
        Kill(-1),
        Release(2**63),
        Hold(0),
        Info((1, 0)),
        Wait(()),
        Submit(SubmitOptions(procs=0), b"#!x"),
        Submit(SubmitOptions(mem=-1), b"#!x"),
        Submit(SubmitOptions(depends=(0,)), b"#!x"),
        Submit(SubmitOptions(name=""), b"#!x"),
        Submit(SubmitOptions(name="a\nb"), b"#!x"),
        Submit(SubmitOptions(cwd="/a\x00b"), b"#!x"),
        Submit(SubmitOptions(stdout="\udcff"), b"#!x"),
        Submit(SubmitOptions(env=(("1A", "x"),)), b"#!x"),
        Submit(SubmitOptions(env=(("A", "x\ny"),)), b"#!x"),
        Submit(SubmitOptions(uid=-1), b"#!x"),
        Submit(SubmitOptions(gid=2**32 - 1), b"#!x"),
        Submit(SubmitOptions(time_limit=0.0), b"#!x"),
        Submit(SubmitOptions(time_limit=float("inf")), b"#!x"),
        Submit(SubmitOptions(time_limit=float("nan")), b"#!x"),
        Submit(SubmitOptions(priority=2**63), b"#!x"),
    ],
)
def test_encode_refuses_what_cannot_be_read_back(request_: Request) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        encode_request(request_)


def test_a_trailing_cr_in_a_value_survives() -> None:
    request_ = Submit(SubmitOptions(name="x\r", cwd="\r"), b"#!x")
    conn = ServerConnection()
    conn.receive_data(encode_request(request_))
    assert conn.next_event() == request_


# --- encode_reply ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "wire"),
    [
        (Ok(), b"OK\r\n"),
        (Ok(None), b"OK\r\n"),
        (Ok(""), b"OK \r\n"),
        (Ok("Q:3 R:2 S:10"), b"OK Q:3 R:2 S:10\r\n"),
        (Ok("BYE"), b"OK BYE\r\n"),
        (Ok("42"), b"OK 42\r\n"),
        (Data(b""), b"OK 0\r\n"),
        (Data(b"1\tsjqjob\tQ\t\r\n"), b"OK 13\r\n1\tsjqjob\tQ\t\r\n"),
        (Data("2\tné\tR\t1\r\n".encode()), b"OK 11\r\n2\tn\xc3\xa9\tR\t1\r\n"),
        (Error("Bad jobid"), b"ERROR Bad jobid\r\n"),
        (Error("Unknown command"), b"ERROR Unknown command\r\n"),
        (Error("a\r\nb\nc\rd"), b"ERROR a  b c d\r\n"),
        (Ok("x\ny"), b"OK x y\r\n"),
        (Error("ü"), b"ERROR \xc3\xbc\r\n"),
        (Error("\udcff"), b"ERROR ?\r\n"),
    ],
)
def test_encode_reply(reply: Reply, wire: bytes) -> None:
    assert encode_reply(reply) == wire
    assert ServerConnection().send(reply) == wire


# --- ReplyReader -------------------------------------------------------------------


def read(wire: bytes, expect_data: bool) -> Reply:
    reader = ReplyReader()
    reader.receive_data(wire)
    reply = reader.next_reply(expect_data)
    assert reply is not NEED_DATA
    return reply


@pytest.mark.parametrize(
    ("wire", "reply"),
    [
        (b"OK\r\n", Ok(None)),
        (b"OK \r\n", Ok("")),
        (b"OK 17\r\n", Ok("17")),
        (b"OK Q:3 R:2\r\n", Ok("Q:3 R:2")),
        (b"OK BYE\n", Ok("BYE")),
        (b"OK Goodbye!\r\n", Ok("Goodbye!")),  # the 2014 daemon's EXIT reply
        (b"ERROR Bad jobid\r\n", Error("Bad jobid")),
        (b"ERROR\r\n", Error("")),  # the 2014 daemon's bare ERROR
        (b"ERROR \r\n", Error("")),
    ],
)
def test_read_reply(wire: bytes, reply: Reply) -> None:
    assert read(wire, expect_data=False) == reply


def test_read_data() -> None:
    assert read(b"OK 5\r\nabcde", expect_data=True) == Data(b"abcde")
    assert read(b"OK 0\r\n", expect_data=True) == Data(b"")
    assert read(b"ERROR Bad jobid\r\n", expect_data=True) == Error("Bad jobid")
    payload = b"1\tj\tS\t\r\n2\tk\tH\t1\r\n"
    assert read(b"OK %d\r\n" % len(payload) + payload, expect_data=True) == Data(payload)


def test_pipelined_replies_byte_at_a_time() -> None:
    wire = b"OK 3\r\nOK 4\r\nOK\rxERROR Unknown command\r\nOK \r\n"
    expected: list[tuple[bool, Reply]] = [
        (False, Ok("3")),
        (True, Data(b"OK\rx")),
        (False, Error("Unknown command")),
        (False, Ok("")),
    ]
    reader = ReplyReader()
    got: list[Reply] = []
    feed = iter(wire[i : i + 1] for i in range(len(wire)))
    for expect_data, _ in expected:
        while (reply := reader.next_reply(expect_data)) is NEED_DATA:
            reader.receive_data(next(feed))
        got.append(reply)
    assert got == [r for _, r in expected]


@pytest.mark.parametrize(
    ("wire", "expect_data"),
    [
        (b"HELLO\r\n", False),
        (b"OKAY\r\n", False),
        (b"ok\r\n", False),
        (b"\r\n", False),
        (b"OK\r\n", True),
        (b"OK \r\n", True),
        (b"OK x\r\n", True),
        (b"OK -1\r\n", True),
        (b"OK " + b"9" * 5000 + b"\r\n", True),
        (b"OK \xff\r\n", False),
    ],
)
def test_malformed_reply(wire: bytes, expect_data: bool) -> None:
    reader = ReplyReader()
    reader.receive_data(wire)
    with pytest.raises(ProtocolError):
        reader.next_reply(expect_data)
    with pytest.raises(ProtocolError):  # the reader stays broken
        reader.next_reply(expect_data)


@pytest.mark.parametrize(
    ("wire", "expect_data"), [(b"", False), (b"OK", False), (b"OK 5\r\nab", True)]
)
def test_eof_before_a_complete_reply(wire: bytes, expect_data: bool) -> None:
    reader = ReplyReader()
    if wire:  # b"" would be the EOF itself
        reader.receive_data(wire)
    assert reader.next_reply(expect_data) is NEED_DATA
    reader.receive_data(b"")
    with pytest.raises(ProtocolError, match="closed the connection"):
        reader.next_reply(expect_data)


def test_endless_reply_line() -> None:
    reader = ReplyReader(max_line=10)
    reader.receive_data(b"OK " + b"x" * 20)
    with pytest.raises(ProtocolError, match="longer than 10 bytes"):
        reader.next_reply(False)
