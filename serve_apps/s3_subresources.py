"""S3 subresources of buckets and objects: versioning configuration, ACLs, object tagging and bucket
notification configurations.

Notifications: a configuration's targets are the operator's webhooks, named
``arn:dwray:webhook::NAME`` (``dwray.core.events.notifications``); an unknown
ARN, an event name S3 does not define or a document that is not XML is S3's
``InvalidArgument`` naming it, never a 500. The message bus delivers the events
in S3's event JSON.

ACLs: dwray's access control is the tenant boundary plus access-key policies,
so every bucket and object has exactly S3's canned ``private`` ACL (the owner,
FULL_CONTROL). GetBucketAcl/GetObjectAcl say so; Put*Acl and the ``x-amz-acl``
header on writes accept that ACL and nothing else. Any other canned ACL or grant
is refused with ``NotImplemented`` naming it: silently ignoring a ``public-read``
would leave a user believing an object is shared (or, worse, that a grant they
removed is gone). The warehouse still sees each ACL call, so the key's policy
and the audit log cover them.
"""
from __future__ import annotations

from collections.abc import Mapping

from starlette.responses import Response

from dwray.core.events.notifications import notification_xml
from dwray.s3 import http as s3http
from dwray.s3 import xml_subresources as subxml
from dwray.s3.errors import S3Error
from serve_apps.s3_call import S3Call
from serve_apps.s3_operations import S3Operations

__all__ = ["CANNED_ACLS", "SubresourceOperations", "refuse_unsupported_acl"]

# S3's canned ACLs (x-amz-acl). Only "private" describes what dwray does.
CANNED_ACLS = frozenset({"private", "public-read", "public-read-write", "aws-exec-read", "authenticated-read",
                         "bucket-owner-read", "bucket-owner-full-control", "log-delivery-write"})
GRANT_HEADER_PREFIX = "x-amz-grant-"


def refuse_unsupported_acl(headers: Mapping[str, str]) -> None:
    """Refuse any ACL a write request asks for other than the canned ``private`` (which every object has).

    ``headers`` are the request's, lowercased. A canned ACL other than
    ``private`` or any ``x-amz-grant-*`` header is ``NotImplemented`` naming it;
    an ``x-amz-acl`` value that is no canned ACL at all is ``InvalidArgument``.
    """
    canned = headers.get("x-amz-acl")
    if canned is not None and canned.strip() != "private":
        if canned.strip() not in CANNED_ACLS:
            raise S3Error("InvalidArgument", f"x-amz-acl {canned[:64]!r} is not a canned ACL")
        raise S3Error("NotImplemented", f"the canned ACL {canned.strip()!r} (x-amz-acl) is not supported by dwray: "
                                        f"only 'private' is")
    grants = sorted(name for name in headers if name.startswith(GRANT_HEADER_PREFIX))
    if grants:
        raise S3Error("NotImplemented", f"ACL grant headers ({', '.join(grants)}) are not supported by dwray: "
                                        f"only the canned 'private' ACL is")


class SubresourceOperations(S3Operations):
    """Put/GetBucketVersioning, Get/PutBucketAcl, Get/PutObjectAcl, Get/Put/DeleteObjectTagging,
    Get/PutBucketNotificationConfiguration (an empty configuration removes a bucket's)."""

    # Versioning ---------------------------------------------------------------------

    async def bucket_versioning(self, call: S3Call) -> Response:
        status = await self.run(self.wh.bucket_versioning, call.bucket, tenant=call.context)
        return self._xml(subxml.versioning_xml(status))

    async def put_bucket_versioning(self, call: S3Call) -> Response:
        if "x-amz-mfa" in call.headers:
            raise S3Error("NotImplemented", "MFA delete (the x-amz-mfa header) is not supported by dwray")
        status = subxml.parse_versioning(await self._xml_body(call))
        await self.run(self.wh.set_bucket_versioning, call.bucket, status, tenant=call.context)
        return Response(status_code=200)

    # ACLs ---------------------------------------------------------------------------

    async def get_bucket_acl(self, call: S3Call) -> Response:
        owner = await self.run(self.wh.bucket_acl, call.bucket, tenant=call.context)
        return self._xml(subxml.acl_xml(owner))

    async def put_bucket_acl(self, call: S3Call) -> Response:
        await self._check_put_acl(call)
        await self.run(self.wh.put_bucket_acl, call.bucket, tenant=call.context)
        return Response(status_code=200)

    async def get_object_acl(self, call: S3Call) -> Response:
        await self.run(self.wh.object_acl, call.bucket, call.key, version_id=self._version(call),
                       tenant=call.context)
        return self._xml(subxml.acl_xml(call.tenant))

    async def put_object_acl(self, call: S3Call) -> Response:
        await self._check_put_acl(call)
        await self.run(self.wh.put_object_acl, call.bucket, call.key, version_id=self._version(call),
                       tenant=call.context)
        return Response(status_code=200)

    async def _check_put_acl(self, call: S3Call) -> None:
        """A Put*Acl request sets the ACL by a header or by a body, never both, and only to ``private``."""
        body = await self._xml_body(call)
        has_header = "x-amz-acl" in call.headers or any(name.startswith(GRANT_HEADER_PREFIX)
                                                         for name in call.headers)
        if "x-amz-acl" in call.headers and any(name.startswith(GRANT_HEADER_PREFIX) for name in call.headers):
            raise S3Error("InvalidRequest", "Specifying both Canned ACLs and Header Grants is not allowed")
        if has_header and body.strip():
            raise S3Error("UnexpectedContent", "This request does not support content (an ACL is set by its "
                                               "headers or by its body, not both)", status=400)
        if has_header:
            refuse_unsupported_acl(call.headers)
        elif body.strip():
            subxml.check_private_acl(body, call.tenant)
        else:
            raise S3Error("MissingSecurityHeader", "Your request was missing a required header: x-amz-acl, "
                                                   "or an AccessControlPolicy body")

    # Object tagging -----------------------------------------------------------------

    async def get_object_tagging(self, call: S3Call) -> Response:
        version_id, tags = await self.run(self.wh.get_tags, call.bucket, call.key, version_id=self._version(call),
                                          tenant=call.context)
        return self._xml(subxml.tagging_xml(tags), headers={"x-amz-version-id": version_id})

    async def put_object_tagging(self, call: S3Call) -> Response:
        tags = subxml.parse_tagging(await self._xml_body(call))
        version_id = await self.run(self.wh.put_tags, call.bucket, call.key, tags, version_id=self._version(call),
                                    tenant=call.context)
        return Response(status_code=200, headers={"x-amz-version-id": version_id})

    async def delete_object_tagging(self, call: S3Call) -> Response:
        version_id = await self.run(self.wh.delete_tags, call.bucket, call.key, version_id=self._version(call),
                                    tenant=call.context)
        return Response(status_code=204, headers={"x-amz-version-id": version_id})

    # Bucket notifications -----------------------------------------------------------

    async def get_bucket_notification(self, call: S3Call) -> Response:
        rules = await self.run(self.wh.bucket_notification, call.bucket, tenant=call.context)
        return self._xml(notification_xml(rules))

    async def put_bucket_notification(self, call: S3Call) -> Response:
        body = await self._xml_body(call)
        await self.run(self.wh.set_bucket_notification, call.bucket, body, tenant=call.context)
        return Response(status_code=200)

    @staticmethod
    def _version(call: S3Call) -> str | None:
        return s3http.version_id_param(call.params)  # a malformed id is InvalidArgument, as on reads
