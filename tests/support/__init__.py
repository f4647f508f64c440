"""What the tests share besides fixtures: bounded waits and gate files (`waiting`), the raw
protocol client (`raw`), a real daemon process (`daemon`), checks of its jobs and processes
(`jobs`), the `sjq` command run as a subprocess (`cli`), and what the documents specify
(`docs`).

Tests import these with ``from support import ...``; the conftest files hold only fixtures.
(pytest puts ``tests/`` on ``sys.path``: the ``pythonpath`` setting in pyproject.toml.)
"""

from support.cli import (
    CLI_TIMEOUT,
    Cli,
    Home,
    Result,
    client_env,
    daemon_pid,
    stop_daemon,
    wait_stopped_by_itself,
    write_rc,
)
from support.daemon import (
    Daemon,
    Spares,
    daemon_settings,
    make_daemon,
    reap_leftovers,
    started_for_another_user,
)
from support.docs import info_keys
from support.jobs import (
    NOBODY,
    SH,
    alive,
    as_nobody,
    exited,
    job_pid,
    no_socket,
    read_when,
    recorded_states,
    states,
    status,
    submit_bytes,
    wait_dead,
)
from support.raw import Raw
from support.waiting import DEFAULT_TIMEOUT, Gate, wait_for

__all__ = [
    "CLI_TIMEOUT",
    "DEFAULT_TIMEOUT",
    "NOBODY",
    "SH",
    "Cli",
    "Daemon",
    "Gate",
    "Home",
    "Raw",
    "Result",
    "Spares",
    "alive",
    "as_nobody",
    "client_env",
    "daemon_pid",
    "daemon_settings",
    "exited",
    "info_keys",
    "job_pid",
    "make_daemon",
    "no_socket",
    "read_when",
    "reap_leftovers",
    "recorded_states",
    "started_for_another_user",
    "states",
    "status",
    "stop_daemon",
    "submit_bytes",
    "wait_dead",
    "wait_for",
    "wait_stopped_by_itself",
    "write_rc",
]
