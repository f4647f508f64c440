"""What the user-facing documents specify, read from them, for tests to hold the code to."""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["REPO", "info_keys"]

REPO = Path(__file__).resolve().parents[2]


def info_keys() -> set[str]:
    """The keys of INFO's table in docs/protocol.md."""
    text = (REPO / "docs" / "protocol.md").read_text()
    section = text[text.index("### INFO") :]
    table = section[section.index("| key |") :].split("\n\n")[0]
    keys: set[str] = set()
    for line in table.splitlines()[2:]:
        keys.update(re.findall(r"`(\w+)`", line.split("|")[1]))
    return keys
