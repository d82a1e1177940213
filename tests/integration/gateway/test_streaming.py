"""A 1 GiB PUT and GET through the gateway stream: no process on the data path grows by 256 MiB."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from tests.integration.gateway.conftest import GatewayUnderTest
from tests.integration.gateway.peak_rss import PeakRss

GiB = 1 << 30
MiB = 1 << 20
LIMIT = 256 * MiB


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
