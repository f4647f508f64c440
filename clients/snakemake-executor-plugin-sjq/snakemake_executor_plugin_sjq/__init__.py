"""Snakemake executor plugin for sjq: `snakemake --executor sjq --jobs N` runs jobs as sjq jobs.

What Snakemake looks for here: ``Executor``, ``common_settings`` and ``ExecutorSettings``
(whose fields are the ``--sjq-*`` options). Snakemake imports every installed plugin on each
run, so this module imports only the executor's module, which imports the sjq client.
"""

# No `from __future__ import annotations` here: Snakemake reads the settings' field types at
# run time (a bool field becomes a flag), and would see strings.
from dataclasses import dataclass, field

from snakemake_interface_executor_plugins.settings import CommonSettings, ExecutorSettingsBase

from ._executor import Executor

__all__ = ["Executor", "ExecutorSettings", "common_settings"]
__version__ = "0.1.0"


@dataclass
class ExecutorSettings(ExecutorSettingsBase):  # type: ignore[misc]  # untyped base
    """The ``--sjq-*`` options (and their ``SNAKEMAKE_SJQ_*`` variables)."""

    socket: str | None = field(
        default=None,
        metadata={
            "help": "The sjq daemon's socket (default: sjq.socket of the sjq config, as for"
            " the `sjq` command).",
            "type": str,
            "env_var": True,
        },
    )
    config: str | None = field(
        default=None,
        metadata={
            "help": "The sjq config file (default: $SJQ_CONFIG, else ~/.sjqrc).",
            "type": str,
            "env_var": True,
        },
    )
    logdir: str | None = field(
        default=None,
        metadata={
            "help": "Where the output of jobs whose rule has no log goes, one file per job"
            " (default: .snakemake/sjq_logs in the working directory).",
            "type": str,
        },
    )
    status_interval: float | None = field(
        default=None,
        metadata={
            "help": "Seconds between two polls of the jobs' states (default: 1; each poll is"
            " one request for every running job). Overrides --seconds-between-status-checks.",
            "type": float,
        },
    )


common_settings = CommonSettings(
    non_local_exec=True,
    implies_no_shared_fs=False,  # one machine: the jobs see the workflow's files
    job_deploy_sources=False,
    pass_default_storage_provider_args=True,
    pass_default_resources_args=True,
    pass_envvar_declarations_to_cmd=True,
    auto_deploy_default_storage_provider=False,
    init_seconds_before_status_checks=0,
)
