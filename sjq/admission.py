"""SUBMIT's handler: the daemon's own checks of a job (limits, permissions, dependencies,
paths), the job it makes and its record in the turn's transaction. Plain functions of the
state; no I/O but what the store and the path checks do."""

from __future__ import annotations

import itertools
import os
import pwd
from functools import lru_cache
from typing import TYPE_CHECKING

from sjq.access import path_problems
from sjq.conditions import missing_errors, parents, resolve
from sjq.jobs import Job, JobState
from sjq.launch import home_of
from sjq.patterns import PatternFields, expand
from sjq.protocol import SHUTTING_DOWN, Error, Submit, SubmitOptions
from sjq.protocol._dependency import format_dependency
from sjq.replies import Accepted, Peer
from sjq.store import Element, JobSpec, WriteFailed
from sjq.units import format_mem

if TYPE_CHECKING:
    from sjq.state import State

__all__ = ["admit"]

DEFAULT_NAME = "sjqjob"  # the 2014 daemon's default, kept for scripts that look for it
HOST = os.uname().nodename.split(".")[0]  # %N in output patterns


def admit(st: State, req: Submit, peer: Peer) -> Accepted | Error:
    """Check a SUBMIT and queue its job, or say why not (every problem found, joined)."""
    if not st.accepting:
        return Error(SHUTTING_DOWN)
    cfg, o = st.cfg, req.options
    errors: list[str] = []
    # Under Slurm a PROCS or MEM not given is 0: not passed to sbatch, so the script's
    # #SBATCH lines or the cluster's defaults apply.
    unset = 0 if cfg.backend == "slurm" else None
    procs = (unset if unset is not None else cfg.default_procs) if o.procs is None else o.procs
    if procs > cfg.maxprocs:
        errors.append(
            f"PROCS {procs} is more than the {cfg.maxprocs} CPUs this daemon manages (sjq.maxprocs)"
        )
    mem = (unset if unset is not None else cfg.default_mem) if o.mem is None else o.mem
    if cfg.maxmem is not None and mem > cfg.maxmem:
        errors.append(
            f"MEM {format_mem(mem)} is more than the {format_mem(cfg.maxmem)} this daemon"
            " manages (sjq.maxmem)"
        )
    gpus = o.gpus or 0
    # Under Slurm, Slurm refuses what no node has.
    if cfg.backend == "local" and gpus > st.devices.gpu_count:
        errors.append(
            f"GPUS {gpus} is more than the {st.devices.gpu_count} GPUs this daemon manages"
            " (sjq.gpus)"
        )
    uid, gid = peer.uid, peer.gid
    for opt, asked, own in (("UID", o.uid, peer.uid), ("GID", o.gid, peer.gid)):
        if asked is not None and asked != own and not (st.is_root and peer.uid == 0):
            errors.append(f"{opt} {asked}: only root may run jobs as another user or group")
    if st.is_root and peer.uid == 0:
        uid = peer.uid if o.uid is None else o.uid
        gid = peer.gid if o.gid is None else o.gid
    if cfg.backend == "slurm" and uid != os.geteuid():
        errors.append("under sjq.backend = slurm jobs go to Slurm as the daemon's user only")
    if o.depends or o.dependency:
        st.write_changes()  # so that the store knows the parents' final states
    q = st.queue
    cond = resolve(parents(o.depends, o.dependency), q.get, st.store.state_of, q.started)
    if cond.missing:
        errors += missing_errors(cond.missing, set(o.depends))
    if errors:
        return Error("; ".join(errors))

    jobid = st.next_id
    cwd = os.path.join(home_of(peer.uid), o.cwd) if o.cwd else home_of(peer.uid)
    indexes = o.array if o.entries is None or o.array is not None else range(len(o.entries))
    name = o.name or DEFAULT_NAME
    outputs_of = _Outputs(o, (cfg.default_stdout, cfg.default_stderr), cwd, name, _user(uid))
    # (an array's: the first element's, whose paths are checked for all)
    stdout, stderr, makedirs = outputs_of(jobid, jobid, None if indexes is None else indexes[0])
    spec = JobSpec(
        script=req.script,
        cwd=cwd,
        stdout=stdout,
        stderr=stderr,
        env=None if o.env is None else dict(o.env),
        time_limit=o.time_limit,
        makedirs=makedirs,
    )
    if not (o.depends or o.dependency or o.hold):
        # It could start at once, so a missing directory is a certain E: say so now.
        # (A job that waits may find the directory made by an earlier job.) The keeper
        # creates the missing directories of pattern paths: those are its to judge.
        outputs = tuple(
            (what, path, given is not None)
            for what, path, given in (
                ("stdout", spec.stdout, o.stdout),
                ("stderr", spec.stderr, o.stderr),
            )
            if what not in spec.makedirs or st.path_checks.isdir(os.path.dirname(path))
        )
        problems = path_problems(spec.cwd, outputs, uid, gid, st.path_checks)
        if problems:
            return Error("; ".join(problems))
    waits = cond.unmet or cond.conds
    state = JobState.HELD if o.hold else JobState.WAITING if waits else JobState.QUEUED
    count = 1 if indexes is None else len(indexes)
    depends, dependency = tuple(o.depends), format_dependency(o.dependency)
    jobs = [
        Job(
            id=i,
            name=name,
            state=state,
            procs=procs,
            mem=mem,
            gpus=gpus,
            retry=o.retry or 0,
            retry_mem=o.retry_mem,
            depends=depends,
            dependency=dependency,
            uid=uid,
            gid=gid,
            submit_time=st.now,
            priority=o.priority,
            array=jobid if indexes is not None else 0,
            time_limit=o.time_limit,
        )
        for i in range(jobid, jobid + count)
    ]
    elements = None
    if indexes is not None:
        entries = o.entries or itertools.repeat(None)
        # made one at a time as the store writes them: 10,000 at once would stay in RSS
        elements = (
            Element(*outputs_of(i, jobid, index)[:2], index, entry)
            # (entries repeats None for an array without ENTRY lines: as long as needed)
            for i, index, entry in zip(range(jobid, jobid + count), indexes, entries, strict=False)
        )
    try:
        st.store.insert(jobs, spec, elements, o.array_limit)
    except WriteFailed as e:
        st.write_failed(e.reason)
        return Error(f"cannot record the job: {e.reason}")
    st.next_id += count
    if o.array_limit is not None and o.array_limit < count:
        st.queue.limit_array(jobid, o.array_limit)
    accepted = Accepted(jobid, None if indexes is None else jobid + count - 1)
    for job in jobs:
        st.queue.add(job, st.now, unmet=cond.unmet, conds=cond.conds, doomed=cond.doomed)
    st.accepted(jobs, accepted)
    return accepted


