"""Moving object data through the frame pipeline with bounded memory.

``plaintext_frames`` cuts bytes, file objects or chunk iterators into frames.
A frame engine stores them as one blob and reads them back:
``ThreadFrameEngine`` compresses and seals on a thread pool in this process
(zstd, AES-GCM and hashlib release the GIL, so two threads use two cores);
the Ray runtime offers an engine that does the same work in stage actors.
At most ``inflight`` frames are held at once, so a 1 GiB object needs a few
MiB of memory, never 1 GiB.
"""
from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Protocol

from opentelemetry import trace

from dwray.backends.base import StorageBackend, as_byte_view
from dwray.core.frames import FrameOpener, FrameSealer, FrameTable, ObjectIdentity
from dwray.errors import EntityTooLarge, InvalidArgument

__all__ = ["FrameEngine", "ObjectCrypto", "Pending", "SealedStream", "StoredBlob", "ThreadFrameEngine",
           "open_stream", "plaintext_frames", "record_batches"]

_tracer = trace.get_tracer("dwray.core.pipeline")
Frame = bytes | bytearray | memoryview


def _from_buffer(data: Frame, frame_size: int) -> Iterator[Frame]:
    view = memoryview(data).cast("B")
    for offset in range(0, len(view), frame_size):
        yield view[offset:offset + frame_size]


def _from_file(handle: BinaryIO, frame_size: int) -> Iterator[Frame]:
    readinto = getattr(handle, "readinto", None)
    while True:
        if readinto is not None:
            buffer = bytearray(frame_size)
            view, filled = memoryview(buffer), 0
            while filled < frame_size:
                count = readinto(view[filled:])
                if not count:
                    break
                filled += count
            frame: Frame = view if filled == frame_size else view[:filled]
        else:
            parts, filled = [], 0
            while filled < frame_size:
                part = handle.read(frame_size - filled)
                if not part:
                    break
                parts.append(part)
                filled += len(part)
            frame = b"".join(parts)
        if not filled:
            return
        yield frame
        if filled < frame_size:
            return


def _from_chunks(chunks: Iterable[Frame], frame_size: int) -> Iterator[Frame]:
    """Frames cut exactly on frame boundaries, each plaintext byte copied at most once.

    Chunks rarely line up with frames (a gateway receives 64-256 KiB at a
    time), so a frame is usually gathered from several: its bytes are copied
    once, straight into a buffer of one frame that then goes to the sealer
    as it is and is never written again (the next frame gets a new buffer,
    since the sealer may still be reading this one). Whole frames inside one
    read-only chunk are used in place, uncopied. Read-only pieces smaller
    than a frame are only held until it is known whether more follow: an
    object of a single small chunk is then sealed from that chunk, and no
    frame buffer is allocated for it.
    """
    held: list[memoryview] = []  # read-only pieces of the next frame, not copied yet
    held_size = 0
    buffer: memoryview | None = None  # the next frame, once its bytes are being copied
    filled = 0
    for chunk in chunks:
        if not isinstance(chunk, (bytes, bytearray, memoryview)):
            raise InvalidArgument(f"object data chunks must be bytes-like, not {type(chunk).__name__}")
        view = as_byte_view(chunk)
        while len(view):
            if buffer is None and view.readonly:
                if not held and len(view) >= frame_size:
                    yield view[:frame_size]
                    view = view[frame_size:]
                    continue
                if held_size + len(view) < frame_size:
                    held.append(view)
                    held_size += len(view)
                    break
            if buffer is None:
                # The held pieces and this chunk fill a frame, or the chunk is
                # writable (the caller may refill it as soon as the next one is
                # asked for): copy them now.
                buffer = memoryview(bytearray(frame_size))
                for piece in held:
                    buffer[filled:filled + len(piece)] = piece
                    filled += len(piece)
                held.clear()
                held_size = 0
            take = min(frame_size - filled, len(view))
            buffer[filled:filled + take] = view[:take]
            filled += take
            view = view[take:]
            if filled == frame_size:
                yield buffer
                buffer, filled = None, 0
    if buffer is not None:
        yield buffer[:filled]
    elif len(held) == 1:
        yield held[0]
    elif held:
        yield b"".join(held)


