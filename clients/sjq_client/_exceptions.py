"""Every exception the client raises on purpose. Imports only the protocol's ProtocolError.

The tree, split by who has to act (as httpx's ``_exceptions.py``)::

    SjqError                  base: ``except SjqError`` catches everything below
    ├── TransportError        the environment: the daemon cannot be reached
    │   ├── DaemonNotRunning  nothing answers on the socket, and this call does not start one
    │   ├── DaemonStartFailed auto-start was tried and failed (``.log_tail``: the daemon log's end)
    │   └── ConnectionLost    the daemon closed the connection, or stopped answering, mid-request
    ├── ProtocolError         a bug, or not an sjq daemon: the reply could not be read
    │                         (also an ``sjq.protocol.ProtocolError``)
    ├── RequestRejected       the caller: the daemon answered ``ERROR`` (``.message``, verbatim),
    │                         or was asked about a job it does not know
    ├── JobNotFinished        the caller: ``Job.successful()`` before the job ended (also a
    │                         ValueError, as ``multiprocessing.pool.AsyncResult.successful``)
    └── JobTimeout            nobody: a wait ran out before the jobs ended (also TimeoutError;
                              ``.pending``: the ids that had not ended)

Arguments the client can check without asking the daemon (``procs=0``, ``mem="lots"``, a newline
in a name, both ``script`` and ``command``) raise ``ValueError`` or ``TypeError`` and nothing is
sent: those are programming errors, not conditions to handle.

``str()`` of each is a sentence for a person, ending in what to do about it where there is
something to do; the CLI prints it as it is.
"""

from __future__ import annotations

from sjq.protocol import ProtocolError as _WireProtocolError

__all__ = [
    "ConnectionLost",
    "DaemonNotRunning",
    "DaemonStartFailed",
    "JobNotFinished",
    "JobTimeout",
    "ProtocolError",
    "RequestRejected",
    "SjqError",
    "TransportError",
]


class SjqError(Exception):
    """Base of every exception the sjq client raises on purpose."""


class TransportError(SjqError):
    """The daemon could not be reached, or went away: nothing about the request was wrong."""

    def __init__(self, message: str, socket: str) -> None:
        super().__init__(message)
        self.socket = socket


class DaemonNotRunning(TransportError):
    """Nothing answers on the socket, and this call is not one that starts a daemon."""

    def __init__(self, socket: str) -> None:
        super().__init__(
            f"no sjq daemon is running on {socket}; start one with `sjq server -d`"
            " (or submit a job: `sjq submit` starts one)",
            socket,
        )


class DaemonStartFailed(TransportError):
    """Auto-start was tried and did not give a daemon that answers.

    ``reason`` is what the starting daemon said; ``log_tail`` the last lines of its log file
    (empty when there is none), which usually say why.
    """

    def __init__(self, socket: str, reason: str, log_tail: str, logfile: str | None) -> None:
        text = f"could not start an sjq daemon on {socket}: {reason}"
        if log_tail:
            text += f"\nlast lines of {logfile}:\n{log_tail.rstrip()}"
        elif logfile:
            text += f"\n(nothing in its log {logfile}; try `sjq server -f` to see it start)"
        else:
            text += (
                "\n(it has no log file, sjq.logfile = none; try `sjq server -f` to see it start)"
            )
        super().__init__(text, socket)
        self.reason = reason
        self.log_tail = log_tail


class ConnectionLost(TransportError):
    """The daemon closed the connection before answering, or did not answer in time."""


class ProtocolError(SjqError, _WireProtocolError):
    """The daemon's reply could not be read: a bug, or something other than sjq on the socket."""


class RequestRejected(SjqError):
    """The daemon refused the request (``ERROR <message>``), or does not know the job asked about.

    ``message`` is the daemon's text, verbatim: it says which option or job and why.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class JobNotFinished(SjqError, ValueError):
    """``Job.successful()`` was asked before the job ended; ``Job.wait()`` first."""


class JobTimeout(SjqError, TimeoutError):
    """A wait ran out. ``pending`` lists the jobs that had not ended; they are still there."""

    def __init__(self, message: str, pending: tuple[int, ...]) -> None:
        super().__init__(message)
        self.pending = pending
