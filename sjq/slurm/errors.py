"""The Slurm layer's errors and what a failed command means; pure: imports no subprocess/asyncio.

The tree, split by what the caller should do::

    SlurmError                  str() is the whole message (for the log or a job's reason)
    ├── SlurmNotInstalled       a Slurm command is not on PATH: with sjq.backend = slurm the
    │                           daemon refuses to start
    ├── SlurmConfigError        the commands find no usable slurm.conf: an administrator's fix,
    │                           not a job's fault; the daemon refuses to start or reports it
    ├── SlurmUnavailable        transient: slurmctld (or slurmdbd) unreachable, slow or busy,
    │                           or the command's own timeout; retry later with backoff. For
    │                           sbatch the outcome is unknown: the job may have been queued, so
    │                           look for its tag before submitting it again
    └── SlurmRejected           definite: Slurm refused this request (a bad partition, an
        │                       impossible request, a bad option); ``message`` is Slurm's text
        └── AccountingDisabled  sacct on a cluster without slurmdbd
"""

from __future__ import annotations

__all__ = [
    "AccountingDisabled",
    "SlurmConfigError",
    "SlurmError",
    "SlurmNotInstalled",
    "SlurmRejected",
    "SlurmUnavailable",
    "classify",
    "slurm_message",
]


class SlurmError(Exception):
    """Base of the Slurm command layer's errors; ``command`` is the program (``sbatch`` ...)."""

    def __init__(self, message: str, command: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.command = command


class SlurmNotInstalled(SlurmError):
    """A Slurm client command is missing."""


class SlurmConfigError(SlurmError):
    """The Slurm commands cannot read a configuration (no slurm.conf, SLURM_CONF wrong ...)."""


class SlurmUnavailable(SlurmError):
    """Transient: try again later. Nothing is known to have happened (nor not to have)."""


class SlurmRejected(SlurmError):
    """Definite: Slurm refused the request, and will again; ``message`` is Slurm's own text."""


class AccountingDisabled(SlurmRejected):
    """``sacct`` on a cluster that stores no accounting (``AccountingStorageType=none``)."""


# Lower-case pieces of Slurm's (and the C library's) messages that mean "not now" rather than
# "never". Seen on 22.05 with slurmctld stopped: "Unable to contact slurm controller (connect
# failure)" from sbatch, squeue, scontrol and scancel after ~9 s, and "Unexpected message
# received" from scontrol hold/release; slurmdbd stopped: sacct's "Connection refused".
_TRANSIENT = (
    "unable to contact slurm controller",
    "socket timed out",
    "connection refused",
    "connection timed out",
    "connection reset",
    "zero bytes were transmitted or received",
    "communication connection failure",
    "temporarily unable to accept job",
    "resource temporarily unavailable",
    "transport endpoint is not connected",
    "no route to host",
    "network is unreachable",
    "unexpected message received",
    "slurmctld is busy",
    "in standby mode",
    "problem talking to the database",
    "slurm_persist_conn_open",
    "munge encode failed",
    "munge decode failed",
    "munged communication error",
    "did you start munged",  # munged restarting
    "slurm is not responding",
    "job allocation request has been throttled",
)
_CONFIG = (
    "could not establish a configuration source",
    "unable to process configuration file",
    "cannot stat file",
    "clustername needs to be specified",
)
_ACCOUNTING_OFF = "accounting storage is disabled"


def slurm_message(stderr: str, command: str = "") -> str:
    """Slurm's text from a command's stderr: one line per message, ``"<command>: error: "``
    prefixes and the ``Try "sbatch --help"`` hint removed, joined with ``"; "``."""
    out: list[str] = []
    for raw in stderr.splitlines():
        line = raw.strip()
        if not line or line.startswith('Try "'):
            continue
        for prefix in ("error: ", "fatal: ", "warning: "):
            head, sep, rest = line.partition(prefix)
            # "sbatch: error: ...", "slurm_load_jobs error: ...", "error: ...": one word before
            if sep and len(head) < 48 and " " not in head.strip():
                line = rest.strip()
                break
        else:
            head, sep, rest = line.partition(": ")  # "/usr/bin/sbatch: unrecognized option"
            if command and sep and head.rpartition("/")[2] == command:
                line = rest.strip()
        if line and line not in out:
            out.append(line)
    return "; ".join(out)


def classify(command: str, returncode: int, stderr: str) -> SlurmError:
    """The error a command's non-zero exit means: transient, configuration or definite."""
    text = slurm_message(stderr, command)
    low = stderr.lower()
    if returncode < 0:
        return SlurmUnavailable(f"{command} was killed by signal {-returncode}", command)
    if any(piece in low for piece in _CONFIG):
        return SlurmConfigError(
            f"{command} cannot read Slurm's configuration: {text or 'no message'}"
            " (is SLURM_CONF set, or /etc/slurm/slurm.conf present?)",
            command,
        )
    if any(piece in low for piece in _TRANSIENT):
        return SlurmUnavailable(f"{command}: {text}", command)
    if _ACCOUNTING_OFF in low:
        return AccountingDisabled(text, command)
    return SlurmRejected(text or f"{command} exited with status {returncode}", command)
