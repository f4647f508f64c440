"""The Executor: submits each Snakemake job as an sjq job, polls them all at once, kills on cancel.

Submits from Snakemake's scheduling thread with a blocking sjq_client.Client (which starts the
daemon when none answers); polls from the executor's status thread with an AsyncClient, one
INFO request for every active job per round, over one connection.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any

from sjq_client import AsyncClient, Client, RequestRejected, SjqError, TransportError
from snakemake_interface_common.exceptions import WorkflowError
from snakemake_interface_executor_plugins.executors.base import SubmittedJobInfo
from snakemake_interface_executor_plugins.executors.remote import RemoteExecutor

from sjq.protocol import JobState

from . import _mapping

if TYPE_CHECKING:
    from sjq_client import JobInfo
    from snakemake_interface_executor_plugins.jobs import JobExecutorInterface

__all__ = ["Executor"]

# A poll that cannot reach the daemon is tried again next round; after this many in a row the
# run stops with the error (the daemon crashed, or its socket was removed).
MAX_POLL_FAILURES = 5
# Seconds between polls: one INFO for every active job costs the daemon little, and Snakemake's
# own default (10 s) would add seconds to every short job.
STATUS_INTERVAL = 1.0


class Executor(RemoteExecutor):  # type: ignore[misc]  # snakemake's classes are untyped
    def __post_init__(self) -> None:
        settings = self.workflow.executor_settings
        self._socket: str | None = getattr(settings, "socket", None)
        self._config: str | None = getattr(settings, "config", None)
        self._logdir: str = getattr(settings, "logdir", None) or os.path.join(
            ".snakemake", "sjq_logs"
        )
        interval = getattr(settings, "status_interval", None) or STATUS_INTERVAL
        if interval <= 0:
            raise WorkflowError(f"--sjq-status-interval must be above 0, got {interval}")
        self.next_seconds_between_status_checks = interval
        self._workdir: str = self.workflow.workdir_init
        try:
            self._client = Client(self._socket, config=self._config)
        except ValueError as e:  # sjq.config.ConfigError: names the file and line
            raise WorkflowError(f"sjq: {e}") from None
        self._poller: AsyncClient | None = None  # made in the status thread's event loop
        # Every sjq job of this run that has not been seen ending: what a cancel kills. Kept
        # apart from Snakemake's active_jobs, which the status thread takes out while it polls.
        self._running: set[int] = set()
        self._running_lock = threading.Lock()
        self._poll_failures = 0
        self._started = time.time()
        self._interrupted: str | None = None  # name of a job whose submit was interrupted

    # -- submitting -------------------------------------------------------------------------

    def run_job(self, job: JobExecutorInterface) -> None:
        job_info = SubmittedJobInfo(job)
        try:
            kwargs = self._submit_arguments(job)
        except _mapping.MappingError as e:
            self.report_job_error(job_info, msg=f"sjq cannot run this job: {e}")
            return
        script = self.jobscript.format(
            properties=job.properties(), exec_job=self.format_job_exec(job)
        )
        try:
            submitted = self._client.submit(script, **kwargs)
        except (KeyboardInterrupt, SystemExit):
            # Ctrl-C while the daemon was answering: the job may be queued without our
            # knowing its id. The cancel that follows looks for it by name.
            self._interrupted = kwargs["name"]
            raise
        except RequestRejected as e:
            self.report_job_error(job_info, msg=_refusal(e, kwargs))
            return
        except TransportError as e:
            raise WorkflowError(f"sjq: {e}") from None
        except (SjqError, ValueError) as e:
            self.report_job_error(job_info, msg=f"sjq refused the job: {e}")
            return
        job_info.external_jobid = str(submitted.id)
        job_info.aux = {"output": kwargs["stdout"]}
        with self._running_lock:
            self._running.add(submitted.id)
        self.logger.info(
            f"Submitted {'group job' if job.is_group() else 'job'} {job.jobid}"
            f" as sjq job {submitted.id} (output in {kwargs['stdout']})."
        )
        self.report_job_submission(job_info)

    def _submit_arguments(self, job: JobExecutorInterface) -> dict[str, Any]:
        resources = job.resources
        if job.is_group():
            name = _mapping.job_name(f"group_{job.name}", None)
        else:
            name = _mapping.job_name(job.name, dict(job.wildcards_dict))
        output = _mapping.output_file(job.logfile_suggestion(self._logdir), self._workdir)
        kwargs: dict[str, Any] = {
            "procs": max(1, int(job.threads)),
            "mem": _mapping.memory(resources),
            "time_limit": _mapping.time_limit(resources),
            "name": name,
            "cwd": self._workdir,
            "stdout": output,
            "stderr": output,
        }
        gpus = _mapping.gpus(resources)
        if gpus:
            kwargs["gpus"] = gpus
        return kwargs

    # -- status -----------------------------------------------------------------------------

    async def check_active_jobs(
        self, active_jobs: list[SubmittedJobInfo]
    ) -> AsyncGenerator[SubmittedJobInfo, None]:
        if not active_jobs:
            return
        if self._poller is None:
            self._poller = AsyncClient(self._socket, config=self._config, autostart=False)
        ids = [int(j.external_jobid) for j in active_jobs]
        async with self.status_rate_limiter:
            try:
                infos = {i.id: i for i in await self._poller.status(ids)}
            except TransportError as e:
                self._poll_failures += 1
                if self._poll_failures >= MAX_POLL_FAILURES:
                    raise WorkflowError(
                        f"sjq: the status of {len(ids)} job(s) could not be read"
                        f" {self._poll_failures} times in a row: {e}"
                    ) from None
                self.logger.warning(f"sjq: could not read job status, trying again: {e}")
                for job_info in active_jobs:
                    yield job_info
                return
        self._poll_failures = 0
        for job_info in active_jobs:
            jobid = int(job_info.external_jobid)
            info = infos.get(jobid)
            if info is not None and not info.finished:
                yield job_info
                continue
            with self._running_lock:
                self._running.discard(jobid)
            if info is not None and info.state is JobState.SUCCESS:
                self.report_job_success(job_info)
            else:
                self.report_job_error(
                    job_info,
                    msg=_failure(jobid, info),
                    aux_logs=[job_info.aux["output"]],
                )

    # -- cancel and shutdown ----------------------------------------------------------------

    def cancel_jobs(self, active_jobs: list[SubmittedJobInfo]) -> None:
        with self._running_lock:
            ids = set(self._running)
        ids.update(int(j.external_jobid) for j in active_jobs if j.external_jobid)
        if self._interrupted is not None:
            ids.update(self._lost_submission(self._interrupted, max(ids, default=0)))
        if not ids:
            return
        try:
            self._client.kill(sorted(ids))
        except SjqError as e:
            self.logger.error(f"sjq: could not kill jobs {_id_list(ids)}: {e}")
            return
        self.logger.info(f"sjq: killed {len(ids)} job(s): {_id_list(ids)}")

    def _lost_submission(self, name: str, after: int) -> list[int]:
        """Ids of jobs named ``name`` queued from our directory since this run began, newer
        than ``after``: a submit interrupted before its reply."""
        try:
            infos = self._client.status()
        except SjqError:
            return []
        return [
            i.id
            for i in infos
            if i.id > after
            and i.name == name
            and i.cwd == self._workdir
            and i.submitted >= self._started
            and not i.finished
        ]

    def shutdown(self) -> None:
        super().shutdown()  # ends the status thread, whose event loop closes the poller
        self._client.close()


def _failure(jobid: int, info: JobInfo | None) -> str:
    if info is None:
        return (
            f"sjq job {jobid} is no longer known to the daemon (forgotten after sjq.keep,"
            " or its database was removed). "
        )
    how = {"F": "failed", "K": "was killed", "A": "was aborted", "E": "could not start"}
    text = f"sjq job {jobid} {how.get(info.state.value, 'ended')}"
    if info.reason:
        text += f": {info.reason}"
    elif info.exit_code is not None:
        text += f": exit status {info.exit_code}"
    text += f". Its output and errors: {info.stdout}"
    if info.stderr != info.stdout:
        text += f" and {info.stderr}"
    return text + ". "


def _refusal(e: RequestRejected, kwargs: dict[str, Any]) -> str:
    if "unknown option GPUS" in e.message and "gpus" in kwargs:
        return (
            f"the sjq daemon refused the job's GPU request ({e.message}): it is older than this"
            " client and has no GPUS option; upgrade and restart the daemon (`sjq server --stop`)"
        )
    return f"the sjq daemon refused the job: {e.message}"


def _id_list(ids: set[int], limit: int = 20) -> str:
    shown = sorted(ids)
    text = " ".join(map(str, shown[:limit]))
    return text + (f" ... ({len(shown) - limit} more)" if len(shown) > limit else "")
