"""LocalDiskBackend: the conformance suite plus what only a filesystem can get wrong."""
from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from dwray.backends.local import TEMP_PREFIX, LocalDiskBackend, _storage_error
from dwray.errors import (
    BlobExists,
    BlobNotFound,
    DurabilityError,
    InvalidArgument,
    StorageError,
    StorageFull,
)
from dwray.testing.backend_conformance import BackendConformance

MiB = 1024 * 1024
REPO = Path(__file__).resolve().parents[2]


class TestLocalDiskConformance(BackendConformance):
    @pytest.fixture
    def backend(self, tmp_path: Path) -> LocalDiskBackend:
        return LocalDiskBackend(tmp_path / "blobs")


@pytest.fixture
def backend(tmp_path: Path) -> LocalDiskBackend:
    return LocalDiskBackend(tmp_path / "root")


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "secret").write_bytes(b"secret")
    return folder


def dot_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob(".*"))


def run_python(code: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# Layout and publishing ------------------------------------------------------


def test_blob_is_a_read_only_file_under_root(backend: LocalDiskBackend) -> None:
    backend.put_blob("a/b/c", [b"on ", b"disk"])
    path = backend.root / "a" / "b" / "c"
    assert path.read_bytes() == b"on disk"
    assert stat.S_IMODE(path.stat().st_mode) == 0o400
    assert path.stat().st_nlink == 1  # the temp name was unlinked
    assert dot_files(backend.root) == []


def test_root_is_created_and_resolved(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "alias").symlink_to(real, target_is_directory=True)
    backend = LocalDiskBackend(tmp_path / "alias")
    assert backend.root == real
    backend.put_bytes("x", b"1")
    assert (real / "x").read_bytes() == b"1"
    fresh = LocalDiskBackend(tmp_path / "new" / "nested")
    assert fresh.root.is_dir()
    assert repr(fresh) == f"LocalDiskBackend(root={str(tmp_path / 'new' / 'nested')!r})"


def test_root_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(StorageError):
        LocalDiskBackend(tmp_path / "file")


def test_vanished_root_is_a_storage_error_not_a_missing_blob(backend: LocalDiskBackend) -> None:
    backend.put_bytes("a", b"x")
    shutil.rmtree(backend.root)
    for call in (lambda: backend.get_blob("a"), lambda: backend.stat_blob("a"), lambda: backend.put_bytes("b", b"y")):
        with pytest.raises(StorageError) as raised:
            call()
        assert not isinstance(raised.value, BlobNotFound)
        assert "ENOENT" in str(raised.value)


def test_put_streams_chunks_without_joining_them(backend: LocalDiskBackend) -> None:
    chunk = bytes(MiB)
    tracemalloc.start()
    try:
        assert backend.put_blob("streamed", (chunk for _ in range(32))) == 32 * MiB
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < MiB  # never a second copy of even one chunk
    assert backend.size("streamed") == 32 * MiB


def test_range_read_does_not_read_the_whole_file(backend: LocalDiskBackend) -> None:
    backend.put_blob("big", (bytes([i]) * MiB for i in range(16)))
    last = b"\x0f" * MiB
    tracemalloc.start()
    try:
        assert backend.get_blob("big", 5 * MiB - 2, 5 * MiB + 2) == b"\x04\x04\x05\x05"
        assert backend.get_ranges("big", [(0, 1), (15 * MiB, None)]) == [b"\x00", last]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 * MiB  # the 1 MiB range once, not the 16 MiB file


# Failures leave nothing behind ---------------------------------------------


def test_failed_put_removes_its_temp_file(backend: LocalDiskBackend) -> None:
    def chunks() -> Iterator[bytes]:
        yield b"x" * 100_000
        assert len(dot_files(backend.root / "d")) == 1  # the temp file exists mid-put
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        backend.put_blob("d/blob", chunks())
    assert list(backend.root.iterdir()) == []  # no temp file, and no folder it made
    backend.put_bytes("d/other", b"y")
    with pytest.raises(TypeError):
        backend.put_blob("d/e/typed", [b"ok", "not bytes"])  # type: ignore[list-item]
    assert dot_files(backend.root) == []
    assert not (backend.root / "d" / "e").exists()
    assert list(backend.list_blobs()) == ["d/other"]


def test_losing_the_publish_race_removes_the_temp_file(backend: LocalDiskBackend) -> None:
    def chunks() -> Iterator[bytes]:
        yield b"outer-1"
        backend.put_bytes("collide", b"inner")  # another writer publishes first
        yield b"outer-2"

    with pytest.raises(BlobExists):
        backend.put_blob("collide", chunks())
    assert backend.get_blob("collide") == b"inner"
    assert dot_files(backend.root) == []


def test_kill_9_mid_put_leaves_no_blob(backend: LocalDiskBackend) -> None:
    code = """
        import sys, time
        from dwray.backends.local import LocalDiskBackend
        def chunks():
            yield b"a" * 65536
            print("writing", flush=True)
            time.sleep(60)
            yield b"b"
        LocalDiskBackend(sys.argv[1]).put_blob("crash/blob", chunks())
    """
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), str(backend.root)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "writing\n"
    finally:
        proc.kill()
        proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()
    assert list(backend.list_blobs()) == []
    assert not backend.exists("crash/blob")
    assert len(dot_files(backend.root)) == 1  # the crashed put's temp file
    assert backend.sweep_temp_files(0) == 1
    assert list(backend.root.iterdir()) == []  # the temp file and its folder are gone
    backend.put_bytes("crash/blob", b"retried")
    assert backend.get_blob("crash/blob") == b"retried"


