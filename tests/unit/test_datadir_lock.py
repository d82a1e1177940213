"""One writer per data dir: the lock, its holder's details, and what happens when the holder dies."""
from __future__ import annotations

import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from dwray.core.datadir_lock import LOCK_FILE, DataDirLock, LockHolder, RayEndpoint
from dwray.errors import DataDirInUse

# A separate process that takes the lock, says so, and then waits to be told to go (or killed).
HOLDER_SCRIPT = """
import sys
from dwray.core.datadir_lock import DataDirLock, LockHolder
lock = DataDirLock(sys.argv[1]).acquire(LockHolder.this_process("a test holder"))
print("HELD", flush=True)
sys.stdin.readline()
lock.release()
print("RELEASED", flush=True)
"""


class HolderProcess:
    def __init__(self, data_dir: Path, *args: str) -> None:
        self.process = subprocess.Popen([sys.executable, "-c", HOLDER_SCRIPT, str(data_dir), *args],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout.readline().strip() == "HELD"

    def release(self) -> None:
        self.process.stdin.write("\n")
        self.process.stdin.flush()
        assert self.process.stdout.readline().strip() == "RELEASED"

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(30)
        self.process.stdin.close()
        self.process.stdout.close()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


def me(started_by: str = "the test") -> LockHolder:
    return LockHolder.this_process(started_by)


def test_a_second_opener_in_the_same_process_is_refused_with_the_holder_named(data_dir: Path) -> None:
    first = DataDirLock(data_dir).acquire(me("an in-process Warehouse"))
    try:
        with pytest.raises(DataDirInUse) as refused:
            DataDirLock(data_dir).acquire(me("another one"), wait=0.2)
        message = str(refused.value)
        assert message.startswith(f"data dir {data_dir} is in use by an in-process Warehouse (pid {os.getpid()} "
                                  f"on {socket.gethostname()}, since ")
        assert "command: python -m pytest" in message
        assert isinstance(refused.value, OSError)
        assert str(pickle.loads(pickle.dumps(refused.value))) == message
        assert first.held
    finally:
        first.release()
    with DataDirLock(data_dir).acquire(me()) as again:
        assert again.held
    assert not again.held


def test_the_lock_file_and_folder_are_private_and_describe_the_holder(data_dir: Path) -> None:
    endpoint = RayEndpoint("10.0.0.1:6379", "ns", "dwray:supervisor", 42, True)
    holder = LockHolder.this_process("dw up").served_by(endpoint)
    with DataDirLock(data_dir).acquire(holder) as lock:
        assert data_dir.stat().st_mode & 0o777 == 0o700
        assert lock.path == data_dir / LOCK_FILE
        assert lock.path.stat().st_mode & 0o777 == 0o600
        assert LockHolder.from_json(lock.path.read_text()) == holder
        assert DataDirLock(data_dir).holder() == holder
        message = holder.describe()
        assert message.startswith(f"a Ray warehouse started by dw up (pid {os.getpid()} on ")
        assert "in Ray namespace 'ns' at 10.0.0.1:6379" in message
    # Released: the file stays, names no one, and holds nothing.
    assert lock.path.read_text() == ""
    assert DataDirLock(data_dir).holder() is None


def test_holder_looks_without_taking_and_creates_nothing(data_dir: Path) -> None:
    assert DataDirLock(data_dir).holder() is None
    assert not data_dir.exists()
    with DataDirLock(data_dir).acquire(me()):
        assert DataDirLock(data_dir).holder() is not None
        assert DataDirLock(data_dir).holder().pid == os.getpid()


def test_another_process_is_refused_and_gets_it_once_released(data_dir: Path) -> None:
    other = HolderProcess(data_dir)
    try:
        with pytest.raises(DataDirInUse, match=f"in use by a test holder \\(pid {other.process.pid} "):
            DataDirLock(data_dir).acquire(me(), wait=0.2)
        assert DataDirLock(data_dir).holder().pid == other.process.pid
        other.release()
        with DataDirLock(data_dir).acquire(me()):
            assert DataDirLock(data_dir).holder().pid == os.getpid()
    finally:
        other.close()


def test_a_holder_killed_with_sigkill_releases_it(data_dir: Path) -> None:
    other = HolderProcess(data_dir)
    try:
        os.kill(other.process.pid, signal.SIGKILL)
        assert other.process.wait(30) == -signal.SIGKILL
    finally:
        other.close()
    # Its description is still in the file, but nothing holds the lock: that file names no holder.
    assert str(other.process.pid) in (data_dir / LOCK_FILE).read_text()
    assert DataDirLock(data_dir).holder() is None
    with DataDirLock(data_dir).acquire(me(), wait=0):
        assert DataDirLock(data_dir).holder().pid == os.getpid()


def test_acquire_waits_for_a_holder_that_is_letting_go(data_dir: Path) -> None:
    first = DataDirLock(data_dir).acquire(me())
    timer = threading.Timer(0.3, first.release)
    timer.start()
    started = time.monotonic()
    with DataDirLock(data_dir).acquire(me(), wait=10):
        assert 0.2 < time.monotonic() - started < 5
    timer.join()


def test_release_is_idempotent_and_a_lock_object_is_refused_its_own_second_acquire(data_dir: Path) -> None:
    lock = DataDirLock(data_dir).acquire(me())
    with pytest.raises(DataDirInUse):
        lock.acquire(me(), wait=0)
    assert lock.held
    lock.release()
    lock.release()
    assert not lock.held and DataDirLock(data_dir).holder() is None


def test_a_lock_file_with_no_details_still_refuses_and_says_so(data_dir: Path) -> None:
    import fcntl

    data_dir.mkdir()
    fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(DataDirInUse, match="another process \\(it has not said who it is\\)"):
            DataDirLock(data_dir).acquire(me(), wait=0)
    finally:
        os.close(fd)


def test_the_command_line_stops_at_the_first_option(monkeypatch: pytest.MonkeyPatch) -> None:
    """Options may carry secrets (an admin token, a password): they never reach the lock file."""
    monkeypatch.setattr(sys, "argv", ["/usr/bin/dw", "put", "report.csv", "sales/x", "--admin-token", "s3cret"])
    monkeypatch.setitem(sys.modules, "__main__", type(sys)("__main__"))
    assert LockHolder.this_process("x").command == "dw put report.csv sales/x"
