"""S3 multipart uploads: create, upload a part (streamed or copied), complete, abort, list parts."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from starlette.responses import Response

from dwray.s3 import http as s3http
from dwray.s3 import xml as s3xml
from dwray.s3.errors import S3Error
from dwray.s3.tagging import parse_tagging_header
from serve_apps.s3_call import NULL_VERSION, S3Call, etag, int_param, version_headers, write_conditions
from serve_apps.s3_operations import S3Operations
from serve_apps.s3_subresources import refuse_unsupported_acl

__all__ = ["MultipartOperations"]


class MultipartOperations(S3Operations):
    """CreateMultipartUpload, UploadPart, UploadPartCopy, CompleteMultipartUpload, AbortMultipartUpload, ListParts."""

    def _upload_target(self, call: S3Call) -> tuple[str, int]:
        upload_id = call.params.get("uploadId", "")
        if not upload_id:
            raise S3Error("InvalidArgument", "uploadId must not be empty")
        number = int_param(call.params, "partNumber", 0, low=1, high=10_000)
        return upload_id, number

    async def create_upload(self, call: S3Call) -> Response:
        refuse_unsupported_acl(call.headers)
        tags = parse_tagging_header(call.headers["x-amz-tagging"]) if "x-amz-tagging" in call.headers else None
        metadata = s3http.user_metadata(call.header_list, self.max_metadata_bytes)
        upload = await self.run(self.wh.create_multipart_upload, call.bucket, call.key,
                                content_type=call.headers.get("content-type") or None, metadata=metadata,
                                headers=self._stored_headers(call), tags=tags, tenant=call.context)
        return self._xml(s3xml.initiate_multipart_xml(call.bucket, call.key, upload.upload_id))

    async def upload_part(self, call: S3Call) -> Response:
        upload_id, number = self._upload_target(call)

        def write(data: Any, checksums: Callable[[], dict[str, str]]) -> Any:
            return self.wh.upload_part(call.bucket, call.key, upload_id, number, data, tenant=call.context)

        part, echoed = await self.receive_body(call, write)
        return Response(status_code=200, headers={"etag": etag(part.etag), **echoed})

    async def upload_part_copy(self, call: S3Call) -> Response:
        upload_id, number = self._upload_target(call)
        src_bucket, src_key, src_version = s3http.parse_copy_source(call.headers["x-amz-copy-source"])
        source = await self.run(self.wh.head, src_bucket, src_key, version_id=src_version, tenant=call.context)
        s3http.check_copy_source_conditions(call.headers, source.etag, source.last_modified)
        span = None
        if "x-amz-copy-source-range" in call.headers:
            span = s3http.parse_copy_range(call.headers["x-amz-copy-source-range"], source.size)
        part = await self.run(self.wh.upload_part_copy, call.bucket, call.key, upload_id, number, src_bucket, src_key,
                              src_version_id=source.version_id, range=span, tenant=call.context)
        named = src_version is not None or source.version_id != NULL_VERSION  # as CopyObject names it
        return self._xml(s3xml.copy_part_xml(part.etag, part.last_modified),
                         headers={"x-amz-copy-source-version-id": source.version_id} if named else None)

    async def complete_upload(self, call: S3Call) -> Response:
        # Decided in the commit: 412 if the condition fails, 409 if the key was written after the upload began.
        conditions = write_conditions(call)
        upload_id = call.params.get("uploadId", "")
        parts = s3xml.parse_complete_multipart(await self._xml_body(call))
        info = await self.run(self.wh.complete_multipart_upload, call.bucket, call.key, upload_id, parts,
                              tenant=call.context, **conditions)
        host = call.headers.get("host", "")
        location = f"http://{host}/{call.bucket}/{quote(call.key)}"
        return self._xml(s3xml.complete_multipart_xml(location, call.bucket, call.key, info.etag),
                         headers=version_headers(info.version_id))

    async def abort_upload(self, call: S3Call) -> Response:
        await self.run(self.wh.abort_multipart_upload, call.bucket, call.key, call.params.get("uploadId", ""),
                       tenant=call.context)
        return Response(status_code=204)

    async def list_parts(self, call: S3Call) -> Response:
        upload_id = call.params.get("uploadId", "")
        max_parts = int_param(call.params, "max-parts", 1000, high=1000)
        marker = int_param(call.params, "part-number-marker", 0)
        page = await self.run(self.wh.list_parts, call.bucket, call.key, upload_id, max_parts=max_parts,
                              part_number_marker=marker, tenant=call.context)
        return self._xml(s3xml.list_parts_xml(call.bucket, call.key, upload_id, page, part_number_marker=marker,
                                              max_parts=max_parts, owner_id=call.tenant))

