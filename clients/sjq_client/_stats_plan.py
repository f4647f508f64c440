"""`sjq stats`' requests: which jobs to ask the daemon about, and reading its INFO replies
into the tally. No I/O: `plan` is a generator of requests that Client and AsyncClient run.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable

from sjq.protocol import Data, Error, Info, Reply, Status

from ._calls import MAXLINE, Call, Plan, chunks
from ._exceptions import ProtocolError, RequestRejected
from ._stats import ENDED, JobUsage, Stats, Tally

__all__ = ["plan"]


def plan(
    ids: Collection[int] | None,
    names: Collection[str],
    since: float | None,
    by: str,
    maxline: int = MAXLINE,
) -> Plan[Stats]:
    """Stats of the ended jobs the daemon remembers: one STATUS (a few bytes a job) picks the
    ended jobs of the wanted ids and names, then INFO in chunks of IDS_PER_LINE ids (fewer
    where the lines would pass ``maxline``, the daemon's sjq.maxline), so that
    a daemon remembering 100,000 jobs never sends, nor this client holds, them all at once.

    ``names``: glob patterns, any of which a job's name must match (none: every name).
    ``since``: only jobs that ended then or later (unix time).
    """
    import fnmatch  # noqa: PLC0415 -- only when patterns are given; keeps the module light

    tally = Tally(by)
    wanted_ids = None if ids is None else set(ids)

    def named(name: str) -> bool:
        return not names or any(fnmatch.fnmatchcase(name, p) for p in names)

    reply = (yield Call((Status(None),)))[0]
    wanted = []
    for line in _payload(reply, "STATUS").split("\r\n"):
        fields = line.split("\t")
        if len(fields) < 3 or not fields[0].isdigit() or fields[2] not in ENDED:
            continue
        jobid = int(fields[0])
        if (wanted_ids is None or jobid in wanted_ids) and named(fields[1]):
            wanted.append(jobid)
    for chunk in chunks(tuple(wanted), maxline):
        reply = (yield Call((Info(chunk),)))[0]
        for job in _usages(_payload(reply, "INFO")):
            ended = job.ended if job.ended is not None else -math.inf
            if job.state in ENDED and (since is None or ended >= since) and named(job.name):
                tally.add(job)
    return tally.result(since)


def _payload(reply: Reply, verb: str) -> str:
    if isinstance(reply, Error):
        raise RequestRejected(reply.message)
    if not isinstance(reply, Data):
        raise ProtocolError(f"{verb} answered {reply!r}")
    return reply.payload.decode(errors="replace")


def _usages(text: str) -> Iterable[JobUsage]:
    import json  # noqa: PLC0415 -- as in _calls: a client that only submits never needs it

    lines = [line for line in text.splitlines() if line.strip()]
    try:
        # One call for the chunk: a third faster than a call per line.
        records = json.loads("[" + ",".join(lines) + "]")
    except ValueError:
        records = None
    if not isinstance(records, list) or len(records) != len(lines):
        records = []  # a line is not one JSON value: find which, to say so
        for line in lines:
            try:
                records.append(json.loads(line))
            except ValueError as e:
                raise ProtocolError(f"INFO sent a line that is not JSON: {e}") from None
    for rec in records:
        if not isinstance(rec, dict):
            raise ProtocolError(f"INFO sent {rec!r:.80}, not a JSON object")
        yield JobUsage.from_record(rec)
