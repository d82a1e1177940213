"""One S3 request, parsed once: the operation it asks for, its bucket, key, headers and query.

:func:`classify` names the S3 operation from the method, path and query;
:class:`S3Call` carries what every operation handler needs. Also the small
parsing helpers the handlers share (query parameters as SigV4 signs them,
merged headers, integer parameters).
"""
from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import unquote

from starlette.requests import Request
from starlette.types import Scope

from dwray.core.models import TenantContext
from dwray.s3 import http as s3http
from dwray.s3.auth import AuthResult
from dwray.s3.errors import S3Error
from dwray.s3.numbers import parse_decimal
from serve_apps.haproxy_hardening import CLIENT_ADDRESS_HEADER

__all__ = ["RESERVED_BUCKETS", "S3Call", "classify", "client_address", "etag", "header_pairs", "int_param",
           "query_params", "version_headers", "write_conditions"]

# Query parameters that name S3 features dwray does not offer: answered 501, never mistaken for GET/PUT Object.
UNSUPPORTED_SUBRESOURCES = frozenset({
    "policy", "cors", "lifecycle", "website", "replication", "logging",
    "encryption", "object-lock", "legal-hold", "retention", "torrent", "requestPayment", "accelerate",
    "analytics", "inventory", "metrics", "intelligent-tiering", "ownershipControls", "publicAccessBlock",
    "restore", "select", "attributes",
    # Newer operations whose requests would otherwise look like ListObjects, CreateBucket, DeleteBucket,
    # PutObject, GetObject or DeleteObject (RenameObject as PutObject would store an empty object).
    "session", "abac", "policyStatus", "metadataConfiguration", "metadataTable", "metadataAnnotationTable",
    "metadataInventoryTable", "metadataJournalTable", "annotation", "renameObject"})
# Subresources dwray serves on objects (``?acl``, ``?tagging``) and on buckets (``?acl``, ``?versioning``,
# ``?versions``, ``?notification``); bucket tagging is not among them. ``?notification`` on an object is
# answered 501 (S3 has no such operation).
OBJECT_SUBRESOURCES = {"acl": "Acl", "tagging": "Tagging"}
# Path-style names the gateway serves itself (/admin, /healthz, /metrics).
RESERVED_BUCKETS = frozenset({"admin", "healthz", "metrics"})
NULL_VERSION = "null"  # the version id of a key's null version
NOT_IMPLEMENTED_HEADER = "A header you provided implies functionality that is not implemented"


def write_conditions(call: S3Call) -> dict[str, Any]:
    """The conditions of a write on its destination (``If-Match: ETAG``, ``If-None-Match: *``), as the
    warehouse's ``if_match=`` and ``if_none_match=`` take them; it decides them atomically in the commit.

    As S3: ``If-None-Match`` takes only ``*`` and the two headers do not go together (501 NotImplemented).
    Checked before any body is read, so a refused request stores nothing.
    """
    if_match = call.headers.get("if-match")
    if_none_match = call.headers.get("if-none-match")
    if if_match is not None and if_none_match is not None:
        raise S3Error("NotImplemented", f"{NOT_IMPLEMENTED_HEADER}: If-Match and If-None-Match together")
    if if_none_match is not None:
        if if_none_match.strip() != "*":
            raise S3Error("NotImplemented", f"{NOT_IMPLEMENTED_HEADER}: If-None-Match on a write takes only '*'")
        return {"if_none_match": True}
    if if_match is not None:
        return {"if_match": if_match.strip()}
    return {}


def version_headers(version_id: str) -> dict[str, str]:
    """``x-amz-version-id`` for a write's response: the new version's id, none for a ``null`` version.

    S3 returns the id it generated when versioning is Enabled; a ``null``
    version (an unversioned or Suspended bucket) has no id of its own to
    return (the AWS SDKs document the field as set only for versioned writes,
    and MinIO answers the same). Deciding on the id alone costs no lookup of
    the bucket's versioning status.
    """
    return {} if version_id == NULL_VERSION else {"x-amz-version-id": version_id}


