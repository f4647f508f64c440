"""The only code that spawns, signals and reaps job processes.

Jobs are children of a small *keeper* process forked from the daemon at start-up, not of
the daemon itself. The keeper writes every start and every exit (status, CPU times, peak
memory) to an append-only journal before telling the daemon, so when the daemon dies the
jobs keep running, their exits still reach disk, and the next daemon can tell exactly which
jobs started and how they ended. Imports nothing of asyncio or sqlite3.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import fcntl
import heapq
import itertools
import logging
import os
import pickle
import queue
import select
import selectors
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple, NoReturn

from sjq.paths import make_dirs

__all__ = [
    "ArmPipe",
    "ExitRecord",
    "Journal",
    "KeeperHandle",
    "SpawnRequest",
    "decode_frames",
    "encode_frame",
    "proc_start_time",
]

log = logging.getLogger("sjq.runner")

_FRAME = struct.Struct("!I")
LAZY_DELAY = 0.02  # seconds a start notice may wait to share a send with other news
MAX_WAIT = 3600.0  # longest single wait of the keeper's loop; a later timer is waited in parts
JOURNAL_RETRY = 0.5  # seconds between tries to write journal records a full disk held back
# Signals a job must start with at their default action, whatever the keeper (a Python
# process) ignores: a shell pipeline whose SIGPIPE is ignored never ends. (What it handles,
# exec resets by itself.)
_SIGNALS = frozenset(
    s
    for s in signal.Signals
    if s not in (signal.SIGKILL, signal.SIGSTOP) and s < getattr(signal, "SIGRTMIN", 34)
)


def _ignored_signals() -> frozenset[signal.Signals]:
    """Each is one more system call in every job's start, before its exec."""
    return frozenset(s for s in _SIGNALS if signal.getsignal(s) == signal.SIG_IGN)


# Messages between the daemon and a keeper are NamedTuples: they pickle as plain tuples,
# several times cheaper than slotted dataclasses, and thousands cross every second.
class SpawnRequest(NamedTuple):
    jobid: int
    script: bytes
    cwd: str
    stdout: str
    stderr: str
    env: dict[str, str]  # TMPDIR is added by the keeper
    time_limit: float | None = None
    uid: int | None = None  # set only when a root daemon runs a job as another user
    gid: int | None = None


class ExitRecord(NamedTuple):
    jobid: int
    pid: int
    exit_code: int | None  # None when a signal ended it
    signal: int | None
    time: float
    cpu_user: float
    cpu_sys: float
    maxrss: int  # bytes
    reason: str = ""  # "time limit" when the keeper enforced one
    started_next: int | None = None  # the armed job the keeper started as this one ended
    claimed: int | None = None  # the arm token it took for that (even if it started nothing)


def encode_frame(msg: tuple[Any, ...]) -> bytes:
    data = pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)
    return _FRAME.pack(len(data)) + data


def decode_frames(buf: bytearray) -> Iterator[tuple[Any, ...]]:
    """Yield every complete frame in ``buf`` and remove them from it."""
    pos = 0
    end = len(buf)
    while end - pos >= 4:
        (n,) = _FRAME.unpack_from(buf, pos)
        if end - pos - 4 < n:
            break
        yield pickle.loads(buf[pos + 4 : pos + 4 + n])
        pos += 4 + n
    del buf[:pos]


def proc_start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, or None if it is gone (or a
    zombie, which has finished: whoever reaps it is not us).

    Together with the pid it names one process for ever: a recycled pid has a later start.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # The command name is in parentheses and may contain spaces or ')'.
    fields = data[data.rindex(b")") + 2 :].split()
    if fields[0] in (b"Z", b"X"):
        return None
    return int(fields[19])


# A job's start is recorded as the boot-clock tick just before its spawn (what the kernel
# reports can only be later); when the tick just after is not known, the kernel's figure
# may be this much later still: a recycled pid needs the whole pid space to wrap first.
START_SLACK = 100  # clock ticks (one second at the usual 100 Hz)
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def boot_ticks() -> int:
    """Now, in the clock ticks since boot that /proc/<pid>/stat uses for start times."""
    return int(time.clock_gettime(time.CLOCK_BOOTTIME) * _CLK_TCK)


