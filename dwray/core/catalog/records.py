"""The catalog's rows as frozen records: they cross actors by pickle, so they stay plain data."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from dwray.errors import InvalidArgument

__all__ = ["INLINE_BACKEND", "NULL_VERSION", "VERSIONING_ENABLED", "VERSIONING_NEVER", "VERSIONING_SUSPENDED",
           "BucketRecord", "DeleteOutcome", "ObjectRecord", "PartRecord", "Placement", "SegmentRecord",
           "UploadRecord", "WrappedKey", "WriteCondition"]

#: the ``backend`` of a placement whose sealed bytes are in the catalog row itself (schema migration 7)
INLINE_BACKEND = "inline"


@dataclass(frozen=True)
class Placement:
    """Where one sealed blob is and what opens it: its backend and blob id, the key header
    (the DEK wrapped under KEK ``kek_id`` at ``kek_version``) and the frame table.

    An *inline* placement (``backend == INLINE_BACKEND``, ``blob_id == ""``) carries the
    sealed records themselves in ``inline``, laid end to end as a blob would hold them:
    a small object is then one durable catalog commit, with no blob to write, fsync,
    read or sweep. Only object rows hold inline bytes (``objects.inline_data``); a
    multipart upload's parts, and so a multipart object's segments, always have blobs.

    The fields but ``inline`` are in the order of their columns in every table that
    holds a placement; ``inline`` is the last column of ``objects`` alone.
    """

    backend: str
    blob_id: str
    key_header: bytes = field(repr=False)
    frame_table: bytes = field(repr=False)
    kek_id: str
    kek_version: int
    #: the sealed records of an inline placement; ``None`` for one in a blob
    inline: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.inline, bytearray | memoryview):
            object.__setattr__(self, "inline", bytes(self.inline))
        if self.backend == INLINE_BACKEND:
            if not isinstance(self.inline, bytes) or not self.inline:
                raise InvalidArgument(f"an inline placement (backend {INLINE_BACKEND!r}) needs its sealed bytes, "
                                      f"not {'empty bytes' if self.inline is not None else 'None'}")
            if self.blob_id != "":
                raise InvalidArgument(f"an inline placement has no blob, so its blob id is '', not {self.blob_id!r}")
        elif self.inline is not None:
            raise InvalidArgument(f"a placement in backend {self.backend!r} (blob {self.blob_id!r}) may not carry "
                                  f"inline bytes: only backend {INLINE_BACKEND!r} does")

    @property
    def is_inline(self) -> bool:
        """The sealed bytes are in ``inline``, not in a blob."""
        return self.inline is not None

    def _to_row(self) -> tuple[str, str, bytes, bytes, str, int]:
        return (self.backend, self.blob_id, self.key_header, self.frame_table, self.kek_id, self.kek_version)


#: ``buckets.versioning``: never enabled, enabled, suspended (schema migration 6)
VERSIONING_NEVER, VERSIONING_ENABLED, VERSIONING_SUSPENDED = 0, 1, 2
#: the version id S3 shows for a key's null version
NULL_VERSION = "null"


@dataclass(frozen=True)
class BucketRecord:
    """One bucket of one tenant."""

    tenant: str
    name: str
    bucket_id: str
    created: float
    #: new writes keep older versions (S3's Enabled)
    versioning: bool
    #: versioning was enabled, then suspended: new writes replace the "null" version
    suspended: bool = False

    @property
    def versioning_status(self) -> str | None:
        """S3's status: "Enabled", "Suspended", or ``None`` for a bucket that never kept versions."""
        return "Enabled" if self.versioning else "Suspended" if self.suspended else None

    @classmethod
    def _from_row(cls, row: tuple[Any, ...]) -> BucketRecord:
        return cls(row[0], row[1], row[2], row[3], row[4] == VERSIONING_ENABLED, row[4] == VERSIONING_SUSPENDED)