def test_file_size_limit_is_storage_full(backend: LocalDiskBackend) -> None:
    code = """
        import json, resource, signal, sys
        from dwray.errors import StorageFull
        from dwray.backends.local import LocalDiskBackend
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG instead of dying
        backend = LocalDiskBackend(sys.argv[1])
        backend.put_bytes("before", b"b" * 100_000)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
        backend.put_bytes("small", b"s" * 1000)
        try:
            backend.put_blob("big", (b"x" * 65536 for _ in range(64)))
        except StorageFull as exc:
            print(json.dumps({"error": type(exc).__name__, "message": str(exc)}))
        else:
            print(json.dumps({"error": None}))
    """
    result = run_python(code, str(backend.root))
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)
    assert outcome["error"] == "StorageFull"
    assert "'big'" in outcome["message"] and "EFBIG" in outcome["message"]
    assert "xxxx" not in outcome["message"]
    assert list(backend.list_blobs()) == ["before", "small"]
    assert backend.get_blob("before") == b"b" * 100_000
    assert backend.get_blob("small") == b"s" * 1000
    assert dot_files(backend.root) == []


@pytest.mark.parametrize(
    ("code", "fsync", "error"),
    [
        (errno.ENOSPC, False, StorageFull),
        (errno.EDQUOT, False, StorageFull),
        (errno.EFBIG, False, StorageFull),
        (errno.EIO, False, StorageError),
        (errno.EACCES, False, StorageError),
        (errno.EIO, True, DurabilityError),
        (errno.ENOSPC, True, DurabilityError),
    ],
)
def test_os_errors_are_translated(code: int, fsync: bool, error: type[StorageError]) -> None:
    translated = _storage_error("put", "t/blob", OSError(code, os.strerror(code)), fsync=fsync)
    assert type(translated) is error
    assert isinstance(translated, OSError)
    assert "put" in str(translated) and "'t/blob'" in str(translated)
    assert errno.errorcode[code] in str(translated)


# Symlinks are refused, never followed -------------------------------------


def test_symlinked_folder_is_not_followed(
    backend: LocalDiskBackend, outside: Path, caplog: pytest.LogCaptureFixture
) -> None:
    backend.put_bytes("a/ok", b"ok")
    (backend.root / "evil").symlink_to(outside, target_is_directory=True)
    (backend.root / "a" / "evil").symlink_to(outside, target_is_directory=True)
    for blob_id in ("evil/secret", "a/evil/secret"):
        for call in (
            lambda: backend.get_blob(blob_id),
            lambda: backend.get_ranges(blob_id, [(0, 1)]),
            lambda: backend.stat_blob(blob_id),
            lambda: backend.exists(blob_id),
            lambda: backend.put_bytes(blob_id.replace("secret", "planted"), b"x"),
            lambda: backend.delete_blob(blob_id),
            lambda: list(backend.list_blobs(blob_id.replace("secret", ""))),
        ):
            with pytest.raises(StorageError) as raised:
                call()
            assert "symbolic link" in str(raised.value)
    with caplog.at_level("WARNING", logger="dwray.backends.local"):
        assert list(backend.list_blobs()) == ["a/ok"]
    assert "symbolic link" in caplog.text
    assert backend.delete_prefix("") == 1
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]
    assert (outside / "secret").read_bytes() == b"secret"


