"""Whether the queue is paused (PAUSE/RESUME) and since when, and that flag's way to disk: it
is written in the turn's transaction like every other change, and written again after a
failed commit. Plain data; the database calls are the store's."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sjq.store import Store

__all__ = ["Pause"]


class Pause:
    """``since``: when the queue was paused, None when it is not. ``unsaved``: the flag
    differs from what the open transaction holds; ``written``: it is in the open
    transaction but not yet committed."""

    __slots__ = ("since", "unsaved", "written")

    def __init__(self, since: float | None) -> None:
        self.since = since
        self.unsaved = False
        self.written = False

    @property
    def paused(self) -> bool:
        return self.since is not None

    def set(self, paused: bool, now: float) -> None:
        """Pause (keeping the first moment of a pause already on) or resume."""
        if paused == self.paused:
            return
        self.since = now if paused else None
        self.unsaved = True

    def write(self, store: Store) -> None:
        """Into the open transaction (raises the store's WriteFailed)."""
        if self.unsaved:
            store.set_paused(self.since)
            self.unsaved = False
            self.written = True

    def committed(self) -> None:
        self.written = False

    def failed(self) -> None:
        """The transaction was rolled back: what it held must be written again."""
        if self.written:
            self.unsaved = True
            self.written = False
