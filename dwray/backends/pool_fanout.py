"""Write one stream of chunks to several backends at once, checksumming it once.

``fan_out_put`` reads the caller's chunks in the caller's thread, computes
the block CRCs (``BlockSummer``) and hands every chunk to all targets, which
write concurrently. Small blobs (up to ``buffer_limit``) are read whole first
and written by a thread pool while the caller's thread computes their CRCs:
no thread is started and no queue crossed per chunk. Bigger ones stream: one
thread per target, fed through a short bounded queue, so memory stays at a
few chunks whatever the blob size and the slowest target sets the pace.

Each target's outcome is reported, not raised: the pool decides about its
quorum. An exception of the caller's own (its iterator failing, a chunk that
is not bytes) aborts every target, which keeps nothing, and is re-raised
unchanged. A target that already holds the id holds an orphan (the pool's
index knows no such blob and the pool holds the blob's lock): it is deleted
and the write retried once, when no chunk was consumed yet.
"""
from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field

from dwray.backends.base import BytesLike, StorageBackend, as_byte_view
from dwray.backends.pool_blocks import BlockSummer
from dwray.errors import BlobExists

__all__ = ["BUFFER_LIMIT", "FanOut", "fan_out_put"]

_log = logging.getLogger(__name__)

#: blobs up to this size are read whole before any target is written
BUFFER_LIMIT = 2 * 1024 * 1024
_QUEUE_CHUNKS = 4


@dataclass
class FanOut:
    """What a fan-out put did."""

    size: int = 0
    crcs: bytes = b""
    #: targets that hold a complete, durable replica
    stored: list[str] = field(default_factory=list)
    #: target -> the exception its put raised
    failures: dict[str, Exception] = field(default_factory=dict)


class _Aborted(Exception):
    """The caller's stream failed; raised into each target's put to make it keep nothing."""


_END = object()
_ABORT = object()


class _Feed:
    """The chunk queue of one streaming target."""

    def __init__(self, prefix: list[bytes]) -> None:
        self.queue: queue.Queue[object] = queue.Queue(_QUEUE_CHUNKS)
        self.prefix = prefix
        self.finished = False
        self.pulled = False

    def chunks(self) -> Iterator[bytes]:
        for data in self.prefix:
            self.pulled = True
            yield data
        while True:
            item = self.queue.get()
            if item is _END:
                return
            if item is _ABORT:
                raise _Aborted
            self.pulled = True
            yield item  # type: ignore[misc]

    def send(self, item: object) -> None:
        # A target that finished drains its queue after setting ``finished``,
        # so this put never blocks for good.
        if not self.finished:
            self.queue.put(item)

    def finish(self) -> None:
        self.finished = True
        while True:
            try:
                self.queue.get_nowait()
            except queue.Empty:
                return


def _put_buffered(target: StorageBackend, blob_id: str, chunks: list[bytes]) -> None:
    try:
        target.put_blob(blob_id, chunks)
    except BlobExists:
        target.delete_blob(blob_id)
        target.put_blob(blob_id, chunks)


def _put_streamed(target: StorageBackend, blob_id: str, feed: _Feed) -> None:
    try:
        target.put_blob(blob_id, feed.chunks())
    except BlobExists:
        if feed.pulled:
            raise
        target.delete_blob(blob_id)
        target.put_blob(blob_id, feed.chunks())


def _own_copy(chunk: object) -> tuple[bytes, memoryview]:
    """The chunk as bytes the caller cannot change any more (a copy unless it is bytes)."""
    view = as_byte_view(chunk)
    if type(chunk) is bytes:
        return chunk, view
    data = bytes(view)
    return data, memoryview(data)


def fan_out_put(targets: Mapping[str, StorageBackend], blob_id: str, chunks: Iterable[BytesLike], *,
                block_size: int, executor: Executor, needed: int = 1,
                buffer_limit: int = BUFFER_LIMIT) -> FanOut:
    """Write ``chunks`` as ``blob_id`` to every target; see the module docstring.

    A streaming put stops reading early once fewer than ``needed`` targets
    are still writing: the pool's quorum cannot be met any more.
    """
    summer = BlockSummer(block_size)
    stream = iter(chunks)
    buffered: list[bytes] = []
    size = 0
    for chunk in stream:
        data, _ = _own_copy(chunk)
        buffered.append(data)
        size += len(data)
        if size > buffer_limit:
            for data in buffered:
                summer.update(data)
            result = _write_streamed(targets, blob_id, buffered, stream, summer, needed)
            break
    else:
        result = _write_buffered(targets, blob_id, buffered, executor, summer)
    result.size, result.crcs = summer.size, summer.digest()
    return result


def _write_buffered(targets: Mapping[str, StorageBackend], blob_id: str, chunks: list[bytes],
                    executor: Executor, summer: BlockSummer) -> FanOut:
    # The CRCs are computed while the targets write (zlib releases the GIL).
    futures: dict[str, Future[None]] = {
        name: executor.submit(_put_buffered, target, blob_id, chunks) for name, target in targets.items()
    }
    for data in chunks:
        summer.update(data)
    result = FanOut()
    for name, future in futures.items():
        failure = future.exception()
        if failure is None:
            result.stored.append(name)
        elif isinstance(failure, Exception):
            result.failures[name] = failure
        else:
            raise failure
    return result


def _write_streamed(targets: Mapping[str, StorageBackend], blob_id: str, prefix: list[bytes],
                    stream: Iterator[BytesLike], summer: BlockSummer, needed: int) -> FanOut:
    feeds = {name: _Feed(prefix) for name in targets}
    outcomes: dict[str, Exception | None] = {}

    def write(name: str) -> None:
        try:
            _put_streamed(targets[name], blob_id, feeds[name])
            outcomes[name] = None
        except BaseException as exc:  # noqa: BLE001 - reported to the caller's thread
            outcomes[name] = exc if isinstance(exc, Exception) else RuntimeError(repr(exc))
        finally:
            feeds[name].finish()

    threads = [threading.Thread(target=write, args=(name,), name=f"dwray-pool-put-{name}", daemon=True)
               for name in targets]
    for thread in threads:
        thread.start()
    gave_up = False
    try:
        for chunk in stream:
            if sum(not feed.finished for feed in feeds.values()) < needed:
                gave_up = True
                break
            data, view = _own_copy(chunk)
            summer.update(view)
            for feed in feeds.values():
                feed.send(data)
    except BaseException:
        for feed in feeds.values():
            feed.send(_ABORT)
        for thread in threads:
            thread.join()
        for name, failure in outcomes.items():
            if failure is None:  # cannot happen for a target that saw the abort; be safe
                _discard(targets[name], blob_id)
        raise
    for feed in feeds.values():
        feed.send(_ABORT if gave_up else _END)
    for thread in threads:
        thread.join()
    result = FanOut()
    for name in targets:
        failure = outcomes[name]
        if failure is None:
            result.stored.append(name)
        elif isinstance(failure, _Aborted):
            result.failures[name] = _Aborted(f"stopped: fewer than {needed} members were still writing")
        else:
            result.failures[name] = failure
    return result


def _discard(target: StorageBackend, blob_id: str) -> None:
    try:
        target.delete_blob(blob_id)
    except Exception as exc:  # noqa: BLE001 - an orphan left for the scrub
        _log.warning("could not remove replica %r after a failed put: %s", blob_id, exc)
