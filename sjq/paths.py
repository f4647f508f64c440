"""sjq's own directories and private files: created 0700/0600, never loosened, and never a
change to a directory sjq did not create. Imports only os and stat (the CLI imports it)."""

from __future__ import annotations

import os
import stat

__all__ = ["make_dirs", "make_private_file"]


def make_dirs(path: str, mode: int = 0o700) -> None:
    """Create ``path`` and any missing parents with ``mode`` (exactly, whatever the umask).

    Directories that exist already are left as they are: ``$HOME`` or a shared data
    directory is not sjq's to change.
    """
    path = os.path.abspath(path)
    missing: list[str] = []
    while not os.path.isdir(path):
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    for p in reversed(missing):
        try:
            os.mkdir(p, mode)
        except FileExistsError:
            continue  # made by someone else meanwhile: theirs, not ours to change
        os.chmod(p, mode)  # mkdir's mode is masked by the umask


def make_private_file(path: str, *, tighten_existing: bool = True) -> None:
    """Make sure ``path`` exists and only its owner can read it (0600): created so if it is
    missing, tightened if an older sjq left it readable by others. A file someone else
    owns is left alone (chmod would fail; opening it will say why)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        if tighten_existing:
            tighten(path)
    else:
        os.close(fd)


def tighten(path: str) -> None:
    """Take group and other permissions off a file of ours, if it exists."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid() and st.st_mode & 0o077:
        os.chmod(path, stat.S_IMODE(st.st_mode) & 0o700)
