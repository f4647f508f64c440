"""SUBMIT: option lines, their error messages, the script body and its limits."""

from __future__ import annotations

import pytest

from sjq.protocol import (
    NEED_DATA,
    BadRequest,
    Closed,
    Ping,
    ServerConnection,
    ServerEvent,
    Submit,
    SubmitOptions,
)
from sjq.protocol._submit import CR_SHEBANG

SCRIPT = b"#!/bin/sh\necho hi\n"
SHEBANG = "Don't know how to run script (missing shebang)"


def drain(conn: ServerConnection) -> list[ServerEvent]:
    events: list[ServerEvent] = []
    while (event := conn.next_event()) is not NEED_DATA:
        events.append(event)
        if isinstance(event, Closed) or (isinstance(event, BadRequest) and event.fatal):
            break
    return events


def submit_events(
    *options: bytes, script: bytes = SCRIPT, after: bytes = b"PING\r\n", **limits: int
) -> list[ServerEvent]:
    """The events of one SUBMIT followed by `after`, which must still be read."""
    stream = b"SUBMIT\r\n" + b"".join(o + b"\r\n" for o in options)
    stream += b"SRC %d\r\n" % len(script) + script + after
    conn = ServerConnection(**limits)
    conn.receive_data(stream)
    return drain(conn)


def submitted(*options: bytes, script: bytes = SCRIPT) -> SubmitOptions:
    events = submit_events(*options, script=script)
    assert events[1:] == [Ping()], events
    assert isinstance(events[0], Submit), events
    assert events[0].script == script
    return events[0].options


def error(*options: bytes, script: bytes = SCRIPT) -> str:
    events = submit_events(*options, script=script)
    assert events[1:] == [Ping()], events  # the stream stayed in sync
    assert isinstance(events[0], BadRequest), events
    assert not events[0].fatal
    return events[0].message


# --- good requests -----------------------------------------------------------------


def test_minimal_submit() -> None:
    assert submitted() == SubmitOptions()


def test_every_option() -> None:
    options = submitted(
        b"MEM 2G",
        b"PROCS 4",
        b"DEPENDS 1:2:30",
        b"STDOUT out.txt",
        b"STDERR /tmp/err.txt",
        b"ENV PATH=/bin:/usr/bin",
        b"ENV HOME=/home/me",
        b"CWD /home/me/run",
        b"NAME align sample 3",
        b"UID 1000",
        b"GID 100",
        b"HOLD",
        b"TIME 1:00:00",
        b"PRIORITY -5",
        b"PATTERNS",
        b"GPUS 2",
        b"RETRY 3",
        b"RETRYMEM 1.5",
    )
    assert options == SubmitOptions(
        mem=2 * 1024**3,
        procs=4,
        depends=(1, 2, 30),
        stdout="out.txt",
        stderr="/tmp/err.txt",
        env=(("PATH", "/bin:/usr/bin"), ("HOME", "/home/me")),
        cwd="/home/me/run",
        name="align sample 3",
        uid=1000,
        gid=100,
        hold=True,
        time_limit=3600.0,
        priority=-5,
        patterns=True,
        gpus=2,
        retry=3,
        retry_mem=1.5,
    )


def test_option_names_are_case_insensitive() -> None:
    options = submitted(b"mem 1g", b"Procs 2", b"hold", b"name x")
    assert options == SubmitOptions(mem=1024**3, procs=2, hold=True, name="x")
    lower = b"SUBMIT\nsrc 3\n#!x"
    conn = ServerConnection()
    conn.receive_data(lower)
    assert conn.next_event() == Submit(SubmitOptions(), b"#!x")


def test_lf_only_submit() -> None:
    conn = ServerConnection()
    conn.receive_data(b"submit\nNAME j\nSRC 10\n#!/bin/sh\nPING\n")
    assert drain(conn) == [Submit(SubmitOptions(name="j"), b"#!/bin/sh\n"), Ping()]


