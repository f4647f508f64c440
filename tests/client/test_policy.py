"""The clients' side of the scheduling policy (issue 13): pause and resume, through Client,
AsyncClient and the `sjq` command, against a real daemon."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sjq_client import AsyncClient, Client
from support import Cli, Daemon, Gate, Home


@pytest.fixture(autouse=True)
def _no_user_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rc = tmp_path / "empty.rc"
    rc.touch()
    monkeypatch.setenv("SJQ_CONFIG", str(rc))
    for name in list(os.environ):
        if name.startswith("SJQ_") and name != "SJQ_CONFIG":
            monkeypatch.delenv(name)


@pytest.fixture
def client(daemon: Daemon, monkeypatch: pytest.MonkeyPatch) -> Iterator[Client]:
    monkeypatch.chdir(daemon.jobs_dir)
    with Client(daemon.socket, autostart=False) as c:
        yield c


# -- pause ---------------------------------------------------------------------------------


def test_client_pause_and_resume(client: Client, daemon: Daemon) -> None:
    assert not client.queue_state().paused
    client.pause()
    state = client.queue_state()
    assert state.paused
    assert state.paused_since is not None
    assert (state.procs, state.mem) == (2, 8 * 2**30)
    job = client.submit(command=["true"])
    assert client.state(job).value == "Q"
    client.resume()
    assert job.wait(10).value == "S"


@pytest.mark.asyncio
async def test_async_client_pause_and_resume(daemon: Daemon) -> None:
    async with AsyncClient(daemon.socket, autostart=False) as c:
        await c.pause()
        assert (await c.queue_state()).paused
        job = await c.submit(command=["true"], cwd=daemon.jobs_dir)
        assert (await job.state()).value == "Q"
        await c.resume()
        assert (await job.wait(10)).value == "S"


def test_cli_pause_status_ping_resume(cli: Cli, daemon: Daemon, gate: Callable[..., Gate]) -> None:
    g = gate()
    running = cli.submit("-p", "2", "-", input="#!/bin/sh\n" + g.wait)
    daemon.wait_state(running, "R")
    assert cli.ok("pause") == ""
    waiting = cli.submit("--", "true")
    status = cli.ok("status").splitlines()
    assert status[-1].startswith("queue: 1 running, 1 queued; paused since ")
    assert status[-1].endswith(": no job starts until `sjq resume`")
    ping = cli.ok("ping")
    assert ping.startswith(f"sjq daemon on {daemon.socket}: 1 running, 1 queued; paused since ")
    g.open()
    daemon.wait_state(running, "S")
    assert daemon.state(waiting) == "Q"
    assert cli.ok("resume") == ""
    daemon.wait_state(waiting, "S")
    assert "paused" not in cli.ok("ping")
    assert "paused" not in cli.ok("status")


def test_cli_pause_starts_a_daemon_that_keeps_it(home: Home) -> None:
    cli = home.cli()
    assert cli.ok("pause") == ""
    assert home.started() == 1
    assert "; paused since " in cli.ok("ping")
    job = cli.submit("--", "true")
    assert cli.ok("status", str(job)).splitlines()[1].split()[2] == "queued"
    cli.ok("resume")
    cli.ok("wait", str(job))


# -- dependency kinds --------------------------------------------------------------------


def test_cli_dependency_kinds(cli: Cli, daemon: Daemon, gate: Callable[..., Gate]) -> None:
    g = gate()
    parent = cli.submit("-", input="#!/bin/sh\n" + g.wait + "exit 2\n")
    anyway = cli.submit("--afterany", str(parent), "--", "true")
    failed = cli.submit("--afternotok", str(parent), "--", "true")
    slurm = cli.submit("-d", f"afterany:{parent},after:{parent}", "--", "true")
    bare = cli.submit("-d", f"{parent}", "--", "true")  # -d with ids alone: --after
    assert daemon.info(bare)["depends"] == [parent]
    assert daemon.info(slurm)["dependency"] == f"afterany:{parent},after:{parent}"
    info = cli.ok("info", str(failed))
    assert re.search(rf"^  dependency +afternotok:{parent}$", info, re.MULTILINE)
    assert re.search(rf"^  waiting for +job {parent}$", info, re.MULTILINE)
    g.open()
    for jid in (anyway, failed, slurm):
        assert daemon.wait_state(jid, "SFAKE") == "S"
    assert daemon.wait_state(bare, "SFAKE") == "A"
    r = cli("submit", "-d", "singleton", "--", "true")
    assert r.code == 2
    assert "--dependency: singleton (one job of a name at a time) is Slurm's" in r.err
    script = "#!/bin/sh\n#SJQ --dependency afterany:" + str(parent) + "\ntrue\n"
    directive = cli.submit("-", input=script)
    assert daemon.info(directive)["dependency"] == f"afterany:{parent}"


def test_client_dependency_arguments(client: Client, daemon: Daemon) -> None:
    parent = client.submit(command=["false"])
    assert parent.wait(10).value == "F"
    anyway = client.submit(command=["true"], afterany=[parent])
    failed = client.submit(command=["true"], afternotok=[parent], dependency=f"after:{parent.id}")
    assert anyway.wait(10).value == "S"
    assert failed.wait(10).value == "S"
    assert failed.info().dependency == f"after:{parent.id},afternotok:{parent.id}"
    with pytest.raises(ValueError, match="dependency: unknown kind 'later'"):
        client.submit(command=["true"], dependency="later:3")


# -- arrays ------------------------------------------------------------------------------


def test_cli_array_and_each_line(cli: Cli, daemon: Daemon, tmp_path: Path) -> None:
    out = cli.ok("submit", "--array", "1-3%2", "--", "sh", "-c", 'echo "$SJQ_ARRAY_INDEX"')
    first, _, last = out.strip().partition("-")
    elements = range(int(first), int(last) + 1)
    assert len(elements) == 3
    assert cli.ok("wait", out.strip()) == ""  # the range works wherever ids do
    for jobid, index in zip(elements, (1, 2, 3), strict=True):
        assert (daemon.jobs_dir / f"{jobid}.stdout").read_text() == f"{index}\n"
    files = tmp_path / "files.txt"
    files.write_text("a b.txt\n\nc.txt\r\n")  # an empty line is skipped, a CR dropped
    out = cli.ok("submit", "--each-line", str(files), "--wait", "--", "echo", "got {}!")
    first, _, last = out.strip().partition("-")
    assert int(last) - int(first) == 1
    assert (daemon.jobs_dir / f"{first}.stdout").read_text() == "got a b.txt!\n"
    assert (daemon.jobs_dir / f"{last}.stdout").read_text() == "got c.txt!\n"
    assert daemon.info(int(last))["entry"] == "c.txt"
    piped = cli("submit", "--each-line", "-", "--", "sh", "-c", "exit 1", input="x\ny\n")
    assert piped.code == 0
    failed = cli("wait", piped.out.strip())
    assert failed.code == 1
    script = "#!/bin/sh\n#SJQ --array 0-4:2\necho $SJQ_ARRAY_INDEX\n"
    out = cli.ok("submit", "--wait", "-", input=script)
    first, _, last = out.strip().partition("-")
    assert (daemon.jobs_dir / f"{last}.stdout").read_text() == "4\n"


def test_cli_arrays_take_the_options_single_jobs_take(cli: Cli, daemon: Daemon) -> None:
    """--retry, --retry-mem and --gpus reach every element as they reach one job."""
    # Each element fails its first attempt (no mark yet) and succeeds its second.
    script = '#!/bin/sh\nmark="$SJQ_JOBID.tried"\n[ -e "$mark" ] && exit 0\n: > "$mark"\nexit 1\n'
    out = cli.ok(
        "submit", "--array", "1-2", "--retry", "1", "--retry-mem", "2", "--gpus", "0",
        "--wait", "-", input=script,
    )  # fmt: skip
    first, _, last = out.strip().partition("-")
    for jobid in (int(first), int(last)):
        info = daemon.info(jobid)
        assert (info["state"], info["attempts"]) == ("S", 2), info


def test_cli_array_usage_errors(cli: Cli) -> None:
    for args, message in [
        (["--array", "3-1"], "--array: range '3-1' goes down"),
        (["--array", "%4"], "--array %4: a limit alone names no job"),
        (["--each-line", "/nonexistent"], "--each-line: cannot read /nonexistent"),
        (["--each-line", "-", "--array", "1-3"], "--each-line makes its own array"),
    ]:
        r = cli("submit", *args, "--", "true", input="x\n")
        assert r.code == 2, (args, r)
        assert message in r.err, (args, r.err)


def test_client_arrays_and_id_ranges(client: Client, daemon: Daemon) -> None:
    jobs = client.submit_array(command=["sh", "-c", "echo $SJQ_ENTRY"], entries=["x", "y z"])
    assert len(jobs) == 2
    assert str(jobs) == f"{jobs.first}-{jobs.first + 1}"
    assert [s.value for s in jobs.wait(10).values()] == ["S", "S"]
    assert [i.entry for i in jobs.info()] == ["x", "y z"]
    assert [i.id for i in client.status(str(jobs))] == list(jobs.ids)
    assert client.wait(f"{jobs.first}:{jobs.first + 1}", 10) == jobs.wait(10)
    after = client.submit(
        command=["true"], after=str(jobs), afterany=[f"{jobs.first}-{jobs.first}"]
    )
    info = after.info()
    assert (list(info.depends), info.dependency) == (
        list(jobs.ids),
        f"afterok:{jobs.first}:{jobs.first + 1},afterany:{jobs.first}",
    )
    assert after.wait(10).value == "S"
    held = client.submit_array(command=["true"], array="0-30:3", limit=2, hold=True)
    assert len(held) == 11
    client.release(str(held))
    assert set(held.wait(10).values()) == {client.state(held[0])}
    with pytest.raises(ValueError, match="array: range '3-1' goes down"):
        client.submit_array(command=["true"], array="3-1")
    with pytest.raises(ValueError, match="bad id range '9-3'"):
        client.kill("9-3")


@pytest.mark.asyncio
async def test_async_client_arrays(daemon: Daemon) -> None:
    async with AsyncClient(daemon.socket, autostart=False) as c:
        jobs = await c.submit_array(command=["true"], array="1-3", cwd=daemon.jobs_dir)
        assert len(jobs) == 3
        states = await jobs.wait(10)
        assert [s.value for s in states.values()] == ["S", "S", "S"]
        assert [i.array_index for i in await jobs.info()] == [1, 2, 3]