def process_alive(pid: int, start: int | None, start_hi: int | None = None) -> bool:
    """Whether ``pid`` is still the process that started at ``start`` (at most ``start_hi``)."""
    if start is None:
        return False
    actual = proc_start_time(pid)
    hi = start + START_SLACK if start_hi is None else start_hi
    return actual is not None and start <= actual <= hi


def signal_group(pid: int, sig: int) -> None:
    """Signal a job's whole process group (its leader's pid is the group id)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def private_dir(path: str, owner: int | None = None) -> str:
    """Create (or check) a directory only we can use: in a shared place like /dev/shm or /tmp
    someone else could have made it first, to read our scripts or plant files.

    A root daemon's directories are 0711, so that the users it runs jobs for can reach
    their own 0700 subdirectories (``owner``) without being able to list anyone else's.
    """
    mode = 0o711 if os.geteuid() == 0 and owner is None else 0o700
    make_dirs(path, mode)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid not in (os.geteuid(), owner):
        raise OSError(f"{path} is not a directory of ours; remove it or choose another place")
    if owner is not None and st.st_uid != owner:
        os.chown(path, owner, -1)
    if stat.S_IMODE(st.st_mode) != mode:
        os.chmod(path, mode)
    return path


def _own_tmp_base(tmpdir: str) -> str:
    """``<tmpdir>/sjq-<uid>``; if someone else took that name first (it is guessable), a
    fresh private directory instead of refusing to start."""
    try:
        return private_dir(os.path.join(tmpdir, f"sjq-{os.geteuid()}"))
    except OSError as e:
        import tempfile  # noqa: PLC0415 - only on this rare path

        log.warning("%s; using a fresh directory for job TMPDIRs", e)
        return tempfile.mkdtemp(prefix=f"sjq-{os.geteuid()}-", dir=tmpdir)


_RECYCLE = "\0recycle:"  # a prefix no path can have


class _Janitor:
    """Slow file-system work off the keeper's critical path: removing what ended jobs left
    (a TMPDIR tree can be large) and keeping a few fresh TMPDIRs ready, so that starting a
    job creates no directory on a disk file system (a millisecond each on some)."""

    POOL = 8
    BATCH = 16

    def __init__(self, base: str) -> None:
        self.base = base
        self.prefix = f"t{os.getpid()}."
        self.ready: collections.deque[str] = collections.deque()
        self.todo: queue.SimpleQueue[None] = queue.SimpleQueue()  # wake-ups
        self.pending: collections.deque[str] = collections.deque()
        self.names = itertools.count(1)  # next() is atomic: both threads take names
        self._sweep_dead_keepers()
        self._refill()
        self.thread = threading.Thread(target=self._run, name="janitor", daemon=True)
        self.thread.start()

    def take(self) -> str:
        """A fresh TMPDIR. The pool is topped up when the thread next wakes (to clean up
        after a job), not now: waking it here would compete with the start for the GIL."""
        try:
            return self.ready.popleft()
        except IndexError:
            self.todo.put(None)
            return self._make()

    def remove(self, path: str) -> None:
        self._queue(path)

    def recycle(self, tmpdir: str) -> None:
        """A job's TMPDIR: if the job left it empty (most do), renamed and put back in the
        pool, cheaper than removing it and making another; removed otherwise. Either way
        the path the job knew is gone soon after it has ended."""
        self._queue(_RECYCLE + tmpdir)

    def _queue(self, item: str) -> None:
        """Work is handed over in batches: each hand-over wakes the thread, which then
        competes with the keeper for the GIL. It is handed over when the pool runs low,
        when much has piled up, and whenever the keeper goes idle (``kick``)."""
        self.pending.append(item)
        if len(self.pending) >= self.BATCH or len(self.ready) < self.POOL // 2:
            self.kick()

    def kick(self) -> None:
        if self.pending or len(self.ready) < self.POOL:
            self.todo.put(None)

    def _make(self) -> str:
        path = os.path.join(self.base, f"{self.prefix}{next(self.names)}")
        os.mkdir(path, 0o700)
        return path

    def _refill(self) -> None:
        while len(self.ready) < self.POOL:
            try:
                self.ready.append(self._make())
            except OSError:
                return

    def _run(self) -> None:
        while True:
            self.todo.get()
            while self.pending:
                self._clean(self.pending.popleft())
            self._refill()

    def _clean(self, path: str) -> None:
        if path.startswith(_RECYCLE):
            path = path[len(_RECYCLE) :]
            if self._reusable(path):
                fresh = os.path.join(self.base, f"{self.prefix}{next(self.names)}")
                try:
                    os.rename(path, fresh)
                except OSError:
                    pass
                else:
                    self.ready.append(fresh)
                    return
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.unlink(path)

    def _reusable(self, path: str) -> bool:
        try:
            st = os.lstat(path)
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
                return False  # a symlink planted by the job, or a UID job's directory
            with os.scandir(path) as it:
                if next(it, None) is not None:
                    return False
            if stat.S_IMODE(st.st_mode) != 0o700:
                os.chmod(path, 0o700)
        except OSError:
            return False
        return len(self.ready) < 2 * self.POOL

    def _sweep_dead_keepers(self) -> None:
        self.sweep(self.base, "t")

    def sweep(self, where: str, prefix: str) -> None:
        """Remove what keepers that are gone left in ``where`` (a keeper that was killed,
        or one that ended with TMPDIRs in its pool): names are ``<prefix><pid>...``."""
        with contextlib.suppress(OSError):
            for name in os.listdir(where):
                digits = name[len(prefix) :]
                pid = digits[: len(digits) - len(digits.lstrip("0123456789"))]
                if name.startswith(prefix) and pid and not os.path.exists(f"/proc/{pid}"):
                    self.pending.append(os.path.join(where, name))
        self.kick()


# -- the journal ----------------------------------------------------------------------


class Journal:
    """Append-only text records, one line each, written with one ``write`` so a crash
    leaves whole lines (a torn last line has no newline and is ignored on reading).

    ``K pid start``: header (the keeper that writes it); ``S job pid lo time hi``: started,
    the process's start (clock ticks since boot) between ``lo`` and ``hi``;
    ``X job pid code|- signal|- time user sys maxrss reason``: exited; ``E job time reason``:
    could not start; ``D time``: the daemon is gone, nothing more will be started.
    """

    # Space taken on disk ahead of the records (fallocate, the file's size unchanged), so
    # that a full file system does not stop the journal: about 10,000 records.
    RESERVE = 1 << 20

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        self.end = os.fstat(self.fd).st_size  # where the next record goes
        self.reserved = self.end  # space is taken up to here
        self.backlog: list[bytes] = []  # records the file system had no room for yet
        self._reserve()

    @property
    def healthy(self) -> bool:
        """Whether every record so far is in the file."""
        return not self.backlog

    def write(self, *fields: object) -> None:
        """Append a record. If the file system is full the record is kept and written,
        after those before it, as soon as there is room (``flush``): the keeper goes on."""
        line = (" ".join(str(f).replace("\n", " ") for f in fields) + "\n").encode()
        self.backlog.append(line)
        self.flush()

    def flush(self) -> bool:
        """Write what is waiting; whether everything is in the file now."""
        while self.backlog:
            line = self.backlog[0]
            try:
                n = os.write(self.fd, line)
            except OSError as e:
                if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                    raise
                if len(self.backlog) == 1:
                    log.error("%s: %s; records kept until there is room", self.path, e.strerror)
                return False
            if n < len(line):  # a short write into the last free bytes: the rest later
                self.backlog[0] = line[n:]
                self.end += n
                continue
            self.backlog.pop(0)
            self.end += n
        if self.reserved - self.end < self.RESERVE // 2:
            self._reserve()
        return True

    def _reserve(self) -> None:
        want = self.end + self.RESERVE
        if _fallocate(self.fd, self.reserved, want - self.reserved):
            self.reserved = want

    def close(self) -> None:
        os.close(self.fd)


_FALLOC_FL_KEEP_SIZE = 1
_libc_fallocate: Any = None


def _fallocate(fd: int, offset: int, length: int) -> bool:
    """Take disk space for a file's future appends without changing its size; False where
    the file system cannot (or is full): the journal then simply has no head start."""
    global _libc_fallocate
    if _libc_fallocate is None:
        import ctypes  # noqa: PLC0415 - the keeper only, once

        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.fallocate
        fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong]
        fn.restype = ctypes.c_int
        _libc_fallocate = fn
    return bool(_libc_fallocate(fd, _FALLOC_FL_KEEP_SIZE, offset, length) == 0)


@dataclass(slots=True)
class JournalState:
    """What one journal file says."""

    path: str
    keeper_pid: int = 0
    keeper_start: int | None = None
    detached: bool = False
    # job -> (pid, start tick low, wall time, start tick high)
    started: dict[int, tuple[int, int | None, float, int | None]] = field(default_factory=dict)
    exited: dict[int, ExitRecord] = field(default_factory=dict)
    errors: dict[int, tuple[float, str]] = field(default_factory=dict)
    offset: int = 0

    def keeper_alive(self) -> bool:
        return process_alive(self.keeper_pid, self.keeper_start)

    def read(self) -> None:
        """Read what has been appended since the last call."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return
        end = data.rfind(b"\n") + 1
        self.offset += end
        for raw in data[:end].decode(errors="replace").splitlines():
            self._apply(raw.split(" "))

    def _apply(self, p: list[str]) -> None:
        try:
            kind = p[0]
            if kind == "K":
                self.keeper_pid, self.keeper_start = int(p[1]), int(p[2])
            elif kind == "S":
                hi = _opt_int(p[5]) if len(p) > 5 else None
                self.started[int(p[1])] = (int(p[2]), _opt_int(p[3]), float(p[4]), hi)
            elif kind == "X":
                jobid = int(p[1])
                self.exited[jobid] = ExitRecord(
                    jobid=jobid,
                    pid=int(p[2]),
                    exit_code=_opt_int(p[3]),
                    signal=_opt_int(p[4]),
                    time=float(p[5]),
                    cpu_user=float(p[6]),
                    cpu_sys=float(p[7]),
                    maxrss=int(p[8]),
                    reason=" ".join(p[9:]),
                )
            elif kind == "E":
                self.errors[int(p[1])] = (float(p[2]), " ".join(p[3:]))
            elif kind == "D":
                self.detached = True
        except (IndexError, ValueError):
            log.warning("%s: ignoring unreadable journal line %r", self.path, " ".join(p))


