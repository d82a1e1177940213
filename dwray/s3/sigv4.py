"""The fields of an AWS SigV4 signature, parsed and checked one by one.

The Authorization header (``AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…,
Signature=…``) and the presigned query (``X-Amz-Algorithm``, ``X-Amz-Credential``
…) carry the same fields; each parser here raises the
:class:`~dwray.s3.errors.S3Error` S3 answers for that field, with the error
code the caller names (``AuthorizationHeaderMalformed`` or
``AuthorizationQueryParametersError``). Also the credential :class:`Scope`,
request timestamps and the signing key, which botocore derives but does not
expose and the aws-chunked signature chain needs.
"""
from __future__ import annotations

import calendar
import datetime
import hashlib
import hmac
import re
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

from dwray.s3.canonical import MAX_PRESIGN_EXPIRES, single_header
from dwray.s3.errors import S3Error
from dwray.s3.numbers import MAX_DECIMAL_DIGITS, is_decimal

__all__ = [
    "ALGORITHM",
    "UNSUPPORTED_MECHANISM",
    "Scope",
    "check_scope_date",
    "epoch",
    "header_timestamp",
    "is_amz_date",
    "parse_authorization",
    "parse_credential",
    "parse_expires",
    "parse_signature",
    "parse_signed_headers",
    "query_auth_params",
    "signing_key",
]

ALGORITHM = "AWS4-HMAC-SHA256"
UNSUPPORTED_MECHANISM = ("The authorization mechanism you have provided is not supported. "
                         "Please use AWS4-HMAC-SHA256 (boto3: Config(signature_version='s3v4')).")
_QUERY_AUTH_PARAMS = ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires",
                      "X-Amz-SignedHeaders", "X-Amz-Signature")
_AMZ_DATE = re.compile(r"[0-9]{8}T[0-9]{6}Z\Z")  # ASCII digits: \d takes any script's
_HEADER_NAME = re.compile(r"[a-z0-9!#$%&'*+.^_`|~-]+\Z")


@dataclass(frozen=True)
class Scope:
    """A parsed ``<access key>/<date>/<region>/<service>/aws4_request`` credential."""

    access_key_id: str
    date: str
    region: str
    service: str

    @property
    def credential_scope(self) -> str:
        """The scope as the string to sign writes it (the credential without the access key)."""
        return f"{self.date}/{self.region}/{self.service}/aws4_request"


def parse_credential(credential: str, code: str, region: str) -> Scope:
    """The scope of a credential, which must name ``region``, service s3 and a real date."""
    parts = credential.split("/")
    if len(parts) != 5 or not parts[0]:
        raise S3Error(code, "The authorization is malformed; the Credential is mal-formed; expecting "
                      '"<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request".')
    access_key_id, date, scope_region, service, terminator = parts
    if not is_amz_date(date + "T000000Z"):
        raise S3Error(code, f"The authorization is malformed; invalid credential date {date!r}; "
                      "expecting YYYYMMDD.")
    if scope_region != region:
        raise S3Error(code, f"The authorization is malformed; the region {scope_region!r} is wrong; "
                      f"expecting {region!r}")
    if service != "s3":
        raise S3Error(code, f"The authorization is malformed; incorrect service {service!r}. "
                      "This endpoint belongs to 's3'.")
    if terminator != "aws4_request":
        raise S3Error(code, f"The authorization is malformed; incorrect terminal {terminator!r}. "
                      "This endpoint uses 'aws4_request'.")
    return Scope(access_key_id, date, scope_region, service)


def parse_authorization(authorization: str) -> dict[str, str]:
    """The Credential, SignedHeaders and Signature of a SigV4 Authorization header."""
    algorithm, _, rest = authorization.strip().partition(" ")
    if algorithm in ("AWS", "AWS4-ECDSA-P256-SHA256"):
        raise S3Error("InvalidRequest", UNSUPPORTED_MECHANISM)
    if algorithm != ALGORITHM:
        raise S3Error("InvalidArgument", "Unsupported Authorization Type")
    fields: dict[str, str] = {}
    for item in rest.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep or key in fields:
            raise S3Error("AuthorizationHeaderMalformed", "The authorization header is malformed; "
                          f"unexpected component {key!r}.")
        fields[key] = value.strip()
    for required in ("Credential", "SignedHeaders", "Signature"):
        if required not in fields:
            raise S3Error("AuthorizationHeaderMalformed", "The authorization header is malformed; "
                          f"it has no {required}.")
    return fields


