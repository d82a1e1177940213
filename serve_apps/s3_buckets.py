"""S3 bucket operations and listings: buckets, objects in a bucket, multipart uploads in a bucket, batch delete."""
from __future__ import annotations

from starlette.responses import Response

from dwray.errors import DwrayError
from dwray.s3 import xml as s3xml
from dwray.s3.errors import S3Error, from_dwray_error
from serve_apps.s3_call import RESERVED_BUCKETS, S3Call, int_param
from serve_apps.s3_operations import MAX_XML_BODY, S3Operations

__all__ = ["BucketOperations"]


class BucketOperations(S3Operations):
    """ListBuckets, Create/Head/DeleteBucket, location and versioning, ListObjects(V2), ListMultipartUploads,
    DeleteObjects."""

    async def list_buckets(self, call: S3Call) -> Response:
        buckets = await self.run(self.wh.list_buckets, tenant=call.context)
        return self._xml(s3xml.list_buckets_xml(buckets, owner_id=call.tenant, owner_name=call.tenant))

    async def create_bucket(self, call: S3Call) -> Response:
        location = s3xml.parse_create_bucket(await self._xml_body(call))
        if location and location != self.region:
            raise S3Error("InvalidArgument", f"this gateway serves region {self.region!r}, not {location!r}")
        assert call.bucket is not None
        if call.bucket in RESERVED_BUCKETS:
            raise S3Error("InvalidBucketName", f"the bucket name {call.bucket!r} is reserved by the gateway "
                                               f"(its {call.bucket} endpoints)")
        await self.run(self.wh.create_bucket, call.bucket, tenant=call.context)
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

    async def bucket_versioning(self, call: S3Call) -> Response:
        versioning = await self.run(self.wh.bucket_versioning, call.bucket, tenant=call.context)
        return self._xml(s3xml.versioning_xml(True if versioning else None))

    def _encoding(self, call: S3Call) -> str | None:
        encoding = call.params.get("encoding-type")
        if encoding not in (None, "url"):
            raise S3Error("InvalidArgument", "encoding-type must be 'url'")
        return encoding

    async def list_objects_v2(self, call: S3Call) -> Response:
        params = call.params
        encoding = self._encoding(call)
        max_keys = int_param(params, "max-keys", 1000)
        token = params.get("continuation-token") or None
        page = await self.run(self.wh.list, call.bucket, prefix=params.get("prefix", ""),
                              delimiter=params.get("delimiter") or None, max_keys=max_keys,
                              continuation_token=token, start_after=params.get("start-after") or None,
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
        deleted: list[tuple[str, str | None, bool, str | None]] = []
        errors: list[tuple[str, str, str]] = []
        for key, version_id in targets:
            try:
                result = await self.run(self.wh.delete, call.bucket, key, version_id=version_id, tenant=call.context)
            except DwrayError as error:
                s3error = from_dwray_error(error)
                if s3error.code == "NoSuchBucket":
                    raise s3error from None
                errors.append((key, s3error.code, s3error.message))
                continue
            marker_version = result.version_id if result.delete_marker else None
            deleted.append((key, version_id, result.delete_marker, marker_version))
        return self._xml(s3xml.delete_result_xml(deleted, errors, quiet))
