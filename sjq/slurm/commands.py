"""Runs Slurm's commands (blocking, timed out, counted); imports subprocess, never asyncio.

Besides subprocess it imports only the pure ``sjq.slurm`` modules. Every method blocks
(a command that cannot reach slurmctld retries for about 9 s on 22.05 before it fails, and a
busy controller answers after its MessageTimeout), so the daemon calls them from a worker
thread (``asyncio.to_thread``) or from a helper process, never on its event loop. One
``Slurm`` may be shared by several threads: its only mutable state is the command counter.

Errors (``sjq.slurm.errors``): ``SlurmNotInstalled`` from the constructor when a command is
missing; then, from any method, ``SlurmUnavailable`` (transient, including this module's own
timeout: retry later; after a failed ``submit`` the job may nevertheless be queued, so look
for its tag before submitting it again), ``SlurmRejected`` (definite, Slurm's own message) or
``SlurmConfigError`` (no usable slurm.conf).

The commands run with the caller's environment (``os.environ`` by default, so ``SLURM_CONF``
reaches them) minus the variables that would change what they do or print (``SQUEUE_*``,
``SACCT_*``, ``SBATCH_WAIT``, ``SBATCH_ARRAY_INX``, ``SBATCH_EXPORT``, ``SBATCH_GET_USER_ENV``,
``SLURM_CLUSTERS`` ...), and with ``SLURM_TIME_FORMAT=standard``. Other ``SBATCH_*`` variables
(a site's partition or account) still apply, below ``sjq.slurm.args`` (see ``sjq.slurm.args``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

from sjq.slurm.args import SbatchRequest, Submitted, export_file, parse_sbatch_output, sbatch_args
from sjq.slurm.args import script_for_sbatch as _script
from sjq.slurm.errors import (
    SlurmConfigError,
    SlurmNotInstalled,
    SlurmRejected,
    SlurmUnavailable,
    classify,
)
from sjq.slurm.parse import (
    Parsed,
    Settings,
    SlurmJob,
    parse_config,
    parse_sacct,
    parse_squeue,
    sacct_args,
    settings_of,
    squeue_args,
)

__all__ = ["DEFAULT_TIMEOUT", "REQUIRED", "Slurm", "command_env", "locate"]

REQUIRED = ("sbatch", "squeue", "scontrol", "scancel")
OPTIONAL = ("sacct",)  # part of every Slurm install, but only useful with slurmdbd
# Seconds a command may take. Above Slurm's own retry loop (~9 s to give up on an unreachable
# controller, MessageTimeout 10 s by default), so that Slurm's message is usually what we see.
DEFAULT_TIMEOUT = 30.0
# At most this many ids on one command line; longer lists are split (ARG_MAX is far away,
# but slurmctld answers a huge filter no faster than a by-user query).
MAX_IDS = 2000

_DROP_PREFIXES = ("SQUEUE_", "SACCT_")
_DROP = frozenset({
    "SBATCH_WAIT",  # sbatch would block until the job ends
    "SBATCH_WAIT_ALL_NODES",
    "SBATCH_ARRAY_INX",  # would turn every job into an array
    "SBATCH_EXPORT",  # sjq passes the job's environment itself
    "SBATCH_GET_USER_ENV",  # would add the login environment to the job's
    "SBATCH_CLUSTERS", "SLURM_CLUSTERS",  # jobs on another cluster: squeue would not see them
    "SLURM_TIME_FORMAT",  # set to "standard" below: parse.parse_time reads that form
    "SLURM_BITSTR_LEN",  # would change how pending array ranges print
})  # fmt: skip


def command_env(base: Mapping[str, str]) -> dict[str, str]:
    """The environment Slurm's commands run with (see the module docstring)."""
    env = {k: v for k, v in base.items() if k not in _DROP and not k.startswith(_DROP_PREFIXES)}
    env["SLURM_TIME_FORMAT"] = "standard"
    return env


def locate(path: str | None = None) -> dict[str, str]:
    """Full paths of Slurm's commands on ``path`` (``$PATH`` by default); ``SlurmNotInstalled``
    naming what is missing. ``sacct`` is left out when it is not found."""
    found = {c: p for c in REQUIRED + OPTIONAL if (p := shutil.which(c, path=path)) is not None}
    missing = [c for c in REQUIRED if c not in found]
    if missing:
        where = path if path is not None else os.environ.get("PATH", "")
        raise SlurmNotInstalled(
            f"no {', '.join(missing)} on PATH ({where}); sjq.backend = slurm needs Slurm's"
            " commands sbatch, squeue, scontrol and scancel (Debian/Ubuntu package slurm-client)",
            missing[0],
        )
    return found


