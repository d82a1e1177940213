"""A full disk and a failing fsync are errors to the caller, never acknowledged writes (DESIGN.md 3).

Each case runs a child process that writes a few objects, then turns a fault on
(``RLIMIT_FSIZE``, a full 2 MiB tmpfs, or ``os.fsync`` wrapped to fail with EIO)
and tries one more put, the *victim*. The child reports what the put raised, so
the victim is never acknowledged; it then clears the fault and writes again to
show the warehouse is not wedged. The parent (a fresh process) then checks that
the earlier objects read back intact, that the victim is neither readable nor
listed, and that no temp file or unreferenced blob was left behind: a failed
put cleans up after itself at once, it does not wait for the sweeper.

Which error is right:

- a put whose *blob* does not fit fails in the backend, before the catalog is
  touched: ``StorageFull`` (EFBIG under RLIMIT_FSIZE, ENOSPC on a full disk);
- a put whose blob fits but whose catalog commit does not (SQLite's WAL cannot
  grow) fails with ``CatalogError``, and the blob it had stored is removed;
- an fsync failure is ``DurabilityError``, whether on the blob or its folder.
"""
from __future__ import annotations

import gc
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from dwray.config import AuditConfig
from dwray.core.warehouse import Warehouse
from dwray.errors import CatalogError, ObjectNotFound
from tests.conftest import make_config

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "fault-bucket"
# (name, size): one empty, one single-frame, multi-frame ones (4 KiB frames).
EARLIER = (("early/empty", 0), ("early/small", 100), ("early/frames", 5 * 4096 + 17), ("early/big", 40 * 1024))


def content(name: str, size: int) -> bytes:
    return random.Random(name).randbytes(size)


CHILD = r'''
import errno, hashlib, json, os, random, resource, signal, sys
from pathlib import Path

from dwray.config import AuditConfig, DwrayConfig, PipelineConfig, StorageConfig
from dwray.errors import DwrayError
from dwray.core.warehouse import Warehouse

args = json.loads(sys.argv[1])
data_dir = Path(args["data_dir"])
out = sys.stdout

def say(*words):
    out.write(" ".join(str(w) for w in words) + "\n")
    out.flush()

def content(name, size):
    return random.Random(name).randbytes(size)

# No audit log: its own files would meet the faults first, and these tests are about the blob and catalog.
config = DwrayConfig(data_dir=data_dir, storage=StorageConfig(backend="local"),
                     pipeline=PipelineConfig(frame_size=4096), audit=AuditConfig(enabled=False))
wh = Warehouse(config)
wh.create_bucket(args["bucket"])
for name, size in args["earlier"]:
    wh.put(args["bucket"], name, content(name, size))
    say("ACK", name)

fault = args["fault"]
blob_root = os.path.realpath(config.blob_root) + "/"
hits = []

def under_root(fd):
    try:
        return (os.readlink(f"/proc/self/fd/{fd}") + "/").startswith(blob_root)
    except OSError:
        return False

if fault.startswith("rlimit"):
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    limit = args["limit"]
    wal = data_dir / "catalog.db-wal"
    say("WAL", wal.stat().st_size)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    def undo():
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
elif fault.startswith("fsync"):
    real_fsync = os.fsync
    want_dir = fault == "fsync_dir"
    def failing_fsync(fd):
        if under_root(fd):
            is_dir = os.path.isdir(os.readlink(f"/proc/self/fd/{fd}"))
            # For folders, only the fsync that makes a published blob's name durable.
            if is_dir == want_dir and (not want_dir or sys._getframe(2).f_code.co_name == "_put_in"):
                hits.append(fd)
                raise OSError(errno.EIO, "Input/output error (injected)")
        return real_fsync(fd)
    os.fsync = failing_fsync
    def undo():
        os.fsync = real_fsync
elif fault == "tmpfs_catalog":
    # Fill the disk but for one page: the victim's blob fits, SQLite's WAL cannot grow.
    st = os.statvfs(data_dir)
    filler = data_dir.parent / "filler"
    with open(filler, "wb") as handle:
        handle.write(b"\0" * ((st.f_bavail - 1) * st.f_frsize))
    say("FREE", os.statvfs(data_dir).f_bavail)
    def undo():
        filler.unlink()
elif fault == "tmpfs_blob":
    say("FREE", os.statvfs(data_dir).f_bavail * os.statvfs(data_dir).f_frsize)
    def undo():
        pass
else:
    raise SystemExit(f"unknown fault {fault}")

victim = content("victim", args["victim_size"])
try:
    wh.put(args["bucket"], "victim", iter([victim[i:i + 65536] for i in range(0, len(victim), 65536)]))
    say("ACK", "victim")
except DwrayError as exc:
    say("RAISED", type(exc).__name__, json.dumps(str(exc)))
except BaseException as exc:
    say("RAISED-FOREIGN", type(exc).__name__, json.dumps(repr(exc)))
say("HITS", len(hits))
say("LISTED", json.dumps([info.key for info in wh.iter_objects(args["bucket"])]))
if args["recover"]:
    undo()
    wh.put(args["bucket"], "recovered", content("recovered", 9000))
    say("ACK", "recovered")
wh.close()
say("DONE")
'''


