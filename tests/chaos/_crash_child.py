"""Child process for the crash-safety tests: writes objects and dies by SIGKILL on cue.

Run as ``python _crash_child.py DATA_DIR SEED POINT NTH``. The child opens a
warehouse on DATA_DIR (local backend, 4 KiB frames), then runs ``plan(SEED)``:
puts of deterministic content (``content(seed, key, version)``), overwrites of
the same keys and a few deletes. Its protocol on stdout, one flushed line each::

    READY
    BEGIN put <key> <version> <sha256>     before calling put
    ACK put <key> <version> <sha256>       after put returned
    BEGIN del <key>  /  ACK del <key>      the same for deletes
    KILL <point> <nth> <callers>           just before it SIGKILLs itself
    DONE                                   the plan finished (no kill fired)

Faults are injected only here, by wrapping functions at runtime (nothing in the
product code knows about it). ``POINT`` names where to die and ``NTH`` on which
matching call (counted from the start of the plan):

    fsync_file_before / fsync_file_after   os.fsync of a blob's temp file
    link_before / link_after               os.link publishing a blob
    unlink_temp_after                      os.unlink of the temp name after the link
    fsync_dir_before / fsync_dir_after     os.fsync of a folder under the blob root
    commit_before / commit_after           Catalog.commit_object
    write_mid                              os.write into a temp file: write half, then die
    none                                   no fault
    hang                                   no fault; after the plan, sleep until killed

Only calls on files under the warehouse's blob root count, so the keyring's and
SQLite's own I/O never trigger a fault.

The parent imports ``plan`` and ``content`` from this module to know what each
acknowledged key must hold.
"""
from __future__ import annotations

import hashlib
import os
import random
import signal
import stat
import sys
import time
from pathlib import Path

FRAME_SIZE = 4096
BUCKET = "crash-bucket"
KEYS = tuple(f"obj/{i:02d}" for i in range(5))
PLAN_LENGTH = 12
MAX_DELETES = 2
POINTS = (
    "fsync_file_before",
    "fsync_file_after",
    "link_before",
    "link_after",
    "unlink_temp_after",
    "fsync_dir_before",
    "fsync_dir_after",
    "commit_before",
    "commit_after",
    "write_mid",
)
# Every put makes at least one call of each point, and a plan has at least
# PLAN_LENGTH - MAX_DELETES puts: a NTH up to this always fires.
MAX_NTH = PLAN_LENGTH - MAX_DELETES