def classify(method: str, bucket: str | None, key: str, params: Mapping[str, str],
             headers: Mapping[str, str]) -> str:
    """The S3 operation name a request asks for (``Unsupported`` for features dwray lacks)."""
    if any(name in UNSUPPORTED_SUBRESOURCES for name in params):
        return "Unsupported"
    if bucket is None:
        return "ListBuckets" if method == "GET" else "Unsupported"
    if key and "notification" in params:
        return "Unsupported"
    if not key:
        if "tagging" in params:
            return "Unsupported"
        if "acl" in params:
            return {"GET": "GetBucketAcl", "PUT": "PutBucketAcl"}.get(method, "Unsupported")
        if "notification" in params:  # S3 removes a configuration by putting an empty one: no DELETE
            return {"GET": "GetBucketNotificationConfiguration",
                    "PUT": "PutBucketNotificationConfiguration"}.get(method, "Unsupported")
        table = {
            "GET": ("GetBucketLocation" if "location" in params else
                    "ListMultipartUploads" if "uploads" in params else
                    "GetBucketVersioning" if "versioning" in params else
                    "ListObjectVersions" if "versions" in params else
                    "ListObjectsV2" if params.get("list-type") == "2" else "ListObjects"),
            "PUT": "PutBucketVersioning" if "versioning" in params else "CreateBucket",
            "HEAD": "HeadBucket",
            "DELETE": "DeleteBucket",
            "POST": "DeleteObjects" if "delete" in params else "Unsupported",
        }
        return table.get(method, "Unsupported")
    for name, noun in OBJECT_SUBRESOURCES.items():
        if name in params:
            methods = ("GET", "PUT", "DELETE") if noun == "Tagging" else ("GET", "PUT")
            return f"{method.title()}Object{noun}" if method in methods else "Unsupported"
    if method == "PUT":
        if "uploadId" in params or "partNumber" in params:
            return "UploadPartCopy" if "x-amz-copy-source" in headers else "UploadPart"
        return "CopyObject" if "x-amz-copy-source" in headers else "PutObject"
    if method == "GET":
        return "ListParts" if "uploadId" in params else "GetObject"
    if method == "HEAD":
        return "HeadObject"
    if method == "DELETE":
        return "AbortMultipartUpload" if "uploadId" in params else "DeleteObject"
    if method == "POST":
        if "uploads" in params:
            return "CreateMultipartUpload"
        if "uploadId" in params:
            return "CompleteMultipartUpload"
    return "Unsupported"


def client_address(scope: Scope, *, forwarded: bool) -> str:
    """The address the request came from, for the per-address limit on failed authentication.

    Behind dwray's HAProxy (``forwarded``) the connection is HAProxy's own,
    and the client's address is in the header HAProxy sets (replacing any a
    client sent); without it, or elsewhere, the connection's peer.
    """
    if forwarded:
        wanted = CLIENT_ADDRESS_HEADER.encode("latin-1")
        for name, value in scope.get("headers", ()):
            if name == wanted:
                return value.decode("latin-1")[:64]
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def etag(value: str) -> str:
    """An ETag header value: the hex digest in double quotes."""
    return f'"{value}"'


def int_param(params: Mapping[str, str], name: str, default: int, *, low: int = 0, high: int | None = None) -> int:
    """The query parameter ``name`` as an integer in ``[low, high]``; ``default`` when absent or empty.

    ASCII digits only, at most 19 of them (:func:`dwray.s3.numbers.parse_decimal`):
    anything else is ``InvalidArgument``, never a 500.
    """
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    return parse_decimal(raw, name, low=low, high=high)


class S3Call:
    """One request, parsed once: what every handler needs."""

    def __init__(self, request: Request, domain: str | None) -> None:
        scope = request.scope
        self.request = request
        self.method = request.method.upper()
        raw = (scope.get("raw_path") or scope["path"].encode()).split(b"?", 1)[0]
        self.raw_path = raw.decode("latin-1")
        self.raw_query = scope.get("query_string", b"").decode("latin-1")
        self.header_list: list[tuple[str, str]] = [
            (name.decode("latin-1").lower(), value.decode("latin-1")) for name, value in scope["headers"]]
        self.headers = merged = header_pairs(self.header_list)
        self.params = query_params(self.raw_query)
        # Virtual-hosted style names the bucket in the Host; SigV2 must sign it (see dwray.s3.sigv2).
        self.host_bucket = s3http.virtual_host_bucket(merged.get("host"), domain)
        self.bucket, self.key = s3http.bucket_and_key(merged.get("host"), raw, domain)
        self.operation = classify(self.method, self.bucket, self.key, self.params, merged)
        # As sent (percent-encoded): a decoded key may hold characters XML cannot carry.
        self.resource = self.raw_path
        self.request_id = secrets.token_hex(8).upper()
        self.auth: AuthResult | None = None
        self.bytes_in = 0
        self.source_address: str | None = None
        self._context: TenantContext | None = None

    @property
    def tenant(self) -> str:
        assert self.auth is not None
        return self.auth.identity.tenant

    @property
    def context(self) -> TenantContext:
        """Who the request acts for, as the warehouse takes it: the tenant, the access key and its
        policy (which the kernel enforces), the request id and the client's address."""
        if self._context is None:
            assert self.auth is not None
            identity = self.auth.identity
            self._context = TenantContext(identity.tenant, access_key_id=identity.access_key_id,
                                          policy=identity.policy, request_id=self.request_id,
                                          source_address=self.source_address)
        return self._context


def query_params(raw_query: str) -> dict[str, str]:
    """Query parameters decoded as SigV4 signs them: ``+`` is a plus, not a space (unlike form decoding)."""
    params: dict[str, str] = {}
    for part in raw_query.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        params[unquote(name)] = unquote(value)
    return params


def header_pairs(headers: Sequence[tuple[str, str]]) -> dict[str, str]:
    """Lowercased headers, repeated ones joined with commas."""
    merged: dict[str, str] = {}
    for name, value in headers:
        name = name.lower()
        merged[name] = f"{merged[name]},{value}" if name in merged else value
    return merged
