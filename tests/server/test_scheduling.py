"""The scheduler seen through a real daemon: CPU and memory limits, FCFS with backfill, and
passes triggered by events (not by the periodic sjq.schedtime pass)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from support import SH, Daemon, Gate, read_when, states, wait_for

PROMPT = 3.0  # seconds: "at once" for a loaded 2-core machine; sjq.schedtime is an hour


def test_no_more_jobs_run_than_cpus(
    daemon_factory: Callable[..., Daemon], gate: Callable[[str], Gate]
) -> None:
    d = daemon_factory(maxprocs="2").start()
    gates = [gate(f"g{i}") for i in range(3)]
    a, b, c = (d.submit(SH + g.wait) for g in gates)
    d.wait_state(b, "R")
    assert states(d) == {a: "R", b: "R", c: "Q"}
    gates[0].open()
    d.wait_state(c, "R")
    assert states(d) == {a: "S", b: "R", c: "R"}
    gates[1].open()
    gates[2].open()
    d.wait_state(c, "S")


def test_a_big_job_waits_and_a_later_small_one_backfills(
    daemon_factory: Callable[..., Daemon], gate: Callable[[str], Gate]
) -> None:
    d = daemon_factory(maxprocs="2").start()
    ga, gs = gate("a"), gate("small")
    a = d.submit(SH + ga.wait)
    big = d.submit(SH + "echo big\n", procs="2")
    small = d.submit(SH + gs.wait)
    d.wait_state(small, "R")
    assert states(d) == {a: "R", big: "Q", small: "R"}
    ga.open()
    d.wait_state(a, "S")
    assert d.state(big) == "Q"  # one CPU free is not enough for two
    gs.open()
    d.wait_state(big, "S")
    assert d.info(big)["started"] >= d.info(small)["ended"]


def test_memory_reservations_never_overcommit(
    daemon_factory: Callable[..., Daemon], gate: Callable[[str], Gate]
) -> None:
    d = daemon_factory(maxprocs="4", maxmem="1G").start()
    g1, g3 = gate("one"), gate("three")
    m1 = d.submit(SH + g1.wait, mem="600M")
    m2 = d.submit(SH + "echo two\n", mem="600M")
    m3 = d.submit(SH + g3.wait, mem="300M")  # fits beside the first: backfills
    d.wait_state(m3, "R")
    assert states(d) == {m1: "R", m2: "Q", m3: "R"}
    assert d.info(m2)["mem"] == 600 * 1024 * 1024
    g1.open()
    d.wait_state(m2, "S")
    assert d.info(m2)["started"] >= d.info(m1)["ended"]
    g3.open()
    d.wait_state(m3, "S")


def test_fcfs_lower_id_first_even_if_released_later(
    daemon_factory: Callable[..., Daemon], gate: Callable[[str], Gate]
) -> None:
    d = daemon_factory(maxprocs="1").start()
    g = gate("g")
    order = d.jobs_dir / "order"
    rec = SH + f'echo "$SJQ_JOBID" >> {order}\n'
    blocker = d.submit(SH + g.wait)
    d.wait_state(blocker, "R")
    early = d.submit(rec, hold=True)
    mid = d.submit(rec)
    late = d.submit(rec)
    d.req(f"RELEASE {early}")  # back in Q after mid and late entered it
    assert states(d) == {blocker: "R", early: "Q", mid: "Q", late: "Q"}
    g.open()
    d.wait_state(late, "S")
    assert order.read_text().split() == [str(early), str(mid), str(late)]


def test_among_jobs_that_fit_the_lowest_id_wins(
    daemon_factory: Callable[..., Daemon], gate: Callable[[str], Gate]
) -> None:
    d = daemon_factory(maxprocs="2").start()
    gb, gx, gz = gate("b"), gate("x"), gate("z")
    blocker = d.submit(SH + gb.wait, procs="2")
    d.wait_state(blocker, "R")
    x = d.submit(SH + gx.wait)
    y = d.submit(SH, procs="2")
    z = d.submit(SH + gz.wait)
    w = d.submit(SH)
    assert states(d) == {blocker: "R", x: "Q", y: "Q", z: "Q", w: "Q"}
    gb.open()
    # Two CPUs free: x (lowest id) starts, y needs two and is skipped, z backfills; w waits.
    d.wait_state(z, "R")
    assert states(d) == {blocker: "S", x: "R", y: "Q", z: "R", w: "Q"}
    gx.open()
    d.wait_state(x, "S")
    assert d.state(y) == "Q"  # y still does not fit, w does: w goes before it
    d.wait_state(w, "S")
    gz.open()
    d.wait_state(y, "S")


def test_passes_are_event_driven(
    daemon_factory: Callable[..., Daemon], gate: Callable[[str], Gate]
) -> None:
    d = daemon_factory(maxprocs="1", schedtime="3600").start()
    g1, g2 = gate("one"), gate("two")
    first = d.submit(SH + g1.wait)
    d.wait_state(first, "R", timeout=PROMPT)  # a submit starts a pass
    second = d.submit(SH + g2.wait)
    third = d.submit(SH)
    held = d.submit(SH, hold=True)
    g1.open()
    d.wait_state(second, "R", timeout=PROMPT)  # an exit starts a pass
    assert d.req(f"KILL {second}") == b"OK\r\n"
    d.wait_state(third, "S", timeout=PROMPT)  # a kill starts a pass
    d.req(f"RELEASE {held}")
    d.wait_state(held, "S", timeout=PROMPT)  # a release starts a pass
    wait_for(lambda: d.state(second) == "K", PROMPT)


def test_maxmem_none_turns_memory_accounting_off(
    daemon_factory: Callable[..., Daemon], gate: Callable[[str], Gate]
) -> None:
    d = daemon_factory(maxprocs="2", maxmem="none").start()
    g = gate("g")
    a = d.submit(SH + g.wait, mem="1000T")
    b = d.submit(SH + g.wait, mem="1000T")
    d.wait_state(b, "R")
    assert states(d) == {a: "R", b: "R"}
    g.open()
    d.wait_state(b, "S")


# -- armed tokens: jobs keepers start on their own as running ones end -------------------


def both_cpus_busy(
    daemon_factory: Callable[..., Daemon], gate: Callable[[str], Gate]
) -> tuple[Daemon, Gate, Gate]:
    """A daemon with two CPUs, each held by a job that waits on its gate: whatever is
    submitted next is armed behind them."""
    d = daemon_factory(maxprocs="2").start()
    g1, g2 = gate("one"), gate("two")
    d.submit(SH + g1.wait)
    d.wait_state(d.submit(SH + g2.wait), "R")
    return d, g1, g2


def test_armed_starts_never_overcommit_cpus_or_memory(
    daemon_factory: Callable[..., Daemon], gate: Callable[[str], Gate], tmp_path: Path
) -> None:
    """Jobs of mixed sizes behind a queue long enough to arm many tokens: from the jobs'
    own start and end records, what runs at once never needs more than there is."""
    d = daemon_factory(maxprocs="4", maxmem="1G").start()
    log = tmp_path / "events"
    g = gate("all")
    first = d.submit(SH + g.wait, procs="4")
    sizes = [(1, 100), (1, 100), (2, 300), (1, 600), (3, 100), (1, 100), (2, 100)] * 6
    ids = []
    for procs, mem in sizes:
        body = (
            f'echo "s $SJQ_JOBID {procs} {mem} $$" >> {log}\nsleep 0.01\n'
            f'echo "e $SJQ_JOBID {procs} {mem} $$" >> {log}\n'
        )
        ids.append(d.submit(SH + body, procs=str(procs), mem=f"{mem}M"))
    d.wait_state(first, "R")
    g.open()
    for jobid in ids:
        d.wait_state(jobid, "S")
    procs_now = mem_now = 0
    starts = 0
    pids = {}
    for line in log.read_text().splitlines():
        kind, jobid, procs, mem, pid = line.split()
        pids[int(jobid)] = int(pid)
        sign = 1 if kind == "s" else -1
        procs_now += sign * int(procs)
        mem_now += sign * int(mem)
        starts += kind == "s"
        assert procs_now <= 4, f"{procs_now} CPUs in use at: {line}"
        assert mem_now <= 1024, f"{mem_now} MB in use at: {line}"
    assert starts == len(ids)
    # however each was started (by a pass or by a keeper taking a token), its pid is known
    assert {j: d.info(j)["pid"] for j in ids} == {j: pids[j] for j in ids}


def test_kill_and_hold_reach_armed_jobs_before_they_start(
    daemon_factory: Callable[..., Daemon], gate: Callable[[str], Gate], tmp_path: Path
) -> None:
    d, g1, g2 = both_cpus_busy(daemon_factory, gate)
    ran = tmp_path / "ran"
    queued = [d.submit(SH + f"echo $SJQ_JOBID >> {ran}\n") for _ in range(6)]
    killed, held = queued[0], queued[1]
    assert d.req(f"KILL {killed}").startswith(b"OK")
    assert d.req(f"HOLD {held}").startswith(b"OK")
    assert d.state(killed) == "K"
    g1.open()
    g2.open()
    for jobid in queued[2:]:
        d.wait_state(jobid, "S")
    assert d.state(held) == "U"
    assert sorted(int(x) for x in ran.read_text().split()) == queued[2:]


def test_a_higher_priority_job_goes_before_armed_ones(
    daemon_factory: Callable[..., Daemon], gate: Callable[[str], Gate]
) -> None:
    d, g1, g2 = both_cpus_busy(daemon_factory, gate)
    gp = gate("urgent")
    queued = [d.submit(SH + "true\n") for _ in range(4)]
    urgent = d.submit(SH + gp.wait, priority="5")
    g1.open()
    d.wait_state(urgent, "R")
    assert [d.state(j) for j in queued] == ["Q"] * 4  # urgent and the second hold both
    g2.open()
    gp.open()
    for jobid in queued:
        d.wait_state(jobid, "S")


def test_a_job_a_keeper_started_on_its_own_shows_its_pid_while_it_runs(
    daemon_factory: Callable[..., Daemon], gate: Callable[[str], Gate], tmp_path: Path
) -> None:
    d, g1, g2 = both_cpus_busy(daemon_factory, gate)
    gy = gate("next")
    pidfile = tmp_path / "pid"
    y = d.submit(SH + f"echo $$ > {pidfile}\n" + gy.wait)  # armed behind the two
    g1.open()
    d.wait_state(y, "R")
    pid = int(read_when(pidfile))
    wait_for(lambda: d.info(y).get("pid") == pid, what=f"INFO {y} shows pid {pid}")
    gy.open()
    g2.open()
    d.wait_state(y, "S")
