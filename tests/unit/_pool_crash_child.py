"""Run one tier move and SIGKILL this process at a chosen step (test_pool_tiered's crash tests).

usage: python _pool_crash_child.py ROOT STEP

ROOT holds the ``hot`` and ``cold`` folders and ``index/pool.db`` the test
made; STEP is one of ``STEPS``. The process kills itself with SIGKILL the
first time the move reaches STEP, so nothing of Python's shutdown runs: what
is on disk is what a power cut or ``kill -9`` would leave.
"""
from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

from dwray.backends.base import BytesLike, as_byte_view
from dwray.backends.local import LocalDiskBackend
from dwray.backends.pool_index import BlobRow
from dwray.backends.tiered import TieredBackend

STEPS = ("during-copy", "after-copy", "after-switch", "before-hot-delete", "after-hot-delete")
BLOCK_SIZE = 4096


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class _Cold(LocalDiskBackend):
    def __init__(self, root: Path, step: str) -> None:
        super().__init__(root)
        self.step = step

    def put_blob(self, blob_id: str, chunks: Iterable[BytesLike]) -> int:
        if self.step != "during-copy":
            return super().put_blob(blob_id, chunks)

        def half_then_die() -> Iterator[memoryview]:
            for chunk in chunks:
                view = as_byte_view(chunk)
                yield view[: len(view) // 2]
                _die()

        return super().put_blob(blob_id, half_then_die())


class _Hot(LocalDiskBackend):
    def __init__(self, root: Path, step: str) -> None:
        super().__init__(root)
        self.step = step

    def delete_blob(self, blob_id: str) -> None:
        super().delete_blob(blob_id)
        if self.step == "after-hot-delete":
            _die()


class _DyingTiered(TieredBackend):
    def __init__(self, root: Path, step: str) -> None:
        super().__init__(_Hot(root / "hot", step), _Cold(root / "cold", step), root / "index" / "pool.db",
                         after_seconds=0, block_size=BLOCK_SIZE)
        self.step = step

    def _copy_to_cold(self, row: BlobRow) -> None:
        super()._copy_to_cold(row)
        if self.step == "after-copy":
            _die()

    def _switch_to_cold(self, row: BlobRow) -> None:
        super()._switch_to_cold(row)
        if self.step == "after-switch":
            _die()

    def _drop_hot_copy(self, row: BlobRow) -> None:
        if self.step == "before-hot-delete":
            _die()
        super()._drop_hot_copy(row)


def main(argv: list[str]) -> int:
    root, step = Path(argv[1]), argv[2]
    if step not in STEPS:
        print(f"unknown step {step!r}; one of {', '.join(STEPS)}", file=sys.stderr)
        return 2
    pool = _DyingTiered(root, step)
    pool.move_due()
    print(f"the move finished without reaching step {step!r}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
