"""Job arrays with a real daemon: ARRAY's specs and ENTRY lines, each element a job with
its own id and environment, the script stored once, %N honoured (after a restart too),
dependencies on an array's range, refusals."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from support import SH, Daemon, Gate, Raw, states

REPORT = SH + 'echo "$SJQ_JOBID $SJQ_ARRAY_ID $SJQ_ARRAY_INDEX ${SJQ_ENTRY-none}"\n'


def submit(d: Daemon, script: str, **options: object) -> bytes:
    options.setdefault("cwd", str(d.jobs_dir))
    with Raw(d.socket) as c:
        return c.submit(script, **options)


def ids(reply: bytes) -> range:
    assert reply.startswith(b"OK "), reply
    first, _, last = reply[3:-2].decode().partition("-")
    return range(int(first), int(last) + 1)


def output(d: Daemon, jobid: int) -> str:
    return (d.jobs_dir / f"{jobid}.stdout").read_text()


@pytest.mark.parametrize(
    ("spec", "indexes"),
    [("1-4", [1, 2, 3, 4]), ("0-9:3", [0, 3, 6, 9]), ("7,1,5", [1, 5, 7]), ("2", [2])],
)
def test_each_element_is_a_job_with_its_index(
    daemon: Daemon, spec: str, indexes: list[int]
) -> None:
    elements = ids(submit(daemon, REPORT, array=spec))
    assert len(elements) == len(indexes)
    for jobid, index in zip(elements, indexes, strict=True):
        assert daemon.wait_state(jobid, "SFAKE") == "S"
        assert output(daemon, jobid) == f"{jobid} {elements[0]} {index} none\n"
        info = daemon.info(jobid)
        assert (info["array_id"], info["array_index"], info["entry"]) == (elements[0], index, None)
    single = int(submit(daemon, REPORT)[3:-2])  # not an array: no array variables
    daemon.wait_state(single, "S")
    assert daemon.info(single)["array_id"] is None


def test_entries_and_the_script_stored_once(daemon: Daemon) -> None:
    lines = ["a.fq", "b c.fq", "ü.fq"]
    elements = ids(submit(daemon, REPORT, entry=lines, env=["SECRET=x" * 100]))
    for jobid, (k, line) in zip(elements, enumerate(lines), strict=True):
        daemon.wait_state(jobid, "S")
        assert output(daemon, jobid) == f"{jobid} {elements[0]} {k} {line}\n"
    db = sqlite3.connect(f"file:{daemon.settings['sjq.db']}?mode=ro", uri=True)
    try:
        assert db.execute("SELECT count(*) FROM arrays").fetchone()[0] == 1
        rows = db.execute(
            "SELECT length(script), env FROM jobs WHERE array_id = ?", (elements[0],)
        ).fetchall()
    finally:
        db.close()
    assert rows == [(0, None)] * 3


def test_at_most_n_elements_run_at_once(daemon: Daemon, gate: Callable[..., Gate]) -> None:
    gates = [gate(f"e{i}") for i in range(3)]
    script = SH + "".join(
        f'[ "$SJQ_ARRAY_INDEX" = {i} ] && {{ {g.wait.strip()}; }}\n' for i, g in enumerate(gates)
    )
    elements = ids(submit(daemon, script + "true\n", array="0-2%1"))
    daemon.wait_state(elements[0], "R")
    other = int(submit(daemon, SH + "true\n")[3:-2])  # a CPU is free: the pass has run
    daemon.wait_state(other, "S")
    assert [states(daemon)[i] for i in elements] == ["R", "Q", "Q"]
    limit = f"array {elements[0]}: 1 element running, its limit (%1)"
    assert [daemon.info(i)["waiting_for"] for i in elements] == ["", limit, limit]
    gates[0].open()
    daemon.wait_state(elements[1], "R")
    assert states(daemon)[elements[2]] == "Q"
    daemon.req("STOP")  # the limit holds for the next daemon too
    assert daemon.proc is not None
    daemon.proc.wait(15)
    daemon.start()
    assert [states(daemon)[i] for i in elements] == ["S", "R", "Q"]
    other = int(submit(daemon, SH + "true\n")[3:-2])
    daemon.wait_state(other, "S")
    assert states(daemon)[elements[2]] == "Q"
    gates[1].open()
    gates[2].open()
    daemon.wait_state(elements[2], "S")


def test_output_names_of_elements(daemon: Daemon) -> None:
    elements = ids(submit(daemon, REPORT, array="4,7", stdout="%A_%a.%j.out", stderr="e%%"))
    for jobid, index in zip(elements, (4, 7), strict=True):
        daemon.wait_state(jobid, "S")
        name = f"{elements[0]}_{index}.{jobid}.out"
        assert daemon.info(jobid)["stdout"] == str(daemon.jobs_dir / name)
        assert (daemon.jobs_dir / name).read_text().startswith(f"{jobid} ")
    assert (daemon.jobs_dir / "e%").exists()


def test_a_range_names_every_element(daemon: Daemon, gate: Callable[..., Gate]) -> None:
    g = gate()
    elements = ids(submit(daemon, SH + g.wait, array="1-3"))
    after = int(
        submit(daemon, SH + "true\n", dependency=f"afterok:{elements[0]}-{elements[-1]}")[3:-2]
    )
    assert daemon.info(after)["dependency"] == f"afterok:{elements[0]}-{elements[-1]}"
    g.open()
    daemon.wait_state(after, "S")


def test_a_range_waits_for_every_element_and_a_failed_one_aborts_afterok(
    daemon: Daemon, gate: Callable[..., Gate]
) -> None:
    g = gate()
    # the element of index 2 waits for the gate, then fails; the others succeed at once
    script = SH + f'[ "$SJQ_ARRAY_INDEX" = 2 ] && {{ {g.wait.strip()}; exit 3; }}\ntrue\n'
    elements = ids(submit(daemon, script, array="1-3"))
    span = f"{elements[0]}-{elements[-1]}"
    on_success = int(submit(daemon, SH + "true\n", dependency=f"afterok:{span}")[3:-2])
    anyway = int(submit(daemon, SH + "true\n", dependency=f"afterany:{span}")[3:-2])
    daemon.wait_state(elements[0], "S")
    daemon.wait_state(elements[2], "S")
    assert daemon.state(elements[1]) == "R"
    for jid in (on_success, anyway):
        assert daemon.state(jid) == "H"
        assert daemon.info(jid)["waiting_for"] == f"job {elements[1]}"
    g.open()
    assert daemon.wait_state(on_success, "SFAKE") == "A"
    assert daemon.info(on_success)["reason"] == f"dependency {elements[1]} ended in F"
    assert daemon.wait_state(anyway, "SFAKE") == "S"


def test_a_large_array_is_accepted_whole(daemon: Daemon) -> None:
    elements = ids(submit(daemon, SH + "true\n", array="1-10000", hold=True))
    assert len(elements) == 10_000
    assert daemon.req("PING") == b"OK U:10000\r\n"
    daemon.req(f"KILL {elements[-1]}")
    assert daemon.state(elements[-1]) == "K"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"array": "5-1"}, "ARRAY: range '5-1' goes down"),
        ({"array": "1-200000"}, "ARRAY: more than 100000 elements"),
        ({"array": "0-9:0"}, "ARRAY: the step of '0-9:0' must be a whole number >= 1"),
        ({"array": "1-4%0"}, "ARRAY: the limit after % must be a whole number >= 1, got '0'"),
        ({"array": "%2"}, "ARRAY: a limit alone (%N) names no element"),
        ({"array": "x"}, "ARRAY: 'x' is not an index or a range"),
        ({"array": "1-3", "entry": ["a", "b"]}, "ARRAY names 3 elements but 2 ENTRY lines"),
        ({"array": "1", "entry": ["a"], "name": "x\ty"}, "NAME must not contain a tab"),
    ],
)
def test_refusals(shared_daemon: Daemon, options: dict[str, object], message: str) -> None:
    reply = submit(shared_daemon, SH + "true\n", **options)
    assert reply.startswith(b"ERROR "), reply
    assert message in reply.decode(), reply


def test_a_refused_array_uses_up_no_id(daemon: Daemon, tmp_path: Path) -> None:
    first = int(submit(daemon, SH + "true\n")[3:-2])
    assert submit(daemon, SH + "true\n", array="1-3", cwd=str(tmp_path / "missing")).startswith(
        b"ERROR cwd => "
    )
    assert ids(submit(daemon, SH + "true\n", array="1-2")) == range(first + 1, first + 3)
