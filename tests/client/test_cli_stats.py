"""`sjq stats` against a real daemon and real jobs: jobs that allocate known memory and burn
known CPU time, jobs that fail, jobs that hit or dwarf their time limits. The table, the
hints (where they belong and nowhere else), the JSON, the filters, and the Python clients."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import sjq_client._calls
from sjq_client import AsyncClient, Client
from sjq_client._stats_advice import pleasant_mem, suggest_mem
from support import Cli, Daemon, Result, client_env, make_daemon, reap_leftovers

from sjq.units import format_mem

M = 1024**2
ALLOC = 150  # MiB the memory jobs allocate (and touch)
BURN = 1.2  # CPU seconds each memory job burns, in one thread
# One thread that allocates ALLOC MiB, writes every page, then keeps one CPU busy for BURN s.
WORKER = (
    "import time\n"
    f"b = b'x' * ({ALLOC} << 20)\n"
    "t = time.process_time()\n"
    f"while time.process_time() - t < {BURN}:\n"
    "    pass\n"
)
# Allocates 300 MiB with 100M reserved, and waits to be stopped for it.
GREEDY = "import time\nb = b'x' * (300 << 20)\ntime.sleep(30)\n"
HEAD = [
    "NAME", "JOBS", "DONE", "FAILED", "WALL", "MEAN", "WALL", "MAX", "PROCS", "CPU", "EFF",
    "PEAK", "MAX", "RESERVED",
]  # fmt: skip


class Ran:
    """The module's daemon and the ids of the jobs it ran."""

    def __init__(self, daemon: Daemon, cli: Cli, ids: dict[str, list[int]], after: float):
        self.daemon, self.cli, self.ids, self.after = daemon, cli, ids, after

    def info(self, name: str) -> list[dict[str, Any]]:
        return [self.daemon.info(i) for i in self.ids[name]]


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ran]:
    """One daemon, one set of jobs for the whole module (they take a few seconds to run):

    fat.1, fat.2  2 CPUs and 2G reserved; use one CPU and ~ALLOC MiB: hints for both
    fit           1 CPU and 300M reserved for the same work: no hint
    short         `true` with a 2h limit: a time hint only
    bad           exit 3, twice: counted as failures, no hint
    slow          a 1 s limit, hit: a hint to raise it
    greedy        300M used, 100M reserved: stopped, out of memory; a hint for more
    """
    tmp = tmp_path_factory.mktemp("stats")
    # Jobs held to their MEM by the watcher, so that greedy's peak (300M) is seen before it
    # is stopped: in a cgroup the kernel stops it at its limit (100M).
    daemon = make_daemon(tmp, enforce="watch").start()
    cli = Cli(client_env(tmp, SJQ_SOCKET=daemon.socket), daemon.jobs_dir)
    py = ["python3", "-c", WORKER]
    try:
        ids = {
            "fat": [cli.submit("-n", f"fat.{i}", "-m", "2G", "-p", "2", "--", *py) for i in (1, 2)],
            "fit": [cli.submit("-n", "fit", "-m", "300M", "-p", "1", "--", *py)],
            "short": [cli.submit("-n", "short", "-t", "2h", "--", "true")],
            "bad": [cli.submit("-n", "bad", "--", "sh", "-c", "exit 3") for _ in range(2)],
            "slow": [cli.submit("-n", "slow", "-t", "1", "--", "sleep", "30")],
            "greedy": [cli.submit("-n", "greedy", "-m", "100M", "--", "python3", "-c", GREEDY)],
        }
        every = [i for group in ids.values() for i in group]
        r = cli("wait", *map(str, every))
        assert r.code == 1, r  # bad, slow and greedy failed
        yield Ran(daemon, cli, ids, time.time())
    finally:
        daemon.stop()
        reap_leftovers(str(tmp))


def rows(out: str) -> dict[str, list[str]]:
    """The table's rows by name (names here have no spaces)."""
    lines = out.split("\n\n", maxsplit=1)[0].splitlines()
    assert lines[0].split() == HEAD
    return {line.split()[0]: line.split()[1:] for line in lines[1:]}