def plaintext_frames(data: Any, frame_size: int) -> Iterator[tuple[Frame, bool]]:
    """Yield ``(frame, is_last)``; an empty object is one empty last frame."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        source = _from_buffer(data, frame_size)
    elif hasattr(data, "readinto") or hasattr(data, "read"):
        source = _from_file(data, frame_size)
    elif isinstance(data, Iterable) and not isinstance(data, str):
        source = _from_chunks(data, frame_size)
    else:
        raise InvalidArgument(
            f"object data must be bytes, a binary file object or an iterable of bytes, not {type(data).__name__}")
    previous: Frame | None = None
    for frame in source:
        if not len(frame):
            continue
        if previous is not None:
            yield previous, False
        previous = frame
    yield (previous if previous is not None else b""), True


@dataclass
class SealedStream:
    """Seals frames in order on a pool and yields the records; afterwards holds size, MD5, table."""

    frames: Iterable[tuple[Frame, bool]]
    sealer: FrameSealer
    executor: ThreadPoolExecutor
    inflight: int
    max_size: int
    size: int = 0
    ends: list[int] = field(default_factory=list)
    _md5: Any = field(default_factory=hashlib.md5)

    @property
    def md5(self) -> bytes:
        return self._md5.digest()

    @property
    def table(self) -> FrameTable:
        return FrameTable(self.ends)

    def __iter__(self) -> Iterator[Frame]:
        pending: deque[Future[tuple[bytes, bytes]]] = deque()
        offset = 0
        try:
            for index, (frame, last) in enumerate(self.frames):
                self.size += len(frame)
                if self.size > self.max_size:
                    raise EntityTooLarge(self.size, self.max_size)
                pending.append(self.executor.submit(self.sealer.seal, index, frame, last))
                # Hashing here overlaps with sealing on the pool (hashlib drops the GIL).
                self._md5.update(frame)
                while len(pending) >= self.inflight:
                    codec, sealed = pending.popleft().result()
                    offset += len(codec) + len(sealed)
                    self.ends.append(offset)
                    yield codec
                    yield sealed
            while pending:
                codec, sealed = pending.popleft().result()
                offset += len(codec) + len(sealed)
                self.ends.append(offset)
                yield codec
                yield sealed
        finally:
            for future in pending:
                future.cancel()


class Pending(Protocol):
    """Something that will hold bytes: a ``concurrent.futures.Future`` or a remote read."""

    def result(self) -> Any: ...


def record_batches(frames: range, table: FrameTable, max_frames: int,
                   max_bytes: int) -> Iterator[tuple[list[int], int, int]]:
    """Consecutive frames grouped for one read each: ``(indexes, blob start, blob end)``."""
    batch: list[int] = []
    start = 0
    for index in frames:
        lo, hi = table.record_range(index)
        if batch and (len(batch) >= max_frames or hi - start > max_bytes):
            yield batch, start, table.record_range(batch[-1])[1]
            batch = []
        if not batch:
            start = lo
        batch.append(index)
    if batch:
        yield batch, start, table.record_range(batch[-1])[1]


def open_stream(fetch: Callable[[int, int], Pending], table: FrameTable, opener: FrameOpener,
                frames: range, last_index: int, executor: ThreadPoolExecutor, *, inflight: int,
                batch_frames: int = 16, batch_bytes: int = 8 << 20, prefetch: int = 2) -> Iterator[bytes]:
    """Yield the plaintext of ``frames`` in order.

    ``fetch(start, end)`` starts reading blob bytes ``[start, end)`` and
    returns something whose ``result()`` gives them; up to ``prefetch`` reads
    of a batch of records each are in flight while earlier records are opened
    on the pool, at most ``inflight`` frames at a time.
    """
    batches = record_batches(frames, table, batch_frames, batch_bytes)
    reads: deque[tuple[list[int], int, Pending]] = deque()
    waiting: deque[tuple[int, memoryview]] = deque()
    opened: deque[Future[bytes]] = deque()

    def read_ahead() -> None:
        while len(reads) < prefetch:
            batch = next(batches, None)
            if batch is None:
                return
            indexes, start, end = batch
            reads.append((indexes, start, fetch(start, end)))

    read_ahead()
    try:
        while reads or waiting or opened:
            while len(opened) < inflight and (waiting or reads):
                if not waiting:
                    indexes, start, pending = reads.popleft()
                    span = memoryview(pending.result()).cast("B")
                    read_ahead()
                    for index in indexes:
                        lo, hi = table.record_range(index)
                        waiting.append((index, span[lo - start:hi - start]))
                index, record = waiting.popleft()
                opened.append(executor.submit(opener.open, index, record, index == last_index))
            yield opened.popleft().result()
    finally:
        for future in opened:
            future.cancel()


@dataclass(frozen=True)
class ObjectCrypto:
    """What sealing or opening one object's frames needs. The DEK never shows in a repr."""

    identity: ObjectIdentity
    dek: bytes = field(repr=False)
    nonce_prefix: bytes
    frame_size: int
    level: int = 1

    def sealer(self) -> FrameSealer:
        return FrameSealer(self.identity, self.dek, self.nonce_prefix, frame_size=self.frame_size,
                           level=self.level)

    def opener(self) -> FrameOpener:
        return FrameOpener(self.identity, self.dek, self.nonce_prefix, frame_size=self.frame_size)


