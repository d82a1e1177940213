"""A 1 GiB PUT and GET through the gateway stream: no process on the data path grows by 256 MiB."""
from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from typing import Any

import psutil

from tests.integration.gateway.conftest import GatewayUnderTest

GiB = 1 << 30
MiB = 1 << 20
LIMIT = 256 * MiB


def data_path_processes() -> list[psutil.Process]:
    """This machine's Ray workers (replica, plugin hosts, proxies), HAProxy, and this test process."""
    found = [psutil.Process()]
    for process in psutil.process_iter(["name", "cmdline"]):
        cmdline = process.info["cmdline"] or []
        name = process.info["name"] or ""
        if (cmdline and cmdline[0].startswith("ray::")) or name == "haproxy":
            found.append(process)
    return found


class PeakRss:
    """Samples the RSS of every process every 50 ms; ``growth()`` is each one's peak over its start."""

    def __init__(self) -> None:
        self.processes = data_path_processes()
        self.start: dict[int, int] = {}
        self.peak: dict[int, int] = {}
        self.names: dict[int, str] = {}
        for process in self.processes:
            try:
                self.start[process.pid] = self.peak[process.pid] = process.memory_info().rss
                self.names[process.pid] = " ".join(process.cmdline()[:1]) or process.name()
            except psutil.Error:
                continue
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            for process in self.processes:
                if process.pid not in self.start:
                    continue
                try:
                    rss = process.memory_info().rss
                except psutil.Error:
                    continue
                if rss > self.peak[process.pid]:
                    self.peak[process.pid] = rss

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()

    def growth(self) -> dict[str, int]:
        return {f"{self.names[pid]} ({pid})": self.peak[pid] - self.start[pid] for pid in self.start}


def test_a_1_gib_put_and_get_stream_through_the_gateway(gateway: GatewayUnderTest, s3: Any, bucket: str,
                                                         tmp_path: Path) -> None:
    block = os.urandom(MiB)  # incompressible: every byte goes through zstd and AES
    source = tmp_path / "one-gib"
    expected = hashlib.md5()
    with source.open("wb") as handle:
        for index in range(GiB // MiB):
            chunk = block[index % 7:] + block[:index % 7]
            expected.update(chunk)
            handle.write(chunk)

    with PeakRss() as put_memory, source.open("rb") as body:
        response = s3.put_object(Bucket=bucket, Key="big", Body=body)
    assert response["ETag"] == f'"{expected.hexdigest()}"'
    assert s3.head_object(Bucket=bucket, Key="big")["ContentLength"] == GiB

    received = hashlib.md5()
    count = 0
    with PeakRss() as get_memory:
        for chunk in s3.get_object(Bucket=bucket, Key="big")["Body"].iter_chunks(MiB):
            received.update(chunk)
            count += len(chunk)
    assert count == GiB and received.hexdigest() == expected.hexdigest()

    for phase, memory in (("PUT", put_memory), ("GET", get_memory)):
        growth = memory.growth()
        assert any("haproxy" in name for name in growth), growth  # the streaming route is the one measured
        assert any("ServeReplica" in name for name in growth), growth
        worst = max(growth.items(), key=lambda item: item[1])
        print(f"{phase}: largest RSS growth {worst[1] >> 20} MiB in {worst[0]}")
        assert worst[1] < LIMIT, f"{phase}: {worst[0]} grew by {worst[1] >> 20} MiB; all: {growth}"
    s3.delete_object(Bucket=bucket, Key="big")
