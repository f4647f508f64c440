"""The runner with real processes: exit statuses, signals, output files, environment,
descriptors, sessions, interpreters, and jobs that cannot start (E)."""

from __future__ import annotations

import json
import os
import pwd
import signal
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support import SH, Daemon, Gate, Raw, job_pid, make_daemon, read_when, wait_for

PY = "#!/usr/bin/env python3\n"
# A Python job that writes what it sees as one JSON line on stdout. Its interpreter is
# named by path: a `python3` found on PATH may be a wrapper (pyenv's shim is a bash
# script) that adds variables of its own to what the job was given.
DUMP_ENV = f"#!{sys.executable}\nimport json, os\nprint(json.dumps(dict(os.environ)))\n"


def run(d: Daemon, script: str, state: str = "S", **options: Any) -> tuple[int, dict[str, Any]]:
    """Submit, wait for the end, check the end state; return the id and INFO."""
    jid = d.submit(script, **options)
    got = d.wait_state(jid, "SFAKE")
    info = d.info(jid)
    assert got == state, info
    return jid, info


def stdout_of(d: Daemon, jid: int) -> str:
    return (d.jobs_dir / f"{jid}.stdout").read_text()


def env_of(d: Daemon, **options: Any) -> dict[str, str]:
    jid, _ = run(d, DUMP_ENV, **options)
    env: dict[str, str] = json.loads(stdout_of(d, jid))
    return env


# -- exit statuses and signals -----------------------------------------------------------


def test_exit_codes(shared_daemon: Daemon) -> None:
    d = shared_daemon
    jobs = {code: d.submit(SH + f"exit {code}\n") for code in (0, 1, 42, 255)}
    for code, jid in jobs.items():
        d.wait_state(jid, "SF")
        info = d.info(jid)
        assert (info["state"], info["exit_code"], info["signal"]) == (
            "S" if code == 0 else "F",
            code,
            None,
        )
        assert info["reason"] == ("" if code == 0 else f"exit status {code}")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGUSR1])
def test_killed_by_a_signal_sjq_did_not_send_is_f(shared_daemon: Daemon, sig: int) -> None:
    _, info = run(shared_daemon, SH + f"kill -{sig.name[3:]} $$\nsleep 5\n", "F")
    assert (info["exit_code"], info["signal"]) == (None, int(sig))
    assert info["reason"] == f"killed by signal {sig.name}"


# -- output files ------------------------------------------------------------------------


OUT_ERR = SH + "pwd\necho to-stderr >&2\n"


def test_default_output_files_are_cwd_id_stdout_and_stderr(shared_daemon: Daemon) -> None:
    d = shared_daemon
    cwd = d.jobs_dir / "default-out"
    cwd.mkdir()
    jid, info = run(d, OUT_ERR, cwd=str(cwd))
    assert (cwd / f"{jid}.stdout").read_text() == f"{cwd}\n"
    assert (cwd / f"{jid}.stderr").read_text() == "to-stderr\n"
    assert (info["stdout"], info["stderr"]) == (
        str(cwd / f"{jid}.stdout"),
        str(cwd / f"{jid}.stderr"),
    )


def test_relative_output_paths_are_relative_to_cwd(shared_daemon: Daemon) -> None:
    d = shared_daemon
    cwd = d.jobs_dir / "rel"
    (cwd / "logs").mkdir(parents=True)
    run(d, OUT_ERR, cwd=str(cwd), stdout="logs/out.txt", stderr="err.txt")
    assert (cwd / "logs" / "out.txt").read_text() == f"{cwd}\n"
    assert (cwd / "err.txt").read_text() == "to-stderr\n"


def test_absolute_output_paths(shared_daemon: Daemon, tmp_path: Path) -> None:
    d = shared_daemon
    out, err = tmp_path / "abs.out", tmp_path / "abs.err"
    jid, _ = run(d, OUT_ERR, stdout=str(out), stderr=str(err))
    assert out.read_text() == f"{d.jobs_dir}\n"
    assert err.read_text() == "to-stderr\n"
    assert not (d.jobs_dir / f"{jid}.stdout").exists()


def test_one_file_for_stdout_and_stderr(shared_daemon: Daemon) -> None:
    d = shared_daemon
    script = SH + "echo one\necho two >&2\necho three\necho four >&2\n"
    run(d, script, stdout="both.log", stderr="both.log")
    assert (d.jobs_dir / "both.log").read_text() == "one\ntwo\nthree\nfour\n"


