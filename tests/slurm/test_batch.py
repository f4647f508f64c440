"""sjq.slurm.batch: the wrapper that runs several elements of an sjq array as one Slurm array,
run here by the real /bin/sh as slurmd would (SLURM_ARRAY_TASK_ID set, the script on disk):
each element gets exactly its own variables, output files, exit status and signal, whatever
the values hold; and the pieces (``#!`` line, ``#SBATCH`` header, ``--array``) as properties."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sjq.protocol._array import parse_array
from sjq.slurm.batch import (
    MAX_WRAPPER,
    Batch,
    Member,
    array_spec,
    build,
    header,
    interpreter,
    unbatchable,
)

PRINTENV = b"#!/bin/sh\nexec env -0\n"


def run(batch: Batch, task: int, tmp: Path, extra: dict[str, str] | None = None) -> int:
    """Run the wrapper as slurmd runs a batch script: its own file, the batch's environment
    and Slurm's task id; the wait status."""
    path = tmp / f"slurm_script.{batch.base}.{task}"
    path.write_bytes(batch.script)
    path.chmod(0o700)
    env = dict(batch.env, SLURM_ARRAY_TASK_ID=str(task), TMPDIR=str(tmp), **(extra or {}))
    env.setdefault("PATH", os.environ["PATH"])
    p = subprocess.run([str(path)], env=env, cwd=tmp, stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=30, check=False)  # fmt: skip
    assert p.stdout == b"" == p.stderr  # everything goes to the element's own files
    return p.returncode


def members(
    tmp: Path, n: int, first: int = 100, common: dict[str, str] | None = None
) -> list[Member]:
    out = []
    for i in range(n):
        jobid = first + i
        env = dict(common or {"PATH": os.environ["PATH"]}, SJQ_JOBID=str(jobid), JOB_ID=str(jobid))
        env["SJQ_ARRAY_INDEX"] = str(i * 3)
        out.append(Member(jobid, env, str(tmp / f"{jobid}.out"), str(tmp / f"{jobid}.err")))
    return out


def test_each_task_is_its_element(tmp_path: Path) -> None:
    script = (
        b"#!/bin/sh\n#SBATCH --mem=10M\n\n# note\n"
        b'echo "$SJQ_JOBID $JOB_ID $SJQ_ARRAY_INDEX $SHARED $0"\necho err >&2\nexit 7'
    )
    ms = members(tmp_path, 3, common={"PATH": os.environ["PATH"], "SHARED": "a b"})
    batch = build(script, ms, None, 1001)
    assert isinstance(batch, Batch)
    assert (batch.base, batch.jobids, batch.array) == (100, (100, 101, 102), "0-2")
    assert batch.env == {"PATH": os.environ["PATH"], "SHARED": "a b"}
    assert batch.script.startswith(b"#!/bin/sh\n#SBATCH --mem=10M\n\n# note\n# sjq:")
    for task in range(3):
        assert run(batch, task, tmp_path) == 7
        jobid = 100 + task
        out = (tmp_path / f"{jobid}.out").read_text()
        assert out == f"{jobid} {jobid} {task * 3} a b /proc/self/fd/9\n"
        assert (tmp_path / f"{jobid}.err").read_text() == "err\n"
    assert not list(tmp_path.glob("tmp.*"))  # the script's copy is gone


def test_the_job_gets_exactly_its_environment(tmp_path: Path) -> None:
    ms = members(tmp_path, 2)
    ms[1] = Member(101, {**ms[1].env, "ONLY_ONE": "x"}, ms[1].stdout, ms[1].stdout)
    batch = build(PRINTENV, ms, None, 1001)
    assert isinstance(batch, Batch)
    for task, m in enumerate(ms):
        assert run(batch, task, tmp_path) == 0
        pairs = Path(m.stdout).read_text().split("\0")[:-1]
        got = dict(p.split("=", 1) for p in pairs)
        # The wrapper adds nothing of its own; Slurm's variables (here only the task id and
        # TMPDIR) pass through, and the working directory /bin/sh keeps in PWD.
        for name in ("SLURM_ARRAY_TASK_ID", "TMPDIR", "PWD"):
            got.pop(name, None)
        assert got == dict(m.env)


def test_signals_and_exit_status_are_the_jobs_own(tmp_path: Path) -> None:
    batch = build(b"#!/bin/sh\nkill -USR1 $$\n", members(tmp_path, 2), None, 1001)
    assert isinstance(batch, Batch)
    assert run(batch, 1, tmp_path) == -signal.SIGUSR1  # exec'd: the job's process is the step's


def test_an_output_that_cannot_be_opened_stops_the_element(tmp_path: Path) -> None:
    ms = members(tmp_path, 2)
    ms[0] = Member(100, ms[0].env, str(tmp_path / "missing" / "x.out"), ms[0].stderr)
    batch = build(b"#!/bin/sh\necho ran > ran\n", ms, None, 1001)
    assert isinstance(batch, Batch)
    path = tmp_path / "slurm_script"
    path.write_bytes(batch.script)
    path.chmod(0o700)
    env = dict(batch.env, SLURM_ARRAY_TASK_ID="0")
    p = subprocess.run([str(path)], env=env, cwd=tmp_path, capture_output=True, check=False)
    assert p.returncode == 1
    assert not (tmp_path / "ran").exists()


def test_a_task_of_no_element_fails(tmp_path: Path) -> None:
    batch = build(b"#!/bin/sh\ntrue\n", members(tmp_path, 2), None, 1001)
    assert isinstance(batch, Batch)
    path = tmp_path / "s"
    path.write_bytes(batch.script)
    path.chmod(0o700)
    p = subprocess.run([str(path)], env={"SLURM_ARRAY_TASK_ID": "5", "PATH": "/bin:/usr/bin"},
                       capture_output=True, check=False)  # fmt: skip
    assert p.returncode == 1
    assert b"no job of this batch" in p.stderr


