"""The job scripts every system runs, so sjq, task-spooler and the floor run the same bytes.

Baselines run them from files with the tag as ``$1``; sjq receives them as
SUBMIT bodies with the tag written in (a SUBMIT has no argv).
"""

from __future__ import annotations

import os
from pathlib import Path

# The trivial job: dash and its builtin `true`, so a job costs one fork+exec and
# nothing else. Every throughput and chain figure runs exactly these bytes.
TRIVIAL = b"#!/bin/sh\ntrue\n"


def gap(fifo: Path, tag: str) -> bytes:
    """Stamps its start and its end: ``s TAG`` first thing, ``e TAG`` last thing."""
    return f'#!/bin/sh\necho "s {tag}" > "{fifo}"\necho "e {tag}" > "{fifo}"\n'.encode()


def probe(fifo: Path, tag: str) -> bytes:
    """Stamps its start only: ``r TAG``."""
    return f'#!/bin/sh\necho "r {tag}" > "{fifo}"\n'.encode()


def write(path: Path, body: bytes) -> Path:
    path.write_bytes(body)
    os.chmod(path, 0o755)
    return path