def _chunks(ids: Sequence[int | str]) -> Iterable[Sequence[int | str]]:
    for i in range(0, len(ids), MAX_IDS):
        yield ids[i : i + MAX_IDS]


class Slurm:
    """Slurm's commands for one user and one cluster (the one ``SLURM_CONF`` names)."""

    def __init__(
        self,
        env: Mapping[str, str] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        paths: Mapping[str, str] | None = None,
    ) -> None:
        base = os.environ if env is None else env
        self.env = command_env(base)
        self.timeout = timeout
        self.paths = dict(paths) if paths is not None else locate(base.get("PATH"))
        self.user = str(os.geteuid())
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    # -- counting ----------------------------------------------------------------------------

    @property
    def counts(self) -> dict[str, int]:
        """How many times each command has run (failures and timeouts included)."""
        with self._lock:
            return dict(self._counts)

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self._counts.values())

    # -- running -----------------------------------------------------------------------------

    def run(
        self,
        command: str,
        args: Sequence[str],
        *,
        input: bytes | None = None,
        pass_fds: Sequence[int] = (),
        cwd: str | None = None,
        timeout: float | None = None,
    ) -> str:
        """Run one Slurm command; its stdout, or the classified error."""
        path = self.paths.get(command)
        if path is None:
            raise SlurmNotInstalled(f"{command} is not installed", command)
        limit = self.timeout if timeout is None else timeout
        with self._lock:
            self._counts[command] += 1
        try:
            p = subprocess.run(
                [path, *args],
                input=input if input is not None else b"",
                capture_output=True,
                env=self.env,
                cwd=cwd,
                pass_fds=tuple(pass_fds),
                timeout=limit,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise SlurmUnavailable(
                f"{command} did not answer within {limit:g} s (is slurmctld overloaded?)", command
            ) from None
        except FileNotFoundError:
            raise SlurmNotInstalled(f"{path} is gone", command) from None
        except OSError as e:  # no process could be made (EAGAIN, ENOMEM): not Slurm's answer
            raise SlurmUnavailable(f"{command} could not run: {e}", command) from None
        stderr = p.stderr.decode("utf-8", "replace")
        if p.returncode != 0:
            raise classify(command, p.returncode, stderr)
        return p.stdout.decode("utf-8", "replace")

    # -- submitting --------------------------------------------------------------------------

    def submit(
        self,
        req: SbatchRequest,
        script: bytes,
        env: Mapping[str, str],
        cwd: str | None = None,
    ) -> Submitted:
        """``sbatch`` one job: the script on stdin, exactly ``env`` as its environment (through
        an in-memory file), ``req``'s options. ``cwd`` is sbatch's own directory (the job's,
        unless ``req.cwd`` is set)."""
        fd = os.memfd_create("sjq-job-env", os.MFD_CLOEXEC)
        try:
            os.write(fd, export_file(env))
            os.lseek(fd, 0, os.SEEK_SET)
            out = self.run(
                "sbatch", sbatch_args(req, fd), input=_script(script), pass_fds=(fd,), cwd=cwd
            )
        finally:
            os.close(fd)
        try:
            return parse_sbatch_output(out)
        except ValueError as e:
            raise SlurmUnavailable(
                f"sbatch succeeded but {e}; the job may be queued: look for tag {req.tag!r}",
                "sbatch",
            ) from None

    # -- following ---------------------------------------------------------------------------

    def squeue(self, jobs: Sequence[int | str] = (), user: str | None = None) -> Parsed:
        """Jobs slurmctld knows (pending, running, ended less than MinJobAge ago): ``jobs``
        (one command per ``MAX_IDS`` ids), or all of ``user``'s, or all of this user's."""
        if not jobs:
            return self._squeue(squeue_args(user=user if user is not None else self.user))
        out = Parsed()
        for chunk in _chunks(jobs):
            part = self._squeue(squeue_args(jobs=chunk, user=user))
            out.jobs.extend(part.jobs)
            out.junk.extend(part.junk)
        return out

    def _squeue(self, args: list[str]) -> Parsed:
        try:
            return parse_squeue(self.run("squeue", args))
        except SlurmRejected as e:
            # A single id slurmctld no longer knows is an error; several are an empty answer.
            if "invalid job id" in e.message.lower():
                return Parsed()
            raise

    def sacct(
        self, jobs: Sequence[int | str] = (), user: str | None = None, since: str | None = None
    ) -> Parsed:
        """Jobs slurmdbd has recorded, steps folded in: ``jobs``, or ``user``'s (this user's by
        default) since ``since`` (e.g. ``now-7days``). ``AccountingDisabled`` without slurmdbd."""
        if "sacct" not in self.paths:
            raise SlurmNotInstalled("sacct is not installed", "sacct")
        if not jobs:
            who = user if user is not None else self.user
            return parse_sacct(self.run("sacct", sacct_args(user=who, since=since)))
        out = Parsed()
        for chunk in _chunks(jobs):
            part = parse_sacct(self.run("sacct", sacct_args(jobs=chunk, user=user, since=since)))
            out.jobs.extend(part.jobs)
            out.junk.extend(part.junk)
        return out

    def find_tagged(
        self, prefix: str, accounting: bool = False, since: str = "now-7days"
    ) -> list[SlurmJob]:
        """This user's jobs whose comment starts with ``prefix`` (e.g. ``sjq:<daemon-id>:``):
        from squeue, and with ``accounting`` from sacct too (which holds comments only with
        ``AccountingStoreFlags=job_comment``). squeue's record wins for a job in both."""
        found = {j.key: j for j in self.squeue().jobs if j.comment.startswith(prefix)}
        if accounting:
            for j in self.sacct(since=since).jobs:
                if j.comment.startswith(prefix):
                    found.setdefault(j.key, j)
        return list(found.values())

    # -- acting ------------------------------------------------------------------------------

    def cancel(self, jobs: Sequence[int | str], signal: str | None = None) -> None:
        """``scancel`` (SIGTERM, then SIGKILL after Slurm's KillWait); with ``signal``, only
        send that signal to the job's processes, the batch script included. Cancelling a job
        that has already ended is not an error (scancel says nothing)."""
        if not jobs:
            return
        args = [f"--signal={signal}", "--full"] if signal else []
        for chunk in _chunks(jobs):
            self.run("scancel", [*args, *(str(j) for j in chunk)])

    def hold(self, jobs: Sequence[int | str]) -> None:
        """``scontrol uhold``: pending jobs stay pending (reason JobHeldUser) until released.
        (``hold`` is the same for an ordinary user, but for root or a Slurm operator it is an
        administrator's hold, JobHeldAdmin, which the job's owner cannot release.) Holding a
        running job is refused by Slurm."""
        self._scontrol_each("uhold", jobs)

    def release(self, jobs: Sequence[int | str]) -> None:
        """``scontrol release``: held jobs may start again."""
        self._scontrol_each("release", jobs)

    def _scontrol_each(self, verb: str, jobs: Sequence[int | str]) -> None:
        for chunk in _chunks(jobs):
            if chunk:
                self.run("scontrol", [verb, ",".join(str(j) for j in chunk)])

    # -- the cluster -------------------------------------------------------------------------

    def show_config(self) -> dict[str, str]:
        """``scontrol show config`` as a dict (asks slurmctld; transient if it is down)."""
        return parse_config(self.run("scontrol", ["show", "config"]))

    def accounting(self) -> bool:
        """Whether the cluster stores jobs in slurmdbd (and sacct is installed)."""
        kind = self.show_config().get("AccountingStorageType", "")
        return "sacct" in self.paths and kind not in ("", "accounting_storage/none", "(null)")

    def settings(self) -> Settings:
        """What the back end needs of the cluster's configuration (asks slurmctld)."""
        return settings_of(self.show_config(), "sacct" in self.paths)

    def check(self) -> str:
        """Slurm's version (``slurm-wlm 22.05.8``) if the commands can read a configuration;
        else ``SlurmConfigError``. Never asks slurmctld, so a controller that is down does not
        stop a daemon from starting; for a refusal to start with a clear message."""
        conf = self.env.get("SLURM_CONF")
        if conf and not os.path.isfile(conf):
            # The commands would wait 60 s for it to appear (for slow network file systems).
            raise SlurmConfigError(f"SLURM_CONF names {conf}, which does not exist", "sbatch")
        return self.run("sbatch", ["--version"]).strip()
