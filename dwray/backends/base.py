"""The storage backend contract.

A backend stores immutable blobs under ids chosen by the warehouse. In the
fsspec spirit it implements five methods and inherits the rest:

required
    ``put_blob(blob_id, chunks)``      store a new blob, durable before it returns
    ``get_blob(blob_id, start, end)``  bytes ``[start, end)`` of a blob
    ``delete_blob(blob_id)``           remove a blob (missing is not an error)
    ``list_blobs(prefix)``             ids under a prefix, sorted
    ``stat_blob(blob_id)``             size and modification time

derived (override only where a backend does it faster)
    ``exists``, ``size``, ``get_ranges``, ``put_bytes``, ``delete_prefix``, ``close``

Blob ids are ``/``-separated relative paths of safe components (see
``validate_blob_id``); every backend validates them so that no id can address
anything outside the backend's own space. Backends raise only errors from
``dwray.errors``: ``BlobNotFound``, ``BlobExists``, ``InvalidBlobId``,
``InvalidRange``, ``StorageFull``, ``DurabilityError`` or ``StorageError``.
Two exceptions to that rule belong to the caller: an exception raised by the
``chunks`` iterable of ``put_blob`` propagates unchanged, and a chunk that is
not bytes-like raises ``TypeError``.

Every method is safe to call from several threads at once. Backends that can
lose acknowledged blobs (the in-memory cache) say so with ``durable = False``.

A filesystem cannot hold a file ``a`` and a folder ``a/`` at once, so a
backend on one (local disk) refuses the second of ``a`` and ``a/b`` with
``InvalidBlobId``; backends with a flat namespace accept both
(``StorageBackend.nested_ids_conflict`` tells which).

``dwray.testing.backend_conformance`` holds the tests every backend must pass.
"""
from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from dwray.errors import BlobNotFound, InvalidBlobId, InvalidRange

__all__ = [
    "BlobStat",
    "BytesLike",
    "StorageBackend",
    "as_byte_view",
    "is_valid_blob_id",
    "validate_blob_id",
    "validate_prefix",
]

BytesLike = bytes | bytearray | memoryview

# Components are plain names: letters, digits and a few separators, never
# starting with a dot (so no ".", "..", hidden or temp-file names). Used with
# fullmatch: "$" would also match before a trailing newline.
_COMPONENT = re.compile(r"[A-Za-z0-9_=-][A-Za-z0-9._=-]{0,127}")
_MAX_BLOB_ID = 1024


@dataclass(frozen=True)
class BlobStat:
    """What a backend knows about one blob."""

    blob_id: str
    size: int
    mtime: float


def validate_blob_id(blob_id: object) -> str:
    """Return ``blob_id`` if it is a safe relative id, else raise ``InvalidBlobId``.

    Refused: non-strings, empty ids, absolute paths, empty, ``.`` or ``..``
    components, NUL and other control characters, backslashes, and anything
    outside ``[A-Za-z0-9._=-]`` per component.
    """
    if not isinstance(blob_id, str):
        raise InvalidBlobId(repr(blob_id), f"must be a str, not {type(blob_id).__name__}")
    if not blob_id:
        raise InvalidBlobId(blob_id, "is empty")
    if len(blob_id) > _MAX_BLOB_ID:
        raise InvalidBlobId(blob_id[:64] + "...", f"is longer than {_MAX_BLOB_ID} characters")
    if "\x00" in blob_id:
        raise InvalidBlobId(blob_id, "contains a NUL byte")
    if blob_id.startswith("/"):
        raise InvalidBlobId(blob_id, "is an absolute path")
    for part in blob_id.split("/"):
        if part in ("", ".", ".."):
            raise InvalidBlobId(blob_id, f"has a {part or 'empty'!r} path component")
        if not _COMPONENT.fullmatch(part):
            raise InvalidBlobId(blob_id, f"component {part!r} has characters outside [A-Za-z0-9._=-]")
    return blob_id


def is_valid_blob_id(text: object) -> bool:
    """True if ``text`` is a blob id ``validate_blob_id`` accepts (for skipping foreign names in listings)."""
    try:
        validate_blob_id(text)
    except InvalidBlobId:
        return False
    return True


def validate_prefix(prefix: object) -> str:
    """Return ``prefix`` if it is empty or a blob id optionally ending in ``/``.

    Raises ``InvalidBlobId`` otherwise.
    """
    if not isinstance(prefix, str):
        raise InvalidBlobId(repr(prefix), f"prefix must be a str, not {type(prefix).__name__}")
    if prefix == "":
        return prefix
    # One trailing "/" is allowed; "a//" has an empty component like "a//b".
    validate_blob_id(prefix[:-1] if len(prefix) > 1 and prefix.endswith("/") else prefix)
    return prefix


