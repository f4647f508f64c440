"""Which of sjq's jobs changed in Slurm, and when to ask again; pure: imports no subprocess/asyncio.

Imports no sqlite3 either; the Slurm back end (``sjq.slurm.backend``) feeds it what
``squeue`` (or ``sacct``) said and acts on the events it returns.

Every job sjq hands to Slurm carries the tag ``sjq:<daemon-id>:<jobid>`` as its comment (the
elements of an array submitted together: ``sjq:<daemon-id>:a<base>``, task N being job
base + N; an attempt after the first, RETRY: ``sjq:<daemon-id>:<jobid>.<attempt>``), and one
``squeue`` for all of the user's jobs answers for all of them at once. A job is tracked, one
attempt at a time, from the moment its submission may have reached Slurm:

- with its Slurm id (``slurm_id``) once sbatch answered;
- *uncertain* (``slurm_id`` None, ``uncertain_since`` set) while nobody knows whether Slurm
  took it: sbatch failed transiently or timed out (the controller may have queued the job and
  only its answer was lost), or a daemon died between sbatch and recording its answer. The
  tag settles it: a status answer that lists the tag gives the id (``Found``); one taken at
  least ``SETTLE`` seconds after the doubt arose that does not list it proves the job is not
  in Slurm (``Absent``), and only then is it submitted again. So nothing is submitted twice.
  A record of another attempt of the job (an earlier one, which Slurm lists for ``MinJobAge``
  after its end) is neither: it is ignored.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TypeAlias

from sjq.protocol import JobState
from sjq.slurm.args import parse_attempt_tag, parse_batch_tag
from sjq.slurm.parse import SlurmJob
from sjq.slurm.states import Phase, progress

__all__ = [
    "SETTLE",
    "Absent",
    "Began",
    "Ended",
    "Event",
    "Found",
    "Missing",
    "Tracked",
    "Waiting",
    "next_interval",
    "observe",
    "owner",
    "settled",
    "tag_of",
]

# Seconds after a submission's outcome became unknown before a status answer without its tag
# counts as proof that Slurm does not have it: slurmctld answers or drops a request within its
# MessageTimeout (10 s by default), so a request still in flight has been dealt with by then.
SETTLE = 10.0
GROWTH = 1.5  # the poll interval grows by this factor while nothing changes


@dataclass(slots=True)
class Tracked:
    """One sjq job that Slurm has, or may have."""

    jobid: int
    slurm_id: str | None = None
    known_since: float = 0.0  # when its Slurm id became known (an older answer lacks it)
    uncertain_since: float | None = None  # when the doubt about its submission arose
    shown: JobState = JobState.QUEUED  # what sjq last showed: Q or U (waiting), R (running)
    reason: str = ""  # the waiting reason last shown
    attempt: int = 1  # which attempt of the job this is (RETRY); its tag says it
    retried: str = ""  # why the attempt before failed: INFO reason while Slurm gives none


@dataclass(frozen=True, slots=True)
class Found:
    """An uncertain submission is in Slurm after all, with this id."""

    jobid: int
    slurm_id: str


@dataclass(frozen=True, slots=True)
class Absent:
    """An uncertain submission is provably not in Slurm: it may be submitted (again)."""

    jobid: int


@dataclass(frozen=True, slots=True)
class Waiting:
    """The job waits in Slurm: shown as ``shown`` (Q, or U when held), with Slurm's reason."""

    jobid: int
    shown: JobState
    reason: str


@dataclass(frozen=True, slots=True)
class Began:
    """The job runs in Slurm."""

    jobid: int
    start: float | None
    node: str


@dataclass(frozen=True, slots=True)
class Ended:
    """The job ended in Slurm: sjq's final state and reason, and what Slurm measured."""

    jobid: int
    state: JobState
    reason: str
    record: SlurmJob


@dataclass(frozen=True, slots=True)
class Missing:
    """A job with a Slurm id that the answer does not list: slurmctld forgot it (MinJobAge
    after its end); only sacct can tell how it ended."""

    jobid: int
    slurm_id: str