@dataclass(frozen=True)
class StoredBlob:
    """What storing an object's frames produced: plaintext size, MD5 and where each record ends."""

    size: int
    md5: bytes
    table: FrameTable


class FrameEngine(ABC):
    """Turns frames into a durable blob and back. Subclasses choose where the work runs."""

    @abstractmethod
    def store(self, backend: StorageBackend, blob_id: str, frames: Iterable[tuple[Frame, bool]],
              crypto: ObjectCrypto, max_size: int) -> StoredBlob:
        """Seal ``frames`` and store them as ``blob_id``; durable when this returns."""

    @abstractmethod
    def load(self, backend: StorageBackend, blob_id: str, table: FrameTable, crypto: ObjectCrypto,
             frames: range, last_index: int) -> Iterator[bytes]:
        """Yield the plaintext of ``frames`` of a stored blob, in order."""

    def close(self) -> None:
        """Release workers."""


class ThreadFrameEngine(FrameEngine):
    """Seals and opens frames on a thread pool in this process."""

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="dwray-frames")
        self._inflight = 2 * threads + 2

    def __repr__(self) -> str:
        return f"ThreadFrameEngine(threads={self.threads})"

    def store(self, backend: StorageBackend, blob_id: str, frames: Iterable[tuple[Frame, bool]],
              crypto: ObjectCrypto, max_size: int) -> StoredBlob:
        # The frames are sealed on this process's threads: a span of its own stands for the stages.
        with _tracer.start_as_current_span("stage:caller.seal", attributes={"dwray.blob_id": blob_id}):
            stream = SealedStream(frames, crypto.sealer(), self._executor, self._inflight, max_size)
            backend.put_blob(blob_id, stream)
        return StoredBlob(stream.size, stream.md5, stream.table)

    def load(self, backend: StorageBackend, blob_id: str, table: FrameTable, crypto: ObjectCrypto,
             frames: range, last_index: int) -> Iterator[bytes]:
        start_read = getattr(backend, "start_read", None)
        if start_read is not None:  # a remote backend reads ahead without a thread of ours
            def fetch(start: int, end: int) -> Pending:
                return start_read(blob_id, start, end)
        else:
            def fetch(start: int, end: int) -> Pending:
                return self._executor.submit(backend.get_blob, blob_id, start, end)
        return open_stream(fetch, table, crypto.opener(), frames, last_index, self._executor,
                           inflight=self._inflight)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
