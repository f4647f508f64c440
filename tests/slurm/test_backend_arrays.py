"""sjq arrays under sjq.backend = slurm, against the real Slurm: the elements handed over together
go as one ``sbatch --array``, each element still its own sjq job (its variables, its output
files, its state, KILL, HOLD and RELEASE of its own, found again by its tag after a crash), and
an array's limit (%N) is Slurm's."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable

import pytest
from support import Daemon, Gate, Raw, wait_for

from sjq.slurm.args import parse_batch_tag, parse_tag

from .cluster import NODE_CPUS, Cluster
from .test_backend import WAIT, daemon_id, slurm_daemon

REPORT = '#!/bin/sh\necho "$SJQ_JOBID $SJQ_ARRAY_ID $SJQ_ARRAY_INDEX ${SJQ_ENTRY-none} $JOB_ID"\n'


def submit(d: Daemon, script: str, **options: object) -> range:
    """The ids of the elements of an array SUBMIT."""
    options.setdefault("cwd", str(d.jobs_dir))
    with Raw(d.socket) as c:
        reply = c.submit(script, **options)
    assert reply.startswith(b"OK "), reply
    first, _, last = reply[3:-2].decode().partition("-")
    return range(int(first), int(last or first) + 1)


def slurm_records(cluster: Cluster, d: Daemon) -> list[tuple[str, str, str]]:
    """(array job id, task id, comment) of every Slurm record of ``d``'s jobs."""
    ident = daemon_id(d)
    out = cluster.command(
        "squeue", "-h", "-t", "all", "-r", "-O", "ArrayJobID:|,ArrayTaskID:|,Comment:\x1e"
    )
    found = []
    for rec in out.split("\x1e"):
        array, _, rest = rec.strip().partition("|")
        task, _, comment = rest.partition("|")
        comment = comment.strip()
        tag = parse_tag(comment) or parse_batch_tag(comment)
        if tag is not None and tag[0] == ident:
            found.append((array.strip(), task.strip(), comment))
    return found


def commands(d: Daemon) -> dict[str, int]:
    """The Slurm commands a stopped daemon ran (its log's last line on them)."""
    found = re.findall(r"Slurm commands run: (.*)$", d.log, re.M)
    assert found, d.log
    return {c: int(n) for c, _, n in (x.rpartition(" ") for x in found[-1].split(", "))}


def test_an_array_is_one_sbatch_and_each_element_its_own_job(
    slurm: Cluster, daemon_factory: Callable[..., Daemon]
) -> None:
    d = slurm_daemon(daemon_factory).start()
    elements = submit(d, REPORT, array="3-9:2,20", name="arr")
    entries = submit(d, REPORT, entry=["a b", "it's", "ü"], stdout="e%a.out", stderr="e%a.out")
    for jobid in [*elements, *entries]:
        assert d.wait_state(jobid, "SFAKE", WAIT) == "S", d.info(jobid)
    for jobid, index in zip(elements, [3, 5, 7, 9, 20], strict=True):
        out = (d.jobs_dir / f"{jobid}.stdout").read_text()
        assert out == f"{jobid} {elements[0]} {index} none {jobid}\n"
        assert (d.jobs_dir / f"{jobid}.stderr").read_text() == ""
    for k, (jobid, line) in enumerate(zip(entries, ["a b", "it's", "ü"], strict=True)):
        out = (d.jobs_dir / f"e{k}.out").read_text()
        assert out == f"{jobid} {entries[0]} {k} {line} {jobid}\n"
    # One Slurm array per SUBMIT, task N being element first + N; INFO says which task.
    records = slurm_records(slurm, d)
    assert len(records) == len(elements) + len(entries)
    by_array = Counter(a for a, _, _ in records)
    assert sorted(by_array.values()) == [3, 5]
    for jobid in [*elements, *entries]:
        info = d.info(jobid)
        first = elements[0] if jobid in elements else entries[0]
        array_id, _, task = info["backend_id"].partition("_")
        assert int(task) == jobid - first
        assert (array_id, task) in {(a, t) for a, t, _ in records}
        assert info["node"] == slurm.node
        assert info["measured_by"] == "slurm"
    d.stop()
    ran = commands(d)
    assert ran["sbatch"] == 1 + 2, ran  # sbatch --version at the start, then one per array