Event: TypeAlias = Found | Absent | Waiting | Began | Ended | Missing


def tag_of(rec: SlurmJob) -> tuple[str, int, int] | None:
    """``(daemon_id, jobid, attempt)`` of the sjq job a Slurm record is: from its tag, and for
    a task of a batch (``sjq.slurm.batch``, first attempts only) from the batch's tag and the
    task's number."""
    tag = parse_attempt_tag(rec.comment)
    if tag is not None:
        return tag
    batch = parse_batch_tag(rec.comment)
    if batch is None or rec.array_task_id is None:
        return None
    return batch[0], batch[1] + rec.array_task_id, 1


def owner(rec: SlurmJob) -> tuple[str, int] | None:
    """``(daemon_id, jobid)`` of the sjq job a Slurm record is (``tag_of``)."""
    tag = tag_of(rec)
    return None if tag is None else (tag[0], tag[1])


def settled(rec: SlurmJob) -> bool:
    """Whether a record may be taken as it stands: sacct lists a job's end state before
    slurmdbd has written all of its end (its end time, who cancelled it); such a record is
    asked for again, never taken as the end."""
    return rec.source != "sacct" or rec.end is not None or progress(rec).phase is not Phase.ENDED


def observe(
    tracked: Mapping[int, Tracked],
    records: Iterable[SlurmJob],
    daemon_id: str,
    asked_at: float,
    complete: bool = True,
) -> list[Event]:
    """What changed for the ``tracked`` jobs, from the ``records`` of one status answer
    (requested at ``asked_at``). ``complete``: the answer lists every job of this user that
    slurmctld knows (a by-user squeue), so a tracked job it lacks is Missing or Absent; a
    partial answer (sacct for some ids) only reports what it lists. ``tracked`` is not
    changed: the caller applies the events (``apply``)."""
    events: list[Event] = []
    seen: set[int] = set()
    for rec in records:
        tag = tag_of(rec)
        if tag is None or tag[0] != daemon_id:
            continue
        t = tracked.get(tag[1])
        if t is None or t.jobid in seen or tag[2] != t.attempt:
            continue  # (another attempt's record: not the one tracked)
        if t.slurm_id is None:
            events.append(Found(t.jobid, rec.key))
        elif t.slurm_id != rec.key:
            continue  # not the record of the submission sjq recorded
        seen.add(t.jobid)
        p = progress(rec)
        if p.phase is Phase.ENDED:
            events.append(Ended(t.jobid, p.state, p.reason, rec))
        elif p.phase is Phase.RUNNING:
            if t.shown is not JobState.RUNNING:
                events.append(Began(t.jobid, rec.start, rec.node))
        elif (p.state, p.reason) != (t.shown, t.reason):
            events.append(Waiting(t.jobid, p.state, p.reason))
    if complete:
        for t in tracked.values():
            if t.jobid in seen:
                continue
            if t.slurm_id is not None and t.known_since <= asked_at:
                events.append(Missing(t.jobid, t.slurm_id))
            elif t.uncertain_since is not None and asked_at >= t.uncertain_since + SETTLE:
                events.append(Absent(t.jobid))
    return events


def apply(tracked: dict[int, Tracked], event: Event) -> None:
    """Bring ``tracked`` up to date with one event."""
    t = tracked.get(event.jobid)
    if t is None:
        return
    match event:
        case Found(_, slurm_id):
            t.slurm_id, t.uncertain_since = slurm_id, None
            t.known_since = 0.0  # the answer that found it lists it
        case Absent():
            del tracked[event.jobid]
        case Waiting(_, shown, reason):
            t.shown, t.reason = shown, reason
        case Began():
            t.shown, t.reason = JobState.RUNNING, ""
        case Ended():
            del tracked[event.jobid]
        case Missing():
            pass


def next_interval(current: float, changed: bool, shortest: float, longest: float) -> float:
    """The wait before the next status query: the shortest while things change (jobs start
    and end in bursts), growing by half each time nothing did, up to the longest."""
    if changed:
        return shortest
    return min(longest, max(shortest, current * GROWTH))
