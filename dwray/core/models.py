"""Frozen data that crosses the warehouse's boundary: tenants, buckets, objects, listings."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dwray.core.names import validate_tenant_name

__all__ = ["BucketInfo", "DeleteResult", "ListPage", "ObjectInfo", "PartInfo", "PartsPage", "SweepReport",
           "TenantContext", "UploadInfo", "UploadsPage",
           "VersionsPage"]


@dataclass(frozen=True)
class TenantContext:
    """Who an operation runs for. Every warehouse operation takes one.

    The gateway builds one per request with the access key, its ``policy``
    (an ``AccessPolicy``, ``dwray.core.policy``), the request id and the
    client's address; the kernel checks the policy on every operation
    (``dwray.core.warehouse.access``). ``policy`` ``None`` means the
    tenant's full rights: a key without a policy, or a driver (an operator).
    """

    tenant: str
    principal: str | None = None
    access_key_id: str | None = None
    policy: Any = None
    request_id: str | None = None
    source_address: str | None = None

    def __post_init__(self) -> None:
        validate_tenant_name(self.tenant)

    @property
    def kek_id(self) -> str:
        """The id of this tenant's key-encryption key."""
        return f"tenant:{self.tenant}"


@dataclass(frozen=True)
class BucketInfo:
    """A bucket as callers see it."""

    name: str
    created: float
    #: whether new writes keep older versions (versioning Enabled)
    versioning: bool
    #: S3's versioning status: "Enabled", "Suspended", or ``None`` if it was never set
    versioning_status: str | None = None


@dataclass(frozen=True)
class ObjectInfo:
    """An object version as callers see it (no placement, no key material)."""

    bucket: str
    key: str
    version_id: str
    size: int
    etag: str
    last_modified: float
    content_type: str = "application/octet-stream"
    metadata: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    delete_marker: bool = False
    is_latest: bool = True
    #: the object's tags (S3 object tagging)
    tags: dict[str, str] = field(default_factory=dict)
    #: how many multipart parts hold the bytes; 0 for an object stored in one piece
    parts_count: int = 0


@dataclass(frozen=True)
class ListPage:
    """One page of a listing, as S3's ListObjectsV2 returns it."""

    objects: list[ObjectInfo]
    common_prefixes: list[str]
    is_truncated: bool
    next_continuation_token: str | None = None

    @property
    def keys(self) -> list[str]:
        return [info.key for info in self.objects]


@dataclass(frozen=True)
class VersionsPage:
    """One page of S3's ListObjectVersions: versions and delete markers in key order, newest first
    within a key (``ObjectInfo.version_id`` is ``"null"`` for null versions)."""

    versions: list[ObjectInfo]
    common_prefixes: list[str]
    is_truncated: bool
    next_key_marker: str | None = None
    next_version_id_marker: str | None = None


@dataclass(frozen=True)
class PartInfo:
    """One uploaded part of a multipart upload. ``etag`` is the part's MD5 in hex, unquoted."""

    part_number: int
    etag: str
    size: int
    last_modified: float


@dataclass(frozen=True)
class PartsPage:
    """One page of ListParts, in part-number order."""

    parts: list[PartInfo]
    is_truncated: bool
    next_part_number_marker: int | None = None


@dataclass(frozen=True)
class UploadInfo:
    """A multipart upload in progress."""

    bucket: str
    key: str
    upload_id: str
    initiated: float
    content_type: str = "application/octet-stream"


@dataclass(frozen=True)
class UploadsPage:
    """One page of ListMultipartUploads, ordered by key, then by initiation time."""

    uploads: list[UploadInfo]
    common_prefixes: list[str]
    is_truncated: bool
    next_key_marker: str | None = None
    next_upload_id_marker: str | None = None


@dataclass(frozen=True)
class DeleteResult:
    """What a delete did."""

    bucket: str
    key: str
    version_id: str | None
    delete_marker: bool
    existed: bool


@dataclass(frozen=True)
class SweepReport:
    """What a sweep removed and what it left because it was younger than the grace period."""

    deleted: int
    young: int
    referenced: int
    temp_files: int = 0