def content(seed: int, key: str, version: int) -> bytes:
    """The bytes of ``version`` of ``key`` in run ``seed``: 0..40 KiB, some compressible."""
    rng = random.Random(f"content/{seed}/{key}/{version}")
    size = rng.choice([0, 1, 100, FRAME_SIZE - 1, FRAME_SIZE, FRAME_SIZE + 1, 3 * FRAME_SIZE + 7,
                       rng.randrange(0, 40 * 1024 + 1), rng.randrange(0, 40 * 1024 + 1),
                       rng.randrange(0, 40 * 1024 + 1)])
    if rng.random() < 0.5:
        return rng.randbytes(size)
    pattern = f"{key} version {version} of run {seed}; ".encode()
    return (pattern * (size // len(pattern) + 1))[:size]


def plan(seed: int) -> list[tuple[str, str, int]]:
    """``[(op, key, version)]``: ``("put", key, v)`` writes ``content(seed, key, v)``; ``("del", key, 0)``."""
    rng = random.Random(f"plan/{seed}")
    versions: dict[str, int] = {}
    live: set[str] = set()
    ops: list[tuple[str, str, int]] = []
    deletes = 0
    for _ in range(PLAN_LENGTH):
        key = rng.choice(KEYS)
        if key in live and deletes < MAX_DELETES and rng.random() < 0.15:
            ops.append(("del", key, 0))
            live.discard(key)
            deletes += 1
            continue
        versions[key] = versions.get(key, 0) + 1
        ops.append(("put", key, versions[key]))
        live.add(key)
    return ops


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Injector:
    """Counts calls that match the chosen point and SIGKILLs the process on the NTH."""

    def __init__(self, point: str, nth: int, blob_root: str) -> None:
        self.point = point
        self.nth = nth
        self.count = 0
        self.blob_root = blob_root.rstrip("/") + "/"

    def under_root(self, fd: int) -> str | None:
        """The path of ``fd`` if it is under the blob root, else None."""
        try:
            path = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            return None
        return path if (path + "/").startswith(self.blob_root) else None

    def check(self, point: str) -> None:
        if point != self.point:
            return
        self.count += 1
        if self.count == self.nth:
            self.die()

    def die(self) -> None:
        callers = []
        frame = sys._getframe(1)
        while frame is not None and len(callers) < 4:
            if "/dwray/" in frame.f_code.co_filename:
                callers.append(frame.f_code.co_name)
            frame = frame.f_back
        sys.stdout.write(f"KILL {self.point} {self.count} {','.join(callers) or '-'}\n")
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(60)  # never reached


def install(injector: Injector) -> None:
    """Wrap os.fsync, os.link, os.unlink, os.write and Catalog.commit_object."""
    from dwray.core.catalog import Catalog

    real_fsync, real_link, real_unlink, real_write = os.fsync, os.link, os.unlink, os.write
    real_commit = Catalog.commit_object

    def fsync(fd: int) -> None:
        path = injector.under_root(fd)
        if path is None:
            return real_fsync(fd)
        kind = "fsync_dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync_file"
        injector.check(kind + "_before")
        real_fsync(fd)
        injector.check(kind + "_after")
        return None

    def link(src, dst, *args, **kwargs):  # type: ignore[no-untyped-def]
        dir_fd = kwargs.get("dst_dir_fd")
        ours = dir_fd is not None and injector.under_root(dir_fd) is not None
        if ours:
            injector.check("link_before")
        result = real_link(src, dst, *args, **kwargs)
        if ours:
            injector.check("link_after")
        return result

    def unlink(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        dir_fd = kwargs.get("dir_fd")
        ours = (dir_fd is not None and injector.under_root(dir_fd) is not None
                and os.fspath(path).startswith(".tmp-"))
        result = real_unlink(path, *args, **kwargs)
        if ours:
            injector.check("unlink_temp_after")
        return result

    def write(fd: int, data) -> int:  # type: ignore[no-untyped-def]
        if injector.point == "write_mid" and len(data) >= 2:
            path = injector.under_root(fd)
            if path is not None and os.path.basename(path).startswith(".tmp-"):
                injector.count += 1
                if injector.count == injector.nth:
                    # Half of this chunk reaches the file, then the process dies.
                    real_write(fd, memoryview(data)[: len(data) // 2])
                    injector.die()
        return real_write(fd, data)

    def commit_object(self, record):  # type: ignore[no-untyped-def]
        injector.check("commit_before")
        result = real_commit(self, record)
        injector.check("commit_after")
        return result

    os.fsync, os.link, os.unlink, os.write = fsync, link, unlink, write
    Catalog.commit_object = commit_object  # type: ignore[method-assign]


def main() -> None:
    data_dir, seed, point, nth = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    from dwray.config import DwrayConfig, PipelineConfig, StorageConfig
    from dwray.core.warehouse import Warehouse
    from dwray.errors import BucketAlreadyExists

    # The points in the blob's write path fire in every put only if every object has a blob: small
    # objects are kept inline otherwise. The commit points (and the async runs) keep the default,
    # so kills around the catalog commit also cover small objects held in their rows.
    blob_point = point not in ("commit_before", "commit_after", "none", "hang")
    inline = {"inline_max_bytes": 0} if blob_point else {}
    config = DwrayConfig(data_dir=data_dir, storage=StorageConfig(backend="local"),
                         pipeline=PipelineConfig(frame_size=FRAME_SIZE, **inline))
    warehouse = Warehouse(config)
    try:
        warehouse.create_bucket(BUCKET)
    except BucketAlreadyExists:
        pass
    if point not in ("none", "hang"):
        install(Injector(point, nth, os.path.realpath(config.blob_root)))
    out = sys.stdout
    out.write("READY\n")
    out.flush()
    for op, key, version in plan(seed):
        if op == "del":
            out.write(f"BEGIN del {key}\n")
            out.flush()
            warehouse.delete(BUCKET, key)
            out.write(f"ACK del {key}\n")
            out.flush()
            continue
        data = content(seed, key, version)
        digest = sha(data)
        out.write(f"BEGIN put {key} {version} {digest}\n")
        out.flush()
        # Several chunks, so that a put is several writes into its temp file.
        chunks = [data[i:i + 5000] for i in range(0, len(data), 5000)] or [b""]
        info = warehouse.put(BUCKET, key, iter(chunks))
        assert info.size == len(data)
        out.write(f"ACK put {key} {version} {digest}\n")
        out.flush()
    out.write("DONE\n")
    out.flush()
    if point == "hang":
        time.sleep(120)
    warehouse.close()


if __name__ == "__main__":
    main()