class _Outputs:
    """A job's stdout and stderr paths, and which of them may need a directory.

    A file the client names is a pattern only if it asked (PATTERNS) or the job is an array
    element (ARRAY is as new as PATTERNS): a 2014 client's STDOUT means what it says. The
    configured defaults are always patterns. The keeper creates missing directories for the
    defaults, and for the client's patterns below the working directory (logs/%j.out): a
    path elsewhere that does not exist is more likely a typo, refused at SUBMIT when the job
    could start at once. Array elements share their array's choice.
    """

    __slots__ = ("cwd", "defaults", "name", "options", "patterns", "user")

    def __init__(
        self, o: SubmitOptions, defaults: tuple[str, str], cwd: str, name: str, user: str
    ) -> None:
        self.options = o
        self.patterns = o.patterns or o.array is not None or o.entries is not None
        self.defaults = defaults
        self.cwd = cwd
        self.name = name
        self.user = user

    def __call__(
        self, jobid: int, first: int, index: int | None
    ) -> tuple[str, str, tuple[str, ...]]:
        """The paths of job ``jobid``: element ``index`` of the array ``first`` (None: no
        array), and the outputs whose directory the keeper makes if missing."""
        o, cwd = self.options, self.cwd
        fields = PatternFields(
            jobid=jobid,
            name=self.name,
            user=self.user,
            host=HOST,
            array_id=None if index is None else first,
            array_index=index,
        )
        paths: list[str] = []
        makedirs: list[str] = []
        for what, given, default in (
            ("stdout", o.stdout, self.defaults[0]),
            ("stderr", o.stderr, self.defaults[1]),
        ):
            if given and not self.patterns:
                paths.append(os.path.join(cwd, given))
                continue
            path = os.path.join(cwd, expand(given or default, fields))
            paths.append(path)
            if not given or _below(path, cwd):
                makedirs.append(what)
        return paths[0], paths[1], tuple(makedirs)


@lru_cache(maxsize=256)
def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _below(path: str, directory: str) -> bool:
    """Whether ``path`` lies inside ``directory`` (``..`` resolved, symlinks not)."""
    return os.path.normpath(path).startswith(os.path.join(os.path.normpath(directory), ""))
