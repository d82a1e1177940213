"""Blobs as files under one root folder, durable before ``put_blob`` returns.

Blob id ``a/b/c`` is the file ``<root>/a/b/c``. A put streams its chunks into
``.tmp-<random>`` beside the final name, fsyncs it, publishes it with
``link()`` (atomic, and unlike ``rename()`` it refuses to replace a taken
name), then fsyncs the folder and every folder it had to create. A crash
therefore leaves the whole blob or no blob, plus at worst a temp file that
``sweep_temp_files`` removes. Ids can never name a temp file: id components
never start with a dot.

Paths are walked one component at a time from the root with folder file
descriptors and ``O_NOFOLLOW``, so a symlink planted anywhere under the root is
refused rather than followed, and nothing can swap a path between the check and
the use.
"""
from __future__ import annotations

import errno
import logging
import os
import secrets
import stat
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from dwray.backends.base import (
    BlobStat,
    BytesLike,
    StorageBackend,
    as_byte_view,
    is_valid_blob_id,
    validate_blob_id,
    validate_prefix,
)
from dwray.errors import (
    BlobExists,
    BlobNotFound,
    DurabilityError,
    InvalidArgument,
    InvalidBlobId,
    StorageError,
    StorageFull,
)

__all__ = ["TEMP_PREFIX", "LocalDiskBackend"]

_log = logging.getLogger(__name__)

#: name prefix of in-progress puts; a crash can leave these behind
TEMP_PREFIX = ".tmp-"

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO planted under the root must fail fast, not hang.
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
# Private: only the owner may list the blobs, and a blob is read-only even to it.
_FOLDER_MODE = 0o700
_BLOB_MODE = 0o400
_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT})
# A delete prunes folders it empties; a put that loses that race retries.
_PUT_ATTEMPTS = 16


class _Missing(Exception):
    """A folder on the way to a blob does not exist."""


class _NotAFolder(_Missing):
    """A file sits where a folder on the way to a blob should be."""


class _Vanished(Exception):
    """A concurrent delete pruned the folder a put was about to write in."""


def _storage_error(operation: str, target: str, exc: OSError, *, fsync: bool = False) -> StorageError:
    """Translate an OSError into the dwray error for ``operation`` on ``target``."""
    code = errno.errorcode.get(exc.errno, str(exc.errno)) if exc.errno is not None else "no errno"
    reason = f"{exc.strerror or type(exc).__name__} ({code})"
    if fsync:
        return DurabilityError(operation, target, f"fsync failed: {reason}")
    if exc.errno in _FULL_ERRNOS:
        return StorageFull(operation, target, reason)
    return StorageError(operation, target, reason)


def _symlink_error(operation: str, blob_id: str, where: str) -> StorageError:
    return StorageError(operation, blob_id, f"{where!r} is a symbolic link; refusing to follow it")


def _fsync(fd: int, operation: str, blob_id: str) -> None:
    try:
        os.fsync(fd)
    except OSError as exc:
        raise _storage_error(operation, blob_id, exc, fsync=True) from exc


def _close_all(fds: list[int]) -> None:
    for fd in reversed(fds):
        os.close(fd)


def _lstat_at(dir_fd: int, name: str, operation: str, target: str) -> os.stat_result | None:
    """``lstat`` of ``name`` in a folder, or None if there is no such entry."""
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _storage_error(operation, target, exc) from exc


def _unlink_quietly(dir_fd: int, name: str, inode: int | None = None) -> None:
    """Best-effort cleanup; with ``inode``, only if ``name`` is still that file."""
    try:
        if inode is not None:
            st = _lstat_at(dir_fd, name, "cleanup", name)
            if st is None or st.st_ino != inode:
                return
        os.unlink(name, dir_fd=dir_fd)
    except OSError:
        pass


