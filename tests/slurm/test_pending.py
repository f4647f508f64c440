"""sjq.slurm.pending, pure: jobs go to sbatch in order, an array's waiting elements together,
each exactly once; and an array with a limit never has more elements that Slurm could run at
once than its limit (a Hypothesis property over any interleaving of hand-overs, submissions,
put-backs and ends)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sjq.slurm.pending import Pending, Unit


def test_singles_in_order_and_an_arrays_elements_together() -> None:
    p = Pending(lambda array: None)
    p.add(1)
    for i in (2, 3, 4):
        p.add(i, array=2)
    p.add(5)
    p.add(6, array=2)  # joins the elements still waiting
    assert [u.ids for u in iter(p.take, None)] == [[1], [2, 3, 4, 6], [5]]
    assert len(p) == 0


def test_a_limited_array_waits_for_room() -> None:
    limits = {10: 2}
    p = Pending(limits.get)
    for i in range(10, 15):
        p.add(i, array=10)
    u = p.take()
    assert u is not None
    assert (u.ids, u.room) == ([10, 11, 12, 13, 14], 2)
    p.put_back([13, 14], 10)  # the batch held three: these wait, not counted
    assert p.in_slurm(10) == 3
    assert p.take() is None  # no room: 3 of 2 are in Slurm's hands
    assert 13 in p
    p.gone(10)
    assert p.take() is None  # 2 of 2
    p.gone(11)
    u = p.take()
    assert u is not None
    assert (u.ids, u.room) == ([13, 14], 1)


def test_at_most_so_many_elements_at_a_time() -> None:
    p = Pending(lambda a: None)
    for i in range(1, 8):
        p.add(i, array=1)
    p.add(8)
    assert [u.ids for u in iter(lambda: p.take(3), None)] == [[1, 2, 3], [4, 5, 6], [7], [8]]


def test_elements_that_must_go_alone() -> None:
    p = Pending(lambda a: None)
    p.put_back([3, 4], 3, alone=True)
    p.add(5, array=3)
    assert [u.ids for u in iter(p.take, None)] == [[3], [4], [5]]


def test_discarded_jobs_are_not_taken() -> None:
    p = Pending(lambda a: None)
    for i in (1, 2, 3):
        p.add(i, array=1)
    p.add(4)
    p.discard(2)
    p.discard(4)
    assert [u.ids for u in iter(p.take, None)] == [[1, 3]]


ops = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.sampled_from([0, 100, 200, 300])),
        st.tuples(st.just("take"), st.integers(0, 5)),  # how many of the unit go (rest back)
        st.tuples(st.just("end"), st.integers(0, 1000)),  # one of the sent jobs ends
    ),
    max_size=120,
)


@given(ops)
def test_limits_hold_and_every_job_goes_once(program: list[tuple[str, int]]) -> None:
    limits = {100: 1, 200: 3}  # 300: no limit
    p = Pending(limits.get)
    next_id = 1
    added: list[int] = []
    sent: dict[int, int] = {}  # job -> array, submitted and not ended
    units: list[tuple[Unit, set[int]]] = []  # submitted units (room) and their live ids
    taken: list[int] = []

    def check_capacity(array: int) -> None:
        limit = limits.get(array)
        if limit is None:
            return
        live = [(u, ids) for u, ids in units if ids and sent.get(next(iter(ids))) == array]
        could_run = sum(
            min(len(ids), u.room if u.room is not None else len(ids)) for u, ids in live
        )
        assert could_run <= limit

    for op, arg in program:
        if op == "add":
            p.add(next_id, arg)
            added.append(next_id)
            next_id += 1
        elif op == "take":
            u = p.take(arg + 2)
            if u is None:
                continue
            assert u.ids == sorted(u.ids)
            for i in u.ids:
                assert i in added
                assert i not in sent
            go, back = u.ids[: max(1, arg)], u.ids[max(1, arg) :]
            arrays = {_array(program, i) for i in u.ids}
            assert len(arrays) == 1  # one array (or one single job) per unit
            array = arrays.pop()
            if back:
                p.put_back(back, array)
            unit = Unit(go, u.room)
            units.append((unit, set(go)))
            for i in go:
                sent[i] = array
                taken.append(i)
            if u.room is not None:
                assert u.room >= 1
            check_capacity(array)
        elif op == "end" and sent:
            jobid = sorted(sent)[arg % len(sent)]
            del sent[jobid]
            for _, ids in units:
                ids.discard(jobid)
            p.gone(jobid)
    # Drain: end everything, take what is left.
    while True:
        for jobid in list(sent):
            del sent[jobid]
            for _, ids in units:
                ids.discard(jobid)
            p.gone(jobid)
        u = p.take()
        if u is None:
            break
        for i in u.ids:
            taken.append(i)
            sent[i] = _array(program, i)
    assert sorted(taken) == added  # every job exactly once
    assert len(p) == 0


def _array(program: list[tuple[str, int]], jobid: int) -> int:
    """The array the program's ``jobid``-th add named."""
    adds = [arg for op, arg in program if op == "add"]
    return adds[jobid - 1]
