"""The watcher's pure parts: when samples are taken, the peak, and the over-the-limit
decision; and how the end-of-job figures are combined (``account.usage``)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sjq.contain.account import out_of_memory_reason, untainted_maxrss, usage
from sjq.contain.cgroup import GroupUsage
from sjq.contain.watch import Judge, WatchPolicy, next_due

policies = st.builds(
    lambda first, k, over: WatchPolicy(interval=first * k, first=first, over=over),
    st.floats(0.001, 1.0),
    st.floats(1.0, 100.0),
    st.integers(1, 5),
)


@given(policies, st.floats(0, 1e6), st.lists(st.floats(0, 10), max_size=30))
def test_schedule_first_then_doubling_up_to_the_interval(
    policy: WatchPolicy, start: float, delays: list[float]
) -> None:
    due = next_due(policy, start, None)
    assert due == pytest.approx(start + policy.first)
    last = None
    for d in delays:
        t = due + d  # a tick runs at or after its due time
        nxt = next_due(policy, start, t)
        gap = nxt - t
        eps = 1e-6  # float error of times around 1e6 s
        assert gap <= policy.interval + eps
        assert gap >= min(policy.first, policy.interval) - eps
        if last is not None:
            assert gap >= min(last, policy.interval) - eps  # never shrinks
        last, due = gap, nxt


def test_schedule_example() -> None:
    p = WatchPolicy(interval=0.25, first=0.02)
    t, times = 100.0, []
    last = None
    for _ in range(7):
        t = next_due(p, 100.0, last)
        times.append(round(t - 100.0, 3))
        last = t
    assert times == [0.02, 0.04, 0.08, 0.16, 0.32, 0.57, 0.82]


@pytest.mark.parametrize(
    "kw", [{"interval": 0}, {"first": 0}, {"first": 1.0, "interval": 0.5}, {"over": 0}]
)
def test_bad_policies_are_refused(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="bad watch policy"):
        WatchPolicy(**kw)  # type: ignore[arg-type]


samples = st.lists(st.integers(0, 10_000), max_size=60)


@given(st.integers(0, 10_000) | st.none(), st.integers(1, 5), samples)
def test_over_exactly_after_n_consecutive_samples_above(
    limit: int | None, n: int, values: list[int]
) -> None:
    j = Judge(limit, n)
    for i, v in enumerate(values):
        over = j.observe(v)
        tail = values[max(0, i - n + 1) : i + 1]
        want = limit is not None and len(tail) == n and all(x > limit for x in tail)
        assert over == want
    assert j.peak == max(values, default=0)
    assert j.samples == len(values)


@given(st.integers(0, 10_000), st.integers(1, 5), samples)
def test_a_job_within_its_limit_is_never_over(limit: int, n: int, values: list[int]) -> None:
    j = Judge(limit, n)
    assert not any(j.observe(min(v, limit)) for v in values)


# -- account.usage ------------------------------------------------------------------

KEEPER = 18 << 20


def test_echo_job_without_a_sample_shows_nothing_of_the_keeper() -> None:
    # wait4 says 18M: the keeper's size, inherited through posix_spawn
    u = usage(
        judge=Judge(None),
        group=None,
        ru_utime=0.0,
        ru_stime=0.001,
        ru_maxrss_kb=KEEPER // 1024,
        keeper_peak=KEEPER,
    )
    assert (u.maxrss, u.maxrss_from, u.measured_by) == (0, "none", "sampled")
    # ... but a lone process that grew past the keeper is measured by wait4
    u = usage(
        judge=None,
        group=None,
        ru_utime=1.0,
        ru_stime=0.5,
        ru_maxrss_kb=(300 << 20) // 1024,
        keeper_peak=KEEPER,
        reaped_utime=2.0,
        reaped_stime=0.25,
    )
    assert (u.maxrss, u.maxrss_from) == (300 << 20, "wait4")
    assert (u.cpu_user, u.cpu_sys) == (3.0, 0.75)


def test_samples_win_and_the_kernel_peak_counts_only_after_an_oom() -> None:
    j = Judge(100 << 20)
    j.observe(40 << 20)
    j.observe(60 << 20)
    g = GroupUsage(peak_charge=300 << 20, cache=250 << 20, cpu_user=2.0, cpu_sys=1.0, oom_kills=0)
    u = usage(judge=j, group=g, ru_utime=9, ru_stime=9, ru_maxrss_kb=1, keeper_peak=KEEPER)
    assert (u.maxrss, u.maxrss_from, u.measured_by, u.oom) == (60 << 20, "samples", "cgroup", False)
    assert (u.cpu_user, u.cpu_sys) == (2.0, 1.0)
    oom = GroupUsage(peak_charge=100 << 20, cache=0, cpu_user=2.0, cpu_sys=1.0, oom_kills=1)
    u = usage(judge=j, group=oom, ru_utime=0, ru_stime=0, ru_maxrss_kb=1, keeper_peak=KEEPER)
    assert (u.maxrss, u.oom) == (100 << 20, True)


def test_no_sample_in_a_group_uses_the_kernel_peak_less_cache() -> None:
    g = GroupUsage(peak_charge=(1 << 20) + 4096, cache=4096, cpu_user=0.0, cpu_sys=0.0, oom_kills=0)
    u = usage(
        judge=Judge(None),
        group=g,
        ru_utime=0,
        ru_stime=0,
        ru_maxrss_kb=KEEPER // 1024,
        keeper_peak=KEEPER,
    )
    assert (u.maxrss, u.maxrss_from) == (1 << 20, "kernel")


def test_a_group_without_memory_controller_is_sampled() -> None:
    g = GroupUsage(peak_charge=None, cache=0, cpu_user=1.5, cpu_sys=0.5, oom_kills=0)
    j = Judge(None)
    j.observe(5 << 20)
    u = usage(judge=j, group=g, ru_utime=0, ru_stime=0, ru_maxrss_kb=0, keeper_peak=KEEPER)
    assert (u.measured_by, u.maxrss, u.cpu_user) == ("sampled", 5 << 20, 1.5)


@given(st.integers(0, 1 << 30), st.integers(0, 1 << 40))
def test_wait4_figure_is_used_only_above_the_keeper(kb: int, keeper: int) -> None:
    got = untainted_maxrss(kb, keeper)
    assert got == (kb * 1024 if kb * 1024 > keeper else None)


def test_out_of_memory_reason_reads_like_slurm() -> None:
    assert out_of_memory_reason(100 << 20, 101 << 20) == "out of memory (limit 100M, peak 101M)"
    assert out_of_memory_reason(2 << 30, 3 << 29) == "out of memory (limit 2G, peak 1.5G)"