def as_byte_view(chunk: object) -> memoryview:
    """Return a flat, byte-format view of one ``put_blob`` chunk, without copying
    when it is already contiguous. ``TypeError`` if ``chunk`` is not bytes-like."""
    if isinstance(chunk, str):
        raise TypeError("put_blob chunks must be bytes-like, not str")
    try:
        view = memoryview(chunk)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(
            f"put_blob chunks must be bytes-like, not {type(chunk).__name__}"
        ) from None
    if not view.c_contiguous:
        view = memoryview(view.tobytes())
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    return view


class StorageBackend(ABC):
    """Stores immutable blobs. Subclasses implement the five abstract methods."""

    #: registry name, e.g. ``"local"``
    name: str = ""
    #: False for backends that may drop acknowledged blobs (an in-memory cache)
    durable: bool = True
    #: True where ``a`` and ``a/b`` cannot both be blobs (a filesystem)
    nested_ids_conflict: bool = False
    #: bytes ``put_blob`` may pull from its chunks before it refuses a taken id
    #: (0: it checks first; a remote backend reads one batch before asking)
    read_ahead_before_put_check: int = 0

    @abstractmethod
    def put_blob(self, blob_id: str, chunks: Iterable[BytesLike]) -> int:
        """Store a new blob from ``chunks`` and return its size in bytes.

        ``chunks`` yields bytes, bytearray or memoryview objects; backends
        consume them as they come and never hold the whole blob unless they
        store it in memory. The blob is durable when this returns and is never
        visible partially: a failure or crash part-way leaves no blob under
        ``blob_id``. Raises ``BlobExists`` if the id is taken (blobs are
        immutable); of several concurrent puts of one id exactly one wins.
        """

    @abstractmethod
    def get_blob(self, blob_id: str, start: int = 0, end: int | None = None) -> bytes:
        """Return bytes ``[start, end)`` of the blob (``end=None``: to the end).

        A range past the end is clipped as Python slicing would; a negative
        ``start``, ``end < start`` or a non-integer bound raises ``InvalidRange``.
        """

    @abstractmethod
    def delete_blob(self, blob_id: str) -> None:
        """Remove a blob durably. A missing blob is not an error."""

    @abstractmethod
    def list_blobs(self, prefix: str = "") -> Iterator[str]:
        """Yield the ids of blobs whose id starts with ``prefix``, sorted.

        ``prefix`` is a plain string prefix (``"a/b"`` matches ``a/b``,
        ``a/b/c`` and ``a/bc``). An invalid prefix raises ``InvalidBlobId``.
        """

    @abstractmethod
    def stat_blob(self, blob_id: str) -> BlobStat:
        """Return size and modification time; ``BlobNotFound`` if missing."""

    # Derived methods -------------------------------------------------------

    def exists(self, blob_id: str) -> bool:
        """True if the blob exists."""
        try:
            self.stat_blob(blob_id)
        except BlobNotFound:
            return False
        return True

    def size(self, blob_id: str) -> int:
        """Size of the blob in bytes."""
        return self.stat_blob(blob_id).size

    def put_bytes(self, blob_id: str, data: BytesLike) -> int:
        """Store one buffer as a blob."""
        return self.put_blob(blob_id, [data])

    def get_ranges(self, blob_id: str, ranges: Sequence[tuple[int, int | None]]) -> list[bytes]:
        """Return several ``[start, end)`` ranges of one blob, in order."""
        return [self.get_blob(blob_id, start, end) for start, end in ranges]

    def delete_prefix(self, prefix: str) -> int:
        """Delete every blob under ``prefix``; return how many were deleted."""
        count = 0
        for blob_id in list(self.list_blobs(prefix)):
            self.delete_blob(blob_id)
            count += 1
        return count

    def close(self) -> None:
        """Release resources. The default holds none."""

    @staticmethod
    def check_range(start: int, end: int | None, size: int | None = None) -> None:
        """Raise ``InvalidRange`` for a non-integer bound, a negative start or an
        end before the start. ``size``, when known, only improves the message."""
        valid = (
            isinstance(start, int)
            and (end is None or isinstance(end, int))
            and start >= 0
            and (end is None or end >= start)
        )
        if not valid:
            raise InvalidRange(f"[{start!r}, {end!r})", "unknown" if size is None else size)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