def section(out: str, title: str) -> list[str]:
    for block in out.split("\n\n"):
        if block.startswith(f"{title}:\n"):
            return [line.strip() for line in block.splitlines()[1:]]
    return []


def precise(infos: list[dict[str, Any]]) -> bool:
    return all(i.get("measured_by") for i in infos)


def efficiency(infos: list[dict[str, Any]]) -> str:
    cpu = sum(i["cpu_user"] + i["cpu_sys"] for i in infos)
    capacity = sum((i["ended"] - i["started"]) * i["procs"] for i in infos)
    return f"{cpu / capacity:.0%}"


def test_the_table_hints_and_failures(ran: Ran) -> None:
    out = ran.cli.ok("stats")
    print(out)  # shown when the test fails
    table = rows(out)
    assert sorted(table) == ["bad", "fat.#", "fit", "greedy", "short", "slow"]

    fat, fit = ran.info("fat"), ran.info("fit")
    peak = max(i["maxrss"] for i in fat)
    assert ALLOC * M <= peak < (ALLOC + 50) * M  # what the jobs allocated, plus Python
    mark = "" if precise(fat) else "~"
    assert table["fat.#"][:3] == ["2", "2", "0"]
    assert table["fat.#"][5:] == ["2", efficiency(fat), mark + format_mem(peak), "2G"]
    fat_walls = [i["ended"] - i["started"] for i in fat]
    assert min(fat_walls) >= BURN  # so the CPU figures count (jobs of a second or more)
    assert seconds(table["fat.#"][4]) >= BURN  # WALL MAX
    assert int(efficiency(fat).rstrip("%")) <= 51  # one busy thread on two CPUs
    fit_peak = fit[0]["maxrss"]
    assert table["fit"] == [
        "1", "1", "0", *table["fit"][3:5], "1", efficiency(fit),
        ("" if precise(fit) else "~") + format_mem(fit_peak), "300M",
    ]  # fmt: skip
    assert table["bad"][:3] == ["2", "0", "2"]
    assert table["slow"][:3] == ["1", "0", "1"]
    assert table["short"][:3] == ["1", "1", "0"]
    (greedy,) = ran.info("greedy")
    assert greedy["state"] == "F"
    assert greedy["reason"].startswith("out of memory (limit 100M, peak ")
    assert table["greedy"][:3] == ["1", "0", "1"]
    assert table["greedy"][-1] == "100M"
    more = format_mem(pleasant_mem(max(200 * M, suggest_mem(greedy["maxrss"]))))

    unsure = "" if precise(fat) else " (not measured precisely)"
    want = format_mem(suggest_mem(peak))
    assert ALLOC * M < suggest_mem(peak) <= 2 * ALLOC * M
    hints = section(out, "hints")
    assert sorted(hints) == sorted(
        [
            f"fat.#: peak {format_mem(peak)}{unsure} of 2G reserved; --mem {want} would do",
            f"fat.#: used at most {max_cores(fat):.1f} of 2 CPUs (efficiency"
            f" {efficiency(fat)}); --procs 1 would do",
            "short: ran at most 0:00:00 of a 2:00:00 limit; --time 10m would do",
            "slow: the job hit the time limit of 0:00:01; try --time 1m",
            f"greedy: the job ran out of memory at 100M; try --mem {more}",
        ]
    )  # and none for fit or bad
    bad = ", ".join(map(str, ran.ids["bad"]))
    assert section(out, "not done") == [
        f"bad: 2 jobs: exit status 3 ({bad})",
        f"greedy: 1 job: out of memory ({ran.ids['greedy'][0]})",
        f"slow: 1 job: time limit ({ran.ids['slow'][0]})",
    ]
    if precise(fat + fit):
        assert "~" not in out
    else:
        assert "\n~ peak memory of 8 jobs not measured precisely" in out  # every job ran