@pytest.mark.parametrize(
    ("value", "nbytes"),
    [
        (b"100M", 100 * 1024**2),
        (b"2G", 2 * 1024**3),
        (b"512K", 512 * 1024),
        (b"1.5G", 1536 * 1024**2),
        (b"1T", 1024**4),
        (b"1000", 1000),
        (b"0", 0),
        (b"9223372036854775807", 2**63 - 1),  # exact: not through a float
    ],
)
def test_mem(value: bytes, nbytes: int) -> None:
    assert submitted(b"MEM " + value).mem == nbytes


@pytest.mark.parametrize(("value", "seconds"), [(b"90s", 90.0), (b"90", 90.0), (b"2h", 7200.0)])
def test_time(value: bytes, seconds: float) -> None:
    assert submitted(b"TIME " + value).time_limit == seconds


@pytest.mark.parametrize(("value", "n"), [(b"0", 0), (b"10", 10), (b"-3", -3), (b"+2", 2)])
def test_priority(value: bytes, n: int) -> None:
    assert submitted(b"PRIORITY " + value).priority == n


@pytest.mark.parametrize(("value", "n"), [(b"0", 0), (b"1", 1), (b"8", 8)])
def test_gpus(value: bytes, n: int) -> None:
    assert submitted(b"GPUS " + value).gpus == n


def test_values_are_taken_verbatim() -> None:
    options = submitted(b"NAME  two  spaces ", b"CWD /tmp/with space")
    assert options.name == " two  spaces "
    assert options.cwd == "/tmp/with space"


def test_utf8_names_paths_env_and_script() -> None:
    script = "#!/usr/bin/env python3\nprint('héllo wörld ✓')\n".encode()
    options = submitted(
        "NAME データ解析".encode(),
        "CWD /home/josé/проект".encode(),
        "STDOUT résultat.txt".encode(),
        "ENV GREETING=¡hola!".encode(),
        script=script,
    )
    assert options.name == "データ解析"
    assert options.cwd == "/home/josé/проект"
    assert options.stdout == "résultat.txt"
    assert options.env == (("GREETING", "¡hola!"),)


def test_blank_option_lines_are_skipped() -> None:
    assert submitted(b"", b"NAME x", b"") == SubmitOptions(name="x")


# --- ENV ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lines", "env"),
    [
        ([b"ENV A=1"], (("A", "1"),)),
        ([b"ENV A="], (("A", ""),)),
        ([b"ENV A=x=y"], (("A", "x=y"),)),
        ([b"ENV A=1", b"env B=2"], (("A", "1"), ("B", "2"))),
        ([b"ENV _x9=a b c"], (("_x9", "a b c"),)),
        # 2014 client: the whole environment on one line, joined by commas.
        ([b"ENV A=1,B=2,C_3=x=y"], (("A", "1"), ("B", "2"), ("C_3", "x=y"))),
        ([b"ENV A=1,B=", b"ENV C=3"], (("A", "1"), ("B", ""), ("C", "3"))),
        # A piece that does not start with NAME= makes it one value with commas.
        ([b"ENV A=1,2,3"], (("A", "1,2,3"),)),
        ([b"ENV A=x,B=y,z"], (("A", "x,B=y,z"),)),
        ([b"ENV A=1,"], (("A", "1,"),)),
        ([b"ENV A=1,9B=2"], (("A", "1,9B=2"),)),
        # SETENV never splits.
        ([b"SETENV A=x,B=y"], (("A", "x,B=y"),)),
        ([b"ENV A=1", b"SETENV B=x,C=y"], (("A", "1"), ("B", "x,C=y"))),
        # ENV alone: an empty environment, as opposed to no ENV line at all.
        ([b"ENV"], ()),
        ([b"ENV "], ()),
        ([], None),
    ],
)
def test_env(lines: list[bytes], env: tuple[tuple[str, str], ...] | None) -> None:
    assert submitted(*lines).env == env