def _opt_int(text: str) -> int | None:
    return None if text == "-" else int(text)


# -- arm tokens ---------------------------------------------------------------------------

_TOKEN = struct.Struct("!Q")


class ArmPipe:
    """The tokens of armed jobs, shared by the daemon and all its keepers.

    The daemon tells every keeper, over its socket, which job each token number stands
    for, then writes the tokens here in the order they must be taken. A keeper whose
    running job ends reads one token: pipe reads of one token are atomic and first in,
    first out, so each token is taken once, the first end takes the first job, and the
    daemon takes back what no keeper has taken by draining the pipe itself."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    MAX = select.PIPE_BUF // _TOKEN.size  # tokens one write puts in at once, whole

    def put(self, seqs: list[int]) -> None:
        """Append tokens: at most MAX (the daemon arms a few per CPU slot, far fewer than
        fill a pipe, so the write never blocks)."""
        if seqs:
            os.write(self.write_fd, b"".join(_TOKEN.pack(s) for s in seqs))

    def level(self) -> int:
        """How many tokens no keeper has taken yet."""
        return token_level(self.read_fd)

    def drain(self) -> list[int]:
        """Take back every token still in the pipe."""
        data = b""
        while True:
            try:
                chunk = os.read(self.read_fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            data += chunk
        return [t for (t,) in _TOKEN.iter_unpack(data)]


def token_level(fd: int) -> int:
    """How many tokens the pipe holds (FIONREAD: no read, nothing taken)."""
    n = fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0")
    return int.from_bytes(n, sys.byteorder) // _TOKEN.size


def take_token(fd: int) -> int | None:
    """One token, or None if the pipe is empty (or its daemon is gone)."""
    try:
        data = os.read(fd, _TOKEN.size)
    except BlockingIOError:
        return None
    if len(data) != _TOKEN.size:  # end of file: only tokens ever go in, whole
        return None
    return int(_TOKEN.unpack(data)[0])


# -- the daemon's side ----------------------------------------------------------------


class KeeperHandle:
    """The daemon's end of the keeper: fork it, then exchange frames over a socket pair."""

    def __init__(self, pid: int, sock: socket.socket, journal_path: str) -> None:
        self.pid = pid
        self.sock = sock
        self.journal_path = journal_path

    @classmethod
    def fork(
        cls,
        spool: str,
        rundir: str,
        tmpdir: str,
        killgrace: float,
        logfile: str | None,
        *,
        arm_fd: int,
    ) -> KeeperHandle:
        """Fork the keeper. Call before the event loop exists and before any thread."""
        make_dirs(spool)
        private_dir(rundir)
        tmpbase = _own_tmp_base(tmpdir)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        ready_r, ready_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the keeper process
            try:
                ours.close()
                os.close(ready_r)
                _Keeper(
                    theirs,
                    spool=spool,
                    rundir=rundir,
                    tmpbase=tmpbase,
                    killgrace=killgrace,
                    logfile=logfile,
                    ready=ready_w,
                    arm_fd=arm_fd,
                ).run()
            except BaseException:
                with contextlib.suppress(BaseException):
                    log.exception("keeper failed")
            os._exit(70)
        theirs.close()
        os.close(ready_w)
        # The keeper reports the journal it opened (or why it could not) before we go on.
        with os.fdopen(ready_r, "rb") as f:
            answer = f.read().decode()
        if not answer.startswith("/"):
            raise OSError(f"the job keeper could not start: {answer or 'it died'}")
        return cls(pid, ours, answer)


