"""The pure scheduler: example tests and Hypothesis invariants over random event sequences."""

from __future__ import annotations

import copy
import heapq
from dataclasses import dataclass, field

from hypothesis import example, given, settings
from hypothesis import strategies as st

from sjq.arming import ARM_DEPTH, arm_plan, could_start, next_after
from sjq.conditions import AFTER, AFTERANY, AFTERNOTOK, AFTEROK, NAMES
from sjq.jobs import TERMINAL, A, F, H, IllegalTransition, Job, JobState, K, Q, R, S, U
from sjq.scheduler import Queue


def job(
    i: int, procs: int = 1, mem: int = 0, state: JobState = Q, prio: int = 0, *, gpus: int = 0
) -> Job:
    return Job(id=i, name=f"j{i}", state=state, procs=procs, mem=mem, priority=prio, gpus=gpus)


def test_fcfs_with_backfill() -> None:
    q = Queue(maxprocs=4, maxmem=None)
    for j in (job(1, 2), job(2, 3), job(3, 1), job(4, 2)):
        q.add(j, 0)
    assert [j.id for j in q.schedule(0)] == [1, 3]  # 2 does not fit after 1; 3 backfills
    q.finish(q.jobs[1], S, 1)
    assert [j.id for j in q.schedule(1)] == [2]  # 2 now fits and goes before 4


def test_memory_is_reserved() -> None:
    q = Queue(maxprocs=8, maxmem=1000)
    for i in (1, 2, 3):
        q.add(job(i, 1, 600), 0)
    assert [j.id for j in q.schedule(0)] == [1]
    assert q.used_mem == 600


def test_gpus_are_counted_and_backfilled() -> None:
    q = Queue(maxprocs=4, maxmem=None, maxgpus=2)
    for j in (job(1, gpus=1), job(2, gpus=2), job(3), job(4, gpus=1)):
        q.add(j, 0)
    assert [j.id for j in q.schedule(0)] == [1, 3, 4]  # 2 waits for both GPUs; 3, 4 backfill
    assert q.used_gpus == 2
    q.finish(q.jobs[1], S, 1)
    assert q.schedule(1) == []
    q.finish(q.jobs[4], S, 2)
    assert [j.id for j in q.schedule(2)] == [2]


def test_memory_unmanaged_ignores_mem() -> None:
    q = Queue(maxprocs=2, maxmem=None)
    q.add(job(1, 1, 10**15), 0)
    q.add(job(2, 1, 10**15), 0)
    assert len(q.schedule(0)) == 2


def test_priority_before_id_among_jobs_that_fit() -> None:
    q = Queue(maxprocs=1, maxmem=None)
    q.add(job(1), 0)
    q.add(job(2, prio=5), 0)
    assert [j.id for j in q.schedule(0)] == [2]


def test_dependencies_release_and_cascade() -> None:
    q = Queue(maxprocs=4, maxmem=None)
    q.add(job(1), 0)
    q.add(job(2, state=H), 0, unmet=(1,))
    q.add(job(3, state=H), 0, unmet=(2,))
    q.add(job(4, state=H), 0, unmet=(1,))
    assert [j.id for j in q.schedule(0)] == [1]
    q.finish(q.jobs[1], S, 1)
    assert q.jobs[2].state is Q
    assert q.jobs[4].state is Q
    assert {j.id for j in q.schedule(1)} == {2, 4}
    q.finish(q.jobs[2], F, 2)
    assert 3 not in q.jobs
    assert q.changes[-1].job.id == 3
    assert q.changes[-1].state is A


def test_doomed_submit_aborts_at_once() -> None:
    q = Queue(maxprocs=1, maxmem=None)
    j = job(1)
    q.add(j, 0, doomed="dependency 9 ended in F")
    assert j.state is A
    assert j.reason == "dependency 9 ended in F"
    assert 1 not in q.jobs


def test_kill_running_is_deferred_and_waiting_is_immediate() -> None:
    q = Queue(maxprocs=1, maxmem=None)
    q.add(job(1), 0)
    q.add(job(2), 0)
    q.schedule(0)
    assert q.kill(1, 1) is q.jobs[1]
    assert q.jobs[1].killing
    assert q.kill(2, 1) is None
    assert 2 not in q.jobs
    assert q.kill(99, 1) is None


