"""task-spooler (Debian's ``task-spooler``, binary ``tsp`` or ``ts``) as a baseline.

Each run gets a private server: its own TS_SOCKET and TMPDIR under the run's
temp dir and no inherited TS_* variable, so a user's queue is never touched.
Submissions go through one ``/bin/sh`` loop, the cheapest way a tsp user
submits (one tsp client process per job is how tsp works; a Python loop of
subprocess calls would charge tsp for Python's fork overhead).

Waiting for completion: ``tsp -w <last id>`` blocks until the last job ends;
then one ``tsp -l`` checks every job is finished with status 0, and any job it
still shows unfinished is waited for with ``tsp -w <id>`` before the clock
stops. The listing itself is a check and is not timed, unless it found
stragglers.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from bench import scripts
from bench.floor import gaps_from
from bench.procs import Gate, Stamper, kill_descendants, reap_zombies

# tsp keeps at most 1000 client connections (a queued job is a connected client);
# more queued jobs would block the submitting loop.
MAX_QUEUED = 900


def find() -> str | None:
    """Path of the task-spooler binary, or None. ``ts`` may be moreutils' timestamper."""
    for name in ("tsp", "ts"):
        path = shutil.which(name)
        if not path:
            continue
        try:
            out = subprocess.run(
                [path, "-V"],
                capture_output=True,
                text=True,
                timeout=5,
                env=_base_env(),
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if "task spooler" in (out.stdout + out.stderr).lower():
            return path
    return None


def version(binary: str) -> str:
    out = subprocess.run([binary, "-V"], capture_output=True, text=True, timeout=5, check=False)
    return (out.stdout + out.stderr).splitlines()[0].strip()


def _base_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("TS_")}


class TaskSpooler:
    """A private tsp server with ``slots`` slots, killed on exit."""

    def __init__(self, binary: str, workdir: Path, slots: int) -> None:
        self.binary = binary
        self.workdir = workdir
        workdir.mkdir(parents=True)
        self.env = _base_env() | {
            "TS_SOCKET": str(workdir / "ts.sock"),
            "TMPDIR": str(workdir),
            "TS_MAXFINISHED": "1000000",  # keep every finished job listable
        }
        self.run("-S", str(slots))  # the first client starts the server

    def __enter__(self) -> TaskSpooler:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.run("-K", check=False)
        finally:
            # tsp -K leaves running jobs and their waiting clients behind.
            kill_descendants()
            reap_zombies()

    def run(self, *args: str, check: bool = True, timeout: float = 60) -> str:
        out = subprocess.run(
            [self.binary, *args],
            env=self.env,
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and out.returncode != 0:
            raise RuntimeError(f"tsp {' '.join(args)}: exit {out.returncode} {out.stderr.strip()}")
        return out.stdout

    def shell(self, loop: str, timeout: float) -> list[int]:
        """Run a /bin/sh submission loop (``$TSP`` is the binary); the ids it printed."""
        out = subprocess.run(
            ["/bin/sh", "-c", loop],
            env=self.env | {"TSP": self.binary},
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if out.returncode != 0:
            raise RuntimeError(f"tsp submission loop: exit {out.returncode} {out.stderr.strip()}")
        return [int(x) for x in out.stdout.split()]

    def wait_all(self, ids: list[int], timeout: float = 120) -> None:
        """Return once every job in ``ids`` is finished; raise unless all exited 0."""
        self.run("-w", str(ids[-1]), check=False, timeout=timeout)
        while stragglers := self._unfinished(ids):
            for jobid in stragglers:
                self.run("-w", str(jobid), check=False, timeout=timeout)

    def _unfinished(self, ids: list[int]) -> list[int]:
        wanted = set(ids)
        unfinished: list[int] = []
        for line in self.run("-l").splitlines()[1:]:
            cols = line.split()
            if len(cols) < 2 or not cols[0].isdigit() or int(cols[0]) not in wanted:
                continue
            if cols[1] != "finished":
                unfinished.append(int(cols[0]))
            elif cols[3] != "0":
                raise RuntimeError(f"tsp job {cols[0]} ended with status {cols[3]}: {line}")
            wanted.discard(int(cols[0]))
        if wanted and not unfinished:
            raise RuntimeError(f"tsp lost {len(wanted)} jobs from its list")
        return unfinished


def throughput(binary: str, workdir: Path, jobs: int, slots: int) -> float:
    """Jobs/s: ``jobs`` trivial jobs submitted then all finished, ``slots`` at a time."""
    script = scripts.write(workdir / "trivial.sh", scripts.TRIVIAL)
    with TaskSpooler(binary, workdir / "tsp", slots) as ts:
        loop = f'i=0; while [ $i -lt {jobs} ]; do "$TSP" {script} || exit 1; i=$((i+1)); done'
        t0 = time.perf_counter()
        ids = ts.shell(loop, timeout=300)
        ts.wait_all(ids)
        return jobs / (time.perf_counter() - t0)


def chain(binary: str, workdir: Path, jobs: int, slots: int) -> float:
    """Wall seconds for a ``tsp -D`` chain of ``jobs`` trivial jobs, first submit to last end.

    Each job's -D names the id the previous submission printed; a fresh server
    numbers jobs 0, 1, 2 ..., so the loop computes it instead of paying a
    command substitution per job, and the printed ids are checked afterwards.
    """
    script = scripts.write(workdir / "trivial.sh", scripts.TRIVIAL)
    with TaskSpooler(binary, workdir / "tspchain", slots) as ts:
        loop = (
            f'first=$("$TSP" {script}) || exit 1; echo "$first"; i=1; '
            f"while [ $i -lt {jobs} ]; do "
            f'"$TSP" -D $((first+i-1)) {script} || exit 1; i=$((i+1)); done'
        )
        t0 = time.perf_counter()
        ids = ts.shell(loop, timeout=300)
        ts.wait_all(ids)
        wall = time.perf_counter() - t0
        if ids != list(range(ids[0], ids[0] + jobs)):
            raise RuntimeError("tsp ids were not consecutive: the -D chain was broken")
        return wall


def dispatch_gaps(binary: str, workdir: Path, stamper: Stamper, jobs: int) -> list[float]:
    """Gaps (s) between consecutive jobs with ``tsp -S 1``, the queue filled behind a gate job."""
    jobs = min(jobs, MAX_QUEUED)
    prefix = stamper.prefix("tsp")
    script = scripts.write(workdir / "gap.sh", scripts.gap(stamper.fifo, f"{prefix}$1"))
    gate = Gate(workdir)
    try:
        gate_script = scripts.write(workdir / "gate.sh", gate.script)
        with TaskSpooler(binary, workdir / "tspgap", 1) as ts:
            ts.run(str(gate_script))
            loop = (
                f'i=0; while [ $i -lt {jobs} ]; do "$TSP" {script} $i || exit 1; i=$((i+1)); done'
            )
            ts.shell(loop, timeout=300)
            gate.open()
            return gaps_from(stamper, prefix, jobs, timeout=120)
    finally:
        gate.close()