@pytest.mark.parametrize("value", [b"1A=x", b"A B=x", b"=x", b"noequals", b"A-B=1", b"\xc3\xa9=1"])
def test_env_bad_name(value: bytes) -> None:
    assert error(b"ENV " + value) == (
        f"ENV: expected NAME=VALUE, got {value.decode()!r}"
        " (NAME is letters, digits and _, not starting with a digit)"
    )


def test_setenv_bad_name() -> None:
    assert error(b"SETENV 1A=x").startswith("SETENV: expected NAME=VALUE, got '1A=x'")


# --- option errors -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"PROCS abc", "PROCS must be a whole number >= 1, got 'abc'"),
        (b"PROCS 0", "PROCS must be a whole number >= 1, got '0'"),
        (b"PROCS -2", "PROCS must be a whole number >= 1, got '-2'"),
        (b"PROCS 1.5", "PROCS must be a whole number >= 1, got '1.5'"),
        (b"MEM lots", "MEM: cannot read memory size 'lots' (expected e.g. 512M, 2G, 1.5G)"),
        (b"MEM -1G", "MEM: cannot read memory size '-1G' (expected e.g. 512M, 2G, 1.5G)"),
        (b"MEM 99999999999T", "MEM: memory size '99999999999T' is too large"),
        (b"DEPENDS x", "DEPENDS: 'x' is not a job id"),
        (b"DEPENDS 1:x:3", "DEPENDS: 'x' is not a job id"),
        (b"DEPENDS 1:0", "DEPENDS: '0' is not a job id"),
        (b"DEPENDS 1,2", "DEPENDS: '1,2' is not a job id"),
        (b"DEPENDS 1::2", "DEPENDS: empty job id in '1::2' (expected ids like 3:4:5)"),
        (b"DEPENDS 1:", "DEPENDS: empty job id in '1:' (expected ids like 3:4:5)"),
        (b"FOO 1", "unknown option FOO"),
        (b"foo", "unknown option foo"),
        (b"SRCX 3", "unknown option SRCX"),
        (b"HOLD x", "HOLD takes no value, got 'x'"),
        (b"PATTERNS yes", "PATTERNS takes no value, got 'yes'"),
        (b"UID -1", "UID must be a whole number from 0 to 4294967294, got '-1'"),
        (b"UID 4294967295", "UID must be a whole number from 0 to 4294967294, got '4294967295'"),
        (b"GID root", "GID must be a whole number from 0 to 4294967294, got 'root'"),
        (
            b"TIME soon",
            "TIME: cannot read duration 'soon' (expected e.g. 30, 90s, 5m, 2h, 1-00:00:00)",
        ),
        (b"TIME 0", "TIME must be a duration above zero, e.g. 90s or 1:00:00, got '0'"),
        (
            b"TIME " + b"9" * 400,
            "TIME '" + "9" * 40 + "'... is too large (at most 100 years, 36500-00:00:00)",
        ),
        (
            b"TIME 99999999-00:00:00",
            "TIME '99999999-00:00:00' is too large (at most 100 years, 36500-00:00:00)",
        ),
        (
            b"TIME " + b"9" * 400 + b"-1",
            "TIME '" + "9" * 40 + "'... is too large (at most 100 years, 36500-00:00:00)",
        ),
        (b"TIME 36501d", "TIME '36501d' is too large (at most 100 years, 36500-00:00:00)"),
        (b"PRIORITY high", "PRIORITY must be a whole number, e.g. 10 or -5, got 'high'"),
        (b"PRIORITY 1.5", "PRIORITY must be a whole number, e.g. 10 or -5, got '1.5'"),
        (b"GPUS two", "GPUS must be a whole number >= 0, got 'two'"),
        (b"GPUS -1", "GPUS must be a whole number >= 0, got '-1'"),
        (b"GPUS 1.5", "GPUS must be a whole number >= 0, got '1.5'"),
        (b"RETRY -1", "RETRY must be a whole number >= 0, got '-1'"),
        (b"RETRY 1.5", "RETRY must be a whole number >= 0, got '1.5'"),
        (b"RETRYMEM 0.9", "RETRYMEM must be a number from 1 to 1000, e.g. 2 or 1.5, got '0.9'"),
        (b"RETRYMEM 1e3", "RETRYMEM must be a number from 1 to 1000, e.g. 2 or 1.5, got '1e3'"),
        (b"RETRYMEM inf", "RETRYMEM must be a number from 1 to 1000, e.g. 2 or 1.5, got 'inf'"),
        (b"RETRYMEM 1001", "RETRYMEM must be a number from 1 to 1000, e.g. 2 or 1.5, got '1001'"),
        (b"NAME", "NAME needs a value"),
        (b"CWD ", "CWD needs a value"),
        (b"MEM", "MEM needs a value"),
        (b"DEPENDS", "DEPENDS needs a value"),
        (b"SETENV", "SETENV needs a value"),
        (b"NAME a\x00b", "NAME: value must not contain a NUL character"),
        (b"ENV A=\x00", "ENV: value must not contain a NUL character"),
        (b"NAME \xff\xfe", "NAME: value is not valid UTF-8"),
        (b"PROCS 1\r", "PROCS must be a whole number >= 1, got '1\\r'"),
    ],
)
def test_option_error(line: bytes, message: str) -> None:
    assert error(line) == message


