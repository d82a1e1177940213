"""Request headers that promise something dwray does not do: refused, never silently ignored.

A client that sends SSE-C believes only its key opens the object; one that
sends an Object Lock retention believes the object cannot be deleted; one that
sends ``If-Match`` on a DELETE believes the delete is conditional. Storing or
deleting anyway would break that belief without a word, so each is answered
501 NotImplemented naming the header. ``x-amz-expected-bucket-owner`` is
checked: the owner of every bucket a request may touch is the caller's tenant.
"""
from __future__ import annotations

from collections.abc import Mapping

from dwray.s3.errors import S3Error

__all__ = ["refuse_unhonoured_headers"]

#: SSE-S3 is what dwray does to every object anyway (AES-256, under keys dwray keeps).
ACCEPTED_SSE = "AES256"
_SSE_C_PREFIXES = ("x-amz-server-side-encryption-customer-", "x-amz-copy-source-server-side-encryption-customer-")
_SSE_KMS = ("x-amz-server-side-encryption-aws-kms-key-id", "x-amz-server-side-encryption-context")
_OBJECT_LOCK = ("x-amz-object-lock-mode", "x-amz-object-lock-retain-until-date", "x-amz-object-lock-legal-hold")
_CONDITIONAL_DELETE = ("if-match", "x-amz-if-match-last-modified-time", "x-amz-if-match-size")
_OWNER_HEADERS = ("x-amz-expected-bucket-owner", "x-amz-source-expected-bucket-owner")


def refuse_unhonoured_headers(headers: Mapping[str, str], operation: str, owner: str) -> None:
    """Raise ``S3Error`` for a header whose promise dwray cannot keep (see the module); ``headers`` lowercased."""
    for name in headers:
        if name.startswith(_SSE_C_PREFIXES):
            raise S3Error("NotImplemented", f"SSE-C ({name}) is not supported: dwray encrypts every object under "
                                            "keys it keeps itself and cannot use a customer-provided key")
    sse = headers.get("x-amz-server-side-encryption")
    if sse is not None and sse.strip() != ACCEPTED_SSE:
        raise S3Error("NotImplemented", f"x-amz-server-side-encryption: {sse[:40]!r} is not supported; every "
                                        f"object is encrypted by dwray ({ACCEPTED_SSE} is accepted and implied)")
    for name in (*_SSE_KMS, *_OBJECT_LOCK):
        if name in headers:
            raise S3Error("NotImplemented", f"{name} is not supported by dwray")
    if operation == "DeleteObject":
        for name in _CONDITIONAL_DELETE:
            if name in headers:
                raise S3Error("NotImplemented", f"conditional deletes ({name}) are not supported by dwray")
    for name in _OWNER_HEADERS:
        expected = headers.get(name)
        if expected is not None and expected != owner:
            raise S3Error("AccessDenied", f"{name} does not name the bucket's owner")