def parse_signed_headers(value: str, code: str) -> list[str]:
    """The header names of SignedHeaders: lowercase, distinct, host among them."""
    names = value.split(";")
    if not all(_HEADER_NAME.match(n) for n in names) or len(set(names)) != len(names):
        raise S3Error(code, "SignedHeaders must be lowercase header names separated by ';'")
    if "host" not in names:
        raise S3Error(code, "SignedHeaders must include host")
    return names


def parse_signature(value: str, code: str) -> str:
    """A signature as SigV4 writes it: 64 lowercase hex characters."""
    if not re.fullmatch(r"[0-9a-f]{64}", value):
        raise S3Error(code, "The signature must be 64 lowercase hex characters")
    return value


def header_timestamp(header_map: dict[str, list[str]]) -> str:
    """The request time of header auth, from x-amz-date or else Date, as ``yyyyMMdd'T'HHmmss'Z'``."""
    amz_date = single_header(header_map, "x-amz-date")
    if amz_date is not None:
        if is_amz_date(amz_date):
            return amz_date
        raise S3Error("AccessDenied", "AWS authentication requires a valid Date or x-amz-date header")
    date = single_header(header_map, "date")
    try:
        # ASCII only: the email parser reads digits of any script.
        parsed = parsedate_to_datetime(date) if date is not None and date.isascii() else None
    except (TypeError, ValueError, OverflowError):  # a huge year overflows
        parsed = None
    if parsed is None:
        raise S3Error("AccessDenied", "AWS authentication requires a valid Date or x-amz-date header")
    if parsed.tzinfo is None:  # "-0000" (botocore's own form) means UTC
        parsed = parsed.replace(tzinfo=datetime.UTC)
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(parsed.timestamp()))


def check_scope_date(scope: Scope, timestamp: str, code: str, name: str) -> None:
    """The credential's date must be the day of the request time (``name`` says where that came from)."""
    if scope.date != timestamp[:8]:
        raise S3Error(code, f"Invalid credential date {scope.date!r}: it is not the date of {name}.")


def query_auth_params(params: list[tuple[str, str]]) -> dict[str, str]:
    """The six X-Amz-* parameters of a SigV4 presigned URL, each present exactly once."""
    found: dict[str, str] = {}
    for name, value in params:
        if name in _QUERY_AUTH_PARAMS:
            if name in found:
                raise S3Error("AuthorizationQueryParametersError", f"{name} appears more than once")
            found[name] = value
    if len(found) != len(_QUERY_AUTH_PARAMS):
        raise S3Error("AuthorizationQueryParametersError", "Query-string authentication version 4 "
                      "requires the X-Amz-Algorithm, X-Amz-Credential, X-Amz-Signature, X-Amz-Date, "
                      "X-Amz-SignedHeaders, and X-Amz-Expires parameters.")
    return found


def parse_expires(value: str) -> int:
    """X-Amz-Expires in seconds: 1 to S3's one week.

    Anything else (negative, zero, over a week, not a number) is ``403
    AccessDenied``, as S3 answers such a URL: it grants nothing, so it is a
    refusal rather than a malformed request.
    """
    if value.startswith("-") and is_decimal(value[1:]):
        raise S3Error("AccessDenied", "X-Amz-Expires must be non-negative")
    if not is_decimal(value):
        raise S3Error("AccessDenied", "X-Amz-Expires should be a number "
                      f"(1 to {MAX_DECIMAL_DIGITS} ASCII digits)")
    expires = int(value)
    if expires == 0:
        raise S3Error("AccessDenied", "Request has expired")
    if expires > MAX_PRESIGN_EXPIRES:
        raise S3Error("AccessDenied", "X-Amz-Expires must be less than a week "
                      f"(in seconds) that is {MAX_PRESIGN_EXPIRES}")
    return expires


def is_amz_date(value: str) -> bool:
    """True for a real instant written as ISO 8601 basic (``20130524T000000Z``)."""
    if not _AMZ_DATE.match(value):
        return False
    try:
        epoch(value)
    except ValueError:
        return False
    return True


def epoch(amz_date: str) -> float:
    """Seconds since the epoch of an ISO 8601 basic UTC time."""
    return float(calendar.timegm(time.strptime(amz_date, "%Y%m%dT%H%M%SZ")))


def signing_key(secret: str, scope: Scope) -> bytes:
    """The SigV4 signing key of ``secret`` for ``scope`` (SigV4 spec, step 3)."""
    # botocore derives the same key inside SigV4Auth.signature() but does not
    # expose it; the chunk chain needs it, so it is derived here.
    key = ("AWS4" + secret).encode("utf-8")
    for part in (scope.date, scope.region, scope.service, "aws4_request"):
        key = hmac.new(key, part.encode("utf-8"), hashlib.sha256).digest()
    return key
