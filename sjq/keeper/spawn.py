"""Starting one job: its script file, output files, environment and identity, then
``posix_spawn`` (or, for a root daemon running a job as another user, a shell that switches
identity first). Raises StartError with the reason a job that cannot start ends in E.

The only module that execs job processes. Imports nothing of asyncio or sqlite3.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
from collections.abc import Callable
from contextlib import AbstractContextManager

from sjq.contain.alloc import device_env
from sjq.contain.cgroup import CgroupError
from sjq.jobs import JobLaunch

__all__ = ["StartError", "check_interpreter", "ignored_signals", "spawn"]

MKDIR_TIMEOUT = 30.0  # seconds a job's output directory may take to create (a slow NFS)

# Signals a job must start with at their default action, whatever the keeper (a Python
# process) ignores: a shell pipeline whose SIGPIPE is ignored never ends. (What it handles,
# exec resets by itself.)
_SIGNALS = frozenset(
    s
    for s in signal.Signals
    if s not in (signal.SIGKILL, signal.SIGSTOP) and s < getattr(signal, "SIGRTMIN", 34)
)


def ignored_signals() -> frozenset[signal.Signals]:
    """Each is one more system call in every job's start, before its exec."""
    return frozenset(s for s in _SIGNALS if signal.getsignal(s) == signal.SIG_IGN)


class StartError(Exception):
    """A job could not be started; the message is the reason recorded with state E."""


def spawn(
    req: JobLaunch,
    script_path: str,
    tmpdir: str,
    sigdef: frozenset[signal.Signals],
    place: AbstractContextManager[None] | None = None,
    *,
    call: Callable[[Callable[[], int]], int] | None = None,
) -> int:
    """Write the job's script to ``script_path``, open its outputs and start it in a new
    session; its pid. ``sigdef``: signals to reset to their default action; ``place``: the
    context the process is started in (its cgroup, or its CPUs), so that it is contained
    from its first instruction. Only the start itself runs in it: the script and output
    files are not charged to the job's group. A ``CgroupError`` from entering it passes.
    ``call``: runs the start itself in another thread (``sjq.keeper.spawner``: one that
    waits in the job's groups already)."""
    place = place or contextlib.nullcontext()
    check_interpreter(req.script)
    try:
        os.chdir(req.cwd)
    except OSError as e:
        raise StartError(f"working directory {req.cwd}: {e.strerror}") from None
    try:
        fd = os.open(script_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o700)
        try:
            # exec needs '#!' at byte 0; the protocol allows whitespace before it
            os.write(fd, req.script.lstrip())
        finally:
            os.close(fd)
        if req.uid is not None:
            gid = req.gid if req.gid is not None else -1
            os.chown(tmpdir, req.uid, gid)
            os.chown(script_path, req.uid, gid)
    except OSError as e:
        raise StartError(f"cannot prepare job files: {e.filename}: {e.strerror}") from None
    env = device_env(dict(req.env, TMPDIR=tmpdir), procs=req.procs, cpus=req.cpus, gpus=req.gpus)
    if req.uid is not None:
        _make_dirs_as(req, _missing_dirs(req))  # outside ``place``: not part of the job
        with place:
            return _start_as_user(req, script_path, env)
    for what, path in _missing_dirs(req):
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as e:
            raise StartError(
                f"cannot create the directory {e.filename or path} for {what}: {e.strerror}"
            ) from None
    out = _open_output(req.stdout, "stdout")
    try:
        err = out if _same_file(out, req.stdout, req.stderr) else _open_output(req.stderr, "stderr")
    except StartError:
        os.close(out)
        raise

    def start() -> int:
        return os.posix_spawn(
            script_path,
            [script_path],
            env,
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, out, 1),
                (os.POSIX_SPAWN_DUP2, err, 2),
            ],
            setsid=True,
            setsigdef=sigdef,
            setsigmask=(),
        )

    try:
        with place:
            pid = call(start) if call is not None else start()
    except CgroupError:
        raise
    except OSError as e:
        raise StartError(_exec_error(req.script, e)) from None
    finally:
        os.close(out)
        if err != out:
            os.close(err)
        os.chdir("/")  # do not keep the job's directory busy (it may be unmounted)
    return pid