@dataclass(frozen=True)
class ObjectRecord:
    """One version of one object (or a delete marker) and where its sealed bytes are."""

    tenant: str
    bucket: str
    key: str
    version_id: str
    is_latest: bool
    delete_marker: bool
    size: int
    etag: str
    content_type: str
    headers: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    created: float = 0.0
    #: the one blob holding the bytes (or, inline, the sealed bytes themselves); ``None`` for a delete
    #: marker and a multipart object
    placement: Placement | None = None
    #: how many segments (multipart parts) hold the bytes; 0: the placement above
    parts: int = 0
    #: the key's "null" version (written while the bucket kept no versions); ``version_id`` stays unique
    null_version: bool = False
    #: S3 object tags
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def public_version_id(self) -> str:
        """The version id callers see: ``"null"`` for the null version, else the row's own."""
        return NULL_VERSION if self.null_version else self.version_id

    def __repr__(self) -> str:
        return (f"ObjectRecord(tenant={self.tenant!r}, bucket={self.bucket!r}, key={self.key!r}, "
                f"version_id={self.version_id!r}, size={self.size}, delete_marker={self.delete_marker}, "
                f"parts={self.parts})")

    @classmethod
    def _from_row(cls, row: tuple[Any, ...]) -> ObjectRecord:
        # Rows written before placements were records may name a backend without a blob
        # (multipart objects did): no blob id, no placement. An inline row's blob id is ''.
        placement = Placement(*row[12:18], row[21]) if row[13] is not None else None
        return cls(row[0], row[1], row[2], row[3], bool(row[4]), bool(row[5]), row[6], row[7], row[8],
                   json.loads(row[9]), json.loads(row[10]), row[11], placement, row[18], bool(row[19]),
                   json.loads(row[20]))

    def _to_row(self) -> tuple[Any, ...]:
        placement = self.placement._to_row() if self.placement is not None else (None,) * 6
        return (self.tenant, self.bucket, self.key, self.version_id, int(self.is_latest),
                int(self.delete_marker), self.size, self.etag, self.content_type,
                json.dumps(self.headers, sort_keys=True), json.dumps(self.metadata, sort_keys=True),
                self.created, *placement, self.parts, int(self.null_version),
                json.dumps(self.tags, sort_keys=True), self.placement.inline if self.placement is not None else None)


@dataclass(frozen=True)
class UploadRecord:
    """A multipart upload in progress: what the object will be once completed."""

    tenant: str
    bucket: str
    key: str
    upload_id: str
    created: float
    content_type: str
    headers: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    @classmethod
    def _from_row(cls, row: tuple[Any, ...]) -> UploadRecord:
        return cls(*row[:6], json.loads(row[6]), json.loads(row[7]), json.loads(row[8]))


@dataclass(frozen=True)
class PartRecord:
    """One uploaded part: its own blob, sealed under its own DEK and identity ``part_version``.

    Never inline: ``multipart_parts`` and ``object_segments`` (which a completion
    copies parts into) have no column for inline bytes, and a part is as large as
    S3's minimum part size anyway.
    """

    upload_id: str
    part_number: int
    size: int
    etag: str
    created: float
    placement: Placement
    part_version: str

    def __post_init__(self) -> None:
        if self.placement.is_inline:
            raise InvalidArgument(f"part {self.part_number} of upload {self.upload_id!r}: a multipart part is "
                                  f"stored in a blob, never inline")

    def _to_row(self) -> tuple[Any, ...]:
        return (self.upload_id, self.part_number, self.size, self.etag, self.created, *self.placement._to_row(),
                self.part_version)


@dataclass(frozen=True)
class SegmentRecord:
    """Part ``index`` of a multipart object: plaintext bytes ``[offset, offset + size)`` of it.

    Always in a blob (the part's), never inline: see ``PartRecord``.
    """

    index: int
    offset: int
    size: int
    placement: Placement
    part_version: str

    @classmethod
    def _from_row(cls, row: tuple[Any, ...]) -> SegmentRecord:
        return cls(row[0], row[1], row[2], Placement(*row[3:9]), row[9])


@dataclass(frozen=True)
class WrappedKey:
    """A DEK in a segment or part row, for the key rewrap (objects' own DEKs come as ``ObjectRecord``).

    Not a ``Placement``: the rewrap reads and swaps the key header alone.
    """

    kind: Literal["segment", "part"]
    #: the row's primary key: (tenant, bucket, key, version_id, index) or (upload_id, part_number)
    row: tuple[Any, ...]
    key_header: bytes = field(repr=False)
    kek_version: int


@dataclass(frozen=True)
class WriteCondition:
    """A conditional write's precondition on the key's current version, checked in the commit's transaction.

    ``if_none_match``: no current version (S3's ``If-None-Match: *``); ``if_match``: the
    current version has this ETag. ``since``: for a multipart completion, when the
    upload began; a condition that fails because the key was written after that is a
    conflict (``ConditionalRequestConflict``), not a plain failure.
    """

    if_match: str | None = None
    if_none_match: bool = False
    since: float | None = None

    def describe(self) -> str:
        return "If-None-Match: *" if self.if_none_match else f"If-Match: {self.if_match}"


@dataclass(frozen=True)
class DeleteOutcome:
    """What a delete did: removed a version, added a delete marker, or found nothing."""

    removed: ObjectRecord | None
    delete_marker: ObjectRecord | None