def _write_all(fd: int, chunks: Iterable[BytesLike], blob_id: str) -> int:
    size = 0
    for chunk in chunks:
        view = as_byte_view(chunk)
        while view:
            try:
                written = os.write(fd, view)
            except OSError as exc:
                raise _storage_error("put", blob_id, exc) from exc
            view = view[written:]
            size += written
    return size


def _pread(fd: int, start: int, stop: int, blob_id: str) -> bytes:
    """Bytes ``[start, stop)`` of a file known to be at least ``stop`` long."""
    want = stop - start
    if want <= 0:
        return b""
    parts: list[bytes] = []
    got = 0
    while got < want:
        # One pread returns at most ~2 GiB on Linux, so big ranges loop.
        try:
            part = os.pread(fd, want - got, start + got)
        except OSError as exc:
            raise _storage_error("get", blob_id, exc) from exc
        if not part:
            raise StorageError("get", blob_id, "the file shrank while it was being read")
        parts.append(part)
        got += len(part)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _make_root_private(root: str) -> None:
    """Close a root an older release left open to its group (0750), when it is ours.

    The folders under it keep their mode; behind a 0700 root no one else can reach them.
    """
    st = os.stat(root)
    if st.st_mode & 0o077 and st.st_uid == os.geteuid():
        os.chmod(root, stat.S_IMODE(st.st_mode) & _FOLDER_MODE)
    elif st.st_mode & 0o077:
        _log.warning("storage root %s is mode %o and owned by uid %d, not by this process: others may list "
                     "its blobs (sealed, but still)", root, stat.S_IMODE(st.st_mode), st.st_uid)


