"""S3 error responses, and the single table that maps dwray errors onto them.

An :class:`S3Error` is what the gateway renders as S3's ``<Error>`` XML. Its
message is shown to the client, so it never carries secrets: the code, the
resource and a sentence, nothing more.
"""
from __future__ import annotations

from email.utils import formatdate

from dwray import errors as dw

__all__ = ["S3Error", "STATUS", "from_dwray_error"]

# Every S3 error code the gateway sends, with its HTTP status (from the S3 API
# reference's error code list).
STATUS: dict[str, int] = {
    "AccessDenied": 403,
    "QuotaExceeded": 403,
    "AuthorizationHeaderMalformed": 400,
    "AuthorizationQueryParametersError": 400,
    "BadDigest": 400,
    "BucketAlreadyExists": 409,
    "BucketAlreadyOwnedByYou": 409,
    "BucketNotEmpty": 409,
    "ConditionalRequestConflict": 409,
    "IllegalVersioningConfigurationException": 400,
    "InvalidBucketState": 409,
    "InvalidLocationConstraint": 400,
    "InvalidPartNumber": 416,
    "InvalidTag": 400,
    "MalformedACLError": 400,
    "NoSuchTagSet": 404,
    "NoSuchVersion": 404,
    "EntityTooLarge": 400,
    "EntityTooSmall": 400,
    "ExpiredToken": 400,
    "IncompleteBody": 400,
    "InternalError": 500,
    "InvalidAccessKeyId": 403,
    "InvalidArgument": 400,
    "InvalidBucketName": 400,
    "InvalidDigest": 400,
    "InvalidPart": 400,
    "InvalidPartOrder": 400,
    "InvalidRange": 416,
    "InvalidRequest": 400,
    "InvalidURI": 400,
    "KeyTooLongError": 400,
    "MalformedXML": 400,
    "MetadataTooLarge": 400,
    "MethodNotAllowed": 405,
    "MissingContentLength": 411,
    "MissingSecurityHeader": 400,
    "NoSuchBucket": 404,
    "NoSuchKey": 404,
    "NoSuchUpload": 404,
    "NotImplemented": 501,
    "PreconditionFailed": 412,
    "RequestHeaderSectionTooLarge": 400,
    "RequestTimeTooSkewed": 403,
    "ServiceUnavailable": 503,
    "SignatureDoesNotMatch": 403,
    "SlowDown": 503,
    "XAmzContentSHA256Mismatch": 400,
}


class S3Error(Exception):
    """An S3 error response: code, message, HTTP status and the resource it concerns.

    ``headers`` are extra response headers (``Retry-After`` for ``SlowDown``).
    """

    def __init__(self, code: str, message: str, *, resource: str = "",
                 headers: dict[str, str] | None = None, status: int | None = None) -> None:
        if code not in STATUS and status is None:
            raise ValueError(f"unknown S3 error code {code!r}")
        super().__init__(code, message)
        self.code = code
        self.message = message
        self.resource = resource
        self.headers = dict(headers or {})
        self.status = status if status is not None else STATUS[code]

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (self.code, self.message, self.resource, self.headers, self.status))


def _rebuild(code: str, message: str, resource: str, headers: dict[str, str], status: int) -> S3Error:
    return S3Error(code, message, resource=resource, headers=headers, status=status)


# The one table from dwray's error classes to S3 codes. Order matters: the first
# class an error is an instance of wins, so subclasses come before their bases.
_MAPPING: tuple[tuple[type[BaseException], str], ...] = (
    (dw.KeyTooLong, "KeyTooLongError"),
    (dw.InvalidObjectKey, "InvalidArgument"),
    (dw.InvalidBucketName, "InvalidBucketName"),
    (dw.InvalidRange, "InvalidRange"),
    (dw.EntityTooLarge, "EntityTooLarge"),
    (dw.EntityTooSmall, "EntityTooSmall"),
    (dw.InvalidPart, "InvalidPart"),
    (dw.InvalidPartOrder, "InvalidPartOrder"),
    (dw.InvalidTag, "InvalidTag"),
    (dw.InvalidContinuationToken, "InvalidArgument"),
    (dw.InvalidArgument, "InvalidArgument"),
    (dw.BucketNotFound, "NoSuchBucket"),
    (dw.ObjectDeleted, "NoSuchKey"),
    (dw.ObjectNotFound, "NoSuchKey"),
    (dw.UploadNotFound, "NoSuchUpload"),
    (dw.AccessKeyNotFound, "InvalidAccessKeyId"),
    (dw.BucketAlreadyOwnedByYou, "BucketAlreadyOwnedByYou"),
    (dw.BucketAlreadyExists, "BucketAlreadyExists"),
    (dw.ConditionalRequestConflict, "ConditionalRequestConflict"),
    (dw.PreconditionFailed, "PreconditionFailed"),
    (dw.DeleteMarkerVersion, "MethodNotAllowed"),
    (dw.BucketNotEmpty, "BucketNotEmpty"),
    (dw.QuotaExceeded, "QuotaExceeded"),
    (dw.AccessDenied, "AccessDenied"),
    (dw.Backpressure, "SlowDown"),
    (dw.StorageFull, "ServiceUnavailable"),
    (dw.PluginUnavailable, "ServiceUnavailable"),
    (dw.PluginTimeout, "ServiceUnavailable"),
    (dw.NotReady, "ServiceUnavailable"),
)


def from_dwray_error(error: BaseException, *, resource: str = "") -> S3Error:
    """The S3 error a dwray error becomes. Anything unknown is an opaque ``InternalError``.

    Only dwray's own messages (which name what was wrong and never carry
    secrets) are passed through; anything else is hidden behind a generic text.
    """
    for cls, code in _MAPPING:
        if isinstance(error, cls):
            headers = {"Retry-After": "1"} if STATUS[code] == 503 else {}
            if isinstance(error, dw.Backpressure):
                headers = {"Retry-After": str(max(1, int(error.retry_after)))}
            if isinstance(error, (dw.ObjectDeleted, dw.DeleteMarkerVersion)):
                # S3 says which delete marker answered: the key's latest, or the version named.
                headers = {"x-amz-delete-marker": "true", "x-amz-version-id": error.version_id}
                if isinstance(error, dw.DeleteMarkerVersion) and isinstance(error.last_modified, (int, float)):
                    headers["last-modified"] = formatdate(error.last_modified, usegmt=True)
            elif code == "NoSuchKey" and error.version_id is not None:
                code = "NoSuchVersion"  # S3's code for a version id the key does not have
            return S3Error(code, str(error), resource=resource, headers=headers)
    return S3Error("InternalError", "We encountered an internal error. Please try again.", resource=resource)
