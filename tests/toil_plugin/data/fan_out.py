"""A Toil workflow for the sjq batch system's tests: samples fan out, an aggregate sums them.

    python fan_out.py JOBSTORE --batchSystem sjq --out DIR
        [--samples N] [--fail-sample I] [--gate PATH]

Each sample (1.5 cores, 300M memory, 5M disk) writes what its sjq job saw to
DIR/sample-I.json and returns I*I; the aggregate (0.5 cores, 100M) writes the sum to
DIR/total. ``--fail-sample I`` makes sample I raise; ``--gate PATH`` makes every sample wait
for PATH to exist (at most a minute) before it ends.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from toil.common import Toil
from toil.job import Job

GATE_LIMIT = 60.0  # seconds a sample waits for its gate, so no test can leave one for ever


def sample(job: Job, i: int, out: str, fail: int, gate: str) -> int:
    seen = {key: os.environ.get(key) for key in ("SJQ_JOBID", "SJQ_PROCS", "SJQ_MEM", "MARK")}
    Path(out, f"sample-{i}.json").write_text(json.dumps(seen))
    if gate:
        deadline = time.monotonic() + GATE_LIMIT
        while not os.path.exists(gate) and time.monotonic() < deadline:
            time.sleep(0.02)
    if i == fail:
        raise RuntimeError(f"sample {i} fails on purpose")
    return i * i


def aggregate(job: Job, squares: list[int], out: str) -> int:
    total = sum(squares)
    Path(out, "total").write_text(str(total))
    return total


def root(job: Job, samples: int, out: str, fail: int, gate: str) -> object:
    squares = [
        job.addChildJobFn(sample, i, out, fail, gate, cores=1.5, memory="300M", disk="5M").rv()
        for i in range(samples)
    ]
    return job.addFollowOnJobFn(aggregate, squares, out, cores=0.5, memory="100M").rv()


def main() -> None:
    parser = Job.Runner.getDefaultArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--samples", type=int, default=3)
    parser.add_argument("--fail-sample", type=int, default=-1)
    parser.add_argument("--gate", default="")
    options = parser.parse_args()
    with Toil(options) as toil:
        total = toil.start(
            Job.wrapJobFn(
                root,
                options.samples,
                os.path.abspath(options.out),
                options.fail_sample,
                options.gate,
                cores=1,
                memory="100M",
                disk="5M",
            )
        )
    print(f"total {total}")


if __name__ == "__main__":
    main()