_value = st.text(
    st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)), max_size=30
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(st.tuples(_value, _value), min_size=2, max_size=4),
    st.binary(max_size=200).filter(lambda b: b"\0" not in b),
)
def test_any_values_and_script_bytes_reach_the_element_exactly(
    tmp_path: Path, values: list[tuple[str, str]], tail: bytes
) -> None:
    """Per-element and shared values of any text (quotes, newlines, $, backslashes), and a
    script of any bytes after its #! line: the element sees its values, and the copy of the
    script it runs is byte for byte the script."""
    script = b'#!/bin/sh\ncat "$0" > "$COPY"\nprintf %s "$V" > "$VOUT"\nexit 0\n#' + tail
    ms = []
    for i, (own, shared) in enumerate(values):
        jobid = 7 + 2 * i  # not consecutive: a gap in the task numbers
        env = {"PATH": os.environ["PATH"], "S": shared + str(i), "V": own}
        env |= {"COPY": str(tmp_path / f"copy{jobid}"), "VOUT": str(tmp_path / f"v{jobid}")}
        ms.append(Member(jobid, env, str(tmp_path / f"{jobid}.o"), str(tmp_path / f"{jobid}.o")))
    batch = build(script, ms, None, 1001)
    assert isinstance(batch, Batch)
    assert parse_array(batch.array) == (tuple(m.jobid - 7 for m in ms), None)
    for m in ms:
        assert run(batch, m.jobid - 7, tmp_path) == 0
        assert (tmp_path / f"copy{m.jobid}").read_bytes() == script
        assert (tmp_path / f"v{m.jobid}").read_bytes() == m.env["V"].encode()


def test_batches_stop_below_max_tasks_and_max_wrapper(tmp_path: Path) -> None:
    ms = members(tmp_path, 10, first=50)
    batch = build(b"#!/bin/sh\ntrue\n", ms, 3, 4)
    assert isinstance(batch, Batch)
    assert batch.jobids == (50, 51, 52, 53)
    assert batch.array == "0-3%3"
    big = [Member(m.jobid, {**m.env, "SJQ_ENTRY": f"{m.jobid:x>200000}"}, m.stdout, m.stderr)
           for m in ms]  # fmt: skip
    batch = build(b"#!/bin/sh\ntrue\n", big, None, 1001)
    assert isinstance(batch, Batch)
    assert len(batch.script) <= MAX_WRAPPER
    assert 1 <= len(batch.jobids) < 10
    lone = build(b"#!/bin/sh\ntrue\n", [ms[0], Member(5000, ms[1].env, "o", "e")], None, 1001)
    assert isinstance(lone, Batch)
    assert lone.jobids == (50,)  # the next one is too far: the caller sends this one alone


@pytest.mark.parametrize(
    ("script", "why"),
    [
        (b"echo\n", "no #! line"),
        (b"#!sh\necho\n", "no absolute program"),
        (b"#!/bin/sh\r\necho\r\n", "no absolute program"),
        (b"#!/bin/sh\necho \0\n", "NUL"),
    ],
)
def test_what_cannot_be_batched_says_why(script: bytes, why: str) -> None:
    assert why in unbatchable(script)
    result = build(script, [Member(1, {}, "o", "e"), Member(2, {}, "o", "e")], None, 10)
    assert isinstance(result, str)
    assert why in result


def test_names_sh_cannot_set_are_not_batched() -> None:
    ms = [Member(1, {"A.B": "1"}, "o", "e"), Member(2, {"A.B": "2"}, "o", "e")]
    assert "/bin/sh cannot set" in str(build(b"#!/bin/sh\n", ms, None, 10))
    same = [Member(1, {"A.B": "1"}, "o", "e"), Member(2, {"A.B": "1"}, "o", "e")]
    assert isinstance(build(b"#!/bin/sh\n", same, None, 10), Batch)  # shared: --export-file


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"#!/bin/sh\n", ("/bin/sh", None)),
        (b"  #! /usr/bin/env  python3 -u \n", ("/usr/bin/env", "python3 -u")),
        (b"#!/bin/bash\t-e\n", ("/bin/bash", "-e")),
        (b"#!\n", None),
        (b"echo\n", None),
    ],
)
def test_interpreter_is_split_as_linux_does(line: bytes, expected: object) -> None:
    assert interpreter(line + b"true\n") == expected


@given(st.lists(st.sampled_from([b"#SBATCH -c 2", b"#PBS -l x", b"# c", b"", b"  #SBATCH x"]),
                max_size=6), st.sampled_from([b"echo hi", b"x=1", b"  true"]))  # fmt: skip
def test_header_is_what_sbatch_reads(comments: list[bytes], first_command: bytes) -> None:
    script = (
        b"#!/bin/sh\n" + b"".join(c + b"\n" for c in comments) + first_command + b"\n#SBATCH -x\n"
    )
    got = header(script)
    assert b"#SBATCH -x" not in got  # after the first command: sbatch ignores it
    assert got.rstrip(b"\n").split(b"\n") == b"\n".join(comments).rstrip().split(b"\n") or not got


@given(st.lists(st.integers(0, 2000), min_size=1, max_size=50, unique=True),
       st.none() | st.integers(1, 60))  # fmt: skip
def test_array_spec_names_exactly_the_tasks(offsets: list[int], limit: int | None) -> None:
    offsets.sort()
    spec = array_spec(offsets, limit)
    indexes, parsed_limit = parse_array(spec)  # sjq reads Slurm's syntax
    assert indexes == tuple(offsets)
    assert parsed_limit == (limit if limit is not None and limit < len(offsets) else None)
