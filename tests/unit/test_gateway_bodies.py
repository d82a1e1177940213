"""The hand-off of request bodies to the warehouse's thread (frames copied once), and objects streamed out."""
from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import threading
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any

import pytest

from dwray.core.pipeline import SealedStream, plaintext_frames
from dwray.s3.errors import S3Error
from serve_apps.bodies import BodyPipe, pump_body, stream_reader
from serve_apps.s3_operations import S3Operations


async def body(pieces: int, size: int) -> AsyncIterator[bytes]:
    for _ in range(pieces):
        yield b"x" * size
        await asyncio.sleep(0)


async def replay(messages: list[bytes]) -> AsyncIterator[bytes]:
    for message in messages:
        yield message
        await asyncio.sleep(0)


def test_the_reader_gets_the_very_pieces_received_in_order_and_the_finish_result() -> None:
    messages = [os.urandom(100_000) for _ in range(40)]

    async def run() -> tuple[int, list[bytes], object]:
        loop = asyncio.get_running_loop()
        pipe = BodyPipe(loop, max_batches=2)
        seen: list[bytes] = []
        finished: list[object] = []
        with ThreadPoolExecutor(1) as pool:
            work = loop.run_in_executor(pool, lambda: seen.extend(pipe.iterate(finished.append)))
            received = await pump_body(replay(messages), pipe, finish=lambda: "trailers")
            await work
        return received, seen, finished[0]

    received, seen, result = asyncio.run(run())
    assert received == 4_000_000 and result == "trailers"
    # Handed over by reference, never joined: the copy into frames is the only one.
    assert len(seen) == len(messages) and all(a is b for a, b in zip(seen, messages, strict=True))


def test_a_reader_that_fails_before_reading_releases_the_pump() -> None:
    async def run() -> int:
        loop = asyncio.get_running_loop()
        pipe = BodyPipe(loop, max_batches=1)
        with ThreadPoolExecutor(1) as pool:
            def refuse() -> None:
                raise LookupError("no such bucket")
            work = loop.run_in_executor(pool, refuse)
            work.add_done_callback(lambda _: pipe.reader_gone())
            # 64 MiB offered to a pipe of one piece: without the release this would wait forever.
            received = await asyncio.wait_for(pump_body(body(64, 1 << 20), pipe), timeout=30)
            with pytest.raises(LookupError):
                await work
        return received

    assert asyncio.run(run()) < 64 << 20


def test_a_body_over_the_limit_fails_the_reader_with_entity_too_large() -> None:
    async def run() -> None:
        loop = asyncio.get_running_loop()
        pipe = BodyPipe(loop)
        with ThreadPoolExecutor(1) as pool:
            work = loop.run_in_executor(pool, lambda: sum(len(p) for p in pipe.iterate()))
            with pytest.raises(S3Error) as caught:
                await pump_body(body(10, 1 << 20), pipe, limit=3 << 20)
            assert caught.value.code == "EntityTooLarge"
            with pytest.raises(S3Error):
                await work

    asyncio.run(run())


