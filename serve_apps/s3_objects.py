"""S3 object operations: PutObject, CopyObject, GetObject, HeadObject, DeleteObject."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.responses import Response, StreamingResponse

from dwray.s3 import http as s3http
from dwray.s3 import xml as s3xml
from dwray.s3.errors import S3Error
from serve_apps.bodies import stream_reader
from serve_apps.s3_call import S3Call, etag, refuse_conditional_write
from serve_apps.s3_operations import S3Operations

__all__ = ["ObjectOperations"]


class ObjectOperations(S3Operations):
    """Object writes (a streamed body, or a copy inside the warehouse) and reads (streamed, ranged, conditional)."""

    async def put_object(self, call: S3Call) -> Response:
        refuse_conditional_write(call)
        metadata = s3http.user_metadata(call.header_list, self.max_metadata_bytes)
        headers = self._stored_headers(call)
        content_type = call.headers.get("content-type") or None

        def write(data: Any, checksums: Callable[[], dict[str, str]]) -> Any:
            # The checksums are known once the body has been read, before the commit.
            return self.wh.put(call.bucket, call.key, data, content_type=content_type, metadata=metadata,
                               headers=headers, tenant=call.context, finalize=checksums)

        info, echoed = await self.receive_body(call, write)
        return Response(status_code=200, headers={"etag": etag(info.etag), **echoed})

    async def copy_object(self, call: S3Call) -> Response:
        refuse_conditional_write(call)
        src_bucket, src_key, src_version = s3http.parse_copy_source(call.headers["x-amz-copy-source"])
        source = await self.run(self.wh.head, src_bucket, src_key, version_id=src_version, tenant=call.context)
        s3http.check_copy_source_conditions(call.headers, source.etag, source.last_modified)
        directive = call.headers.get("x-amz-metadata-directive", "COPY").upper()
        if directive not in ("COPY", "REPLACE"):
            raise S3Error("InvalidArgument", "x-amz-metadata-directive must be COPY or REPLACE")
        if directive == "COPY" and (src_bucket, src_key) == (call.bucket, call.key):
            raise S3Error("InvalidRequest", "This copy request is illegal because it is trying to copy an object "
                                            "to itself without changing the object's metadata.")
        kwargs: dict[str, Any] = {}
        if directive == "REPLACE":
            kwargs = {"content_type": call.headers.get("content-type") or "binary/octet-stream",
                      "metadata": s3http.user_metadata(call.header_list, self.max_metadata_bytes),
                      "headers": self._stored_headers(call)}
        info = await self.run(self.wh.copy, src_bucket, src_key, call.bucket, call.key, version_id=src_version,
                              tenant=call.context, **kwargs)
        return self._xml(s3xml.copy_object_xml(info.etag, info.last_modified),
                         headers={"x-amz-copy-source-version-id": source.version_id} if src_version else None)

    # Object reads ------------------------------------------------------------------

    def _object_headers(self, info: Any, call: S3Call) -> dict[str, str]:
        headers = {
            "etag": etag(info.etag),
            "last-modified": s3http.http_date(info.last_modified),
            "content-type": info.content_type,
            "accept-ranges": "bytes",
        }
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

    async def head_object(self, call: S3Call) -> Response:
        version_id = call.params.get("versionId") or None
        info = await self.run(self.wh.head, call.bucket, call.key, version_id=version_id, tenant=call.context)
        headers = self._object_headers(info, call)
        status = s3http.check_conditions(call.headers, info.etag, info.last_modified, method="HEAD")
        if status == 304:
            return Response(status_code=304, headers={"etag": headers["etag"],
                                                      "last-modified": headers["last-modified"]})
        span = s3http.parse_range(call.headers.get("range"), info.size)
        if span is not None:
            first, last = span
            headers["content-range"] = f"bytes {first}-{last}/{info.size}"
            headers["content-length"] = str(last - first + 1)
            return Response(status_code=206, headers=headers)
        headers["content-length"] = str(info.size)
        return Response(status_code=200, headers=headers)

    async def get_object(self, call: S3Call) -> Response:
        version_id = call.params.get("versionId") or None
        reader = await self.run(self.wh.open, call.bucket, call.key, version_id=version_id, tenant=call.context)
        try:
            info = reader.info
            status = s3http.check_conditions(call.headers, info.etag, info.last_modified)
            headers = self._object_headers(info, call)
            if status == 304:
                await self.run(reader.close)
                return Response(status_code=304, headers={"etag": headers["etag"],
                                                          "last-modified": headers["last-modified"]})
            span = s3http.parse_range(call.headers.get("range"), info.size)
            code = 200
            if span is not None:
                await self.run(reader.close)
                first, last = span
                reader = await self.run(self.wh.open, call.bucket, call.key, range=(first, last),
                                        version_id=info.version_id, tenant=call.context)
                headers["content-range"] = f"bytes {first}-{last}/{info.size}"
                headers["content-length"] = str(last - first + 1)
                for name in [h for h in headers if h.startswith("x-amz-checksum-")]:
                    del headers[name]
                code = 206
            else:
                headers["content-length"] = str(info.size)
        except BaseException:
            await self.run(reader.close)
            raise
        # The stored Content-Type goes out as it is (a media_type argument would get "; charset=" added).
        return StreamingResponse(stream_reader(reader, self.body_executor), status_code=code, headers=headers)

    async def delete_object(self, call: S3Call) -> Response:
        result = await self.run(self.wh.delete, call.bucket, call.key,
                                version_id=call.params.get("versionId") or None, tenant=call.context)
        headers = {}
        if result.delete_marker:
            headers["x-amz-delete-marker"] = "true"
            if result.version_id:
                headers["x-amz-version-id"] = result.version_id
        return Response(status_code=204, headers=headers)