def test_output_files_are_truncated_not_appended(shared_daemon: Daemon) -> None:
    d = shared_daemon
    target = d.jobs_dir / "trunc.log"
    target.write_text("old content that is longer than the new\n")
    run(d, SH + "echo new\n", stdout=str(target))
    assert target.read_text() == "new\n"


# -- environment ---------------------------------------------------------------------------


def test_env_lines(shared_daemon: Daemon) -> None:
    env = env_of(
        shared_daemon,
        env=["FOO=bar", "EQ=a=b=c", "EMPTY=", "SPACED=a b  c", "UTF=héllo ✓", "LIST=a,b,c"],
    )
    assert env["FOO"] == "bar"
    assert env["EQ"] == "a=b=c"  # the value is everything after the first '='
    assert env["EMPTY"] == ""
    assert env["SPACED"] == "a b  c"
    assert env["UTF"] == "héllo ✓"
    assert env["LIST"] == "a,b,c"  # pieces that are not NAME=... are not split off
    assert "PATH" not in env  # ENV given: nothing but what was sent, and sjq's own


def test_env_legacy_comma_form(shared_daemon: Daemon) -> None:
    env = env_of(shared_daemon, env=["PATH=/usr/bin:/bin,A=1,B=two words,C=x=y"])
    assert (env["PATH"], env["A"], env["B"], env["C"]) == ("/usr/bin:/bin", "1", "two words", "x=y")


