"""S3 object operations: PutObject, CopyObject, GetObject, HeadObject, DeleteObject."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.responses import Response, StreamingResponse

from dwray.s3 import http as s3http
from dwray.s3 import xml as s3xml
from dwray.s3.errors import S3Error
from dwray.s3.tagging import parse_tagging_header
from serve_apps.bodies import stream_reader
from serve_apps.s3_call import NULL_VERSION, S3Call, etag, int_param, version_headers, write_conditions
from serve_apps.s3_operations import S3Operations
from serve_apps.s3_subresources import refuse_unsupported_acl

__all__ = ["SMALL_BODY", "ObjectOperations"]

# A GET answer of at most this many bytes is read whole before the response starts: one
# thread hop instead of one per chunk, and a read error is a proper S3 error, not a cut body.
# (256 bodies in flight at most: 64 MiB.)
SMALL_BODY = 256 << 10
_CONDITION_HEADERS = ("if-match", "if-none-match", "if-modified-since", "if-unmodified-since")


class ObjectOperations(S3Operations):
    """Object writes (a streamed body, or a copy inside the warehouse) and reads (streamed, ranged, conditional)."""

    async def put_object(self, call: S3Call) -> Response:
        conditions = write_conditions(call)
        refuse_unsupported_acl(call.headers)
        tags = parse_tagging_header(call.headers["x-amz-tagging"]) if "x-amz-tagging" in call.headers else None
        metadata = s3http.user_metadata(call.header_list, self.max_metadata_bytes)
        headers = self._stored_headers(call)
        content_type = call.headers.get("content-type") or None

        def write(data: Any, checksums: Callable[[], dict[str, str]]) -> Any:
            # The checksums are known once the body has been read, before the commit (which decides
            # the conditions: a failed one stores nothing).
            return self.wh.put(call.bucket, call.key, data, content_type=content_type, metadata=metadata,
                               headers=headers, tags=tags, tenant=call.context, finalize=checksums, **conditions)

        info, echoed = await self.receive_body(call, write)
        return Response(status_code=200, headers={"etag": etag(info.etag), **version_headers(info.version_id),
                                                  **echoed})

    async def copy_object(self, call: S3Call) -> Response:
        # If-Match / If-None-Match concern the destination; x-amz-copy-source-if-* the source.
        conditions = write_conditions(call)
        refuse_unsupported_acl(call.headers)
        src_bucket, src_key, src_version = s3http.parse_copy_source(call.headers["x-amz-copy-source"])
        source = await self.run(self.wh.head, src_bucket, src_key, version_id=src_version, tenant=call.context)
        s3http.check_copy_source_conditions(call.headers, source.etag, source.last_modified)
        directive = call.headers.get("x-amz-metadata-directive", "COPY").upper()
        if directive not in ("COPY", "REPLACE"):
            raise S3Error("InvalidArgument", "x-amz-metadata-directive must be COPY or REPLACE")
        tagging = call.headers.get("x-amz-tagging-directive", "COPY").upper()
        if tagging not in ("COPY", "REPLACE"):
            raise S3Error("InvalidArgument", "x-amz-tagging-directive must be COPY or REPLACE")
        if directive == "COPY" and (src_bucket, src_key) == (call.bucket, call.key) and src_version is None:
            raise S3Error("InvalidRequest", "This copy request is illegal because it is trying to copy an object "
                                            "to itself without changing the object's metadata, storage class, "
                                            "website redirect location or encryption attributes.")
        kwargs: dict[str, Any] = {}
        if directive == "REPLACE":
            kwargs = {"content_type": call.headers.get("content-type") or "binary/octet-stream",
                      "metadata": s3http.user_metadata(call.header_list, self.max_metadata_bytes),
                      "headers": self._stored_headers(call)}
        if tagging == "REPLACE":
            # Without x-amz-tagging, REPLACE gives the copy no tags; COPY (tags=None) keeps the source's.
            kwargs["tags"] = parse_tagging_header(call.headers.get("x-amz-tagging", ""))
        info = await self.run(self.wh.copy, src_bucket, src_key, call.bucket, call.key, version_id=src_version,
                              tenant=call.context, **conditions, **kwargs)
        headers = version_headers(info.version_id)
        if src_version is not None or source.version_id != NULL_VERSION:
            headers["x-amz-copy-source-version-id"] = source.version_id
        return self._xml(s3xml.copy_object_xml(info.etag, info.last_modified), headers=headers)

    # Object reads ------------------------------------------------------------------

    def _object_headers(self, info: Any, call: S3Call) -> dict[str, str]:
        headers = {
            "etag": etag(info.etag),
            "last-modified": s3http.http_date(info.last_modified),
            "content-type": info.content_type,
            "accept-ranges": "bytes",
        }
        # S3 names the version of an object in a bucket that has had versioning. A
        # non-null version proves the bucket has; a null one is echoed when the request
        # named it (telling a null version in a Suspended bucket from one in a
        # never-versioned bucket would cost a lookup of the bucket on every read).
        if info.version_id != NULL_VERSION or "versionId" in call.params:
            headers["x-amz-version-id"] = info.version_id
        for name, value in info.headers.items():
            if name.startswith("x-amz-checksum-"):
                if call.headers.get("x-amz-checksum-mode", "").upper() == "ENABLED":
                    headers[name] = value
                continue
            headers[name] = value
        for name, value in s3http.metadata_headers(info.metadata):
            headers[name.lower()] = value
        for name, value in s3http.response_overrides(call.params).items():
            headers[name.lower()] = value  # replaces the stored value: one header each
        return headers

    async def _part_span(self, call: S3Call, version_id: str | None) -> tuple[Any, tuple[int, int]] | None:
        """For ``?partNumber=N``: the object's info and part N's bytes ``[start, end)``; None without it.

        S3 refuses a part number together with a Range (400 InvalidRequest) and
        one the object does not have (416 InvalidPartNumber): a single-part
        object has part 1 only, which is all of it.
        """
        raw = call.params.get("partNumber")
        if raw is None:
            return None
        if raw == "":
            raise S3Error("InvalidArgument", "Part number must be an integer between 1 and 10000, inclusive")
        number = int_param(call.params, "partNumber", 0, low=1, high=10_000)
        if "range" in call.headers:
            raise S3Error("InvalidRequest", "Cannot specify both Range header and partNumber query parameter")
        info, span = await self.run(self.wh.part_span, call.bucket, call.key, number, version_id=version_id,
                                    tenant=call.context)
        if span is None:
            raise S3Error("InvalidPartNumber", "The requested partnumber is not satisfiable")
        return info, span

    @staticmethod
    def _span_headers(headers: dict[str, str], info: Any, first: int, last: int) -> None:
        """Headers of a 206 answer carrying bytes ``first..last`` (inclusive) of the object."""
        headers["content-range"] = f"bytes {first}-{last}/{info.size}"
        headers["content-length"] = str(last - first + 1)
        for name in [h for h in headers if h.startswith("x-amz-checksum-")]:
            del headers[name]  # the stored checksums are of the whole object

    async def head_object(self, call: S3Call) -> Response:
        version_id = s3http.version_id_param(call.params)
        part = await self._part_span(call, version_id)
        if part is None:
            info = await self.run(self.wh.head, call.bucket, call.key, version_id=version_id, tenant=call.context)
        else:
            info = part[0]
        headers = self._object_headers(info, call)
        status = s3http.check_conditions(call.headers, info.etag, info.last_modified, method="HEAD")
        if status == 304:
            return Response(status_code=304, headers={"etag": headers["etag"],
                                                      "last-modified": headers["last-modified"]})
        if part is not None:
            return Response(status_code=self._part_headers(headers, info, part[1]), headers=headers)
        span = s3http.parse_range(call.headers.get("range"), info.size)
        if span is not None:
            first, last = span
            headers["content-range"] = f"bytes {first}-{last}/{info.size}"
            headers["content-length"] = str(last - first + 1)
            return Response(status_code=206, headers=headers)
        headers["content-length"] = str(info.size)
        return Response(status_code=200, headers=headers)

    def _part_headers(self, headers: dict[str, str], info: Any, span: tuple[int, int]) -> int:
        """Add a part's headers (its range, the object's part count); the status to answer with."""
        start, end = span
        if info.parts_count:
            headers["x-amz-mp-parts-count"] = str(info.parts_count)
        if end == start:  # an empty part: no byte range to name
            headers["content-length"] = "0"
            return 200
        self._span_headers(headers, info, start, end - 1)
        return 206

    async def get_object(self, call: S3Call) -> Response:
        version_id = s3http.version_id_param(call.params)
        part = await self._part_span(call, version_id)
        if part is not None:
            return await self._get_part(call, *part)
        # A small object asked for whole, with no condition, is read in this same hop (and closed).
        reader, body = await self.run(self._open_whole_if_small, call, version_id)
        try:
            info = reader.info
            status = s3http.check_conditions(call.headers, info.etag, info.last_modified)
            headers = self._object_headers(info, call)
            if status == 304:
                await self.run(reader.close)
                return Response(status_code=304, headers={"etag": headers["etag"],
                                                          "last-modified": headers["last-modified"]})
            if info.tags:
                headers["x-amz-tagging-count"] = str(len(info.tags))
            if body is not None:
                headers["content-length"] = str(len(body))
                return Response(body, status_code=200, headers=headers)
            span = s3http.parse_range(call.headers.get("range"), info.size)
            code = 200
            if span is not None:
                await self.run(reader.close)
                first, last = span
                reader = await self.run(self.wh.open, call.bucket, call.key, range=(first, last),
                                        version_id=info.version_id, tenant=call.context)
                self._span_headers(headers, info, first, last)
                code = 206
            else:
                headers["content-length"] = str(info.size)
        except BaseException:
            await self.run(reader.close)
            raise
        return await self._body_response(reader, code, headers)

    def _open_whole_if_small(self, call: S3Call, version_id: str | None) -> tuple[Any, bytes | None]:
        """Open the object; when it is small and the request has no Range and no conditions, also read
        it whole (and close it), so that a small GET costs one thread hop, not two."""
        reader = self.wh.open(call.bucket, call.key, version_id=version_id, tenant=call.context)
        conditional = any(name in call.headers for name in _CONDITION_HEADERS)
        if reader.info.size > SMALL_BODY or conditional or "range" in call.headers:
            return reader, None
        return reader, _read_whole(reader)

    async def _body_response(self, reader: Any, code: int, headers: dict[str, str]) -> Response:
        """The object's bytes: read whole when small (``SMALL_BODY``), else streamed; the reader is closed."""
        # The stored Content-Type goes out as it is (a media_type argument would get "; charset=" added).
        if int(headers["content-length"]) <= SMALL_BODY:
            return Response(await self.run(_read_whole, reader), status_code=code, headers=headers)
        return StreamingResponse(stream_reader(reader, self.body_executor), status_code=code, headers=headers)

    async def _get_part(self, call: S3Call, info: Any, span: tuple[int, int]) -> Response:
        """GET ``?partNumber=N``: the part's bytes (206), its Content-Range, and the object's part count."""
        headers = self._object_headers(info, call)
        status = s3http.check_conditions(call.headers, info.etag, info.last_modified)
        if status == 304:
            return Response(status_code=304, headers={"etag": headers["etag"],
                                                      "last-modified": headers["last-modified"]})
        if info.tags:
            headers["x-amz-tagging-count"] = str(len(info.tags))
        code = self._part_headers(headers, info, span)
        start, end = span
        if end == start:
            return Response(status_code=code, headers=headers)
        reader = await self.run(self.wh.open, call.bucket, call.key, range=(start, end - 1),
                                version_id=info.version_id, tenant=call.context)
        return await self._body_response(reader, code, headers)

    async def delete_object(self, call: S3Call) -> Response:
        """DeleteObject: S3 names the delete marker it made, or the version it removed (and whether
        that was a marker); a delete in a never-versioned bucket names nothing."""
        version_id = s3http.version_id_param(call.params)
        result = await self.run(self.wh.delete, call.bucket, call.key, version_id=version_id, tenant=call.context)
        headers = {}
        if result.delete_marker:
            headers["x-amz-delete-marker"] = "true"
        if result.delete_marker or version_id is not None:
            named = result.version_id or version_id
            if named:
                headers["x-amz-version-id"] = named
        return Response(status_code=204, headers=headers)


def _read_whole(reader: Any) -> bytes:
    """All of a reader's chunks, and the reader closed."""
    try:
        return b"".join(reader)
    finally:
        reader.close()