def test_the_arrays_limit_is_slurms(
    slurm: Cluster, daemon_factory: Callable[..., Daemon], gate: Callable[[str], Gate]
) -> None:
    d = slurm_daemon(daemon_factory).start()
    g = gate("g")
    ledger = d.jobs_dir / "ledger"
    script = (
        f'#!/bin/sh\necho "start $SJQ_JOBID" >> {ledger}\n{g.wait}\n'
        f'echo "end $SJQ_JOBID" >> {ledger}\n'
    )
    elements = submit(d, script, array="1-5%2")
    wait_for(
        lambda: ledger.exists() and len(ledger.read_text().split("\n")) > 2, WAIT, "two running"
    )

    def shown() -> str:
        return "".join(sorted(d.state(j) for j in elements))

    wait_for(lambda: shown() == "QQQRR", WAIT, "two running, three waiting in Slurm")
    waiting = [j for j in elements if d.state(j) == "Q"]
    wait_for(
        lambda: all(d.info(j)["reason"] == "Slurm: JobArrayTaskLimit" for j in waiting),
        WAIT,
        "Slurm's reason for the rest",
    )
    spec = slurm.command("squeue", "-h", "-j", d.info(elements[0])["backend_id"].split("_")[0],
                         "-o", "%K", "-t", "PD").split()  # fmt: skip
    assert spec, "the pending tasks"
    assert all(s.endswith("%2") for s in spec), spec
    g.open()
    for jobid in elements:
        assert d.wait_state(jobid, "SFAKE", WAIT) == "S"
    running = peak = 0
    for line in ledger.read_text().split("\n"):
        if line.startswith("start"):
            running += 1
            peak = max(peak, running)
        elif line.startswith("end"):
            running -= 1
    assert peak == 2


def test_kill_hold_and_release_one_element_waiting_in_slurm(
    slurm: Cluster, daemon_factory: Callable[..., Daemon], gate: Callable[[str], Gate]
) -> None:
    d = slurm_daemon(daemon_factory).start()
    g = gate("g")
    big = d.submit(f"#!/bin/sh\n{g.wait}", procs=NODE_CPUS)
    d.wait_state(big, "R", WAIT)
    a, b, c, e = submit(d, "#!/bin/sh\necho $SJQ_JOBID\n", array="1-4")
    for jobid in (a, b, c, e):
        wait_for(lambda j=jobid: d.info(j)["backend_id"], WAIT, "the elements in Slurm")
    assert d.req(f"HOLD {b}") == b"OK\r\n"
    assert d.req(f"KILL {c}") == b"OK\r\n"
    assert d.wait_state(b, "U", WAIT) == "U"
    assert d.info(b)["reason"] == "Slurm: JobHeldUser"
    assert d.wait_state(c, "K", WAIT) == "K"
    assert d.info(c)["reason"] == "killed by request"
    g.open()
    assert d.wait_state(a, "SFAKE", WAIT) == "S"
    assert d.wait_state(e, "SFAKE", WAIT) == "S"
    assert d.state(b) == "U"  # held in Slurm: the free node does not start it
    assert d.req(f"RELEASE {b}") == b"OK\r\n"
    assert d.wait_state(b, "SFAKE", WAIT) == "S"
    assert not (d.jobs_dir / f"{c}.stdout").exists()


def test_pause_holds_the_array_back_and_a_held_element_follows_alone(
    slurm: Cluster, daemon_factory: Callable[..., Daemon]
) -> None:
    d = slurm_daemon(daemon_factory).start()
    assert d.req("PAUSE") == b"OK\r\n"
    a, b, c = submit(d, REPORT, array="1-3%2")
    assert d.req(f"HOLD {b}") == b"OK\r\n"  # held in sjq: it never reached Slurm
    assert [d.state(j) for j in (a, b, c)] == ["Q", "U", "Q"]
    assert not slurm_records(slurm, d)
    assert d.req("RESUME") == b"OK\r\n"
    for jobid in (a, c):
        assert d.wait_state(jobid, "SFAKE", WAIT) == "S"
    assert d.info(a)["backend_id"].split("_")[0] == d.info(c)["backend_id"].split("_")[0]
    assert d.state(b) == "U"
    assert d.req(f"RELEASE {b}") == b"OK\r\n"
    assert d.wait_state(b, "SFAKE", WAIT) == "S"
    assert "_" not in d.info(b)["backend_id"]  # alone: an sbatch of its own
    assert (d.jobs_dir / f"{b}.stdout").read_text() == f"{b} {a} 2 none {b}\n"


def test_a_late_element_waits_for_room_and_can_be_held_meanwhile(
    slurm: Cluster, daemon_factory: Callable[..., Daemon], gate: Callable[[str], Gate]
) -> None:
    d = slurm_daemon(daemon_factory).start()
    g = gate("g")
    assert d.req("PAUSE") == b"OK\r\n"
    a, b, c = submit(d, f"#!/bin/sh\n{g.wait}", array="1-3%1")
    assert d.req(f"HOLD {c}") == b"OK\r\n"
    assert d.req("RESUME") == b"OK\r\n"
    wait_for(lambda: d.info(b)["backend_id"], WAIT, "a and b in Slurm, as one batch")
    assert d.req(f"RELEASE {c}") == b"OK\r\n"
    # a and b are in Slurm's hands: c may not join them there until one has ended.
    why = f"waiting for Slurm: array {a} has 1 elements there, its limit (%1)"
    wait_for(lambda: d.info(c)["reason"] == why, WAIT, "INFO to say why c waits")
    assert d.state(c) == "Q"
    assert d.info(c)["backend_id"] is None
    # Held while it waits for room: back in sjq's queue, held; released: handed over again.
    assert d.req(f"HOLD {c}") == b"OK\r\n"
    assert d.wait_state(c, "U", WAIT) == "U"
    assert d.info(c)["reason"] == ""
    assert d.req(f"RELEASE {c}") == b"OK\r\n"
    wait_for(lambda: d.info(c)["reason"] == why, WAIT, "c waiting for room again")
    g.open()
    for jobid in (a, b, c):
        assert d.wait_state(jobid, "SFAKE", WAIT) == "S"
    assert "_" not in d.info(c)["backend_id"]  # alone, once there was room