class SlowReader:
    """An object reader whose second read blocks until released; it records what happened, in order."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.reading = threading.Event()
        self.events: list[str] = []

    def __iter__(self) -> Iterator[bytes]:
        yield b"first"
        self.reading.set()
        self.release.wait(30)
        self.events.append("read ended")
        yield b"second"

    def close(self) -> None:
        self.events.append("closed")


def test_a_client_leaving_mid_read_closes_the_reader_once_the_read_ends() -> None:
    reader = SlowReader()

    async def run() -> None:
        with ThreadPoolExecutor(2) as pool:
            chunks = stream_reader(reader, pool)
            assert await chunks.__anext__() == b"first"
            task = asyncio.ensure_future(chunks.__anext__())
            while not reader.reading.is_set():
                await asyncio.sleep(0.01)
            task.cancel()  # the client went away while a read runs on a worker
            threading.Timer(0.2, reader.release.set).start()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(run())
    # Closing a generator while it runs would fail; the close waits for the read instead.
    assert reader.events == ["read ended", "closed"]


FRAME = 1 << 20


class RecordingSealer:
    """Stands in for the FrameSealer: keeps every frame it is handed, seals nothing."""

    def __init__(self) -> None:
        self.frames: list[tuple[int, Any, bool]] = []
        self._lock = threading.Lock()

    def seal(self, index: int, frame: Any, last: bool) -> tuple[bytes, bytes]:
        with self._lock:
            self.frames.append((index, frame, last))
        return b"", b""


def aws_chunked(payload: bytes, chunk: int, crc32: str) -> bytes:
    wire = bytearray()
    for offset in range(0, len(payload), chunk):
        piece = payload[offset:offset + chunk]
        wire += f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    wire += f"0\r\nx-amz-checksum-crc32:{crc32}\r\n\r\n".encode()
    return bytes(wire)


@pytest.mark.parametrize("encoding", ["plain", "aws-chunked"])
def test_a_put_body_reaches_the_sealer_in_whole_frames_copied_once(encoding: str) -> None:
    payload = os.urandom(6 * FRAME + 12345)
    crc32 = base64.b64encode(zlib.crc32(payload).to_bytes(4, "big")).decode()
    headers = {"content-md5": base64.b64encode(hashlib.md5(payload).digest()).decode()}
    if encoding == "plain":
        mode, wire = "UNSIGNED-PAYLOAD", payload
        headers.update({"content-length": str(len(payload)), "x-amz-checksum-crc32": crc32})
    else:
        mode, wire = "STREAMING-UNSIGNED-PAYLOAD-TRAILER", aws_chunked(payload, 100_000, crc32)
        headers.update({"x-amz-decoded-content-length": str(len(payload)),
                        "x-amz-trailer": "x-amz-checksum-crc32", "content-encoding": "aws-chunked"})
    # The ASGI messages as a server hands them over; made before tracing starts.
    messages = [wire[offset:offset + (64 << 10)] for offset in range(0, len(wire), 64 << 10)]
    call = SimpleNamespace(auth=SimpleNamespace(content_sha256=mode, chunk_signer=None), headers=headers,
                           request=SimpleNamespace(stream=lambda: replay(messages)), bytes_in=0)
    sealer = RecordingSealer()

    async def run() -> tuple[Any, dict[str, str]]:
        with ThreadPoolExecutor(4) as pool:
            api = S3Operations(None, None, executor=pool, max_object_size=1 << 40, max_metadata_bytes=2048)

            def write(pieces: Any, checksums: Any) -> int:
                # What the gateway's warehouse does with a body (ThreadFrameEngine.store), short of storing.
                stream = SealedStream(plaintext_frames(pieces, FRAME), sealer, pool, 6, 1 << 40)
                for _ in stream:
                    pass
                return stream.size

            return await api.receive_body(call, write)

    tracemalloc.start()
    try:
        size, echoed = asyncio.run(run())
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert size == len(payload) and echoed == {"x-amz-checksum-crc32": crc32} and call.bytes_in == len(wire)
    frames = [frame for _, frame, _ in sorted(sealer.frames, key=lambda entry: entry[0])]
    assert [last for _, _, last in sorted(sealer.frames, key=lambda entry: entry[0])] == [False] * 6 + [True]
    assert [len(frame) for frame in frames] == [FRAME] * 6 + [12345]
    assert b"".join(frames) == payload
    # Each whole frame is one buffer of a frame of its own, filled from the received pieces, not a
    # received message nor a slice of one.
    owners = [memoryview(frame).obj for frame in frames[:6]]
    assert all(type(owner) is bytearray and len(owner) == FRAME for owner in owners)
    assert len({id(owner) for owner in owners}) == 6
    # One copy of the plaintext is what the sealer was handed and kept: the six frame buffers (the short
    # last frame lies inside one received message and is sealed from it); at no moment did another
    # frame-sized copy exist between the received messages and the sealer.
    assert 6 * FRAME <= current < 6 * FRAME + (64 << 10)
    assert peak < current + FRAME // 2
