"""Request bodies into the (blocking) warehouse, and objects out as streamed responses.

The gateway's handlers are coroutines on Serve's event loop; the warehouse is
blocking code. A PUT runs the warehouse's ``put`` on a worker thread that reads
the body from a :class:`BodyPipe`, which the event loop fills as bytes arrive.
The pipe holds a few batches of about a MiB at most, so a 1 GiB body never sits
in memory, and the body's checks (declared SHA-256, Content-MD5, flexible
checksums, chunk signatures, length) run before the warehouse commits: a failed
check raises inside the warehouse's read of the body, which aborts the put.

The received pieces travel by reference, never joined: the warehouse's frame
cutter copies each byte once, into the frame that goes to the sealer.
"""
from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Executor, Future, wait
from typing import Any

from dwray.s3.errors import S3Error

__all__ = ["BATCH_SIZE", "BodyPipe", "pump_body", "stream_reader"]

# Bytes of received pieces handed to the worker thread at a time: enough that
# the hand-off (a wake-up of each side) costs little per byte, few enough that
# the batches in flight stay cheap.
BATCH_SIZE = 1 << 20
_END = object()


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


class BodyPipe:
    """A bounded hand-off of batches of pieces from the event loop (``put``) to one worker thread (``iterate``)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, max_batches: int = 4) -> None:
        self._loop = loop
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._max = max_batches
        self._pending = 0
        self._lock = threading.Lock()
        self._space = asyncio.Event()
        self.closed_by_reader = False

    async def put(self, batch: list[Any]) -> None:
        """Hand ``batch`` (pieces, in order) over, waiting (without blocking the loop) while the pipe is full.

        Once the reader has stopped (it failed, or finished early) batches are dropped.
        """
        while True:
            with self._lock:
                if self.closed_by_reader:
                    return
                if self._pending < self._max:
                    self._pending += 1
                    break
                self._space.clear()
            await self._space.wait()
        self._queue.put(batch)

    async def end(self, result: Any = None) -> None:
        """No more pieces; ``result`` (e.g. the trailers) reaches the reader's ``finish`` callback."""
        self._queue.put((_END, result))

    def fail(self, error: BaseException) -> None:
        """The body broke off (client gone, bad framing): the reader raises ``error``."""
        self._queue.put(_Failed(error))

    def reader_gone(self) -> None:
        """The reader stopped (it finished early or failed): batches are dropped from now on.

        Called on the event loop, e.g. from the writer's done-callback, so that a
        writer that fails before reading anything cannot leave the pump waiting.
        """
        with self._lock:
            self.closed_by_reader = True
        self._space.set()

    def _taken(self) -> None:
        with self._lock:
            self._pending -= 1
        self._loop.call_soon_threadsafe(self._space.set)

    def iterate(self, finish: Callable[[Any], None] | None = None) -> Iterator[Any]:
        """The pieces, one by one, on the worker thread. At the end ``finish(result)`` runs and may raise.

        Raising from here is what makes the warehouse abort instead of commit.
        """
        try:
            while True:
                item = self._queue.get()
                if isinstance(item, _Failed):
                    raise item.error
                if isinstance(item, tuple) and len(item) == 2 and item[0] is _END:
                    if finish is not None:
                        finish(item[1])
                    return
                self._taken()
                yield from item
        finally:
            with self._lock:
                self.closed_by_reader = True
            self._loop.call_soon_threadsafe(self._space.set)


async def pump_body(receive: AsyncIterator[bytes], pipe: BodyPipe, *,
                    decode: Callable[[bytes], list[Any]] | None = None,
                    finish: Callable[[], Any] | None = None,
                    limit: int | None = None) -> int:
    """Hand the request body to ``pipe`` in batches of about ``BATCH_SIZE``; return bytes received.

    ``decode`` turns wire bytes into payload pieces (aws-chunked); ``finish``
    returns what the reader's finish callback gets (the trailers). More than
    ``limit`` payload bytes fails with ``EntityTooLarge`` as soon as it is seen.
    """
    received = 0
    payload = 0
    batch: list[Any] = []
    batched = 0
    try:
        async for data in receive:
            if not data:
                continue
            received += len(data)
            pieces = decode(data) if decode is not None else [data]
            for piece in pieces:
                payload += len(piece)
                if limit is not None and payload > limit:
                    raise S3Error("EntityTooLarge", f"the body is over the maximum object size of {limit} bytes")
                batch.append(piece)
                batched += len(piece)
            if batched >= BATCH_SIZE:
                await pipe.put(batch)
                batch, batched = [], 0
            if pipe.closed_by_reader:
                # The reader is gone (its own error is the one to report): stop
                # reading, and do not judge a body nobody will finish reading.
                return received
        if batch:
            await pipe.put(batch)
        await pipe.end(finish() if finish is not None else None)
    except BaseException as error:  # the reader must learn of every way the body ends
        pipe.fail(error if isinstance(error, Exception) else S3Error(
            "IncompleteBody", "the request body ended early"))
        raise
    return received


async def stream_reader(reader: Any, executor: Executor) -> AsyncIterator[bytes]:
    """An object reader's chunks as an async iterator; each read runs on ``executor``.

    The reader is closed however the response ends (finished, or the client left).
    """
    chunks = iter(reader)
    inflight: Future[Any] | None = None

    def close_when_idle(reading: Future[Any] | None) -> None:
        # A read still running on a worker (the client left mid-read) must end
        # before the reader closes: closing a generator that runs fails.
        if reading is not None:
            wait([reading])
        reader.close()

    try:
        while True:
            inflight = executor.submit(next, chunks, None)
            chunk = await asyncio.wrap_future(inflight)
            inflight = None
            if chunk is None:
                break
            yield bytes(chunk) if not isinstance(chunk, bytes) else chunk
    finally:
        closing = executor.submit(close_when_idle, inflight)
        try:
            await asyncio.shield(asyncio.wrap_future(closing))
        except BaseException:  # noqa: BLE001 - cancelled again: the close still runs on its thread
            pass