def test_hold_and_release() -> None:
    q = Queue(maxprocs=1, maxmem=None)
    q.add(job(1, state=U), 0)
    assert q.schedule(0) == []
    assert q.release(1, 1)
    assert [j.id for j in q.schedule(1)] == [1]
    assert not q.hold(1, 2), "a running job cannot be held"


def test_table_refuses_illegal_transitions() -> None:
    j = job(1, state=S)
    try:
        j.set_state(R)
    except IllegalTransition:
        pass
    else:  # pragma: no cover
        raise AssertionError("S -> R must be refused")


# -- properties ----------------------------------------------------------------------------


@dataclass
class Model:
    """What must be true, kept independently of the Queue's indexes."""

    maxprocs: int
    maxmem: int
    final: dict[int, JobState] = field(default_factory=dict)
    deps: dict[int, tuple[tuple[int, str], ...]] = field(default_factory=dict)  # (parent, kind)
    started: set[int] = field(default_factory=set)
    limits: dict[int, int] = field(default_factory=dict)  # array -> at most running at once

    def holds(self, parent: int, kind: str) -> bool:
        """Whether one condition holds now, from what the model has seen happen."""
        end = self.final.get(parent)
        if kind == "after":
            return parent in self.started or end is not None
        if end is None:
            return False
        return {"afterok": end is S, "afterany": True, "afternotok": end is not S}[kind]

    def never(self, parent: int, kind: str) -> bool:
        """Whether it can no longer hold."""
        end = self.final.get(parent)
        if end is None:
            return False
        return (kind == "afterok" and end is not S) or (kind == "afternotok" and end is S)

    def never_any(self, jobid: int) -> bool:
        conds = self.deps[jobid]
        for p in {p for p, _ in conds}:
            kinds = {k for q, k in conds if q == p}
            if {"afterok", "afternotok"} <= kinds:
                return True
        return any(self.never(p, k) for p, k in conds)


KIND_WORDS = ("afterok", "afterok", "afterany", "afternotok", "after")

ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("submit"),
            st.integers(1, 4),  # procs
            st.sampled_from([0, 100, 300, 700]),  # mem
            st.lists(  # dependency picks, each with its kind (afterok: DEPENDS)
                st.tuples(st.integers(0, 30), st.sampled_from(KIND_WORDS)), max_size=3
            ),
            st.booleans(),  # hold
            st.integers(-1, 1),  # priority
            st.sampled_from([0, 0, 1, 2]),  # gpus
        ),
        st.tuples(
            st.just("array"),
            st.integers(1, 2),  # procs of every element
            st.integers(2, 4),  # elements
            st.integers(1, 2),  # at most this many running at once (%N)
            st.integers(-1, 1),  # priority
        ),
        st.tuples(st.just("finish"), st.integers(0, 30), st.booleans()),
        st.tuples(st.just("kill"), st.integers(0, 30)),
        st.tuples(st.just("release"), st.integers(0, 30)),
        st.tuples(st.just("hold"), st.integers(0, 30)),
        st.tuples(st.just("schedule")),
    ),
    max_size=60,
)


def reference_resolve(
    q: Queue, m: Model, deps: tuple[tuple[int, str], ...]
) -> tuple[list[int], list[tuple[int, int]], str]:
    """What the daemon hands the queue for a new job's conditions, worked out from the
    model: afterok parents to wait for, other conditions to wait for, or why never."""
    code = {"afterok": AFTEROK, "afterany": AFTERANY, "afternotok": AFTERNOTOK, "after": AFTER}
    by_parent: dict[int, set[str]] = {}
    for p, k in deps:
        by_parent.setdefault(p, set()).add(k)
    unmet: list[int] = []
    conds: list[tuple[int, int]] = []
    for p, kinds in sorted(by_parent.items()):
        if {"afterok", "afternotok"} <= kinds:
            return [], [], f"dependency {p}: never"
        # the strongest: an end in S or not-S implies an end, which implies a start
        kind = next(k for k in ("afterok", "afternotok", "afterany", "after") if k in kinds)
        if m.never(p, kind):
            return [], [], f"dependency {p} ended in {m.final[p].value}"
        if m.holds(p, kind):
            continue
        if kind == "afterok":
            unmet.append(p)
        else:
            conds.append((p, code[kind]))
    return unmet, conds, ""


