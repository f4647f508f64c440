"""Bad SUBMITs and bad bytes against a real daemon: one ERROR line naming the problem, and the
stream stays in sync (a PING on the same connection answers) or is closed cleanly."""

from __future__ import annotations

import os
import random
import socket
from pathlib import Path

import pytest
from support import NOBODY, SH, Daemon, Raw, as_nobody, read_when, submit_bytes, wait_for

# A body that would produce replies of its own if the daemon lost track of where it ends.
BODY = SH + "PING\nSTATUS\nPING\n"


def submit_error(d: Daemon, script: str | bytes = BODY, **options: str | bool) -> bytes:
    """Send one SUBMIT that must fail; return its ERROR line after checking the stream is in
    sync: the very next line on the connection answers a PING."""
    with Raw(d.socket) as c:
        reply = c.submit(script, **options)
        assert reply.startswith(b"ERROR "), reply
        assert reply.count(b"\r\n") == 1
        assert c.request("PING").startswith(b"OK "), "stream out of sync after the error"
        return reply


BAD_VALUES = [
    ({"procs": "x"}, b"PROCS must be a whole number >= 1, got 'x'"),
    ({"procs": "0"}, b"PROCS must be a whole number >= 1, got '0'"),
    ({"procs": "1.5"}, b"PROCS must be a whole number >= 1, got '1.5'"),
    ({"procs": "3"}, b"PROCS 3 is more than the 2 CPUs this daemon manages (sjq.maxprocs)"),
    ({"mem": "lots"}, b"MEM: "),
    ({"mem": "1Q"}, b"MEM: "),
    ({"mem": "9G"}, b"(sjq.maxmem)"),
    ({"depends": "99999"}, b"DEPENDS: there is no job 99999"),
    ({"depends": "1:x"}, b"DEPENDS: 'x' is not a job id"),
    ({"depends": "1::2"}, b"DEPENDS: empty job id in '1::2'"),
    ({"depends": "-1"}, b"DEPENDS: '-1' is not a job id"),
    ({"uid": "abc"}, b"UID must be a whole number"),
    ({"gid": "-5"}, b"GID must be a whole number"),
    ({"hold": "yes"}, b"HOLD takes no value, got 'yes'"),
    ({"name": ""}, b"NAME needs a value"),
    ({"env": ["not an assignment"]}, b"ENV: expected NAME=VALUE"),
]


@pytest.mark.parametrize(
    ("options", "words"),
    BAD_VALUES,
    ids=[",".join(f"{k}={v}" for k, v in o.items()) for o, _ in BAD_VALUES],
)
def test_bad_option_value(shared_daemon: Daemon, options: dict[str, str], words: bytes) -> None:
    reply = submit_error(shared_daemon, **options)
    assert words in reply, reply


def test_mem_over_maxmem_names_both_sizes(shared_daemon: Daemon) -> None:
    reply = submit_error(shared_daemon, mem="9G")
    assert reply.startswith(b"ERROR MEM 9"), reply
    assert b"8" in reply
    assert b"sjq.maxmem" in reply


def test_unknown_option_is_named(shared_daemon: Daemon) -> None:
    assert submit_error(shared_daemon, frobnicate="1") == b"ERROR unknown option FROBNICATE\r\n"
    with Raw(shared_daemon.socket) as c:
        c.send(b"SUBMIT\nColour blue\nSRC %d\n%b" % (len(BODY), BODY.encode()))
        assert c.line() == b"ERROR unknown option Colour\r\n"
        assert c.request("PING").startswith(b"OK ")


def test_missing_shebang_is_the_spec_text(shared_daemon: Daemon) -> None:
    for script in ("echo hi\nPING\n", "", "#/bin/sh\n", " \n!#/bin/sh\n"):
        reply = submit_error(shared_daemon, script)
        assert reply == b"ERROR Don't know how to run script (missing shebang)\r\n", script


def test_several_errors_on_one_line(shared_daemon: Daemon) -> None:
    reply = submit_error(shared_daemon, "no shebang\n", procs="x", mem="y", bogus="1")
    parts = reply[len(b"ERROR ") : -2].split(b"; ")
    assert len(parts) == 4, reply
    assert parts[0].startswith(b"PROCS")
    assert parts[1].startswith(b"MEM")
    assert parts[2] == b"unknown option BOGUS"
    assert parts[3] == b"Don't know how to run script (missing shebang)"


def test_submit_with_an_argument_is_refused_and_consumed(shared_daemon: Daemon) -> None:
    with Raw(shared_daemon.socket) as c:
        c.send(b"SUBMIT now\nSRC %d\n%b" % (len(BODY), BODY.encode()))
        reply = c.line()
        assert reply.startswith(b"ERROR SUBMIT takes no argument"), reply
        assert c.request("PING").startswith(b"OK ")


