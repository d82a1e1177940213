"""S3 bucket operations and listings: buckets, objects in a bucket, multipart uploads in a bucket, batch delete."""
from __future__ import annotations

import base64
import binascii

from starlette.responses import Response

from dwray.core.models import BucketInfo
from dwray.core.names import validate_bucket_name
from dwray.errors import BucketAccessDenied, BucketAlreadyOwnedByYou, DwrayError
from dwray.s3 import http as s3http
from dwray.s3 import xml as s3xml
from dwray.s3.errors import S3Error, from_dwray_error
from serve_apps.s3_call import RESERVED_BUCKETS, S3Call, int_param
from serve_apps.s3_operations import MAX_XML_BODY, S3Operations
from serve_apps.s3_subresources import refuse_unsupported_acl

__all__ = ["BucketOperations"]

# ListBuckets pages: S3's bounds for max-buckets, and its page size when a client pages without one.
MAX_BUCKETS_PER_PAGE = 10_000
# Listings return at most this many keys, versions or uploads, whatever max-keys asks.
MAX_KEYS = 1000
_BUCKET_PAGING = ("max-buckets", "continuation-token", "prefix", "bucket-region")


def _bucket_token(last: str) -> str:
    """The ListBuckets ContinuationToken that resumes after the bucket ``last`` (opaque to clients)."""
    return base64.urlsafe_b64encode(last.encode()).decode().rstrip("=")


def _bucket_after(token: str) -> str:
    """The bucket name a ListBuckets ContinuationToken resumes after; ``InvalidArgument`` if it is not one."""
    try:
        name = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        if len(token) > 1024 or _bucket_token(name) != token:
            raise ValueError
        validate_bucket_name(name)
    except (ValueError, binascii.Error, DwrayError):
        raise S3Error("InvalidArgument", "The continuation token provided is incorrect") from None
    return name


# Older names S3 accepts as a LocationConstraint for a region.
LOCATION_ALIASES = {"EU": "eu-west-1"}


