"""Hypothesis: any bytes give only events, chunking never matters, both directions round-trip."""

from __future__ import annotations

from typing import get_args

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sjq.protocol import (
    NEED_DATA,
    BadRequest,
    Closed,
    Data,
    Error,
    Exit,
    Hold,
    Info,
    Kill,
    Ok,
    Pause,
    Ping,
    QueueInfo,
    Release,
    Reply,
    ReplyReader,
    Request,
    Resume,
    ServerConnection,
    ServerEvent,
    Shutdown,
    Status,
    Stop,
    Submit,
    SubmitOptions,
    Wait,
    encode_reply,
    encode_request,
)
from sjq.protocol._array import MAX_INDEX
from sjq.protocol._dependency import KINDS
from sjq.protocol._submit import shebang_has_cr
from sjq.protocol._syntax import MAX_TIME

# Enough examples to find framing bugs, few enough that the protocol suite stays well
# under 20 s; no deadline, since CI machines vary.
PROFILE = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Small limits so that generated input reaches them.
MAX_LINE = 40
MAX_SRC = 60

# Fragments that steer random bytes into every parser state.
_TOKENS = [
    b"SUBMIT\r\n",
    b"submit\n",
    b"SRC 3\r\n",
    b"SRC 0\n",
    b"SRC 12\n",
    b"SRC 61\n",
    b"SRC x\n",
    b"#!/bin/sh\n",
    b"PING\r\n",
    b"EXIT\n",
    b"STOP x\n",
    b"STATUS 1\n",
    b"KILL 2\r\n",
    b"INFO 1:2\n",
    b"WAIT 3\n",
    b"ENV A=1,B=2\n",
    b"PROCS 2\n",
    b"MEM lots\n",
    b"HOLD\n",
    b"PATTERNS\n",
    b"\r\n",
    b"\n",
    b"\r",
    b" ",
    b"\xff",
    b"x" * 41,
]
streams = st.lists(st.sampled_from(_TOKENS) | st.binary(max_size=12), max_size=25).map(b"".join)


def _cuts(data: bytes) -> st.SearchStrategy[list[bytes]]:
    """`data` cut into chunks at arbitrary places."""
    points = st.lists(st.integers(0, len(data)), max_size=8).map(sorted)
    return points.map(lambda p: [data[a:b] for a, b in zip([0, *p], [*p, len(data)], strict=True)])


chunked_streams = streams.flatmap(lambda data: st.tuples(st.just(data), _cuts(data)))


def _drain(conn: ServerConnection, events: list[ServerEvent]) -> None:
    while (event := conn.next_event()) is not NEED_DATA:
        events.append(event)
        if isinstance(event, Closed):
            return


def _run(chunks: list[bytes]) -> list[ServerEvent]:
    """Events for `chunks` then EOF, up to the first Closed."""
    conn = ServerConnection(max_line=MAX_LINE, max_src=MAX_SRC)
    events: list[ServerEvent] = []
    for chunk in [*(c for c in chunks if c), b""]:  # an empty chunk would mean EOF
        conn.receive_data(chunk)
        _drain(conn, events)
        if events and events[-1] == Closed():
            break
    return events


# Every request kind there is (a new verb cannot be left out of this check), and the rest.
_EVENT_TYPES = (*get_args(Request), BadRequest, Closed)


@PROFILE
@given(chunked_streams)
def test_any_bytes_give_only_events_and_end_closed(case: tuple[bytes, list[bytes]]) -> None:
    _, chunks = case
    events = _run(chunks)
    assert all(isinstance(e, _EVENT_TYPES) for e in events)
    assert events[-1] == Closed()  # after EOF the connection always ends
    assert all(not (isinstance(e, BadRequest) and e.fatal) for e in events[:-2])


@PROFILE
@given(chunked_streams)
def test_chunking_never_changes_the_events(case: tuple[bytes, list[bytes]]) -> None:
    data, chunks = case
    whole = _run([data])
    assert _run(chunks) == whole
    assert _run([data[i : i + 1] for i in range(len(data))]) == whole


@PROFILE
@given(st.binary(max_size=200))
def test_arbitrary_bytes_with_default_limits(data: bytes) -> None:
    conn = ServerConnection()
    if data:
        conn.receive_data(data)
    conn.receive_data(b"")
    for _ in range(len(data) + 2):
        if conn.next_event() == Closed():
            return
    raise AssertionError("no Closed after EOF")


# --- round trips -------------------------------------------------------------------

ids = st.integers(1, 2**63 - 1)
id_tuples = st.lists(ids, min_size=1, max_size=5).map(tuple)
# Any text a line can carry: no LF (ends the line), no NUL (refused), no lone surrogates.
line_text = st.text(
    st.characters(blacklist_characters="\n\x00", blacklist_categories=["Cs"]), min_size=1
)
env_names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True)
env_values = st.text(
    st.characters(blacklist_characters="\n\x00", blacklist_categories=["Cs"])
) | st.sampled_from(["a,B=c", "x,", ",", "1,2", "p=q,r=s"])