def run_child(data_dir: Path, fault: str, victim_size: int, *, limit: int = 0, recover: bool = True) -> list[str]:
    args = {"data_dir": str(data_dir), "bucket": BUCKET, "earlier": EARLIER, "fault": fault,
            "victim_size": victim_size, "limit": limit, "recover": recover}
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.pop("DWRAY_CONFIG", None)
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(args)], capture_output=True, text=True,
                          timeout=120, env=env, cwd=ROOT, check=False)
    lines = proc.stdout.splitlines()
    assert proc.returncode == 0 and lines[-1:] == ["DONE"], f"child failed: {lines} {proc.stderr[-3000:]}"
    return lines


def line(lines: list[str], word: str) -> str:
    """The rest of the one line that starts with ``word``."""
    found = [entry.partition(" ")[2] for entry in lines if entry.partition(" ")[0] == word]
    assert len(found) == 1, f"expected one {word} line in {lines}"
    return found[0]


def check_child_saw_failure(lines: list[str], error: str) -> str:
    """The victim's put raised ``error`` (a dwray error), was never acknowledged and never listed."""
    assert "ACK victim" not in lines, f"a put that could not be stored was acknowledged: {lines}"
    assert not any(entry.startswith("RAISED-FOREIGN") for entry in lines), f"non-dwray error escaped: {lines}"
    raised, _, message = line(lines, "RAISED").partition(" ")
    assert raised == error, f"put raised {raised}: {message}"
    listed = json.loads(line(lines, "LISTED"))
    assert listed == sorted(name for name, _ in EARLIER), "the failed put is listed (or an earlier one is gone)"
    assert all(f"ACK {name}" in lines for name, _ in EARLIER)
    return json.loads(message)


def check_data_dir(data_dir: Path, *, recovered: bool, audit: bool = True) -> None:
    """From this (fresh) process: earlier objects intact, victim absent, no debris."""
    config = make_config(data_dir).model_copy(update={"audit": AuditConfig(enabled=audit)})
    with Warehouse(config) as wh:
        for name, size in EARLIER:
            assert wh.get(BUCKET, name) == content(name, size), f"{name} changed"
        with pytest.raises(ObjectNotFound):
            wh.get(BUCKET, "victim")
        expected = sorted(name for name, _ in EARLIER) + (["recovered"] if recovered else [])
        assert sorted(info.key for info in wh.iter_objects(BUCKET)) == expected
        if recovered:
            assert wh.get(BUCKET, "recovered") == content("recovered", 9000)
        root = data_dir / "blobs"
        files = {os.path.relpath(os.path.join(folder, name), root)
                 for folder, _, names in os.walk(root) for name in names}
        assert not [f for f in files if os.path.basename(f).startswith(".tmp-")], f"temp file left: {files}"
        assert files == wh.catalog.referenced_blobs("local"), "the failed put left an unreferenced blob"


