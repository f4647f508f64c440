"""`sjq submit` as a user runs it: a real CLI process against a real daemon."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

from support import Cli, Daemon, Gate, Result

ENDED = "SFAKE"


def env_of(path: Path) -> dict[str, str]:
    """The environment a job printed with `env -0`."""
    items = path.read_bytes().split(b"\0")
    return dict(i.decode().split("=", 1) for i in items if i)


def test_submit_prints_only_the_id_and_the_job_runs(
    cli: Cli, daemon: Daemon, shell_job: Callable[..., Path]
) -> None:
    script = shell_job("#!/bin/sh\necho hello $SJQ_JOBID in $PWD\n")
    r = cli("submit", str(script))
    assert r.code == 0, r.err
    assert r.out.strip().isdigit()
    assert r.out == r.out.strip() + "\n"
    assert r.err == ""
    jid = int(r.out)
    assert daemon.wait_state(jid, ENDED) == "S"
    assert (daemon.jobs_dir / f"{jid}.stdout").read_text() == f"hello {jid} in {daemon.jobs_dir}\n"
    assert daemon.info(jid)["name"] == "job.sh"


def test_options_reach_the_daemon(cli: Cli, daemon: Daemon, shell_job: Callable[..., Path]) -> None:
    first = cli.submit("--hold", "--", "true")
    script = shell_job("#!/bin/sh\necho out; echo err >&2\n")
    (daemon.jobs_dir / "sub").mkdir()
    jid = cli.submit(
        str(script),
        "--mem", "300M", "-p", "2", "--name=my job", "--priority", "-5", "--time", "1:00:00",
        "-o", "o.txt", "--stderr", "e.txt", "-C", "sub", "--after", str(first), "--hold",
    )  # fmt: skip
    info = daemon.info(jid)
    assert info["mem"] == 300 * 1024**2
    assert info["procs"] == 2
    assert info["name"] == "my job"
    assert info["priority"] == -5
    assert info["time_limit"] == 3600
    assert info["depends"] == [first]
    assert info["state"] == "U"
    assert info["cwd"] == str(daemon.jobs_dir / "sub")
    assert info["stdout"] == str(daemon.jobs_dir / "sub" / "o.txt")
    cli.ok("release", str(first), str(jid))
    assert daemon.wait_state(jid, ENDED) == "S"
    assert (daemon.jobs_dir / "sub" / "o.txt").read_text() == "out\n"
    assert (daemon.jobs_dir / "sub" / "e.txt").read_text() == "err\n"


def test_gpus_and_retries_reach_the_daemon(
    cli: Cli, daemon: Daemon, shell_job: Callable[..., Path]
) -> None:
    script = shell_job("#!/bin/sh\n#SJQ --retry 2 --retry-mem 1.5\nexit 1\n")
    jid = cli.submit(str(script), "--gpus", "0", "--retry", "1")
    assert daemon.wait_state(jid, ENDED) == "F"
    info = daemon.info(jid)
    assert (info["attempts"], info["gpus"]) == (2, [])  # the command line's RETRY wins
    # --retry-mem needs a --retry (else a usage error), and a directive's counts
    retried = shell_job("#!/bin/sh\n#SJQ --retry 1\nexit 1\n")
    jid = cli.submit(str(retried), "--retry-mem", "2")
    assert daemon.wait_state(jid, ENDED) == "F"
    assert daemon.info(jid)["attempts"] == 2
    # #SJQ --gpus reaches the daemon too, which refuses more GPUs than it manages
    r = cli("submit", str(shell_job("#!/bin/sh\n#SJQ --gpus 1000\ntrue\n")))
    assert r.code == 1, r
    assert "GPUS 1000 is more than the " in r.err


def test_after_takes_several_forms(cli: Cli, daemon: Daemon, gate: Callable[..., Gate]) -> None:
    g = gate()
    a = daemon.submit("#!/bin/sh\n" + g.wait)
    b = daemon.submit("#!/bin/sh\n" + g.wait)
    c = cli.submit("--depends", f"{a}:{b}", "--", "true")
    d = cli.submit("-d", str(a), "-d", str(b), "--", "true")
    e = cli.submit(f"--after={a},{b}", "--", "true")
    for jid in (c, d, e):
        assert daemon.info(jid)["depends"] == [a, b]
        assert daemon.state(jid) == "H"
    g.open()
    for jid in (c, d, e):
        assert daemon.wait_state(jid, ENDED) == "S"


def test_after_takes_what_pipelines_pass(
    cli: Cli, daemon: Daemon, gate: Callable[..., Gate]
) -> None:
    """Workflow templates pass a space-separated list (Snakemake's {dependencies}), or an
    empty one for the first jobs of a run."""
    g = gate()
    a = daemon.submit("#!/bin/sh\n" + g.wait)
    b = daemon.submit("#!/bin/sh\n" + g.wait)
    listed = [
        cli.submit("--after", f"{a} {b}", "--", "true"),
        cli.submit(f"--after= {a}\t{b} ", "--", "true"),
        cli.submit("--after", f"{a}, {b}", "--", "true"),
        cli.submit("-d", f"{a}:{b}", "-d", "", "--", "true"),
    ]
    for jid in listed:
        assert daemon.info(jid)["depends"] == [a, b]
        assert daemon.state(jid) == "H"
    free = [
        cli.submit("--after", "", "--", "true"),
        cli.submit("--after", " ", "--", "true"),
        cli.submit("--dependency", "", "--afterany", "", "--", "true"),
    ]
    for jid in free:
        assert daemon.info(jid)["depends"] == []
        assert daemon.state(jid) == "Q"  # waits for a CPU, not for a job
    g.open()
    for jid in listed + free:
        assert daemon.wait_state(jid, ENDED) == "S"


def test_after_still_refuses_what_is_not_an_id(sjq_main: Callable[..., Result]) -> None:
    for value, message in (("3 x", "not a job id: 'x'"), ("3-", "not a job id"), ("0", "not a")):
        r = sjq_main("submit", "--after", value, "--", "true")
        assert r.code == 2, (value, r)
        assert message in r.err, (value, r.err)


def test_output_files_are_slurm_patterns(cli: Cli, daemon: Daemon) -> None:
    jid = cli.submit(
        "-n", "align", "-o", "logs/%x.%j.out", "-e", "logs/%x.%4j.err", "--",
        "sh", "-c", "echo out; echo err >&2",
    )  # fmt: skip
    assert daemon.wait_state(jid, ENDED) == "S"
    logs = daemon.jobs_dir / "logs"  # created: it did not exist
    assert (logs / f"align.{jid}.out").read_text() == "out\n"
    assert (logs / f"align.{jid:04d}.err").read_text() == "err\n"
    jid = cli.submit("-o", "100%%.txt", "--", "echo", "literal")
    assert daemon.wait_state(jid, ENDED) == "S"
    assert (daemon.jobs_dir / "100%.txt").read_text() == "literal\n"


def test_directives_set_defaults_that_the_command_line_overrides(
    cli: Cli, daemon: Daemon, shell_job: Callable[..., Path]
) -> None:
    script = shell_job(
        "#!/bin/sh\n"
        "# an ordinary comment\n"
        "\n"
        "#SJQ --mem 300M --procs 2\n"
        "#SJQ\t--name 'from script' --env A=1 --env B=1\r\n"
        "env -0 > env.out\n"
        "#SJQ --priority 9\n"  # after the first command: an ordinary comment
    )
    jid = cli.submit(str(script), "--mem", "400M", "--env", "B=2")
    info = daemon.info(jid)
    assert info["mem"] == 400 * 1024**2  # command line wins
    assert info["procs"] == 2  # from the script
    assert info["name"] == "from script"
    assert info["priority"] == 0
    assert daemon.wait_state(jid, ENDED) == "S"
    env = env_of(daemon.jobs_dir / "env.out")
    assert (env["A"], env["B"]) == ("1", "2")


def test_directives_are_read_from_standard_input_too(cli: Cli, daemon: Daemon) -> None:
    jid = cli.submit("-", input="#!/bin/sh\n#SJQ -m 200M -n piped\necho piped\n")
    info = daemon.info(jid)
    assert (info["mem"], info["name"]) == (200 * 1024**2, "piped")
    assert daemon.wait_state(jid, ENDED) == "S"
    assert (daemon.jobs_dir / f"{jid}.stdout").read_text() == "piped\n"


def test_bad_directives_are_usage_errors_naming_the_line(
    sjq_main: Callable[..., Result], daemon: Daemon, shell_job: Callable[..., Path]
) -> None:
    cases = {
        "#SJQ --wait\n": "--wait belongs on the command line",
        "#SJQ --mme 2G\n": "did you mean --mem?",
        "#SJQ --mem 2G extra\n": "directives take options only",
        "#SJQ --name 'open\n": "cannot read",
        "#SJQ --mem lots\n": "--mem",
        "#SJQ --help\n": "-h/--help is not a directive",
    }
    for i, (line, message) in enumerate(cases.items()):
        script = shell_job(f"#!/bin/sh\n# comment\n{line}true\n", f"bad{i}.sh")
        r = sjq_main("submit", str(script), SJQ_SOCKET=daemon.socket)
        assert r.code == 2, (line, r)
        assert f"bad{i}.sh, line 3" in r.err, r.err
        assert message in r.err, r.err
    assert daemon.req("PING") == b"OK \r\n"  # nothing was submitted


def test_a_command_is_wrapped_with_its_quoting_intact(cli: Cli, daemon: Daemon) -> None:
    args = ["a b", "it's", '"dq"', "$HOME", "*", "", "back\\slash", "tab\there", "ünï", "-n", ";"]
    jid = cli.submit("--", "printf", "[%s]\\n", *args)
    assert daemon.wait_state(jid, ENDED) == "S"
    out = (daemon.jobs_dir / f"{jid}.stdout").read_text()
    assert out == "".join(f"[{a}]\n" for a in args)
    assert daemon.info(jid)["name"] == "printf"


def test_a_wrapped_command_is_execd(cli: Cli, daemon: Daemon) -> None:
    # exec: the job's process is the command itself, so $$ of the wrapper is the command's pid.
    jid = cli.submit("--", sys.executable, "-c", "import os; print(os.getppid() != 1)")
    assert daemon.wait_state(jid, ENDED) == "S"
    script = daemon.jobs_dir / f"{jid}.stdout"
    assert script.read_text() == "True\n"


def test_export_all_is_the_default(cli: Cli, daemon: Daemon) -> None:
    env = dict(cli.env, SJQ_TEST_VAR="x,y=z 1", SJQ_TEST_OTHER="2")
    r = cli("submit", "--env", "SJQ_TEST_OTHER=3", "--", "sh", "-c", "env -0 > all.env", env=env)
    jid = int(r.out)
    assert daemon.wait_state(jid, ENDED) == "S"
    job_env = env_of(daemon.jobs_dir / "all.env")
    assert job_env["SJQ_TEST_VAR"] == "x,y=z 1"  # a comma-and-equals value travels intact
    assert job_env["SJQ_TEST_OTHER"] == "3"  # --env wins
    assert job_env["HOME"] == env["HOME"]
    assert job_env["SJQ_JOBID"] == str(jid)


def test_export_none_and_names(cli: Cli, daemon: Daemon) -> None:
    c = Cli(dict(cli.env, SJQ_TEST_VAR="1", SJQ_TEST_OTHER="2"), cli.cwd)
    none = c.submit("--export", "NONE", "--", "sh", "-c", "env -0 > none.env")
    only = c.submit("--export", "none", "--env", "ONLY=1", "--", "/usr/bin/env", "-0")
    names = c.submit("--export", "SJQ_TEST_VAR,PATH,UNSET_NAME", "--", "sh", "-c", "env -0 > n.env")
    for jid in (none, only, names):
        assert daemon.wait_state(jid, ENDED) == "S", daemon.info(jid)
    job_env = env_of(daemon.jobs_dir / "none.env")
    assert "SJQ_TEST_VAR" not in job_env
    assert {"PATH", "HOME", "USER", "SHELL", "LANG"} <= set(job_env)  # the daemon's minimal set
    job_env = env_of(daemon.jobs_dir / f"{only}.stdout")
    assert job_env["ONLY"] == "1"
    assert "PATH" not in job_env
    assert "SJQ_TEST_VAR" not in job_env
    job_env = env_of(daemon.jobs_dir / "n.env")
    assert job_env["SJQ_TEST_VAR"] == "1"
    assert "SJQ_TEST_OTHER" not in job_env
    assert "UNSET_NAME" not in job_env


def test_wait_exits_with_the_jobs_outcome(cli: Cli, daemon: Daemon) -> None:
    ok = cli("submit", "--wait", "--", "true")
    assert ok.code == 0
    r = cli("submit", "-w", "--", "sh", "-c", "exit 7")
    assert r.code == 7
    jid = int(r.out)
    assert f"job {jid} failed: exit status 7" in r.err
    r = cli("submit", "--wait", "--", "sh", "-c", "kill -TERM $$")
    assert r.code == 128 + 15
    assert "SIGTERM" in r.err
    r = cli("submit", "--wait", "--after", str(jid), "--", "true")  # its dependency failed
    assert r.code == 1
    assert "aborted" in r.err
    # cannot start: refused at once when it could start at once ...
    r = cli("submit", "--wait", "--stdout", "/proc/no/such/dir", "--", "true")
    assert r.code == 1
    assert "stdout => /proc/no/such/dir does not exist" in r.err
    # ... and ends in E when it had to wait (an earlier job might have made the directory)
    r = cli(
        "submit", "-w", "--after", ok.out.strip(), "--stdout", "/proc/no/such/dir", "--", "true"
    )
    assert r.code == 1
    assert "error" in r.err


def test_submit_usage_errors_send_nothing(
    sjq_main: Callable[..., Result], cli: Cli, daemon: Daemon, shell_job: Callable[..., Path]
) -> None:
    good = shell_job("#!/bin/sh\ntrue\n")
    no_shebang = shell_job("echo hi\n", "plain.sh")
    cases = [
        (["submit"], "give a script file"),
        (["submit", "missing.sh"], "cannot read missing.sh"),
        (["submit", str(no_shebang)], "does not start with #!"),
        (["submit", str(good), "arg"], "sjq submit -- "),
        (["submit", str(good), "--", "true"], "not both"),
        (["submit", "--"], "must be followed by a command"),
        (["submit", "--mem", "lots", str(good)], "--mem"),
        (["submit", "--mem"], "--mem needs a value"),
        (["submit", "-p", "0", str(good)], "--procs"),
        (["submit", "--priority", "high", str(good)], "--priority"),
        (["submit", "--time", "0", str(good)], "--time"),
        (["submit", "--gpus", "-1", str(good)], "--gpus must be a whole number"),
        (["submit", "--retry", "x", str(good)], "--retry must be a whole number"),
        (["submit", "--retry-mem", "0.5", str(good)], "--retry-mem must be a number from 1"),
        (["submit", "--retry-mem", "2", str(good)], "--retry-mem needs --retry N"),
        (["submit", "--after", "x", str(good)], "not a job id"),
        (["submit", "--cwd", "/no/such/dir", str(good)], "not a directory"),
        (["submit", "--env", "1X=2", str(good)], "--env takes NAME=VALUE"),
        (["submit", "--export", "A B", str(good)], "--export"),
        (["submit", "--hold=yes", str(good)], "takes no value"),
    ]
    for args, message in cases:
        r = sjq_main(*args, SJQ_SOCKET=daemon.socket)
        assert r.code == 2, (args, r)
        assert message in r.err, (args, r.err)
        assert r.out == ""
    assert cli("submit", "-", input="no shebang\n").code == 2
    assert daemon.req("PING") == b"OK \r\n"


def test_a_refused_submit_is_an_error_with_the_daemons_reason(cli: Cli, daemon: Daemon) -> None:
    r = cli("submit", "--procs", "64", "--", "true")
    assert r.code == 1
    assert r.out == ""
    assert "refused" in r.err
    assert "PROCS 64" in r.err
    assert "sjq.maxprocs" in r.err
    r = cli("submit", "--after", "999", "--", "true")
    assert r.code == 1
    assert "there is no job 999" in r.err


def test_cwd_defaults_to_the_current_directory(cli: Cli, daemon: Daemon, tmp_path: Path) -> None:
    here = tmp_path / "elsewhere"
    here.mkdir()
    r = cli("submit", "--", "pwd", cwd=here)
    jid = int(r.out)
    assert daemon.wait_state(jid, ENDED) == "S"
    assert (here / f"{jid}.stdout").read_text() == f"{here}\n"
    assert os.path.samefile(daemon.info(jid)["cwd"], here)


def test_a_job_can_submit_jobs(cli: Cli, daemon: Daemon) -> None:
    # Jobs get SJQ_SOCKET, so the CLI inside a job finds the daemon that runs it.
    inner = [sys.executable, "-m", "sjq_client", "submit", "--wait", "--", "echo", "inner"]
    r = cli("submit", "--wait", "--", *inner)
    assert r.code == 0, r.err
    outer = int(r.out)
    (inner_id,) = (int(x) for x in (daemon.jobs_dir / f"{outer}.stdout").read_text().split())
    assert (daemon.jobs_dir / f"{inner_id}.stdout").read_text() == "inner\n"
