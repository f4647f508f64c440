"""sjq_client, the typed Python client: lazy exports; imports nothing until a name is used.

    from sjq_client import Client

    with Client() as sjq:
        job = sjq.submit(command=["sort", "-o", "out.txt", "in.txt"], mem="1G")
        count = sjq.submit(script="#!/bin/sh\\nwc -l out.txt\\n", after=[job])
        count.wait(timeout=3600)
        if not count.successful():
            print(count.info().reason)

The `sjq` command (sjq_client.cli) imports this package on every run, so nothing is imported
here until a name is asked for: `sjq --version` must not pay for sockets or the protocol.
Never imports asyncio, psutil, sqlite3 or the daemon's modules.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing's own would cost `sjq --version` an import of typing
if TYPE_CHECKING:
    from ._aclient import AsyncClient
    from ._client import Client
    from ._exceptions import (
        ConnectionLost,
        DaemonNotRunning,
        DaemonStartFailed,
        JobNotFinished,
        JobTimeout,
        ProtocolError,
        RequestRejected,
        SjqError,
        TransportError,
    )
    from ._job import AsyncJob, AsyncJobArray, Job, JobArray, JobRef
    from ._models import JobInfo, QueueState
    from ._stats import GroupStats, Hint, Stats

__all__ = [
    "AsyncClient",
    "AsyncJob",
    "AsyncJobArray",
    "Client",
    "ConnectionLost",
    "DaemonNotRunning",
    "DaemonStartFailed",
    "GroupStats",
    "Hint",
    "Job",
    "JobArray",
    "JobInfo",
    "JobNotFinished",
    "JobRef",
    "JobTimeout",
    "ProtocolError",
    "QueueState",
    "RequestRejected",
    "SjqError",
    "Stats",
    "TransportError",
]

_WHERE = {
    "AsyncClient": "_aclient",  # imports asyncio: only when asked for
    "AsyncJob": "_job",
    "AsyncJobArray": "_job",
    "JobArray": "_job",
    "Client": "_client",
    "Job": "_job",
    "JobRef": "_job",
    "JobInfo": "_models",
    "QueueState": "_models",
    **dict.fromkeys(("GroupStats", "Hint", "Stats"), "_stats"),
    **dict.fromkeys(
        (
            "ConnectionLost",
            "DaemonNotRunning",
            "DaemonStartFailed",
            "JobNotFinished",
            "JobTimeout",
            "ProtocolError",
            "RequestRejected",
            "SjqError",
            "TransportError",
        ),
        "_exceptions",
    ),
}


def __getattr__(name: str) -> object:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'sjq_client' has no attribute {name!r}")
    import importlib  # noqa: PLC0415 -- lazy on purpose, see the module docstring

    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
