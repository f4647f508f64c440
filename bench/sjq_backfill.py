"""The reservation's cost: SUBMIT latency while a job waits with a reservation and a long
queue of jobs that may not pass it sits behind, against the same with nothing behind it.

Every SUBMIT's turn runs a scheduling pass; with a job waiting, each pass computes its
reservation (from the running jobs) and looks at the head of each shape of the queue for a
job that may pass. The figure shows that this costs the number of shapes, not the number
of queued jobs. Two fresh daemons, 2 CPUs: a gate job (1 CPU, TIME 1h) runs, a 2-CPU job
waits for it (reserved from the gate job's end), then ``backlog`` jobs (1 CPU, TIME 2h:
they would run past the reservation, so they wait) are pipelined behind in one daemon and
none in the other; then the timed SUBMITs (likewise TIME 2h), one at a time.
"""

from __future__ import annotations

from pathlib import Path

from bench import scripts
from bench.procs import Gate
from bench.proto import Conn, submit_request
from bench.report import Results
from bench.sjq_runs import BULK_TIMEOUT, _timed
from bench.sjqd import Daemon


def _request(body: bytes, cwd: str, *, time: str | None = None, procs: int = 1) -> bytes:
    head = submit_request(body, cwd=cwd)
    extra = (f"TIME {time}\r\n" if time else "") + f"PROCS {procs}\r\n"
    # options go before SRC: insert them after the SUBMIT line
    return head.replace(b"SUBMIT\r\n", b"SUBMIT\r\n" + extra.encode(), 1)


def _session(workdir: Path, backlog: int, samples: int) -> list[float]:
    workdir.mkdir()
    gate = Gate(workdir)
    try:
        with Daemon(workdir / "sjq", 2) as d, d.connect(timeout=BULK_TIMEOUT) as conn:
            cwd = str(d.jobs)
            conn.submit(_request(gate.script, cwd, time="1h"))
            conn.submit(_request(scripts.TRIVIAL, cwd, procs=2))
            waiting = _request(scripts.TRIVIAL, cwd, time="2h")
            if backlog:
                conn.pipeline(waiting * backlog, backlog, timeout=BULK_TIMEOUT)
            _check_reserved(conn, backlog)
            return _timed(lambda: conn.submit(waiting), samples)
    finally:
        gate.close()


def _check_reserved(conn: Conn, backlog: int) -> None:
    counts = conn.ping()
    if counts.get("R") != 1 or counts.get("Q", 0) != backlog + 1:
        raise RuntimeError(f"expected 1 running, {backlog + 1} queued; PING says {counts}")


def measure(r: Results, workdir: Path, backlog: int, samples: int) -> None:
    """Keys sjq.backfill.empty and sjq.backfill.queued (SUBMIT latencies, seconds)."""
    r.measure("sjq.backfill.empty", lambda: _session(workdir / "empty", 0, samples))
    r.measure("sjq.backfill.queued", lambda: _session(workdir / "queued", backlog, samples))
