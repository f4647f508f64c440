"""Starting and stopping the daemon process: ``python -m sjq.daemon`` and ``sjq server``.

Binds the socket, opens the database, recovers what an earlier daemon left, forks the
keepers, writes the pid file, sets up logging, daemonizes with python-daemon, then runs
``sjq.service.Daemon`` until it stops.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import socket
import sys
import time
from collections.abc import Sequence

from sjq import __version__, containment
from sjq.config import Config, ConfigError, load_config
from sjq.keeper import ArmPipe, KeeperHandle
from sjq.keeper.adopt import contain
from sjq.keeper.handle import await_keepers
from sjq.keeper.procs import proc_start_time
from sjq.paths import make_dirs, make_private_file
from sjq.recovery import recover
from sjq.server import AlreadyRunning, bind_socket, file_identity, remove_socket
from sjq.service import Daemon
from sjq.slurm.backend import SlurmBackend
from sjq.slurm.errors import SlurmError
from sjq.slurm.startup import daemon_id, open_slurm
from sjq.state import State
from sjq.store import Store, StoreError

__all__ = ["daemonize", "main", "serve"]

log = logging.getLogger("sjq")

KEEPER_EXIT_WAIT = 2.0  # seconds a stopping daemon waits for its keepers to tidy up and go


# -- starting the process ------------------------------------------------------------------


def _setup_logging(cfg: Config, foreground: bool) -> None:
    root = logging.getLogger()
    root.setLevel(cfg.loglevel.upper())
    fmt = logging.Formatter("%(asctime)s sjq[%(process)d] %(levelname)s %(message)s")
    handlers: list[logging.Handler] = []
    if foreground:
        handlers.append(logging.StreamHandler(sys.stderr))
    if cfg.logfile:
        # Job names, paths and reasons are nobody else's business: owner only, as the
        # database (an existing log keeps the mode its owner gave it).
        with contextlib.suppress(OSError):
            make_dirs(os.path.dirname(cfg.logfile))
            make_private_file(cfg.logfile, tighten_existing=False)
        handlers.append(logging.FileHandler(cfg.logfile))
    for h in handlers:
        h.setFormatter(fmt)
        root.addHandler(h)


def _write_pidfile(path: str) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(f"{os.getpid()}\n")
    os.replace(tmp, path)


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def _remove_pidfile(path: str) -> None:
    try:
        with open(path) as f:
            pid = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return
    if pid == os.getpid():
        _unlink_quietly(path)


def serve(cfg: Config, *, foreground: bool, ready_fd: int | None = None) -> int:
    """Run a daemon until it stops. Returns the process exit status."""
    _setup_logging(cfg, foreground)
    for fd in range(3, _max_fd()):
        with contextlib.suppress(OSError):
            if fd != ready_fd:
                os.set_inheritable(fd, False)
    # The socket first: "a daemon is already running on it" is the most useful thing to hear.
    try:
        listen = bind_socket(cfg.socket, cfg.backlog)
    except (AlreadyRunning, OSError) as e:
        return _fail(str(e), ready_fd)
    sock_ident = file_identity(cfg.socket)
    slurm = None
    if cfg.backend == "slurm":
        try:
            slurm = open_slurm(cfg)  # no sbatch, no slurm.conf: refuse to start, saying why
        except SlurmError as e:
            listen.close()
            remove_socket(cfg.socket, sock_ident)
            return _fail(f"sjq.backend = slurm: {e}", ready_fd)
    try:
        store = Store(cfg.db, sync=cfg.sync)
    except StoreError as e:
        listen.close()
        remove_socket(cfg.socket, sock_ident)
        return _fail(str(e), ready_fd)
    try:
        contained = containment.choose(cfg)
        log.info("containment: %s", contained.line)
        devices = containment.devices(cfg, contained)
        now = time.time()
        state = State(cfg, store, now, devices)
        recovered = recover(state, cfg.spool, now)
        contain(recovered.adopted, contained.backend)  # jobs whose keeper is gone too
        state.write_changes()
        store.commit()
        for path in recovered.finished_journals:
            _unlink_quietly(path)
        backend = None
        if slurm is not None:
            ident = daemon_id(store.meta("daemon_id"))
            store.set_meta("daemon_id", ident)
            backend = SlurmBackend(cfg, slurm, ident)
            backend.adopt(recovered.in_slurm, now)
        elif recovered.in_slurm:
            raise RuntimeError(
                f"the database holds {len(recovered.in_slurm)} job(s) handed to Slurm; start"
                " with sjq.backend = slurm to follow them to their end"
            )
        arm_pipe = ArmPipe()
        # groups kept ready per keeper: what one keeper may run at once, and some to spare
        # (used ones are reset in batches, when half are gone or the keeper is idle)
        pool = min(64, -(-cfg.maxprocs // cfg.keepers) + 6)
        keepers = [
            KeeperHandle.fork(
                cfg.spool,
                cfg.rundir,
                cfg.tmpdir,
                cfg.killgrace,
                cfg.logfile,
                arm_fd=arm_pipe.read_fd,
                guard=contained.guard(pool, devices.topology),
            )
            for _ in range(cfg.keepers if backend is None else 0)
        ]
    except ConfigError as e:
        listen.close()
        remove_socket(cfg.socket, sock_ident)
        store.close()
        return _fail(str(e), ready_fd)
    except Exception as e:
        log.exception("cannot start")
        listen.close()
        remove_socket(cfg.socket, sock_ident)
        store.close()
        return _fail(f"cannot start: {e}", ready_fd)
    _write_pidfile(cfg.pidfile)
    if ready_fd is not None:
        os.write(ready_fd, f"OK {os.getpid()}".encode())
        os.close(ready_fd)
    daemon = Daemon(
        cfg=cfg,
        store=store,
        keepers=keepers,
        arm_pipe=arm_pipe,
        listen=listen,
        state=state,
        adopted=recovered.adopted,
        socket_ident=sock_ident,
        backend=backend,
    )
    try:
        asyncio.run(daemon.run())
    finally:
        if not daemon.keep_running:
            await_keepers(keepers, KEEPER_EXIT_WAIT)  # each removes its own groups
        contained.close()
        remove_socket(cfg.socket, sock_ident)
        _remove_pidfile(cfg.pidfile)
        with contextlib.suppress(Exception):
            store.close()
        log.info("stopped")
    return 0


def _fail(message: str, ready_fd: int | None) -> int:
    log.error("%s", message)
    if ready_fd is not None:
        os.write(ready_fd, message.encode())
        os.close(ready_fd)
    return 1


def _max_fd() -> int:
    try:
        return max(int(n) for n in os.listdir("/proc/self/fd")) + 1
    except (OSError, ValueError):
        return 256


def daemonize(cfg: Config) -> int:
    """Fork a detached daemon; return only when it serves (0) or has failed (1, reason printed)."""
    import daemon as python_daemon  # noqa: PLC0415 - only the daemonizing path pays for it

    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid:
        os.close(ready_w)
        with os.fdopen(ready_r, "rb") as f:
            answer = f.read().decode(errors="replace")
        os.waitpid(pid, 0)
        if answer.startswith("OK "):
            print(f"sjq daemon started (pid {answer[3:]}) on {cfg.socket}")
            return 0
        print(
            f"sjq: {answer or 'the daemon died while starting; see ' + str(cfg.logfile)}",
            file=sys.stderr,
        )
        return 1
    os.close(ready_r)
    ctx = python_daemon.DaemonContext(
        umask=0o022, working_directory="/", files_preserve=[ready_w], detach_process=True
    )
    with ctx:
        code = serve(cfg, foreground=False, ready_fd=ready_w)
    os._exit(code)


def _overrides(pairs: Sequence[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ConfigError("command line", pair, "expected KEY=VALUE")
        out[key.strip()] = value.strip()
    return out


def build_parser(prog: str = "sjq server") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Run the sjq daemon: it listens on sjq.socket and runs the jobs sent there.",
        epilog=(
            "examples:\n"
            "  sjq server -f                      run in the foreground, log to stderr\n"
            "  sjq server -d                      detach; log to sjq.logfile\n"
            "  sjq server -f --set sjq.maxprocs=4 --set sjq.maxmem=16G\n"
            "  sjq server --stop                  stop: kill running jobs, keep the queue\n"
            "  sjq server --stop --keep-running   stop, leave running jobs running\n"
            "  sjq server -d --set sjq.backend=slurm   hand jobs to Slurm (docs/slurm.md)\n"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("-f", "--foreground", action="store_true", help="run in the foreground")
    mode.add_argument("-d", "--daemon", action="store_true", help="detach (as sjq.daemon=T)")
    mode.add_argument("--stop", action="store_true", help="ask the running daemon to stop")
    p.add_argument(
        "--keep-running",
        action="store_true",
        help="with --stop: running jobs go on and are re-adopted by the next daemon",
    )
    p.add_argument("-c", "--config", metavar="FILE", help="config file (default ~/.sjqrc)")
    p.add_argument(
        "--set",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="override a config key (repeatable), e.g. --set sjq.maxprocs=4",
    )
    p.add_argument("--version", action="version", version=f"sjq {__version__}")
    return p


def main(argv: Sequence[str] | None = None, prog: str = "sjq server") -> int:
    args = build_parser(prog).parse_args(argv)
    try:
        cfg = load_config(args.config, overrides=_overrides(args.set))
    except ConfigError as e:
        print(f"sjq: {e}", file=sys.stderr)
        return 2
    if args.stop:
        return _stop_running(cfg, keep_running=args.keep_running)
    if args.daemon or (cfg.daemon and not args.foreground):
        return daemonize(cfg)
    return serve(cfg, foreground=True)


def _stop_running(cfg: Config, *, keep_running: bool) -> int:
    try:
        with open(cfg.pidfile) as f:
            pid: int | None = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        pid = None
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(cfg.socket)
    except OSError:
        print(f"sjq: no daemon is running on {cfg.socket}", file=sys.stderr)
        return 1
    with s:
        s.sendall(b"STOP\n" if keep_running else b"SHUTDOWN\n")
        reply = s.recv(4096)
    if not reply.startswith(b"OK"):
        print(f"sjq: the daemon said {reply.decode(errors='replace').strip()}", file=sys.stderr)
        return 1
    # Wait until it is gone (it frees the socket at once, its database when its running
    # jobs have been killed), so that a script can start another daemon straight after.
    deadline = time.monotonic() + cfg.killgrace + 15.0
    while time.monotonic() < deadline and (
        os.path.exists(cfg.socket) or (pid is not None and proc_start_time(pid) is not None)
    ):
        time.sleep(0.02)
    return 0


if __name__ == "__main__":
    sys.exit(main(prog="python -m sjq.daemon"))