def _start_as_user(req: JobLaunch, script_path: str, env: dict[str, str]) -> int:
    # A root daemon opens the output files as the job's user, so it cannot be used to
    # write where that user may not: the redirections happen after the identity switch.
    same = os.path.normpath(req.stdout) == os.path.normpath(req.stderr)
    try:
        proc = subprocess.Popen(
            [
                "/bin/sh",
                "-c",
                'exec "$1" >"$2" 2>&1' if same else 'exec "$1" >"$2" 2>"$3"',
                "sjq",
                script_path,
                req.stdout,
                req.stderr,
            ],
            cwd=req.cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            user=req.uid,
            group=req.gid,
            extra_groups=[],
            start_new_session=True,
            close_fds=True,
        )
    except OSError as e:
        raise StartError(_exec_error(req.script, e)) from None
    # The Popen object must not reap the process behind our back.
    proc.returncode = 0
    return proc.pid


def _same_file(fd: int, path: str, other: str) -> bool:
    """Whether ``other`` names the file open as ``fd`` (however it is spelled): opening it
    again with truncation would make stdout and stderr overwrite each other."""
    if os.path.normpath(other) == os.path.normpath(path):
        return True
    try:
        a, b = os.fstat(fd), os.stat(other)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _missing_dirs(req: JobLaunch) -> list[tuple[str, str]]:
    """The directories of ``req.makedirs`` outputs that do not exist: (stdout/stderr, path)."""
    found: list[tuple[str, str]] = []
    for what in req.makedirs:
        path = os.path.dirname(req.stdout if what == "stdout" else req.stderr)
        # The working directory exists (chdir succeeded): the common case costs no stat.
        seen = path in (p for _, p in found)
        if path and path != req.cwd and not seen and not os.path.isdir(path):
            found.append((what, path))
    return found


def _make_dirs_as(req: JobLaunch, missing: list[tuple[str, str]]) -> None:
    """``mkdir -p`` as the job's user and group, so that a root daemon creates nothing where
    that user could not. Only for directories that are missing: a process per start is dear."""
    for what, path in missing:
        try:
            done = subprocess.run(
                ["mkdir", "-p", "--", path],
                env={"PATH": "/usr/bin:/bin", "LC_ALL": "C"},
                stdin=subprocess.DEVNULL,
                capture_output=True,
                user=req.uid,
                group=req.gid,
                extra_groups=[],
                close_fds=True,
                timeout=MKDIR_TIMEOUT,
                check=False,
            )
        except (OSError, subprocess.SubprocessError) as e:
            raise StartError(f"cannot create the directory {path} for {what}: {e}") from None
        if done.returncode != 0:
            # "mkdir: cannot create directory '/x/y': Permission denied" (GNU and busybox alike)
            said = done.stderr.decode(errors="replace").strip().rpartition(": ")[2]
            why = said or f"mkdir exit status {done.returncode}"
            raise StartError(f"cannot create the directory {path} for {what}: {why}")


def _open_output(path: str, what: str) -> int:
    try:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
    except OSError as e:
        raise StartError(f"cannot open {what} file {path}: {e.strerror}") from None


def _shebang(script: bytes) -> bytes:
    return script.lstrip().split(b"\n", 1)[0]


def _interpreter(script: bytes) -> str:
    parts = _shebang(script)[2:].split()
    return parts[0].decode(errors="replace") if parts else ""


def check_interpreter(script: bytes) -> None:
    if _shebang(script).endswith(b"\r"):
        raise StartError(
            "the #! line ends in a carriage return (the script has Windows line endings);"
            " convert it with dos2unix or sed -i 's/\\r$//'"
        )
    interp = _interpreter(script)
    if not interp:
        raise StartError("the script's #! line names no interpreter")
    if interp.startswith("/") and not os.access(interp, os.X_OK):
        why = "not found" if not os.path.exists(interp) else "not executable"
        raise StartError(f"bad interpreter {interp}: {why}")


def _exec_error(script: bytes, e: OSError) -> str:
    interp = _interpreter(script)
    if e.errno in (errno.ENOENT, errno.EACCES, errno.ENOEXEC):
        return f"cannot execute the script with interpreter {interp}: {e.strerror}"
    return f"cannot execute the script: {e.strerror}"
