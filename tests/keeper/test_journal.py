"""The keeper's journal (sjq.keeper.journal): each record's line round-trips, and a real file
written by `Journal` reads back through `JournalState`, torn and unreadable lines included."""

from __future__ import annotations

import logging
import math
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sjq.jobs import ExitRecord
from sjq.keeper.journal import (
    Detached,
    Header,
    Journal,
    JournalRecord,
    JournalState,
    Refusal,
    Start,
    decode,
    encode,
)
from sjq.keeper.procs import proc_start_time

ints = st.integers(min_value=-(2**63), max_value=2**63 - 1)
maybe_ints = st.none() | ints
# Any float a clock or a CPU counter could give, infinities included (repr round-trips them);
# NaN is no time.
floats = st.floats(allow_nan=False)
# Any text, and always some of the characters that other line splitters break on or that
# strip() would lose: only LF ends a journal line.
reasons = st.text() | st.lists(
    st.sampled_from([" ", "  ", "\r", "\n", "\x85", "\u2028", "\u2029", "\x0b", "\x0c", "x", "é"])
).map("".join)

headers = st.builds(Header, ints, maybe_ints)
# A job's cgroup and its baselines: one word (Group.state: name:oom:reserve:user:sys), or "".
groups = st.just("") | st.text(min_size=1).map(lambda t: t.replace(" ", "_").replace("\n", "_"))
# Its CPUs (a CPU list such as 0,2-3) and GPUs (ids, comma-separated): one word each, or "".
words = st.just("") | st.text(min_size=1).map(lambda t: t.replace(" ", "_").replace("\n", "_"))
starts = st.builds(Start, ints, ints, maybe_ints, floats, maybe_ints, groups, words, words)
# How the figures were measured: one word the keeper chooses ("" in an earlier sjq's records).
measures = st.sampled_from(["", "cgroup", "sampled", "slurm"])
exits = st.builds(
    ExitRecord, ints, ints, maybe_ints, maybe_ints, floats, floats, floats, ints, reasons, measures
).filter(
    # With no m= before it, a reason must not start so (it would be read as how the figures
    # were measured): the module's rule, which every reason a keeper writes keeps.
    lambda x: x.measured_by or not x.reason.startswith("m=")
)
refusals = st.builds(Refusal, ints, floats, reasons)
detaches = st.builds(Detached, floats)
records = headers | starts | exits | refusals | detaches


def as_written(rec: JournalRecord) -> JournalRecord:
    """What a record reads back as: a newline in a reason is a space."""
    if isinstance(rec, ExitRecord | Refusal):
        return rec._replace(reason=rec.reason.replace("\n", " "))
    return rec


@given(records)
def test_every_record_round_trips_through_its_line(rec: JournalRecord) -> None:
    line = encode(rec)
    assert "\n" not in line
    back = decode(line)
    assert type(back) is type(rec)
    assert back == as_written(rec)


@given(reasons.filter(lambda r: "\n" not in r))
def test_a_reason_without_a_newline_is_kept_exactly(reason: str) -> None:
    rec = Refusal(7, 1.5, reason)
    assert decode(encode(rec)) == rec
    x = ExitRecord(7, 8, None, 9, 1.5, 0.0, 0.0, 0, reason, "sampled")
    assert decode(encode(x)) == x


def test_the_line_of_each_record_as_documented() -> None:
    assert encode(Header(12, None)) == "K 12 -"
    assert encode(Start(3, 4000, 55, 1.5, 56)) == "S 3 4000 55 1.5 56"
    start = Start(3, 4000, 55, 1.5, 56, "sjq-3:0:0:0.5:0.25")
    assert encode(start) == "S 3 4000 55 1.5 56 g=sjq-3:0:0:0.5:0.25"
    pinned = Start(3, 4000, 55, 1.5, 56, "", "0,2-3", "1,GPU-8a1c")
    assert encode(pinned) == "S 3 4000 55 1.5 56 c=0,2-3 G=1,GPU-8a1c"
    x = ExitRecord(3, 4000, None, 15, 2.5, 0.25, 0.125, 1024, "time\nlimit")
    assert encode(x) == "X 3 4000 - 15 2.5 0.25 0.125 1024 time limit"
    x = ExitRecord(3, 4000, 0, None, 2.5, 0.25, 0.125, 1024, "", "cgroup")
    assert encode(x) == "X 3 4000 0 - 2.5 0.25 0.125 1024 m=cgroup "
    assert encode(Refusal(3, 2.0, " no such file ")) == "E 3 2.0  no such file "
    assert encode(Detached(9.75)) == "D 9.75"


