"""Every verb against a real daemon: the exact reply bytes of the spec, framing, pipelining."""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Callable

from support import SH, Daemon, Gate, alive, exited, states, status, wait_for


def test_ping_with_no_jobs_is_ok_and_a_space(daemon: Daemon) -> None:
    with daemon.client() as c:
        c.send(b"PING\r\n")
        assert c.line() == b"OK \r\n"


def test_ping_counts_states_sorted_by_letter(daemon: Daemon, gate: Callable[[str], Gate]) -> None:
    g = gate("run")
    for _ in range(3):
        daemon.wait_state(daemon.submit(SH + "exit 0\n"), "S")
    running = [daemon.submit(SH + g.wait) for _ in range(2)]
    queued = daemon.submit(SH + "exit 0\n")
    for j in running:
        daemon.wait_state(j, "R")
    assert daemon.state(queued) == "Q"
    assert daemon.req("PING") == b"OK Q:1 R:2 S:3\r\n"
    g.open()
    wait_for(lambda: daemon.req("PING") == b"OK S:6\r\n", what="every job to succeed")


def test_exit_says_bye_and_closes(daemon: Daemon) -> None:
    with daemon.client() as c:
        c.send(b"EXIT\r\nPING\r\n")  # what follows EXIT is never answered
        assert c.line() == b"OK BYE\r\n"
        assert wait_for(c.closed, what="the connection to close")
        assert c.buf == b""


def test_submit_ids_count_up_and_rejected_submits_use_none(daemon: Daemon) -> None:
    with daemon.client() as c:
        assert c.submit(SH, hold=True) == b"OK 1\r\n"
        assert c.submit(SH, hold=True) == b"OK 2\r\n"
        assert c.submit("no shebang\n").startswith(b"ERROR ")
        assert c.submit(SH, procs="x").startswith(b"ERROR ")
        assert c.submit(SH, depends="77").startswith(b"ERROR ")
        assert c.submit(SH, hold=True) == b"OK 3\r\n"


def test_kill_replies_ok_for_any_well_formed_id(daemon: Daemon) -> None:
    done = daemon.submit(SH)
    daemon.wait_state(done, "S")
    with daemon.client() as c:
        assert c.request("KILL 12345") == b"OK\r\n"  # unknown
        assert c.request(f"KILL {done}") == b"OK\r\n"  # finished: stays S
        for bad in ("KILL abc", "KILL", "KILL 0", "KILL -3", "KILL 1.5", "KILL 1:2"):
            assert c.request(bad) == b"ERROR Bad jobid\r\n", bad
        assert c.request("PING") == b"OK S:1\r\n"
    assert daemon.state(done) == "S"


def test_release_replies_ok_for_any_well_formed_id(daemon: Daemon) -> None:
    jid = daemon.submit(SH, hold=True)
    with daemon.client() as c:
        assert c.request("RELEASE 999") == b"OK\r\n"
        assert c.request("RELEASE x") == b"ERROR Bad jobid\r\n"
        assert c.request(f"RELEASE {jid}") == b"OK\r\n"
    daemon.wait_state(jid, "S")
    assert daemon.req(f"RELEASE {jid}") == b"OK\r\n"  # finished: nothing happens
    assert daemon.state(jid) == "S"


def test_hold_replies_ok_and_holds(
    daemon_factory: Callable[..., Daemon], gate: Callable[[str], Gate]
) -> None:
    d = daemon_factory(maxprocs="1").start()
    g = gate("g")
    running = d.submit(SH + g.wait)
    queued = d.submit(SH)
    d.wait_state(running, "R")
    with d.client() as c:
        assert c.request(f"HOLD {queued}") == b"OK\r\n"
        assert c.request(f"HOLD {running}") == b"OK\r\n"  # a running job cannot be held
        assert c.request("HOLD 999") == b"OK\r\n"
        assert c.request("HOLD zz") == b"ERROR Bad jobid\r\n"
    assert states(d) == {running: "R", queued: "U"}


def test_status_records_are_ordered_and_exact(daemon: Daemon) -> None:
    with daemon.client() as c:
        c.send(b"STATUS\r\n")
        assert c.line() == b"OK 0\r\n"
    a = daemon.submit(SH, hold=True, name="first")
    b = daemon.submit(SH, hold=True, depends=str(a))
    more = [daemon.submit(SH, hold=True) for _ in range(9)]  # ids up to 11: 10 < 2 as text
    c3 = daemon.submit(SH, hold=True, depends=f"{a}:{b}", name="three")
    payload = status(daemon)
    want = (
        f"{a}\tfirst\tU\t\r\n"
        f"{b}\tsjqjob\tU\t{a}\r\n"
        + "".join(f"{i}\tsjqjob\tU\t\r\n" for i in more)
        + f"{c3}\tthree\tU\t{a}:{b}\r\n"
    ).encode()
    assert payload == want
    with daemon.client() as c:
        c.send(f"STATUS {c3}\r\n".encode())
        rec = f"{c3}\tthree\tU\t{a}:{b}\r\n".encode()
        assert c.line() == b"OK %d\r\n" % len(rec)
        assert c.payload(len(rec)) == rec
        assert c.request("STATUS 4242") == b"OK 0\r\n"
        for arg in ("nope", "abc", "0", "-1", "3:4", f"{a}:{b}"):
            assert c.request(f"STATUS {arg}") == b"OK 0\r\n", arg
        assert c.request("PING") == b"OK U:12\r\n"


