"""``GatewayWarehouse``: the tenant-facing ``Warehouse`` API over a gateway's S3 protocol.

A tenant's notebook outside the Ray cluster holds an access key, not a Ray
address. This class gives it the methods of ``dwray.core.warehouse.Warehouse``
a tenant may use (buckets, objects, listings, versions, tags, multipart,
Arrow tables), with the same signatures, the same models and the same dwray
errors, so code written against one runs against the other. Operator features
(tenants, key rotation, quotas, sweeping, the catalog) are not here: they are
the admin API's and the driver's.

Where S3 says less than the warehouse knows, one more request fills the gap
(a bucket's creation time and versioning, whether a deleted key existed); a
bucket re-created by its owner is ``BucketAlreadyOwnedByYou`` as in process,
although S3 in us-east-1 answers it with 200. Listings carry what S3 listings
carry (see ``dwray.remote.responses``).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dwray.core.models import BucketInfo, ListPage, ObjectInfo, PartInfo, PartsPage, UploadInfo, VersionsPage
from dwray.core.names import validate_bucket_name, validate_key
from dwray.core.tags import validate_tags
from dwray.core.warehouse.inputs import DEFAULT_CONTENT_TYPE, check_headers, clean_metadata
from dwray.core.warehouse.listing import Listing
from dwray.core.warehouse.objects import write_condition
from dwray.errors import (
    AccessDenied,
    BucketAccessDenied,
    BucketAlreadyExists,
    BucketAlreadyOwnedByYou,
    BucketNotFound,
    InvalidArgument,
)
from dwray.remote.connection import TenantArg
from dwray.remote.errors import Target
from dwray.remote.objects import MAX_METADATA_BYTES, GatewayObjects
from dwray.remote.responses import VersionOrder, entry_info, http_headers, timestamp
from dwray.remote.uploads import as_body

__all__ = ["GatewayWarehouse"]


def _check_count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidArgument(f"{name} must be a non-negative integer, not {value!r}")
    return value


class GatewayWarehouse(GatewayObjects):
    """Buckets and objects of one tenant, through the gateway at ``url`` (boto3 underneath).

    ``access_key``/``secret_key`` are the tenant's S3 credentials; ``verify``
    is True, False, or the path of a CA bundle for a gateway with its own CA;
    ``config`` a ``botocore.config.Config`` merged over the client's defaults.
    ``tenant=`` arguments are accepted only as ``None`` or the key's own tenant.
    """

    def __init__(self, url: str, access_key: str, secret_key: str, *, region: str = "us-east-1",
                 verify: bool | str = True, config: Any = None, part_size: int | None = None) -> None:
        extra = {} if part_size is None else {"part_size": part_size}
        super().__init__(url, access_key, secret_key, region=region, verify=verify, config=config, **extra)
        self._s3.meta.events.register("after-call.s3.ListObjectVersions", VersionOrder())

    # Buckets ------------------------------------------------------------------------------------

    def create_bucket(self, bucket: str, *, versioning: bool = False, tenant: TenantArg = None) -> BucketInfo:
        """Create a bucket: ``BucketAlreadyOwnedByYou`` if this tenant has it, ``BucketAlreadyExists``
        if another one does."""
        self._acting_as(tenant)
        validate_bucket_name(bucket)
        try:
            self._bucket_exists(bucket)
        except BucketAccessDenied:
            raise BucketAlreadyExists(bucket) from None
        except (BucketNotFound, AccessDenied):  # absent, or a key whose policy may not look: the create decides
            pass
        else:
            raise BucketAlreadyOwnedByYou(bucket)
        answer = self._call("create_bucket", Target("CreateBucket", bucket), Bucket=bucket)
        if versioning:
            self.set_bucket_versioning(bucket, "Enabled")
        return BucketInfo(bucket, timestamp(http_headers(answer).get("date")), versioning,
                          "Enabled" if versioning else None)

    def head_bucket(self, bucket: str, *, tenant: TenantArg = None) -> BucketInfo:
        """``BucketNotFound`` unless the tenant has the bucket."""
        self._acting_as(tenant)
        validate_bucket_name(bucket)
        status = self.bucket_versioning(bucket)
        listed = self._call("list_buckets", Target("ListBuckets"), Prefix=bucket).get("Buckets", [])
        created = next((timestamp(entry.get("CreationDate")) for entry in listed if entry["Name"] == bucket), 0.0)
        return BucketInfo(bucket, created, status == "Enabled", status)

    def bucket_versioning(self, bucket: str, *, tenant: TenantArg = None) -> str | None:
        """S3's GetBucketVersioning: "Enabled", "Suspended", or ``None`` if versioning was never set."""
        self._acting_as(tenant)
        validate_bucket_name(bucket)
        answer = self._call("get_bucket_versioning", Target("GetBucketVersioning", bucket), Bucket=bucket)
        return answer.get("Status") or None

    def set_bucket_versioning(self, bucket: str, status: str, *, tenant: TenantArg = None) -> BucketInfo:
        """S3's PutBucketVersioning: "Enabled" or "Suspended"."""
        self._acting_as(tenant)
        if status not in ("Enabled", "Suspended"):
            raise InvalidArgument(f"versioning status must be 'Enabled' or 'Suspended', not {status!r}")
        validate_bucket_name(bucket)
        self._call("put_bucket_versioning", Target("PutBucketVersioning", bucket), Bucket=bucket,
                   VersioningConfiguration={"Status": status})
        return self.head_bucket(bucket)

    def list_buckets(self, *, tenant: TenantArg = None) -> list[BucketInfo]:
        """The tenant's buckets, by name (with each one's versioning status: one request per bucket)."""
        self._acting_as(tenant)
        listed = self._call("list_buckets", Target("ListBuckets")).get("Buckets", [])
        infos = []
        for entry in sorted(listed, key=lambda item: item["Name"]):
            try:
                status = self.bucket_versioning(entry["Name"])
            except BucketNotFound:  # deleted since it was listed
                continue
            infos.append(BucketInfo(entry["Name"], timestamp(entry.get("CreationDate")), status == "Enabled", status))
        return infos

    def delete_bucket(self, bucket: str, *, tenant: TenantArg = None) -> None:
        """Delete an empty bucket. ``BucketNotEmpty`` while it holds any object version."""
        self._acting_as(tenant)
        validate_bucket_name(bucket)
        self._call("delete_bucket", Target("DeleteBucket", bucket), Bucket=bucket)

    # Listings -----------------------------------------------------------------------------------

    def list(self, bucket: str, *, prefix: str = "", delimiter: str | None = None, max_keys: int = 1000,
             continuation_token: str | None = None, start_after: str | None = None,
             tenant: TenantArg = None) -> ListPage:
        """One page of keys in S3's order (ListObjectsV2). Entries name no version (``version_id`` "")."""
        self._acting_as(tenant)
        validate_bucket_name(bucket)
        _check_count("max_keys", max_keys)
        params: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": max_keys}
        if delimiter:
            params["Delimiter"] = delimiter
        if continuation_token:
            params["ContinuationToken"] = continuation_token
        if start_after:
            params["StartAfter"] = start_after
        answer = self._call("list_objects_v2", Target("ListObjectsV2", bucket), **params)
        objects = [entry_info(bucket, entry) for entry in answer.get("Contents", [])]
        prefixes = [entry["Prefix"] for entry in answer.get("CommonPrefixes", [])]
        truncated = bool(answer.get("IsTruncated"))
        return ListPage(objects, prefixes, truncated, answer.get("NextContinuationToken") if truncated else None)

    # Every live object under a prefix: the core's loop over list() pages, as it is.
    iter_objects = Listing.iter_objects

    def list_versions(self, bucket: str, *, prefix: str = "", delimiter: str | None = None,
                      key_marker: str | None = None, version_id_marker: str | None = None, max_keys: int = 1000,
                      tenant: TenantArg = None) -> VersionsPage:
        """One page of every version and delete marker, by key then newest first (ListObjectVersions)."""
        self._acting_as(tenant)
        validate_bucket_name(bucket)
        _check_count("max_keys", max_keys)
        params: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": max_keys}
        if delimiter:
            params["Delimiter"] = delimiter
        if key_marker:
            params["KeyMarker"] = key_marker
            if version_id_marker:
                params["VersionIdMarker"] = version_id_marker
        answer = self._call("list_object_versions", Target("ListObjectVersions", bucket), **params)
        found = {(False, entry["Key"], entry.get("VersionId", "")): entry for entry in answer.get("Versions", [])}
        found.update({(True, entry["Key"], entry.get("VersionId", "")): entry
                      for entry in answer.get("DeleteMarkers", [])})
        versions = [entry_info(bucket, found[item], delete_marker=item[0])
                    for item in answer.get("DwrayOrder", []) if item in found]
        prefixes = [entry["Prefix"] for entry in answer.get("CommonPrefixes", [])]
        if not answer.get("IsTruncated"):
            return VersionsPage(versions, prefixes, False)
        return VersionsPage(versions, prefixes, True, answer.get("NextKeyMarker"), answer.get("NextVersionIdMarker"))

    def versions(self, bucket: str, key: str, *, tenant: TenantArg = None) -> list[ObjectInfo]:
        """Every version of a key (delete markers included), newest first."""
        self._acting_as(tenant)
        validate_key(key)
        found: list[ObjectInfo] = []
        key_marker: str | None = None
        version_marker: str | None = None
        while True:
            page = self.list_versions(bucket, prefix=key, key_marker=key_marker, version_id_marker=version_marker)
            found += [info for info in page.versions if info.key == key]
            # Keys after this one (it is their prefix) come later in the listing: stop at the first.
            if not page.is_truncated or any(info.key > key for info in page.versions):
                return found
            key_marker, version_marker = page.next_key_marker, page.next_version_id_marker

    # Multipart uploads --------------------------------------------------------------------------

    def create_multipart_upload(self, bucket: str, key: str, *, content_type: str | None = None,
                                metadata: Mapping[str, str] | None = None, headers: Mapping[str, str] | None = None,
                                tenant: TenantArg = None, tags: Mapping[str, str] | None = None) -> UploadInfo:
        """Begin a multipart upload of ``key``; the object gets these content type, metadata, headers and tags."""
        from urllib.parse import urlencode

        self._acting_as(tenant)
        validate_bucket_name(bucket)
        validate_key(key)
        ctype = content_type or DEFAULT_CONTENT_TYPE
        params: dict[str, Any] = {"Bucket": bucket, "Key": key, "ContentType": ctype,
                                  "Metadata": clean_metadata(metadata, MAX_METADATA_BYTES)}
        clean_tags = validate_tags(tags or {})
        if clean_tags:
            params["Tagging"] = urlencode(clean_tags)
        answer = self._call("create_multipart_upload", Target("CreateMultipartUpload", bucket, key),
                            headers=check_headers(headers), **params)
        return UploadInfo(bucket, key, answer["UploadId"], timestamp(http_headers(answer).get("date")), ctype)

    def upload_part(self, bucket: str, key: str, upload_id: str, part_number: int, data: Any, *,
                    tenant: TenantArg = None) -> PartInfo:
        """Store part ``part_number`` (bytes, binary file object or iterable of chunks; sent in one request)."""
        from dwray.core.pipeline import plaintext_frames

        self._acting_as(tenant)
        validate_bucket_name(bucket)
        validate_key(key)
        body = b"".join(bytes(piece) for piece, _ in plaintext_frames(data, self.part_size))
        answer = self._call("upload_part", Target("UploadPart", bucket, key, upload_id=upload_id), Bucket=bucket,
                            Key=key, UploadId=upload_id, PartNumber=part_number, Body=as_body(body))
        return PartInfo(part_number, str(answer["ETag"]).strip('"'), len(body),
                        timestamp(http_headers(answer).get("date")))

    def complete_multipart_upload(self, bucket: str, key: str, upload_id: str, parts: Sequence[tuple[int, str]],
                                  *, tenant: TenantArg = None, if_match: str | None = None,
                                  if_none_match: bool = False) -> ObjectInfo:
        """Make the object from the named ``(part number, ETag)`` parts, in S3's rules."""
        self._acting_as(tenant)
        condition = write_condition(if_match, if_none_match)
        conditions: dict[str, Any] = {}
        if condition is not None:
            conditions = {"IfNoneMatch": "*"} if condition.if_none_match else {"IfMatch": f'"{condition.if_match}"'}
        listed = [{"PartNumber": number, "ETag": f'"{str(etag).strip(chr(34))}"'} for number, etag in parts]
        answer = self._call("complete_multipart_upload",
                            Target("CompleteMultipartUpload", bucket, key, upload_id=upload_id), Bucket=bucket,
                            Key=key, UploadId=upload_id, MultipartUpload={"Parts": listed}, **conditions)
        return self.head(bucket, key, version_id=answer.get("VersionId"))

    def abort_multipart_upload(self, bucket: str, key: str, upload_id: str, *, tenant: TenantArg = None) -> None:
        """Drop an upload and its parts (``UploadNotFound`` if unknown)."""
        self._acting_as(tenant)
        self._call("abort_multipart_upload", Target("AbortMultipartUpload", bucket, key, upload_id=upload_id),
                   Bucket=bucket, Key=key, UploadId=upload_id)

    def list_parts(self, bucket: str, key: str, upload_id: str, *, max_parts: int = 1000,
                   part_number_marker: int = 0, tenant: TenantArg = None) -> PartsPage:
        """One page of an upload's parts numbered above ``part_number_marker``."""
        self._acting_as(tenant)
        _check_count("max_parts", max_parts)
        _check_count("part_number_marker", part_number_marker)
        answer = self._call("list_parts", Target("ListParts", bucket, key, upload_id=upload_id), Bucket=bucket,
                            Key=key, UploadId=upload_id, MaxParts=max_parts, PartNumberMarker=part_number_marker)
        parts = [PartInfo(int(part["PartNumber"]), str(part["ETag"]).strip('"'), int(part["Size"]),
                          timestamp(part.get("LastModified"))) for part in answer.get("Parts", [])]
        truncated = bool(answer.get("IsTruncated"))
        marker = int(answer["NextPartNumberMarker"]) if truncated and answer.get("NextPartNumberMarker") else None
        return PartsPage(parts, truncated, marker)

