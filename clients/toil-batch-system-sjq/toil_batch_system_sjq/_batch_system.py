"""SjqBatchSystem: Toil's batch-system API over one sjq daemon; imports Toil and sjq_client.

Each job the Toil leader issues becomes one sjq job: the worker command run by ``/bin/sh``
with the leader's environment, ``cores`` rounded up to whole PROCS, ``memory`` as MEM bytes,
``walltime`` as TIME (the rules are in ``_mapping``). Jobs Toil marks local (CWL's
housekeeping) run on the leader, as with Toil's other batch systems.

Status comes from INFO over every unfinished job in one request per poll, on the client's
one connection; polls come fast after a change and slow down to ``--statePollingWait``
(default 1 s) while nothing happens. The sjq client is not thread-safe, so each thread that
calls in gets its own.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import subprocess
import sys
import threading
import time
from argparse import ArgumentParser, _ArgumentGroup
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from sjq_client import (
    Client,
    DaemonNotRunning,
    JobTimeout,
    RequestRejected,
    SjqError,
    TransportError,
)
from toil.batchSystems.abstractBatchSystem import (
    BatchJobExitReason,
    InsufficientSystemResources,
    UpdatedBatchJobInfo,
)
from toil.batchSystems.cleanup_support import BatchSystemCleanupSupport
from toil.bus import ExternalBatchIdMessage, get_job_kind

from sjq.protocol import JobState

from . import _mapping

if TYPE_CHECKING:
    from sjq_client import JobInfo
    from toil.batchSystems.options import OptionSetter
    from toil.common import Config
    from toil.job import JobDescription, Requirer

__all__ = ["SjqBatchSystem"]

# Under "toil": Toil sets every other top-level logger to CRITICAL when it sets its log level.
logger = logging.getLogger("toil.batchSystems.sjq")

T = TypeVar("T")

MIN_POLL = 0.05  # seconds between polls right after a job was issued or ended
DEFAULT_MAX_POLL = 1.0  # the slowest poll while nothing changes, unless --statePollingWait
DEFAULT_UNREACHABLE = 1200.0  # seconds without a daemon before the run fails (Toil's default)
# How long to wait for killed jobs to end. sjq sends SIGTERM, then SIGKILL after
# sjq.killgrace (5 s by default); this only bounds a daemon that has stopped answering.
KILL_WAIT = 120.0
START_TIMEOUT = 60.0  # seconds for `sjq server -d` to report a daemon ready
TAIL_BYTES = 4096  # of a failed job's stderr, shown in the leader's log

_RUNNING = JobState.RUNNING
_WAITING = frozenset({JobState.QUEUED, JobState.WAITING, JobState.HELD})


@dataclass(slots=True)
class _Issued:
    """One issued job that has not yet been reported as ended."""

    toil_id: int
    sjq_id: int
    name: str
    stdout: str
    stderr: str
    state: JobState = JobState.QUEUED  # as of the last poll
    started: float | None = None  # unix seconds, once running


class SjqBatchSystem(BatchSystemCleanupSupport):
    """Toil's ``--batchSystem sjq``: Toil jobs as jobs of the sjq daemon on this machine."""

    @classmethod
    def supportsAutoDeployment(cls) -> bool:
        # Jobs run on this machine, where the workflow's own modules already are.
        return False

    @classmethod
    def add_options(cls, parser: ArgumentParser | _ArgumentGroup) -> None:
        parser.add_argument(
            "--sjqSocket",
            dest="sjq_socket",
            default=None,
            metavar="PATH",
            help="The sjq daemon's socket (sjq batch system). Default: $SJQ_SOCKET, else"
            " sjq.socket from the sjq config file, else ~/.sjq.sock. A daemon is started there"
            " if none answers.",
        )
        parser.add_argument(
            "--sjqConfig",
            dest="sjq_config",
            default=None,
            metavar="FILE",
            help="The sjq config file (sjq batch system). Default: $SJQ_CONFIG, else ~/.sjqrc.",
        )

    @classmethod
    def setOptions(cls, setOption: OptionSetter) -> None:
        setOption("sjq_socket")
        setOption("sjq_config")

    def __init__(self, config: Config, maxCores: float, maxMemory: float, maxDisk: int) -> None:
        super().__init__(config, maxCores, maxMemory, maxDisk)
        self._socket: str | None = getattr(config, "sjq_socket", None)
        self._rcfile: str | None = getattr(config, "sjq_config", None)
        # Every sjq job name carries this, so that the jobs of one workflow can be told apart
        # in `sjq status` and found again at shutdown.
        self._tag = str(config.workflowID)[:8]
        self._max_poll = float(getattr(config, "statePollingWait", None) or DEFAULT_MAX_POLL)
        self._max_unreachable = float(
            getattr(config, "state_polling_timeout", None) or DEFAULT_UNREACHABLE
        )
        self._lock = threading.RLock()
        self._local = threading.local()
        self._clients: list[Client] = []
        self._jobs: dict[int, _Issued] = {}  # by Toil's batch id
        self._updates: collections.deque[UpdatedBatchJobInfo] = collections.deque()
        self._interval = MIN_POLL
        self._next_poll = 0.0  # time.monotonic() of the next INFO poll
        self._unreachable_since: float | None = None
        # True once a SUBMIT was cut short: that job may exist without our knowing its id.
        self._unsure = False
        self._shut = False
        self._client()  # reads the sjq config now, so a bad one fails before any job is issued

    # -- the client of this thread ----------------------------------------------------------

    def _client(self) -> Client:
        client: Client | None = getattr(self._local, "client", None)
        if client is None:
            client = Client(self._socket, config=self._rcfile)
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    def _with_daemon(self, call: Callable[[Client], T]) -> T:
        """``call(client)``; if no daemon answers, start one (it re-adopts running jobs and
        answers for ended ones from its database) and call again."""
        client = self._client()
        try:
            return call(client)
        except DaemonNotRunning as e:
            self._start_daemon(e)
            return call(client)

    def _start_daemon(self, why: DaemonNotRunning) -> None:
        # Through the `sjq server -d` command, as a user would; the client starts one only
        # for a submit, and a daemon that stopped after being idle still holds our records.
        logger.warning("no sjq daemon answers on %s; starting one (sjq server -d)", why.socket)
        command = [sys.executable, "-m", "sjq_client"]
        if self._rcfile is not None:
            command += ["-c", self._rcfile]
        if self._socket is not None:
            command += ["-S", self._socket]
        command += ["server", "-d", "--set", "sjq.autoshutdown=T"]
        with contextlib.suppress(subprocess.TimeoutExpired, OSError):
            # A daemon that another process started meanwhile makes this fail: that is fine.
            subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=START_TIMEOUT,
                check=False,
            )

    # -- issuing ----------------------------------------------------------------------------

    def issueBatchJob(
        self,
        command: str,
        job_desc: JobDescription,
        job_environment: dict[str, str] | None = None,
    ) -> int:
        local_id: int | None = self.handleLocalJob(command, job_desc)
        if local_id is not None:
            return local_id
        self.check_resource_request(job_desc)
        toil_id: int = self.getNextJobID()
        name = _mapping.job_name(toil_id, get_job_kind(job_desc.get_names()), self._tag)
        stdout: str = self.format_std_out_err_path(toil_id, "sjq", "out")
        stderr: str = self.format_std_out_err_path(toil_id, "sjq", "err")
        try:
            job = self._client().submit(
                _mapping.worker_script(command),
                procs=_mapping.procs_for(job_desc.cores),
                gpus=_mapping.gpus_for(job_desc.accelerators) or None,
                mem=int(job_desc.memory),
                time_limit=_mapping.time_limit_for(getattr(job_desc, "walltime", None)),
                name=name,
                env=_mapping.worker_env(os.environ, self.environment, job_environment),
                cwd=os.getcwd(),
                stdout=stdout,
                stderr=stderr,
            )
        except RequestRejected as e:
            raise self._refused(job_desc, e.message) from None
        except BaseException:
            self._unsure = True  # the SUBMIT may have been carried out all the same
            raise
        with self._lock:
            self._jobs[toil_id] = _Issued(toil_id, job.id, name, stdout, stderr)
            self._poll_soon()
        if self._outbox is not None:
            self._outbox.publish(ExternalBatchIdMessage(toil_id, str(job.id), type(self).__name__))
        logger.debug("Toil job %s is sjq job %s (%s)", toil_id, job.id, name)
        return toil_id

    def _check_accelerator_request(self, requirer: Requirer) -> None:
        """GPUs are accepted (the daemon says at submit whether it has that many); other
        accelerators are refused, as Toil's batch systems refuse what they cannot provide."""
        try:
            _mapping.gpus_for(requirer.accelerators)
        except ValueError as e:
            raise InsufficientSystemResources(
                requirer, "accelerators", [], details=[f"The sjq batch system: {e}."]
            ) from None

    def _refused(self, job_desc: JobDescription, message: str) -> Exception:
        for word, resource in (("PROCS ", "cores"), ("MEM ", "memory"), ("GPUS ", "accelerators")):
            if message.startswith(word):
                error = InsufficientSystemResources(
                    job_desc, resource, details=[f"The sjq daemon says: {message}"]
                )
                error.batch_system = type(self).__name__
                return error
        return RuntimeError(f"the sjq daemon refused Toil job {job_desc}: {message}")

    # -- status -----------------------------------------------------------------------------

    def getUpdatedBatchJob(self, maxWait: int) -> UpdatedBatchJobInfo | None:
        deadline = time.monotonic() + maxWait
        while True:
            local: UpdatedBatchJobInfo | None = self.getUpdatedLocalJob(0)
            if local is not None:
                return local
            with self._lock:
                if self._updates:
                    return self._updates.popleft()
                pending = bool(self._jobs)
            now = time.monotonic()
            if pending and now >= self._next_poll:
                self._poll()
                continue
            left = deadline - now
            if left <= 0:
                return None
            # Until the next poll, wait on the queue of local jobs instead of sleeping. (Toil
            # annotates int seconds, and hands them to Queue.get, which takes a float.)
            wait = min(left, self._next_poll - now) if pending else left
            local = self.getUpdatedLocalJob(wait)  # type: ignore[arg-type]
            if local is not None:
                return local

    def getIssuedBatchJobIDs(self) -> list[int]:
        local: list[int] = self.getIssuedLocalJobIDs()
        with self._lock:
            return [*local, *self._jobs, *(u.jobID for u in self._updates)]

    def getRunningBatchJobIDs(self) -> dict[int, float]:
        if self._jobs and time.monotonic() >= self._next_poll:
            self._poll()
        now = time.time()
        with self._lock:
            running = {
                r.toil_id: max(0.0, now - r.started)
                for r in self._jobs.values()
                if r.state is _RUNNING and r.started is not None
            }
        local: dict[int, float] = self.getRunningLocalJobIDs()
        running.update(local)
        return running

    def getSchedulingStatusMessage(self) -> str | None:
        with self._lock:
            waiting = sum(1 for r in self._jobs.values() if r.state in _WAITING)
        if not waiting:
            return None
        return (
            f"{waiting} job(s) wait in sjq's queue for CPUs or memory that other jobs hold;"
            " `sjq status` shows what is running"
        )

    def _poll_soon(self) -> None:
        self._interval = MIN_POLL
        self._next_poll = min(self._next_poll, time.monotonic() + MIN_POLL)

    def _poll(self) -> None:
        """One INFO request for every unfinished job; ended ones join the update queue."""
        with self._lock:
            wanted = list(self._jobs.values())
        try:
            infos = self._client().status([r.sjq_id for r in wanted])
        except TransportError as e:  # no daemon, or it stopped or hung mid-request
            self._unreachable(e)
            return
        self._unreachable_since = None
        found = {i.id: i for i in infos}
        ended: list[tuple[_Issued, JobInfo | None, _mapping.Outcome]] = []
        with self._lock:
            for rec in wanted:
                if self._jobs.get(rec.toil_id) is not rec:
                    continue  # killed while we asked
                info = found.get(rec.sjq_id)
                if info is not None and not info.finished:
                    rec.state, rec.started = info.state, info.started
                    continue
                result = _mapping.lost() if info is None else _mapping.outcome(info)
                status, reason, wall = result
                del self._jobs[rec.toil_id]
                self._updates.append(
                    UpdatedBatchJobInfo(
                        jobID=rec.toil_id,
                        exitStatus=status,
                        exitReason=BatchJobExitReason[reason],
                        wallTime=wall,
                        backing_id=str(rec.sjq_id),
                    )
                )
                ended.append((rec, info, result))
            if ended:
                self._interval = MIN_POLL
            else:
                self._interval = min(self._interval * 2, self._max_poll)
            self._next_poll = time.monotonic() + self._interval
        for rec, info, result in ended:
            self._tell(rec, info, result)

    def _unreachable(self, error: TransportError) -> None:
        """Poll again later; start a daemon if none runs; fail the run after
        --statePollingTimeout seconds without an answer."""
        now = time.monotonic()
        if self._unreachable_since is None:
            self._unreachable_since = now
        elif now - self._unreachable_since > self._max_unreachable:
            raise RuntimeError(
                f"{error}: it has not answered for {now - self._unreachable_since:.0f} s"
                " (--statePollingTimeout); the state of this workflow's sjq jobs is unknown"
            ) from None
        if isinstance(error, DaemonNotRunning):
            self._start_daemon(error)
        else:
            logger.warning("%s; asking again", error)
        with self._lock:
            self._interval = min(max(self._interval * 2, 1.0), self._max_poll)
            self._next_poll = time.monotonic() + self._interval

    def _tell(self, rec: _Issued, info: JobInfo | None, result: _mapping.Outcome) -> None:
        """Log a failed job's reason and the end of its stderr (Toil shows the batch
        system's own files only for its grid-engine batch systems); drop empty log files."""
        status, reason, _ = result
        if status != 0:
            why = "the daemon no longer knows it" if info is None else _why(info)
            tail = _tail(rec.stderr)
            logger.warning(
                "sjq job %s (%s) %s [to Toil: %s, exit status %s]%s",
                rec.sjq_id,
                rec.name,
                why,
                reason,
                status,
                f"; the end of its stderr ({rec.stderr}):\n{tail}" if tail else "",
            )
        _remove_if_empty(rec.stdout, rec.stderr)

    # -- killing ----------------------------------------------------------------------------

    def killBatchJobs(self, jobIDs: list[int]) -> None:
        self.killLocalJobs(jobIDs)
        doomed = self._forget(jobIDs)
        self._kill(doomed)

    def _forget(self, ids: Sequence[int]) -> list[_Issued]:
        """Take jobs out of our books: they are never reported as updated or running."""
        wanted = set(ids)
        with self._lock:
            doomed = [self._jobs.pop(i) for i in ids if i in self._jobs]
            self._updates = collections.deque(u for u in self._updates if u.jobID not in wanted)
        return doomed

    def _kill(self, doomed: Sequence[_Issued]) -> None:
        """KILL the jobs, all in one round trip, and wait until each has ended."""
        if not doomed:
            return
        ids = [r.sjq_id for r in doomed]
        self._with_daemon(lambda c: c.kill(ids))
        try:
            self._client().wait(ids, timeout=KILL_WAIT)
        except JobTimeout as e:
            logger.warning(
                "sjq jobs %s had not ended %g s after KILL; check `sjq status`",
                " ".join(map(str, e.pending)),
                KILL_WAIT,
            )
        except RequestRejected as e:  # one of them was forgotten meanwhile: nothing to wait for
            logger.debug("waiting for killed sjq jobs: %s", e)
        for rec in doomed:
            _remove_if_empty(rec.stdout, rec.stderr)

    def _sweep(self) -> None:
        """Kill this workflow's unfinished sjq jobs that we hold no id of (a SUBMIT that was
        interrupted after the daemon had queued the job), found by their names."""
        prefix = f"toil.{self._tag}."
        infos = self._with_daemon(lambda c: c.status(states=(*_WAITING, _RUNNING)))
        strays = [i.id for i in infos if i.name.startswith(prefix)]
        if strays:
            logger.info("killing %d sjq job(s) of this workflow issued as it stopped", len(strays))
            self._with_daemon(lambda c: c.kill(strays))
            with contextlib.suppress(JobTimeout, RequestRejected):
                self._client().wait(strays, timeout=KILL_WAIT)

    def shutdown(self) -> None:
        # Toil calls only this on Ctrl-C or SIGTERM, never killBatchJobs: whatever is still
        # issued must be killed here, or it would run on with nobody to read its result.
        with self._lock:
            first, self._shut = not self._shut, True
            doomed = list(self._jobs.values())
            self._jobs.clear()
            self._updates.clear()
        try:
            if first:
                if doomed:
                    logger.info("killing %d sjq job(s) still issued", len(doomed))
                self._kill(doomed)
                if self._unsure:
                    self._sweep()
        except SjqError as e:
            logger.error(
                "could not kill this workflow's sjq jobs (%s); `sjq status` lists them,"
                " their names start with toil.%s.",
                e,
                self._tag,
            )
        finally:
            self.shutdownLocal()
            with self._lock:
                clients, self._clients = self._clients, []
            for client in clients:
                client.close()


def _why(info: JobInfo) -> str:
    word = {
        JobState.FAIL: "failed",
        JobState.KILLED: "was killed",
        JobState.ERROR: "could not start",
        JobState.ABORT: "was aborted",
    }.get(info.state, info.state.word)
    return f"{word}: {info.reason}" if info.reason else word


def _tail(path: str) -> str:
    if path == os.devnull:
        return ""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - TAIL_BYTES))
            return f.read().decode(errors="replace").strip()
    except OSError:
        return ""


def _remove_if_empty(*paths: str) -> None:
    for path in paths:
        if path != os.devnull:
            with contextlib.suppress(OSError):
                if os.path.getsize(path) == 0:
                    os.unlink(path)