def expected_starts(
    q: Queue, deps: dict[int, tuple[tuple[int, str], ...]] | None = None
) -> list[int]:
    """The reference: scan ready jobs by (-priority, id) and take each that still fits.
    ``deps`` (the model's conditions): a job waiting only for ``after`` conditions on
    jobs this scan takes becomes ready within it (a start meets them), in its place."""
    free_p = q.maxprocs - q.used_procs
    free_m = None if q.maxmem is None else q.maxmem - q.used_mem
    free_g = q.maxgpus - q.used_gpus
    # elements running per array, against the limits the queue was given
    limits = {a: lim[0] for a, lim in q.limits.items()}
    running: dict[int, int] = {}
    for j in q.jobs.values():
        if j.state is R and j.array:
            running[j.array] = running.get(j.array, 0) + 1
    # for each waiting job, the parents whose start is all it waits for of them
    after_of: dict[int, set[int]] = {}
    for j in q.jobs.values():
        if j.state is H and deps is not None:
            kinds: dict[int, set[str]] = {}
            for parent, kind in deps.get(j.id, ()):
                kinds.setdefault(parent, set()).add(kind)
            after_of[j.id] = {parent for parent, ks in kinds.items() if ks == {"after"}}
    waiting = {jid: q.jobs[jid].waiting for jid in after_of}
    todo = [(-j.priority, j.id) for j in q.jobs.values() if j.state is Q]
    heapq.heapify(todo)
    out = []
    while todo:
        j = q.jobs[heapq.heappop(todo)[1]]
        if j.array in limits and running.get(j.array, 0) >= limits[j.array]:
            continue
        if j.procs <= free_p and (free_m is None or j.mem <= free_m) and j.gpus <= free_g:
            if j.array:
                running[j.array] = running.get(j.array, 0) + 1
            out.append(j.id)
            free_p -= j.procs
            free_g -= j.gpus
            if free_m is not None:
                free_m -= j.mem
            for cid, parents in after_of.items():
                if j.id in parents:
                    waiting[cid] -= 1
                    if not waiting[cid]:
                        c = q.jobs[cid]
                        heapq.heappush(todo, (-c.priority, c.id))
    return out


def check_next_after(q: Queue, x: Job, now: float) -> None:
    """What a keeper is armed with when ``x`` runs alone must be what the pass would start
    first once ``x`` has succeeded. Nothing armed: nothing would start, or x's success
    aborts a job (whose abort may make others ready: the planner bounds those, and leaves
    that end to the daemon's pass rather than guess)."""
    nxt = next_after(q, x)
    twin = copy.deepcopy(q)
    twin.changes.clear()
    twin.finish(twin.jobs[x.id], S, now)
    aborted = [ch.job.id for ch in twin.changes if ch.state is A]
    started = twin.schedule(now)
    if nxt is None:
        assert not started or aborted, (
            f"nothing armed, but {started[0].id} would start after {x.id} and nothing aborts"
        )
        return
    assert started, f"armed {nxt[0].id} but nothing would start after {x.id}"
    assert started[0].id == nxt[0].id