def test_ids_uids_do_not_exceed_their_types() -> None:
    assert submitted(b"UID 0", b"GID 4294967294") == SubmitOptions(uid=0, gid=4294967294)
    assert submitted(b"DEPENDS 9223372036854775807").depends == (2**63 - 1,)
    assert error(b"DEPENDS 9223372036854775808") == (
        "DEPENDS: '9223372036854775808' is not a job id"
    )


def test_duplicate_option() -> None:
    assert error(b"PROCS 1", b"procs 2") == "PROCS given more than once"
    assert error(b"HOLD", b"HOLD") == "HOLD given more than once"


def test_submit_with_an_argument_still_consumes_the_request() -> None:
    conn = ServerConnection()
    conn.receive_data(b"SUBMIT now\r\nSRC 12\r\n#!/bin/sh\nx\nPING\r\n")
    assert drain(conn) == [BadRequest("SUBMIT takes no argument, got 'now'"), Ping()]


def test_all_errors_in_one_reply_in_line_order() -> None:
    message = error(b"PROCS abc", b"MEM lots", b"NAME ok", b"FOO 1", b"HOLD x", script=b"echo")
    assert message == "; ".join(
        [
            "PROCS must be a whole number >= 1, got 'abc'",
            "MEM: cannot read memory size 'lots' (expected e.g. 512M, 2G, 1.5G)",
            "unknown option FOO",
            "HOLD takes no value, got 'x'",
            SHEBANG,
        ]
    )


def test_many_errors_are_counted_not_listed() -> None:
    message = error(*[b"BAD%d 1" % i for i in range(15)])
    assert message.split("; ") == [f"unknown option BAD{i}" for i in range(10)] + [
        "and 5 more errors"
    ]
    assert error(*[b"BAD%d 1" % i for i in range(11)]).endswith("; and 1 more error")


def test_long_bad_values_are_shortened_in_messages() -> None:
    message = error(b"PROCS " + b"9x" * 1000, b"MEM " + b"m" * 1000, b"Z" * 1000)
    assert len(message) < 400
    assert message.startswith("PROCS must be a whole number >= 1, got '9x9x")
    assert "..." in message


def test_error_comes_after_the_body() -> None:
    conn = ServerConnection()
    conn.receive_data(b"SUBMIT\r\nPROCS x\r\nSRC 10\r\n#!/bi")
    assert conn.next_event() is NEED_DATA  # no ERROR before the body is in
    conn.receive_data(b"n/sh\nSTATUS\r\n")
    assert drain(conn)[0] == BadRequest("PROCS must be a whole number >= 1, got 'x'")


# --- script body -------------------------------------------------------------------


