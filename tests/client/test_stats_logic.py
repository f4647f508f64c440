"""`sjq stats`' arithmetic without a daemon: suggestions, grouping, the tally and its hints.

Hypothesis for the invariants (a suggestion is never below what was seen, counts add up,
the order of the jobs does not matter); examples for the sentences a user reads.
"""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sjq_client._stats import (
    GroupStats,
    JobUsage,
    Stats,
    Tally,
    failure_reason,
    group_key,
    sort_groups,
)
from sjq_client._stats_advice import (
    CPU_FAR,
    MEM_FAR,
    MEM_FLOOR,
    MEM_HEADROOM,
    MEM_MIN_SAVING,
    TIME_FLOOR,
    duration_option,
    pleasant_duration,
    pleasant_mem,
    suggest_mem,
    suggest_procs,
    suggest_time,
)

from sjq.units import format_mem, parse_duration, parse_mem

PROFILE = settings(max_examples=300, deadline=None)
M, G = 1024**2, 1024**3


def job(jobid: int = 1, name: str = "align", **kw: Any) -> JobUsage:
    """An ended job: by default done, 1 CPU, 200M reserved, 10 s of wall, 9 s of CPU, 100M
    peak measured by a cgroup, no time limit."""
    values: dict[str, Any] = {
        "id": jobid,
        "name": name,
        "state": "S",
        "procs": 1,
        "mem": 200 * M,
        "started": 1000.0,
        "ended": 1010.0,
        "cpu": 9.0,
        "maxrss": 100 * M,
        "measured_by": "cgroup",
        "attempts": 1,
        "time_limit": None,
        "reason": "",
        "exit_code": 0,
        "signal": None,
    }
    values.update(kw)
    return JobUsage(**values)


def one(*jobs: JobUsage, by: str = "auto") -> GroupStats:
    tally = Tally(by)
    for j in jobs:
        tally.add(j)
    (group,) = tally.result().groups
    return group


def kinds(g: GroupStats) -> list[str]:
    return [h.kind for h in g.hints]


# -- suggestions ---------------------------------------------------------------------------


@PROFILE
@given(st.integers(min_value=0, max_value=2**62))
def test_a_memory_suggestion_is_never_below_the_peak_and_reads_back_exactly(peak: int) -> None:
    s = suggest_mem(peak)
    assert s >= peak * MEM_HEADROOM
    assert s >= MEM_FLOOR
    assert parse_mem(format_mem(s)) == s  # what the hint prints is what --mem will reserve
    # rounding up to a pleasant size costs at most half again
    assert s <= max(peak * MEM_HEADROOM, MEM_FLOOR) * 1.5 + 1


@PROFILE
@given(st.integers(min_value=0, max_value=2**62), st.integers(min_value=0, max_value=2**62))
def test_memory_suggestions_grow_with_the_peak(a: int, b: int) -> None:
    low, high = sorted((a, b))
    assert suggest_mem(low) <= suggest_mem(high)


def test_pleasant_sizes_are_sizes_people_write() -> None:
    assert [format_mem(pleasant_mem(x)) for x in (2.52 * G, 2.4 * G, 100 * M, 1000 * M)] == [
        "3G",
        "2.5G",
        "100M",
        "1G",
    ]
    assert format_mem(suggest_mem(int(2.1 * G))) == "3G"  # the issue's example
    assert format_mem(suggest_mem(1)) == format_mem(MEM_FLOOR)


@PROFILE
@given(st.floats(min_value=0, max_value=1e9, allow_nan=False))
def test_a_time_suggestion_covers_the_longest_run_and_reads_back(wall: float) -> None:
    s = suggest_time(wall)
    assert s >= wall * 1.5
    assert s >= TIME_FLOOR
    assert parse_duration(duration_option(s)) == s


@PROFILE
@given(st.floats(min_value=0, max_value=1e7, allow_nan=False))
def test_pleasant_durations_round_up(seconds: float) -> None:
    d = pleasant_duration(seconds)
    assert d >= seconds
    assert parse_duration(duration_option(d)) == d


def test_duration_options_read_as_people_write_them() -> None:
    assert [duration_option(pleasant_duration(x)) for x in (1, 100, 3000, 4000, 100_000)] == [
        "1m",
        "2m",
        "1h",
        "90m",
        "36h",
    ]


@PROFILE
@given(st.floats(min_value=0, max_value=4096, allow_nan=False))
def test_a_cpu_suggestion_covers_the_busy_cores(cores: float) -> None:
    n = suggest_procs(cores)
    assert n >= 1
    assert n >= cores - 0.05  # never fewer CPUs than were kept busy (bar measurement noise)
    assert n < max(cores, 1) + 1


