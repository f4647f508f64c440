"""CPUs and GPUs of their own for running jobs, through a real daemon: pinning (affinity, and
the cpuset under cgroups), the job's environment, GPU ids never shared (armed starts
included), and the settings and SUBMIT errors. No GPU here: the ids are configured
(sjq.gpus), which is what the daemon hands out on a GPU machine too."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from support import SH, Daemon, Gate, Raw, started_for_another_user, wait_for

from .test_containment import cgroup_or_skip, ended

SHOW = (
    SH + 'out="$1"\n'
    '{ echo "cpus=$SJQ_CPUS"; echo "gpus=$SJQ_GPUS"; echo "cuda=$CUDA_VISIBLE_DEVICES";'
    ' echo "order=$CUDA_DEVICE_ORDER"; echo "omp=$OMP_NUM_THREADS"; echo "mkl=$MKL_NUM_THREADS";'
    ' echo "blas=$OPENBLAS_NUM_THREADS";'
    " grep Cpus_allowed_list /proc/self/status | tr -d ' \\t' | tr : =; } > \"$out\"\n"
)


def shown(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines())


def show_job(d: Daemon, name: str, wait: str = "", **options: str) -> tuple[int, Path]:
    """A job that writes what it was given into ``name``, then runs ``wait``."""
    out = d.jobs_dir / name
    script = SHOW.replace('out="$1"', f'out="{out}"') + wait
    return d.submit(script, **options), out


@pytest.fixture(params=["cgroup", "watch"])
def method(request: pytest.FixtureRequest) -> str:
    if request.param == "cgroup":
        cgroup_or_skip()
    return str(request.param)


def test_two_one_cpu_jobs_run_on_different_cpus(
    daemon_factory: Callable[..., Daemon], gate: Callable[[str], Gate], method: str
) -> None:
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs 2 CPUs")
    d = daemon_factory(enforce=method, maxprocs="2").start()
    g = gate()
    (a, out_a), (b, out_b) = (show_job(d, n, g.wait) for n in ("a", "b"))
    wait_for(lambda: out_a.exists() and out_b.exists(), what="both jobs running")
    g.open()
    ia, ib = ended(d, a), ended(d, b)
    sa, sb = shown(out_a), shown(out_b)
    assert sa["cpus"] != sb["cpus"]
    assert sa["Cpus_allowed_list"] == sa["cpus"]  # pinned from its first instruction
    assert sb["Cpus_allowed_list"] == sb["cpus"]
    assert {len(ia["cpus"]), len(ib["cpus"])} == {1}
    assert set(ia["cpus"]).isdisjoint(ib["cpus"])
    assert sa["omp"] == sa["mkl"] == sa["blas"] == "1"
    assert "pinning: each job gets CPUs of its own among 0-1 (sjq.pin = T" in d.log


@pytest.mark.skipif(os.geteuid() != 0, reason="only a root daemon runs jobs as another user")
@pytest.mark.parametrize("method", ["watch", "cgroup"])
def test_a_job_run_as_another_user_is_pinned_too(
    daemon_factory: Callable[..., Daemon], method: str
) -> None:
    """A UID job starts by another path than posix_spawn (the identity switch needs a
    fork); it is pinned from its first instruction all the same."""
    if method == "cgroup":
        cgroup_or_skip()
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs 2 CPUs")
    with started_for_another_user(daemon_factory, enforce=method, maxprocs="1") as (d, jobs):
        with Raw(d.socket) as c:
            reply = c.submit(SHOW.replace('"$1"', f'"{jobs}/shown"'), uid="65534", cwd=str(jobs))
        info = ended(d, int(reply[3:-2]))
        assert info["state"] == "S", info
        s = shown(jobs / "shown")
        assert s["Cpus_allowed_list"] == s["cpus"] == ",".join(map(str, info["cpus"]))


def test_a_cgroup_job_cannot_widen_its_cpus(daemon_factory: Callable[..., Daemon]) -> None:
    cgroup_or_skip()
    d = daemon_factory(enforce="cgroup", maxprocs="1").start()
    out = d.jobs_dir / "after"
    script = SH + f"taskset -p -c 0-{os.cpu_count() or 1 - 1} $$ >/dev/null 2>&1\n"
    script += f"grep Cpus_allowed_list /proc/self/status > {out}\n"
    info = ended(d, d.submit(script))
    assert info["state"] == "S", info
    assert out.read_text().split()[-1] == ",".join(map(str, info["cpus"]))
    assert "by the job's cpuset" in d.log


def test_the_thread_variables_the_job_sets_are_kept(daemon_factory: Callable[..., Daemon]) -> None:
    d = daemon_factory(enforce="watch", maxprocs="2").start()
    jid, out = show_job(d, "env", procs="2", env=["OMP_NUM_THREADS=7", "PATH=/usr/bin:/bin"])
    assert ended(d, jid)["state"] == "S"
    s = shown(out)
    assert (s["omp"], s["mkl"], s["blas"]) == ("7", "2", "2")
    assert s["cpus"] == "0-1"


def test_unpinned_jobs_run_on_any_cpu(daemon_factory: Callable[..., Daemon]) -> None:
    d = daemon_factory(enforce="watch", pin="F").start()
    jid, out = show_job(d, "env")
    info = ended(d, jid)
    s = shown(out)
    assert s["cpus"] == ""
    assert info["cpus"] == []
    assert s["Cpus_allowed_list"] == _affinity()


def _affinity() -> str:
    text = Path("/proc/self/status").read_text()
    return next(
        x.split(":")[1].strip() for x in text.splitlines() if x.startswith("Cpus_allowed_l")
    )


def test_pinning_more_cpus_than_there_are_is_a_config_error(
    daemon_factory: Callable[..., Daemon],
) -> None:
    cpus = len(os.sched_getaffinity(0))
    d = daemon_factory(pin="T", maxprocs=str(cpus + 2))
    d.start(wait=False)
    assert d.proc is not None
    assert d.proc.wait(30) != 0
    d.proc = None
    err = (d.dir / "stderr.log").read_text()
    assert f"sjq.pin: cannot pin CPUs: sjq.maxprocs ({cpus + 2}) is more than the {cpus}" in err
    # auto: pinning is off there, and the daemon starts
    auto = daemon_factory(maxprocs=str(cpus + 2)).start()
    assert "pinning: " not in auto.log


def test_gpu_ids_are_never_shared_armed_starts_included(
    daemon_factory: Callable[..., Daemon], gate: Callable[[str], Gate]
) -> None:
    """Many short jobs of one or two GPUs (of four) and one CPU (of two): most start from
    arm tokens as others end. Each takes a lock directory per GPU and CPU it was given
    while it runs; a clash would leave a mark."""
    d = daemon_factory(enforce="watch", maxprocs="2", gpus="0,1,2,GPU-8a1c").start()
    locks = d.jobs_dir / "locks"
    locks.mkdir()
    clash = d.jobs_dir / "clash"
    take = (
        SH + f'cd "{locks}"\n'
        'for g in $(echo "$SJQ_GPUS" | tr , " ") c$SJQ_CPUS; do\n'
        f'  mkdir "$g" 2>/dev/null || echo "$SJQ_JOBID $g" >> "{clash}"\n'
        "done\n"
        'if [ "$CUDA_VISIBLE_DEVICES" != "$SJQ_GPUS" ] || [ "$CUDA_DEVICE_ORDER" != PCI_BUS_ID ];'
        f' then echo "$SJQ_JOBID env" >> "{clash}"; fi\n'
        "sleep 0.02\n"
        'for g in $(echo "$SJQ_GPUS" | tr , " ") c$SJQ_CPUS; do rmdir "$g"; done\n'
    )
    g = gate()
    first = d.submit(SH + g.wait, gpus="1")  # the rest queues behind it
    ids = [d.submit(take, gpus=str(1 + i % 2)) for i in range(40)]
    g.open()
    for jid in [first, *ids]:
        d.wait_state(jid, "SFAKE", timeout=60)
    assert not clash.exists(), clash.read_text()
    for i, jid in enumerate(ids):
        info = d.info(jid)
        assert info["state"] == "S", info
        assert len(info["gpus"]) == 1 + i % 2
        assert set(info["gpus"]) <= {"0", "1", "2", "GPU-8a1c"}
        assert len(info["cpus"]) == 1
    assert "gpus: 0,1,2,GPU-8a1c, from sjq.gpus" in d.log


def test_a_job_without_gpus_sees_none_of_the_managed_ones(
    daemon_factory: Callable[..., Daemon],
) -> None:
    d = daemon_factory(enforce="none", gpus="0,1").start()
    jid, out = show_job(d, "env", env=["CUDA_VISIBLE_DEVICES=0,1", "PATH=/usr/bin:/bin"])
    assert ended(d, jid)["state"] == "S"
    s = shown(out)
    assert (s["cuda"], s["gpus"]) == ("", "")  # not the devices another job may hold


def test_gpus_the_daemon_does_not_manage_are_refused_at_submit(
    daemon_factory: Callable[..., Daemon],
) -> None:
    d = daemon_factory(gpus="0,1").start()
    with Raw(d.socket) as c:
        assert c.submit(SH, gpus="3", cwd=str(d.jobs_dir)) == (
            b"ERROR GPUS 3 is more than the 2 GPUs this daemon manages (sjq.gpus)\r\n"
        )
        assert c.submit(SH, gpus="two", cwd=str(d.jobs_dir)) == (
            b"ERROR GPUS must be a whole number >= 0, got 'two'\r\n"
        )
    d.stop()
    none = daemon_factory(gpus="none").start()
    with Raw(none.socket) as c:
        assert c.submit(SH, gpus="1", cwd=str(none.jobs_dir)) == (
            b"ERROR GPUS 1 is more than the 0 GPUs this daemon manages (sjq.gpus)\r\n"
        )
    assert "gpus: none (sjq.gpus = none)" in none.log


def test_a_daemon_inside_a_job_manages_that_jobs_gpus(
    daemon_factory: Callable[..., Daemon], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job given GPUs 1 and 3 starts a daemon of its own: SJQ_GPUS, in the job's
    environment, is that daemon's sjq.gpus."""
    monkeypatch.setenv("SJQ_GPUS", "1,3")
    d = daemon_factory().start()
    assert "gpus: 1,3, from SJQ_GPUS (the enclosing job's)" in d.log
    with Raw(d.socket) as c:
        assert c.submit(SH, gpus="3", cwd=str(d.jobs_dir)).startswith(b"ERROR GPUS 3 is more")
    jid, out = show_job(d, "env", gpus="2")
    assert ended(d, jid)["state"] == "S"
    assert shown(out)["gpus"] == "1,3"


def test_info_lists_a_jobs_cpus_and_gpus(daemon_factory: Callable[..., Daemon]) -> None:
    d = daemon_factory(enforce="none", maxprocs="1", gpus="7").start()
    jid, _ = show_job(d, "env", gpus="1")
    info = ended(d, jid)
    assert (info["cpus"], info["gpus"]) == ([0] if _affinity() == "0-1" else info["cpus"], ["7"])
    assert json.dumps(info)  # lists of plain values
