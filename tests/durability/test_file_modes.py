"""State files hold every job's script and environment: only their owner may read them."""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Callable
from pathlib import Path

from support import Daemon


def mode(path: Path | str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_new_database_and_its_wal_files_are_private(
    daemon_factory: Callable[..., Daemon],
) -> None:
    old = os.umask(0o022)  # a usual umask: files would be 0644 without care
    try:
        d = daemon_factory().start()
    finally:
        os.umask(old)
    d.submit("#!/bin/sh\n", env=["TOKEN=secret"])
    db = d.settings["sjq.db"]
    for path in (db, db + "-wal", db + "-shm", db + ".lock", d.settings["sjq.logfile"]):
        assert mode(path) == 0o600, path


def test_files_of_an_older_version_are_made_private(
    daemon_factory: Callable[..., Daemon],
) -> None:
    d = daemon_factory()
    db = d.settings["sjq.db"]
    d.start()
    d.submit("#!/bin/sh\n")
    d.kill9()  # leaves -wal and -shm behind
    for path in (db, db + "-wal", db + "-shm"):
        os.chmod(path, 0o644)
    d.start()
    for path in (db, db + "-wal", db + "-shm"):
        assert mode(path) == 0o600, path
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM jobs").fetchone()[0] == 1


def test_directories_sjq_makes_are_0700_and_others_are_left_alone(
    daemon_factory: Callable[..., Daemon], tmp_path: Path
) -> None:
    home = tmp_path / "home"  # stands for $HOME: not sjq's to change
    home.mkdir(mode=0o755)
    home.chmod(0o755)
    d = daemon_factory(
        db=str(home / "state" / "deep" / "sjq.db"),
        socket=str(home / "sock" / "s.sock"),
        spool=str(home / "spool" / "keepers"),
    )
    old = os.umask(0o022)
    try:
        d.start()
    finally:
        os.umask(old)
    assert mode(home) == 0o755
    for made in ("state", "state/deep", "sock", "spool", "spool/keepers"):
        assert mode(home / made) == 0o700, made
