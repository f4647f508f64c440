"""The durable record of every job: an SQLite database owned by the daemon alone.

Imports sqlite3 and fcntl; nothing of asyncio or process handling. Writes of one event-loop
turn are gathered into one transaction (group commit) by the caller's ``flush``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from sjq.jobs import Change, Job, JobState
from sjq.paths import make_dirs, make_private_file, tighten
from sjq.rows import (
    INFO_COLUMNS,
    ROW,
    SHOWN,
    UPDATE,
    depends_text,
    info_of,
    job_of,
    update_of,
)
from sjq.schema import MIGRATIONS as _MIGRATIONS

__all__ = ["SCHEMA_VERSION", "Element", "JobSpec", "Store", "StoreError", "WriteFailed"]


INSERT_JOB = (
    "INSERT INTO jobs (id, name, state, procs, mem, depends, uid, gid, cwd, stdout,"
    " stderr, env, script, submitted, priority, time_limit, reason, dependency,"
    " array_id, array_index, entry, makedirs, gpus, retry, retry_mem)"
    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)
INSERT_EVENT = "INSERT INTO events VALUES (?,?,?)"


class StoreError(RuntimeError):
    """The state database cannot be used; the message says which file and what to do."""


class WriteFailed(StoreError):
    """A write or a commit failed (a full disk, an I/O error). The open transaction has been
    rolled back: the database holds what the last successful commit wrote, nothing since.
    ``reason`` is SQLite's own words, e.g. ``database or disk is full``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class JobSpec:
    """The bulky, immutable part of a job: read back from disk only when it starts."""

    script: bytes
    cwd: str
    stdout: str
    stderr: str
    env: dict[str, str] | None  # None: the job gets the daemon's minimal default environment
    time_limit: float | None
    array_id: int | None = None  # an array element: the array's first id, its index, entry
    array_index: int | None = None
    entry: str | None = None
    # "stdout", "stderr": outputs whose missing directories the keeper creates (pattern paths)
    makedirs: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Element:
    """What differs between the elements of an array (the rest is the array's JobSpec)."""

    stdout: str
    stderr: str
    index: int | None
    entry: str | None


SCHEMA_VERSION = len(_MIGRATIONS)
_MAKEDIRS = ("stdout", "stderr")  # bit i of the makedirs column stands for _MAKEDIRS[i]