def seconds(text: str) -> float:
    """A WALL cell: 1.8s, or 0:01:02 from ten seconds on."""
    if text.endswith("s"):
        return float(text[:-1])
    h, m, s = text.split(":")
    return int(h) * 3600 + int(m) * 60 + int(s)


def max_cores(infos: list[dict[str, Any]]) -> float:
    return max((i["cpu_user"] + i["cpu_sys"]) / (i["ended"] - i["started"]) for i in infos)


def test_json_has_the_same_figures(ran: Ran) -> None:
    data = json.loads(ran.cli.ok("stats", "--json", "--sort", "wall"))
    assert data["since"] is None
    assert data["jobs"] == 8
    groups = {g["name"]: g for g in data["groups"]}
    # most wall time first: two jobs of BURN s, then one
    assert [g["name"] for g in data["groups"]][:2] == ["fat.#", "fit"]
    fat = groups["fat.#"]
    infos = ran.info("fat")
    assert (fat["names"], fat["jobs"], fat["done"], fat["failed"], fat["ran"]) == (2, 2, 2, 0, 2)
    assert fat["states"] == {"S": 2}
    assert fat["peak_max"] == max(i["maxrss"] for i in infos)
    assert fat["reserved_min"] == fat["reserved_max"] == 2 * 1024**3
    assert fat["procs"] == 2
    assert fat["wall_max"] == pytest.approx(max(i["ended"] - i["started"] for i in infos))
    assert f"{fat['cpu_efficiency']:.0%}" == efficiency(infos)
    assert fat["peak_imprecise"] == (0 if precise(infos) else 2)
    assert [(h["kind"], h["option"], h["value"]) for h in fat["hints"]] == [
        ("mem", "--mem", format_mem(suggest_mem(fat["peak_max"]))),
        ("procs", "--procs", "1"),
    ]
    assert groups["fit"]["hints"] == []
    assert groups["bad"]["hints"] == []
    assert groups["bad"]["failures"] == [
        {"reason": "exit status 3", "count": 2, "jobs": ran.ids["bad"]}
    ]
    assert groups["bad"]["wall_mean"] is not None  # they ran, briefly
    assert [(h["kind"], h["value"]) for h in groups["slow"]["hints"]] == [("time-limit", "1m")]
    assert groups["slow"]["time_limit"] == 1.0
    assert [(h["kind"], h["value"]) for h in groups["short"]["hints"]] == [("time", "10m")]
    greedy = groups["greedy"]
    assert [(h["kind"], h["option"]) for h in greedy["hints"]] == [("oom", "--mem")]
    assert greedy["failures"] == [
        {"reason": "out of memory", "count": 1, "jobs": ran.ids["greedy"]}
    ]


def test_filters_grouping_and_sorting(ran: Ran) -> None:
    cli = ran.cli
    assert sorted(rows(cli.ok("stats", "--by", "name"))) == [
        "bad", "fat.1", "fat.2", "fit", "greedy", "short", "slow",
    ]  # fmt: skip
    assert sorted(rows(cli.ok("stats", "--name", "fat*", "-n", "slow"))) == ["fat.#", "slow"]
    assert sorted(rows(cli.ok("stats", str(ran.ids["fit"][0])))) == ["fit"]
    assert list(rows(cli.ok("stats", "--sort", "failed"))) == [
        "bad", "greedy", "slow", "fat.#", "fit", "short",
    ]  # fmt: skip
    # the largest peak first: greedy's, unless the watcher stopped it (over its 100M) before
    # it passed the 150M of fat's jobs, which a busy machine can make it do
    greedy, fat = ran.info("greedy")[0]["maxrss"], max(i["maxrss"] for i in ran.info("fat"))
    assert next(iter(rows(cli.ok("stats", "--sort", "mem")))) == (
        "greedy" if greedy > fat else "fat.#"
    )
    assert cli.ok("stats", "--name", "nothing*") == "no ended jobs match\n"

    late = cli.submit("-n", "late", "--", "true")
    assert cli("wait", str(late)).code == 0
    since = datetime.fromtimestamp(ran.after).isoformat()  # local time, microseconds
    out = cli.ok("stats", "--since", since)
    assert list(rows(out)) == ["late"]
    assert out.endswith(f"jobs ended since {since[:19].replace('T', ' ')}\n")
    assert json.loads(cli.ok("stats", "--json", "--since", since))["since"] == pytest.approx(
        ran.after, abs=1e-5
    )
    assert len(rows(cli.ok("stats", "--since", "1d"))) == 7
    assert cli.ok("stats", "--since", "0").startswith("no ended jobs since ")


