"""Memory critical at the gateway: new writes get 503 SlowDown with Retry-After before their body is read,
large reads get it from the warehouse, everything else goes on.

The request cycle is the gateway's own (``S3Api.handle``) over a real local
warehouse, with requests signed by a real boto3 client. The memory monitor
is a real ``MemoryMonitor`` whose reader returns a chosen reading (the
memory pressure tests fill real memory in a subprocess); the gateway and
the warehouse share it, as they share the process's monitor in a replica.
"""
from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from starlette.requests import Request

from dwray.config import MemoryConfig
from dwray.core.memory_pressure import MemoryMonitor, MemoryReading
from dwray.core.warehouse import Warehouse
from dwray.s3.auth import SigningIdentity, SigV4Verifier
from serve_apps.s3_api import MEMORY_REFUSED, S3Api
from tests.conftest import make_config
from tests.unit.test_s3_auth import ACCESS_KEY, SECRET, BotoRecorder, Captured

LIMIT = 4 << 30
MEMORY = MemoryConfig(warning=0.8, critical=0.9, hysteresis=0.05, retry_after=7, large_read=64 << 10)


class Reader:
    """The monitor's reading, chosen by the test."""

    def __init__(self) -> None:
        self.fraction = 0.5

    def __call__(self) -> MemoryReading:
        return MemoryReading(int(LIMIT * self.fraction), LIMIT, "cgroup-v2")


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[tuple[S3Api, Warehouse, MemoryMonitor, Reader]]:
    reader = Reader()
    monitor = MemoryMonitor(MEMORY, reader=reader)
    monitor.check()
    config = make_config(tmp_path / "data").model_copy(update={"memory": MEMORY})
    identity = SigningIdentity(ACCESS_KEY, SECRET, "acme")
    with ThreadPoolExecutor(max_workers=4) as executor, Warehouse(config) as wh:
        wh.memory = monitor  # the replica's warehouse and gateway share the process's monitor
        api = S3Api(wh, SigV4Verifier({ACCESS_KEY: identity}.get), executor=executor, max_object_size=1 << 24,
                    max_metadata_bytes=2048, memory=monitor)
        wh.create_bucket("gate", tenant="acme")
        yield api, wh, monitor, reader


def send(api: S3Api, req: Captured) -> tuple[Any, list[int]]:
    """The response, and how many times the request's body was asked for."""
    scope = {"type": "http", "method": req.method, "path": unquote(req.raw_path), "raw_path": req.raw_path.encode(),
             "query_string": req.raw_query.encode(),
             "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in req.headers],
             "client": ("10.0.0.1", 40000), "server": ("127.0.0.1", 9000), "scheme": "http",
             "http_version": "1.1", "root_path": ""}
    reads = [0]
    chunks = [req.body]

    async def receive() -> dict[str, Any]:
        reads[0] += 1
        return {"type": "http.request", "body": chunks.pop() if chunks else b"", "more_body": False}

    async def run() -> Any:
        response = await api.handle(Request(scope, receive))
        if hasattr(response, "body_iterator"):  # a streamed GET: drain it
            response.body = b"".join([chunk async for chunk in response.body_iterator])
        return response

    return asyncio.run(run()), reads


def test_writes_are_refused_unread_and_large_reads_wait(gateway: Any) -> None:
    api, wh, monitor, reader = gateway
    boto = BotoRecorder()
    s3 = boto.client
    big, small = b"b" * (128 << 10), b"small"
    for key, body in (("big", big), ("small", small)):
        response, _ = send(api, boto.last(s3.put_object, Bucket="gate", Key=key, Body=body))
        assert response.status_code == 200, response.body
    upload = wh.create_multipart_upload("gate", "parts", tenant="acme")
    upload_id = upload.upload_id

    reader.fraction = 0.95
    assert monitor.check() == "critical"
    writes = {
        "PutObject": boto.last(s3.put_object, Bucket="gate", Key="new", Body=b"x" * 1000),
        "CopyObject": boto.last(s3.copy_object, Bucket="gate", Key="copy", CopySource="gate/small"),
        "UploadPart": boto.last(s3.upload_part, Bucket="gate", Key="parts", UploadId=upload_id, PartNumber=1,
                                Body=b"p" * 1000),
        "UploadPartCopy": boto.last(s3.upload_part_copy, Bucket="gate", Key="parts", UploadId=upload_id,
                                    PartNumber=2, CopySource="gate/small"),
    }
    assert set(writes) == MEMORY_REFUSED
    for operation, req in writes.items():
        response, reads = send(api, req)
        assert response.status_code == 503, (operation, response.body)
        assert b"<Code>SlowDown</Code>" in response.body and b"memory is critical" in response.body, operation
        assert response.headers["Retry-After"] == "7"
        assert reads == [0], f"{operation}: the body was read before the refusal"
    assert [o.key for o in wh.list("gate", tenant="acme").objects] == ["big", "small"]

    # A large read waits; a small one, and writes that store no data, go on.
    response, _ = send(api, boto.last(s3.get_object, Bucket="gate", Key="big"))
    assert response.status_code == 503 and b"<Code>SlowDown</Code>" in response.body
    assert response.headers["Retry-After"] == "7"
    response, _ = send(api, boto.last(s3.get_object, Bucket="gate", Key="small"))
    assert response.status_code == 200 and response.body == small
    for req in (boto.last(s3.create_multipart_upload, Bucket="gate", Key="later"),
                boto.last(s3.delete_object, Bucket="gate", Key="small")):
        response, _ = send(api, req)
        assert response.status_code in (200, 204), response.body

    reader.fraction = 0.5
    assert monitor.check() == "normal"
    response, reads = send(api, writes["PutObject"])
    assert response.status_code == 200 and reads[0] >= 1
    response, _ = send(api, boto.last(s3.get_object, Bucket="gate", Key="big"))
    assert response.status_code == 200 and response.body == big