# -- grouping ------------------------------------------------------------------------------


@PROFILE
@given(st.text(max_size=20), st.integers(min_value=0), st.integers(min_value=0))
def test_names_that_differ_in_a_trailing_number_are_one_group(prefix: str, i: int, j: int) -> None:
    for sep in "._-":
        assert group_key(f"{prefix}{sep}{i}") == group_key(f"{prefix}{sep}{j}")


@PROFILE
@given(st.text(max_size=30))
def test_grouping_by_name_keeps_names_and_digits_leaves_none(name: str) -> None:
    assert group_key(name, "name") == name
    assert not any(c in "0123456789" for c in group_key(name, "digits"))


def test_auto_grouping_examples() -> None:
    cases = {
        "align.17": "align.#",
        "align_3": "align_#",
        "step1": "step1",  # a number glued to a word is part of the name
        "rule[sample=a,lane=1]": "rule",
        "toil.1f0c9a2b.7 align_sample": "toil.1f0c9a2b.# align_sample",
        "sample 12 of 40": "sample # of #",
        "[odd]": "[odd]",
    }
    assert {n: group_key(n) for n in cases} == cases
    with pytest.raises(ValueError, match="grouping must be one of"):
        group_key("x", "prefix")


def test_failure_reasons_are_counted_without_their_details() -> None:
    assert failure_reason("F", "out of memory (limit 100M, peak 101M)", None, 9) == "out of memory"
    assert failure_reason("A", "dependency 17 ended in F", None, None) == (
        "a dependency ended in F"
    )
    assert failure_reason("F", "", None, 11) == "killed by SIGSEGV"
    assert failure_reason("F", "", None, 200) == "killed by signal 200"
    assert failure_reason("F", "", 3, None) == "exit 3"
    assert failure_reason("K", "", None, None) == "killed"


# -- the tally -----------------------------------------------------------------------------

STATES = "SSSFAKE"

jobs_strategy = st.lists(
    st.builds(
        lambda i, name, state, procs, mem, start, wall, cpu, peak, measured, tries, limit, why: job(
            i,
            name,
            state=state,
            procs=procs,
            mem=mem,
            started=None if start is None else float(start),
            ended=None if start is None else float(start + wall),
            cpu=None if cpu is None else float(cpu),
            maxrss=peak,
            measured_by=measured,
            attempts=tries,
            time_limit=None if limit is None else float(limit),
            reason="" if state == "S" else why,
        ),
        st.integers(min_value=1, max_value=10**6),
        st.sampled_from(["align.1", "align.2", "sort", "rule[s=a]", "rule[s=b]", "x"]),
        st.sampled_from(STATES),
        st.integers(min_value=0, max_value=64),  # 0: left to Slurm
        st.integers(min_value=0, max_value=64 * G),
        st.one_of(st.none(), st.integers(min_value=0, max_value=10**6)),
        st.integers(min_value=0, max_value=10**5),
        st.one_of(st.none(), st.integers(min_value=0, max_value=10**6)),
        st.one_of(st.none(), st.integers(min_value=0, max_value=64 * G)),
        st.sampled_from([None, "cgroup", "sampled", "slurm"]),
        st.integers(min_value=1, max_value=4),
        st.one_of(st.none(), st.integers(min_value=1, max_value=10**6)),
        st.sampled_from(["", "time limit", "out of memory (limit 1M, peak 2M)", "exit status 1"]),
    ),
    max_size=40,
)


def tally(jobs: list[JobUsage], by: str = "auto") -> Stats:
    t = Tally(by)
    for j in jobs:
        t.add(j)
    return t.result()


@PROFILE
@given(jobs_strategy, st.sampled_from(["auto", "name", "digits"]))
def test_counts_add_up_and_figures_are_those_of_the_jobs(jobs: list[JobUsage], by: str) -> None:
    stats = tally(jobs, by)
    assert stats.jobs == len(jobs) == sum(g.jobs for g in stats.groups)
    assert len({g.name for g in stats.groups}) == len(stats.groups)
    for g in stats.groups:
        members = [j for j in jobs if group_key(j.name, by) == group_key(g.name, by)]
        ran = [j for j in members if j.started is not None]
        assert g.jobs == len(members) == g.done + g.failed == sum(n for _, n in g.states)
        assert g.done == sum(j.state == "S" for j in members)
        assert g.ran == len(ran)
        assert sum(f.count for f in g.failures) == g.failed
        assert g.retried == sum(j.attempts > 1 for j in members)
        peaks = [j.maxrss for j in ran if j.maxrss is not None]
        assert g.peak_max == (max(peaks) if peaks else None)
        assert g.peak_unknown == len(ran) - len(peaks)
        assert g.peak_imprecise == sum(j.measured_by is None and j.maxrss is not None for j in ran)
        walls = [j.wall for j in ran]
        assert g.wall_max == (max(walls) if walls else None)  # type: ignore[type-var]
        if g.cpu_efficiency is not None:
            assert g.cpu_efficiency >= 0


