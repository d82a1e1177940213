"""One writer per data dir: an exclusive ``flock`` on ``DATA_DIR/warehouse.lock`` that names its holder.

Whatever opens the data dir's own files (the catalog, the keyring, identity,
local blobs) holds this lock for as long as it has them open: an in-process
``Warehouse``, or on Ray the lock holder that ``actors.bootstrap`` starts next
to the plugin tree. A second opener gets ``DataDirInUse`` naming the holder:
how it was started, its pid, host, command and start time, and for a Ray
warehouse the Ray address and namespace that reach it (which is how ``dw``
commands find a running warehouse and go through it instead).

The kernel drops a ``flock`` when the last descriptor of its open file closes,
so a holder that dies, kill -9 included, releases it: the file stays behind,
and a file without a live lock on it holds nothing. ``flock`` locks belong to
the open file, not to the process, so two openers in one process exclude each
other too. The descriptor is close-on-exec: a program this process starts
does not inherit the lock (a bare ``fork`` does, as it shares the open file).

Taking the lock also makes the data dir private: created 0700, or tightened
to 0700 if it exists looser and is ours (``dwray.core.private_files``).
"""
from __future__ import annotations

import fcntl
import json
import os
import shlex
import socket
import sys
import threading
import time
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Self

from dwray.core.private_files import make_private_dir, tighten
from dwray.errors import DataDirInUse

__all__ = ["LOCK_FILE", "DataDirLock", "LockHolder", "RayEndpoint"]

LOCK_FILE = "warehouse.lock"
# A holder writes its details right after taking the lock; a reader that finds
# the lock taken and the file still empty (or half written) looks again for this long.
_DETAILS_WAIT = 0.5
_POLL = 0.05


@dataclass(frozen=True)
class RayEndpoint:
    """Where a Ray warehouse holding a data dir is reached: what a driver passes to ``ray.init``."""

    address: str
    namespace: str
    supervisor: str
    lock_pid: int  # the lock holder actor's process; the holder's ``pid`` is the process that started it
    token_auth: bool  # the cluster wants Ray's auth token (RAY_AUTH_MODE=token)


@dataclass(frozen=True)
class LockHolder:
    """Who holds a data dir: how it was started, by which process, when; and for a Ray warehouse, where."""

    started_by: str
    pid: int
    host: str
    command: str
    started: float
    ray: RayEndpoint | None = None

    @classmethod
    def this_process(cls, started_by: str) -> LockHolder:
        """This process, opening a data dir as ``started_by`` (``"dw up"``, ``"dwray.connect()"`` ...)."""
        return cls(started_by, os.getpid(), socket.gethostname(), _command_line(), time.time())

    def served_by(self, ray: RayEndpoint) -> LockHolder:
        return replace(self, ray=ray)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> LockHolder:
        """The holder a lock file describes; ``ValueError`` when it is not a complete description."""
        try:
            data = json.loads(text)
            ray = data.pop("ray", None)
            return cls(**data, ray=RayEndpoint(**ray) if ray is not None else None)
        except (TypeError, AttributeError) as error:
            raise ValueError(f"not a lock holder description: {error}") from None

    def describe(self) -> str:
        when = datetime.fromtimestamp(self.started).astimezone().strftime("%Y-%m-%d %H:%M:%S %z")
        who = f"{self.started_by} (pid {self.pid} on {self.host}, since {when}; command: {self.command})"
        if self.ray is None:
            return who
        return (f"a Ray warehouse started by {who}, in Ray namespace {self.ray.namespace!r} at "
                f"{self.ray.address}; reach it through dwray.connect() or the dw commands")


def _command_line() -> str:
    """The program and its leading arguments, up to the first option: options may carry secrets."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name:
        program = ["python", "-m", spec.name.removesuffix(".__main__")]
    else:
        program = [Path(sys.argv[0]).name] if sys.argv and sys.argv[0] else ["python"]
    words = []
    for word in sys.argv[1:]:
        if word.startswith("-") and word != "-":  # a lone "-" is standard input, not an option
            break
        words.append(word)
    return shlex.join(program + words)[:300]


class DataDirLock:
    """The exclusive lock on one data dir, taken by ``acquire`` and given back by ``release``.

    Used as ``with DataDirLock(data_dir).acquire(LockHolder.this_process("...")):`` or
    kept by the object that owns the data dir's files and released when it closes them.
    """

    def __init__(self, data_dir: str | Path) -> None:
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / LOCK_FILE
        self._fd: int | None = None
        self._state = threading.Lock()  # release() may race a second release() (Ray's lock holder)

    def __repr__(self) -> str:
        return f"DataDirLock({str(self.data_dir)!r}, held={self.held})"

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, holder: LockHolder, *, wait: float = 1.0) -> DataDirLock:
        """Take the lock and write ``holder`` into the lock file; ``DataDirInUse`` naming the current
        holder if it is still taken after ``wait`` seconds.

        The wait covers a holder that is going away (a closing warehouse, a process
        the kernel is still tearing down) and another opener's probe (``holder()``).
        """
        make_private_dir(self.data_dir)
        tighten(self.data_dir, 0o700, "data dir")
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            deadline = time.monotonic() + wait
            while not _try_lock(fd, fcntl.LOCK_EX):
                if time.monotonic() >= deadline:
                    current = _read_holder(fd)
                    raise DataDirInUse(str(self.data_dir), current.describe() if current is not None
                                       else "another process (it has not said who it is)")
                time.sleep(_POLL)
            os.fchmod(fd, 0o600)
            # In place, not write-and-rename: the lock lives on this inode.
            os.ftruncate(fd, 0)
            os.pwrite(fd, holder.to_json().encode(), 0)
        except BaseException:
            os.close(fd)  # closing drops the lock if it was taken
            raise
        with self._state:
            self._fd = fd
        return self

    def release(self) -> None:
        """Give the lock back (idempotent). The file is emptied first, so it names no one afterwards."""
        with self._state:
            fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)
        finally:
            os.close(fd)

    def holder(self) -> LockHolder | None:
        """Who holds the lock now, or ``None`` when no one does. Takes nothing and creates no file."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except FileNotFoundError:
            return None
        try:
            # A shared lock is granted unless someone holds the exclusive one; it is
            # dropped at once, so a concurrent acquire() only waits a moment.
            if _try_lock(fd, fcntl.LOCK_SH):
                fcntl.flock(fd, fcntl.LOCK_UN)
                return None
            return _read_holder(fd)
        finally:
            os.close(fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _try_lock(fd: int, kind: int) -> bool:
    try:
        fcntl.flock(fd, kind | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _read_holder(fd: int) -> LockHolder | None:
    """The details the current holder wrote, or ``None`` if it has written none (yet)."""
    deadline = time.monotonic() + _DETAILS_WAIT
    while True:
        text = os.pread(fd, 1 << 16, 0).decode(errors="replace")
        try:
            return LockHolder.from_json(text)
        except ValueError:
            if time.monotonic() >= deadline:
                return None
        time.sleep(_POLL / 5)
