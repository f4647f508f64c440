"""A failed Slurm command's output -> transient or definite error, with Slurm's own words.
The messages are the ones Slurm 22.05 printed on this machine. Pure; no Slurm needed."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sjq.slurm.errors import (
    AccountingDisabled,
    SlurmConfigError,
    SlurmError,
    SlurmRejected,
    SlurmUnavailable,
    classify,
    slurm_message,
)


@pytest.mark.parametrize(
    ("command", "stderr"),
    [
        ("sbatch", "sbatch: error: Batch job submission failed: Unable to contact slurm "
                   "controller (connect failure)\n"),
        ("squeue", "slurm_load_jobs error: Unable to contact slurm controller (connect failure)\n"),
        ("scancel", "scancel: error: Kill job error on job id 1: Unable to contact slurm "
                    "controller (connect failure)\n"),
        ("scontrol", "Unexpected message received for job 1\n"
                     "slurm_suspend error: Unexpected message received\n"),
        ("sbatch", "sbatch: error: Batch job submission failed: Socket timed out on send/recv "
                   "operation\n"),
        ("sacct", "sacct: error: slurm_persist_conn_open_without_init: failed to open persistent "
                  "connection to host:localhost:6819: Connection refused\n"
                  "sacct: error: Problem talking to the database: Connection refused\n"),
        ("sbatch", "sbatch: error: Munge encode failed: Failed to access \"/run/munge/munge."
                   "socket.2\": No such file or directory (Did you start munged?)\n"),
    ],
)  # fmt: skip
def test_transient(command: str, stderr: str) -> None:
    err = classify(command, 1, stderr)
    assert type(err) is SlurmUnavailable
    assert err.command == command
    assert "error:" not in err.message


@pytest.mark.parametrize(
    ("stderr", "message"),
    [
        ("sbatch: error: invalid partition specified: nosuch\n"
         "sbatch: error: Batch job submission failed: Invalid partition name specified\n",
         "invalid partition specified: nosuch; Batch job submission failed: Invalid partition "
         "name specified"),
        ("sbatch: error: Memory specification can not be satisfied\n"
         "sbatch: error: Batch job submission failed: Requested node configuration is not "
         "available\n",
         "Memory specification can not be satisfied; Batch job submission failed: Requested "
         "node configuration is not available"),
        ("sbatch: unrecognized option '--bogus'\nTry \"sbatch --help\" for more information\n",
         "unrecognized option '--bogus'"),
        ("/usr/bin/sbatch: unrecognized option '--bogus'\n", "unrecognized option '--bogus'"),
        ("sbatch: error: Invalid --time specification\n", "Invalid --time specification"),
        ("", "sbatch exited with status 1"),
    ],
)  # fmt: skip
def test_definite_keeps_slurms_words(stderr: str, message: str) -> None:
    err = classify("sbatch", 1, stderr)
    assert type(err) is SlurmRejected
    assert err.message == message == str(err)


def test_accounting_disabled() -> None:
    assert isinstance(classify("sacct", 1, "Slurm accounting storage is disabled\n"),
                      AccountingDisabled)  # fmt: skip


@pytest.mark.parametrize(
    "stderr",
    [
        "squeue: error: resolve_ctls_from_dns_srv: res_nsearch error: Unknown host\n"
        "squeue: error: fetch_config: DNS SRV lookup failed\n"
        "squeue: fatal: Could not establish a configuration source\n",
        "squeue: error: s_p_parse_file: cannot stat file /nonexist: No such file or directory\n"
        "squeue: fatal: Unable to process configuration file\n",
    ],
)
def test_no_configuration(stderr: str) -> None:
    err = classify("squeue", 1, stderr)
    assert isinstance(err, SlurmConfigError)
    assert "SLURM_CONF" in err.message


def test_killed_command_is_transient() -> None:
    assert isinstance(classify("squeue", -9, ""), SlurmUnavailable)


@given(st.text(max_size=200), st.integers(-64, 255).filter(bool))
def test_any_output_is_an_error(stderr: str, code: int) -> None:
    err = classify("sbatch", code, stderr)
    assert isinstance(err, SlurmError)
    assert err.message
    assert "\n" not in slurm_message(stderr)