def test_status_length_counts_utf8_bytes(daemon: Daemon) -> None:
    jid = daemon.submit(SH, hold=True, name="jöb ✓")
    with daemon.client() as c:
        c.send(f"STATUS {jid}\n".encode())
        rec = f"{jid}\tjöb ✓\tU\t\r\n".encode()
        assert c.line() == b"OK %d\r\n" % len(rec)
        assert c.payload(len(rec)) == rec
        assert c.request("PING") == b"OK U:1\r\n"


def test_a_tab_in_a_name_cannot_break_status_records(daemon: Daemon) -> None:
    with daemon.client() as c:
        reply = c.submit(SH, hold=True, name="left\tright")
        if reply.startswith(b"ERROR "):  # refusing such a name is a fine answer too
            assert b"NAME" in reply
            return
        c.send(b"STATUS\n")
        records = c.data().split(b"\r\n")[:-1]
    assert [len(r.split(b"\t")) for r in records] == [4]


def test_info_gives_json_lines(daemon: Daemon) -> None:
    a = daemon.submit(SH + "exit 4\n", name="four", mem="1M", procs="2")
    daemon.wait_state(a, "F")
    b = daemon.submit(SH, hold=True, depends=str(a))  # a failed: b is aborted at once
    with daemon.client() as c:
        c.send(f"INFO {a}:{b}\n".encode())
        rows = [json.loads(x) for x in c.data().decode().splitlines()]
        assert [r["id"] for r in rows] == [a, b]
        ra, rb = rows
        assert (ra["name"], ra["state"], ra["exit_code"], ra["procs"], ra["mem"]) == (
            "four",
            "F",
            4,
            2,
            1024 * 1024,
        )
        assert ra["started"]
        assert ra["ended"] >= ra["started"] >= ra["submitted"]
        assert (rb["state"], rb["depends"]) == ("A", [a])
        assert rb["reason"] == f"dependency {a} ended in F"
        c.send(b"INFO\n")
        assert [json.loads(x)["id"] for x in c.data().decode().splitlines()] == [a, b]
        assert c.request("INFO 777") == b"OK 0\r\n"
        assert c.request("INFO 1:x").startswith(b"ERROR Bad jobid")
        assert c.request("PING") == b"OK A:1 F:1\r\n"


def test_wait_replies_when_the_jobs_end(daemon: Daemon, gate: Callable[[str], Gate]) -> None:
    g = gate("g")
    ok = daemon.submit(SH + g.wait)
    bad = daemon.submit(SH + g.wait + "exit 1\n")
    daemon.wait_state(ok, "R")
    with daemon.client() as c:
        # PING first: once its reply is here, the daemon has read the WAIT behind it.
        c.send(f"PING\nWAIT {ok}:{bad}\n".encode())
        assert c.line().startswith(b"OK ")
        c.sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            assert c.sock.recv(100) == b"", "WAIT answered before the jobs ended"
        c.sock.settimeout(10)
        g.open()
        assert c.line() == f"OK {ok}:S {bad}:F\r\n".encode()
        assert c.request(f"WAIT {ok}") == f"OK {ok}:S\r\n".encode()  # already ended
        assert c.request("WAIT 999") == b"ERROR unknown job 999\r\n"
        assert c.request("WAIT").startswith(b"ERROR ")
        assert c.request("WAIT a:b").startswith(b"ERROR Bad jobid")
        assert c.request("PING") == b"OK F:1 S:1\r\n"


def test_unknown_verb_keeps_the_connection(daemon: Daemon) -> None:
    with daemon.client() as c:
        assert c.request("FROB 1") == b"ERROR Unknown command\r\n"
        assert c.request("PINGX") == b"ERROR Unknown command\r\n"
        assert c.request("PING") == b"OK \r\n"


def test_pipelined_requests_are_answered_in_order(daemon: Daemon) -> None:
    body = SH.encode()
    with daemon.client() as c:
        c.send(
            b"PING\nSUBMIT\nHOLD\nSRC %d\n%bSTATUS 1\nKILL 99\nFOO\nKILL 1\nPING\nSTATUS\n"
            % (len(body), body)
        )
        assert c.line() == b"OK \r\n"
        assert c.line() == b"OK 1\r\n"
        assert c.data() == b"1\tsjqjob\tU\t\r\n"
        assert c.line() == b"OK\r\n"
        assert c.line() == b"ERROR Unknown command\r\n"
        assert c.line() == b"OK\r\n"
        assert c.line() == b"OK K:1\r\n"
        assert c.data() == b"1\tsjqjob\tK\t\r\n"
        assert c.request("PING") == b"OK K:1\r\n"