def test_the_python_clients_read_in_chunks(ran: Ran, tmp_path: Path) -> None:
    """A config whose sjq.maxline is tiny makes both clients ask for the jobs in many short
    INFO lines (each of a few ids); what they gather is the same."""
    with Client(ran.daemon.socket, autostart=False) as client:
        whole = client.stats()
    rc = tmp_path / "sjqrc"
    rc.write_text("sjq.maxline = 12\n")  # "INFO 1:2:3:4" fits it; ids of 2 digits go 2 or 3
    assert sjq_client._calls.chunks(tuple(range(1, 9)), 12) == [(1, 2, 3, 4), (5, 6, 7, 8)]
    with Client(ran.daemon.socket, config=rc, autostart=False) as client:
        assert client._maxline == 12  # what the plan chunks by
        assert client.stats() == whole
        assert [g.name for g in client.stats(names=["fat.*"], by="name").groups] == [
            "fat.1",
            "fat.2",
        ]

    async def ask() -> Any:
        async with AsyncClient(ran.daemon.socket, config=rc, autostart=False) as client:
            assert client._maxline == 12
            return await client.stats()

    assert asyncio.run(ask()) == whole
    assert whole.jobs == sum(g.jobs for g in whole.groups) >= 8


def test_usage_errors_and_no_daemon(sjq_main: Callable[..., Result], tmp_path: Path) -> None:
    cases = [
        (["stats", "--since", "soon"], "--since: cannot read duration 'soon'"),
        (["stats", "--since", "2999-01-01"], "--since: '2999-01-01' is in the future"),
        (["stats", "--since", "2026-13-01"], "cannot read '2026-13-01' as a date"),
        (["stats", "--since", "25:00"], "not a time of day"),
        (["stats", "--by", "prefix"], "--by: 'prefix' is not one of auto, name, digits"),
        (["stats", "--sort", "size"], "--sort: 'size' is not one of name, jobs"),
        (["stats", "0"], "not a job id"),
    ]
    for args, message in cases:
        r = sjq_main(*args)
        assert r.code == 2, (args, r)
        assert message in r.err, (args, r.err)
        assert r.out == ""
    sock = str(tmp_path / "none.sock")
    r = sjq_main("stats", SJQ_SOCKET=sock)
    assert r.code == 1
    assert f"no sjq daemon is running on {sock}" in r.err
    assert not os.path.exists(sock)


def test_a_daemon_with_no_ended_jobs(cli: Cli) -> None:
    assert cli.ok("stats") == "no ended jobs\n"
    assert json.loads(cli.ok("stats", "--json")) == {"since": None, "jobs": 0, "groups": []}


def test_since_a_time_of_day_is_the_last_such_time() -> None:
    from sjq_client._cli_stats import parse_since

    now = time.mktime((2026, 11, 20, 1, 30, 0, 0, 0, -1))
    assert parse_since("23:00", now) == time.mktime((2026, 11, 19, 23, 0, 0, 0, 0, -1))
    assert parse_since("01:00", now) == now - 1800
    assert parse_since("1:29:30", now) == now - 30
    assert parse_since("90m", now) == now - 5400
    assert parse_since("1-00:00:00", now) == now - 86400
    assert parse_since("2026-11-19", now) == time.mktime((2026, 11, 19, 0, 0, 0, 0, 0, -1))
    assert parse_since("2026-11-19T12:00:00+00:00", now) == 1795089600  # a zone given: UTC