def check_arm_plan(q: Queue, now: float, ends: list[tuple[int, bool]]) -> None:
    """Tokens armed for the running jobs, taken one per end in the order ``ends`` picks
    (a job started from a token takes one in turn when it ends): each must start the job
    a pass would start first at that moment, within the resources, and one said to be
    covered must fit in what the job it followed held."""
    runners = sorted((j for j in q.jobs.values() if j.state is R), key=lambda j: j.id)
    if not runners:
        return
    plan = arm_plan(q, runners)
    if len(runners) > 1:
        assert all(e.after is None and e.covered for e in plan)
    twin = copy.deepcopy(q)
    twin.changes.clear()
    capable = [twin.jobs[r.id] for r in runners]
    tokens = list(plan)
    for pick, ok in ends:
        if not tokens or not capable:
            return
        x = capable.pop(pick % len(capable))
        twin.finish(x, S if ok else F, now)
        e = tokens.pop(0)
        if e.after is not None and (e.after != x.id or (e.need_success and not ok)):
            return  # not for this end: the keeper starts nothing, the daemon takes over
        y = twin.jobs[e.job.id]
        want = expected_starts(twin)
        assert want, f"token for {y.id}, but nothing would start after {x.id} ended"
        assert want[0] == y.id, f"token for {y.id}, but the pass would start {want[0]}"
        if e.covered:
            assert y.procs <= x.procs
            assert twin.maxmem is None or y.mem <= x.mem
            assert y.gpus <= x.gpus
        twin.arm(y)
        twin.start_armed(y, now)
        assert twin.used_procs <= twin.maxprocs
        assert twin.maxmem is None or twin.used_mem <= twin.maxmem
        assert twin.used_gpus <= twin.maxgpus
        capable.append(y)


ends = st.lists(st.tuples(st.integers(0, 10), st.booleans()), max_size=10)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 4), st.sampled_from([500, 1000]), st.integers(0, 3), ops, ends)
@example(  # a job waiting for another's start (after) starts in the same pass as that one
    maxprocs=2,
    maxmem=500,
    maxgpus=0,
    operations=[
        ("submit", 1, 0, [], False, 0, 0),
        ("submit", 1, 0, [(0, "after")], False, 0, 0),
        ("schedule",),
    ],
    end_order=[],
)
@example(  # x's success aborts a job waiting for its failure, which makes a job ready
    maxprocs=1,
    maxmem=500,
    maxgpus=0,
    operations=[
        ("array", 1, 2, 1, 0),
        ("submit", 1, 0, [(0, "afternotok")], False, 0, 0),
        ("submit", 1, 0, [(2, "afterany")], False, 1, 0),
        ("schedule",),
    ],
    end_order=[],
)
def test_scheduler_invariants(
    maxprocs: int,
    maxmem: int,
    maxgpus: int,
    operations: list[tuple],  # type: ignore[type-arg]
    end_order: list[tuple[int, bool]],
) -> None:
    q = Queue(maxprocs=maxprocs, maxmem=maxmem, maxgpus=maxgpus)
    m = Model(maxprocs, maxmem)
    next_id = 1
    now = 0.0
    for op in operations:
        now += 1
        kind = op[0]
        if kind == "submit":
            _, procs, mem, picks, hold, prio, gpus = op
            if procs > maxprocs or gpus > maxgpus:
                continue
            known = list(m.deps)
            deps = tuple(sorted({(known[p % len(known)], k) for p, k in picks})) if known else ()
            unmet, conds, doomed = reference_resolve(q, m, deps)
            state = U if hold else (H if unmet or conds else Q)
            j = job(next_id, procs, mem, state, prio, gpus=gpus)
            j.depends = tuple(p for p, k in deps if k == "afterok")
            j.dependency = ",".join(f"{k}:{p}" for p, k in deps if k != "afterok")
            q.add(j, now, unmet=unmet, conds=conds, doomed=doomed)
            m.deps[next_id] = deps
            next_id += 1
        elif kind == "array":
            _, procs, count, limit, prio = op
            if procs > maxprocs:
                continue
            q.limit_array(next_id, limit)
            m.limits[next_id] = limit
            for i in range(next_id, next_id + count):
                j = job(i, procs, 100, Q, prio)
                j.array = next_id
                q.add(j, now)
                m.deps[i] = ()
            next_id += count
        elif kind == "finish":
            running = sorted(j.id for j in q.jobs.values() if j.state is R)
            if running:
                jid = running[op[1] % len(running)]
                q.finish(q.jobs[jid], S if op[2] else F, now)
        elif kind == "kill":
            q.kill(op[1], now)
        elif kind == "release":
            q.release(op[1], now)
        elif kind == "hold":
            q.hold(op[1], now)
        else:
            want = expected_starts(q, m.deps)
            got = [j.id for j in q.schedule(now)]
            assert got == want, "the pass must equal an in-order scan that skips misfits"
            running_now = [j for j in q.jobs.values() if j.state is R]
            if len(running_now) == 1:  # as the daemon arms: after the pass, one job running
                check_next_after(q, running_now[0], now)
            check_arm_plan(q, now, end_order)
        for ch in q.changes:
            if ch.state in TERMINAL:
                m.final[ch.job.id] = ch.state
            if ch.state is R:
                m.started.add(ch.job.id)
            if ch.state in (Q, R):
                for d, k in m.deps[ch.job.id]:
                    assert m.holds(d, k), f"job {ch.job.id} went {ch.state.value} before {k}:{d}"
            if ch.state is A:
                assert m.never_any(ch.job.id), f"job {ch.job.id} aborted, yet it could run"
        q.changes.clear()
        running = [j for j in q.jobs.values() if j.state is R]
        assert sum(j.procs for j in running) == q.used_procs <= maxprocs
        for first, limit in m.limits.items():
            assert sum(1 for j in running if j.array == first) <= limit, "over %N"
        assert sum(j.mem for j in running) == q.used_mem <= maxmem
        assert sum(j.gpus for j in running) == q.used_gpus <= maxgpus
        for j in q.jobs.values():
            assert not j.state.terminal
            if j.state is Q:
                assert all(m.holds(d, k) for d, k in m.deps[j.id])
            if j.state is H:
                assert j.waiting > 0
                assert not all(m.holds(d, k) for d, k in m.deps[j.id]), f"{j.id} stays H"
            if j.state in (Q, H, U):
                assert not m.never_any(j.id), f"job {j.id} waits for what cannot happen"
        counted = {s: sum(1 for j in q.jobs.values() if j.state is s) for s in (Q, H, U, R)}
        assert all(q.counts[s] == n for s, n in counted.items())
    # A job whose dependency failed never stays waiting.
    for j in q.jobs.values():
        assert not any(m.final.get(d) in (F, A, K) for d, k in m.deps[j.id] if k == "afterok")


