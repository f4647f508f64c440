"""sbatch's command line from a job: units never round down, paths and environments arrive
exactly, sjq.slurm.args cannot take over what sjq owns. Pure; no Slurm needed."""

from __future__ import annotations

import math
import re
import shlex

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from sjq.slurm.args import (
    MANAGED_LONG,
    MIB,
    ArgsError,
    Pattern,
    SbatchRequest,
    Submitted,
    export_file,
    filename_pattern,
    make_batch_tag,
    make_tag,
    mem_arg,
    parse_attempt_tag,
    parse_batch_tag,
    parse_sbatch_output,
    parse_tag,
    sbatch_args,
    script_for_sbatch,
    split_args,
    time_arg,
)
from sjq.slurm.parse import parse_duration

# -- units -----------------------------------------------------------------------------------


@given(st.floats(min_value=1e-3, max_value=1e9, allow_nan=False))
@example(60.0)
@example(60.000001)
@example(1.0)
@example(86400.0)
def test_time_is_rounded_up_to_whole_minutes(seconds: float) -> None:
    text = time_arg(seconds)
    assert re.fullmatch(r"\d+-\d\d:\d\d:00", text)
    back = parse_duration(text)
    assert back is not None
    assert back % 60 == 0
    assert seconds <= back < max(seconds, 60) + 60


def test_time_examples() -> None:
    assert time_arg(1) == "0-00:01:00"
    assert time_arg(60) == "0-00:01:00"
    assert time_arg(61) == "0-00:02:00"
    assert time_arg(3600) == "0-01:00:00"
    assert time_arg(90000) == "1-01:00:00"


@pytest.mark.parametrize("bad", [0, -1, math.inf, math.nan])
def test_time_must_be_positive(bad: float) -> None:
    with pytest.raises(ArgsError):
        time_arg(bad)


@given(st.integers(min_value=1, max_value=2**62))
def test_memory_is_rounded_up_to_whole_mib(nbytes: int) -> None:
    text = mem_arg(nbytes)
    assert text.endswith("M")
    mib = int(text[:-1])
    assert mib * MIB >= nbytes
    assert (mib - 1) * MIB < nbytes


def test_memory_examples() -> None:
    assert mem_arg(1) == "1M"
    assert mem_arg(MIB) == "1M"
    assert mem_arg(MIB + 1) == "2M"
    assert mem_arg(2 * 1024**3) == "2048M"


def test_zero_memory_is_not_passed() -> None:
    # --mem=0 would ask Slurm for the whole node's memory.
    args = sbatch_args(SbatchRequest(tag="t", mem=0), 3)
    assert not any(a.startswith("--mem") for a in args)
    with pytest.raises(ArgsError):
        mem_arg(0)


# -- file names ------------------------------------------------------------------------------


def slurm_expand(pattern: str, jobid: str = "42") -> str:
    """What slurmstepd makes of an output pattern (22.05, as seen on this machine)."""
    if "\\" in pattern:
        out, i = [], 0
        while i < len(pattern):
            if pattern[i] == "\\":
                i += 1
                if i < len(pattern):
                    out.append(pattern[i])
            else:
                out.append(pattern[i])
            i += 1
        return "".join(out)
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "%" and i + 1 < len(pattern):
            nxt = pattern[i + 1]
            if nxt == "%":
                out.append("%")
                i += 2
                continue
            if nxt == "j":
                out.append(jobid)
                i += 2
                continue
        out.append(c)
        i += 1
    return "".join(out)


@given(st.text(alphabet=st.sampled_from("ab/%j\\x.%%"), max_size=30) | st.text(max_size=30))
@example("out%j")
@example("a\\b")
@example("a%\\j")
def test_a_literal_path_names_itself(path: str) -> None:
    assert slurm_expand(filename_pattern(path)) == path


def test_pattern_passes_through() -> None:
    args = sbatch_args(SbatchRequest(tag="t", stdout=Pattern("o-%A_%a"), stderr="e%j"), 3)
    assert "--output=o-%A_%a" in args
    assert "--error=e%%j" in args


# -- environment -----------------------------------------------------------------------------

env_names = st.text(min_size=1, max_size=20).filter(lambda s: "=" not in s and "\0" not in s)
env_values = st.text(max_size=50).filter(lambda s: "\0" not in s)


@given(st.dictionaries(env_names, env_values, max_size=10))
def test_environment_round_trips(env: dict[str, str]) -> None:
    data = export_file(env)
    assert data == b"" or data.endswith(b"\0")
    pairs = [p.decode("utf-8", "surrogateescape") for p in data.split(b"\0")[:-1]]
    assert dict(p.split("=", 1) for p in pairs) == env


