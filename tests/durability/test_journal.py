"""The keeper's journal records: each one read back as written (Hypothesis), and the records
of an earlier sjq still read."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sjq.jobs import ExitRecord
from sjq.keeper.journal import Detached, Header, Refusal, Start, decode, encode

ids = st.integers(1, 2**40)
ticks = st.one_of(st.none(), st.integers(0, 2**40))
times = st.floats(0, 2**31, allow_nan=False)
# what a keeper writes as a reason: any text on one line (none starts with "m=")
reasons = st.text(st.characters(blacklist_characters="\n", codec="utf-8"), max_size=60).filter(
    lambda r: not r.startswith("m=")
)

exits = st.builds(
    ExitRecord,
    jobid=ids,
    pid=st.integers(1, 2**22),
    exit_code=st.one_of(st.none(), st.integers(0, 255)),
    signal=st.one_of(st.none(), st.integers(1, 64)),
    time=times,
    cpu_user=times,
    cpu_sys=times,
    maxrss=st.integers(0, 2**50),
    reason=reasons,
    measured_by=st.sampled_from(["", "cgroup", "sampled"]),
)
records = st.one_of(
    st.builds(Header, ids, ticks),
    st.builds(
        Start,
        ids,
        st.integers(1, 2**22),
        ticks,
        times,
        ticks,
        st.sampled_from(["", "j42.7:0:0:0.0:0.0", "j9.1:2:4096:1.5:0.25"]),
        st.sampled_from(["", "0", "0,2-3"]),
        st.sampled_from(["", "0", "1,GPU-8a1c", "MIG-1f2e"]),
    ),
    exits,
    st.builds(Refusal, ids, times, reasons),
    st.builds(Detached, times),
)


@given(records)
def test_every_record_reads_back_as_written(rec: object) -> None:
    line = encode(rec)  # type: ignore[arg-type]
    assert "\n" not in line
    assert decode(line) == rec


def test_an_exit_record_of_an_earlier_sjq_still_reads() -> None:
    rec = decode("X 7 4000 3 - 12.5 0.25 0.5 1048576 exit status lost")
    assert rec == ExitRecord(7, 4000, 3, None, 12.5, 0.25, 0.5, 1048576, "exit status lost")
    assert decode("X 7 4000 0 - 12.5 0.25 0.5 1048576 ") == ExitRecord(
        7, 4000, 0, None, 12.5, 0.25, 0.5, 1048576, ""
    )


def test_how_usage_was_measured_is_kept() -> None:
    rec = ExitRecord(7, 4000, None, 9, 12.5, 0.25, 0.5, 99, "out of memory (limit 1M)", "cgroup")
    assert encode(rec) == "X 7 4000 - 9 12.5 0.25 0.5 99 m=cgroup out of memory (limit 1M)"
    assert decode(encode(rec)) == rec


def test_a_start_record_of_an_earlier_sjq_still_reads() -> None:
    assert decode("S 3 999 5 12.5") == Start(3, 999, 5, 12.5, None)
    assert decode("S 3 999 5 12.5 6") == Start(3, 999, 5, 12.5, 6)
    assert decode("S 3 999 5 12.5 6 g=j1.2:0:0:0.0:0.0 z=later") == Start(
        3, 999, 5, 12.5, 6, "j1.2:0:0:0.0:0.0"
    )
