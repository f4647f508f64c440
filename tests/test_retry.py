"""Retries, pure (sjq.retry.retry_of): which failed attempts are started again, with how much
memory, and what INFO's reason says meanwhile. The daemon's side is tests/server/test_retry.py."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sjq.jobs import Job, Q
from sjq.retry import retry_of

M = 1 << 20
OOM = "out of memory (limit 100M, peak 101M)"


def job(retry: int, attempts: int, mem: int = 100 * M, retry_mem: float | None = None) -> Job:
    j = Job(id=1, name="j", state=Q, procs=1, mem=mem, retry=retry, retry_mem=retry_mem)
    j.attempts = attempts
    return j


def test_attempts_are_retried_until_the_last() -> None:
    assert retry_of(job(retry=0, attempts=1), "exit status 3", None) is None
    first = retry_of(job(retry=2, attempts=1), "exit status 3", None)
    assert first is not None
    assert first.reason == "attempt 1 of 3 failed: exit status 3; started again"
    assert first.mem == 100 * M
    assert retry_of(job(retry=2, attempts=2), "time limit", None) is not None
    assert retry_of(job(retry=2, attempts=3), "time limit", None) is None  # the last: F


def test_an_end_nobody_recorded_is_not_retried() -> None:
    """The attempt may have done its work (its keeper was killed before it could record the
    exit): running it again could do it twice."""
    assert (
        retry_of(
            job(retry=3, attempts=1), "exit status lost: no keeper was left to record it", None
        )
        is None
    )
    # Under Slurm: a job slurmctld forgot before a daemon saw it end.
    gone = "how it ended is lost: Slurm no longer lists job 42"
    assert retry_of(job(retry=3, attempts=1), gone, None) is None


def test_more_memory_only_after_an_out_of_memory_end_and_at_most_maxmem() -> None:
    more = retry_of(job(retry=1, attempts=1, retry_mem=2), OOM, None)
    assert more is not None
    assert more.mem == 200 * M
    assert more.reason == f"attempt 1 of 2 failed: {OOM}; started again, with MEM 200M"
    capped = retry_of(job(retry=1, attempts=1, retry_mem=4), OOM, 300 * M)
    assert capped is not None
    assert capped.mem == 300 * M
    other = retry_of(job(retry=1, attempts=1, retry_mem=2), "exit status 1", None)
    assert other is not None
    assert (other.mem, other.reason.endswith("started again")) == (100 * M, True)


@given(
    st.integers(1, 1 << 40),
    st.one_of(st.none(), st.floats(1, 1000)),
    st.one_of(st.none(), st.integers(1, 1 << 42)),
    st.sampled_from([OOM, "exit status 1", "signal 9", "time limit"]),
)
def test_the_next_attempt_never_gets_less_nor_more_than_allowed(
    mem: int, factor: float | None, maxmem: int | None, reason: str
) -> None:
    nxt = retry_of(job(retry=1, attempts=1, mem=mem, retry_mem=factor), reason, maxmem)
    assert nxt is not None
    assert nxt.mem >= mem  # never less than it had (a MEM above sjq.maxmem was refused)
    if factor is None or not reason.startswith("out of memory"):
        assert nxt.mem == mem
    else:
        assert nxt.mem <= max(mem, mem * factor + 1)
        if maxmem is not None:
            assert nxt.mem <= max(mem, maxmem)
    assert ("with MEM" in nxt.reason) == (nxt.mem > mem)
