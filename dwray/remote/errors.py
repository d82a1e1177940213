"""S3 errors from the gateway turned back into the dwray errors they were made from.

The gateway maps each dwray error class to one S3 code (``dwray.s3.errors``);
this module inverts that table, so a tenant's client raises ``BucketNotFound``
where the in-process warehouse does, whatever travelled in between. The S3
message is dwray's own ``str()`` of the error (never a secret), so the fields
a class needs are read back from it where S3 has no element for them.

Transport failures become dwray errors too: an unreachable gateway or a failed
TLS handshake is ``NotReady``, a malformed argument botocore refuses is
``InvalidArgument``. Nothing else leaves the client.
"""
from __future__ import annotations

import email.utils
import re
from dataclasses import dataclass
from typing import Any

from dwray import errors as dw

__all__ = ["Target", "from_client_error", "from_transport_error"]

_ACCESS = re.compile(r"may not (\S+) on '(.*)'$", re.DOTALL)
_OTHER_ACCOUNT = re.compile(r"bucket '(.*)' belongs to another account")
_RANGE = re.compile(r"range (\S+) is not satisfiable for an object of (\d+) bytes")
_TOO_LARGE = re.compile(r"at least (\d+) bytes is over the limit of (\d+) bytes")
_TOO_SMALL = re.compile(r"part (\d+) is (\d+) bytes; every part but the last must be at least (\d+) bytes")
_QUOTA = re.compile(r"quota exceeded: (.*) may hold at most (\d+) (\w+); this write would make it (\d+)")
_TOKEN = re.compile(r"invalid continuation token '(.*)'")
_PART = re.compile(r"part (\d+) of upload '(.*)': (.*)")
_ORDER = re.compile(r"parts of upload '(.*)' are out of order: (.*)")
_CONDITION = re.compile(r"did not hold \((.*)\) for '")
_CONFLICT = re.compile(r"progress \((.*)\): begin a new upload")
_BACKPRESSURE = re.compile(r"refusing new work for now: (.*); retry after ([\d.]+) s$", re.DOTALL)
_NOT_READY = re.compile(r"^the warehouse is not ready: (.*)$", re.DOTALL)


@dataclass(frozen=True)
class Target:
    """What a request was about: the names an error rebuilt from its S3 code needs."""

    operation: str
    bucket: str | None = None
    key: str | None = None
    version_id: str | None = None
    upload_id: str | None = None

    @property
    def resource(self) -> str:
        return "/".join(part for part in (self.bucket, self.key) if part) or "*"


def from_client_error(error: Any, target: Target) -> dw.DwrayError:
    """The dwray error a botocore ``ClientError`` from the gateway stands for."""
    response = getattr(error, "response", {}) or {}
    body = response.get("Error", {}) or {}
    meta = response.get("ResponseMetadata", {}) or {}
    headers = {name.lower(): value for name, value in (meta.get("HTTPHeaders") or {}).items()}
    status = int(meta.get("HTTPStatusCode") or 0)
    code = str(body.get("Code") or status)
    message = str(body.get("Message") or "")
    return _by_code(code, message, status, headers, target)


def _by_code(code: str, message: str, status: int, headers: dict[str, str], t: Target) -> dw.DwrayError:
    bucket, key = t.bucket or "", t.key or ""
    if code in ("NoSuchBucket",):
        return dw.BucketNotFound(bucket)
    if code in ("NoSuchKey", "NoSuchVersion") or (code == "404" and key):
        if headers.get("x-amz-delete-marker") == "true" and t.version_id is None:
            return dw.ObjectDeleted(bucket, key, headers.get("x-amz-version-id"))
        return dw.ObjectNotFound(bucket, key, t.version_id)
    if code == "NoSuchUpload":
        return dw.UploadNotFound(t.upload_id or "")
    if code == "404":
        return dw.BucketNotFound(bucket) if bucket else dw.NotFound(f"{t.operation}: not found")
    if code in ("MethodNotAllowed", "405") and key:
        return dw.DeleteMarkerVersion(bucket, key, headers.get("x-amz-version-id", t.version_id),
                                      _http_time(headers.get("last-modified")))
    if code == "BucketAlreadyOwnedByYou":
        return dw.BucketAlreadyOwnedByYou(bucket)
    if code == "BucketAlreadyExists":
        return dw.BucketAlreadyExists(bucket)
    if code == "BucketNotEmpty":
        return dw.BucketNotEmpty(bucket)
    if code == "InvalidAccessKeyId":
        return dw.AccessDenied(f"{t.operation} (the gateway knows no such access key id)", t.resource)
    if code == "SignatureDoesNotMatch":
        return dw.AccessDenied(f"{t.operation} (the request signature does not match: check the secret key)",
                               t.resource)
    if code == "QuotaExceeded" and (found := _QUOTA.search(message)):
        return dw.QuotaExceeded(found[1], found[3], int(found[2]), int(found[4]))
    if code == "AccessDenied" or status == 403:
        if found := _OTHER_ACCOUNT.search(message):
            return dw.BucketAccessDenied(found[1])
        if found := _ACCESS.search(message):
            return dw.AccessDenied(found[1], found[2])
        return dw.AccessDenied(t.operation, t.resource)
    return _argument_error(code, message, status, headers, t) or _service_error(code, message, status, headers, t)


