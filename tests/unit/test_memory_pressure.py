"""Memory pressure: readings from fake cgroup v2 / v1 trees and a fake /proc, the real machine's
reading, levels with hysteresis, the monitor's listeners and refusals, and caches that shrink."""
from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest

from dwray.builtins.storage import MemoryStoragePlugin
from dwray.config import MemoryConfig
from dwray.core.memory_pressure import MemoryMonitor, MemoryReading, PressureLevels, read_memory, shared_monitor
from dwray.errors import Backpressure, InvalidArgument

GiB = 1 << 30
MACHINE = 16 * GiB
V1_NO_LIMIT = "9223372036854771712"


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def fake_proc(tmp_path: Path, cgroup: str, available: int = 12 * GiB) -> Path:
    proc = tmp_path / "proc"
    write(proc, {"meminfo": f"MemTotal:       {MACHINE // 1024} kB\nMemFree:        1024 kB\n"
                            f"MemAvailable:   {available // 1024} kB\nBuffers:        4 kB\n",
                 "self/cgroup": cgroup})
    return proc


def test_cgroup_v2_reads_the_own_cgroup_without_inactive_file(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    write(root, {"cgroup.controllers": "cpuset cpu io memory pids\n",
                 "app/web/memory.max": f"{2 * GiB}\n", "app/web/memory.current": f"{GiB + 300}\n",
                 "app/web/memory.stat": "anon 1000\nfile 500\ninactive_file 300\nactive_file 200\n",
                 "app/memory.max": "max\n", "app/memory.current": f"{3 * GiB}\n"})
    proc = fake_proc(tmp_path, "0::/app/web\n")
    assert read_memory(root, proc) == MemoryReading(GiB, 2 * GiB, "cgroup-v2")


def test_cgroup_v2_an_ancestors_limit_binds_and_the_nearest_to_its_limit_counts(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    write(root, {"cgroup.controllers": "memory\n",
                 "app/web/memory.max": f"{8 * GiB}\n", "app/web/memory.current": f"{GiB}\n",
                 "app/memory.max": f"{4 * GiB}\n", "app/memory.current": f"{3 * GiB}\n",
                 "app/memory.stat": f"inactive_file {GiB // 2}\n"})
    proc = fake_proc(tmp_path, "0::/app/web\n")
    assert read_memory(root, proc) == MemoryReading(3 * GiB - GiB // 2, 4 * GiB, "cgroup-v2")


def test_cgroup_v2_without_a_limit_below_the_machine_reads_the_machine(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    write(root, {"cgroup.controllers": "memory\n",
                 "app/memory.max": "max\n", "app/memory.current": f"{GiB}\n",
                 "memory.max": f"{64 * GiB}\n", "memory.current": f"{GiB}\n"})  # above the machine's 16: none
    proc = fake_proc(tmp_path, "0::/app\n", available=10 * GiB)
    assert read_memory(root, proc) == MemoryReading(6 * GiB, MACHINE, "machine")


def test_cgroup_v1_memory_controller(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    write(root, {"unified/cgroup.controllers": "hugetlb\n",  # hybrid: v2 mounted, memory on v1
                 "memory/docker/abc/memory.limit_in_bytes": f"{2 * GiB}\n",
                 "memory/docker/abc/memory.usage_in_bytes": f"{GiB + 4096}\n",
                 "memory/docker/abc/memory.stat": "cache 8192\ninactive_file 1\ntotal_inactive_file 4096\n",
                 "memory/docker/memory.limit_in_bytes": V1_NO_LIMIT,
                 "memory/docker/memory.usage_in_bytes": f"{5 * GiB}\n",
                 "memory/memory.limit_in_bytes": V1_NO_LIMIT, "memory/memory.usage_in_bytes": f"{9 * GiB}\n"})
    proc = fake_proc(tmp_path, "5:devices:/docker/abc\n4:memory:/docker/abc\n0::/docker/abc\n")
    assert read_memory(root, proc) == MemoryReading(GiB, 2 * GiB, "cgroup-v1")


@pytest.mark.parametrize("path", ["/kubepods/pod1/abc", "/../outside"])  # unseen, or out of the namespace
def test_cgroup_v1_in_a_namespace_reads_the_mount_itself(tmp_path: Path, path: str) -> None:
    root = tmp_path / "cgroup"
    write(root, {"memory/memory.limit_in_bytes": f"{4 * GiB}\n", "memory/memory.usage_in_bytes": f"{GiB}\n",
                 "outside/memory.limit_in_bytes": f"{GiB}\n", "outside/memory.usage_in_bytes": f"{GiB - 1}\n"})
    proc = fake_proc(tmp_path, f"4:memory,cpu:{path}\n")
    assert read_memory(root, proc) == MemoryReading(GiB, 4 * GiB, "cgroup-v1")


def test_cgroup_v1_without_a_limit_reads_the_machine(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    write(root, {"memory/jobs/1/memory.limit_in_bytes": V1_NO_LIMIT,
                 "memory/jobs/1/memory.usage_in_bytes": f"{GiB}\n",
                 "memory/memory.limit_in_bytes": V1_NO_LIMIT, "memory/memory.usage_in_bytes": f"{GiB}\n"})
    proc = fake_proc(tmp_path, "4:memory:/jobs/1\n", available=15 * GiB)
    assert read_memory(root, proc) == MemoryReading(GiB, MACHINE, "machine")


def test_the_real_machine() -> None:
    reading = read_memory()
    assert reading.source in ("cgroup-v2", "cgroup-v1", "machine")
    assert 0 < reading.used < reading.limit
    if reading.source == "machine":
        total = next(line for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal:"))
        assert reading.limit == int(total.split()[1]) * 1024


def test_levels_enter_at_their_fraction_and_leave_only_below_it_by_the_hysteresis() -> None:
    levels = PressureLevels(0.8, 0.9, 0.05)
    seen = [levels.update(f) for f in (0.5, 0.8, 0.76, 0.749, 0.9, 0.86, 0.849, 0.8, 0.9, 0.2, 0.95, 0.899)]
    assert seen == ["normal", "warning", "warning", "normal", "critical", "critical", "warning", "warning",
                    "critical", "normal", "critical", "critical"]


@pytest.mark.parametrize(("warning", "critical", "hysteresis", "named"), [
    (0.9, 0.8, 0.05, "below the warning level"), (0.0, 0.9, 0.05, "warning level"),
    (0.8, 1.5, 0.05, "critical level"), (0.8, 0.9, 1.0, "hysteresis"), (True, 0.9, 0.05, "warning level")])
def test_levels_refuse_bad_fractions(warning: float, critical: float, hysteresis: float, named: str) -> None:
    with pytest.raises(InvalidArgument, match=named):
        PressureLevels(warning, critical, hysteresis)


class Readings:
    """A reader that returns the readings it is given, one per call (the last one again once used up)."""

    def __init__(self, *fractions: float, limit: int = 4 * GiB) -> None:
        self.readings = [MemoryReading(int(limit * f), limit, "cgroup-v2") for f in fractions]

    def __call__(self) -> MemoryReading:
        return self.readings.pop(0) if len(self.readings) > 1 else self.readings[0]


def test_monitor_tells_listeners_of_each_change_and_refuses_at_critical() -> None:
    config = MemoryConfig(warning=0.5, critical=0.75, hysteresis=0.1, retry_after=7)
    monitor = MemoryMonitor(config, reader=Readings(0.1, 0.6, 0.55, 0.8, 0.6, 0.3))
    changes: list[tuple[str, str, float]] = []

    def broken(old: str, new: str, reading: MemoryReading) -> None:
        raise RuntimeError("a listener that fails")

    monitor.add_listener(broken)
    monitor.add_listener(lambda old, new, reading: changes.append((old, new, reading.fraction)))
    assert [monitor.check() for _ in range(3)] == ["normal", "warning", "warning"]
    monitor.refuse_if_critical("a put")  # warning: nothing refused
    assert monitor.check() == "critical"
    with pytest.raises(Backpressure) as refused:
        monitor.refuse_if_critical("a new write (put)")
    used = int(4 * GiB * 0.8)
    assert refused.value.retry_after == 7
    for part in ("memory is critical", "a new write (put) refused", f"{used} bytes in use of {4 * GiB}",
                 "the cgroup v2 limit", "critical from 75%"):
        assert part in str(refused.value)
    assert monitor.status() == {"level": "critical", "used": used, "limit": 4 * GiB, "fraction": 0.8,
                                "source": "cgroup-v2", "warning": 0.5, "critical": 0.75}
    assert [monitor.check() for _ in range(2)] == ["warning", "normal"]
    monitor.refuse_if_critical("a put")
    assert [(old, new) for old, new, _ in changes] == [
        ("normal", "warning"), ("warning", "critical"), ("critical", "warning"), ("warning", "normal")]
    assert changes[1][2] == pytest.approx(0.8)


def test_monitor_thread_reads_on_its_own_and_a_failed_reading_keeps_the_level() -> None:
    readings = Readings(0.1, 0.97)
    failures: list[str] = []

    def reader() -> MemoryReading:
        if len(readings.readings) == 1 and not failures:  # the thread's first reading fails
            failures.append("once")
            raise OSError("/proc/meminfo: gone")
        return readings()

    monitor = MemoryMonitor(MemoryConfig(interval=0.01), reader=reader)
    assert monitor.status()["used"] is None
    seen: list[str] = []
    changed = threading.Event()
    monitor.add_listener(lambda old, new, reading: (seen.append(new), changed.set()))
    monitor.start()  # the first reading at once
    try:
        assert monitor.running and monitor.status()["fraction"] in (0.1, 0.97)
        assert changed.wait(timeout=30), "the thread never took another reading"
        assert seen == ["critical"] and failures == ["once"]
    finally:
        monitor.stop()
    assert not monitor.running


def test_shared_monitor_is_one_per_config_and_none_when_disabled() -> None:
    assert shared_monitor(MemoryConfig(enabled=False)) is None
    config = MemoryConfig(warning=0.97, critical=0.99, interval=60)
    monitor = shared_monitor(config)
    try:
        assert monitor is not None and monitor.running and monitor.reading is not None
        assert shared_monitor(MemoryConfig(warning=0.97, critical=0.99, interval=60)) is monitor
        assert shared_monitor(MemoryConfig(warning=0.96, critical=0.99, interval=60)) is not monitor
    finally:
        monitor.stop()
        shared_monitor(MemoryConfig(warning=0.96, critical=0.99, interval=60)).stop()
    replacement = shared_monitor(config)  # a stopped monitor is replaced
    assert replacement is not monitor and replacement.running
    replacement.stop()


def test_memory_storage_plugin_sheds_the_least_recently_used_half_under_pressure() -> None:
    plugin = MemoryStoragePlugin(max_bytes=1000)
    for name in "abcd":
        plugin.put_blob(name, b"x" * 100)
    plugin.get_blob("a")  # now the most recently used
    plugin.on_memory_pressure("normal")
    assert plugin.list_blobs() == ["a", "b", "c", "d"]
    plugin.on_memory_pressure("warning")
    assert plugin.list_blobs() == ["a", "d"] and plugin.backend.used_bytes == 200
    plugin.on_memory_pressure("critical")
    assert plugin.list_blobs() == ["a"]
    assert plugin.backend.max_bytes == 1000  # the cap stays: puts may fill it again
    with pytest.raises(InvalidArgument, match="keep"):
        plugin.backend.shrink(1.5)


def test_warehouse_sheds_caches_at_warning_and_refuses_new_writes_and_large_reads_at_critical(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pyarrow as pa

    from dwray.core.warehouse import Warehouse
    from tests.conftest import make_config

    memory = MemoryConfig(warning=0.5, critical=0.75, hysteresis=0.1, interval=3600, large_read=40_000)
    config = make_config(tmp_path / "data", backend="memory").model_copy(update={"memory": memory})
    with Warehouse(config) as wh:
        assert wh.memory is not None
        # The warehouse's own monitor, fed these readings (its thread waits an hour between its own).
        monkeypatch.setattr(wh.memory, "_reader", Readings(0.1, 0.6, 0.8, 0.3))
        try:
            assert wh.memory.check() == "normal"
            wh.create_bucket("bkt")
            for name in "wxyz":
                wh.put("bkt", name, name.encode() * 50_000)  # a blob each, not inline
            assert wh.get("bkt", "w", range=(0, 9)) == b"w" * 10  # now the most recently used
            upload = wh.create_multipart_upload("bkt", "parts")
            assert wh._buckets and "sealing=1 keys" in repr(wh.data_keys)
            held = wh.backend.used_bytes

            assert wh.memory.check() == "warning"
            assert not wh._buckets and "sealing=0 keys, opening=0 keys" in repr(wh.data_keys)
            assert wh.backend.used_bytes <= held // 2 and len(list(wh.backend.list_blobs())) == 2
            assert wh.get("bkt", "w") == b"w" * 50_000  # the most recently used blob stayed

            assert wh.memory.check() == "critical"
            refused_calls = {
                "put": lambda: wh.put("bkt", "new", b"n"),
                "copy": lambda: wh.copy("bkt", "w", "bkt", "copied"),
                "upload_part": lambda: wh.upload_part("bkt", "parts", upload.upload_id, 1, b"p"),
                "upload_part_copy": lambda: wh.upload_part_copy("bkt", "parts", upload.upload_id, 1, "bkt", "w"),
                "put_table": lambda: wh.put_table("bkt", "table", pa.table({"a": [1]})),
                "a large read (40000 bytes)": lambda: wh.get("bkt", "w", range=(0, 39_999)),
            }
            for what, call in refused_calls.items():
                with pytest.raises(Backpressure, match=rf"memory is critical, .*{re.escape(what)}.* refused"):
                    call()
            assert wh.get("bkt", "w", range=(0, 39_998)) == b"w" * 39_999  # below large_read
            assert [o.key for o in wh.list("bkt").objects] == ["w", "x", "y", "z"]

            assert wh.memory.check() == "normal"
            wh.put("bkt", "new", b"n")
            assert wh.get("bkt", "new") == b"n"
        finally:
            wh.memory.stop()