def test_crlf_lf_and_case_insensitive_verbs_and_options(daemon: Daemon) -> None:
    body = b"#!/bin/sh\necho $SJQ_JOBNAME\n"
    with daemon.client() as c:
        c.send(b"ping\r\nPing\nPiNg\r\n")
        assert [c.line(), c.line(), c.line()] == [b"OK \r\n"] * 3
        c.send(
            b"submit\r\nname lower\r\nProcs 1\r\nmem 1m\r\ncwd %s\r\nsrc %d\r\n%b"
            % (str(daemon.jobs_dir).encode(), len(body), body)
        )
        assert c.line() == b"OK 1\r\n"
    daemon.wait_state(1, "S")
    assert (daemon.jobs_dir / "1.stdout").read_text() == "lower\n"
    info = daemon.info(1)
    assert (info["procs"], info["mem"]) == (1, 1024 * 1024)
    with daemon.client() as c:
        assert c.request("status 1\r") == b"OK 12\r\n"
        assert c.payload(12) == b"1\tlower\tS\t\r\n"
        assert c.request("kill 1") == b"OK\r\n"


def test_byte_at_a_time_submit(daemon: Daemon) -> None:
    body = b"#!/bin/sh\necho bytewise\n"
    req = b"SUBMIT\r\nCWD %s\r\nSRC %d\r\n%bPING\r\n" % (
        str(daemon.jobs_dir).encode(),
        len(body),
        body,
    )
    with daemon.client() as c:
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        for i in range(len(req)):
            c.send(req[i : i + 1])
        assert c.line() == b"OK 1\r\n"
        assert c.line().startswith(b"OK ")
    daemon.wait_state(1, "S")
    assert (daemon.jobs_dir / "1.stdout").read_text() == "bytewise\n"


def test_empty_line_closes_without_reply(daemon: Daemon) -> None:
    with daemon.client() as c:
        c.send(b"\r\nPING\n")
        assert wait_for(c.closed, what="the connection to close")
        assert c.buf == b""


def test_verbs_without_arguments_refuse_one(daemon: Daemon) -> None:
    with daemon.client() as c:
        for verb in ("PING", "EXIT", "SHUTDOWN", "STOP"):
            reply = c.request(f"{verb} 5")
            assert reply.startswith(b"ERROR "), reply
            assert verb.encode() in reply
        assert c.request("PING") == b"OK \r\n"
    assert daemon.proc is not None
    assert daemon.proc.poll() is None


def test_shutdown_kills_running_keeps_waiting_and_ids_go_on(
    daemon_factory: Callable[..., Daemon], gate: Callable[[str], Gate]
) -> None:
    d = daemon_factory(maxprocs="1").start()
    g1, g2 = gate("one"), gate("two")
    running = d.submit(SH + g1.wait)
    queued = d.submit(SH + g2.wait)
    held = d.submit(SH, hold=True)
    child = d.submit(SH, depends=str(queued))
    d.wait_state(running, "R")
    with d.client() as c:
        c.send(b"SHUTDOWN\r\nPING\r\n")
        assert c.line() == b"OK\r\n"
        assert wait_for(c.closed, what="the connection to close")
        assert c.buf == b""
    assert exited(d) == 0
    assert not (d.dir / "s.sock").exists()
    d2 = daemon_factory(maxprocs="1").start()  # same directory: same database
    assert d2.info(running)["state"] == "K"
    assert d2.info(running)["reason"] == "killed by shutdown"
    d2.wait_state(queued, "R")
    assert states(d2) == {running: "K", queued: "R", held: "U", child: "H"}
    assert d2.submit(SH, hold=True) == child + 1
    g2.open()
    d2.wait_state(child, "S")


def test_stop_leaves_running_jobs_to_the_next_daemon(
    daemon: Daemon, gate: Callable[[str], Gate]
) -> None:
    d = daemon
    g = gate("g")
    jid = d.submit(SH + g.wait + "echo done\n")
    d.wait_state(jid, "R")
    pid = wait_for(lambda: d.info(jid)["pid"])
    assert d.req("STOP") == b"OK\r\n"
    assert exited(d) == 0
    assert (d.jobs_dir / f"{jid}.stdout").exists()
    assert alive(pid)
    d.start()  # the next daemon, on the same files
    assert d.state(jid) == "R"
    g.open()
    d.wait_state(jid, "S")
    assert (d.jobs_dir / f"{jid}.stdout").read_text() == "done\n"