class LocalDiskBackend(StorageBackend):
    """Blobs as read-only files under ``root``, published atomically and durably."""

    name = "local"
    nested_ids_conflict = True

    def __init__(self, root: str | os.PathLike[str]) -> None:
        path = os.path.realpath(os.fspath(root))
        try:
            os.makedirs(path, mode=_FOLDER_MODE, exist_ok=True)
            _make_root_private(path)
        except OSError as exc:
            raise _storage_error("open", path, exc) from exc
        self.root = Path(path)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={str(self.root)!r})"

    # Walking paths --------------------------------------------------------

    def _split(self, blob_id: str) -> list[str]:
        parts = validate_blob_id(blob_id).split("/")
        # validate_blob_id already rules out escapes; this guards against a
        # future loosening of it.
        resolved = os.path.normpath(os.path.join(self.root, *parts))
        if os.path.commonpath([resolved, self.root]) != str(self.root):
            raise InvalidBlobId(blob_id, "resolves outside the storage root")
        return parts

    def _open_root(self, operation: str, blob_id: str) -> int:
        try:
            return os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise _storage_error(operation, blob_id, exc) from exc

    def _open_folder_at(self, parent: int, part: str, where: str, operation: str, blob_id: str) -> int:
        try:
            return os.open(part, _DIR_FLAGS, dir_fd=parent)
        except FileNotFoundError:
            raise _Missing(where) from None
        except OSError as exc:
            # O_NOFOLLOW | O_DIRECTORY reports a symlink as ENOTDIR (or ELOOP).
            if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
                raise _storage_error(operation, blob_id, exc) from exc
            st = _lstat_at(parent, part, operation, blob_id)
            if st is not None and stat.S_ISLNK(st.st_mode):
                raise _symlink_error(operation, blob_id, where) from None
            raise _NotAFolder(where) from None

    def _make_folder_at(self, parent: int, part: str, where: str, blob_id: str) -> int:
        try:
            return self._open_folder_at(parent, part, where, "put", blob_id)
        except _NotAFolder:
            raise InvalidBlobId(blob_id, f"{where!r} is a blob, so it cannot hold other blobs") from None
        except _Missing:
            pass
        try:
            os.mkdir(part, _FOLDER_MODE, dir_fd=parent)
        except FileExistsError:
            pass  # a concurrent put made it (or a file took the name: see below)
        except FileNotFoundError:
            raise _Vanished from None
        except OSError as exc:
            raise _storage_error("put", blob_id, exc) from exc
        else:
            _fsync(parent, "put", blob_id)  # the new folder's name must survive a crash
        try:
            return self._open_folder_at(parent, part, where, "put", blob_id)
        except _NotAFolder:
            raise InvalidBlobId(blob_id, f"{where!r} is a blob, so it cannot hold other blobs") from None
        except _Missing:
            raise _Vanished from None

    def _walk(self, folders: Sequence[str], operation: str, blob_id: str, *, create: bool = False) -> list[int]:
        """Open the root and each of ``folders`` in turn; return their fds, root
        first. The caller closes them. Raises ``_Missing`` unless ``create``."""
        fds = [self._open_root(operation, blob_id)]
        try:
            for depth, part in enumerate(folders, 1):
                where = "/".join(folders[:depth])
                if create:
                    fds.append(self._make_folder_at(fds[-1], part, where, blob_id))
                else:
                    fds.append(self._open_folder_at(fds[-1], part, where, operation, blob_id))
        except BaseException:
            _close_all(fds)
            raise
        return fds

    @contextmanager
    def _open_blob(self, operation: str, blob_id: str) -> Iterator[tuple[int, int]]:
        """Yield ``(fd, size)`` of a blob's file, opened without following links."""
        *folders, name = self._split(blob_id)
        try:
            fds = self._walk(folders, operation, blob_id)
        except _Missing:
            raise BlobNotFound(blob_id) from None
        try:
            fd = os.open(name, _READ_FLAGS, dir_fd=fds[-1])
        except FileNotFoundError:
            raise BlobNotFound(blob_id) from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise _symlink_error(operation, blob_id, blob_id) from None
            raise _storage_error(operation, blob_id, exc) from exc
        finally:
            _close_all(fds)
        try:
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):
                raise BlobNotFound(blob_id)  # a folder of other blobs
            if not stat.S_ISREG(st.st_mode):
                raise StorageError(operation, blob_id, "is not a regular file")
            yield fd, st.st_size
        finally:
            os.close(fd)

    def _existing(self, dir_fd: int, name: str, operation: str, blob_id: str) -> Exception | None:
        """The error for putting ``name`` where something may already be."""
        st = _lstat_at(dir_fd, name, operation, blob_id)
        if st is None:
            return None
        if stat.S_ISLNK(st.st_mode):
            return _symlink_error(operation, blob_id, blob_id)
        if stat.S_ISDIR(st.st_mode):
            return InvalidBlobId(blob_id, "is a folder of other blobs, so it cannot be a blob")
        return BlobExists(blob_id)

    # The contract ---------------------------------------------------------

    def put_blob(self, blob_id: str, chunks: Iterable[BytesLike]) -> int:
        *folders, name = self._split(blob_id)
        for _ in range(_PUT_ATTEMPTS):
            try:
                fds = self._walk(folders, "put", blob_id, create=True)
            except _Vanished:
                continue
            try:
                return self._put_in(fds[-1], name, blob_id, chunks)
            except _Vanished:
                continue
            except BaseException:
                self._prune(fds, folders)  # no empty folders left behind either
                raise
            finally:
                _close_all(fds)
        raise StorageError("put", blob_id, "concurrent deletes kept removing its folder")

    def _put_in(self, dir_fd: int, name: str, blob_id: str, chunks: Iterable[BytesLike]) -> int:
        taken = self._existing(dir_fd, name, "put", blob_id)
        if taken is not None:  # fail before reading a possibly huge stream
            raise taken
        temp = TEMP_PREFIX + secrets.token_hex(8)
        try:
            fd = os.open(temp, _TEMP_FLAGS, 0o600, dir_fd=dir_fd)
        except FileNotFoundError:
            raise _Vanished from None
        except OSError as exc:
            raise _storage_error("put", blob_id, exc) from exc
        published = False
        try:
            try:
                size = _write_all(fd, chunks, blob_id)
                try:
                    os.fchmod(fd, _BLOB_MODE)
                    inode = os.fstat(fd).st_ino
                except OSError as exc:
                    raise _storage_error("put", blob_id, exc) from exc
                _fsync(fd, "put", blob_id)
            finally:
                os.close(fd)
            try:
                os.link(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
            except FileExistsError:
                raise self._existing(dir_fd, name, "put", blob_id) or BlobExists(blob_id) from None
            except OSError as exc:
                raise _storage_error("put", blob_id, exc) from exc
            published = True
            _unlink_quietly(dir_fd, temp)
            _fsync(dir_fd, "put", blob_id)
            return size
        except BaseException:
            if published:
                # Published but not durable: take it back rather than leave a
                # blob the caller was told failed.
                _unlink_quietly(dir_fd, name, inode)
            _unlink_quietly(dir_fd, temp)
            raise

    def get_blob(self, blob_id: str, start: int = 0, end: int | None = None) -> bytes:
        with self._open_blob("get", blob_id) as (fd, size):
            self.check_range(start, end, size)
            return _pread(fd, min(start, size), size if end is None else min(end, size), blob_id)

    def get_ranges(self, blob_id: str, ranges: Sequence[tuple[int, int | None]]) -> list[bytes]:
        """Open the file once for all ranges."""
        with self._open_blob("get", blob_id) as (fd, size):
            for start, end in ranges:
                self.check_range(start, end, size)
            return [
                _pread(fd, min(start, size), size if end is None else min(end, size), blob_id)
                for start, end in ranges
            ]

    def delete_blob(self, blob_id: str) -> None:
        *folders, name = self._split(blob_id)
        try:
            fds = self._walk(folders, "delete", blob_id)
        except _Missing:
            return
        try:
            dir_fd = fds[-1]
            st = _lstat_at(dir_fd, name, "delete", blob_id)
            if st is None or stat.S_ISDIR(st.st_mode):
                return
            if stat.S_ISLNK(st.st_mode):
                raise _symlink_error("delete", blob_id, blob_id)
            if not stat.S_ISREG(st.st_mode):
                raise StorageError("delete", blob_id, "is not a regular file")
            try:
                os.unlink(name, dir_fd=dir_fd)
            except FileNotFoundError:
                return  # a concurrent delete won
            except OSError as exc:
                raise _storage_error("delete", blob_id, exc) from exc
            _fsync(dir_fd, "delete", blob_id)
            self._prune(fds, folders)
        finally:
            _close_all(fds)

    @staticmethod
    def _prune(fds: list[int], folders: Sequence[str]) -> None:
        """Remove folders left empty, deepest first. Best effort: a folder that
        reappears after a crash is harmless, rmdir refuses any folder a
        concurrent put is writing in, and a put whose folder is removed before
        it starts writing retries."""
        for depth in range(len(folders) - 1, -1, -1):
            try:
                os.rmdir(folders[depth], dir_fd=fds[depth])
                os.fsync(fds[depth])
            except OSError:
                return

    def list_blobs(self, prefix: str = "") -> Iterator[str]:
        validate_prefix(prefix)
        folder, _, partial = prefix.rpartition("/")
        return self._list(folder.split("/") if folder else [], partial, prefix)

    def _list(self, folders: list[str], partial: str, prefix: str) -> Iterator[str]:
        try:
            fds = self._walk(folders, "list", prefix)
        except _Missing:
            return
        try:
            base = "".join(part + "/" for part in folders)
            yield from self._list_folder(fds[-1], base, partial)
        finally:
            _close_all(fds)

    def _list_folder(self, fd: int, base: str, partial: str) -> Iterator[str]:
        subfolders, files, _ = self._scan(fd, base)
        # Sorting a folder "x" as "x/" orders it exactly where its ids sort.
        entries = sorted([(name + "/", name, True) for name in subfolders] + [(name, name, False) for name in files])
        for _, name, is_folder in entries:
            if not name.startswith(partial):
                continue
            if not is_folder:
                yield base + name
                continue
            try:
                child = self._open_folder_at(fd, name, base + name, "list", base + name)
            except _Missing:
                continue  # removed since the scan
            try:
                yield from self._list_folder(child, base + name + "/", "")
            finally:
                os.close(child)

    def _scan(self, fd: int, base: str) -> tuple[list[str], list[str], list[str]]:
        """Split a folder's entries into subfolders, blob files and temp files.
        Symlinks and names that are not valid id components are skipped."""
        subfolders: list[str] = []
        files: list[str] = []
        temps: list[str] = []
        try:
            with os.scandir(fd) as entries:
                for entry in entries:
                    name = entry.name
                    if entry.is_symlink():
                        _log.warning("ignoring symbolic link %r under storage root %s", base + name, self.root)
                    elif name.startswith(TEMP_PREFIX):
                        if entry.is_file(follow_symlinks=False):
                            temps.append(name)
                    elif not is_valid_blob_id(name):
                        continue
                    elif entry.is_dir(follow_symlinks=False):
                        subfolders.append(name)
                    elif entry.is_file(follow_symlinks=False):
                        files.append(name)
        except OSError as exc:
            raise _storage_error("list", base or "/", exc) from exc
        return subfolders, files, temps

    def stat_blob(self, blob_id: str) -> BlobStat:
        *folders, name = self._split(blob_id)
        try:
            fds = self._walk(folders, "stat", blob_id)
        except _Missing:
            raise BlobNotFound(blob_id) from None
        try:
            st = _lstat_at(fds[-1], name, "stat", blob_id)
        finally:
            _close_all(fds)
        if st is None or stat.S_ISDIR(st.st_mode):
            raise BlobNotFound(blob_id)
        if stat.S_ISLNK(st.st_mode):
            raise _symlink_error("stat", blob_id, blob_id)
        if not stat.S_ISREG(st.st_mode):
            raise StorageError("stat", blob_id, "is not a regular file")
        return BlobStat(blob_id, st.st_size, st.st_mtime)

    # Housekeeping ---------------------------------------------------------

    def sweep_temp_files(self, older_than_seconds: float) -> int:
        """Remove temp files of puts that crashed, untouched for longer than
        ``older_than_seconds``, and the folders that leaves empty; return how
        many temp files were removed.

        A put in progress rewrites its temp file's mtime with every chunk, so
        pick an age well above the longest stall a live put may have.
        """
        if not isinstance(older_than_seconds, (int, float)) or older_than_seconds < 0:
            raise InvalidArgument(f"older_than_seconds must be a number >= 0, not {older_than_seconds!r}")
        cutoff = time.time() - older_than_seconds
        fd = self._open_root("sweep", "/")
        try:
            return self._sweep_folder(fd, "", cutoff)
        finally:
            os.close(fd)

    def _sweep_folder(self, fd: int, base: str, cutoff: float) -> int:
        subfolders, _, temps = self._scan(fd, base)
        removed = 0
        for name in temps:
            st = _lstat_at(fd, name, "sweep", base + name)
            if st is not None and stat.S_ISREG(st.st_mode) and st.st_mtime < cutoff:
                try:
                    os.unlink(name, dir_fd=fd)
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    raise _storage_error("sweep", base + name, exc) from exc
                removed += 1
        for name in subfolders:
            try:
                child = self._open_folder_at(fd, name, base + name, "sweep", base + name)
            except _Missing:
                continue
            try:
                removed += self._sweep_folder(child, base + name + "/", cutoff)
            finally:
                os.close(child)
            try:
                os.rmdir(name, dir_fd=fd)
            except OSError:
                pass  # not empty: the usual case
        return removed
