"""Whether a job's working directory and output files will be usable when it starts, judged
as the user the job runs as. Pure file-system reads (stat, access); no process, no I/O
beyond that. Used at SUBMIT to refuse at once a job whose start would certainly fail."""

from __future__ import annotations

import errno
import os
import stat
from functools import lru_cache

__all__ = ["PathChecks", "path_problems"]

_R, _W, _X = 4, 2, 1


class PathChecks:
    """What the file system said about directories during one turn of the daemon: the many
    SUBMITs of a pipelined burst mostly share one working directory, asked about once
    (``clear`` at the end of each turn, so an answer is never older than the turn)."""

    __slots__ = ("_dirs", "_users")

    def __init__(self) -> None:
        self._users: dict[tuple[int, int], _User] = {}
        self._dirs: dict[str, bool] = {}

    def user(self, uid: int, gid: int) -> _User:
        user = self._users.get((uid, gid))
        if user is None:
            user = self._users[(uid, gid)] = _User.of(uid, gid)
        return user

    def isdir(self, path: str) -> bool:
        found = self._dirs.get(path)
        if found is None:
            found = self._dirs[path] = os.path.isdir(path)
        return found

    def clear(self) -> None:
        if self._users or self._dirs:
            self._users.clear()
            self._dirs.clear()


def path_problems(
    cwd: str,
    outputs: tuple[tuple[str, str, bool], ...],
    uid: int,
    gid: int,
    checks: PathChecks | None = None,
) -> list[str]:
    """Why the job could not start with these paths (empty: it can, as far as the file system
    tells now), as the 2014 daemon said it: ``stdout => /x/o does not exist; cwd => /x does
    not exist``. ``outputs`` are ``(what, path, given)``: an output the client did not name
    goes in the working directory, so a bad one is not reported twice. ``checks``: answers
    about directories from earlier in this turn (default: none)."""
    user = (checks or PathChecks()).user(uid, gid)
    bad_cwd = user.problem(cwd, _X, directory=True)
    problems: list[str] = []
    seen: set[str] = set()
    for what, path, given in outputs:
        if path in seen or (bad_cwd and not given):
            continue
        seen.add(path)
        why = user.output_problem(path)
        if why:
            problems.append(f"{what} => {path} {why}")
    if bad_cwd:
        problems.append(f"cwd => {cwd} {bad_cwd}")
    return problems


class _User:
    """The user a job runs as, and how to ask the file system what that user may do."""

    def __init__(self, uid: int, gids: frozenset[int]) -> None:
        self.uid = uid
        self.gids = gids
        # The daemon itself is that user: the kernel answers, ACLs and all.
        self.is_me = uid in (-1, os.geteuid())
        # Answers of ``problem`` (kept as long as the PathChecks that made this user): the
        # outputs' directory is mostly the working directory, asked about once.
        self._seen: dict[tuple[str, int, bool], str] = {}

    @staticmethod
    def of(uid: int, gid: int) -> _User:
        if uid in (-1, os.geteuid()):
            return _User(uid, frozenset())
        return _User(uid, _groups(uid, gid))

    def output_problem(self, path: str) -> str:
        """An output file is opened for writing and created if missing."""
        try:
            st = os.stat(path)
        except FileNotFoundError:
            parent = os.path.dirname(path) or "/"
            why = self.problem(parent, _W | _X, directory=True)
            if why == "does not exist":
                return why  # its directory is missing, so the file cannot be made
            return f"cannot be created: {parent} {why}" if why else ""
        except OSError as e:
            return _describe(e)
        if stat.S_ISDIR(st.st_mode):
            return "is a directory"
        return "is not writable" if not self.allowed(path, st, _W) else ""

    def problem(self, path: str, bits: int, *, directory: bool) -> str:
        key = (path, bits, directory)
        why = self._seen.get(key)
        if why is None:
            why = self._seen[key] = self._problem(path, bits, directory=directory)
        return why

    def _problem(self, path: str, bits: int, *, directory: bool) -> str:
        try:
            st = os.stat(path)
        except OSError as e:
            return _describe(e)
        if directory and not stat.S_ISDIR(st.st_mode):
            return "is not a directory"
        if not self.reachable(path):
            return "cannot be reached (permission denied on a directory above it)"
        if not self.allowed(path, st, bits):
            return "is not writable" if bits & _W else "cannot be entered (permission denied)"
        return ""

    def reachable(self, path: str) -> bool:
        """Whether every directory above ``path`` can be searched."""
        if self.is_me or self.uid == 0:
            return True  # the kernel checked that for the daemon's own stat above
        parent = os.path.dirname(os.path.abspath(path))
        while True:
            try:
                st = os.stat(parent)
            except OSError:
                return False
            if not self.allowed(parent, st, _X):
                return False
            up = os.path.dirname(parent)
            if up == parent:
                return True
            parent = up

    def allowed(self, path: str, st: os.stat_result, bits: int) -> bool:
        if self.is_me:
            return os.access(path, bits, effective_ids=os.access in os.supports_effective_ids)
        if self.uid == 0:
            return True
        if _has_acl(path):
            return True  # an ACL may grant what the mode bits do not: let the start decide
        if st.st_uid == self.uid:
            granted = st.st_mode >> 6
        elif st.st_gid in self.gids:
            granted = st.st_mode >> 3
        else:
            granted = st.st_mode
        return granted & bits == bits


def _describe(e: OSError) -> str:
    if e.errno in (errno.ENOENT, errno.ENOTDIR):
        return "does not exist"
    if e.errno == errno.EACCES:
        return "cannot be reached (permission denied)"
    return f"cannot be used: {e.strerror}"


def _has_acl(path: str) -> bool:
    try:
        return "system.posix_acl_access" in os.listxattr(path)
    except OSError:
        return False


@lru_cache(maxsize=256)
def _groups(uid: int, gid: int) -> frozenset[int]:
    import pwd  # noqa: PLC0415 - only a root daemon running jobs as other users needs it

    try:
        name = pwd.getpwuid(uid).pw_name
        return frozenset(os.getgrouplist(name, gid))
    except (KeyError, OSError):
        return frozenset((gid,))