@PROFILE
@given(jobs_strategy)
def test_hints_never_suggest_less_than_was_seen(jobs: list[JobUsage]) -> None:
    for g in tally(jobs).groups:
        for h in g.hints:
            if h.option == "--mem":
                assert parse_mem(h.value) >= (g.peak_max or 0)
                if h.kind == "mem":  # reserve less: only when it is far off
                    assert parse_mem(h.value) <= g.reserved_max * MEM_FAR
                    assert g.reserved_max - parse_mem(h.value) >= MEM_MIN_SAVING
            elif h.option == "--procs":
                assert g.cores_max is not None
                if h.kind == "procs":  # fewer: still every CPU the busiest job kept busy
                    assert g.cores_max - 0.05 <= int(h.value) <= g.procs * CPU_FAR
                else:
                    assert h.kind == "procs-more"
                    assert 2 <= int(h.value) <= math.ceil(g.cores_max)
            else:
                assert h.option == "--time"
                if h.kind == "time":
                    assert g.time_limit is not None
                    assert parse_duration(h.value) <= g.time_limit / 4
            assert f"{h.option} {h.value}" in h.text
        assert len({h.option for h in g.hints}) == len(g.hints)  # one piece of advice each


@PROFILE
@given(jobs_strategy, st.randoms(use_true_random=False))
def test_the_order_of_the_jobs_does_not_matter(jobs: list[JobUsage], rnd: random.Random) -> None:
    # whole seconds: float sums are then exact in any order
    shuffled = list(jobs)
    rnd.shuffle(shuffled)
    assert tally(shuffled) == tally(jobs)


@PROFILE
@given(jobs_strategy, st.sampled_from(["name", "jobs", "failed", "wall", "cpu", "mem"]))
def test_sorting_keeps_every_group(jobs: list[JobUsage], key: str) -> None:
    groups = tally(jobs).groups
    ordered = sort_groups(groups, key)
    assert sorted(ordered, key=lambda g: g.name) == sorted(groups, key=lambda g: g.name)


# -- hints a user reads --------------------------------------------------------------------


def test_a_far_too_large_memory_reservation_gets_a_hint() -> None:
    g = one(*(job(i, f"align.{i}", mem=8 * G, maxrss=int(2.1 * G)) for i in range(3)))
    assert g.name == "align.#"
    assert g.names == 3
    assert [h.text for h in g.hints] == ["peak 2.1G of 8G reserved; --mem 3G would do"]


def test_a_reservation_that_fits_gets_no_hint() -> None:
    g = one(job(mem=300 * M, maxrss=200 * M), job(2, mem=300 * M, maxrss=210 * M))
    assert g.hints == ()


def test_small_savings_are_not_worth_a_hint() -> None:
    # 100M reserved, 1M used: far off as a ratio, but nothing worth saying on a server
    assert one(job(mem=100 * M, maxrss=M)).hints == ()


def test_a_peak_near_the_reservation_gets_a_hint_for_more() -> None:
    g = one(job(mem=100 * M, maxrss=95 * M))
    assert [(h.kind, h.value) for h in g.hints] == [("mem-more", "128M")]
    assert "little headroom" in g.hints[0].text
    nothing = one(job(mem=0, maxrss=2 * G))  # e.g. Slurm jobs that left MEM to the cluster
    assert [h.text for h in nothing.hints] == ["peak 2G with no memory given; --mem 2.5G"]
    cluster = one(job(procs=0, cpu=10.0))  # nor CPUs: efficiency counts one
    assert (cluster.procs, cluster.cpu_efficiency, cluster.hints) == (0, 1.0, ())


def test_out_of_memory_ends_suggest_twice_the_limit() -> None:
    oom = "out of memory (limit 100M, peak 101M)"
    g = one(job(1, state="F", mem=100 * M, maxrss=101 * M, reason=oom), job(2))
    assert [(h.kind, h.value) for h in g.hints] == [("oom", "200M")]
    assert g.hints[0].text == "1 of 2 jobs ran out of memory at 100M; try --mem 200M"
    assert [(f.reason, f.count, f.jobs) for f in g.failures] == [("out of memory", 1, (1,))]


def test_an_imprecise_peak_is_said_so() -> None:
    g = one(job(mem=8 * G, maxrss=2 * G, measured_by=None))
    assert g.peak_imprecise == 1
    assert "(not measured precisely)" in g.hints[0].text