def test_next_after_names_the_first_job_of_the_next_pass() -> None:
    q = Queue(maxprocs=2, maxmem=None)
    x = job(1, procs=2)
    q.add(x, 0)
    q.schedule(0)
    assert next_after(q, x) is None
    q.add(job(2, procs=2), 0)
    q.add(job(3, procs=1, prio=5), 0)
    nxt = next_after(q, x)
    assert nxt is not None
    assert (nxt[0].id, nxt[1]) == (3, False)  # priority first, whatever x's outcome
    child = job(4, state=H, prio=9)
    q.add(child, 0, unmet=(1,))
    nxt = next_after(q, x)
    assert nxt is not None
    assert (nxt[0].id, nxt[1]) == (4, True)  # x's dependent: only if x succeeds


def test_an_armed_job_is_kept_out_of_the_pass_until_disarmed() -> None:
    q = Queue(maxprocs=1, maxmem=None)
    x, y = job(1), job(2)
    q.add(x, 0)
    q.add(y, 0)
    q.schedule(0)
    q.arm(y)
    assert next_after(q, x, armed=[y]) == (y, False)
    q.finish(x, S, 1)
    assert q.schedule(1) == []  # its keeper starts it, not the pass
    q.start_armed(y, 1)
    assert y.state is R
    assert q.used_procs == 1
    z = job(3)
    q.add(z, 1)
    q.arm(z)
    q.disarm(z)
    q.finish(y, S, 2)
    assert [j.id for j in q.schedule(2)] == [3]


