"""The S3 compatibility matrix in the README, generated from the gateway's own handler table.

A hand-written matrix drifts: an operation gets a handler and the README still
says 501, or the other way round. So the status of each operation here is not
written down but read from :attr:`serve_apps.s3_api.S3Api.HANDLERS`, the table
the gateway dispatches by: an operation with a handler is supported (or partial,
when :data:`HANDLED` says what is missing), every other one is not supported.
What is written by hand is only what code cannot say: the notes. The unit test
(``tests/unit/test_s3_compat.py``) holds the rest together: :data:`OPERATIONS`
equals the S3 operations botocore knows, every handler has a note and every note
a handler, :func:`~serve_apps.s3_call.classify` answers each unsupported
operation with ``Unsupported`` (501), and the README equals :func:`render`.

Regenerate the README section after changing any of them::

    python -m serve_apps.s3_compat --write-readme
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from dwray.s3.checksums import ALGORITHMS
from serve_apps.s3_api import S3Api
from serve_apps.s3_operations import STORED_REQUEST_HEADERS, STREAMING_MODES

__all__ = ["BEGIN", "END", "HANDLED", "HEADER_FAMILIES", "NOT_SUPPORTED", "OPERATIONS", "REGENERATE", "ROUTED_AS",
           "Row", "main", "operation_rows", "render", "replace_section"]

BEGIN = "<!-- s3-compat:begin -->"
END = "<!-- s3-compat:end -->"
SUPPORTED, PARTIAL, NOT_SUPPORTED_STATUS, IGNORED = "supported", "partial", "not supported", "ignored"
REGENERATE = "python -m serve_apps.s3_compat --write-readme"

# Every action of the AWS S3 API reference ("Amazon S3" actions; S3 Control, Outposts, Tables and Vectors
# are other services), as botocore's service model (1.43.117) lists them.
OPERATIONS: tuple[str, ...] = (
    "AbortMultipartUpload", "CompleteMultipartUpload", "CopyObject", "CreateBucket",
    "CreateBucketMetadataConfiguration", "CreateBucketMetadataTableConfiguration", "CreateMultipartUpload",
    "CreateSession", "DeleteBucket", "DeleteBucketAnalyticsConfiguration", "DeleteBucketCors",
    "DeleteBucketEncryption", "DeleteBucketIntelligentTieringConfiguration", "DeleteBucketInventoryConfiguration",
    "DeleteBucketLifecycle", "DeleteBucketMetadataConfiguration", "DeleteBucketMetadataTableConfiguration",
    "DeleteBucketMetricsConfiguration", "DeleteBucketOwnershipControls", "DeleteBucketPolicy",
    "DeleteBucketReplication", "DeleteBucketTagging", "DeleteBucketWebsite", "DeleteObject",
    "DeleteObjectAnnotation", "DeleteObjectTagging", "DeleteObjects", "DeletePublicAccessBlock", "GetBucketAbac",
    "GetBucketAccelerateConfiguration", "GetBucketAcl", "GetBucketAnalyticsConfiguration", "GetBucketCors",
    "GetBucketEncryption", "GetBucketIntelligentTieringConfiguration", "GetBucketInventoryConfiguration",
    "GetBucketLifecycle", "GetBucketLifecycleConfiguration", "GetBucketLocation", "GetBucketLogging",
    "GetBucketMetadataConfiguration", "GetBucketMetadataTableConfiguration", "GetBucketMetricsConfiguration",
    "GetBucketNotification", "GetBucketNotificationConfiguration", "GetBucketOwnershipControls",
    "GetBucketPolicy", "GetBucketPolicyStatus", "GetBucketReplication", "GetBucketRequestPayment",
    "GetBucketTagging", "GetBucketVersioning", "GetBucketWebsite", "GetObject", "GetObjectAcl",
    "GetObjectAnnotation", "GetObjectAttributes", "GetObjectLegalHold", "GetObjectLockConfiguration",
    "GetObjectRetention", "GetObjectTagging", "GetObjectTorrent", "GetPublicAccessBlock", "HeadBucket",
    "HeadObject", "ListBucketAnalyticsConfigurations", "ListBucketIntelligentTieringConfigurations",
    "ListBucketInventoryConfigurations", "ListBucketMetricsConfigurations", "ListBuckets",
    "ListDirectoryBuckets", "ListMultipartUploads", "ListObjectAnnotations", "ListObjectVersions", "ListObjects",
    "ListObjectsV2", "ListParts", "PutBucketAbac", "PutBucketAccelerateConfiguration", "PutBucketAcl",
    "PutBucketAnalyticsConfiguration", "PutBucketCors", "PutBucketEncryption",
    "PutBucketIntelligentTieringConfiguration", "PutBucketInventoryConfiguration", "PutBucketLifecycle",
    "PutBucketLifecycleConfiguration", "PutBucketLogging", "PutBucketMetricsConfiguration",
    "PutBucketNotification", "PutBucketNotificationConfiguration", "PutBucketOwnershipControls",
    "PutBucketPolicy", "PutBucketReplication", "PutBucketRequestPayment", "PutBucketTagging",
    "PutBucketVersioning", "PutBucketWebsite", "PutObject", "PutObjectAcl", "PutObjectAnnotation",
    "PutObjectLegalHold", "PutObjectLockConfiguration", "PutObjectRetention", "PutObjectTagging",
    "PutPublicAccessBlock", "RenameObject", "RestoreObject", "SelectObjectContent",
    "UpdateBucketMetadataAnnotationTableConfiguration", "UpdateBucketMetadataInventoryTableConfiguration",
    "UpdateBucketMetadataJournalTableConfiguration", "UpdateObjectEncryption", "UploadPart", "UploadPartCopy",
    "WriteGetObjectResponse",
)

_ACL = "only the canned `private` ACL (the owner's FULL_CONTROL); any other canned ACL or grant is 501"

# The operations the gateway has a handler for: (supported | partial, what it does or what is missing).
HANDLED: Mapping[str, tuple[str, str]] = {
    "ListBuckets": (SUPPORTED, "pages by `max-buckets`, `continuation-token`, `prefix`, `bucket-region`"),
    "CreateBucket": (PARTIAL, "one region per gateway (another `LocationConstraint` is "
                              "`InvalidLocationConstraint`); " + _ACL + "; Object Lock is 501"),
    "HeadBucket": (SUPPORTED, "`x-amz-bucket-region`"),
    "DeleteBucket": (SUPPORTED, ""),
    "GetBucketLocation": (SUPPORTED, "empty for us-east-1, as S3"),
    "GetBucketVersioning": (SUPPORTED, "Enabled, Suspended, or no status if never enabled"),
    "PutBucketVersioning": (PARTIAL, "Enabled and Suspended; MFA Delete (`x-amz-mfa`) is 501"),
    "ListObjects": (SUPPORTED, "prefix, delimiter, marker, max-keys, `encoding-type=url`"),
    "ListObjectsV2": (SUPPORTED, "continuation-token, start-after, fetch-owner, `encoding-type=url`"),
    "ListObjectVersions": (SUPPORTED, "every bucket (unversioned objects are version `null`); key and "
                                      "version-id markers, delete markers"),
    "ListMultipartUploads": (SUPPORTED, "key and upload-id markers, prefix, delimiter"),
    "DeleteObjects": (SUPPORTED, "with version ids; needs Content-MD5 or a flexible checksum, as S3"),
    "PutObject": (SUPPORTED, "conditional writes (`If-None-Match: *`, `If-Match`), tags, metadata, checksums; "
                             "see the header table"),
    "CopyObject": (SUPPORTED, "by `versionId`, metadata and tagging directives, source and destination "
                              "conditions"),
    "GetObject": (SUPPORTED, "Range, `partNumber`, conditions, `response-*` overrides, `versionId`"),
    "HeadObject": (SUPPORTED, "as GetObject, without the body"),
    "DeleteObject": (SUPPORTED, "delete markers on versioned buckets, `versionId`"),
    "CreateMultipartUpload": (SUPPORTED, "metadata, stored headers, tags; " + _ACL),
    "UploadPart": (SUPPORTED, "a part uploaded twice keeps the upload that finished last"),
    "UploadPartCopy": (SUPPORTED, "`x-amz-copy-source-range`, source conditions, source `versionId`"),
    "CompleteMultipartUpload": (PARTIAL, "conditional writes; the completed object carries no flexible checksum "
                                         "(the `Checksum*` elements of its parts are ignored)"),
    "AbortMultipartUpload": (SUPPORTED, ""),
    "ListParts": (SUPPORTED, "max-parts, part-number-marker"),
    "GetBucketAcl": (SUPPORTED, "the owner's FULL_CONTROL, the only ACL dwray has"),
    "PutBucketAcl": (PARTIAL, _ACL),
    "GetObjectAcl": (SUPPORTED, "the owner's FULL_CONTROL, the only ACL dwray has"),
    "PutObjectAcl": (PARTIAL, _ACL),
    "GetObjectTagging": (SUPPORTED, "by `versionId`"),
    "PutObjectTagging": (SUPPORTED, "S3's limits: 10 tags, keys 128 and values 256 characters"),
    "DeleteObjectTagging": (SUPPORTED, "by `versionId`"),
    "GetBucketNotificationConfiguration": (SUPPORTED, "the bucket's rules, as put"),
    "PutBucketNotificationConfiguration": (PARTIAL, "Queue and Topic configurations whose ARN names a webhook the "
                                                    "operator declared (`arn:dwray:webhook::NAME`); ObjectCreated and "
                                                    "ObjectRemoved events, prefix and suffix filters; Lambda and "
                                                    "EventBridge targets are InvalidArgument"),
}

# Not supported operations whose request the gateway cannot tell from a supported one: what it answers instead.
ROUTED_AS: Mapping[str, str] = {
    # GET / on the S3 Express control endpoint: directory buckets do not exist in dwray.
    "ListDirectoryBuckets": "ListBuckets",
    # The deprecated notification API: the same request as its successor.
    "GetBucketNotification": "GetBucketNotificationConfiguration",
    "PutBucketNotification": "PutBucketNotificationConfiguration",
}

# Why an operation is not supported, or what dwray offers instead (operations without an entry: no note).
_POLICY = "access control is per access key: key policies (`dw key`), the tenant boundary"
_ENCRYPTION = "dwray encrypts every object itself, with per-tenant keys"
_EXPRESS = "S3 Express One Zone (directory buckets) only"
NOT_SUPPORTED: Mapping[str, str] = {
    "GetBucketPolicy": _POLICY, "PutBucketPolicy": _POLICY, "DeleteBucketPolicy": _POLICY,
    "GetBucketPolicyStatus": _POLICY, "GetPublicAccessBlock": _POLICY, "PutPublicAccessBlock": _POLICY,
    "DeletePublicAccessBlock": _POLICY, "GetBucketOwnershipControls": _POLICY,
    "PutBucketOwnershipControls": _POLICY, "DeleteBucketOwnershipControls": _POLICY,
    "GetBucketAbac": _POLICY, "PutBucketAbac": _POLICY,
    "GetBucketEncryption": _ENCRYPTION, "PutBucketEncryption": _ENCRYPTION, "DeleteBucketEncryption": _ENCRYPTION,
    "UpdateObjectEncryption": _ENCRYPTION,
    "CreateSession": _EXPRESS, "ListDirectoryBuckets": _EXPRESS + "; answered as ListBuckets",
    "RenameObject": _EXPRESS,
    "GetBucketNotification": "deprecated by S3: answered as GetBucketNotificationConfiguration",
    "PutBucketNotification": "deprecated by S3: answered as PutBucketNotificationConfiguration",
}

# Header families: (family, status, what). Lists come from the code that implements them, so they cannot drift.
HEADER_FAMILIES: tuple[tuple[str, str, str], ...] = (
    ("SigV4, `Authorization` header", SUPPORTED, "`AWS4-HMAC-SHA256`, signed payload or `UNSIGNED-PAYLOAD`; "
     "unsigned `x-amz-*` headers are refused. SigV4a (`AWS4-ECDSA-P256-SHA256`) is `InvalidRequest`"),
    ("SigV4 presigned URLs", SUPPORTED, "`X-Amz-Expires` 1 s to 7 days; expired or out of range is 403 "
     "AccessDenied"),
    ("SigV2", PARTIAL, "presigned URLs only (boto3's default `generate_presigned_url`); the SigV2 "
     "`Authorization: AWS` header is `InvalidRequest`"),
    ("aws-chunked bodies", SUPPORTED, ", ".join(f"`{mode}`" for mode in sorted(STREAMING_MODES))
     + " (chunk signatures and trailers verified); SigV4a streaming is `InvalidRequest`"),
    ("Flexible checksums (`x-amz-checksum-*`, `x-amz-sdk-checksum-algorithm`)", PARTIAL,
     ", ".join(name.upper() for name in ALGORITHMS) + ", in headers or trailers, verified before anything "
     "is stored, returned with `x-amz-checksum-mode: ENABLED`; multipart parts are verified but the "
     "completed object stores none (`x-amz-checksum-type` is ignored)"),
    ("`Content-MD5`, `x-amz-content-sha256`", SUPPORTED, "verified before the commit: `BadDigest`, "
     "`XAmzContentSHA256Mismatch`"),
    ("Conditional reads (`If-Match`, `If-None-Match`, `If-Modified-Since`, `If-Unmodified-Since`)", SUPPORTED,
     "GetObject and HeadObject: 304 and 412 as S3"),
    ("Conditional writes (`If-None-Match: *`, `If-Match`)", SUPPORTED,
     "PutObject, CopyObject, CompleteMultipartUpload; decided atomically in the commit (412, 409 "
     "ConditionalRequestConflict). On DeleteObject they are 501 NotImplemented"),
    ("Copy-source conditions (`x-amz-copy-source-if-*`)", SUPPORTED, "CopyObject, UploadPartCopy"),
    ("`Range`", SUPPORTED, "one byte range; a multi-range request gets the whole object, as S3 answers it"),
    ("`partNumber`", SUPPORTED, "GetObject and HeadObject: the part, its `Content-Range`, "
     "`x-amz-mp-parts-count`"),
    ("`response-*` overrides", SUPPORTED, "`response-content-type` and the other five"),
    ("User metadata (`x-amz-meta-*`)", SUPPORTED,
     "2 KB as S3 (`limits.max_metadata_bytes`); over it `MetadataTooLarge`"),
    ("Stored headers", SUPPORTED, ", ".join(f"`{name}`" for name in STORED_REQUEST_HEADERS)
     + " stored and returned verbatim (`aws-chunked` dropped from Content-Encoding)"),
    ("`x-amz-tagging`, `x-amz-tagging-directive`", SUPPORTED, "on PutObject, CopyObject, CreateMultipartUpload; "
     "`x-amz-tagging-count` on GetObject"),
    ("`x-amz-acl`, `x-amz-grant-*`", PARTIAL, "`private` only; any other canned ACL or grant is 501 "
     "NotImplemented naming it"),
    ("`x-amz-server-side-encryption*` (SSE-S3, SSE-KMS, SSE-C)", PARTIAL,
     "`AES256` accepted (every object is encrypted by dwray with its tenant's keys anyway); `aws:kms`, "
     "KMS key ids and SSE-C customer keys are 501 NotImplemented, never silently ignored"),
    ("`x-amz-storage-class`", IGNORED, "one storage class"),
    ("Object Lock (`x-amz-object-lock-*`, `x-amz-bypass-governance-retention`)", NOT_SUPPORTED_STATUS,
     "`x-amz-bucket-object-lock-enabled: true` on CreateBucket and the per-object retention and legal-hold "
     "headers are 501 NotImplemented; `x-amz-bypass-governance-retention` is ignored (nothing is locked)"),
    ("MFA Delete (`x-amz-mfa`)", PARTIAL, "501 on PutBucketVersioning; ignored elsewhere"),
    ("Requester pays (`x-amz-request-payer`)", IGNORED, "no billing"),
    ("`x-amz-website-redirect-location`", IGNORED, "no website hosting"),
    ("`x-amz-expected-bucket-owner`, `x-amz-source-expected-bucket-owner`", SUPPORTED,
     "the owner ID is the tenant's name (as ListBuckets shows it); any other is 403 AccessDenied"),
    ("Browser POST uploads (HTML forms), CORS preflight (`OPTIONS`)", NOT_SUPPORTED_STATUS,
     "a browser's unsigned request is 403 AccessDenied, a signed one 501 NotImplemented"),
)


@dataclass(frozen=True)
class Row:
    """One operation of the matrix: its status and what to know about it."""

    operation: str
    status: str
    note: str


def operation_rows(handlers: Mapping[str, str] = S3Api.HANDLERS) -> list[Row]:
    """Every S3 operation with its status: supported or partial if it has a handler, else not supported."""
    rows = []
    for operation in OPERATIONS:
        if operation in handlers:
            status, note = HANDLED[operation]
        else:
            status, note = NOT_SUPPORTED_STATUS, NOT_SUPPORTED.get(operation, "")
        rows.append(Row(operation, status, note))
    return rows


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render(handlers: Mapping[str, str] = S3Api.HANDLERS) -> str:
    """The README section (without its markers), in Markdown."""
    rows = operation_rows(handlers)
    served = [row for row in rows if row.status != NOT_SUPPORTED_STATUS]
    lines = [
        "### S3 compatibility",
        "",
        f"Generated from the gateway's handler table by `{REGENERATE}`; a unit test fails if it drifts.",
        f"{len(served)} of the {len(rows)} operations of the AWS S3 API are served; every other one is "
        "answered `501 NotImplemented`.",
        "",
        "| Operation | Status | Notes |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {row.operation} | {row.status} | {_cell(row.note)} |" for row in served]
    groups: dict[str, list[str]] = {}
    for row in rows:
        if row.status == NOT_SUPPORTED_STATUS:
            groups.setdefault(row.note, []).append(row.operation)
    lines += ["", "Not supported (`501 NotImplemented` unless noted):", ""]
    lines += [f"- {', '.join(names)}" + (f": {note}" if note else "")
              for note, names in sorted(groups.items(), key=lambda item: (item[0] != "", item[0]))]
    lines += ["", "| Headers | Status | Notes |", "| --- | --- | --- |"]
    lines += [f"| {family} | {status} | {_cell(note)} |" for family, status, note in HEADER_FAMILIES]
    return "\n".join(lines) + "\n"


def replace_section(text: str, section: str) -> str:
    """``text`` with what lies between :data:`BEGIN` and :data:`END` replaced by ``section``."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"the README has no {BEGIN} ... {END} section")
    return text[:start + len(BEGIN)] + "\n" + section + text[end:]


def main(argv: list[str] | None = None) -> int:
    """Print the matrix, or write it into the README between its markers."""
    parser = argparse.ArgumentParser(prog="python -m serve_apps.s3_compat", description=__doc__.splitlines()[0])
    parser.add_argument("--write-readme", action="store_true", help="rewrite the README's s3-compat section")
    parser.add_argument("--readme", type=Path, default=Path(__file__).resolve().parent.parent / "README.md")
    args = parser.parse_args(argv)
    section = render()
    if not args.write_readme:
        sys.stdout.write(section)
        return 0
    text = args.readme.read_text(encoding="utf-8")
    updated = replace_section(text, section)
    if updated != text:
        args.readme.write_text(updated, encoding="utf-8")
    print(f"{args.readme}: {'updated' if updated != text else 'up to date'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
