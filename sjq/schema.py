"""The state database's layout: the migrations that build it, in order. Pure data, read by
sjq.store (the only module that opens the database); imports nothing."""

from __future__ import annotations

__all__ = ["MIGRATIONS"]

# Each migration takes a database at version i to i + 1. Version 1 is the first layout;
# version 2 added priorities, time limits and per-state timestamps in an events table.
# Later ones say what they add above their text.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE jobs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL,
        state TEXT NOT NULL,
        procs INTEGER NOT NULL,
        mem INTEGER NOT NULL,
        depends TEXT NOT NULL,
        uid INTEGER NOT NULL,
        gid INTEGER NOT NULL,
        cwd TEXT NOT NULL,
        stdout TEXT NOT NULL,
        stderr TEXT NOT NULL,
        env TEXT,
        script BLOB NOT NULL,
        submitted REAL NOT NULL,
        started REAL,
        ended REAL,
        exit_code INTEGER,
        signal INTEGER,
        reason TEXT NOT NULL DEFAULT '',
        pid INTEGER,
        pid_start INTEGER,
        cpu_user REAL,
        cpu_sys REAL,
        maxrss INTEGER
    );
    CREATE INDEX jobs_active ON jobs(id) WHERE state IN ('Q', 'H', 'U', 'R');
    CREATE INDEX jobs_ended ON jobs(ended) WHERE ended IS NOT NULL;
    """,
    """
    ALTER TABLE jobs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE jobs ADD COLUMN time_limit REAL;
    ALTER TABLE jobs ADD COLUMN killing INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE events (job INTEGER NOT NULL, state TEXT NOT NULL, time REAL NOT NULL);
    CREATE INDEX events_job ON events(job);
    """,
    # version 3: the daemon's own flags (the queue paused, and since when)
    """
    CREATE TABLE flags (name TEXT PRIMARY KEY, value REAL);
    """,
    # version 4: how a job's usage was measured (INFO measured_by)
    """
    ALTER TABLE jobs ADD COLUMN measured_by TEXT;
    """,
    # Version 5: the Slurm back end's job id, node and shown state (Q or U while a job that
    # sjq handed to Slurm waits there), and settings of this database (its daemon id).
    """
    ALTER TABLE jobs ADD COLUMN backend_id TEXT;
    ALTER TABLE jobs ADD COLUMN node TEXT;
    ALTER TABLE jobs ADD COLUMN shown TEXT;
    CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
    # version 6: DEPENDENCY, conditions in Slurm's kinds beyond DEPENDS' afterok
    """
    ALTER TABLE jobs ADD COLUMN dependency TEXT NOT NULL DEFAULT '';
    """,
    # version 7: job arrays: the script and environment once per array (with its limit of
    # elements running at once), each element's index and ENTRY line
    """
    CREATE TABLE arrays (
        id INTEGER PRIMARY KEY,
        script BLOB NOT NULL,
        env TEXT,
        array_limit INTEGER
    );
    ALTER TABLE jobs ADD COLUMN array_id INTEGER;
    ALTER TABLE jobs ADD COLUMN array_index INTEGER;
    ALTER TABLE jobs ADD COLUMN entry TEXT;
    CREATE INDEX jobs_array ON jobs(array_id) WHERE array_id IS NOT NULL;
    """,
    # version 8: which output directories the keeper creates (bits of store._MAKEDIRS)
    """
    ALTER TABLE jobs ADD COLUMN makedirs INTEGER NOT NULL DEFAULT 0;
    """,
    # version 9: GPUs reserved, and the CPUs and GPUs a job runs on (INFO cpus, gpus)
    """
    ALTER TABLE jobs ADD COLUMN gpus INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE jobs ADD COLUMN cpu_ids TEXT;
    ALTER TABLE jobs ADD COLUMN gpu_ids TEXT;
    """,
    # version 10: RETRY and RETRYMEM, and the attempts a job has started (INFO attempts)
    """
    ALTER TABLE jobs ADD COLUMN retry INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE jobs ADD COLUMN retry_mem REAL;
    ALTER TABLE jobs ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
    """,
]
