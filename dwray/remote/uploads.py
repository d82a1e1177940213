"""Bodies sent to the gateway in bounded memory: one request when small, a multipart upload when not.

The body (bytes, a memoryview, a binary file object or an iterable of bytes
chunks, as ``Warehouse.put`` takes it) is cut into pieces of ``part_size`` by
the same code the in-process warehouse cuts frames with
(``dwray.core.pipeline.plaintext_frames``), so the same inputs are accepted and
refused with the same errors. At most about three parts are held at a time
(the one being sent, the next one, which tells whether it is the last, and the
chunks gathered for the one after), whatever the size of the body. A
body that fits in one piece is one PutObject; a longer one (an iterator of
unknown length, a 1 GiB file) becomes a multipart upload, aborted if anything
fails, so a failed put leaves nothing behind.
"""
from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dwray.core.pipeline import plaintext_frames

__all__ = ["SentBody", "as_body", "send_body"]


@dataclass(frozen=True)
class SentBody:
    """What the gateway answered for a body, and how many bytes went."""

    answer: dict[str, Any]
    size: int
    multipart: bool


def send_body(data: Any, part_size: int, *, single: Callable[[Any], dict[str, Any]],
              begin: Callable[[], str], part: Callable[[str, int, Any], str],
              complete: Callable[[str, list[tuple[int, str]]], dict[str, Any]],
              abort: Callable[[str], None]) -> SentBody:
    """Send ``data`` with ``single(body)``, or with ``begin``/``part``/``complete`` (``abort`` on failure)."""
    pieces = plaintext_frames(data, part_size)
    first, last = next(pieces)  # refuses a bad body before any request
    if last:
        return SentBody(single(as_body(first)), len(first), False)
    upload_id = begin()
    try:
        etags = [(1, part(upload_id, 1, as_body(first)))]
        size = len(first)
        del first
        for piece, _ in pieces:
            etags.append((len(etags) + 1, part(upload_id, len(etags) + 1, as_body(piece))))
            size += len(piece)
            del piece  # sent: not kept while the next part is gathered
        return SentBody(complete(upload_id, etags), size, True)
    except BaseException:
        try:
            abort(upload_id)
        except Exception:  # noqa: BLE001 - the first failure is the one to report; the upload expires anyway
            pass
        raise


def as_body(piece: Any) -> io.RawIOBase | io.BytesIO:
    """A piece as a request body botocore streams from, without copying it.

    Given ``bytes``, botocore would join the body to the request head (one more
    copy of the piece); a file object is sent a block at a time instead.
    ``BytesIO`` shares a ``bytes`` object; any other buffer is read in place.
    """
    if isinstance(piece, bytes):
        return io.BytesIO(piece)
    return BufferBody(piece)


class BufferBody(io.RawIOBase):
    """A read-only, seekable file over a buffer (bytearray, memoryview), reading it in place."""

    def __init__(self, buffer: Any) -> None:
        super().__init__()
        self._view = memoryview(buffer).cast("B")
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, target: Any) -> int:
        out = memoryview(target).cast("B")
        count = min(len(out), len(self._view) - self._position)
        out[:count] = self._view[self._position:self._position + count]
        self._position += count
        return count

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: len(self._view)}[whence]
        self._position = max(0, base + offset)
        return self._position

    def tell(self) -> int:
        return self._position

    def __len__(self) -> int:
        return len(self._view)
