"""Bounded waits and gate files: how a test orders events without sleeping."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

__all__ = ["DEFAULT_TIMEOUT", "Gate", "wait_for"]

T = TypeVar("T")

DEFAULT_TIMEOUT = 10.0


def wait_for(predicate: Callable[[], T], timeout: float = DEFAULT_TIMEOUT, what: str = "") -> T:
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(delay)  # polling interval of a bounded wait, not an ordering sleep
        delay = min(delay * 2, 0.01)


@dataclass
class Gate:
    """A file a job waits for: the test decides when the job may go on."""

    path: Path

    @property
    def wait(self) -> str:
        """Shell lines that block until the gate opens (bounded, so a failed test cannot
        leave a job behind for ever)."""
        return (
            f'i=0; while [ ! -e "{self.path}" ] && [ $i -lt 6000 ];'
            " do sleep 0.01; i=$((i+1)); done\n"
        )

    def open(self) -> None:
        self.path.touch()
