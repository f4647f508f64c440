"""Where a job's output goes: PATTERNS (%j, %x ...), sjq.defaults.stdout/stderr, and the
directories the keeper creates for them."""

from __future__ import annotations

import os
import pwd
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
from support import NOBODY, SH, Daemon, Raw, as_nobody, read_when, submit_bytes

ENDED = "SFAKE"
ME = pwd.getpwuid(os.geteuid()).pw_name
HOST = socket.gethostname().split(".")[0]


def test_patterns_are_expanded_when_the_client_asks(shared_daemon: Daemon) -> None:
    d = shared_daemon
    jid = d.submit(
        SH + "echo out; echo err >&2\n",
        name="align/1",
        stdout="logs/%x.%j.out",
        stderr="logs/%u@%N/%A_%a.%4j.err",
        patterns=True,
    )
    assert d.wait_state(jid, ENDED) == "S"
    info = d.info(jid)
    out = d.jobs_dir / "logs" / f"align_1.{jid}.out"
    err = d.jobs_dir / "logs" / f"{ME}@{HOST}" / f"{jid}_0.{jid:04d}.err"
    assert (info["stdout"], info["stderr"]) == (str(out), str(err))
    assert out.read_text() == "out\n"
    assert err.read_text() == "err\n"


def test_without_patterns_a_path_means_what_it_says(shared_daemon: Daemon) -> None:
    """A 2014 client's STDOUT is a file name, % and all; its directory must exist."""
    d = shared_daemon
    jid = d.submit(SH + "echo literal\n", stdout="100%-%j.out")
    assert d.wait_state(jid, ENDED) == "S"
    assert (d.jobs_dir / "100%-%j.out").read_text() == "literal\n"
    with Raw(d.socket) as c:
        reply = c.submit(SH + "echo x\n", stdout="not-made/%j.out", cwd=str(d.jobs_dir))
    assert reply == f"ERROR stdout => {d.jobs_dir}/not-made/%j.out does not exist\r\n".encode()
    jid = d.submit(SH + "echo x\n", stdout="not-made/%j.out", hold=True)  # checked at start
    d.req(f"RELEASE {jid}")
    assert d.wait_state(jid, ENDED) == "E"
    assert "cannot open stdout file" in d.info(jid)["reason"]
    assert not (d.jobs_dir / "not-made").exists()


def test_a_directory_that_cannot_be_made_ends_the_job_in_e(shared_daemon: Daemon) -> None:
    d = shared_daemon
    (d.jobs_dir / "plain").write_text("a file, not a directory\n")
    jid = d.submit(SH + "echo x\n", stdout="plain/sub/%j.out", patterns=True)
    child = d.submit(SH, depends=str(jid))
    assert d.wait_state(jid, ENDED) == "E"
    info = d.info(jid)
    where = d.jobs_dir / "plain" / "sub"
    assert info["reason"] == f"cannot create the directory {where} for stdout: Not a directory"
    assert d.wait_state(child, ENDED) == "A"
    ok = d.submit(SH + "echo still serving\n", stdout="fine/%j.out", patterns=True)
    assert d.wait_state(ok, ENDED) == "S"
    assert (d.jobs_dir / "fine" / f"{ok}.out").read_text() == "still serving\n"


def test_directories_are_made_below_the_cwd_only(shared_daemon: Daemon, tmp_path: Path) -> None:
    """A pattern elsewhere whose directory is missing is more likely a typo: refused at once
    when the job could start at once, as a literal path is; E at its start if it waited."""
    d = shared_daemon
    elsewhere = tmp_path / "elsewhere"
    with Raw(d.socket) as c:
        reply = c.submit(SH, stdout=f"{elsewhere}/%j.out", patterns=True, cwd=str(d.jobs_dir))
    assert reply.startswith(f"ERROR stdout => {elsewhere}/".encode())
    assert reply.endswith(b".out does not exist\r\n")
    jid = d.submit(SH, stdout=f"{elsewhere}/%j.out", patterns=True, hold=True)
    d.req(f"RELEASE {jid}")
    assert d.wait_state(jid, ENDED) == "E"
    assert "cannot open stdout file" in d.info(jid)["reason"]
    assert not elsewhere.exists()
    # Below the working directory, spelled as an absolute path or with "..", is fine.
    jid = d.submit(
        SH + "echo hi\n",
        stdout=f"{d.jobs_dir}/abs/%j.out",
        stderr="up/../down/%j.err",
        patterns=True,
    )
    assert d.wait_state(jid, ENDED) == "S"
    assert (d.jobs_dir / "abs" / f"{jid}.out").read_text() == "hi\n"
    assert (d.jobs_dir / "down" / f"{jid}.err").exists()