def test_uid_and_gid_equal_to_the_peers_own_are_accepted(shared_daemon: Daemon) -> None:
    d = shared_daemon
    jid = d.submit(SH + "id -u; id -g\n", uid=str(os.getuid()), gid=str(os.getgid()))
    d.wait_state(jid, "S")
    assert (d.jobs_dir / f"{jid}.stdout").read_text() == f"{os.getuid()}\n{os.getgid()}\n"


# -- a peer that is not root, on a root daemon -------------------------------------------------


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
def test_non_root_peer_may_not_choose_another_uid(public_daemon: Daemon) -> None:
    d = public_daemon
    script = b"#!/bin/sh\nPING\n"
    replies = as_nobody(
        d.socket,
        submit_bytes(script, uid="0")
        + submit_bytes(script, gid="0")
        + submit_bytes(script, uid=str(NOBODY), gid=str(NOBODY), hold="")
        + b"PING\n",
        4,
    )
    assert replies[0] == b"ERROR UID 0: only root may run jobs as another user or group\r\n"
    assert replies[1] == b"ERROR GID 0: only root may run jobs as another user or group\r\n"
    assert replies[2] == b"OK 1\r\n"
    assert replies[3] == b"OK U:1\r\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
def test_root_daemon_runs_a_non_root_peers_job_as_that_user(
    public_daemon: Daemon, public_dir: Path
) -> None:
    d = public_daemon
    work = public_dir / "work"
    work.mkdir(mode=0o777)
    work.chmod(0o777)
    script = b'#!/bin/sh\nid -u\nid -g\ntouch "$TMPDIR/x" && echo tmp ok\n'
    assert as_nobody(d.socket, submit_bytes(script, cwd=str(work)), 1) == [b"OK 1\r\n"]
    d.wait_state(1, "SFE")
    assert (d.info(1)["state"], d.info(1)["reason"]) == ("S", "")
    assert read_when(work / "1.stdout") == f"{NOBODY}\n{NOBODY}\ntmp ok\n"


# -- bounds and garbage ---------------------------------------------------------------------


def test_over_long_line_is_refused_and_closed(shared_daemon: Daemon) -> None:
    for data in (b"PING " + b"x" * 2000 + b"\n", b"y" * 1500):  # with and without its LF
        with Raw(shared_daemon.socket) as c:
            c.send(data)
            assert c.line() == (
                b"ERROR line longer than 1024 bytes (the limit, sjq.maxline); closing\r\n"
            )
            assert wait_for(c.closed, what="the connection to close")


def test_over_long_option_line_is_refused_and_closed(shared_daemon: Daemon) -> None:
    with Raw(shared_daemon.socket) as c:
        c.send(b"SUBMIT\nNAME " + b"n" * 1100 + b"\nSRC 10\n#!/bin/sh\n")
        assert c.line().startswith(b"ERROR line longer than 1024 bytes")
        assert wait_for(c.closed, what="the connection to close")


def test_src_over_maxsrc_is_refused_and_closed(shared_daemon: Daemon) -> None:
    with Raw(shared_daemon.socket) as c:
        c.send(b"SUBMIT\nSRC 5000\n#!/bin/sh\n")
        assert c.line() == (
            b"ERROR SRC: script length 5000 is over the limit of 4096 bytes (sjq.maxsrc);"
            b" closing\r\n"
        )
        assert wait_for(c.closed, what="the connection to close")
    body = SH + "#" * (4096 - len(SH) - 1) + "\n"  # exactly at the limit: fine
    jid = shared_daemon.submit(body, hold=True)
    assert shared_daemon.req(f"KILL {jid}") == b"OK\r\n"


def test_unreadable_src_length_is_refused_and_closed(shared_daemon: Daemon) -> None:
    with Raw(shared_daemon.socket) as c:
        c.send(b"SUBMIT\nSRC ten\n#!/bin/sh\nPING\n")
        assert c.line().startswith(b"ERROR SRC: cannot read script length 'ten'")
        assert wait_for(c.closed, what="the connection to close")


GARBAGE_LINES = [
    b"\x00\x01\x02",
    b"\xff\xfe\xfd\xfc",
    bytes(range(0x80, 0x100)),
    bytes(b for b in range(1, 0x20) if b != 0x0A),
    b"\x1b[2J\x1b[H",
    b"KILL \xff\xfe",
    b"STATUS \x00",
    b"  \t ",
]


def test_garbage_lines_get_one_error_each(shared_daemon: Daemon) -> None:
    with Raw(shared_daemon.socket) as c:
        c.send(b"\n".join(GARBAGE_LINES) + b"\nPING\n")
        replies = [c.line() for _ in GARBAGE_LINES]
        assert replies[:5] == [b"ERROR Unknown command\r\n"] * 5
        assert replies[5] == b"ERROR Bad jobid\r\n"
        assert replies[6] == b"OK 0\r\n"  # STATUS of what is no job id names no job
        assert replies[7].startswith(b"ERROR "), replies
        assert c.line().startswith(b"OK ")


