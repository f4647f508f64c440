"""sjq.store in this process: a real SQLite file under tmp_path, no daemon.

Rows go in with `insert` and change with `write` inside one transaction that `commit` makes
durable (or `rollback` drops); the queries answer STATUS, INFO, WAIT, recovery and the
history purge.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support import info_keys

from sjq.jobs import Change, Job, JobState
from sjq.schema import MIGRATIONS
from sjq.store import SCHEMA_VERSION, Element, JobSpec, Store, StoreError

Q, H, U, R = JobState.QUEUED, JobState.WAITING, JobState.HELD, JobState.RUNNING
S, F, K, E = JobState.SUCCESS, JobState.FAIL, JobState.KILLED, JobState.ERROR


def mode(path: str | Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def job(jobid: int, state: JobState = Q, **fields: object) -> Job:
    values: dict[str, object] = {
        "name": f"job{jobid}",
        "procs": 1,
        "mem": 1 << 20,
        "uid": 1000,
        "gid": 1000,
        "submit_time": 1000.0 + jobid,
    }
    values.update(fields)
    return Job(id=jobid, state=state, **values)  # type: ignore[arg-type]


def spec(script: bytes = b"#!/bin/sh\n", **fields: object) -> JobSpec:
    values: dict[str, object] = {
        "cwd": "/work",
        "stdout": "/work/o",
        "stderr": "/work/e",
        "env": None,
        "time_limit": None,
    }
    values.update(fields)
    return JobSpec(script=script, **values)  # type: ignore[arg-type]


@pytest.fixture
def path(tmp_path: Path) -> str:
    return str(tmp_path / "state.db")


@pytest.fixture
def store(path: str) -> Iterator[Store]:
    s = Store(path)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def reopen(path: str) -> Iterator[Callable[[Store], Store]]:
    """Close a store and open its database again (what is in it then is what was committed);
    closed at the end."""
    opened: list[Store] = []

    def again(old: Store) -> Store:
        old.close()
        opened.append(Store(path))
        return opened[-1]

    yield again
    for s in opened:
        s.close()


def ended(j: Job, state: JobState, at: float) -> Job:
    j.state, j.end_time = state, at
    return j


def test_an_inserted_job_reads_back_whole_once_committed(
    path: str, reopen: Callable[[Store], Store]
) -> None:
    store = Store(path)
    env = {"PATH": "/bin", "TOKEN": "a b\nc=d", "UNICODE": "é"}
    script = b"#!/bin/sh\n\0\xff binary\r\n"
    j = job(1, H, depends=(7, 8), priority=-3, uid=1001, gid=1002)
    store.insert([j], spec(script, env=env, time_limit=90.5))
    store.insert([job(2, U)], spec())
    store.commit()
    store = reopen(store)
    a, b = store.load_active()
    assert (a.id, a.name, a.state, a.procs, a.mem, a.depends) == (1, "job1", H, 1, 1 << 20, (7, 8))
    assert (a.uid, a.gid, a.priority, a.submit_time, a.killing) == (1001, 1002, -3, 1001.0, False)
    assert (a.start_time, a.end_time, a.pid, a.exit_code) == (None, None, None, None)
    assert (b.id, b.state, b.depends) == (2, U, ())
    assert store.spec(1) == spec(script, env=env, time_limit=90.5)
    assert store.spec(2).env is None  # no ENV sent: the daemon's default environment
    assert store.events(1) == [("H", 1001.0)]
    assert store.next_id() == 3


def test_an_array_keeps_its_script_once_and_each_element_its_own_outputs(store: Store) -> None:
    script = b"#!/bin/sh\necho $SJQ_ARRAY_INDEX\n" + b"#" * 10_000
    jobs = [job(i) for i in (4, 5, 6)]
    elements = [Element(f"/work/{i}.out", f"/work/{i}.err", i, f"line {i}") for i in (0, 1, 2)]
    store.insert(jobs, spec(script, env={"A": "1"}), elements, limit=2)
    store.commit()
    for jobid, e in zip((4, 5, 6), elements, strict=True):
        got = store.spec(jobid)
        assert (got.script, got.env, got.cwd) == (script, {"A": "1"}, "/work")
        assert (got.stdout, got.stderr) == (e.stdout, e.stderr)
        assert (got.array_id, got.array_index, got.entry) == (4, e.index, e.entry)
    (row,) = store.db.execute("SELECT count(*), sum(length(script)) FROM jobs").fetchall()
    assert row == (3, 0), "the script is stored once, with the array"
    assert store.array_limits() == {4: 2}
    # The array's script goes with its last element, and only then.
    for jobid in (4, 5, 6):
        store.write([ended(jobs[jobid - 4], S, 10.0 + jobid)], [])
        store.purge(ended_before=10.0 + jobid + 0.5, keep_count=None, limit=10)
        remaining = store.db.execute("SELECT count(*) FROM arrays").fetchone()[0]
        assert remaining == (0 if jobid == 6 else 1)
        if jobid < 6:
            assert store.spec(6).script == script
    assert store.array_limits() == {}


def test_an_empty_environment_is_not_the_default_one(store: Store) -> None:
    store.insert([job(1)], spec(env={}))
    assert store.spec(1).env == {}


def test_a_rollback_drops_everything_since_the_last_commit(store: Store) -> None:
    store.insert([job(1)], spec())
    store.commit()
    store.insert([job(2)], spec())
    j1 = job(1)
    j1.state = R
    store.write([j1], [Change(j1, R, 1005.0)])
    assert store.state_of(2) is Q
    store.rollback()
    assert store.state_of(1) is Q
    assert store.state_of(2) is None
    assert store.events(1) == [("Q", 1001.0)]
    assert store.next_id() == 2, "an id nobody was told is handed out again"
    store.rollback()  # nothing open: nothing happens
    store.commit()


def test_write_brings_rows_up_to_date_and_logs_each_change(store: Store) -> None:
    j = job(1)
    store.insert([j], spec())
    j.state, j.start_time, j.pid, j.pid_start = R, 1010.0, 4242, 99
    store.write([j], [Change(j, R, 1010.0)])
    ended(j, F, 1020.5)
    j.exit_code, j.signal, j.reason = None, 9, "killed by signal SIGKILL"
    j.cpu_user, j.cpu_sys, j.maxrss, j.killing = 0.25, 0.125, 1 << 21, True
    store.write([j], [Change(j, F, 1020.5)])
    store.commit()
    assert store.events(1) == [("Q", 1001.0), ("R", 1010.0), ("F", 1020.5)]
    assert store.state_of(1) is F
    assert store.load_active() == []
    (info,) = store.info([1])
    assert info["pid"] == 4242
    assert (info["started"], info["ended"], info["exit_code"], info["signal"]) == (
        1010.0,
        1020.5,
        None,
        9,
    )
    assert (info["cpu_user"], info["cpu_sys"], info["maxrss"]) == (0.25, 0.125, 1 << 21)
    assert info["reason"] == "killed by signal SIGKILL"


def test_a_running_job_reads_back_with_its_process(store: Store) -> None:
    j = job(1)
    store.insert([j], spec())
    j.state, j.start_time, j.pid, j.pid_start, j.killing = R, 1010.0, 4242, 99, True
    store.write([j], [Change(j, R, 1010.0)])
    (back,) = store.load_active()
    assert (back.state, back.start_time, back.pid, back.pid_start, back.killing) == (
        R,
        1010.0,
        4242,
        99,
        True,
    )


def test_state_of_and_state_counts(store: Store) -> None:
    assert store.state_of(1) is None
    assert store.state_counts() == {}
    for i, st in enumerate([Q, Q, U, H], start=1):
        store.insert([job(i, st)], spec())
    done = job(5)
    store.insert([done], spec())
    store.write([ended(done, S, 1100.0)], [])
    assert store.state_of(3) is U
    assert store.state_counts() == {Q: 2, U: 1, H: 1, S: 1}
    assert [j.id for j in store.load_active()] == [1, 2, 3, 4]


def test_status_lines_are_every_job_in_id_order_or_one(store: Store) -> None:
    for i in (3, 1, 2):
        store.insert([job(i, depends=(1,) if i == 3 else ())], spec())
    assert list(store.status_lines(None)) == [
        (1, "job1", "Q", ""),
        (2, "job2", "Q", ""),
        (3, "job3", "Q", "1"),
    ]
    assert list(store.status_lines(2)) == [(2, "job2", "Q", "")]
    assert list(store.status_lines(9)) == []


def test_info_has_every_documented_key_for_the_jobs_asked(store: Store) -> None:
    for i in (1, 2, 3):
        store.insert([job(i, depends=(1, 2) if i == 3 else ())], spec(time_limit=60.0))
    rows = store.info([3, 1, 99])
    assert [r["id"] for r in rows] == [1, 3], "in id order; unknown ids are left out"
    # Every key docs/protocol.md lists but the two the daemon adds from memory (State.info).
    assert set(rows[0]) | {"waiting_for", "reservation"} == info_keys()
    assert rows[1]["depends"] == [1, 2]
    assert rows[0]["depends"] == []
    assert (rows[0]["cwd"], rows[0]["stdout"], rows[0]["stderr"]) == ("/work", "/work/o", "/work/e")
    assert rows[0]["time_limit"] == 60.0
    assert [r["id"] for r in store.info([])] == [1, 2, 3]
    json.dumps(rows)  # what INFO sends: every value is plain JSON


def finished(store: Store, ends: dict[int, tuple[JobState, float]]) -> None:
    """Jobs 1..n, each ended as given (or left waiting when absent), committed."""
    for i in range(1, max(ends) + 1):
        j = job(i)
        store.insert([j], spec())
        if i in ends:
            st, at = ends[i]
            j.state = R
            store.write([j], [Change(j, R, at - 1)])
            store.write([ended(j, st, at)], [Change(j, st, at)])
    store.commit()


def test_purge_by_age_forgets_only_finished_jobs_ended_before_the_cutoff(store: Store) -> None:
    finished(store, {1: (S, 100.0), 2: (F, 200.0), 3: (S, 300.0), 5: (K, 50.0)})
    assert store.purge(ended_before=250.0, keep_count=None, limit=100) == {"S": 1, "F": 1, "K": 1}
    store.commit()
    assert [r[0] for r in store.status_lines(None)] == [3, 4]
    assert store.events(1) == [], "a purged job's events go with it"
    assert store.events(3) != []
    assert store.purge(ended_before=250.0, keep_count=None, limit=100) == {}


def test_purge_by_count_keeps_the_newest_finished_jobs(store: Store) -> None:
    finished(store, {i: (S, 1000.0 + i) for i in range(1, 7)} | {8: (E, 1.0)})
    # job 7 waits; job 8 is old enough by age too
    gone = store.purge(ended_before=0.0, keep_count=2, limit=100)
    assert gone == {"S": 5}
    assert [r[0] for r in store.status_lines(None)] == [6, 7, 8]
    assert store.next_id() == 9
    assert store.purge(ended_before=0.0, keep_count=2, limit=100) == {}


def test_purge_goes_a_batch_at_a_time(store: Store) -> None:
    finished(store, dict.fromkeys(range(1, 8), (S, 10.0)))
    batches = []
    while gone := store.purge(ended_before=100.0, keep_count=None, limit=3):
        batches.append(gone["S"])
    assert batches == [3, 3, 1]
    assert store.state_counts() == {}


def test_ids_are_never_handed_out_again_after_a_purge(
    path: str, reopen: Callable[[Store], Store]
) -> None:
    store = Store(path)
    finished(store, {1: (S, 10.0), 2: (S, 20.0)})
    store.purge(ended_before=100.0, keep_count=None, limit=10)
    store.commit()
    assert store.state_counts() == {}
    assert reopen(store).next_id() == 3


def test_the_pause_flag_is_kept_with_its_time(store: Store, path: str) -> None:
    assert store.paused_since() is None
    store.set_paused(1234.5)
    store.set_paused(1300.0)  # the later word counts
    store.commit()
    assert store.paused_since() == 1300.0
    store.set_paused(None)
    assert store.paused_since() is None
    store.rollback()
    assert store.paused_since() == 1300.0


def test_probe_leaves_nothing_behind(store: Store) -> None:
    store.probe()
    store.commit()
    assert store.db.execute("SELECT count(*) FROM events").fetchone() == (0,)


# -- the file ------------------------------------------------------------------------------


def test_the_database_its_wal_files_and_its_lock_are_private(tmp_path: Path) -> None:
    path = str(tmp_path / "deep" / "er" / "state.db")
    old = os.umask(0o022)  # a usual umask: files would be 0644 without care
    try:
        s = Store(path)
    finally:
        os.umask(old)
    try:
        s.insert([job(1)], spec(env={"TOKEN": "secret"}))
        s.commit()
        for p in (path, path + "-wal", path + "-shm", path + ".lock"):
            assert mode(p) == 0o600, p
        assert mode(tmp_path / "deep") == mode(tmp_path / "deep" / "er") == 0o700
    finally:
        s.close()


def test_files_an_older_sjq_left_readable_are_tightened(path: str) -> None:
    s = Store(path)
    s.insert([job(1)], spec())
    s.commit()
    # Leave -wal and -shm behind as a crash would: only the lock is let go.
    os.close(s._lock_fd)
    for p in (path, path + "-wal", path + "-shm"):
        assert os.path.exists(p), p
        os.chmod(p, 0o644)
    again = Store(path)
    try:
        for p in (path, path + "-wal", path + "-shm"):
            assert mode(p) == 0o600, p
        assert again.state_of(1) is Q
    finally:
        again.close()
        s.db.close()


def test_a_second_store_on_the_same_database_is_refused(store: Store, path: str) -> None:
    with pytest.raises(StoreError, match=rf"in use by another sjq daemon \(pid {os.getpid()}\)"):
        Store(path)
    assert store.state_of(1) is None  # the first one goes on


def test_the_lock_is_let_go_on_close(path: str) -> None:
    Store(path).close()
    Store(path).close()


def test_an_unusable_path_says_which_file(tmp_path: Path) -> None:
    blocker = tmp_path / "afile"
    blocker.write_text("")
    with pytest.raises(
        StoreError, match=re.escape(f"cannot open lock file {blocker}/state.db.lock")
    ):
        Store(str(blocker / "state.db"))


def test_a_corrupt_database_says_how_to_go_on(path: str) -> None:
    Path(path).write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match=r"is corrupt .*; move it aside to start afresh"):
        Store(path)
    os.rename(path, path + ".aside")  # as the message advises
    Store(path).close()  # and the refused one let its lock go


# -- migrations -----------------------------------------------------------------------------


def version_1(path: str, *rows: str) -> None:
    db = sqlite3.connect(path)
    db.executescript(MIGRATIONS[0])
    for values in rows:
        db.execute(
            "INSERT INTO jobs (id, name, state, procs, mem, depends, uid, gid, cwd, stdout,"
            f" stderr, script, submitted, ended) VALUES ({values})"
        )
    db.execute("PRAGMA user_version=1")
    db.commit()
    db.close()


def test_a_version_1_database_is_migrated_with_every_row(path: str) -> None:
    version_1(
        path,
        "7, 'old', 'Q', 1, 1024, '', 0, 0, '/', '/o', '/e', x'23210a', 1.0, NULL",
        "5, 'done', 'S', 2, 2048, '', 0, 0, '/', '/o', '/e', x'23210a', 1.0, 3.0",
    )
    s = Store(path)
    try:
        assert s.db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        (old,) = s.load_active()
        assert (old.id, old.name, old.priority, old.killing) == (7, "old", 0, False)
        assert s.spec(7).time_limit is None
        assert s.state_counts() == {Q: 1, S: 1}
        assert s.events(7) == []  # no history before version 2: none is made up
        assert s.next_id() == 8
        s.insert([job(8)], spec())  # and the new columns take writes
        s.commit()
    finally:
        s.close()


def test_a_failed_migration_leaves_the_database_as_it_was(path: str) -> None:
    version_1(path, "1, 'old', 'Q', 1, 1024, '', 0, 0, '/', '/o', '/e', x'23210a', 1.0, NULL")
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE events (x)")  # in the way of version 2's table
    db.commit()
    db.close()
    with pytest.raises(
        StoreError, match=re.escape(f"cannot use state database {path}: ") + ".*events"
    ):
        Store(path)
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA user_version").fetchone() == (1,)
        columns = [r[1] for r in db.execute("PRAGMA table_info(jobs)")]
        assert "priority" not in columns, "version 2's first statements were rolled back"
    finally:
        db.close()


def test_a_newer_schema_is_refused_with_advice(path: str) -> None:
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match=f"schema version {SCHEMA_VERSION + 1}.*; upgrade sjq"):
        Store(path)
