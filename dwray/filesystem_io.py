"""Files of the ``dwray://`` filesystem: ranged reads, and writes committed as one object on close.

Reading fetches only the byte ranges asked for (``get(range=...)``), through
fsspec's block cache, and pins the version it opened when the bucket keeps
versions, so a concurrent overwrite never mixes two objects' bytes.

Writing streams: the first full block starts one ``put`` on a thread, which
takes the blocks from a small queue as the writer hands them over (memory stays
bounded by two blocks), and ``close()`` commits. The object appears whole or
not at all: a writer that fails (an exception inside ``with fs.open(...)``)
aborts the put, and nothing is committed. A file closed before its first full
block is stored by one ``put`` of its bytes, with no thread.
"""
from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

from fsspec.spec import AbstractBufferedFile

from dwray.errors import InvalidRange

__all__ = ["DwrayFile"]

_END = object()
_HANDOVER_WAIT = 0.5  # seconds between checks that the putting thread is still alive


class _WriteAborted(Exception):
    """Handed to the putting thread in place of a block: the writer gave up, commit nothing."""


class DwrayFile(AbstractBufferedFile):
    """One open ``dwray://`` object (modes ``rb``, ``wb``, and ``xb``: create, never replace)."""

    DEFAULT_BLOCK_SIZE = 8 * 2**20  # the data path moves frames in batches of about 8 MiB

    def __init__(self, fs: Any, path: str, mode: str = "rb", *, version_id: str | None = None,
                 content_type: str | None = None, **kwargs: Any) -> None:
        self.bucket, self.key = fs.split_path(path)
        self.version_id = version_id
        self.content_type = content_type
        self._blocks: queue.Queue[Any] = queue.Queue(maxsize=1)
        self._putter: threading.Thread | None = None
        self._put_error: BaseException | None = None
        super().__init__(fs, path, mode, **kwargs)

    # -- reading ------------------------------------------------------------------------------

    def _fetch_range(self, start: int, end: int) -> bytes:
        end = min(end, self.size)
        if start >= end:
            return b""
        try:
            with self.fs.translated(self.path):
                return self.fs.warehouse.get(self.bucket, self.key, range=(start, end - 1),
                                             version_id=self.version_id, tenant=self.fs.tenant)
        except InvalidRange:  # the object shrank (was replaced) since it was opened
            return b""

    # -- writing ------------------------------------------------------------------------------

    def _upload_chunk(self, final: bool = False) -> bool:
        block = self.buffer.getvalue()
        if self._putter is None and final:
            self._put(block)  # the whole file fitted in one block
            return True
        if self._putter is None:
            self._putter = threading.Thread(target=self._put_blocks, name=f"dwray-put {self.path}", daemon=True)
            self._putter.start()
        if block:
            self._hand_over(block)
        if final:
            self._hand_over(_END)
            self._putter.join()
            if self._put_error is not None:
                raise self._put_error
        return True

    def _put(self, data: Any) -> None:
        with self.fs.translated(self.path):
            self.fs.warehouse.put(self.bucket, self.key, data, content_type=self.content_type,
                                  if_none_match=self.mode == "xb", tenant=self.fs.tenant)

    def _put_blocks(self) -> None:
        try:
            self._put(self._queued_blocks())
        except BaseException as error:  # noqa: BLE001 - handed to the writer's thread, raised there
            self._put_error = error
            self._drain()

    def _queued_blocks(self) -> Iterator[bytes]:
        while True:
            block = self._blocks.get()
            if block is _END:
                return
            if isinstance(block, _WriteAborted):
                raise block
            yield block

    def _hand_over(self, item: Any) -> None:
        """Queue ``item`` for the putting thread; if that thread failed, raise its error instead."""
        assert self._putter is not None
        while True:
            if self._put_error is not None:
                raise self._put_error
            try:
                self._blocks.put(item, timeout=_HANDOVER_WAIT)
                return
            except queue.Full:
                if not self._putter.is_alive():
                    raise self._put_error or RuntimeError(f"the put of {self.path} stopped") from None

    def _drain(self) -> None:
        while True:
            try:
                self._blocks.get_nowait()
            except queue.Empty:
                return

    def discard(self) -> None:
        """Abort a streaming write: the put in progress fails, nothing is committed."""
        if self._putter is not None and self._putter.is_alive():
            self._drain()
            self._blocks.put(_WriteAborted(f"the write of dwray://{self.path} was abandoned"))
            self._putter.join()
        self.closed = True

    def __del__(self) -> None:
        # fsspec's own __del__ closes, which would commit what a writer dropped half-way: a write that
        # was never closed is not committed, whole or not at all.
        if not self.closed and self.writable():
            self.discard()

    def __exit__(self, kind: Any, error: Any, trace: Any) -> None:
        if kind is not None and self.writable():
            # An exception inside `with fs.open(..., "wb")`: the half-written object is not committed.
            self.discard()
            return
        self.close()