def test_configured_defaults_are_patterns_too(daemon_factory: Callable[..., Daemon]) -> None:
    d = daemon_factory(
        defaults_stdout="sjq-logs/%x/%j.o", defaults_stderr="sjq-logs/%x/%j.o"
    ).start()
    # No STDOUT/STDERR, no PATTERNS: what a 2014 client sends.
    jid = d.submit(SH + "echo out; echo err >&2; echo out again\n", name="qc")
    assert d.wait_state(jid, ENDED) == "S"
    log = d.jobs_dir / "sjq-logs" / "qc" / f"{jid}.o"
    assert d.info(jid)["stdout"] == d.info(jid)["stderr"] == str(log)
    assert log.read_text() == "out\nerr\nout again\n"  # one file, not two that overwrite
    # A file the client names still wins, and a 2014 client's name is taken literally.
    jid = d.submit(SH + "echo mine\n", name="qc", stdout="%j.mine")
    assert d.wait_state(jid, ENDED) == "S"
    assert (d.jobs_dir / "%j.mine").read_text() == "mine\n"
    assert (d.jobs_dir / "sjq-logs" / "qc" / f"{jid}.o").read_text() == ""


def test_an_absolute_default_outside_the_cwd(
    daemon_factory: Callable[..., Daemon], tmp_path: Path
) -> None:
    d = daemon_factory(defaults_stdout=str(tmp_path / "all" / "%u" / "%j.out")).start()
    jid = d.submit(SH + "echo here\n")
    assert d.wait_state(jid, ENDED) == "S"
    assert (tmp_path / "all" / ME / f"{jid}.out").read_text() == "here\n"
    assert (d.jobs_dir / f"{jid}.stderr").exists()  # stderr keeps its default


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a job as another user")
def test_directories_are_made_as_the_jobs_user(public_daemon: Daemon, public_dir: Path) -> None:
    d = public_daemon
    work = public_dir / "work"
    work.mkdir(mode=0o777)
    work.chmod(0o777)
    closed = work / "closed"
    closed.mkdir(mode=0o755)  # root's: nobody may not create anything in it
    script = b"#!/bin/sh\nid -u\n"
    both = b"#!/bin/sh\necho a; echo b >&2; echo c\n"
    replies = as_nobody(
        d.socket,
        submit_bytes(script, cwd=str(work), stdout="logs/%u/%j.out", patterns="")
        + submit_bytes(script, cwd=str(work), stdout="closed/sub/%j.out", patterns="")
        + submit_bytes(both, cwd=str(work), stdout="one/%j.log", stderr="one/%j.log", patterns=""),
        3,
    )
    assert replies == [b"OK 1\r\n", b"OK 2\r\n", b"OK 3\r\n"]
    assert d.wait_state(3, ENDED) == "S"
    assert (work / "one" / "3.log").read_text() == "a\nb\nc\n"  # one file, not two that clash
    out = work / "logs" / "nobody" / "1.out"
    assert read_when(out) == f"{NOBODY}\n"
    assert d.wait_state(1, ENDED) == "S"
    for made in (work / "logs", work / "logs" / "nobody", out):
        assert made.stat().st_uid == NOBODY, made
    assert d.wait_state(2, ENDED) == "E"
    reason = d.info(2)["reason"]
    assert reason == f"cannot create the directory {closed}/sub for stdout: Permission denied"
    assert not (closed / "sub").exists()


def test_array_elements_fill_in_every_pattern(shared_daemon: Daemon) -> None:
    """An array's elements read STDOUT as patterns, PATTERNS or not (ARRAY is as new), with
    %A the array's first id and %a the index; missing directories are made for each."""
    d = shared_daemon
    with Raw(d.socket) as c:
        reply = c.submit(
            SH + "echo $SJQ_JOBID\n",
            name="sweep",
            array="4-6",
            stdout="arr/%x/%A_%2a.%j",
            cwd=str(d.jobs_dir),
        )
    first = int(reply.split()[1].split(b"-")[0])  # OK <first>-<last>
    for i, index in enumerate((4, 5, 6)):
        jid = first + i
        assert d.wait_state(jid, ENDED) == "S"
        out = d.jobs_dir / "arr" / "sweep" / f"{first}_{index:02d}.{jid}"
        assert d.info(jid)["stdout"] == str(out)
        assert out.read_text() == f"{jid}\n"
