"""Fixtures for the client tests: the `sjq` CLI run as a real subprocess against a real daemon,
and an isolated home in which the CLI or the client starts its own daemon (the helpers behind
them are `support.cli`)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support import Cli, Daemon, Home, Result, client_env, reap_leftovers, stop_daemon, write_rc


@pytest.fixture
def cli(daemon: Daemon, tmp_path: Path) -> Cli:
    """The CLI pointed at the fixture's daemon (by SJQ_SOCKET), run in its jobs directory."""
    return Cli(client_env(tmp_path, SJQ_SOCKET=daemon.socket), daemon.jobs_dir)


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Home]:
    """An isolated home whose daemon (started by the code under test) is stopped afterwards."""
    base = tmp_path / "a"
    (base / "jobs").mkdir(parents=True)
    rc = write_rc(base)
    h = Home(base, rc, client_env(tmp_path, SJQ_CONFIG=str(rc)))
    try:
        yield h
    finally:
        stop_daemon(h.socket, h.env)
        reap_leftovers(str(tmp_path))


@pytest.fixture
def shell_job(tmp_path: Path) -> Callable[[str], Path]:
    """Write a script file and return its path."""

    def make(text: str, name: str = "job.sh") -> Path:
        p = tmp_path / name
        p.write_text(text)
        return p

    return make


@pytest.fixture
def sjq_main(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[..., Result]:
    """The CLI's main() in this process: for usage errors and help, which never reach a
    daemon, at a fraction of the cost of an interpreter per run. Keyword arguments set
    environment variables."""
    from sjq_client.cli import main

    for name in list(os.environ):
        if name.startswith("SJQ_"):
            monkeypatch.delenv(name)
    for name, value in client_env(tmp_path).items():
        if name in ("HOME", "SJQ_CONFIG"):
            monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)

    def run(*args: str, **env: str) -> Result:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        code = main(list(args))
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return run
