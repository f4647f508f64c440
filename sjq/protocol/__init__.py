"""The wire protocol, sans-I/O: bytes <-> objects. Never imports asyncio/socket/subprocess/sqlite3.

Nor psutil, nor anything slow to import: the CLI loads this package on every run.

Daemon side::

    conn = ServerConnection()
    conn.receive_data(data)              # b"" at EOF
    while (event := conn.next_event()) is not NEED_DATA:
        match event:
            case Ping(): out = conn.send(Ok(stats))
            case BadRequest(message=m): out = conn.send(Error(m))   # close if event.fatal
            case Closed(): ...

Client side::

    sock.sendall(encode_request(Status(None)))
    reader = ReplyReader()
    while (reply := reader.next_reply(expect_data=True)) is NEED_DATA:
        reader.receive_data(sock.recv(65536))

The grammar is in docs/protocol.md.
"""

from ._array import format_runs
from ._client import MAX_REPLY_LINE, ReplyReader, encode_request, expects_data
from ._events import (
    NEED_DATA,
    SHUTTING_DOWN,
    BadRequest,
    Closed,
    Data,
    Error,
    Exit,
    Hold,
    Info,
    Kill,
    NeedData,
    Ok,
    Pause,
    Ping,
    ProtocolError,
    QueueInfo,
    Release,
    Reply,
    Request,
    Resume,
    ServerEvent,
    Shutdown,
    Status,
    Stop,
    Submit,
    SubmitOptions,
    Wait,
)

TYPE_CHECKING = False  # typing's own would be an import the CLI does not need
if TYPE_CHECKING:
    from ._server import (
        BAD_JOBID,
        MAX_LINE,
        MAX_SRC,
        UNKNOWN_COMMAND,
        ServerConnection,
        encode_reply,
    )
    from ._states import TERMINAL, JobState
    from ._submit import MISSING_SHEBANG

# The daemon's half (request parsing) is loaded on first use: clients never need it.
_LAZY = {
    **dict.fromkeys(
        ("BAD_JOBID", "MAX_LINE", "MAX_SRC", "UNKNOWN_COMMAND", "ServerConnection", "encode_reply"),
        "_server",
    ),
    "MISSING_SHEBANG": "_submit",
    "JobState": "_states",
    "TERMINAL": "_states",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module  # noqa: PLC0415

    value = getattr(import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "BAD_JOBID",
    "MAX_LINE",
    "MAX_REPLY_LINE",
    "MAX_SRC",
    "MISSING_SHEBANG",
    "NEED_DATA",
    "SHUTTING_DOWN",
    "TERMINAL",
    "UNKNOWN_COMMAND",
    "BadRequest",
    "Closed",
    "Data",
    "Error",
    "Exit",
    "Hold",
    "Info",
    "JobState",
    "Kill",
    "NeedData",
    "Ok",
    "Pause",
    "Ping",
    "ProtocolError",
    "QueueInfo",
    "Release",
    "Reply",
    "ReplyReader",
    "Request",
    "Resume",
    "ServerConnection",
    "ServerEvent",
    "Shutdown",
    "Status",
    "Stop",
    "Submit",
    "SubmitOptions",
    "Wait",
    "encode_reply",
    "encode_request",
    "expects_data",
    "format_runs",
]
