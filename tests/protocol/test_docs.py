"""docs/protocol.md is a spec: its example exchanges must be what the parser does."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from support import info_keys

from sjq.protocol import (
    NEED_DATA,
    BadRequest,
    Closed,
    Exit,
    ServerConnection,
    Shutdown,
    Stop,
    Submit,
)

DOC = Path(__file__).parents[2] / "docs" / "protocol.md"
BLOCKS = [
    b
    for b in re.findall(r"^```\n(.*?)^```$", DOC.read_text(), flags=re.DOTALL | re.MULTILINE)
    if "C: " in b
]


def test_the_doc_has_examples() -> None:
    assert len(BLOCKS) >= 12


@pytest.mark.parametrize("block", BLOCKS)
def test_example_exchange(block: str) -> None:
    sent = "".join(line[3:] + "\n" for line in block.splitlines() if line.startswith("C: "))
    replies = [line[3:] for line in block.splitlines() if line.startswith("S: ")]
    conn = ServerConnection()
    conn.receive_data(sent.encode())
    events = []
    while (event := conn.next_event()) is not NEED_DATA:
        events.append(event)
        if event == Closed():
            break
    # A wrong SRC length shows as a request left open or a script line read as one.
    assert not conn.in_request, "the example ends in the middle of a request"
    if Closed() in events:  # no EOF was sent: only these close
        assert isinstance(events[-2], Exit | Shutdown | Stop), events
    for event in events:
        if isinstance(event, BadRequest):
            assert f"ERROR {event.message}" in replies
        elif isinstance(event, Submit):
            assert any(r.startswith("OK ") for r in replies)


def _json_example(verb: str) -> tuple[int, str]:
    """The ``OK <n>`` and the JSON line of the doc's example reply to ``verb``."""
    block = next(b for b in BLOCKS if f"C: {verb}" in b)
    found = re.search(r"^S: OK (\d+)\nS: (\{.*\})$", block, flags=re.MULTILINE)
    assert found, block
    return int(found[1]), found[2]


def test_the_info_example_has_every_documented_key_and_its_length() -> None:
    n, line = _json_example("INFO 14")
    assert len(line.encode()) + 1 == n  # the line and its \n
    assert set(json.loads(line)) == info_keys()


def test_the_queue_example_has_its_length() -> None:
    n, line = _json_example("QUEUE")
    assert len(line.encode()) + 1 == n
    assert set(json.loads(line)) >= {"paused", "paused_since", "procs", "version"}
