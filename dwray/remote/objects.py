"""Objects over the gateway: put, head, open/get with ranges, copy, delete, tags, Arrow tables.

Names, keys, metadata, headers, ranges and write conditions are checked here
with the warehouse's own functions before any request, so bad input gets the
error and message the in-process warehouse gives. What S3's answers do not
say is asked for: a delete looks the version up first, since S3 does not tell
whether there was anything to delete.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import quote, urlencode

from dwray.core.models import DeleteResult, ObjectInfo
from dwray.core.names import validate_bucket_name, validate_key
from dwray.core.tags import validate_tags
from dwray.core.warehouse.inputs import DEFAULT_CONTENT_TYPE, check_headers, clean_metadata
from dwray.core.warehouse.objects import write_condition
from dwray.core.warehouse.reads import ObjectReader, check_range
from dwray.errors import (
    AccessDenied,
    DeleteMarkerVersion,
    InvalidArgument,
    InvalidRange,
    ObjectNotFound,
)
from dwray.remote.connection import GatewayConnection, TenantArg
from dwray.remote.errors import Target
from dwray.remote.responses import NULL_VERSION, header_info, http_headers, parts_of, timestamp
from dwray.remote.uploads import send_body

__all__ = ["GatewayObjects"]

#: S3's limit on user metadata, which the gateway keeps (``limits.max_metadata_bytes``)
MAX_METADATA_BYTES = 2048
#: bytes asked of the response per read while streaming a body
READ_CHUNK = 1 << 20
PARQUET = "application/vnd.apache.parquet"


class GatewayObjects(GatewayConnection):
    """The object operations of the tenant client."""

    def _written(self, bucket: str, key: str, answer: Mapping[str, Any], size: int, content_type: str,
                 metadata: dict[str, str], headers: dict[str, str], tags: dict[str, str]) -> ObjectInfo:
        """The ``ObjectInfo`` of a version just written, from what was sent and what the gateway answered."""
        raw = http_headers(answer)
        etag = str(answer.get("ETag", raw.get("etag", ""))).strip('"')
        return ObjectInfo(bucket, key, answer.get("VersionId") or NULL_VERSION, size, etag,
                          timestamp(raw.get("date")) or time.time(), content_type, metadata, headers, False, True,
                          tags, parts_of(etag))

    def put(self, bucket: str, key: str, data: Any, *, content_type: str | None = None,
            metadata: Mapping[str, str] | None = None, headers: Mapping[str, str] | None = None,
            tenant: TenantArg = None, finalize: Callable[[], Mapping[str, str]] | None = None,
            tags: Mapping[str, str] | None = None, if_match: str | None = None,
            if_none_match: bool = False) -> ObjectInfo:
        """Store ``data`` (bytes, binary file object, or iterable of bytes chunks) under ``key``.

        Streams: a body over ``part_size`` goes as a multipart upload, a part at
        a time (its ETag is then S3's multipart ETag, ``md5-N``). ``finalize`` is
        the gateway's own server-side hook and is refused here.
        """
        self._acting_as(tenant)
        validate_bucket_name(bucket)
        validate_key(key)
        if finalize is not None:
            raise InvalidArgument("finalize is the gateway's server-side hook for headers known after the body; "
                                  "a gateway client sends its headers with the request")
        clean_meta = clean_metadata(metadata, MAX_METADATA_BYTES)
        stored = check_headers(headers)
        clean_tags = validate_tags(tags or {})
        condition = write_condition(if_match, if_none_match)
        ctype = content_type or DEFAULT_CONTENT_TYPE
        target = Target("PutObject", bucket, key)
        common: dict[str, Any] = {"Bucket": bucket, "Key": key, "ContentType": ctype, "Metadata": clean_meta}
        if clean_tags:
            common["Tagging"] = urlencode(clean_tags)
        conditions: dict[str, Any] = {}
        if condition is not None:
            conditions = {"IfNoneMatch": "*"} if condition.if_none_match else {"IfMatch": f'"{condition.if_match}"'}

        def single(body: Any) -> dict[str, Any]:
            return self._call("put_object", target, headers=stored, Body=body, **common, **conditions)

        def begin() -> str:
            return self._call("create_multipart_upload", Target("CreateMultipartUpload", bucket, key),
                              headers=stored, **common)["UploadId"]

        def part(upload_id: str, number: int, body: Any) -> str:
            return self._call("upload_part", Target("UploadPart", bucket, key, upload_id=upload_id), Bucket=bucket,
                              Key=key, UploadId=upload_id, PartNumber=number, Body=body)["ETag"]

        def complete(upload_id: str, parts: list[tuple[int, str]]) -> dict[str, Any]:
            listed = [{"PartNumber": number, "ETag": etag} for number, etag in parts]
            return self._call("complete_multipart_upload", target, Bucket=bucket, Key=key, UploadId=upload_id,
                              MultipartUpload={"Parts": listed}, **conditions)

        def abort(upload_id: str) -> None:
            self._call("abort_multipart_upload", target, Bucket=bucket, Key=key, UploadId=upload_id)

        sent = send_body(data, self.part_size, single=single, begin=begin, part=part, complete=complete, abort=abort)
        return self._written(bucket, key, sent.answer, sent.size, ctype, clean_meta, stored, clean_tags)

    def head(self, bucket: str, key: str, *, version_id: str | None = None, tenant: TenantArg = None) -> ObjectInfo:
        """The object's metadata (its tags are not among S3's headers: ``get_tags``)."""
        self._acting_as(tenant)
        validate_bucket_name(bucket)
        validate_key(key)
        version = {"VersionId": version_id} if version_id is not None else {}
        try:
            answer = self._call("head_object", Target("HeadObject", bucket, key, version_id), Bucket=bucket, Key=key,
                                ChecksumMode="ENABLED", **version)
        except (ObjectNotFound, AccessDenied):
            # A HEAD's 404 or 403 has no body to say whether the bucket is missing or another tenant's.
            self._bucket_exists(bucket)
            raise
        return header_info(bucket, key, http_headers(answer))

    def _bucket_exists(self, bucket: str) -> None:
        """``BucketNotFound`` (or ``BucketAccessDenied``) unless the bucket is this tenant's."""
        self._call("get_bucket_versioning", Target("GetBucketVersioning", bucket), Bucket=bucket)

    def open(self, bucket: str, key: str, *, range: tuple[int, int | None] | None = None,
             version_id: str | None = None, tenant: TenantArg = None) -> ObjectReader:
        """A stream of the object's bytes; ``range=(first, last)`` is inclusive, as HTTP's Range."""
        self._acting_as(tenant)
        validate_bucket_name(bucket)
        validate_key(key)
        span = check_range(range)
        params: dict[str, Any] = {"Bucket": bucket, "Key": key}
        if version_id is not None:
            params["VersionId"] = version_id
        if span is not None:
            first, last = span
            if first < 0 or (last is not None and last < first):
                size = self.head(bucket, key, version_id=version_id).size
                raise InvalidRange(f"bytes={first}-{'' if last is None else last}", size)
            params["Range"] = f"bytes={first}-{'' if last is None else last}"
        else:
            params["ChecksumMode"] = "ENABLED"  # the stored checksums are among the object's headers
        answer = self._call("get_object", Target("GetObject", bucket, key, version_id), **params)
        headers = http_headers(answer)
        body = answer["Body"]
        length = int(headers.get("content-length", "0") or 0)
        start, size = 0, None
        content_range = headers.get("content-range", "")
        if content_range.startswith("bytes "):
            span_text, _, total = content_range[len("bytes "):].partition("/")
            start, size = int(span_text.partition("-")[0]), int(total)
        info = header_info(bucket, key, headers, size=size)
        return ObjectReader(info, _chunks(body), start, length, on_close=body.close)

    def get(self, bucket: str, key: str, *, range: tuple[int, int | None] | None = None,
            version_id: str | None = None, tenant: TenantArg = None) -> bytes:
        """The object's bytes (or an inclusive ``range`` of them)."""
        with self.open(bucket, key, range=range, version_id=version_id, tenant=tenant) as reader:
            return reader.readall()

    def _read_into_buffer(self, bucket: str, key: str, version_id: str | None) -> tuple[ObjectInfo, bytearray]:
        """The whole body read straight into one buffer of its size: no second copy, no joined chunks."""
        with self.open(bucket, key, version_id=version_id) as reader:
            buffer = bytearray(reader.length)
            view, filled = memoryview(buffer), 0
            while filled < len(buffer):
                count = reader.readinto(view[filled:])
                if not count:
                    raise ObjectNotFound(bucket, key, version_id)  # the body ended early: the version went away
                filled += count
            return reader.info, buffer

    def copy(self, src_bucket: str, src_key: str, dst_bucket: str, dst_key: str, *,
             version_id: str | None = None, content_type: str | None = None,
             metadata: Mapping[str, str] | None = None, headers: Mapping[str, str] | None = None,
             tenant: TenantArg = None, tags: Mapping[str, str] | None = None, if_match: str | None = None,
             if_none_match: bool = False) -> ObjectInfo:
        """Copy an object inside the gateway. Metadata, content type and headers are copied unless given
        (S3's REPLACE); so are tags unless ``tags`` is given."""
        self._acting_as(tenant)
        validate_bucket_name(dst_bucket)
        validate_key(dst_key)
        condition = write_condition(if_match, if_none_match)
        new_tags = None if tags is None else validate_tags(tags)
        replace = metadata is not None or content_type is not None or headers is not None
        source = self.head(src_bucket, src_key, version_id=version_id)
        if replace:
            ctype, meta = content_type or DEFAULT_CONTENT_TYPE, clean_metadata(metadata, MAX_METADATA_BYTES)
            stored = check_headers(headers)
        else:
            ctype, meta, stored = source.content_type, dict(source.metadata), dict(source.headers)
        copy_source = f"{src_bucket}/{quote(src_key, safe='/')}"
        if version_id is not None:
            copy_source += f"?versionId={quote(version_id, safe='')}"
        params: dict[str, Any] = {"Bucket": dst_bucket, "Key": dst_key, "CopySource": copy_source,
                                  # REPLACE always: the gateway, as S3, refuses a COPY of an object onto itself
                                  "MetadataDirective": "REPLACE", "ContentType": ctype, "Metadata": meta}
        if new_tags is not None:
            params["TaggingDirective"] = "REPLACE"
            params["Tagging"] = urlencode(new_tags)
        if condition is not None:
            params.update({"IfNoneMatch": "*"} if condition.if_none_match else {"IfMatch": f'"{condition.if_match}"'})
        answer = self._call("copy_object", Target("CopyObject", dst_bucket, dst_key), headers=stored, **params)
        result = answer.get("CopyObjectResult", {})
        etag = str(result.get("ETag", "")).strip('"')
        copied_tags = new_tags if new_tags is not None else self.get_tags(src_bucket, src_key,
                                                                         version_id=source.version_id)[1]
        return ObjectInfo(dst_bucket, dst_key, answer.get("VersionId") or NULL_VERSION, source.size, etag,
                          timestamp(result.get("LastModified")) or time.time(), ctype, meta, stored, False, True,
                          copied_tags, parts_of(etag))

    def delete(self, bucket: str, key: str, *, version_id: str | None = None, tenant: TenantArg = None) -> DeleteResult:
        """Delete a key (deleting a missing key succeeds). In a versioned bucket without ``version_id``
        a delete marker is added; with ``version_id`` that version is removed for good."""
        self._acting_as(tenant)
        validate_bucket_name(bucket)
        validate_key(key)
        found: ObjectInfo | None = None
        marker_named = False
        try:
            found = self.head(bucket, key, version_id=version_id)
        except DeleteMarkerVersion:
            marker_named = True
        except ObjectNotFound:
            pass
        version = {"VersionId": version_id} if version_id is not None else {}
        answer = self._call("delete_object", Target("DeleteObject", bucket, key, version_id), Bucket=bucket, Key=key,
                            **version)
        if answer.get("DeleteMarker") and version_id is None:
            return DeleteResult(bucket, key, answer.get("VersionId") or NULL_VERSION, True, True)
        named = answer.get("VersionId") or version_id or (found.version_id if found is not None else None)
        return DeleteResult(bucket, key, named, marker_named, found is not None or marker_named)

    # Tags ---------------------------------------------------------------------------------------

    def get_tags(self, bucket: str, key: str, *, version_id: str | None = None,
                 tenant: TenantArg = None) -> tuple[str, dict[str, str]]:
        """The tags of the latest (or named) version, and that version's id."""
        self._acting_as(tenant)
        version = {"VersionId": version_id} if version_id is not None else {}
        answer = self._call("get_object_tagging", Target("GetObjectTagging", bucket, key, version_id),
                            Bucket=bucket, Key=key, **version)
        tags = {tag["Key"]: tag["Value"] for tag in answer.get("TagSet", [])}
        return answer.get("VersionId") or NULL_VERSION, tags

    def put_tags(self, bucket: str, key: str, tags: Mapping[str, str], *, version_id: str | None = None,
                 tenant: TenantArg = None) -> str:
        """Replace the tags of the latest (or named) version; return its version id."""
        self._acting_as(tenant)
        clean = validate_tags(tags)
        version = {"VersionId": version_id} if version_id is not None else {}
        answer = self._call("put_object_tagging", Target("PutObjectTagging", bucket, key, version_id),
                            Bucket=bucket, Key=key, Tagging={"TagSet": [{"Key": k, "Value": v}
                                                                        for k, v in clean.items()]}, **version)
        return answer.get("VersionId") or NULL_VERSION

    def delete_tags(self, bucket: str, key: str, *, version_id: str | None = None, tenant: TenantArg = None) -> str:
        """Remove every tag of the latest (or named) version; return its version id."""
        self._acting_as(tenant)
        version = {"VersionId": version_id} if version_id is not None else {}
        answer = self._call("delete_object_tagging", Target("DeleteObjectTagging", bucket, key, version_id),
                            Bucket=bucket, Key=key, **version)
        return answer.get("VersionId") or NULL_VERSION

    # Tables -------------------------------------------------------------------------------------

    def put_table(self, bucket: str, key: str, table: Any, *, metadata: Mapping[str, str] | None = None,
                  compression: str = "zstd", tenant: TenantArg = None) -> ObjectInfo:
        """Store a ``pyarrow.Table`` as a Parquet object."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not isinstance(table, pa.Table):
            raise InvalidArgument(f"put_table takes a pyarrow.Table, not {type(table).__name__}")
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression=compression)
        return self.put(bucket, key, memoryview(sink.getvalue()), content_type=PARQUET, metadata=metadata,
                        tenant=tenant)

    def get_table(self, bucket: str, key: str, *, columns: list[str] | None = None,
                  version_id: str | None = None, tenant: TenantArg = None) -> Any:
        """Read a Parquet object back as a ``pyarrow.Table``.

        The body is read once, straight into one buffer, which Arrow wraps
        without copying (``pa.py_buffer``); Parquet decodes the columns from it.
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        self._acting_as(tenant)
        validate_bucket_name(bucket)
        validate_key(key)
        _, body = self._read_into_buffer(bucket, key, version_id)
        try:
            return pq.read_table(pa.BufferReader(pa.py_buffer(body)), columns=columns)
        except pa.ArrowInvalid as exc:
            raise InvalidArgument(f"object {key!r} in bucket {bucket!r} is not a Parquet table: {exc}") from None


def _chunks(body: Any) -> Iterator[bytes]:
    """The response body a chunk at a time; a connection lost mid-body is a dwray error."""
    from botocore.exceptions import BotoCoreError

    try:
        while chunk := body.read(READ_CHUNK):
            yield chunk
    except (BotoCoreError, OSError) as error:  # botocore wraps urllib3's read errors in its own
        from dwray.errors import StorageError

        raise StorageError("read", "gateway response", f"the body was cut short: {type(error).__name__}") from None