def test_minimal_default_environment_without_env(
    daemon_factory: Callable[..., Daemon], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SJQ_TEST_SUBMITTER_ONLY", "must not leak")
    d = daemon_factory().start()  # the daemon's own environment holds the variable
    env = env_of(d)
    pw = pwd.getpwuid(os.getuid())
    assert env["HOME"] == pw.pw_dir
    assert env["USER"] == pw.pw_name
    assert env["SHELL"] == (pw.pw_shell or "/bin/sh")
    assert env["PATH"]
    assert env["LANG"]
    assert "SJQ_TEST_SUBMITTER_ONLY" not in env
    sjq_own = {"JOB_ID", "SJQ_JOBID", "SJQ_JOBNAME", "SJQ_PROCS", "SJQ_MEM", "SJQ_SOCKET", "TMPDIR"}
    # a pinned job's CPUs and thread counts (sjq.pin is on where the CPUs allow, as here)
    sjq_own |= {"SJQ_CPUS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"}
    allowed = {"PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LC_CTYPE"} | sjq_own
    assert set(env) <= allowed, set(env) - allowed


def test_sjq_variables(shared_daemon: Daemon) -> None:
    d = shared_daemon
    jid = d.submit(DUMP_ENV, name="my job ✓", procs="2", mem="3M")
    d.wait_state(jid, "S")
    env = json.loads(stdout_of(d, jid))
    assert env["JOB_ID"] == env["SJQ_JOBID"] == str(jid)
    assert env["SJQ_JOBNAME"] == "my job ✓"
    assert env["SJQ_PROCS"] == "2"
    assert env["SJQ_MEM"] == str(3 * 1024 * 1024)
    assert env["SJQ_SOCKET"] == d.socket
    default = d.submit(DUMP_ENV)
    d.wait_state(default, "S")
    env = json.loads(stdout_of(d, default))
    assert (env["SJQ_JOBNAME"], env["SJQ_PROCS"], env["SJQ_MEM"]) == (
        "sjqjob",
        "1",
        str(100 * 1024 * 1024),  # sjq.defaults.mem of the fixture
    )


def test_a_client_cannot_override_sjq_variables(shared_daemon: Daemon) -> None:
    d = shared_daemon
    forged = ["JOB_ID", "SJQ_JOBID", "SJQ_JOBNAME", "SJQ_PROCS", "SJQ_MEM", "SJQ_SOCKET", "TMPDIR"]
    jid = d.submit(DUMP_ENV, env=[f"{k}=/forged" for k in forged] + ["KEEP=me"])
    d.wait_state(jid, "S")
    env = json.loads(stdout_of(d, jid))
    assert env["KEEP"] == "me"
    assert [k for k in forged if env[k] == "/forged"] == []
    assert env["JOB_ID"] == str(jid)
    assert env["SJQ_SOCKET"] == d.socket


def test_a_job_can_submit_through_sjq_socket(shared_daemon: Daemon) -> None:
    d = shared_daemon
    script = PY + (
        "import os, socket\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "s.connect(os.environ['SJQ_SOCKET'])\n"
        "body = b'#!/bin/sh\\necho inner\\n'\n"
        "s.sendall(b'SUBMIT\\nHOLD\\nSRC %d\\n%s' % (len(body), body))\n"
        "print(s.recv(100).decode().strip())\n"
    )
    jid, _ = run(d, script)
    reply = stdout_of(d, jid)
    assert reply.startswith("OK "), reply
    assert d.state(int(reply.split()[1])) == "U"


def test_private_tmpdir_exists_while_running_and_is_removed(shared_daemon: Daemon) -> None:
    d = shared_daemon
    script = PY + (
        "import json, os\n"
        "t = os.environ['TMPDIR']\n"
        "open(os.path.join(t, 'scratch'), 'w').write('x')\n"
        "st = os.stat(t)\n"
        "print(json.dumps({'dir': t, 'mode': st.st_mode & 0o7777, 'uid': st.st_uid,"
        " 'isdir': os.path.isdir(t)}))\n"
    )
    a = d.submit(script)
    b = d.submit(script)
    d.wait_state(a, "S")
    d.wait_state(b, "S")
    seen_a, seen_b = (json.loads(stdout_of(d, j)) for j in (a, b))
    assert seen_a["isdir"]
    assert seen_a["mode"] == 0o700
    assert seen_a["uid"] == os.geteuid()
    assert seen_a["dir"] != seen_b["dir"]  # one per job
    assert seen_a["dir"].startswith(d.settings["sjq.tmpdir"] + "/")
    for seen in (seen_a, seen_b):
        wait_for(lambda s=seen: not os.path.exists(s["dir"]), what="TMPDIR to be removed")


# -- descriptors, sessions, stdin ---------------------------------------------------------


def test_stdin_is_dev_null(shared_daemon: Daemon) -> None:
    d = shared_daemon
    jid, _ = run(d, SH + "readlink /proc/$$/fd/0\ncat | wc -c\n")
    assert stdout_of(d, jid).split() == ["/dev/null", "0"]


FD_PROBE = PY + (
    "import json, os\n"
    "open_fds = []\n"
    "for fd in range(3, 1024):\n"
    "    try:\n"
    "        os.fstat(fd)\n"
    "    except OSError:\n"
    "        continue\n"
    "    open_fds.append([fd, os.readlink(f'/proc/self/fd/{fd}')])\n"
    "print(json.dumps(open_fds), flush=True)\n"
    "import time\n"
    "while not os.path.exists('{gate}'):\n"
    "    time.sleep(0.01)\n"
)


def test_no_inherited_descriptors(
    daemon_factory: Callable[..., Daemon], gate: Callable[[str], Gate], tmp_path: Path
) -> None:
    d = daemon_factory()
    # Start the daemon by hand with an inheritable descriptor of ours, as a careless parent
    # (a shell, a pipeline runner) would: no job may see it.
    leak = os.open(tmp_path / "leak", os.O_RDWR | os.O_CREAT)
    os.set_inheritable(leak, True)
    rc = d.dir / "none.rc"
    rc.touch()
    with open(d.dir / "stderr.log", "ab") as stderr:
        d.proc = subprocess.Popen(
            d.command(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=dict(os.environ, SJQ_CONFIG=str(rc)),
            cwd=d.dir,
            pass_fds=(leak,),
        )
    os.close(leak)
    wait_for(d.answers, what="daemon")
    g = gate("g")
    jid = d.submit(FD_PROBE.replace("{gate}", str(g.path)))
    assert json.loads(read_when(d.jobs_dir / f"{jid}.stdout")) == []
    # From outside, while it runs: exactly 0, 1, 2 to the right places.
    pid = job_pid(d, jid)
    fds = {int(n): os.readlink(f"/proc/{pid}/fd/{n}") for n in os.listdir(f"/proc/{pid}/fd")}
    assert fds == {
        0: "/dev/null",
        1: str(d.jobs_dir / f"{jid}.stdout"),
        2: str(d.jobs_dir / f"{jid}.stderr"),
    }
    g.open()
    d.wait_state(jid, "S")


def test_job_runs_in_its_own_session(shared_daemon: Daemon) -> None:
    d = shared_daemon
    script = PY + "import os\nprint(os.getpid(), os.getsid(0), os.getpgid(0), os.getppid())\n"
    jid, info = run(d, script)
    pid, sid, pgid, ppid = map(int, stdout_of(d, jid).split())
    assert pid == sid == pgid == info["pid"]
    assert d.proc is not None
    assert ppid != d.proc.pid


def test_job_does_not_inherit_ignored_or_blocked_signals(shared_daemon: Daemon) -> None:
    # The keeper ignores SIGTERM, SIGINT, SIGHUP and SIGQUIT; none of that may reach a job.
    d = shared_daemon
    jid, _ = run(d, SH + "grep -E '^Sig(Blk|Ign):' /proc/self/status\n")
    fields = stdout_of(d, jid).split()
    assert fields[0::2] == ["SigBlk:", "SigIgn:"]
    blocked, ignored = (int(x, 16) for x in fields[1::2])
    assert blocked == 0
    # Signals 1-31 only: glibc's posix_spawn sets its two internal real-time signals (32, 33)
    # to SIG_IGN in every child; no program may use them.
    assert ignored & 0x7FFFFFFF == 0, hex(ignored)


# -- scripts and interpreters ---------------------------------------------------------------


def test_shebang_arguments_are_honoured(shared_daemon: Daemon) -> None:
    d = shared_daemon
    jid, info = run(d, "#!/bin/sh -e\necho before\nfalse\necho after\n", "F")
    assert stdout_of(d, jid) == "before\n"
    assert info["exit_code"] == 1


def test_usr_bin_env_interpreter(shared_daemon: Daemon) -> None:
    d = shared_daemon
    jid, _ = run(d, PY + "import sys\nprint(sys.version_info[0])\n")
    assert stdout_of(d, jid) == "3\n"


def test_leading_whitespace_before_shebang(shared_daemon: Daemon) -> None:
    d = shared_daemon
    jid, _ = run(d, "\n  \t\n   #!/bin/sh\necho spaced\n")
    assert stdout_of(d, jid) == "spaced\n"


def test_utf8_names_paths_and_scripts(shared_daemon: Daemon) -> None:
    d = shared_daemon
    cwd = d.jobs_dir / "répertoire ✓"
    cwd.mkdir()
    script = SH + 'echo "héllo ✓ 日本 $SJQ_JOBNAME"\npwd\n'
    jid, info = run(d, script, name="tâche-✓", cwd=str(cwd), stdout="sortie é.txt")
    assert (cwd / "sortie é.txt").read_text() == f"héllo ✓ 日本 tâche-✓\n{cwd}\n"
    assert info["name"] == "tâche-✓"
    assert info["cwd"] == str(cwd)
    assert (cwd / f"{jid}.stderr").exists()


def test_binary_script_bytes_arrive_unchanged(shared_daemon: Daemon) -> None:
    d = shared_daemon
    script = b"#!/bin/sh\nprintf '%s' '\xc3\xa9\xff\xfe' > raw.bin\n"
    run(d, script)  # type: ignore[arg-type]
    assert (d.jobs_dir / "raw.bin").read_bytes() == b"\xc3\xa9\xff\xfe"


def test_spool_script_is_private_while_the_job_runs(
    shared_daemon: Daemon, gate: Callable[[str], Gate]
) -> None:
    d = shared_daemon
    g = gate("spool")
    script = "  #!/bin/sh\n" + g.wait
    jid = d.submit(script)
    pid = job_pid(d, jid)
    # The kernel ran "/bin/sh <spooled script>": that is where the script was written.
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert argv[0] == b"/bin/sh"
    spooled = Path(os.fsdecode(argv[1]))
    st = spooled.stat()
    assert stat.S_IMODE(st.st_mode) == 0o700
    assert st.st_uid == os.geteuid()
    assert spooled.read_text() == script.lstrip()  # '#!' moved to byte 0 for exec
    assert stat.S_IMODE(spooled.parent.stat().st_mode) & 0o022 == 0  # nobody else writes there
    g.open()
    d.wait_state(jid, "S")
    wait_for(lambda: not spooled.exists(), what="the spool file to be removed")


# -- jobs that cannot start ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("script", "options", "reason"),
    [
        (SH, {"cwd": "/nonexistent/dir"}, "working directory /nonexistent/dir: No such file"),
        ("#!/nonexistent/sh\necho x\n", {}, "bad interpreter /nonexistent/sh: not found"),
        ("#!{plain}\n", {}, "bad interpreter {plain}: not executable"),
        ("#!no-such-interpreter\n", {}, "no-such-interpreter"),
        ("#!\necho x\n", {}, "names no interpreter"),
        (SH, {"stdout": "/nonexistent/dir/out"}, "cannot open stdout file /nonexistent/dir/out"),
        (SH, {"stderr": "/"}, "cannot open stderr file /: Is a directory"),
    ],
    ids=[
        "missing-cwd",
        "missing-interp",
        "not-executable",
        "relative-interp",
        "empty",
        "stdout",
        "stderr",
    ],
)
def test_job_that_cannot_start_ends_in_e(
    shared_daemon: Daemon, script: str, options: dict[str, str], reason: str
) -> None:
    d = shared_daemon
    plain = d.jobs_dir / "plain-file"  # exists, mode 0644: not an interpreter
    plain.write_text("data\n")
    script, reason = (s.replace("{plain}", str(plain)) for s in (script, reason))
    # Held, then released: a job that could start at once with a missing path is refused at
    # SUBMIT (tests/server/test_submit_errors.py); one that had to wait ends in E.
    jid = d.submit(script, hold=True, **options)
    child = d.submit(SH, depends=str(jid))
    d.req(f"RELEASE {jid}")
    d.wait_state(jid, "E")
    info = d.info(jid)
    assert reason in info["reason"], info
    assert info["exit_code"] is None
    assert info["ended"] is not None
    assert d.state(child) == "A"
    assert f"job {jid} could not start" in d.log
    # ... and the daemon goes on running jobs.
    ok, _ = run(d, SH + "echo still serving\n")
    assert stdout_of(d, ok) == "still serving\n"


# -- known bugs ------------------------------------------------------------------------------


def test_one_file_for_stdout_and_stderr_however_spelled(shared_daemon: Daemon) -> None:
    d = shared_daemon
    script = SH + "echo one\necho two >&2\necho three\necho four >&2\n"
    run(d, script, stdout="spelled.log", stderr="./spelled.log")
    assert (d.jobs_dir / "spelled.log").read_text() == "one\ntwo\nthree\nfour\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make a directory of another user")
