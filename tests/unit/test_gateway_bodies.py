"""The hand-off of request bodies to the warehouse's thread, and objects streamed out."""
from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from dwray.s3.errors import S3Error
from serve_apps.bodies import PIECE_SIZE, BodyPipe, pump_body, stream_reader


async def body(pieces: int, size: int) -> AsyncIterator[bytes]:
    for _ in range(pieces):
        yield b"x" * size
        await asyncio.sleep(0)


def test_the_reader_gets_every_byte_in_pieces_and_the_finish_result() -> None:
    async def run() -> tuple[int, list[int], object]:
        loop = asyncio.get_running_loop()
        pipe = BodyPipe(loop, max_pieces=2)
        seen: list[int] = []
        finished: list[object] = []
        with ThreadPoolExecutor(1) as pool:
            work = loop.run_in_executor(pool, lambda: [seen.append(len(p)) for p in pipe.iterate(finished.append)])
            received = await pump_body(body(40, 100_000), pipe, finish=lambda: "trailers")
            await work
        return received, seen, finished[0]

    received, seen, result = asyncio.run(run())
    assert received == 4_000_000 and sum(seen) == 4_000_000
    assert max(seen) < PIECE_SIZE + 100_000 and result == "trailers"


def test_a_reader_that_fails_before_reading_releases_the_pump() -> None:
    async def run() -> int:
        loop = asyncio.get_running_loop()
        pipe = BodyPipe(loop, max_pieces=1)
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
