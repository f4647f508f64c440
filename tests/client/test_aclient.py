"""AsyncClient against a real daemon: every method, pipelining, cancellation, auto-start;
transport failures against fake daemons."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import pytest_asyncio
from hypothesis import given, settings
from hypothesis import strategies as st
from sjq_client import (
    AsyncClient,
    AsyncJob,
    Client,
    ConnectionLost,
    DaemonNotRunning,
    JobNotFinished,
    JobTimeout,
    ProtocolError,
    RequestRejected,
)
from sjq_client._calls import IDS_PER_LINE, chunks
from support import Daemon, Gate, Home

from sjq.jobs import JobState
from sjq.protocol import Info, encode_request

S, F, K, U, R, A = (
    JobState.SUCCESS,
    JobState.FAIL,
    JobState.KILLED,
    JobState.USERHOLD,
    JobState.RUNNING,
    JobState.ABORT,
)


@pytest.fixture(autouse=True)
def _no_user_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rc = tmp_path / "empty.rc"
    rc.touch()
    monkeypatch.setenv("SJQ_CONFIG", str(rc))
    for name in list(os.environ):
        if name.startswith("SJQ_") and name != "SJQ_CONFIG":
            monkeypatch.delenv(name)


@pytest_asyncio.fixture
async def client(daemon: Daemon, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[AsyncClient]:
    monkeypatch.chdir(daemon.jobs_dir)  # the default cwd of jobs
    async with AsyncClient(daemon.socket, autostart=False) as c:
        yield c


@pytest.mark.asyncio
async def test_submit_wait_and_read_back(client: AsyncClient, daemon: Daemon) -> None:
    text = await client.submit("#!/bin/sh\necho text\n", name="text")
    command = await client.submit(
        command=["printf", "%s|", "a b"], procs=2, mem="200M", time_limit="1h", priority=3
    )
    bad = await client.submit(command=["false"])
    assert isinstance(text, AsyncJob)
    assert await client.wait([text, command, bad.id]) == {text.id: S, command.id: S, bad.id: F}
    assert (daemon.jobs_dir / f"{text.id}.stdout").read_text() == "text\n"
    assert (daemon.jobs_dir / f"{command.id}.stdout").read_text() == "a b|"
    info = await command.info()
    assert (info.procs, info.mem, info.time_limit, info.priority, info.name) == (
        2,
        200 * 1024**2,
        3600.0,
        3,
        "printf",
    )
    assert (await bad.info()).exit_code == 1
    assert await bad.successful() is False
    assert await text.successful() is True
    assert [i.id for i in await client.status()] == [text.id, command.id, bad.id]
    assert [i.id for i in await client.status(states=[F])] == [bad.id]
    assert await client.ping() == {S: 2, F: 1}


@pytest.mark.asyncio
async def test_kill_hold_release_state_and_job(
    client: AsyncClient, daemon: Daemon, gate: Callable[..., Gate]
) -> None:
    g = gate()
    running = await client.submit("#!/bin/sh\n" + g.wait)
    daemon.wait_state(running.id, "R")
    waiting = await client.submit(command=["true"], after=[running])
    queued = await client.submit(command=["true"], procs=2)
    await client.hold([waiting, queued])
    assert (await waiting.state(), await queued.state()) == (U, U)
    await client.release(queued.id)
    assert client.job(running.id) == running
    assert hash(client.job(running.id)) == hash(running)
    assert repr(running) == f"<AsyncJob {running.id}>"
    assert int(running) == running.id
    assert not await running.ready()
    with pytest.raises(JobNotFinished, match="has not ended yet"):
        await running.successful()
    await running.cancel()
    assert await running.wait(10) is K
    assert await client.state(waiting) is A
    assert await queued.wait(10) is S
    await client.kill([999])  # unknown ids are ignored, as the daemon does
    with pytest.raises(RequestRejected, match="unknown job 999"):
        await client.state(999)
    with pytest.raises(RequestRejected, match="unknown job 999"):
        await client.job(999).info()
    with pytest.raises(RequestRejected, match="PROCS 64"):
        await client.submit(command=["true"], procs=64)


@pytest.mark.asyncio
async def test_wait_timeout_progress_and_long_id_lists(
    client: AsyncClient, gate: Callable[..., Gate]
) -> None:
    g = gate()
    ok = await client.submit(command=["true"])
    slow = await client.submit("#!/bin/sh\n" + g.wait)
    assert await client.wait([]) == {}
    with pytest.raises(JobTimeout) as caught:
        await client.wait([ok, slow], timeout=0.2)
    assert caught.value.pending == (slow.id,)
    assert await ok.wait(timeout=0) is S  # an ended job needs no time
    seen: list[tuple[int, JobState]] = []
    g.open()
    assert await client.wait([slow, ok], progress=lambda j, s: seen.append((j, s))) == {
        slow.id: S,
        ok.id: S,
    }
    assert seen == [(slow.id, S), (ok.id, S)]
    with pytest.raises(RequestRejected, match="unknown job 999"):
        await client.wait([ok, 999])
    ids = [ok.id, slow.id] * IDS_PER_LINE  # more than one WAIT line holds
    assert await client.wait(ids, timeout=10) == {ok.id: S, slow.id: S}


class Recorder:
    """A proxy between client and daemon that records each chunk and its direction."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.chunks: list[tuple[str, bytes]] = []
        self.handlers: list[asyncio.Task[None]] = []
        self.replies_flow = asyncio.Event()  # clear it to hold the daemon's replies back
        self.replies_flow.set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.append(task)
        up_reader, up_writer = await asyncio.open_unix_connection(self.target)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, way: str) -> None:
            while data := await src.read(65536):
                self.chunks.append((way, data))
                if way == "<":
                    await self.replies_flow.wait()
                dst.write(data)
                await dst.drain()
            dst.close()

        try:
            with contextlib.suppress(OSError):
                await asyncio.gather(pump(reader, up_writer, ">"), pump(up_reader, writer, "<"))
        finally:
            writer.close()
            up_writer.close()

    async def done(self) -> None:
        """Wait for every proxied connection to end (the client has closed its own)."""
        async with asyncio.timeout(10):
            await asyncio.gather(*self.handlers, return_exceptions=True)

    def lines_sent(self) -> list[bytes]:
        return b"".join(d for way, d in self.chunks if way == ">").splitlines()

    def turns(self) -> str:
        """The directions of the chunks, runs merged: ``><`` is one round trip."""
        out = ""
        for way, _ in self.chunks:
            if not out.endswith(way):
                out += way
        return out


