"""DEPENDENCY's and ARRAY's grammars: Hypothesis round trips, any text gives clauses or a
message (never an exception), and the examples of docs/protocol.md."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sjq.protocol._array import MAX_ARRAY, MAX_INDEX, format_array, parse_array
from sjq.protocol._dependency import KINDS, format_dependency, parse_dependency

indexes = st.lists(st.integers(0, MAX_INDEX), min_size=1, max_size=30, unique=True).map(
    lambda xs: tuple(sorted(xs))
)


@given(indexes, st.none() | st.integers(1, 10**6))
def test_array_text_reads_back(ix: tuple[int, ...], limit: int | None) -> None:
    assert parse_array(format_array(ix, limit)) == (ix, limit)


@given(st.text(st.sampled_from("0123456789-,:% x")))
def test_any_array_spec_gives_indexes_or_a_message(text: str) -> None:
    parsed = parse_array(text)
    if isinstance(parsed, str):
        return
    ix, limit = parsed
    assert ix is None or (list(ix) == sorted(set(ix)) and 0 < len(ix) <= MAX_ARRAY)
    assert ix is not None or limit is not None
    assert parse_array(format_array(ix, limit)) == parsed


@given(st.integers(0, 1000), st.integers(0, 1000), st.integers(1, 50))
def test_a_stepped_range_is_slurms(first: int, span: int, step: int) -> None:
    parsed = parse_array(f"{first}-{first + span}:{step}")
    assert parsed == (tuple(range(first, first + span + 1, step)), None)


clauses = st.lists(
    st.tuples(
        st.sampled_from(KINDS),
        st.lists(
            st.tuples(st.integers(1, 10**9), st.integers(0, 20)).map(lambda t: (t[0], t[0] + t[1])),
            min_size=1,
            max_size=4,
        ).map(tuple),
    ),
    min_size=1,
    max_size=4,
).map(tuple)


@given(clauses)
def test_dependency_text_reads_back(
    cs: tuple[tuple[str, tuple[tuple[int, int], ...]], ...],
) -> None:
    assert parse_dependency(format_dependency(cs)) == cs


@given(st.text(st.sampled_from("afterokanyn:,-?+_ 0123456789AFTER")))
def test_any_dependency_text_gives_clauses_or_a_message(text: str) -> None:
    parsed = parse_dependency(text)
    if isinstance(parsed, str):
        return
    assert parsed
    assert all(kind in KINDS and ranges for kind, ranges in parsed)
    assert parse_dependency(format_dependency(parsed)) == parsed


def test_bare_ids_mean_afterok_and_kinds_ignore_case() -> None:
    assert parse_dependency("3:4") == (("afterok", ((3, 3), (4, 4))),)
    assert parse_dependency(" AfterAny:5 , 6") == (
        ("afterany", ((5, 5),)),
        ("afterok", ((6, 6),)),
    )
