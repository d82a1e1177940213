"""Memory pressure for real: levels set just above this node's memory in use, a subprocess that
fills memory in two steps, and an in-process warehouse that sheds its caches at warning, refuses
new writes and large reads at critical (small reads go on), and works again once memory is back.

The same check runs in a Ray driver's ``RayWarehouse`` (it is this ``Warehouse``), and the
gateway maps ``Backpressure`` to ``503 SlowDown`` (``dwray.s3.errors``).
"""
from __future__ import annotations

import select
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from dwray.config import MemoryConfig
from dwray.core.memory_pressure import read_memory
from dwray.core.warehouse import Warehouse
from dwray.errors import Backpressure, ObjectNotFound
from tests.conftest import make_config

GiB = 1 << 30
LARGE_READ = 64 << 10
DEADLINE = 60.0

# Holds one more chunk of touched pages for each line it reads, saying when it is resident.
FILLER = """
import sys
held = []
for line in sys.stdin:
    held.append(bytes([len(held) % 255 + 1]) * int(sys.argv[1]))
    print(len(held), flush=True)
"""


class Filler:
    """A subprocess that fills memory a chunk at a time, for as long as it runs."""

    def __init__(self, chunk: int) -> None:
        self.chunk = chunk
        self.proc = subprocess.Popen([sys.executable, "-c", FILLER, str(chunk)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        self.chunks = 0

    def grow_until(self, check: Callable[[], str], level: str, most: int) -> None:
        """Add chunks until ``check()`` says ``level``; at most ``most`` chunks in all, within the deadline."""
        deadline = time.monotonic() + DEADLINE
        while check() != level:
            assert self.chunks < most, f"{self.chunks} chunks of {self.chunk} bytes and still not {level}"
            assert self.proc.stdin is not None and self.proc.stdout is not None
            self.proc.stdin.write("more\n")
            self.proc.stdin.flush()
            ready, _, _ = select.select([self.proc.stdout], [], [], max(deadline - time.monotonic(), 0))
            assert ready, f"the filler did not hold chunk {self.chunks + 1} within {DEADLINE} s"
            self.chunks = int(self.proc.stdout.readline())

    def exit(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=DEADLINE)


def until(check: Callable[[], str], level: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while (seen := check()) != level:
        assert time.monotonic() < deadline, f"memory pressure stayed {seen}, never {level}"
        time.sleep(0.05)


def test_a_real_allocation_moves_the_levels_and_the_warehouse_follows(tmp_path: Path) -> None:
    baseline = read_memory()
    # Warning 1.25 GiB above what is in use now, critical 2 GiB above: the filler adds chunks until
    # each level is reached, so what else on the node moves meanwhile only changes how many. Normal
    # again below 1.125 GiB above: a VM's counters may keep a few hundred MiB after the filler exits.
    unit = min(GiB, (baseline.limit - baseline.used) // 6)
    memory = MemoryConfig(warning=(baseline.used + 1.25 * unit) / baseline.limit,
                          critical=(baseline.used + 2 * unit) / baseline.limit,
                          hysteresis=(unit / 8) / baseline.limit, interval=0.2, retry_after=3,
                          large_read=LARGE_READ)
    config = make_config(tmp_path / "data").model_copy(update={"memory": memory})
    with Warehouse(config) as wh:
        assert wh.memory is not None
        try:
            wh.create_bucket("pressure")
            wh.put("pressure", "small", b"s" * 1000)
            wh.put("pressure", "large", b"L" * LARGE_READ)
            assert wh.memory.check() == "normal"
            assert wh._buckets and "sealing=1 keys" in repr(wh.data_keys)
            filler = Filler(unit // 4)
            # Up to 5 units (a VM's counters may show only part of what was touched), within the headroom.
            most = min(20, int(0.9 * (baseline.limit - baseline.used)) // filler.chunk)
            try:
                filler.grow_until(wh.memory.check, "warning", most)
                # Caches shed; nothing refused yet.
                assert not wh._buckets and "sealing=0 keys, opening=0 keys" in repr(wh.data_keys)
                wh.put("pressure", "at-warning", b"w" * 1000)

                filler.grow_until(wh.memory.check, "critical", most)
                for refused_call in (lambda: wh.put("pressure", "refused", b"r" * 10),
                                     lambda: wh.copy("pressure", "small", "pressure", "copied"),
                                     lambda: wh.get("pressure", "large")):
                    with pytest.raises(Backpressure) as refused:
                        refused_call()
                    assert refused.value.retry_after == 3
                    assert "memory is critical" in str(refused.value) and "bytes in use of" in str(refused.value)
                assert "a large read (65536 bytes) refused" in str(refused.value)
                assert wh.get("pressure", "small") == b"s" * 1000  # small reads go on
                assert wh.get("pressure", "large", range=(0, 99)) == b"L" * 100
                with pytest.raises(ObjectNotFound):  # refused before anything was stored
                    wh.head("pressure", "refused")
            finally:
                filler.exit()
            until(wh.memory.check, "normal")
            wh.put("pressure", "after", b"a" * 1000)
            assert wh.get("pressure", "large") == b"L" * LARGE_READ
        finally:
            wh.memory.stop()
