"""When the daemon's changes reach the disk; runs in the event loop (its timers), imports no
sqlite3 (``sjq.store`` does).

The turn commits once when a reply waits for it; keeper news alone (starts, exits, already
durable in the keepers' journals) waits ``COMMIT_DELAY`` to share a transaction; a failed
write (a full disk) is tried again every ``WRITE_RETRY`` seconds; a keeper's rotated journal
is deleted only once what it said is committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable

from sjq.links import Timer
from sjq.state import State
from sjq.store import Store, WriteFailed

__all__ = ["COMMIT_DELAY", "WRITE_RETRY", "Commits"]

log = logging.getLogger("sjq")

COMMIT_DELAY = 0.02  # seconds a commit of keeper news alone may wait to share a transaction
WRITE_RETRY = 1.0  # seconds between tries to write state that could not be written (full disk)


class Commits:
    """The daemon's commits and their timers (cancelled by ``close``)."""

    def __init__(
        self,
        state: State,
        store: Store,
        later: Callable[[float, Callable[[], None]], asyncio.TimerHandle],
        want_turn: Callable[[], None],
        internal_error: Callable[[Exception], None],
    ) -> None:
        self.state = state
        self.store = store
        self._later = later
        self._want_turn = want_turn
        self._internal_error = internal_error
        self.rotated: list[str] = []  # journals to delete after the next commit
        self.durable_below = state.next_id  # every job id below this is committed
        self._lazy = Timer()
        self._retry = Timer()  # the next try to write what a failed commit left unwritten

    def commit_soon(self) -> None:
        """Only keeper news this turn: commit it in a moment (unless a commit comes first)."""
        if not self._lazy:
            self._lazy.set(self._later(COMMIT_DELAY, self._lazy_commit))

    def commit(self) -> bool:
        """Write and commit everything not yet on disk; whether that worked. A failure (a
        full disk) costs the SUBMITs of this turn (they are answered with an ERROR) and
        nothing else: the other changes stay in memory and are written by a later commit,
        tried again every ``WRITE_RETRY`` seconds meanwhile."""
        st = self.state
        self._lazy.cancel()
        ok = False
        if st.write_changes():  # what the journals about to be deleted said must be in it
            try:
                self.store.commit()
                ok = True
            except WriteFailed as e:
                st.write_failed(e.reason)
        if not ok:
            self._write_trouble()
            return False
        if self._retry:
            log.info("state recorded again; accepting jobs")
            self._retry.cancel()
        st.committed()
        self.durable_below = st.next_id
        # Journals are removed only once what they said is committed.
        for old in self.rotated:
            with contextlib.suppress(OSError):
                os.unlink(old)
        self.rotated.clear()
        return True

    def close(self) -> None:
        self._lazy.cancel()
        self._retry.cancel()

    def _write_trouble(self) -> None:
        if not self._retry:
            log.error(
                "cannot record state: %s; SUBMITs are refused until it can be written,"
                " everything else goes on and is written then (trying every %g s)",
                self.state.write_error,
                WRITE_RETRY,
            )
            self._retry.set(self._later(WRITE_RETRY, self._retry_write))

    def _retry_write(self) -> None:
        self._retry.handle = None
        self._lazy_commit()
        if self.state.write_error:
            return  # still failing: _write_trouble armed the next try
        self._want_turn()  # WAITs and replies that waited for this commit

    def _lazy_commit(self) -> None:
        self._lazy.handle = None
        try:
            if self.commit() and self.state.ready_waiters:
                self._want_turn()  # WAITs that this commit's writes completed
        except Exception as e:
            self._internal_error(e)