def test_tmpdir_root_owned_by_another_user_is_not_trusted(
    daemon_factory: Callable[..., Daemon],
) -> None:
    d = daemon_factory()
    root = Path(d.settings["sjq.tmpdir"]) / f"sjq-{os.geteuid()}"
    root.mkdir(parents=True)
    os.chown(root, 65534, 65534)  # pre-created by user nobody, as anyone can in /tmp
    root.chmod(0o777)
    d.start()  # a guessable name taken by someone else must not stop the daemon
    jid = d.submit(SH + 'stat -c "%u %a" "$TMPDIR/.."\n')
    assert d.wait_state(jid, "SFE") == "S"
    owner, mode = stdout_of(d, jid).split()
    assert int(owner) == os.geteuid()
    assert int(mode, 8) & 0o022 == 0
    assert "using a fresh directory for job TMPDIRs" in d.log


def test_two_daemons_of_one_user_do_not_share_script_files(
    daemon_factory: Callable[..., Daemon], gate: Callable[[str], Gate], tmp_path: Path
) -> None:
    (tmp_path / "second").mkdir()
    first, other = daemon_factory(), make_daemon(tmp_path / "second")
    for d in (first, other):
        d.settings.pop("sjq.rundir", None)  # both on the default, as a user's two daemons are
    try:
        first.start()
        other.start()
        g = gate("g")
        mine = first.submit(SH + "echo first\n" + g.wait)
        theirs = other.submit(SH + "echo second\n" + g.wait)
        assert mine == theirs == 1
        scripts = [
            Path(f"/proc/{job_pid(d, 1)}/cmdline").read_bytes().split(b"\0")[1]
            for d in (first, other)
        ]
        g.open()
        first.wait_state(mine, "S")
        other.wait_state(theirs, "S")
        assert stdout_of(first, mine) == "first\n"
        assert stdout_of(other, theirs) == "second\n"
        assert scripts[0] != scripts[1]
    finally:
        other.stop()


def test_crlf_shebang_is_refused_at_submit_with_a_hint(shared_daemon: Daemon) -> None:
    d = shared_daemon
    before = d.submit(SH, hold=True)
    with Raw(d.socket) as c:
        reply = c.submit("#!/bin/sh\r\necho hi\r\n", cwd=str(d.jobs_dir), hold=True)
    assert reply.startswith(b"ERROR the #! line ends in a carriage return"), reply
    assert b"dos2unix" in reply
    assert d.submit(SH, hold=True) == before + 1  # no job was made of it


def test_an_empty_tmpdir_is_gone_too_once_the_job_ends(shared_daemon: Daemon) -> None:
    d = shared_daemon
    jid = d.submit(SH + 'echo "$TMPDIR"\n')
    d.wait_state(jid, "S")
    path = stdout_of(d, jid).strip()
    assert path.startswith(d.settings["sjq.tmpdir"] + "/")
    wait_for(lambda: not os.path.exists(path), what="the empty TMPDIR's path to be gone")