def test_an_element_cancelled_in_slurm_while_it_waits_ends_in_k(
    slurm: Cluster, daemon_factory: Callable[..., Daemon], gate: Callable[[str], Gate]
) -> None:
    d = slurm_daemon(daemon_factory).start()
    g = gate("g")
    big = d.submit(f"#!/bin/sh\n{g.wait}", procs=NODE_CPUS)
    d.wait_state(big, "R", WAIT)
    a, b = submit(d, "#!/bin/sh\ntrue\n", array="0-1")
    sid = wait_for(lambda: d.info(b)["backend_id"], WAIT, "the element in Slurm")
    slurm.command("scancel", sid)  # a pending task leaves squeue at once, not CANCELLED
    assert d.wait_state(b, "SFAKE", WAIT) == "K"
    assert d.info(b)["reason"] == "cancelled in Slurm before it started"
    g.open()
    assert d.wait_state(a, "SFAKE", WAIT) == "S"


def test_elements_that_cannot_share_an_sbatch_go_alone(
    slurm: Cluster, daemon_factory: Callable[..., Daemon]
) -> None:
    d = slurm_daemon(daemon_factory).start()
    # A relative interpreter: each element goes alone and fails as a single job of it does
    # (slurmstepd's execve fails: exit status 2).
    alone = submit(d, "#!sh\necho relative\n", array="1-2")
    for jobid in alone:
        assert d.wait_state(jobid, "SFAKE", WAIT) == "F"
        assert d.info(jobid)["reason"] == "exit status 2"
        assert "_" not in d.info(jobid)["backend_id"]
    # An element whose output file cannot be opened ends in E, as on one machine; the rest run
    # (in one sbatch).
    (d.jobs_dir / "out" / "2.txt").mkdir(parents=True)
    ok, bad, ok2 = submit(d, REPORT, array="1-3", stdout="out/%a.txt")
    assert d.wait_state(bad, "SFAKE", WAIT) == "E"
    assert d.info(bad)["reason"] == f"stdout => {d.jobs_dir}/out/2.txt is a directory"
    for jobid, index in ((ok, 1), (ok2, 3)):
        assert d.wait_state(jobid, "SFAKE", WAIT) == "S"
        assert (d.jobs_dir / "out" / f"{index}.txt").read_text().startswith(f"{jobid} ")
    assert d.info(ok)["backend_id"].split("_")[0] == d.info(ok2)["backend_id"].split("_")[0]


def test_output_directories_are_made_as_the_keeper_makes_them(
    slurm: Cluster, daemon_factory: Callable[..., Daemon]
) -> None:
    d = slurm_daemon(daemon_factory).start()
    single = d.submit(REPORT, patterns=True, stdout="logs/%j.out")
    elements = submit(d, REPORT, array="1-2", stdout="alogs/%a/out")
    assert d.wait_state(single, "SFAKE", WAIT) == "S"
    assert (d.jobs_dir / "logs" / f"{single}.out").read_text().startswith(f"{single} ")
    for jobid, index in zip(elements, (1, 2), strict=True):
        assert d.wait_state(jobid, "SFAKE", WAIT) == "S"
        assert (d.jobs_dir / "alogs" / str(index) / "out").read_text().startswith(f"{jobid} ")


@pytest.mark.timeout(180)
def test_sigkill_mid_array_submits_nothing_twice(
    slurm: Cluster, daemon_factory: Callable[..., Daemon]
) -> None:
    d = slurm_daemon(daemon_factory).start()
    ledger = d.jobs_dir / "ledger"
    script = f'#!/bin/sh\necho "$SJQ_JOBID" >> "{ledger}"\n'
    arrays = []
    for n in (6, 3, 8):
        arrays.append(submit(d, script, array=f"1-{n}"))
        d.kill9()  # sbatch may be under way, or its answer not yet recorded
        d.start()
    jobs = [j for a in arrays for j in a]
    wait_for(lambda: all(d.state(j) in "SFAKE" for j in jobs), 120, "every element to end")
    assert {d.state(j) for j in jobs} == {"S"}
    ran = Counter(int(x) for x in ledger.read_text().split())
    assert ran == Counter(jobs)  # each once
    records = slurm_records(slurm, d)
    owners: Counter[int] = Counter()
    for _array, task, comment in records:
        tag = parse_batch_tag(comment)
        owners[tag[1] + int(task) if tag else parse_tag(comment)[1]] += 1  # type: ignore[index]
    assert owners == Counter(jobs)  # nothing submitted twice