@settings(max_examples=400, deadline=None)
@given(
    st.integers(2, 8),
    st.sampled_from([None, 1000]),
    st.sampled_from([0, 2, 4]),
    st.lists(
        st.tuples(
            st.sampled_from([1, 1, 1, 2, 3]),  # procs: mostly alike, as real queues are
            st.sampled_from([0, 0, 200, 500]),  # mem
            st.integers(-1, 1),  # priority
            st.one_of(st.none(), st.integers(0, 30)),  # a dependency on an earlier job
            st.booleans(),  # submitted after the first pass (so it may wait on a runner)
            st.sampled_from([AFTEROK, AFTEROK, AFTERANY, AFTERNOTOK, AFTER]),  # its kind
            st.sampled_from([0, 0, 1, 2]),  # gpus
        ),
        min_size=2,
        max_size=25,
    ),
    ends,
)
def test_armed_tokens_start_what_the_passes_would(
    maxprocs: int,
    maxmem: int | None,
    maxgpus: int,
    specs: list[tuple[int, int, int, int | None, bool, int, int]],
    end_order: list[tuple[int, bool]],
) -> None:
    """Several jobs running and a queue of every shape, priority and dependency behind
    them: whatever order the running jobs end in, the tokens start what the passes
    after those ends would have started first."""
    q = Queue(maxprocs=maxprocs, maxmem=maxmem, maxgpus=maxgpus)
    late = []

    def add(j: Job, deps: tuple[int, ...], kind: int) -> None:
        waits = [d for d in deps if d in q.jobs and not (kind == AFTER and q.jobs[d].state is R)]
        j.state = H if waits else Q
        # the queue reads a job's conditions back from these when it walks up the graph
        j.depends = deps if kind == AFTEROK else ()
        j.dependency = "" if kind == AFTEROK or not deps else f"{NAMES[kind]}:{deps[0]}"
        if kind == AFTEROK:
            q.add(j, 0, unmet=waits)
        else:
            q.add(j, 0, conds=[(d, kind) for d in waits])

    for i, (procs, mem, prio, dep, after_pass, kind, gpus) in enumerate(specs, start=1):
        if procs > maxprocs or gpus > maxgpus:
            continue
        j = job(i, procs, mem, prio=prio, gpus=gpus)
        # a dependency on a job that ended is left out: the parents here are all active
        deps = (dep % (i - 1) + 1,) if dep is not None and i > 1 else ()
        if after_pass:
            late.append((j, deps, kind))
            continue
        add(j, deps, kind)
    q.schedule(0)
    for j, deps, kind in late:
        add(j, deps, kind)
    check_arm_plan(q, 1, end_order)


def test_arm_plan_with_several_runners_arms_the_queue_head_in_order() -> None:
    q = Queue(maxprocs=2, maxmem=None)
    last = 2 * ARM_DEPTH + 5
    for i in range(1, last + 1):
        q.add(job(i, prio=1 if i == last else 0), 0)
    runners = q.schedule(0)
    assert [j.id for j in runners] == [last, 1]  # priority first
    plan = arm_plan(q, runners)
    assert [e.job.id for e in plan] == list(range(2, 2 + 2 * ARM_DEPTH))  # ARM_DEPTH each
    assert all(e.after is None and e.covered for e in plan)
    for e in plan[:3]:
        q.arm(e.job)
    # armed jobs stay in their place; planning more continues behind them
    more = arm_plan(q, runners, [e.job for e in plan[:3]], 2)
    assert [e.job.id for e in more] == [2, 3, 4, 5, 6]
    assert [e.job.id for e in arm_plan(q, runners, [e.job for e in plan[:3]], 0)] == [2, 3, 4]
    urgent = job(last + 1, prio=5)
    q.add(urgent, 0)  # comes before the armed ones: the plan changes at its head
    assert [e.job.id for e in arm_plan(q, runners, [e.job for e in plan[:3]], 0)] == [
        last + 1,
        2,
        3,
    ]


def test_arm_plan_entries_never_grow_along_the_list() -> None:
    """A job started from a token takes the next token when it ends, and until the daemon
    hears of it, its own reservation is all it is known to hold: the next must fit in it."""
    q = Queue(maxprocs=4, maxmem=None)
    q.add(job(1, procs=2), 0)
    q.add(job(2, procs=2), 0)
    runners = q.schedule(0)
    q.add(job(3, procs=1), 0)
    q.add(job(4, procs=2), 0)
    q.add(job(5, procs=1), 0)
    assert [e.job.id for e in arm_plan(q, runners)] == [3]  # 4 is larger than 3: stop