def _argument_error(code: str, message: str, status: int, headers: dict[str, str],
                    t: Target) -> dw.DwrayError | None:
    """Errors of a bad request (4xx), or ``None``."""
    if code in ("InvalidRange", "416"):
        found = _RANGE.search(message)
        return dw.InvalidRange(found[1], int(found[2])) if found else dw.InvalidRange("?", -1)
    if code == "InvalidBucketName":
        return dw.InvalidBucketName(t.bucket or "", message)
    if code == "KeyTooLongError":
        return dw.KeyTooLong(t.key or "", message)
    if code == "EntityTooLarge" and (found := _TOO_LARGE.search(message)):
        return dw.EntityTooLarge(int(found[1]), int(found[2]))
    if code == "EntityTooSmall" and (found := _TOO_SMALL.search(message)):
        return dw.EntityTooSmall(int(found[1]), int(found[2]), int(found[3]))
    if code == "InvalidPart" and (found := _PART.search(message)):
        return dw.InvalidPart(found[2], int(found[1]), found[3])
    if code == "InvalidPartOrder" and (found := _ORDER.search(message)):
        return dw.InvalidPartOrder(found[1], found[2])
    if code == "InvalidTag":
        return dw.InvalidTag(message.removeprefix("invalid tag: "))
    if code == "ConditionalRequestConflict":
        found = _CONFLICT.search(message)
        return dw.ConditionalRequestConflict(t.bucket or "", t.key or "", found[1] if found else message)
    if code in ("PreconditionFailed", "412"):
        found = _CONDITION.search(message)
        return dw.PreconditionFailed(t.bucket or "", t.key or "",
                                     found[1] if found else "If-Match / If-None-Match")
    if code == "InvalidArgument" and (found := _TOKEN.search(message)):
        return dw.InvalidContinuationToken(found[1])
    if 400 <= status < 500:
        return dw.InvalidArgument(f"{t.operation} refused by the gateway ({code}): {message}".rstrip(": "))
    return None


def _service_error(code: str, message: str, status: int, headers: dict[str, str], t: Target) -> dw.DwrayError:
    """Errors of the service (5xx): overload, not ready, or a failure the gateway did not explain."""
    if code == "SlowDown":
        if found := _BACKPRESSURE.search(message):
            return dw.Backpressure(found[1], _number(found[2]))
        return dw.Backpressure(message or "the gateway asks clients to slow down",
                               _number(headers.get("retry-after", "1")))
    if code == "ServiceUnavailable" or status == 503:
        found = _NOT_READY.search(message)
        return dw.NotReady(found[1] if found else (message or "the gateway is not ready"))
    return dw.StorageError(t.operation, t.resource, f"the gateway answered {status} {code}: {message}".rstrip(": "))


def from_transport_error(error: BaseException, target: Target, endpoint: str) -> dw.DwrayError:
    """The dwray error for a request that got no S3 answer: connection, TLS, timeout or a bad argument."""
    from botocore import exceptions as bx

    if isinstance(error, bx.ParamValidationError):
        return dw.InvalidArgument(f"{target.operation}: {error}")
    if isinstance(error, bx.SSLError):
        return dw.NotReady(f"the TLS handshake with the gateway at {endpoint} failed "
                           f"(check verify= and the gateway's certificate): {_reason(error)}")
    if isinstance(error, (bx.ConnectTimeoutError, bx.ReadTimeoutError)):
        return dw.NotReady(f"the gateway at {endpoint} did not answer {target.operation} in time")
    return dw.NotReady(f"the gateway at {endpoint} cannot be reached for {target.operation}: {_reason(error)}")


def _number(text: str) -> float | int:
    try:
        value = float(text)
    except ValueError:
        return 1
    return int(value) if value.is_integer() else value


def _reason(error: BaseException) -> str:
    return str(getattr(error, "kwargs", {}).get("error") or error)[:300]


def _http_time(value: str | None) -> float:
    if not value:
        return 0.0
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return 0.0