# -- the keeper process -----------------------------------------------------------------


class StartError(Exception):
    """A job could not be started; the message is the reason recorded with state E."""


@dataclass(slots=True)
class _Child:
    req: SpawnRequest
    script_path: str
    tmpdir: str
    start: int  # process start time, clock ticks since boot: at least this
    start_hi: int  # and at most this
    started: float  # wall-clock time of the start
    reason: str = ""


class _Keeper:
    def __init__(
        self,
        sock: socket.socket,
        *,
        spool: str,
        rundir: str,
        tmpbase: str,
        killgrace: float,
        logfile: str | None,
        ready: int,
        arm_fd: int,
    ) -> None:
        self.sock = sock
        self.arm_fd = arm_fd
        self.spool = spool
        self.rundir = rundir
        self.tmpbase = tmpbase
        self.killgrace = killgrace
        self.logfile = logfile
        self.ready = ready
        self.children: dict[int, _Child] = {}
        self.by_job: dict[int, int] = {}
        # arm token -> (the job it starts, only after this job ends, only if that succeeded)
        self.entries: dict[int, tuple[SpawnRequest, int | None, bool]] = {}
        self.capable: set[int] = set()  # running jobs whose end may take a token
        self.arm_low = 0  # the daemon arms more when no more tokens than this are left
        self.timers: list[tuple[float, int, str, int]] = []
        self.seq = 0
        self.inbuf = bytearray()
        self.outbuf = bytearray()
        self.urgent = False
        self.lazy_due = 0.0
        self.want_write = False
        self.detached = False
        self.journal_seq = 0
        self.journal: Journal

    def run(self) -> NoReturn:
        self._isolate()
        self.journal = self._open_journal()
        # The janitor thread must never hold up the main loop for long: hand the GIL over
        # within 0.2 ms rather than the default 5 ms.
        sys.setswitchinterval(0.0002)
        self.janitor = _Janitor(self.tmpbase)
        self.janitor.sweep(self.rundir, "k")
        os.write(self.ready, self.journal.path.encode())
        os.close(self.ready)
        self.sel = selectors.DefaultSelector()
        self.sock.setblocking(False)
        self.sel.register(self.sock, selectors.EVENT_READ)
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self.sigdef = _ignored_signals()
        self.sel.register(wake_r, selectors.EVENT_READ)
        self._reap()
        while not (self.detached and not self.children):
            if not self.children:
                self.janitor.kick()  # idle: clean up after the jobs that ended now
            timeout = None
            if self.timers:
                # epoll cannot wait longer than 2**31 ms (24.8 days) in one call
                timeout = min(MAX_WAIT, max(0.0, self.timers[0][0] - time.monotonic()))
            if self.outbuf and not self.want_write:
                # only lazy news is waiting: send it when it is due
                due = max(0.0, self.lazy_due - time.monotonic())
                timeout = due if timeout is None else min(timeout, due)
            if not self.journal.healthy and not self.journal.flush():
                # a full file system: try again soon to write what waits
                timeout = JOURNAL_RETRY if timeout is None else min(timeout, JOURNAL_RETRY)
            for key, mask in self.sel.select(timeout):
                if key.fileobj == wake_r:
                    with contextlib.suppress(BlockingIOError):
                        while os.read(wake_r, 4096):
                            pass
                    self._reap()
                elif mask & selectors.EVENT_READ:
                    self._receive()
                elif mask & selectors.EVENT_WRITE:
                    self._flush()
            self._run_timers()
            # One send per loop turn, carrying everything this turn produced: each send
            # wakes the daemon, and a wake-up is what costs most on a virtual machine.
            due = self.urgent or not self.children or time.monotonic() >= self.lazy_due
            if self.outbuf and not self.want_write and due:
                self._flush()
        log.info("keeper done: daemon gone and no job left")
        self.journal.close()
        os._exit(0)

    def _isolate(self) -> None:
        """Own session (a Ctrl-C or hang-up meant for the daemon must not reach the jobs'
        parent), none of the daemon's descriptors (its database lock, its listening socket),
        and logging of our own."""
        with contextlib.suppress(OSError):
            os.setsid()
        root = logging.getLogger()
        for h in list(root.handlers):
            root.removeHandler(h)
            with contextlib.suppress(Exception):
                h.close()
        # Python objects inherited from the daemon still own some of these descriptors and
        # close them when collected. Pointing each at /dev/null (rather than closing it)
        # drops the daemon's files while keeping the number taken, so such a late close can
        # never hit a file the keeper opened since.
        keep = {self.sock.fileno(), self.ready, self.arm_fd, 0, 1, 2}
        null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        for name in os.listdir("/proc/self/fd"):
            fd = int(name)
            if fd not in keep and fd != null:
                with contextlib.suppress(OSError):
                    os.dup2(null, fd, inheritable=False)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
            signal.signal(sig, signal.SIG_IGN)
        if self.logfile:
            with contextlib.suppress(OSError):
                h = logging.FileHandler(self.logfile)
                h.setFormatter(logging.Formatter("%(asctime)s keeper[%(process)d] %(message)s"))
                root.addHandler(h)

    def _rotate(self) -> None:
        """Go on in a new journal, so that the daemon can delete the old one. Not while the
        file system is full: the new one must hold everything before the old one goes."""
        if not self.journal.healthy:
            return
        old = self.journal
        self.journal_seq += 1
        try:
            new = self._open_journal()
        except OSError as e:
            log.warning("cannot start a new journal (%s); going on in %s", e, old.path)
            return
        # The new journal alone must say what is still running, so the old one can go.
        for pid, c in self.children.items():
            new.write("S", c.req.jobid, pid, c.start, c.started, c.start_hi)
        if not new.healthy:
            new.close()
            with contextlib.suppress(OSError):
                os.unlink(new.path)
            return
        self.journal = new
        old.close()
        self._send("rotated", old.path)

    def _open_journal(self) -> Journal:
        me = os.getpid()
        path = os.path.join(self.spool, f"keeper-{me}-{self.journal_seq}.journal")
        j = Journal(path)
        j.write("K", me, proc_start_time(me))
        return j

    # -- talking to the daemon --

    def _send(self, *msg: Any, urgent: bool = True) -> None:
        """Queue a message for the daemon; it goes out at the end of this loop turn. A lazy
        one (a start: the daemon needs the pid only for display) may wait up to
        ``LAZY_DELAY`` for company, so that it costs no wake-up of its own."""
        if self.detached:
            return
        if not self.outbuf:
            self.lazy_due = time.monotonic() + LAZY_DELAY
        self.outbuf += encode_frame(msg)
        self.urgent = self.urgent or urgent

    def _flush(self) -> None:
        self.urgent = False
        try:
            while self.outbuf:
                n = self.sock.send(self.outbuf)
                del self.outbuf[:n]
        except BlockingIOError:
            if not self.want_write:
                self.want_write = True
                self.sel.modify(self.sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
            return
        except OSError:
            self._detach()
            return
        if self.want_write:
            self.want_write = False
            self.sel.modify(self.sock, selectors.EVENT_READ)

    def _receive(self) -> None:
        try:
            data = self.sock.recv(1 << 20)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._detach()
            return
        self.inbuf += data
        for msg in decode_frames(self.inbuf):
            self._handle(msg)

    def _detach(self) -> None:
        if self.detached:
            return
        self.detached = True
        self.outbuf.clear()
        with contextlib.suppress(KeyError, ValueError):
            self.sel.unregister(self.sock)
        self.sock.close()
        self.journal.write("D", time.time())
        log.info("daemon gone; %d job(s) still running are watched here", len(self.children))

    def _handle(self, msg: tuple[Any, ...]) -> None:
        kind = msg[0]
        if kind == "spawn":
            self._spawn(msg[1])
        elif kind == "kill":
            self._kill(msg[1], msg[2])
        elif kind == "arm":
            _, live, capable, new, self.arm_low = msg
            for seq in [s for s in self.entries if s not in live]:
                del self.entries[seq]  # taken by another keeper, or taken back
            for seq, req, after, need_success in new:
                self.entries[seq] = (req, after, need_success)
            # a job that has ended already: the daemon learns so from its exit record
            self.capable.update(j for j in capable if j in self.by_job)
        elif kind == "rotate":
            self._rotate()

    # -- processes --

    def _spawn(self, req: SpawnRequest) -> bool:
        if not self.journal.healthy and not self.journal.flush():
            # Its start could not be recorded: after a daemon crash it might run twice.
            now = time.time()
            reason = (
                f"cannot record its start: the file system of {self.spool} (sjq.spool) is full"
            )
            self._send("error", req.jobid, now, reason)
            self.journal.write("E", req.jobid, now, reason)
            return False
        tmpdir = self.janitor.take()
        rundir = self.rundir
        try:
            if req.uid is not None:
                rundir = private_dir(os.path.join(rundir, f"u{req.uid}"), owner=req.uid)
            # The keeper's pid in the name: two daemons of one user may share a run dir.
            script_path = os.path.join(rundir, f"k{os.getpid()}-{req.jobid}")
            # The process starts between these two ticks. Reading its start from /proc
            # instead would cost more than the rest of a start on some machines.
            lo = boot_ticks()
            pid = self._start(req, script_path, tmpdir)
            hi = boot_ticks()
        except OSError as e:
            self._refuse(req, tmpdir, "", StartError(f"cannot prepare job files: {e}"))
            return False
        except StartError as e:
            self._refuse(req, tmpdir, script_path, e)
            return False
        now = time.time()
        self.journal.write("S", req.jobid, pid, lo, now, hi)
        self.children[pid] = _Child(req, script_path, tmpdir, lo, hi, now)
        self.by_job[req.jobid] = pid
        if req.time_limit:
            self._timer(req.time_limit, "limit", pid)
        self._send("started", req.jobid, pid, lo, now, urgent=False)
        return True

    def _refuse(self, req: SpawnRequest, tmpdir: str, script_path: str, e: Exception) -> None:
        now = time.time()
        self.journal.write("E", req.jobid, now, e)
        self._send("error", req.jobid, now, str(e))
        self.janitor.remove(tmpdir)
        if script_path:
            self.janitor.remove(script_path)

    def _start(self, req: SpawnRequest, script_path: str, tmpdir: str) -> int:
        _check_interpreter(req.script)
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
        env = dict(req.env, TMPDIR=tmpdir)
        if req.uid is not None:
            return self._start_as_user(req, script_path, env)
        out = _open_output(req.stdout, "stdout")
        try:
            err = (
                out
                if _same_file(out, req.stdout, req.stderr)
                else _open_output(req.stderr, "stderr")
            )
        except StartError:
            os.close(out)
            raise
        try:
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
                setsigdef=self.sigdef,
                setsigmask=(),
            )
        except OSError as e:
            raise StartError(_exec_error(req.script, e)) from None
        finally:
            os.close(out)
            if err != out:
                os.close(err)
            os.chdir("/")  # do not keep the job's directory busy (it may be unmounted)

    def _start_as_user(self, req: SpawnRequest, script_path: str, env: dict[str, str]) -> int:
        # A root daemon opens the output files as the job's user, so it cannot be used to
        # write where that user may not: the redirections happen after the identity switch.
        try:
            proc = subprocess.Popen(
                [
                    "/bin/sh",
                    "-c",
                    'exec "$1" >"$2" 2>"$3"',
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

    def _kill(self, jobid: int, grace: float) -> None:
        pid = self.by_job.get(jobid)
        if pid is None:
            return
        signal_group(pid, signal.SIGTERM)
        signal_group(pid, signal.SIGCONT)  # a stopped job must wake up to see SIGTERM
        self._timer(grace, "kill", pid)

    def _timer(self, delay: float, what: str, pid: int) -> None:
        self.seq += 1
        heapq.heappush(self.timers, (time.monotonic() + delay, self.seq, what, pid))

    def _run_timers(self) -> None:
        now = time.monotonic()
        while self.timers and self.timers[0][0] <= now:
            _, _, what, pid = heapq.heappop(self.timers)
            child = self.children.get(pid)
            if child is None:
                continue
            if what == "limit":
                child.reason = "time limit"
                self._kill(child.req.jobid, self.killgrace)
            else:
                signal_group(pid, signal.SIGKILL)

    def _reap(self) -> None:
        while True:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if info is None:
                return
            pid = info.si_pid
            # The leader is a zombie until wait4 below, so its pid (the group id) cannot be
            # recycled yet: this reaches only what the job left behind in its group.
            signal_group(pid, signal.SIGKILL)
            _, status, ru = os.wait4(pid, 0)
            child = self.children.pop(pid, None)
            if child is None:
                log.warning("reaped process %d, which is not a job of ours", pid)
                continue
            jobid = child.req.jobid
            del self.by_job[jobid]
            code = os.waitstatus_to_exitcode(status)
            claimed = successor = None
            if jobid in self.capable:
                self.capable.discard(jobid)
                claimed, successor = self._claim(jobid, code == 0 and not child.reason)
            rec = ExitRecord(
                jobid=child.req.jobid,
                pid=pid,
                exit_code=code if code >= 0 else None,
                signal=-code if code < 0 else None,
                time=time.time(),
                cpu_user=ru.ru_utime,
                cpu_sys=ru.ru_stime,
                maxrss=ru.ru_maxrss * 1024,
                reason=child.reason,
                started_next=None if successor is None else successor.jobid,
                claimed=claimed,
            )
            self.journal.write(
                "X",
                rec.jobid,
                pid,
                "-" if rec.exit_code is None else rec.exit_code,
                "-" if rec.signal is None else rec.signal,
                rec.time,
                rec.cpu_user,
                rec.cpu_sys,
                rec.maxrss,
                rec.reason,
            )
            # The daemon needs this end in time only to arm more: while enough tokens are
            # left, it may wait to share a wake-up with later news.
            lazy = successor is not None and token_level(self.arm_fd) > self.arm_low
            self._send("exited", rec, urgent=not lazy)
            # Without waiting for the daemon: it armed us for exactly this moment. The plan
            # it armed made the job a capable one too: its end takes the next token.
            if successor is not None and self._spawn(successor):
                self.capable.add(successor.jobid)
            self.janitor.recycle(child.tmpdir)
            self.janitor.remove(child.script_path)

    def _claim(self, jobid: int, succeeded: bool) -> tuple[int | None, SpawnRequest | None]:
        """As a capable job ends: the arm token taken, and the job to start for it."""
        if self.detached:
            return None, None
        seq = take_token(self.arm_fd)
        if seq is None:
            return None, None
        if seq not in self.entries:
            # The daemon writes a token only once what it stands for has reached our
            # socket: read that now.
            self._receive()
        entry = self.entries.pop(seq, None)
        if entry is None or self.detached:
            # A daemon that is gone no longer hears of what starts: the token is spent.
            return seq, None
        req, after, need_success = entry
        if after is not None and (after != jobid or (need_success and not succeeded)):
            return seq, None  # not for this end: the daemon starts what is next
        return seq, req


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


def _check_interpreter(script: bytes) -> None:
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
