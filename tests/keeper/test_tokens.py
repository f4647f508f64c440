"""The arm-token pipe (sjq.keeper.tokens): a real pipe, and real processes taking from it."""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Iterator

import pytest

from sjq.keeper.tokens import ArmPipe, take_token, token_level


@pytest.fixture
def pipe() -> Iterator[ArmPipe]:
    p = ArmPipe()
    yield p
    for fd in (p.read_fd, p.write_fd):
        with contextlib.suppress(OSError):  # closed by the test
            os.close(fd)


def test_tokens_come_out_first_in_first_out(pipe: ArmPipe) -> None:
    assert pipe.level() == 0
    assert take_token(pipe.read_fd) is None
    pipe.put([5, 1, 2**64 - 1])
    pipe.put([])
    pipe.put([7])
    assert pipe.level() == token_level(pipe.read_fd) == 4
    assert take_token(pipe.read_fd) == 5
    assert pipe.level() == 3
    assert pipe.drain() == [1, 2**64 - 1, 7]
    assert pipe.level() == 0
    assert pipe.drain() == []


def test_max_tokens_go_in_with_one_write(pipe: ArmPipe) -> None:
    seqs = list(range(1, ArmPipe.MAX + 1))
    pipe.put(seqs)
    assert pipe.level() == ArmPipe.MAX
    assert pipe.drain() == seqs
    assert ArmPipe.MAX * struct.calcsize("!Q") <= 4096, "within PIPE_BUF: one atomic write"


def test_a_pipe_whose_daemon_is_gone_gives_no_token(pipe: ArmPipe) -> None:
    pipe.put([3])
    os.close(pipe.write_fd)
    assert take_token(pipe.read_fd) == 3
    assert take_token(pipe.read_fd) is None  # end of file, not an error


def test_both_ends_are_private_to_the_daemon_and_its_keepers(pipe: ArmPipe) -> None:
    for fd in (pipe.read_fd, pipe.write_fd):
        assert not os.get_inheritable(fd), "a job must not inherit the pipe"
        assert not os.get_blocking(fd)


def test_keepers_racing_for_tokens_take_each_exactly_once(pipe: ArmPipe) -> None:
    """Several processes take from one pipe at once, as keepers whose jobs end together do:
    every token is taken by exactly one of them, and each sees its own in pipe order."""
    seqs = list(range(1, ArmPipe.MAX + 1))
    children = []
    go_r, go_w = os.pipe()
    for _ in range(4):
        out_r, out_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 1
            try:
                os.close(out_r)
                os.read(go_r, 1)  # all start together
                got = []
                while (t := take_token(pipe.read_fd)) is not None:
                    got.append(t)
                os.write(out_w, b"".join(struct.pack("!Q", t) for t in got))
                code = 0
            finally:
                os._exit(code)
        os.close(out_w)
        children.append((pid, out_r))
    pipe.put(seqs)
    os.write(go_w, b"x" * 4)
    taken: list[list[int]] = []
    for pid, out_r in children:
        with os.fdopen(out_r, "rb") as f:
            data = f.read()
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        taken.append([t for (t,) in struct.iter_unpack("!Q", data)])
    os.close(go_r)
    os.close(go_w)
    every = sorted(t for got in taken for t in got)
    assert every == seqs, "each token once, none lost"
    for got in taken:
        assert got == sorted(got), "each taker sees the pipe's order"