def test_jobs_that_failed_do_not_make_a_reserve_less_hint() -> None:
    g = one(job(state="F", mem=8 * G, maxrss=10 * M, exit_code=1, time_limit=86400.0))
    assert g.hints == ()
    assert g.failures[0].reason == "exit 1"


def test_unused_cpus_get_a_hint_and_busy_ones_not() -> None:
    lazy = one(job(procs=4, cpu=11.0))  # 1.1 CPUs of 4 busy over 10 s
    assert [(h.kind, h.value) for h in lazy.hints] == [("procs", "2")]
    assert lazy.hints[0].text == "used at most 1.1 of 4 CPUs (efficiency 28%); --procs 2 would do"
    assert one(job(procs=4, cpu=35.0)).hints == ()
    assert one(job(procs=1, cpu=1.0)).hints == ()  # one CPU: nothing to give back


def test_more_cpus_used_than_reserved_get_a_hint() -> None:
    g = one(job(procs=1, cpu=32.0))  # 3.2 CPUs busy, 1 reserved (no pinning)
    assert [(h.kind, h.value) for h in g.hints] == [("procs-more", "4")]


def test_short_jobs_make_no_cpu_hint() -> None:
    # 0.5 s: the ratio is start-up noise
    assert one(job(procs=4, started=0.0, ended=0.5, cpu=0.1)).hints == ()


def test_time_limits_far_above_the_run_time_and_hit_limits() -> None:
    g = one(job(time_limit=86400.0, started=0.0, ended=700.0))
    assert [(h.kind, h.value) for h in g.hints] == [("time", "20m")]
    assert g.hints[0].text == "ran at most 0:11:40 of a 1-00:00:00 limit; --time 20m would do"
    assert one(job(time_limit=3600.0, started=0.0, ended=700.0)).hints == ()
    hit = one(job(1, state="F", time_limit=3600.0, reason="time limit"), job(2))
    assert [(h.kind, h.value) for h in hit.hints] == [("time-limit", "2h")]


def test_failures_list_a_few_ids_by_reason() -> None:
    jobs = [job(i, state="F", exit_code=1) for i in range(20, 8, -1)]
    jobs.append(job(99, state="A", reason="dependency 3 ended in F", started=None, ended=5.0))
    g = one(*jobs)
    assert [(f.reason, f.count, f.jobs) for f in g.failures] == [
        ("exit 1", 12, (9, 10, 11, 12, 13)),
        ("a dependency ended in F", 1, (99,)),
    ]
    assert g.ran == 12


def test_a_group_of_jobs_that_never_ran() -> None:
    g = one(job(state="E", started=None, reason="cannot open /nope: No such file"))
    assert (g.ran, g.wall_mean, g.peak_max, g.cpu_efficiency, g.hints) == (
        0,
        None,
        None,
        None,
        (),
    )


def test_job_usage_from_an_info_record() -> None:
    rec = {
        "id": 14,
        "name": "align",
        "state": "S",
        "procs": 4,
        "mem": 8 * G,
        "started": 1.0,
        "ended": 3601.0,
        "cpu_user": 100.0,
        "cpu_sys": 2.5,
        "maxrss": G,
        "time_limit": None,
        "reason": "",
        "exit_code": 0,
        "signal": None,
    }
    u = JobUsage.from_record(rec)
    assert (u.cpu, u.wall, u.measured_by, u.attempts) == (102.5, 3600.0, None, 1)
    v = JobUsage.from_record(rec | {"measured_by": "sampled", "attempts": 3, "maxrss": None})
    assert (v.measured_by, v.attempts, v.maxrss) == ("sampled", 3, None)
    from sjq_client import ProtocolError

    with pytest.raises(ProtocolError):
        JobUsage.from_record({"id": 1})
    assert math.isclose(tally([u]).groups[0].cpu_efficiency or 0, 102.5 / (3600 * 4))


def test_info_payloads_are_read_whole_or_refused() -> None:
    from sjq_client import ProtocolError
    from sjq_client._stats_plan import _usages

    line = '{"id": 3, "name": "a", "state": "S"}'
    assert [u.id for u in _usages(f"{line}\n{line.replace('3', '4')}\n")] == [3, 4]
    assert list(_usages("")) == []
    with pytest.raises(ProtocolError, match="not JSON"):
        list(_usages(f"{line}\n{{nope\n"))
    with pytest.raises(ProtocolError, match="not a JSON object"):
        list(_usages(f"{line}\n[1]\n"))
    with pytest.raises(ProtocolError, match="not JSON"):
        list(_usages('{"id": 1}], [{"id": 2}\n'))  # one line that would join into two values