def test_random_bytes_get_replies_or_a_clean_close(shared_daemon: Daemon) -> None:
    rng = random.Random(20140101)
    for _ in range(5):
        data = rng.randbytes(rng.randrange(1, 3000))
        with Raw(shared_daemon.socket) as c:
            try:
                c.send(data)
                c.sock.shutdown(socket.SHUT_WR)
            except BrokenPipeError:
                pass  # closed already: also clean
            while True:
                try:
                    chunk = c.sock.recv(65536)
                except ConnectionResetError:
                    break
                if not chunk:
                    break
                c.buf += chunk
        for line in c.buf.split(b"\r\n")[:-1]:
            assert line.startswith((b"OK", b"ERROR")), (data, c.buf)
    assert shared_daemon.req("PING").startswith(b"OK ")
    assert shared_daemon.proc is not None
    assert shared_daemon.proc.poll() is None


# -- paths that would make a job fail at its start ------------------------------------------


def test_missing_directories_of_a_job_that_could_start_at_once_are_refused(
    shared_daemon: Daemon,
) -> None:
    d = shared_daemon
    reply = submit_error(d, SH, stdout="/x/o", stderr="/x/e", cwd="/x")
    assert reply == (
        b"ERROR stdout => /x/o does not exist; stderr => /x/e does not exist;"
        b" cwd => /x does not exist\r\n"
    )
    jobs = d.jobs_dir
    assert submit_error(d, SH, cwd=str(jobs), stdout="no/such/dir/o") == (
        f"ERROR stdout => {jobs}/no/such/dir/o does not exist\r\n".encode()
    )
    plain = jobs / "a-file"
    plain.write_text("")
    assert submit_error(d, SH, cwd=str(plain)) == (
        f"ERROR cwd => {plain} is not a directory\r\n".encode()
    )
    assert submit_error(d, SH, cwd=str(jobs), stderr=str(jobs)) == (
        f"ERROR stderr => {jobs} is a directory\r\n".encode()
    )


def test_a_refused_path_uses_no_job_id(shared_daemon: Daemon) -> None:
    d = shared_daemon
    first = d.submit(SH, hold=True)
    submit_error(d, SH, cwd="/no/such/dir")
    assert d.submit(SH, hold=True) == first + 1


def test_a_job_that_waits_may_name_a_directory_an_earlier_job_makes(
    shared_daemon: Daemon,
) -> None:
    d = shared_daemon
    out = d.jobs_dir / "made-later"
    maker = d.submit(SH + f"mkdir {out}\n", hold=True)
    user = d.submit(SH + "echo hello\n", depends=str(maker), stdout=str(out / "o"))
    held = d.submit(SH + "echo held\n", hold=True, stdout=str(out / "h"))
    d.req(f"RELEASE {maker}")
    d.wait_state(user, "S")
    assert read_when(out / "o") == "hello\n"
    d.req(f"RELEASE {held}")
    d.wait_state(held, "S")
    assert read_when(out / "h") == "held\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
def test_paths_are_checked_as_the_user_the_job_runs_as(
    public_daemon: Daemon, public_dir: Path
) -> None:
    d = public_daemon
    private = public_dir / "roots-own"  # root can write here, nobody cannot
    private.mkdir(mode=0o700)
    shared = public_dir / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    work = public_dir / "work"
    work.mkdir(mode=0o777)
    work.chmod(0o777)
    replies = as_nobody(
        d.socket,
        submit_bytes(SH.encode(), cwd=str(private))
        + submit_bytes(SH.encode(), cwd=str(shared))
        + submit_bytes(SH.encode(), cwd=str(work), stdout=str(shared / "o"))
        + b"PING\n",
        4,
    )
    assert replies[0] == (
        f"ERROR cwd => {private} cannot be entered (permission denied)\r\n".encode()
    )
    assert (
        replies[1]
        == (  # it may enter, but its default output goes there too
            f"ERROR stdout => {shared}/1.stdout cannot be created: {shared} is not writable;"
            f" stderr => {shared}/1.stderr cannot be created: {shared} is not writable\r\n"
        ).encode()
    )
    assert replies[2] == (
        f"ERROR stdout => {shared}/o cannot be created: {shared} is not writable\r\n".encode()
    )
    assert replies[3] == b"OK \r\n"  # none of them became a job


# -- STATUS never fails; TIME says when it is too large ---------------------------------------


@pytest.mark.parametrize("arg", ["abc", "0", "-1", "3:4", "1 2", "\u0665"])
def test_status_of_anything_that_names_no_job_is_ok_0(shared_daemon: Daemon, arg: str) -> None:
    with Raw(shared_daemon.socket) as c:
        assert c.request(f"STATUS {arg}") == b"OK 0\r\n"
        assert c.request("PING").startswith(b"OK ")


def test_a_time_limit_of_many_digits_is_too_large(shared_daemon: Daemon) -> None:
    reply = submit_error(shared_daemon, SH, time="9" * 100)
    assert reply == (
        b"ERROR TIME '" + b"9" * 40 + b"'... is too large (at most 100 years, 36500-00:00:00)\r\n"
    )