@pytest.mark.asyncio
async def test_long_id_lists_are_split_and_pipelined_in_one_round_trip(
    daemon: Daemon, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(daemon.jobs_dir)
    recorder = Recorder(daemon.socket)
    proxy = str(tmp_path / "proxy.sock")
    server = await asyncio.start_unix_server(recorder.handle, proxy)
    async with server:
        async with AsyncClient(proxy, autostart=False) as c:
            await pipelined(c, recorder)
        await recorder.done()


async def pipelined(c: AsyncClient, recorder: Recorder) -> None:
    """One status of many ids, and many status calls at once: pipelined."""
    held = [await c.submit(command=["true"], hold=True) for _ in range(3)]
    recorder.chunks.clear()
    ids = list(range(1, 5 * IDS_PER_LINE + 1))  # five INFO lines
    assert [i.id for i in await c.status(ids)] == [j.id for j in held]
    assert recorder.turns() == "><"
    sent = recorder.lines_sent()
    assert len(sent) == 5
    assert all(line.startswith(b"INFO ") for line in sent)
    assert max(map(len, sent)) < 64 * 1024  # the daemon's default sjq.maxline

    # A thousand status calls from as many tasks at once share the connection.
    recorder.chunks.clear()
    infos = await asyncio.gather(*(c.info(held[i % 3]) for i in range(1000)))
    assert [i.id for i in infos] == [held[i % 3].id for i in range(1000)]
    assert len(recorder.handlers) == 1
    assert recorder.turns().count("><") <= 2  # sent as the tasks ran, answered in bulk


@settings(max_examples=200, deadline=None)
@given(
    ids=st.lists(st.integers(1, 10**12), max_size=3000).map(tuple),
    maxline=st.integers(1, 70_000),
)
def test_chunks_keep_every_id_in_order_within_the_line_limit(
    ids: tuple[int, ...], maxline: int
) -> None:
    runs = chunks(ids, maxline)
    assert tuple(i for run in runs for i in run) == ids
    for k, run in enumerate(runs):
        assert 1 <= len(run) <= IDS_PER_LINE
        line = encode_request(Info(run)).rstrip(b"\r\n")
        assert len(line) <= maxline or len(run) == 1  # an id that cannot fit goes alone
        if k + 1 < len(runs) and len(run) < IDS_PER_LINE:  # no shorter than it must be
            longer = encode_request(Info((*run, runs[k + 1][0]))).rstrip(b"\r\n")
            assert len(longer) > maxline


@pytest.mark.asyncio
async def test_id_lists_are_split_to_the_configured_maxline(
    daemon_factory: Callable[..., Daemon], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = daemon_factory(maxline="1K").start()
    monkeypatch.chdir(d.jobs_dir)
    rc = tmp_path / "small-lines.rc"
    rc.write_text("sjq.maxline = 1K\n")  # the client reads the limit where the daemon does
    recorder = Recorder(d.socket)
    proxy = str(tmp_path / "proxy.sock")
    server = await asyncio.start_unix_server(recorder.handle, proxy)
    async with server:
        async with AsyncClient(proxy, config=rc, autostart=False) as c:
            jobs = [await c.submit(command=["true"]) for _ in range(2)]
            assert await c.wait(jobs, timeout=10) == {j.id: S for j in jobs}
            recorder.chunks.clear()
            # 999 ids are some 3,900 bytes as one INFO line: the daemon would close on it.
            assert [i.id for i in await c.status(range(1, 1000))] == [j.id for j in jobs]
            assert await c.wait(jobs * 400, timeout=10) == {j.id: S for j in jobs}
            sent = recorder.lines_sent()
            assert sum(x.startswith(b"INFO ") for x in sent) >= 4
            assert sum(x.startswith(b"WAIT ") for x in sent) >= 2
            assert max(map(len, sent)) <= 1024
        await recorder.done()
    with Client(d.socket, config=rc, autostart=False) as blocking:  # the same in Client
        assert [i.id for i in blocking.status(range(1, 1000))] == [j.id for j in jobs]
        assert blocking.wait(jobs * 400, timeout=10) == {j.id: S for j in jobs}


@pytest.mark.asyncio
async def test_a_cancelled_request_leaves_the_connection_in_step(
    daemon: Daemon, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(daemon.jobs_dir)
    recorder = Recorder(daemon.socket)
    proxy = str(tmp_path / "proxy.sock")
    server = await asyncio.start_unix_server(recorder.handle, proxy)
    async with server:
        async with AsyncClient(proxy, autostart=False) as c:
            held = await c.submit(command=["true"], hold=True)
            stream = c._stream
            for _ in range(3):
                recorder.replies_flow.clear()
                recorder.chunks.clear()
                task = asyncio.create_task(c.status(range(1, 3 * IDS_PER_LINE)))
                async with asyncio.timeout(10):
                    while not any(way == "<" for way, _ in recorder.chunks):
                        await asyncio.sleep(0.001)  # until the daemon has answered
                task.cancel()  # before its replies reach the client
                with pytest.raises(asyncio.CancelledError):
                    await task
                recorder.replies_flow.set()
                # The replies of the cancelled INFOs come first; the next ones are ours.
                assert await c.ping() == {U: 1}
                assert await c.state(held) is U
            assert c._stream is stream  # kept, not reopened
        await recorder.done()


@pytest.mark.asyncio
async def test_a_cancelled_wait_closes_its_own_connection_only(
    client: AsyncClient, daemon: Daemon, gate: Callable[..., Gate]
) -> None:
    g = gate()
    slow = await client.submit("#!/bin/sh\n" + g.wait)
    stream = client._stream
    waiter = asyncio.create_task(slow.wait())
    daemon.wait_state(slow.id, "R")
    for _ in range(3):
        await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert await client.state(slow) is R
    again = asyncio.create_task(client.wait([slow]))
    g.open()
    assert await again == {slow.id: S}
    assert client._stream is stream


@pytest.mark.asyncio
async def test_reconnects_once_when_the_daemon_restarted(
    client: AsyncClient, daemon: Daemon
) -> None:
    job = await client.submit(command=["true"], hold=True)
    daemon.stop()
    daemon.start()
    assert await job.state() is U
    assert (await client.submit(command=["true"])).id == job.id + 1


@pytest.mark.asyncio
async def test_shutdown(client: AsyncClient, daemon: Daemon) -> None:
    await client.submit(command=["true"], hold=True)
    await client.shutdown()
    assert not os.path.exists(daemon.socket)
    with pytest.raises(DaemonNotRunning):
        await client.ping()


@pytest.mark.asyncio
async def test_no_daemon_and_autostart_off(tmp_path: Path) -> None:
    path = str(tmp_path / "none.sock")
    async with AsyncClient(path) as c:
        with pytest.raises(DaemonNotRunning):
            await c.ping()  # only submit and the calls about named jobs start a daemon
        with pytest.raises(DaemonNotRunning):
            await c.status()
    async with AsyncClient(path, autostart=False) as c:
        with pytest.raises(DaemonNotRunning):
            await c.submit(command=["true"])
        for call in (c.info(1), c.state(1), c.wait([1]), c.kill(1), c.release(1), c.hold(1)):
            with pytest.raises(DaemonNotRunning):
                await call
    assert not os.path.exists(path)


@pytest.mark.asyncio
async def test_concurrent_first_submits_start_one_daemon(
    home: Home, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SJQ_CONFIG", str(home.rc))
    monkeypatch.chdir(home.dir / "jobs")
    async with AsyncClient() as c:
        jobs = await asyncio.gather(*(c.submit(command=["true"]) for _ in range(5)))
        assert sorted(j.id for j in jobs) == [1, 2, 3, 4, 5]
        assert c.started_pid is not None
        assert set((await c.wait(jobs, timeout=20)).values()) == {S}
    assert home.started() == 1


# -- transport failures, against fake daemons ----------------------------------------------


@contextlib.asynccontextmanager
async def fake_daemon(
    path: str, answer: Callable[[bytes], bytes | None]
) -> AsyncIterator[list[asyncio.Task[None]]]:
    """Reads once per connection, writes ``answer(data)`` (None: stays silent), closes."""
    handlers: list[asyncio.Task[None]] = []
    silence = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.append(task)
        try:
            out = answer(await reader.read(65536))
            if out is None:
                await silence.wait()
            else:
                writer.write(out)
        finally:
            writer.close()

    server = await asyncio.start_unix_server(handle, path)
    async with server:
        yield handlers
        silence.set()
        async with asyncio.timeout(10):
            await asyncio.gather(*handlers, return_exceptions=True)


@pytest.mark.asyncio
async def test_a_connection_closed_before_the_reply_is_connection_lost(tmp_path: Path) -> None:
    path = str(tmp_path / "f.sock")
    async with fake_daemon(path, lambda _: b"") as connections, AsyncClient(path) as c:
        with pytest.raises(ConnectionLost, match="closed the connection"):
            await c.ping()  # tried twice: idempotent requests are retried once
        assert len(connections) == 2
        with pytest.raises(ConnectionLost, match="may or may not have been queued"):
            await c.submit(command=["true"])
        assert len(connections) == 3


@pytest.mark.asyncio
async def test_garbage_is_a_protocol_error(tmp_path: Path) -> None:
    path = str(tmp_path / "f.sock")
    async with (
        fake_daemon(path, lambda _: b"HTTP/1.1 400 Bad Request\r\n\r\n"),
        AsyncClient(path) as c,
    ):
        with pytest.raises(ProtocolError, match="is an sjq daemon listening there"):
            await c.ping()


@pytest.mark.asyncio
async def test_silence_is_connection_lost_after_the_timeout(tmp_path: Path) -> None:
    path = str(tmp_path / "f.sock")
    async with fake_daemon(path, lambda _: None), AsyncClient(path, timeout=0.2) as c:
        with pytest.raises(ConnectionLost, match=r"did not answer within 0\.2 s"):
            await c.ping()
        assert c._stream is not None
        assert c._stream.broken is not None  # out of step: never used again


def test_only_asking_for_it_imports_asyncio() -> None:
    code = (
        "import sys, sjq_client\n"
        "from sjq_client import Client, Job, JobInfo\n"
        "print('asyncio' in sys.modules)\n"
        "from sjq_client import AsyncClient\n"
        "print('asyncio' in sys.modules)\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert p.stdout.splitlines() == ["False", "True"]


@pytest.mark.asyncio
async def test_the_calls_about_jobs_start_the_daemon_that_went_idle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from support import client_env, stop_daemon, wait_stopped_by_itself, write_rc

    base = tmp_path / "idle"
    (base / "jobs").mkdir(parents=True)
    monkeypatch.chdir(base / "jobs")
    rc = write_rc(base, **{"sjq.waittime": "0.2"})
    sock = base / "s.sock"
    try:
        async with AsyncClient(config=rc) as c:
            job = await c.submit(command=["echo", "hi"], name="p", stdout="o/%x.%j", patterns=True)
            assert await job.wait(10) is S
            for call in (
                lambda: c.outcomes([job]),
                lambda: c.info(job.id),
                lambda: c.wait([job.id], 10),
                lambda: c.release(job.id),
            ):
                wait_stopped_by_itself(base / "sjq.pid", c.started_pid)
                await c.aclose()  # as a client polling now and then would find it
                before = c.started_pid
                await call()
                assert c.started_pid != before
        assert (base / "jobs" / "o" / f"p.{job.id}").read_text() == "hi\n"
    finally:
        stop_daemon(str(sock), client_env(tmp_path, SJQ_CONFIG=str(rc)))