@pytest.mark.parametrize(("name", "value"), [("A=B", "x"), ("", "x"), ("A", "x\0y")])
def test_environment_refuses_what_cannot_pass(name: str, value: str) -> None:
    with pytest.raises(ArgsError):
        export_file({name: value})


# -- sjq.slurm.args --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "-p debug",
        "--partition=debug --account lab -q high",
        "--partition debug",
        "-pdebug --qos=normal",
        "--constraint 'a&b' --exclusive",
        "-Q -v --requeue",
        "--mem-per-cpu=100 --time 10",
        "--no-requeue --nice",
        "",
    ],
)
def test_site_args_pass(text: str) -> None:
    assert split_args(text) == tuple(shlex.split(text))


@pytest.mark.parametrize(
    ("text", "managed"),
    [
        ("--wait", "wait"),
        ("--wai", "wait"),
        ("-W", "wait"),
        ("-QW", "wait"),
        ("--parsable", "parsable"),
        ("--export=NONE", "export"),
        ("--export-file=x", "export"),
        ("--comment=x", "comment"),
        ("--comm x", "comment"),
        ("-a 1-3", "array"),
        ("--array=1-3", "array"),
        ("-d afterok:1", "dependency"),
        ("-H", "hold"),
        ("--test-only", "test-only"),
        ("--wrap=true", "wrap"),
        ("--get-user-env", "get-user-env"),
        ("-M other", "clusters"),
        ("--clusters=other", "clusters"),
    ],
)
def test_site_args_cannot_take_what_sjq_owns(text: str, managed: str) -> None:
    with pytest.raises(ArgsError, match=f"--{managed}"):
        split_args(text)


@pytest.mark.parametrize("text", ["script.sh", "-p", "--partition", "'unclosed", "--"])
def test_site_args_errors(text: str) -> None:
    with pytest.raises(ArgsError, match=r"sjq\.slurm\.args"):
        split_args(text)


@given(st.text(max_size=60))
def test_site_args_never_crash(text: str) -> None:
    try:
        args = split_args(text)
    except ArgsError:
        return
    for a in args:
        if a.startswith("--") and len(a) > 2:
            name = a[2:].partition("=")[0]
            assert not any(m.startswith(name) for m in MANAGED_LONG)


# -- the whole command line ------------------------------------------------------------------

requests = st.builds(
    SbatchRequest,
    tag=st.from_regex(r"sjq:[a-z0-9]{1,8}:[0-9]{1,6}", fullmatch=True),
    name=st.none() | st.text(max_size=20).filter(lambda s: "\0" not in s and "\n" not in s),
    procs=st.none() | st.integers(1, 256),
    mem=st.none() | st.integers(0, 2**40),
    time_limit=st.none() | st.floats(0.5, 1e7),
    gpus=st.none() | st.integers(0, 8),
    cwd=st.none()
    | st.text(min_size=1, max_size=20).filter(lambda s: "\0" not in s and "\n" not in s),
    stdout=st.none() | st.text(min_size=1, max_size=20),
    array=st.none() | st.sampled_from(["1-10", "0,2,4", "1-100:3%5"]),
    after_ok=st.lists(st.integers(1, 10**7) | st.just("12_3"), max_size=3).map(tuple),
    hold=st.booleans(),
)


@given(requests)
def test_command_line_shape(req: SbatchRequest) -> None:
    args = sbatch_args(req, 7)
    # sjq's own options come last, so nothing before them can override them.
    assert args[-4:] == ["--parsable", "--export=ALL", "--export-file=7", f"--comment={req.tag}"]
    assert all(a.startswith("--") for a in args)
    assert ("--hold" in args) == req.hold
    if req.procs:
        assert f"--cpus-per-task={req.procs}" in args
    if req.after_ok:
        assert "--kill-on-invalid-dep=yes" in args


def test_command_line_example() -> None:
    req = SbatchRequest(
        tag="sjq:d1:7",
        name="align",
        procs=4,
        mem=3 * 1024**3 + 1,
        time_limit=90,
        gpus=2,
        cwd="/data/run",
        stdout="/data/run/7.stdout",
        stderr="/data/run/7.stderr",
        after_ok=(5, "6_1"),
        extra=("-p", "big"),
    )
    assert sbatch_args(req, 3) == [
        "-p",
        "big",
        "--job-name=align",
        "--cpus-per-task=4",
        "--mem=3073M",
        "--time=0-00:02:00",
        "--gres=gpu:2",
        "--chdir=/data/run",
        "--output=/data/run/7.stdout",
        "--error=/data/run/7.stderr",
        "--dependency=afterok:5:6_1",
        "--kill-on-invalid-dep=yes",
        "--parsable",
        "--export=ALL",
        "--export-file=3",
        "--comment=sjq:d1:7",
    ]


