"""sjq._record: the frozen slotted record the start-up-critical modules use instead of
dataclasses (which compile code at import; tests/client/test_startup.py guards that)."""

from __future__ import annotations

import dataclasses
import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sjq._record import fields, record


@record
class Point:
    x: int
    y: int = 0
    label: str | None = None


def test_construction_by_position_keyword_and_default() -> None:
    assert Point(1) == Point(x=1, y=0, label=None)
    assert Point(1, 2, "a") == Point(label="a", y=2, x=1)
    assert Point(1, label="b").y == 0


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((), {}, "missing argument 'x'"),
        ((1, 2, 3, 4), {}, "takes 3 arguments, got 4"),
        ((1,), {"x": 2}, "multiple values for 'x'"),
        ((1,), {"z": 2}, "unexpected arguments z"),
    ],
)
def test_bad_construction_is_a_type_error(
    args: tuple[object, ...], kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(TypeError, match=message):
        Point(*args, **kwargs)  # type: ignore[arg-type, call-arg, misc]


def test_records_are_frozen_and_slotted() -> None:
    p = Point(1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.x = 2  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        del p.y  # type: ignore[misc]
    assert not hasattr(p, "__dict__")
    assert fields(Point) == ("x", "y", "label")


def test_match_replace_and_repr() -> None:
    match Point(3, 4):
        case Point(x, y):
            assert (x, y) == (3, 4)
        case _:
            pytest.fail("no match")
    assert Point(1)._replace(y=5) == Point(1, 5)  # type: ignore[attr-defined]
    assert repr(Point(1, label="a")) == "Point(x=1, y=0, label='a')"
    assert Point(1) != (1, 0, None)  # equal only to its own kind


@given(st.integers(), st.integers(), st.none() | st.text())
def test_equality_hash_and_pickle_agree(x: int, y: int, label: str | None) -> None:
    p = Point(x, y, label)
    q = pickle.loads(pickle.dumps(p))
    assert q == p
    assert hash(q) == hash(p)
    assert {p: 1}[q] == 1
