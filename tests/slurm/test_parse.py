"""squeue and sacct output -> records, and Slurm's states -> sjq's (sjq.slurm.states): any
text parses without an exception, what Slurm prints round-trips, every end state maps. Pure;
no Slurm needed."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from sjq.protocol import JobState
from sjq.slurm.parse import (
    END,
    SACCT_FIELDS,
    SEP,
    SQUEUE_FIELDS,
    Settings,
    SlurmJob,
    parse_config,
    parse_duration,
    parse_sacct,
    parse_squeue,
    parse_time,
    sacct_args,
    settings_of,
    squeue_args,
    usage_recorded,
)
from sjq.slurm.states import FAILED, RUNNING, WAITING, Phase, progress

# Texts Slurm prints in fields that are not free text never hold "|" or a newline.
words = st.text(
    alphabet=st.characters(blacklist_characters="|\n\r\x1e", blacklist_categories=("Cs",)),
    max_size=12,
)
# squeue prints "(null)" for no comment, so a comment of just that text reads back as none.
comments = st.text(alphabet=st.characters(blacklist_characters="\x1e"), max_size=40).filter(
    lambda c: c != "(null)"
)
END_STATES = ["COMPLETED", "FAILED", "CANCELLED"]
states = st.sampled_from([*sorted(WAITING | RUNNING | set(FAILED)), *END_STATES]) | st.from_regex(
    r"[A-Z_]{1,12}", fullmatch=True
)
reasons = st.sampled_from(["None", "Resources", "Priority", "JobHeldUser", "NonZeroExitCode",
                           "DependencyNeverSatisfied", "JobLaunchFailure"]) | st.from_regex(
    r"[A-Za-z:_]{0,20}", fullmatch=True)  # fmt: skip


def clock(seconds: int) -> str:
    """A duration the way squeue prints TimeUsed."""
    d, s = divmod(seconds, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    if d:
        return f"{d}-{h:02d}:{m:02d}:{s:02d}"
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def stamp(t: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t))


# -- squeue ----------------------------------------------------------------------------------


def test_squeue_arguments() -> None:
    args = squeue_args(jobs=[5, "6_2"], user="1000")
    assert args[:3] == ["--noheader", "--states=all", "--array"]
    fmt = args[3].removeprefix("--Format=").split(",")
    assert [f.split(":")[0] for f in fmt] == list(SQUEUE_FIELDS)
    assert fmt[-1] == f"Comment:{END}"
    assert args[4:] == ["--jobs=5,6_2", "--user=1000"]


squeue_records = st.fixed_dictionaries(
    {
        "jobid": st.integers(1, 2**31),
        "task": st.none() | st.integers(0, 10**6),
        "state": states,
        "status": st.sampled_from([0, 256, 768, 9, 15, 137, 36608, 4021]),
        "node": st.sampled_from(["", "n1", "node[01-04]"]),
        "start": st.none() | st.integers(10**9, 2 * 10**9),
        "used": st.integers(0, 10**7),
        "limit": st.none() | st.integers(1, 10**5),
        "reason": reasons,
        "comment": comments,
    }
)


def render_squeue(r: dict[str, object]) -> str:
    task = r["task"]
    fields = [
        str(r["jobid"]),
        str(r["jobid"] if task is None else 777),
        "N/A" if task is None else str(task),
        str(r["state"]),
        str(r["status"]),
        str(r["node"]),
        "N/A" if r["start"] is None else stamp(r["start"]),  # type: ignore[arg-type]
        "N/A",
        clock(r["used"]),  # type: ignore[arg-type]
        "UNLIMITED" if r["limit"] is None else clock(60 * r["limit"]),  # type: ignore[operator]
        str(r["reason"]),
        str(r["comment"]) or "(null)",
    ]
    return SEP.join(fields) + END + "\n"


@given(st.lists(squeue_records, max_size=5))
@example([{"jobid": 1, "task": None, "state": "FAILED", "status": 768, "node": "n1",
           "start": 10**9, "used": 3, "limit": None, "reason": "NonZeroExitCode",
           "comment": "a|b\nc|d|e"}])  # fmt: skip
def test_squeue_round_trips(records: list[dict[str, object]]) -> None:
    parsed = parse_squeue("".join(render_squeue(r) for r in records))
    assert parsed.junk == []
    assert len(parsed.jobs) == len(records)
    for r, job in zip(records, parsed.jobs, strict=True):
        assert job.job_id == r["jobid"]
        assert job.key == (f"777_{r['task']}" if r["task"] is not None else str(r["jobid"]))
        assert job.state == r["state"]
        assert job.reason == ("" if r["reason"] in ("None", "") else r["reason"])
        assert job.comment == r["comment"]
        assert job.elapsed == r["used"]
        assert job.start == r["start"]
        assert job.time_limit == (None if r["limit"] is None else 60 * r["limit"])  # type: ignore[operator]
        assert job.source == "squeue"


@pytest.mark.parametrize(
    ("status", "exit_code", "sig", "launch"),
    [(0, 0, None, None), (768, 3, None, None), (36608, 143, None, None), (9, None, 9, None),
     (137, None, 9, None), (15, None, 15, None), (4021, None, None, 4021)],
)  # fmt: skip
def test_squeue_wait_status(status: int, exit_code: int | None, sig: int | None,
                            launch: int | None) -> None:  # fmt: skip
    line = f"5|5|N/A|FAILED|{status}|n1|N/A|N/A|0:00|UNLIMITED|None|(null){END}\n"
    (job,) = parse_squeue(line).jobs
    assert (job.exit_code, job.signal, job.launch_error) == (exit_code, sig, launch)


def test_squeue_as_slurm_prints_it() -> None:
    # Captured from squeue 22.05 on the test cluster (one pending array task not split off).
    text = (
        f"22|20|1|COMPLETED|0|sjqn1|2026-12-05T23:09:00|2026-12-05T23:09:01|0:01|UNLIMITED|None|"
        f"sjq:d:1{END}\n"
        f"20|20|2|PENDING|0||N/A|N/A|0:00|1:00|Resources|(null){END}\n"
        f"20|20|3-4|PENDING|0||N/A|N/A|0:00|1:00|Resources|(null){END}\n"
    )
    jobs = parse_squeue(text).jobs
    assert [j.key for j in jobs] == ["20_1", "20_2", "20_[3-4]"]
    assert [j.array_task_id for j in jobs] == [1, 2, None]
    assert jobs[0].job_id == 22
    assert jobs[0].comment == "sjq:d:1"
    assert jobs[0].node == "sjqn1"
    assert jobs[1].time_limit == 60
    assert jobs[1].start is None


@given(st.text(max_size=300))
@example("|||||||||||" + END + "\n")
@example("x|1|N/A|R|999999999999999999999999|n|N/A|N/A|99999999999-00:00:00|9:99|r|c")
def test_squeue_never_raises(text: str) -> None:
    parsed = parse_squeue(text)
    for job in parsed.jobs:
        progress(job)


# -- sacct -----------------------------------------------------------------------------------


def test_sacct_arguments() -> None:
    args = sacct_args(jobs=[3], since="now-1days")
    assert "--noconvert" in args
    assert f"--delimiter={SEP}" in args
    assert f"--format={','.join(SACCT_FIELDS)}" in args
    assert args[-2:] == ["--jobs=3", "--starttime=now-1days"]


SACCT_EXAMPLE = """\
1|1|FAILED|2:0|None|n1|2026-12-05T23:08:40|2026-12-05T23:08:42|2|00:00:00||UNLIMITED|
1.batch|1.batch|FAILED|2:0||n1|2026-12-05T23:08:40|2026-12-05T23:08:42|2|00:02.690|172462080||
1.0|1.0|COMPLETED|0:0||n1|2026-12-05T23:08:40|2026-12-05T23:08:41|1|01:00.500|9000000||
2|2|CANCELLED by 0|0:0|None|None assigned|2026-12-05T23:08:38|2026-12-05T23:08:38|0|\
00:00:00||UNLIMITED|sjq:d:2
3|3|CANCELLED|0:0|Dependency|None assigned|None|2026-12-05T23:16:36|0|00:00:00||Partition_Limit|
22|20_1|TIMEOUT|0:0|None|n1|2026-12-05T23:17:05|2026-12-05T23:18:25|80|00:00.010||00:01:00|a|b
c
22.batch|20_1.batch|CANCELLED|0:15||n1|2026-12-05T23:17:05|2026-12-05T23:18:25|80|00:00.010|3239936||
20|20_[2-4]|PENDING|0:0|Resources|None assigned|Unknown|Unknown|0|00:00:00||UNLIMITED|
5|5|FAILED|0:53|None|n1|2026-12-05T23:16:35|2026-12-05T23:16:35|0|00:00.001||UNLIMITED|
"""


def test_sacct_folds_steps_into_jobs() -> None:
    parsed = parse_sacct(SACCT_EXAMPLE)
    assert parsed.junk == []
    jobs = {j.key: j for j in parsed.jobs}
    assert list(jobs) == ["1", "2", "3", "20_1", "20_[2-4]", "5"]
    one = jobs["1"]
    assert (one.state, one.exit_code, one.signal) == ("FAILED", 2, None)
    assert one.maxrss == 172462080  # the larger step's peak
    assert one.cpu_time == pytest.approx(2.690 + 60.5)  # the steps' sum
    assert one.elapsed == 2
    assert one.source == "sacct"
    assert (jobs["2"].cancelled_by, jobs["2"].comment, jobs["2"].node) == (0, "sjq:d:2", "")
    assert jobs["3"].cancelled_by is None
    assert jobs["3"].time_limit is None
    task = jobs["20_1"]
    assert (task.job_id, task.array_job_id, task.array_task_id) == (22, 20, 1)
    assert task.comment == "a|b\nc"
    assert task.maxrss == 3239936
    assert task.time_limit == 60
    assert jobs["20_[2-4]"].array_task_id is None
    assert jobs["20_[2-4]"].start is None
    assert jobs["5"].signal == 53


def test_an_ended_job_whose_steps_are_not_stored_yet_has_no_final_usage() -> None:
    """slurmdbd stores a job's line and its steps' lines apart: a job may show as ended,
    with CPU time, before its batch step brings the peak memory (the backend asks again)."""
    times = "2026-12-06T08:19:12|2026-12-06T08:19:15|3|00:01.657"
    job_line = f"7|7|COMPLETED|0:0||n1|{times}|||"
    step_line = f"7.batch|7.batch|COMPLETED|0:0||n1|{times}|219856K||"
    (early,) = parse_sacct(job_line + "\n").jobs
    assert early.cpu_time == pytest.approx(1.657)
    assert early.maxrss is None
    assert not usage_recorded(early)
    (later,) = parse_sacct(job_line + "\n" + step_line + "\n").jobs
    assert later.maxrss == 219856 * 1024
    assert usage_recorded(later)
    running = parse_sacct(job_line.replace("COMPLETED", "RUNNING", 1) + "\n").jobs[0]
    assert not usage_recorded(replace(running, maxrss=1))


step_names = st.sampled_from(["batch", "extern", "0", "1"])
sacct_jobs = st.fixed_dictionaries(
    {
        "jobid": st.integers(1, 2**31),
        "state": states,
        "code": st.tuples(st.integers(0, 255), st.integers(0, 64)),
        "elapsed": st.integers(0, 10**7),
        "steps": st.lists(
            st.tuples(step_names, st.integers(0, 2**40), st.integers(0, 10**6)),
            max_size=3,
            unique_by=lambda s: s[0],
        ),
        # sacct, like squeue, prints "(null)" for no comment: that text reads back as none.
        "comment": st.text(max_size=30).filter(lambda c: c != "(null)"),
    }
)


def render_sacct(j: dict) -> str:  # type: ignore[type-arg]
    code = f"{j['code'][0]}:{j['code'][1]}"
    lines = [
        SEP.join([str(j["jobid"]), str(j["jobid"]), j["state"], code, "None", "n1", "Unknown",
                  "Unknown", str(j["elapsed"]), "00:00:00", "", "UNLIMITED", j["comment"]])
    ]  # fmt: skip
    for name, rss, cpu in j["steps"]:
        sid = f"{j['jobid']}.{name}"
        lines.append(SEP.join([sid, sid, "COMPLETED", code, "", "n1", "Unknown", "Unknown",
                               str(j["elapsed"]), clock(cpu), str(rss), "", ""]))  # fmt: skip
    return "\n".join(lines) + "\n"


@given(st.lists(sacct_jobs, max_size=4, unique_by=lambda j: j["jobid"]))
def test_sacct_round_trips(jobs: list[dict]) -> None:  # type: ignore[type-arg]
    parsed = parse_sacct("".join(render_sacct(j) for j in jobs))
    assert parsed.junk == []
    assert [p.job_id for p in parsed.jobs] == [j["jobid"] for j in jobs]
    for j, p in zip(jobs, parsed.jobs, strict=True):
        assert p.comment == j["comment"]
        status, sig = j["code"]
        assert (p.exit_code, p.signal) == ((None, sig) if sig else (status, None))
        assert p.elapsed == j["elapsed"]
        rss = [s[1] for s in j["steps"]]
        assert p.maxrss == (max(rss) if rss else None)
        assert p.cpu_time == (sum(s[2] for s in j["steps"]) if j["steps"] else 0.0)


@given(st.text(max_size=300))
@example("1|1|X|a:b|||||x|y|z|w|\n1.batch|1.batch|X||||||||99999999999999999999999K||")
@example("5.batch|5.batch|COMPLETED|0:0||n|||0|0:01|1K||\n")
def test_sacct_never_raises(text: str) -> None:
    for job in parse_sacct(text).jobs:
        progress(job)


# -- values ----------------------------------------------------------------------------------


@given(st.integers(0, 10**8))
def test_duration_round_trips(seconds: int) -> None:
    assert parse_duration(clock(seconds)) == seconds


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("0:06", 6), ("1:00", 60), ("00:02.690", 2.69), ("01:02:03", 3723), ("1-02:03:04", 93784),
     ("2-03", 183600), ("2-03:04", 183840), ("UNLIMITED", None), ("INVALID", None), ("", None),
     ("Partition_Limit", None), ("x", None), ("5", 300)],
)  # fmt: skip
def test_duration_examples(text: str, seconds: float | None) -> None:
    assert parse_duration(text) == (pytest.approx(seconds) if seconds is not None else None)


def test_time_examples() -> None:
    assert parse_time("Unknown") is None
    assert parse_time("N/A") is None
    assert parse_time("2026-13-45T99:00:00") is None
    t = parse_time("2026-12-05T23:16:35")
    assert t is not None
    assert time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t)) == ("2026-12-05T23:16:35")


def test_config() -> None:
    text = (
        "Configuration data as of 2026-12-05T23:00:00\n"
        "AccountingStorageType   = accounting_storage/none\n"
        "MinJobAge               = 300 sec\n"
        "SchedulerParameters     = batch_sched_delay=0\n"
        "\nCgroup Support Configuration:\nAllowedKmemSpace        = (null)\n"
    )
    conf = parse_config(text)
    assert conf["AccountingStorageType"] == "accounting_storage/none"
    assert conf["MinJobAge"] == "300 sec"
    assert conf["SchedulerParameters"] == "batch_sched_delay=0"


@given(
    st.dictionaries(
        st.from_regex(r"[A-Za-z][A-Za-z0-9_/]{0,20}", fullmatch=True),
        st.text(alphabet=st.characters(blacklist_categories=("Cc", "Zl", "Zp", "Cs")), max_size=20),
    )
)
def test_config_round_trips(conf: dict[str, str]) -> None:
    text = "".join(f"{k:<23} = {v}\n" for k, v in conf.items())
    assert parse_config(text) == {k: v.strip() for k, v in conf.items()}


@given(st.text(max_size=200))
def test_config_never_raises(text: str) -> None:
    parse_config(text)


def test_settings_from_config() -> None:
    conf = {
        "AccountingStorageType": "accounting_storage/slurmdbd",
        "MaxArraySize": "5001",
        "MinJobAge": "60 sec",
        "SchedulerParameters": "batch_sched_delay=0,max_array_tasks=2000",
    }
    assert settings_of(conf, has_sacct=True) == Settings(True, 2000, 60.0)
    assert settings_of(conf, has_sacct=False).accounting is False
    # Slurm's defaults for what the configuration does not say
    assert settings_of({}, has_sacct=True) == Settings(False, 1001, 300.0)
    none = {"AccountingStorageType": "accounting_storage/none", "MaxArraySize": "0"}
    assert settings_of(none, has_sacct=True) == Settings(False, 0, 300.0)


CONFIG_KEYS = ["MaxArraySize", "MinJobAge", "SchedulerParameters", "AccountingStorageType"]


@given(st.dictionaries(st.sampled_from(CONFIG_KEYS), st.text(max_size=30)))
def test_settings_never_raise(conf: dict[str, str]) -> None:
    s = settings_of(conf, has_sacct=True)
    assert s.max_tasks >= 0
    assert s.min_job_age >= 0


# -- states ----------------------------------------------------------------------------------


def job(state: str, **kw: object) -> SlurmJob:
    return SlurmJob(key="1", job_id=1, state=state, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("record", "state", "reason"),
    [
        (job("PENDING", reason="Resources"), JobState.QUEUED, "Resources"),
        (job("PENDING", reason="JobHeldUser"), JobState.HELD, "JobHeldUser"),
        (job("PENDING", reason="JobHeldAdmin"), JobState.QUEUED, "JobHeldAdmin"),
        (job("CONFIGURING"), JobState.QUEUED, ""),
        (job("REQUEUED"), JobState.QUEUED, ""),
        (job("RUNNING"), JobState.RUNNING, ""),
        (job("COMPLETING"), JobState.RUNNING, ""),
        (job("SUSPENDED"), JobState.RUNNING, "SUSPENDED"),
        (job("COMPLETED", exit_code=0), JobState.SUCCESS, ""),
        (job("FAILED", exit_code=3, node="n1"), JobState.FAIL, "exit status 3"),
        (job("FAILED", signal=9, reason="JobLaunchFailure", node="n1"), JobState.FAIL,
         "killed by signal SIGKILL"),
        (job("FAILED", signal=53, node="n1"), JobState.FAIL, "killed by signal 53"),
        (job("FAILED", signal=1, reason="BadConstraints"), JobState.ERROR,
         "Slurm could not start the job (BadConstraints)"),
        (job("FAILED", launch_error=4021, node="n1"), JobState.ERROR,
         "Slurm could not start the job: Slurmd could not connect IO (cannot open the output "
         "file or working directory?) (error 4021)"),
        (job("FAILED", exit_code=0, reason="Whatever", node="n1"), JobState.FAIL,
         "failed in Slurm (Whatever)"),
        (job("TIMEOUT"), JobState.FAIL, "time limit"),
        (job("OUT_OF_MEMORY"), JobState.FAIL, "out of memory"),
        (job("NODE_FAIL", node="n3"), JobState.FAIL, "node failure on n3"),
        (job("BOOT_FAIL"), JobState.FAIL, "node boot failure"),
        (job("DEADLINE"), JobState.FAIL, "deadline reached"),
        (job("PREEMPTED"), JobState.FAIL, "preempted"),
        (job("CANCELLED", cancelled_by=1000), JobState.KILLED, "cancelled in Slurm by uid 1000"),
        (job("CANCELLED"), JobState.KILLED, "cancelled in Slurm"),
        (job("CANCELLED", reason="DependencyNeverSatisfied"), JobState.ABORT,
         "a dependency failed (Slurm cancelled the job)"),
        (job("CANCELLED", reason="Dependency", source="sacct"), JobState.ABORT,
         "a dependency failed (Slurm cancelled the job)"),
        (job("CANCELLED", reason="Dependency"), JobState.KILLED, "cancelled in Slurm"),
        (job("CANCELLED", reason="Dependency", cancelled_by=0), JobState.KILLED,
         "cancelled in Slurm by uid 0"),
        (job("WEIRD_NEW_STATE"), JobState.QUEUED, "Slurm state WEIRD_NEW_STATE"),
        (job("WEIRD_NEW_STATE", start=1.0, elapsed=5.0), JobState.RUNNING,
         "Slurm state WEIRD_NEW_STATE"),
    ],
)  # fmt: skip
def test_states(record: SlurmJob, state: JobState, reason: str) -> None:
    assert progress(record).state is state
    assert progress(record).reason == reason


@given(
    st.builds(
        SlurmJob,
        key=st.text(max_size=5),
        job_id=st.none() | st.integers(),
        state=states,
        reason=reasons,
        exit_code=st.none() | st.integers(-(2**40), 2**40),
        signal=st.none() | st.integers(-5, 300),
        launch_error=st.none() | st.integers(0, 10**6),
        cancelled_by=st.none() | st.integers(0, 2**32),
        start=st.none() | st.floats(allow_nan=True),
        elapsed=st.none() | st.floats(allow_nan=True),
    )
)
def test_every_record_maps(record: SlurmJob) -> None:
    p = progress(record)
    assert isinstance(p.state, JobState)
    if record.state in WAITING:
        assert p.phase is Phase.WAITING
    elif record.state in RUNNING:
        assert p.phase is Phase.RUNNING
    elif record.state in (*FAILED, "COMPLETED", "FAILED", "CANCELLED"):
        assert p.phase is Phase.ENDED
        assert (p.reason == "") == (p.state is JobState.SUCCESS)
    else:
        assert p.phase is not Phase.ENDED  # an unknown state never ends a job