class Store:
    """One SQLite connection in WAL mode, an exclusive lock file, and the job queries."""

    def __init__(self, path: str, *, sync: str = "normal") -> None:
        self.path = path
        self._lock_fd = self._lock(path)
        try:
            self.db = self._open(path, sync)
        except BaseException:
            os.close(self._lock_fd)
            raise
        self._in_txn = False

    # -- opening ---------------------------------------------------------------------

    @staticmethod
    def _lock(path: str) -> int:
        """Hold ``<db>.lock`` for the daemon's lifetime: two daemons on one database would
        both believe they own every job."""
        lock_path = path + ".lock"
        try:
            make_dirs(os.path.dirname(os.path.abspath(path)))
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise StoreError(f"cannot open lock file {lock_path}: {e.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise StoreError(
                f"state database {path} is in use by another sjq daemon (pid {holder})"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return fd

    def _open(self, path: str, sync: str) -> sqlite3.Connection:
        # It holds every job's script and environment (tokens, passwords): owner only. SQLite
        # gives the -wal and -shm files it creates the database file's mode; those an older
        # sjq left readable by others are tightened too.
        try:
            make_private_file(path)
            for suffix in ("-wal", "-shm"):
                tighten(path + suffix)
        except OSError as e:
            raise StoreError(f"cannot create state database {path}: {e.strerror}") from None
        try:
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as e:
            raise StoreError(f"cannot open state database {path}: {e}") from None
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={'FULL' if sync == 'full' else 'NORMAL'}")
            db.execute("PRAGMA foreign_keys=OFF")
            self._migrate(db, path)
        except sqlite3.DatabaseError as e:
            db.close()
            if "not a database" in str(e) or "malformed" in str(e):
                raise StoreError(
                    f"state database {path} is corrupt ({e}); move it aside to start afresh,"
                    " or restore it from a backup"
                ) from None
            raise StoreError(f"cannot use state database {path}: {e}") from None
        return db

    @staticmethod
    def _migrate(db: sqlite3.Connection, path: str) -> None:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"state database {path} has schema version {version}, newer than this sjq"
                f" understands ({SCHEMA_VERSION}); upgrade sjq"
            )
        for target in range(version + 1, SCHEMA_VERSION + 1):
            db.execute("BEGIN IMMEDIATE")
            try:
                for statement in _MIGRATIONS[target - 1].split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA user_version={target}")
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def close(self) -> None:
        self.commit()
        with contextlib.suppress(sqlite3.Error):
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.db.close()
        os.close(self._lock_fd)

    # -- transactions ------------------------------------------------------------------

    def _begin(self) -> None:
        if not self._in_txn:
            try:
                self.db.execute("BEGIN")
            except sqlite3.Error as e:
                raise WriteFailed(str(e)) from None
            self._in_txn = True

    def commit(self) -> None:
        """Commit the open transaction. On failure it is rolled back whole (SQLite may have
        done so already after SQLITE_FULL) and WriteFailed says why."""
        if self._in_txn:
            try:
                self.db.execute("COMMIT")
            except sqlite3.Error as e:
                self._failed(e)
            self._in_txn = False

    def probe(self) -> None:
        """Write something and take it back in the open transaction, so that its commit
        tells whether the disk has room again (after a failed commit, with nothing else
        waiting to be written)."""
        self._begin()
        try:
            self.db.execute("INSERT INTO events VALUES (0, '-', 0)")
            self.db.execute("DELETE FROM events WHERE job = 0")
        except sqlite3.Error as e:
            self._failed(e)

    def rollback(self) -> None:
        """Drop the open transaction, whatever state SQLite left it in."""
        self._in_txn = False
        if self.db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self.db.execute("ROLLBACK")

    def _failed(self, e: sqlite3.Error) -> NoReturn:
        self.rollback()
        raise WriteFailed(str(e)) from None

    # -- writes --------------------------------------------------------------------------

    def next_id(self) -> int:
        row = self.db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'jobs'").fetchone()
        top = self.db.execute("SELECT max(id) FROM jobs").fetchone()[0]
        return max(row[0] if row else 0, top or 0) + 1

    def insert(
        self,
        jobs: Sequence[Job],
        spec: JobSpec,
        elements: Iterable[Element] | None = None,
        limit: int | None = None,
    ) -> None:
        """Record new jobs: one, or an array (``elements[i]`` is ``jobs[i]``'s) whose script
        and environment are recorded once, with its limit of elements running at once."""
        env = None if spec.env is None else json.dumps(spec.env)
        array = None if elements is None else jobs[0].id
        own_env, script = (env, spec.script) if array is None else (None, b"")
        makedirs = sum(1 << i for i, what in enumerate(_MAKEDIRS) if what in spec.makedirs)
        if elements is None:
            elements = [Element(spec.stdout, spec.stderr, None, None)]
        self._begin()
        try:
            if array is not None:
                self.db.execute(
                    "INSERT INTO arrays (id, script, env, array_limit) VALUES (?,?,?,?)",
                    (array, spec.script, env, limit),
                )
            # Generators, not lists: each row (and the element's paths) is made as SQLite
            # takes it, so a 10,000-element array never holds them all at once (the memory
            # they took would stay in the daemon's RSS).
            rows = (
                (
                    *(job.id, job.name, job.state.value, job.procs, job.mem),
                    *(depends_text(job.depends), job.uid, job.gid, spec.cwd),
                    *(e.stdout, e.stderr, own_env, script, job.submit_time, job.priority),
                    *(spec.time_limit, job.reason, job.dependency, array, e.index, e.entry),
                    makedirs,
                    *(job.gpus, job.retry, job.retry_mem),
                )
                for job, e in zip(jobs, elements, strict=True)
            )
            events = ((job.id, job.state.value, job.submit_time) for job in jobs)
            if len(jobs) == 1:  # most SUBMITs: execute costs less than executemany's set-up
                self.db.execute(INSERT_JOB, next(rows))
                self.db.execute(INSERT_EVENT, next(events))
            else:
                self.db.executemany(INSERT_JOB, rows)
                self.db.executemany(INSERT_EVENT, events)
        except sqlite3.Error as e:
            self._failed(e)

    def write(self, touched: Iterable[Job], changes: Iterable[Change]) -> None:
        """Bring the rows of ``touched`` jobs up to date and log ``changes`` (same transaction)."""
        self._begin()
        try:
            self._write(touched, changes)
        except sqlite3.Error as e:
            self._failed(e)

    def _write(self, touched: Iterable[Job], changes: Iterable[Change]) -> None:
        self.db.executemany(UPDATE, [update_of(j) for j in touched])
        self.db.executemany(INSERT_EVENT, [(c.job.id, c.state.value, c.time) for c in changes])

    def set_paused(self, since: float | None) -> None:
        """Record that the queue is paused (since when), or not (None)."""
        self._begin()
        try:
            if since is None:
                self.db.execute("DELETE FROM flags WHERE name = 'paused'")
            else:
                self.db.execute("INSERT OR REPLACE INTO flags VALUES ('paused', ?)", (since,))
        except sqlite3.Error as e:
            self._failed(e)

    def purge(self, ended_before: float, keep_count: int | None, limit: int) -> dict[str, int]:
        """Forget up to ``limit`` finished jobs that ended before ``ended_before`` or fall
        beyond the newest ``keep_count``. Returns how many of each state went."""
        cutoff_id = 0
        if keep_count is not None:
            row = self.db.execute(
                "SELECT id FROM jobs WHERE ended IS NOT NULL ORDER BY id DESC LIMIT 1 OFFSET ?",
                (keep_count,),
            ).fetchone()
            cutoff_id = row[0] if row else 0
        # Two simple queries rather than one OR, so each can use its index.
        rows = self.db.execute(
            "SELECT id, state FROM jobs WHERE ended < ? AND state NOT IN ('Q','H','U','R') LIMIT ?",
            (ended_before, limit),
        ).fetchall()
        if cutoff_id and len(rows) < limit:
            rows += self.db.execute(
                "SELECT id, state FROM jobs WHERE id <= ? AND ended >= ?"
                " AND state NOT IN ('Q','H','U','R') LIMIT ?",
                (cutoff_id, ended_before, limit - len(rows)),
            ).fetchall()
        if not rows:
            return {}
        self._begin()
        ids = [(r[0],) for r in rows]
        try:
            self.db.executemany("DELETE FROM jobs WHERE id = ?", ids)
            self.db.executemany("DELETE FROM events WHERE job = ?", ids)
            # an array's script goes with its last element
            self.db.execute(
                "DELETE FROM arrays WHERE NOT EXISTS"
                " (SELECT 1 FROM jobs WHERE array_id = arrays.id)"
            )
        except sqlite3.Error as e:
            self._failed(e)
        gone: dict[str, int] = {}
        for _, state in rows:
            gone[state] = gone.get(state, 0) + 1
        return gone

    # -- reads ---------------------------------------------------------------------------

    def load_active(self) -> list[Job]:
        cur = self.db.execute(
            f"SELECT {ROW} FROM jobs WHERE state IN ('Q','H','U','R') ORDER BY id"
        )
        return [job_of(r) for r in cur]

    def paused_since(self) -> float | None:
        """When the queue was paused, if it is."""
        row = self.db.execute("SELECT value FROM flags WHERE name = 'paused'").fetchone()
        return None if row is None else float(row[0])

    def state_counts(self) -> dict[JobState, int]:
        rows = self.db.execute("SELECT state, count(*) FROM jobs GROUP BY state").fetchall()
        return {JobState(s): n for s, n in rows}

    def state_of(self, jobid: int) -> JobState | None:
        row = self.db.execute("SELECT state FROM jobs WHERE id = ?", (jobid,)).fetchone()
        return None if row is None else JobState(row[0])

    def spec(self, jobid: int) -> JobSpec:
        r = self.db.execute(
            "SELECT j.script, j.cwd, j.stdout, j.stderr, j.env, j.time_limit, j.array_id,"
            " j.array_index, j.entry, a.script, a.env, j.makedirs"
            " FROM jobs j LEFT JOIN arrays a ON a.id = j.array_id WHERE j.id = ?",
            (jobid,),
        ).fetchone()
        script, env = (r[9], r[10]) if r[6] is not None else (r[0], r[4])
        return JobSpec(
            script=script,
            cwd=r[1],
            stdout=r[2],
            stderr=r[3],
            env=None if env is None else json.loads(env),
            time_limit=r[5],
            array_id=r[6],
            array_index=r[7],
            entry=r[8],
            makedirs=tuple(what for i, what in enumerate(_MAKEDIRS) if r[11] >> i & 1),
        )

    def array_limits(self) -> dict[int, int]:
        """The limits (%N) of the arrays that have elements not yet ended."""
        rows = self.db.execute(
            "SELECT id, array_limit FROM arrays WHERE array_limit IS NOT NULL AND EXISTS"
            " (SELECT 1 FROM jobs WHERE array_id = arrays.id AND state IN ('Q','H','U','R'))"
        )
        return dict(rows.fetchall())

    def status_lines(self, jobid: int | None) -> Iterable[tuple[int, str, str, str]]:
        if jobid is None:
            return self.db.execute(f"SELECT id, name, {SHOWN}, depends FROM jobs ORDER BY id")
        return self.db.execute(
            f"SELECT id, name, {SHOWN}, depends FROM jobs WHERE id = ?", (jobid,)
        )

    def info(self, ids: Sequence[int]) -> list[dict[str, Any]]:
        if ids:
            marks = ",".join("?" * len(ids))
            cur = self.db.execute(
                f"SELECT {INFO_COLUMNS} FROM jobs WHERE id IN ({marks}) ORDER BY id", tuple(ids)
            )
        else:
            cur = self.db.execute(f"SELECT {INFO_COLUMNS} FROM jobs ORDER BY id")
        return [info_of(row) for row in cur]

    def meta(self, name: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, name: str, value: str) -> None:
        """Record a setting of this database at once, in a transaction of its own."""
        self.commit()
        try:
            self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (name, value))
        except sqlite3.Error as e:
            raise WriteFailed(str(e)) from None

    def events(self, jobid: int) -> list[tuple[str, float]]:
        return self.db.execute(
            "SELECT state, time FROM events WHERE job = ? ORDER BY rowid", (jobid,)
        ).fetchall()