def test_blob_over_rlimit_fsize_is_storage_full(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    lines = run_child(data_dir, "rlimit_blob", victim_size=512 * 1024, limit=64 * 1024)
    message = check_child_saw_failure(lines, "StorageFull")
    assert "EFBIG" in message
    check_data_dir(data_dir, recovered=True)


def test_catalog_over_rlimit_fsize_is_catalog_error(tmp_path: Path) -> None:
    """The blob (1000 bytes) fits under the limit, the WAL append past it does not."""
    data_dir = tmp_path / "data"
    limit = 16 * 1024
    lines = run_child(data_dir, "rlimit_catalog", victim_size=1000, limit=limit)
    assert int(line(lines, "WAL")) > limit, "the WAL must already be past the limit for this test"
    message = check_child_saw_failure(lines, "CatalogError")
    assert "catalog" in message
    check_data_dir(data_dir, recovered=True)


def test_failing_blob_fsync_is_durability_error(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    lines = run_child(data_dir, "fsync_file", victim_size=30 * 1024)
    assert int(line(lines, "HITS")) == 1
    message = check_child_saw_failure(lines, "DurabilityError")
    assert "fsync" in message and "EIO" in message
    check_data_dir(data_dir, recovered=True)


def test_failing_folder_fsync_after_publish_is_durability_error(tmp_path: Path) -> None:
    """The blob was already linked under its name; the failed folder fsync must take it back."""
    data_dir = tmp_path / "data"
    lines = run_child(data_dir, "fsync_dir", victim_size=30 * 1024)
    assert int(line(lines, "HITS")) == 1
    message = check_child_saw_failure(lines, "DurabilityError")
    assert "fsync" in message and "EIO" in message
    check_data_dir(data_dir, recovered=True)


class _Tmpfs:
    """A 2 MiB tmpfs mounted for one test (we run as root)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> Path:
        self.path.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(self.path)],
                       check=True, capture_output=True)
        return self.path

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if subprocess.run(["umount", str(self.path)], capture_output=True, check=False).returncode == 0:
            return
        gc.collect()  # a failed test may hold the last reference to an open catalog
        if subprocess.run(["umount", str(self.path)], capture_output=True, check=False).returncode == 0:
            return
        subprocess.run(["umount", "-l", str(self.path)], check=True, capture_output=True)
        if exc_type is None:
            raise AssertionError("the tmpfs was still busy: a closed warehouse left a file open")


def test_full_tmpfs_blob_is_storage_full(tmp_path: Path) -> None:
    """A real full disk: a 4 MiB incompressible object on a 2 MiB filesystem."""
    with _Tmpfs(tmp_path / "mnt") as mnt:
        data_dir = mnt / "data"
        lines = run_child(data_dir, "tmpfs_blob", victim_size=4 << 20)
        assert int(line(lines, "FREE")) < 4 << 20
        message = check_child_saw_failure(lines, "StorageFull")
        assert "ENOSPC" in message
        check_data_dir(data_dir, recovered=True)
        # The failed put gave its space back: another 1 MiB still fits.
        with Warehouse(make_config(data_dir)) as wh:
            wh.put(BUCKET, "one-mib", os.urandom(1 << 20))


def test_full_tmpfs_catalog_is_catalog_error_and_data_stays_readable(tmp_path: Path) -> None:
    """A real full disk where the blob fits but SQLite cannot commit; reads must still work on the full disk."""
    with _Tmpfs(tmp_path / "mnt") as mnt:
        data_dir = mnt / "data"
        lines = run_child(data_dir, "tmpfs_catalog", victim_size=10, recover=False)
        assert int(line(lines, "FREE")) == 1
        message = check_child_saw_failure(lines, "CatalogError")
        assert "full" in message
        # The disk is still full (the child kept its filler). With the audit log on, the
        # warehouse refuses to open, naming the log it cannot write: no access goes unrecorded.
        assert os.statvfs(mnt).f_bavail <= 1
        with pytest.raises(CatalogError, match="audit log .* full"):
            Warehouse(make_config(data_dir))
        # Without it, opening and reading work on the full disk.
        check_data_dir(data_dir, recovered=False, audit=False)
        (mnt / "filler").unlink()
        with Warehouse(make_config(data_dir)) as wh:
            wh.put(BUCKET, "recovered", content("recovered", 9000))
        check_data_dir(data_dir, recovered=True)
