"""The `sjq` commands other than submit, and what every command shares (help, errors, exits)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from support import Cli, Daemon, Gate, Result, client_env, wait_for

import sjq

ENDED = "SFAKE"
COMMANDS = [
    "submit",
    "status",
    "state",
    "info",
    "wait",
    "stats",
    "kill",
    "hold",
    "release",
    "pause",
    "resume",
    "ping",
    "shutdown",
]


def test_version() -> None:
    p = subprocess.run(
        [sys.executable, "-m", "sjq_client", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert p.stdout == f"sjq {sjq.__version__}\n"


@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_every_command_has_help_with_examples(
    command: str, sjq_main: Callable[..., Result]
) -> None:
    r = sjq_main(*([command] if command else []), "--help")
    assert r.code == 0
    assert r.out.startswith(f"usage: sjq {command}".rstrip() + " ")
    assert "\nexamples:\n  " in r.out
    assert r.err == ""
    assert max(map(len, r.out.splitlines())) <= 100  # fits a terminal
    if command:
        assert sjq_main("help", command).out == r.out


def test_server_is_the_daemons_own_command_line(tmp_path: Path) -> None:
    r = Cli(client_env(tmp_path), tmp_path)("server", "--help")
    assert r.code == 0
    assert r.out.startswith("usage: sjq server")
    assert "--foreground" in r.out


def test_usage_errors_exit_2(sjq_main: Callable[..., Result]) -> None:
    cases = [
        ([], "give a command"),
        (["sbumit"], "did you mean submit?"),
        (["--bogus", "status"], "unknown option --bogus"),
        (["-S"], "-S needs a value"),
        (["status", "--jsno"], "did you mean --json?"),
        (["kill"], "give at least one job id"),
        (["state"], "give at least one job id"),
        (["state", "3", "--json"], "unknown option --json"),
        (["kill", "0"], "not a job id"),
        (["wait", "3-1"], "bad id range"),
        (["wait", "--timeout", "soon", "3"], "--timeout"),
        (["status", "--state", "bogus"], "unknown state 'bogus'"),
        (["ping", "extra"], "unexpected argument"),
        (["help", "nothing"], "no command"),
    ]
    for args, message in cases:
        r = sjq_main(*args)
        assert r.code == 2, (args, r)
        assert message in r.err, (args, r.err)
        assert r.out == ""


def test_a_bad_config_is_a_usage_error(sjq_main: Callable[..., Result], tmp_path: Path) -> None:
    rc = tmp_path / "bad.rc"
    rc.write_text("sjq.maxprocs = many\n")
    r = sjq_main("ping", SJQ_CONFIG=str(rc))
    assert r.code == 2
    assert "bad.rc:1: sjq.maxprocs" in r.err


def test_commands_that_need_a_daemon_say_none_is_running(
    sjq_main: Callable[..., Result], tmp_path: Path
) -> None:
    sock = str(tmp_path / "none.sock")
    # The commands about named jobs start a daemon instead (test_autostart.py).
    for args in (["status"], ["status", "--all"], ["ping"], ["shutdown"]):
        r = sjq_main(*args, SJQ_SOCKET=sock)
        assert r.code == 1, (args, r)
        assert f"no sjq daemon is running on {sock}" in r.err
        assert "sjq server -d" in r.err
    assert not os.path.exists(sock)  # and none was started


def test_global_options_name_the_socket(daemon: Daemon, tmp_path: Path) -> None:
    cli = Cli(client_env(tmp_path), tmp_path)  # no SJQ_SOCKET
    assert cli.ok("-S", daemon.socket, "ping").startswith(f"sjq daemon on {daemon.socket}:")
    assert cli.ok(f"--socket={daemon.socket}", "ping").startswith("sjq daemon on")
    assert cli.ok("ping", "--socket", daemon.socket).startswith("sjq daemon on")
    rc = tmp_path / "named.rc"
    rc.write_text(f"sjq.socket = {daemon.socket}\n")
    assert cli.ok("-c", str(rc), "ping").startswith("sjq daemon on")
    assert cli.ok("ping", "--config", str(rc)).startswith("sjq daemon on")


def test_status_table_summary_and_filters(
    cli: Cli, daemon: Daemon, gate: Callable[..., Gate]
) -> None:
    g = gate()
    running = cli.submit("-n", "runner", "-m", "1G", "-", input="#!/bin/sh\n" + g.wait)
    done = cli.submit("--", "true")
    failed = cli.submit("-n", "failing", "--", "sh", "-c", "exit 3")
    held = cli.submit("--hold", "--", "true")
    daemon.wait_state(running, "R")
    daemon.wait_state(failed, ENDED)
    daemon.wait_state(done, ENDED)

    out = cli.ok("status")
    lines = out.splitlines()
    assert lines[0].split() == [
        "ID", "NAME", "STATE", "PROCS", "MEM", "SUBMITTED", "STARTED", "ELAPSED", "EXIT",
    ]  # fmt: skip
    rows = {int(line.split()[0]): line.split() for line in lines[1:-1]}
    assert set(rows) == {running, held}  # jobs that have not ended
    assert rows[running][1:5] == ["runner", "running", "1", "1G"]
    assert rows[held][2] == "held"
    assert rows[held][6:] == ["-", "-", "-"]  # not started: no start, elapsed or exit
    assert lines[-1] == (
        "queue: 1 running, 1 held, 1 done, 1 failed (2 ended not shown; --all shows them)"
    )

    rows = {
        int(line.split()[0]): line.split() for line in cli.ok("status", "--all").splitlines()[1:-1]
    }
    assert set(rows) == {running, done, failed, held}
    assert rows[failed][2] == "failed"
    assert rows[failed][-1] == "3"
    assert rows[done][-1] == "0"

    out = cli.ok("status", "--state", "F,held")
    assert sorted(int(x.split()[0]) for x in out.splitlines()[1:-1]) == [failed, held]

    out = cli.ok("status", str(done), str(failed))
    assert [int(x.split()[0]) for x in out.splitlines()[1:]] == [done, failed]  # ids: no summary

    records = json.loads(cli.ok("status", "--json", "--all"))
    assert [r["id"] for r in records] == [running, done, failed, held]
    assert records[2]["state"] == "F"
    assert records[2]["exit_code"] == 3
    assert records[0]["mem"] == 1024**3

    r = cli("status", str(done), "999")
    assert r.code == 1
    assert "unknown job 999" in r.err
    assert str(done) in r.out
    g.open()


def test_status_of_an_empty_queue(cli: Cli) -> None:
    assert cli.ok("status") == "queue: no jobs\n"
    assert json.loads(cli.ok("status", "--json")) == []


def test_info_shows_everything(cli: Cli, daemon: Daemon) -> None:
    jid = cli.submit("-n", "info me", "-t", "1h", "--", "sh", "-c", "echo x; exit 4")
    daemon.wait_state(jid, ENDED)
    out = cli.ok("info", str(jid))
    assert out.startswith(f"job {jid}: info me\n")
    facts = dict(line.strip().split(None, 1) for line in out.splitlines()[1:] if "  " in line)
    assert facts["state"] == "failed (F): exit status 4"
    assert "peak" in out  # peak memory from wait4
    assert "  time limit  1:00:00\n" in out
    assert f"  stdout      {daemon.jobs_dir / f'{jid}.stdout'}\n" in out
    assert "  cpu time    " in out
    (record,) = json.loads(cli.ok("info", "--json", str(jid)))
    assert record["exit_code"] == 4
    assert record["reason"] == "exit status 4"
    r = cli("info", str(jid), "999")
    assert r.code == 1
    assert "unknown job 999" in r.err


def test_wait_exit_status_and_json(cli: Cli, daemon: Daemon, gate: Callable[..., Gate]) -> None:
    g = gate()
    ok = cli.submit("--", "true")
    bad = cli.submit("--", "false")
    slow = cli.submit("-", input="#!/bin/sh\n" + g.wait)
    assert cli("wait", str(ok)).code == 0
    r = cli("wait", "--json", f"{ok}:{bad}")
    assert r.code == 1
    assert json.loads(r.out) == {str(ok): "S", str(bad): "F"}
    assert f"job {bad} failed: exit status 1" in r.err
    r = cli("wait", "--timeout", "0.2", str(ok), str(slow))
    assert r.code == 124
    assert f"1 of 2 job(s) had not ended after 0.2 s: {slow}" in r.err
    g.open()
    assert cli("wait", str(slow)).code == 0
    r = cli("wait", "999")
    assert r.code == 1
    assert "unknown job 999" in r.err


def test_wait_shows_progress_on_a_terminal(
    cli: Cli, daemon: Daemon, gate: Callable[..., Gate]
) -> None:
    g = gate()
    first = cli.submit("--", "true")
    second = cli.submit("-", input="#!/bin/sh\n" + g.wait + "exit 2\n")
    master, slave = os.openpty()
    p = subprocess.Popen(
        [sys.executable, "-m", "sjq_client", "wait", str(first), str(second)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=slave,
        env=cli.env,
        cwd=cli.cwd,
    )
    os.close(slave)
    seen = b""

    def progressed() -> bool:
        nonlocal seen
        seen += os.read(master, 4096)
        return b"1 of 2 jobs ended (1 done)" in seen

    try:
        wait_for(progressed, what="a progress line")
        g.open()
        assert p.wait(15) == 1
        while b"failed: exit status 2" not in seen:
            seen += os.read(master, 4096)
    finally:
        if p.poll() is None:
            p.kill()
        os.close(master)
    assert b"\r\x1b[K" in seen  # redrawn in place, and cleared before the final report
    assert f"sjq: job {second} failed".encode() in seen


def test_kill_hold_release(cli: Cli, daemon: Daemon, gate: Callable[..., Gate]) -> None:
    g = gate()
    running = cli.submit("-", input="#!/bin/sh\n" + g.wait)
    daemon.wait_state(running, "R")
    a = cli.submit("--after", str(running), "--", "true")
    b = cli.submit("--hold", "--", "true")
    assert cli.ok("hold", str(a)) == ""
    assert daemon.state(a) == "U"
    assert cli.ok("release", f"{a},{b}") == ""
    assert daemon.state(a) == "H"
    assert daemon.wait_state(b, ENDED) == "S"
    assert cli.ok("kill", f"{running}-{a}", "999") == ""  # a range; an unknown id is ignored
    assert daemon.wait_state(running, ENDED) == "K"
    assert daemon.state(a) == "K"


def test_state_prints_the_three_words_of_generic_templates(
    cli: Cli, daemon: Daemon, gate: Callable[..., Gate]
) -> None:
    """Snakemake's cluster-generic status command (and Makefiles, Nextflow-style shims)
    understand running, success and failed, one line; anything else breaks the workflow."""
    done = cli.submit("--", "true")
    failed = cli.submit("--", "false")
    error = daemon.submit("#!/nonexistent/sh\n")
    for jid in (done, failed, error):
        daemon.wait_state(jid, ENDED)
    aborted = cli.submit("--after", str(failed), "--", "true")
    killed = cli.submit("--hold", "--", "true")
    cli.ok("kill", str(killed))
    g = gate()
    running = [cli.submit("-", input="#!/bin/sh\n" + g.wait) for _ in range(2)]  # both CPUs
    queued = cli.submit("--", "true")
    waiting = cli.submit("--after", str(running[0]), "--", "true")
    held = cli.submit("--hold", "--", "true")
    for jid in running:
        daemon.wait_state(jid, "R")
    expect = {
        done: "success",
        failed: "failed",
        error: "failed",
        aborted: "failed",
        killed: "failed",
        running[0]: "running",
        queued: "running",
        waiting: "running",
        held: "running",
    }
    assert [daemon.state(j) for j in expect] == list("SFEAKRQHU")
    for jid, word in expect.items():
        assert cli("state", str(jid)) == Result(0, word + "\n", ""), jid
    # Several ids: one word a line, in the order given.
    ids = [str(j) for j in reversed(expect)]
    assert cli.ok("state", *ids) == "".join(expect[int(j)] + "\n" for j in ids)
    # An id the daemon does not know is an error, and nothing is printed for the others.
    for args in (["999"], [str(done), "999"]):
        r = cli("state", *args)
        assert (r.code, r.out) == (1, ""), args
        assert r.err == "sjq: unknown job 999 (never submitted, or forgotten: see sjq.keep)\n"
    g.open()


def test_ping_and_shutdown(cli: Cli, daemon: Daemon) -> None:
    assert cli.ok("ping") == f"sjq daemon on {daemon.socket}: no jobs\n"
    cli.submit("--", "true")
    cli.ok("wait", "1")
    assert cli.ok("ping") == f"sjq daemon on {daemon.socket}: 1 done\n"
    assert json.loads(cli.ok("ping", "--json")) == {"S": 1}
    assert cli.ok("shutdown") == ""
    assert not os.path.exists(daemon.socket)  # it returns once the daemon has gone
    assert daemon.proc is not None
    assert daemon.proc.wait(10) == 0


def test_a_daemon_error_reply_is_an_error(cli: Cli, daemon: Daemon) -> None:
    # Refusals are the daemon's: WAIT of an unknown job is answered ERROR.
    r = cli("wait", "1")
    assert r.code == 1
    assert r.err.startswith("sjq: unknown job 1")


def test_output_to_a_closed_pipe_is_not_a_traceback(cli: Cli, daemon: Daemon) -> None:
    for _ in range(3):
        cli.submit("--hold", "--", "true")
    p = subprocess.Popen(
        [sys.executable, "-m", "sjq_client", "status"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=cli.env,
    )
    assert p.stdout is not None
    p.stdout.close()  # the reader is gone before sjq writes
    assert p.wait(15) in (0, 1)
    assert p.stderr is not None
    assert b"Traceback" not in p.stderr.read()
    p.stderr.close()


def test_the_console_script_is_installed(daemon: Daemon, tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("sjq")
    if not script.exists():
        pytest.skip(f"no console script next to {sys.executable}: not pip-installed here")
    env = client_env(tmp_path, SJQ_SOCKET=daemon.socket)
    p = subprocess.run([str(script), "ping"], capture_output=True, text=True, env=env, timeout=30)
    assert p.returncode == 0
    assert p.stdout.startswith("sjq daemon on")


def test_sjq_kill_is_sjq_kill_for_callers_without_a_shell(
    cli: Cli, daemon: Daemon, gate: Callable[..., Gate]
) -> None:
    """Snakemake runs its cancel command without a shell: `sjq kill` must be one program."""
    running = cli.submit("-", input="#!/bin/sh\n" + gate().wait)
    queued = cli.submit("--hold", "--", "true")
    daemon.wait_state(running, "R")
    code = "import sys; from sjq_client.cli import kill_main; sys.exit(kill_main())"
    p = subprocess.run(
        [sys.executable, "-c", code, str(running), str(queued)],
        capture_output=True,
        text=True,
        env=cli.env,
        timeout=30,
    )
    assert (p.returncode, p.stdout, p.stderr) == (0, "", "")
    assert daemon.wait_state(running, ENDED) == "K"
    assert daemon.state(queued) == "K"
    script = Path(sys.executable).with_name("sjq-kill")
    if script.exists():  # pip made it from [project.scripts] (test_templates.py runs that)
        p = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=30)
        assert p.stdout.startswith("usage: sjq kill ")