def test_lines_of_an_earlier_sjq_still_read() -> None:
    assert decode("S 3 4000 55 1.5") == Start(3, 4000, 55, 1.5, None)  # no high tick
    assert decode("D") == Detached(0.0)  # no time
    assert decode("X 1 2 - 9 1.0 0.5 0.25 5 time limit") == ExitRecord(  # no m=
        1, 2, None, 9, 1.0, 0.5, 0.25, 5, "time limit", ""
    )


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("", "unknown record kind ''"),
        ("Z 1 2", "unknown record kind 'Z'"),
        ("s 1 2 3 4.0 5", "unknown record kind 's'"),
        ("K", "record cut short"),
        ("S 1 2 3", "record cut short"),
        ("X 1 2 0 - 1.0 0.1 0.1", "record cut short"),
        ("E 1", "record cut short"),
        ("S 1 2 x 4.0 5", "invalid literal"),
        ("X 1 2 0 - one 0.1 0.1 5 ", "could not convert"),
    ],
)
def test_a_line_that_holds_no_record_is_a_value_error(line: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        decode(line)


# -- a real file ----------------------------------------------------------------------------


def journal_file(directory: str, recs: list[JournalRecord]) -> str:
    j = Journal(os.path.join(directory, "keeper-1-0.journal"))
    for rec in recs:
        j.write(rec)
    assert j.healthy
    j.close()
    return j.path


@settings(max_examples=50)
@given(st.lists(records, max_size=30))
def test_what_a_journal_writes_a_journal_state_reads(recs: list[JournalRecord]) -> None:
    with tempfile.TemporaryDirectory() as d:
        state = JournalState(journal_file(d, recs))
        state.read()
    want = JournalState(state.path)
    for rec in recs:
        want.apply(as_written(rec))
    assert state.started == want.started
    assert state.exited == want.exited
    assert state.errors == want.errors
    assert (state.keeper_pid, state.keeper_start, state.detached) == (
        want.keeper_pid,
        want.keeper_start,
        want.detached,
    )


def test_a_journal_state_holds_the_last_word_on_each_job(tmp_path: Path) -> None:
    me = os.getpid()
    recs: list[JournalRecord] = [
        Header(me, proc_start_time(me)),
        Start(1, 101, 5, 10.0, 6),
        Start(2, 102, 5, 10.5, 6),
        Refusal(3, 11.0, "cwd => /gone does not exist"),
        ExitRecord(1, 101, 0, None, 12.0, 0.5, 0.25, 2048),
        ExitRecord(2, 102, None, 9, 13.0, 0.0, 0.0, 0, "time limit"),
    ]
    state = JournalState(journal_file(str(tmp_path), recs))
    state.read()
    assert (state.keeper_pid, state.detached) == (me, False)
    assert state.keeper_alive(), "this process wrote the header: it is alive"
    assert state.started == {1: recs[1], 2: recs[2]}
    assert state.exited == {1: recs[4], 2: recs[5]}
    assert state.errors == {3: recs[3]}
    assert state.offset == os.path.getsize(state.path)


def test_a_dead_keeper_is_not_alive(tmp_path: Path) -> None:
    me = os.getpid()
    tick = proc_start_time(me)
    assert tick is not None
    state = JournalState(journal_file(str(tmp_path), [Header(me, tick + 10_000)]))
    state.read()
    assert not state.keeper_alive(), "a later start: the pid was recycled"
    state.apply(Header(me, None))
    assert not state.keeper_alive()


def test_a_torn_last_line_waits_for_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "keeper-1-0.journal"
    whole = encode(ExitRecord(1, 101, 3, None, 12.0, 0.5, 0.25, 2048, "r")) + "\n"
    torn = encode(ExitRecord(2, 102, 0, None, 13.0, 0.5, 0.25, 2048))
    path.write_text(encode(Start(1, 101, 5, 10.0, 6)) + "\n" + whole + torn[:9])
    state = JournalState(str(path))
    state.read()
    assert sorted(state.exited) == [1]
    assert state.offset == path.stat().st_size - 9, "a torn line is not consumed"
    state.read()  # nothing new: nothing changes
    assert sorted(state.exited) == [1]
    with path.open("a") as f:
        f.write(torn[9:] + "\n" + encode(Detached(14.0)) + "\n")
    state.read()
    assert sorted(state.exited) == [1, 2]
    assert state.exited[2].time == 13.0
    assert state.detached


def test_unreadable_lines_are_logged_and_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "keeper-1-0.journal"
    path.write_bytes(
        b"K 42 7\n"
        b"garbage\n"
        b"S 1 101 5\n"  # cut short
        b"S 2 102 5 10.0 6\n"
        b"X 2 102 1 - 11.0 0.1 0.1 1024 bad \xff byte\n"  # not UTF-8: read, replaced
        b"\n"
        b"E 3 12.0 reason with \r and \xe2\x80\xa8 inside\n"
    )
    state = JournalState(str(path))
    with caplog.at_level(logging.WARNING, logger="sjq.keeper"):
        state.read()
    assert (state.keeper_pid, state.keeper_start) == (42, 7)
    assert sorted(state.started) == [2]
    assert state.exited[2].reason == "bad \ufffd byte"
    assert state.errors[3].reason == "reason with \r and \u2028 inside"
    ignored = [r.getMessage() for r in caplog.records]
    assert ignored == [
        f"{path}: ignoring unreadable journal line 'garbage'",
        f"{path}: ignoring unreadable journal line 'S 1 101 5'",
        f"{path}: ignoring unreadable journal line ''",
    ]


def test_a_missing_journal_reads_as_empty(tmp_path: Path) -> None:
    state = JournalState(str(tmp_path / "gone.journal"))
    state.read()
    assert (state.started, state.exited, state.errors, state.offset) == ({}, {}, {}, 0)


def test_a_journal_appends_to_what_an_earlier_one_wrote(tmp_path: Path) -> None:
    path = journal_file(str(tmp_path), [Start(1, 101, 5, 10.0, 6)])
    j = Journal(path)  # the same file again (a keeper writes one journal, but never truncates)
    j.write(Detached(11.0))
    j.close()
    assert Path(path).read_text() == "S 1 101 5 10.0 6\nD 11.0\n"
    assert os.stat(path).st_mode & 0o777 == 0o600


def test_infinite_times_are_kept() -> None:
    assert decode(encode(Detached(math.inf))) == Detached(math.inf)