def test_arm_plan_stops_before_what_an_end_could_make_ready_first() -> None:
    q = Queue(maxprocs=2, maxmem=None)
    q.add(job(1), 0)
    q.add(job(2), 0)
    runners = q.schedule(0)
    q.add(job(3), 0)
    q.add(job(4, state=H), 0, unmet=(1,))  # ready the moment 1 succeeds, before 5
    q.add(job(5), 0)
    assert [e.job.id for e in arm_plan(q, runners)] == [3]
    q.add(job(6, state=H), 0, unmet=(3,))  # an entry's dependent counts too
    q2 = Queue(maxprocs=2, maxmem=None)
    for j in (job(1), job(2)):
        q2.add(j, 0)
    r2 = q2.schedule(0)
    q2.add(job(3), 0)
    q2.add(job(4), 0)
    q2.add(job(5, state=H), 0, unmet=(3,))
    q2.add(job(6), 0)
    assert [e.job.id for e in arm_plan(q2, r2)] == [3, 4]


def test_could_start_counts_armed_jobs_as_ready() -> None:
    q = Queue(maxprocs=2, maxmem=None)
    q.add(job(1), 0)
    q.add(job(2), 0)
    q.schedule(0)
    y = job(3)
    q.add(y, 0)
    q.arm(y)
    assert not could_start(q, [y])  # nothing is free
    q.finish(q.jobs[1], S, 1)
    assert q.schedule(1) == []  # the pass does not see it ...
    assert could_start(q, [y])  # ... but it would start if taken back
    assert not could_start(q, [])


def test_dependency_kinds() -> None:
    q = Queue(maxprocs=8, maxmem=None)
    q.add(job(1), 0)
    q.add(job(2, state=U), 0)
    q.add(job(3, state=U), 0)
    q.add(job(4, state=H), 0, conds=[(1, AFTERANY)])
    q.add(job(5, state=H), 0, conds=[(1, AFTERNOTOK)])
    q.add(job(6, state=H), 0, conds=[(2, AFTERNOTOK)])
    q.add(job(7, state=H), 0, conds=[(3, AFTER)])
    q.add(job(8, state=H), 0, unmet=[2], conds=[(3, AFTERANY)])
    assert [j.id for j in q.schedule(0)] == [1]
    q.finish(q.jobs[1], F, 1)
    assert q.jobs[4].state is Q  # afterany: ended, however
    assert q.jobs[5].state is Q  # afternotok: ended other than in S
    q.release(2, 1)
    q.release(3, 1)
    assert q.jobs[7].state is H  # after: 3 has not started yet
    assert [j.id for j in q.schedule(1)] == [2, 3, 4, 5, 7]  # 7 is ready once 3 starts
    q.finish(q.jobs[2], S, 2)
    assert 6 not in q.jobs
    assert q.changes[-1].job.reason == "dependency 2 ended in S (afternotok)"
    assert q.jobs[8].state is H  # afterok:2 holds, afterany:3 not yet
    q.finish(q.jobs[3], F, 3)
    assert q.jobs[8].state is Q
    assert q.graph.edges_of(3) == []
    assert q.graph.children_of(2) == []


def test_a_kill_of_a_waiting_job_releases_its_after_and_afterany_children() -> None:
    q = Queue(maxprocs=1, maxmem=None)
    q.add(job(1, state=U), 0)
    q.add(job(2, state=H), 0, conds=[(1, AFTER)])
    q.add(job(3, state=H), 0, conds=[(1, AFTERANY)])
    q.add(job(4, state=H), 0, unmet=[1])
    q.kill(1, 1)
    assert (q.jobs[2].state, q.jobs[3].state) == (Q, Q)
    assert 4 not in q.jobs


def test_next_after_and_the_kinds_of_the_runners_children() -> None:
    q = Queue(maxprocs=1, maxmem=None)
    x = job(1)
    q.add(x, 0)
    q.schedule(0)
    q.add(job(2, state=H), 0, conds=[(1, AFTERANY)])
    assert next_after(q, x) == (q.jobs[2], False)  # whatever x's outcome
    plan = arm_plan(q, [x])
    assert (plan[0].after, plan[0].need_success) == (1, False)  # on x's own end only
    q.add(job(3), 0)
    q.add(job(0 + 4, state=H, prio=5), 0, conds=[(1, AFTERNOTOK)])
    # 4 comes first if x fails, and cannot be armed; if x succeeds, 2 comes first
    assert next_after(q, x) == (q.jobs[2], True)