class BucketOperations(S3Operations):
    """ListBuckets, Create/Head/DeleteBucket, GetBucketLocation, ListObjects(V2), ListObjectVersions,
    ListMultipartUploads, DeleteObjects."""

    async def list_buckets(self, call: S3Call) -> Response:
        """ListBuckets, paged as in the current API: ``max-buckets`` (1 to 10,000), ``continuation-token``,
        ``prefix``, ``bucket-region`` (every bucket is in the gateway's region). Without any of them, every
        bucket on one page, as before pagination existed."""
        params = call.params
        paged = any(name in params for name in _BUCKET_PAGING)
        limit = int_param(params, "max-buckets", MAX_BUCKETS_PER_PAGE, low=1, high=MAX_BUCKETS_PER_PAGE)
        token = params.get("continuation-token") or None
        after = _bucket_after(token) if token is not None else None
        prefix = params.get("prefix")
        region = params.get("bucket-region") or None
        buckets: list[BucketInfo] = sorted(await self.run(self.wh.list_buckets, tenant=call.context),
                                           key=lambda info: info.name)
        chosen = [info for info in buckets if (after is None or info.name > after)
                  and info.name.startswith(prefix or "") and region in (None, self.region)]
        next_token = None
        if paged and len(chosen) > limit:
            chosen = chosen[:limit]
            next_token = _bucket_token(chosen[-1].name)
        return self._xml(s3xml.list_buckets_xml(chosen, owner_id=call.tenant, owner_name=call.tenant,
                                                region=self.region, prefix=prefix,
                                                continuation_token=next_token))

    async def create_bucket(self, call: S3Call) -> Response:
        assert call.bucket is not None
        if call.bucket in RESERVED_BUCKETS:
            raise S3Error("InvalidBucketName", f"the bucket name {call.bucket!r} is reserved by the gateway "
                                               f"(its {call.bucket} endpoints)")
        refuse_unsupported_acl(call.headers)
        if call.headers.get("x-amz-bucket-object-lock-enabled", "").strip().lower() == "true":
            raise S3Error("NotImplemented", "S3 Object Lock (x-amz-bucket-object-lock-enabled) is not supported "
                                            "by dwray")
        location = s3xml.parse_create_bucket(await self._xml_body(call))
        if location is not None and LOCATION_ALIASES.get(location, location) != self.region:
            raise S3Error("InvalidLocationConstraint", f"The specified location-constraint is not valid: "
                                                       f"this gateway serves region {self.region!r}, not "
                                                       f"{location[:64]!r}")
        try:
            await self.run(self.wh.create_bucket, call.bucket, tenant=call.context)
        except BucketAlreadyOwnedByYou:
            # In us-east-1 alone, S3 answers its owner's re-create with 200 and leaves the bucket as it is.
            if self.region != "us-east-1":
                raise
        return Response(status_code=200, headers={"location": f"/{call.bucket}"})

    async def head_bucket(self, call: S3Call) -> Response:
        await self.run(self.wh.head_bucket, call.bucket, tenant=call.context)
        return Response(status_code=200, headers={"x-amz-bucket-region": self.region})

    async def delete_bucket(self, call: S3Call) -> Response:
        await self.run(self.wh.delete_bucket, call.bucket, tenant=call.context)
        return Response(status_code=204)

    async def bucket_location(self, call: S3Call) -> Response:
        await self.run(self.wh.bucket_location, call.bucket, tenant=call.context)
        return self._xml(s3xml.location_xml(self.region))

    async def list_object_versions(self, call: S3Call) -> Response:
        """ListObjectVersions on any bucket (an unversioned bucket's objects are all ``null`` versions)."""
        params = call.params
        encoding = self._encoding(call)
        max_keys = min(int_param(params, "max-keys", MAX_KEYS), MAX_KEYS)
        prefix = params.get("prefix", "")
        delimiter = params.get("delimiter") or None
        key_marker = params.get("key-marker") or None
        version_id_marker = params.get("version-id-marker") or None
        if version_id_marker is not None and key_marker is None:
            raise S3Error("InvalidArgument", "A version-id marker cannot be specified without a key marker.")
        page = await self.run(self.wh.list_versions, call.bucket, prefix=prefix, delimiter=delimiter,
                              key_marker=key_marker, version_id_marker=version_id_marker, max_keys=max_keys,
                              tenant=call.context)
        return self._xml(s3xml.list_versions_xml(
            call.bucket, page, prefix=prefix, delimiter=delimiter, key_marker=key_marker,
            version_id_marker=version_id_marker, max_keys=max_keys, encoding_type=encoding, owner_id=call.tenant))

    def _encoding(self, call: S3Call) -> str | None:
        encoding = call.params.get("encoding-type")
        if encoding not in (None, "url"):
            raise S3Error("InvalidArgument", "encoding-type must be 'url'")
        return encoding

    async def list_objects_v2(self, call: S3Call) -> Response:
        params = call.params
        encoding = self._encoding(call)
        max_keys = int_param(params, "max-keys", 1000)
        # Echoed whenever sent, even empty (which starts from the beginning), as S3 does.
        token = params.get("continuation-token")
        page = await self.run(self.wh.list, call.bucket, prefix=params.get("prefix", ""),
                              delimiter=params.get("delimiter") or None, max_keys=max_keys,
                              continuation_token=token or None, start_after=params.get("start-after") or None,
                              tenant=call.context)
        return self._xml(s3xml.list_objects_v2_xml(
            call.bucket, page, prefix=params.get("prefix", ""), delimiter=params.get("delimiter") or None,
            max_keys=max_keys, start_after=params.get("start-after") or None, continuation_token=token,
            encoding_type=encoding, fetch_owner=params.get("fetch-owner") == "true", owner_id=call.tenant))

    async def list_objects_v1(self, call: S3Call) -> Response:
        params = call.params
        encoding = self._encoding(call)
        max_keys = int_param(params, "max-keys", 1000)
        marker = params.get("marker") or None
        delimiter = params.get("delimiter") or None
        start_after = marker
        if marker and delimiter and marker.endswith(delimiter):
            # A NextMarker that is a common prefix: skip every key under it (the
            # highest code point sorts after anything a key can continue with).
            start_after = marker + "\U0010ffff"
        page = await self.run(self.wh.list, call.bucket, prefix=params.get("prefix", ""),
                              delimiter=delimiter, max_keys=max_keys, start_after=start_after, tenant=call.context)
        return self._xml(s3xml.list_objects_v1_xml(
            call.bucket, page, prefix=params.get("prefix", ""), delimiter=params.get("delimiter") or None,
            marker=marker, max_keys=max_keys, encoding_type=encoding, owner_id=call.tenant))

    async def list_uploads(self, call: S3Call) -> Response:
        params = call.params
        encoding = self._encoding(call)
        max_uploads = int_param(params, "max-uploads", 1000, high=1000)
        page = await self.run(self.wh.list_multipart_uploads, call.bucket, prefix=params.get("prefix", ""),
                              delimiter=params.get("delimiter") or None, key_marker=params.get("key-marker") or None,
                              upload_id_marker=params.get("upload-id-marker") or None, max_uploads=max_uploads,
                              tenant=call.context)
        return self._xml(s3xml.list_uploads_xml(
            call.bucket, page, prefix=params.get("prefix", ""), delimiter=params.get("delimiter") or None,
            key_marker=params.get("key-marker") or None, upload_id_marker=params.get("upload-id-marker") or None,
            max_uploads=max_uploads, encoding_type=encoding))

    async def delete_objects(self, call: S3Call) -> Response:
        checksummed = any(h.startswith("x-amz-checksum-") or h == "x-amz-sdk-checksum-algorithm"
                          for h in call.headers)
        if "content-md5" not in call.headers and not checksummed:
            raise S3Error("InvalidRequest", "DeleteObjects needs a Content-MD5 or x-amz-checksum header")
        quiet, targets = s3xml.parse_delete_objects(await self._xml_body(call), max_bytes=MAX_XML_BODY)
        # As S3 reports each: a version deleted (VersionId), a delete marker made by a delete without a
        # version (DeleteMarker, DeleteMarkerVersionId: the marker's, "null" in a Suspended bucket), or a
        # delete marker deleted by its version id (all three).
        deleted: list[tuple[str, str | None, bool, str | None]] = []
        errors: list[tuple[str, str | None, str, str]] = []
        for key, version_id in targets:
            try:
                if version_id is not None:
                    s3http.version_id_param({"versionId": version_id})
                result = await self.run(self.wh.delete, call.bucket, key, version_id=version_id, tenant=call.context)
            except (DwrayError, S3Error) as error:
                s3error = error if isinstance(error, S3Error) else from_dwray_error(error)
                if s3error.code == "NoSuchBucket" or isinstance(error, BucketAccessDenied):
                    raise s3error from None
                errors.append((key, version_id, s3error.code, s3error.message))
                continue
            marker_version = result.version_id if result.delete_marker else None
            deleted.append((key, version_id, result.delete_marker, marker_version))
        return self._xml(s3xml.delete_result_xml(deleted, errors, quiet))