@pytest.mark.parametrize(
    "req",
    [
        SbatchRequest(tag="t", array="1-"),
        SbatchRequest(tag="t", after_ok=("x",)),
        SbatchRequest(tag="t\nx"),
        SbatchRequest(tag="t", procs=0),
        SbatchRequest(tag="t", gpus=-1),
    ],
)
def test_command_line_refuses_bad_fields(req: SbatchRequest) -> None:
    with pytest.raises(ArgsError):
        sbatch_args(req, 3)


# -- tags, script, output --------------------------------------------------------------------


@given(st.from_regex(r"[A-Za-z0-9._-]{1,64}", fullmatch=True), st.integers(0, 2**63))
def test_tag_round_trips(daemon: str, jobid: int) -> None:
    assert parse_tag(make_tag(daemon, jobid)) == (daemon, jobid)


@given(st.text(max_size=40))
def test_any_comment_is_a_tag_or_not(comment: str) -> None:
    parsed = parse_tag(comment)
    if parsed is not None:
        assert make_tag(*parsed) == comment


@given(
    st.from_regex(r"[A-Za-z0-9._-]{1,64}", fullmatch=True),
    st.integers(0, 2**63),
    st.integers(1, 10**6),
)
def test_attempt_tag_round_trips(daemon: str, jobid: int, attempt: int) -> None:
    tag = make_tag(daemon, jobid, attempt)
    assert parse_attempt_tag(tag) == (daemon, jobid, attempt)
    assert (tag == make_tag(daemon, jobid)) == (attempt == 1)  # the first keeps the plain tag
    assert (parse_tag(tag) == (daemon, jobid)) == (attempt == 1)
    assert parse_batch_tag(tag) is None
    assert tag.startswith(f"sjq:{daemon}:")  # what a restarted daemon looks for


@given(st.text(max_size=40) | st.from_regex(r"sjq:[a-z.]{1,3}:\d{1,3}\.\d{1,3}", fullmatch=True))
def test_any_comment_is_an_attempt_tag_or_not(comment: str) -> None:
    parsed = parse_attempt_tag(comment)
    if parsed is not None:
        assert make_tag(*parsed) == comment
    assert parse_attempt_tag(make_batch_tag("d", 5)) is None


@given(st.from_regex(r"[A-Za-z0-9._-]{1,64}", fullmatch=True), st.integers(0, 2**63))
def test_batch_tag_round_trips_and_is_no_job_tag(daemon: str, base: int) -> None:
    tag = make_batch_tag(daemon, base)
    assert parse_batch_tag(tag) == (daemon, base)
    assert parse_tag(tag) is None
    assert parse_batch_tag(make_tag(daemon, base)) is None
    assert tag.startswith(f"sjq:{daemon}:")  # what a restarted daemon looks for


@given(st.text(max_size=40))
def test_any_comment_is_a_batch_tag_or_not(comment: str) -> None:
    parsed = parse_batch_tag(comment)
    if parsed is not None:
        assert make_batch_tag(*parsed) == comment


@pytest.mark.parametrize("bad", ["", "a:b", "a b", "x" * 65])
def test_tag_refuses_bad_daemon_ids(bad: str) -> None:
    with pytest.raises(ArgsError):
        make_tag(bad, 1)


def test_script_starts_with_its_shebang() -> None:
    assert script_for_sbatch(b"\n  #!/bin/sh\necho\n") == b"#!/bin/sh\necho\n"
    assert script_for_sbatch(b"echo\n") == b"echo\n"


@given(st.integers(0, 2**40), st.none() | st.from_regex(r"[a-z][a-z0-9]{0,10}", fullmatch=True))
def test_sbatch_output_round_trips(jobid: int, cluster: str | None) -> None:
    text = f"{jobid};{cluster}\n" if cluster else f"{jobid}\n"
    assert parse_sbatch_output(text) == Submitted(jobid, cluster)


@given(st.text(max_size=40))
def test_sbatch_output_is_an_id_or_an_error(text: str) -> None:
    try:
        out = parse_sbatch_output(text)
    except ValueError:
        return
    assert out.job_id >= 0