@pytest.mark.parametrize(
    "script",
    [
        b"#!/bin/sh",
        b"#!/bin/bash -e\necho a\r\necho b\r\n",  # CRs after the #! line are the job's
        b"#!/bin/sh\nPING\nSHUTDOWN\r\nSUBMIT\nSRC 5\n\n\r\nEXIT\n",
        b"#!/bin/sh\nexit 0\n\x00\xff\xfe binary \x80",
        b"  \n\t#!/bin/sh\n",
        b"#!",
    ],
)
def test_script_bytes_are_kept_exactly(script: bytes) -> None:
    events = submit_events(script=script)
    assert events == [Submit(SubmitOptions(), script), Ping()]


@pytest.mark.parametrize("script", [b"", b"echo hi\n", b"#", b"\n#\n!", b"\xef\xbb\xbf#!/bin/sh"])
def test_missing_shebang(script: bytes) -> None:
    assert error(script=script) == SHEBANG


@pytest.mark.parametrize("size", [0, 1, 2, 63, 64])
def test_body_size_up_to_max_src(size: int) -> None:
    script = (b"#!" + b"x" * 64)[:size]
    events = submit_events(script=script, max_src=64)
    expected = Submit(SubmitOptions(), script) if size >= 2 else BadRequest(SHEBANG)
    assert events == [expected, Ping()]


@pytest.mark.parametrize("size", [65, 10**6, 10**30])
def test_body_over_max_src_is_fatal(size: int) -> None:
    conn = ServerConnection(max_src=64)
    conn.receive_data(b"SUBMIT\r\nSRC %d\r\n#!/bin/sh\nPING\n" % size)
    shown = str(size) if size < 10**20 else str(size)[:20] + "..."
    assert drain(conn) == [
        BadRequest(
            f"SRC: script length {shown} is over the limit of 64 bytes (sjq.maxsrc); closing",
            True,
        )
    ]
    assert conn.next_event() == Closed()


@pytest.mark.parametrize("arg", [b"", b" ", b" abc", b" -1", b" 1.5", b" 0x10", b" \xff", b"  "])
def test_unreadable_src_length_is_fatal(arg: bytes) -> None:
    conn = ServerConnection()
    conn.receive_data(b"SUBMIT\r\nNAME x\r\nSRC" + arg + b"\r\n#!/bin/sh\nPING\n")
    events = drain(conn)
    assert len(events) == 1
    assert isinstance(events[0], BadRequest)
    assert events[0].fatal
    assert events[0].message.startswith("SRC: cannot read script length")
    assert conn.next_event() == Closed()


def test_src_length_with_spaces_and_zeros() -> None:
    conn = ServerConnection()
    conn.receive_data(b"SUBMIT\nSRC  0003 \n#!x")
    assert conn.next_event() == Submit(SubmitOptions(), b"#!x")


def test_option_lines_in_all_are_bounded_by_max_src() -> None:
    conn = ServerConnection(max_src=100)
    conn.receive_data(b"SUBMIT\n" + b"ENV A=123456789\n" * 7)
    assert conn.next_event() == BadRequest(
        "SUBMIT option lines longer than 100 bytes in all; closing", True
    )


def test_large_body() -> None:
    script = b"#!/bin/sh\n" + b"echo line\r\n" * 200_000
    conn = ServerConnection()
    conn.receive_data(b"SUBMIT\r\nSRC %d\r\n" % len(script))
    for i in range(0, len(script), 65536):
        assert conn.next_event() is NEED_DATA
        conn.receive_data(script[i : i + 65536])
    assert conn.next_event() == Submit(SubmitOptions(), script)


@pytest.mark.parametrize(
    "script", [b"#!/bin/sh\r\necho hi\r\n", b"  #!/bin/bash -e\r\n", b"#!/bin/sh\r"]
)
def test_a_shebang_line_with_windows_line_ends_is_refused_with_a_hint(script: bytes) -> None:
    conn = ServerConnection()
    conn.receive_data(b"SUBMIT\nSRC %d\n" % len(script) + script)
    assert drain(conn) == [BadRequest(CR_SHEBANG)]
    assert "dos2unix" in CR_SHEBANG