def test_symlinked_file_is_not_followed(backend: LocalDiskBackend, outside: Path) -> None:
    (backend.root / "link").symlink_to(outside / "secret")
    (backend.root / "dir").mkdir()
    (backend.root / "dir" / "link").symlink_to(outside / "secret")
    for blob_id in ("link", "dir/link"):
        for call in (
            lambda: backend.get_blob(blob_id),
            lambda: backend.get_blob(blob_id, 0, 3),
            lambda: backend.stat_blob(blob_id),
            lambda: backend.size(blob_id),
            lambda: backend.put_bytes(blob_id, b"overwrite"),
            lambda: backend.delete_blob(blob_id),
        ):
            with pytest.raises(StorageError) as raised:
                call()
            assert "symbolic link" in str(raised.value)
    assert list(backend.list_blobs()) == []
    assert (backend.root / "link").is_symlink() and (backend.root / "dir" / "link").is_symlink()
    assert (outside / "secret").read_bytes() == b"secret"


def test_symlink_pointing_inside_the_root_is_refused_too(backend: LocalDiskBackend) -> None:
    backend.put_bytes("real/blob", b"x")
    (backend.root / "alias").symlink_to(backend.root / "real", target_is_directory=True)
    with pytest.raises(StorageError):
        backend.get_blob("alias/blob")
    assert list(backend.list_blobs()) == ["real/blob"]


@pytest.mark.timeout(30)
def test_fifo_under_root_is_refused_without_hanging(backend: LocalDiskBackend) -> None:
    os.mkfifo(backend.root / "pipe")
    with pytest.raises(StorageError):
        backend.get_blob("pipe")
    with pytest.raises(StorageError):
        backend.stat_blob("pipe")
    with pytest.raises(StorageError):
        backend.delete_blob("pipe")
    assert list(backend.list_blobs()) == []


def test_stray_files_are_not_listed(backend: LocalDiskBackend) -> None:
    backend.put_bytes("d/real", b"x")
    (backend.root / "has space").write_bytes(b"")
    (backend.root / ".hidden").write_bytes(b"")
    (backend.root / "d" / "caf\u00e9").write_bytes(b"")
    (backend.root / "odd dir").mkdir()
    (backend.root / "odd dir" / "inside").write_bytes(b"")
    assert list(backend.list_blobs()) == ["d/real"]


# Folders and housekeeping ---------------------------------------------------


def test_delete_prunes_folders_it_empties(backend: LocalDiskBackend) -> None:
    backend.put_bytes("a/b/c", b"1")
    backend.put_bytes("a/d", b"2")
    backend.delete_blob("a/b/c")
    assert not (backend.root / "a" / "b").exists()
    assert (backend.root / "a").is_dir()
    backend.delete_blob("a/d")
    assert not (backend.root / "a").exists()
    assert backend.root.is_dir()
    assert list(backend.root.iterdir()) == []


def test_sweep_removes_only_stale_temp_files(backend: LocalDiskBackend, outside: Path) -> None:
    backend.put_bytes("x/blob", b"keep")
    hour_ago = time.time() - 3600
    stale = [backend.root / f"{TEMP_PREFIX}aaaa", backend.root / "x" / f"{TEMP_PREFIX}bbbb"]
    fresh = backend.root / "x" / f"{TEMP_PREFIX}cccc"
    untouched = [backend.root / ".other", outside / f"{TEMP_PREFIX}dddd"]
    for path in [*stale, fresh, *untouched]:
        path.write_bytes(b"partial")
    for path in [*stale, *untouched]:
        os.utime(path, (hour_ago, hour_ago))
    (backend.root / "link").symlink_to(outside, target_is_directory=True)

    (backend.root / "empty" / "nested").mkdir(parents=True)
    assert backend.sweep_temp_files(600) == 2
    assert not (backend.root / "empty").exists()
    assert not any(path.exists() for path in stale)
    assert fresh.exists() and all(path.exists() for path in untouched)
    assert backend.get_blob("x/blob") == b"keep"
    assert backend.sweep_temp_files(0) == 1
    assert not fresh.exists()
    assert backend.sweep_temp_files(0) == 0
    with pytest.raises(InvalidArgument):
        backend.sweep_temp_files(-1)
