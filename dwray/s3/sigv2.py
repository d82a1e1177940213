"""SigV2 presigned URLs (``?AWSAccessKeyId=…&Expires=…&Signature=…``), the one SigV2 form accepted.

botocore presigns S3 URLs with SigV2 unless the client sets
``Config(signature_version="s3v4")`` (``_default_s3_presign_to_sigv2``), and
boto3's default presigned GET/PUT must work unchanged, so these are checked
with botocore's own ``HmacV1QueryAuth``. SigV2 uses HMAC-SHA1 and signs only
the method, Content-MD5, Content-Type, Expires, x-amz-* headers, the path and
S3's sub-resources (``HmacV1Auth.QSAOfInterest``, response-* overrides
included); other query parameters (a list prefix, say) are not covered, which
is acceptable for presigned object GET/PUT/HEAD/DELETE. So a SigV2 presigned
request carrying any other query parameter is refused, and nothing unsigned
can change what it means.
"""
from __future__ import annotations

import hmac
from collections.abc import Callable
from urllib.parse import SplitResult

from botocore.auth import HmacV1Auth, HmacV1QueryAuth
from botocore.awsrequest import HTTPHeaders
from botocore.credentials import Credentials

from dwray.s3.auth_result import UNSIGNED_PAYLOAD, AuthResult, SigningIdentity
from dwray.s3.canonical import (
    MAX_PRESIGN_EXPIRES,
    SIGNATURE_MISMATCH,
    decode,
    path_candidates,
    single_header,
)
from dwray.s3.errors import S3Error

__all__ = ["verify_sigv2_presigned"]

_AUTH_PARAMS = ("AWSAccessKeyId", "Expires", "Signature")
_SIGNED_SUBRESOURCES = frozenset(HmacV1Auth.QSAOfInterest)
# botocore also copies these signed headers into a SigV2 presigned URL's query;
# the copy is harmless when the request sends the same header, which is signed.
_HEADER_COPIES = ("content-type", "content-md5")


class _QuerySigner(HmacV1QueryAuth):
    """botocore's SigV2 query signer, signing the Expires the client sent rather than now + N."""

    def __init__(self, credentials: Credentials, expires_at: str) -> None:
        super().__init__(credentials)
        self._expires_at = expires_at

    def _get_date(self) -> str:
        return self._expires_at


def verify_sigv2_presigned(method: str, raw_path: str, raw_query: str, header_map: dict[str, list[str]],
                           identity_of: Callable[[str], SigningIdentity],
                           clock: Callable[[], float]) -> AuthResult:
    """Authenticate a SigV2 presigned request, or raise the S3Error the client should get.

    ``identity_of`` resolves the access key (raising for an unknown one);
    ``clock`` is read once, after that lookup, for the expiry checks.
    """
    code = "AuthorizationQueryParametersError"
    pairs = _raw_query_pairs(raw_query)
    auth = _auth_params(pairs)
    _refuse_unsigned_params(pairs, header_map)
    expires_at = auth["Expires"]
    if not (expires_at.isascii() and expires_at.isdigit()):
        raise S3Error(code, "Expires must be an integer number of seconds since the epoch")
    identity = identity_of(auth["AWSAccessKeyId"])
    now = clock()
    if now > int(expires_at):
        raise S3Error("AccessDenied", "Request has expired")
    if int(expires_at) - now > MAX_PRESIGN_EXPIRES:
        raise S3Error(code, "Expires must be less than a week (in seconds) that is "
                      f"{MAX_PRESIGN_EXPIRES} from now")
    signer = _QuerySigner(Credentials(identity.access_key_id, identity.secret_access_key), expires_at)
    signature = auth["Signature"].encode("utf-8")
    for path in path_candidates(raw_path):
        # botocore picks the signed sub-resources out of the raw query itself,
        # by their names as sent, exactly as it did when signing.
        split = SplitResult("http", "dwray.invalid", path, raw_query, "")
        expected = signer.get_signature(method.upper(), split, _signed_headers(header_map))
        if hmac.compare_digest(expected.encode("ascii"), signature):
            return AuthResult(identity, True, UNSIGNED_PAYLOAD)
    raise S3Error("SignatureDoesNotMatch", SIGNATURE_MISMATCH)


def _raw_query_pairs(raw_query: str) -> list[tuple[str, str]]:
    """(name, value) pairs still percent-encoded, as botocore's SigV2 signer reads them."""
    return [(name, value) for name, _, value in (p.partition("=") for p in raw_query.split("&") if p)]


def _auth_params(pairs: list[tuple[str, str]]) -> dict[str, str]:
    found: dict[str, str] = {}
    for name, value in pairs:
        if name in _AUTH_PARAMS:
            if name in found:
                raise S3Error("AuthorizationQueryParametersError", f"{name} appears more than once")
            found[name] = decode(value)
    if len(found) != len(_AUTH_PARAMS):
        raise S3Error("AuthorizationQueryParametersError", "Query-string authentication requires the "
                      "Signature, Expires and AWSAccessKeyId parameters")
    return found


def _refuse_unsigned_params(pairs: list[tuple[str, str]], header_map: dict[str, list[str]]) -> None:
    """Refuse query parameters a SigV2 signature does not cover (names compared as sent,
    so an encoded sub-resource name cannot slip past botocore's by-name selection)."""
    unsigned = sorted({
        name for name, value in pairs
        if name not in _AUTH_PARAMS and name not in _SIGNED_SUBRESOURCES
        and not ((name in _HEADER_COPIES or name.startswith("x-amz-"))
                 and header_map.get(name) == [decode(value)])})
    if unsigned:
        raise S3Error("AccessDenied", "A SigV2 presigned URL (AWSAccessKeyId/Signature) does not sign the "
                      f"query parameters {', '.join(unsigned)}; presign with SigV4 (boto3: "
                      "Config(signature_version='s3v4')), or send content-type, content-md5 and x-amz-* "
                      "values as the same request headers.")


def _signed_headers(header_map: dict[str, list[str]]) -> HTTPHeaders:
    """The headers SigV2 signs: Content-MD5, Content-Type and every x-amz-* header."""
    signed = HTTPHeaders()
    for name in _HEADER_COPIES:
        value = single_header(header_map, name)
        if value is not None:
            signed[name] = value
    for name, values in header_map.items():
        if name.startswith("x-amz-"):
            for value in values:  # repeated headers are joined with ',' by the signer
                signed[name] = value
    return signed