submit_options = st.builds(
    SubmitOptions,
    mem=st.none() | st.integers(0, 2**63 - 1),
    procs=st.none() | st.integers(1, 2**63 - 1),
    depends=st.lists(ids, max_size=4).map(tuple),
    stdout=st.none() | line_text,
    stderr=st.none() | line_text,
    env=st.none() | st.lists(st.tuples(env_names, env_values), max_size=4).map(tuple),
    cwd=st.none() | line_text,
    name=st.none() | line_text.filter(lambda t: "\t" not in t),
    uid=st.none() | st.integers(0, 2**32 - 2),
    gid=st.none() | st.integers(0, 2**32 - 2),
    hold=st.booleans(),
    time_limit=st.none()
    | st.floats(min_value=0, max_value=MAX_TIME, exclude_min=True, allow_nan=False),
    priority=st.integers(-(2**63) + 1, 2**63 - 1),
    dependency=st.lists(
        st.tuples(
            st.sampled_from(KINDS),
            st.lists(
                st.tuples(ids, st.integers(0, 50)).map(
                    lambda r: (min(r[0], 2**63 - 1 - r[1]), min(r[0], 2**63 - 1 - r[1]) + r[1])
                ),
                min_size=1,
                max_size=3,
            ).map(tuple),
        ),
        max_size=3,
    ).map(tuple),
    patterns=st.booleans(),
    gpus=st.none() | st.integers(0, 2**63 - 1),
    retry=st.none() | st.integers(0, 2**63 - 1),
    retry_mem=st.none() | st.floats(min_value=1, max_value=1000, allow_nan=False),
)
# ARRAY and ENTRY: indexes alone, entries alone, or both (as many), each with a limit or not.
array_indexes = st.lists(st.integers(0, MAX_INDEX), min_size=1, max_size=6, unique=True).map(
    lambda xs: tuple(sorted(xs))
)
array_parts = st.one_of(
    st.just((None, None, None)),
    st.tuples(array_indexes, st.none() | st.integers(1, 2**63 - 1), st.none()),
    st.tuples(
        st.none(),
        st.none() | st.integers(1, 99),
        st.lists(line_text, min_size=1, max_size=4).map(tuple),
    ),
    array_indexes.flatmap(
        lambda ix: st.tuples(
            st.just(ix),
            st.none() | st.integers(1, 5),
            st.lists(line_text, min_size=len(ix), max_size=len(ix)).map(tuple),
        )
    ),
)
submit_options = st.tuples(submit_options, array_parts).map(
    lambda t: t[0]._replace(array=t[1][0], array_limit=t[1][1], entries=t[1][2])
)
requests: st.SearchStrategy[Request] = st.one_of(
    st.just(Ping()),
    st.just(Exit()),
    st.just(Shutdown()),
    st.just(Stop()),
    st.builds(Status, st.none() | ids),
    st.builds(Kill, ids),
    st.builds(Release, ids),
    st.builds(Hold, ids),
    st.builds(Info, st.just(()) | id_tuples),
    st.builds(Wait, id_tuples),
    st.just(Pause()),
    st.just(Resume()),
    st.just(QueueInfo()),
    # a script the daemon can run: #! first, and no CR ending that line
    st.builds(
        Submit,
        submit_options,
        st.binary().map(lambda b: b"#!" + b).filter(lambda s: not shebang_has_cr(s)),
    ),
)


@PROFILE
@given(st.lists(requests, min_size=1, max_size=4), st.data())
def test_encode_request_round_trips(batch: list[Request], data: st.DataObject) -> None:
    wire = b"".join(encode_request(r) for r in batch)
    chunks = data.draw(_cuts(wire))
    conn = ServerConnection()
    events: list[ServerEvent] = []
    for chunk in chunks:
        if events and events[-1] == Closed():
            break
        if chunk:
            conn.receive_data(chunk)
            _drain(conn, events)
    # Nothing is read after EXIT, SHUTDOWN or STOP: the daemon closes.
    ends = [i for i, r in enumerate(batch) if isinstance(r, Exit | Shutdown | Stop)]
    expected: list[ServerEvent] = list(batch)
    if ends:
        expected = [*batch[: ends[0] + 1], Closed()]
    assert events == expected


reply_text = st.text(st.characters(blacklist_characters="\r\n", blacklist_categories=["Cs"]))
replies: st.SearchStrategy[tuple[Reply, bool]] = st.one_of(
    st.tuples(st.builds(Ok, st.none() | reply_text), st.just(False)),
    st.tuples(st.builds(Data, st.binary()), st.just(True)),
    st.tuples(st.builds(Error, reply_text), st.booleans()),
)


@PROFILE
@given(st.lists(replies, min_size=1, max_size=6), st.data())
def test_reply_reader_round_trips(batch: list[tuple[Reply, bool]], data: st.DataObject) -> None:
    wire = b"".join(encode_reply(r) for r, _ in batch)
    chunks = iter(data.draw(_cuts(wire)))
    reader = ReplyReader()
    got: list[Reply] = []
    for _, expect_data in batch:
        while (reply := reader.next_reply(expect_data)) is NEED_DATA:
            reader.receive_data(next(c for c in chunks if c))
        got.append(reply)
    assert got == [r for r, _ in batch]
