"""Files and folders only their owner may touch: 0600 files, 0700 folders, whatever the umask.

Why this matters: the data dir holds the catalog (every bucket, key and
metadata), identity (wrapped access-key secrets) and the sealed keyring. The
umask of whoever starts dwray first must not decide who else may read them,
so dwray creates them private itself (``os.open`` with mode 0600, folders
0700, created parents included) and tightens what an older dwray left looser,
when the file is ours; a file someone else owns is left alone with a warning
that names it, since changing another user's files is not ours to do.
"""
from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from dwray.secrets.key_file import fsync_dir, make_private_dir

__all__ = ["create_private_file", "fsync_dir", "make_private_dir", "tighten"]

_log = logging.getLogger(__name__)


def create_private_file(path: Path, what: str) -> None:
    """Make sure ``path`` exists as a 0600 file (created so, or tightened if ours). Its contents are untouched."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        _tighten_fd(fd, path, 0o600, what)
    finally:
        os.close(fd)


def tighten(path: Path, mode: int, what: str) -> None:
    """Take away whatever ``path`` grants beyond ``mode`` if we own it; warn if someone else does.

    A path that does not exist is fine: there is nothing to tighten.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return
    try:
        _tighten_fd(fd, path, mode, what)
    finally:
        os.close(fd)


def _tighten_fd(fd: int, path: Path, mode: int, what: str) -> None:
    st = os.fstat(fd)
    current = stat.S_IMODE(st.st_mode)
    if not current & ~mode & 0o777:
        return
    if st.st_uid == os.geteuid():
        os.fchmod(fd, current & mode)
        _log.info("made %s %s private (mode %o, was %o)", what, path, current & mode, current)
        return
    _log.warning("%s %s is mode %o and owned by uid %d, not by this process (uid %d): others may read it; "
                 "its owner should run: chmod %o %s", what, path, current, st.st_uid, os.geteuid(), mode, path)
