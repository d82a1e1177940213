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

SigV2 does not sign the ``Host`` header, so under virtual-hosted style the
bucket must be put into what is signed, or a URL presigned for ``/public/x``
would also open key ``public/x`` of whatever bucket the ``Host`` names. S3's
canonical resource is ``/<bucket>/<key>`` in both styles, and botocore signs
exactly that (its ``auth_path``): path style sends it as the path, virtual-hosted
style sends ``/<key>`` with the bucket in the host. So the gateway checks the
signature over ``/<host bucket><path>`` for a virtual-hosted request, over the
path as sent otherwise: the same URL signs the same bucket whichever way it
arrives, and no other.
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
    check_raw_path,
    decode,
    path_candidates,
    single_header,
)
from dwray.s3.errors import S3Error
from dwray.s3.numbers import parse_decimal

__all__ = ["canonical_resources", "verify_sigv2_presigned"]

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
                           clock: Callable[[], float], *, host_bucket: str | None = None) -> AuthResult:
    """Authenticate a SigV2 presigned request, or raise the S3Error the client should get.

    ``identity_of`` resolves the access key (raising for an unknown one);
    ``clock`` is read once, after that lookup, for the expiry checks.
    ``host_bucket`` is the bucket a virtual-hosted request names in its
    ``Host`` (None for path style); it is part of what the signature must cover.
    """
    code = "AuthorizationQueryParametersError"
    pairs = _raw_query_pairs(raw_query)
    auth = _auth_params(pairs)
    _refuse_unsigned_params(pairs, header_map)
    expires_at = auth["Expires"]
    expiry = parse_decimal(expires_at, "Expires (seconds since the epoch)", code=code)
    identity = identity_of(auth["AWSAccessKeyId"])
    now = clock()
    if now > expiry:
        raise S3Error("AccessDenied", "Request has expired")
    if expiry - now > MAX_PRESIGN_EXPIRES:
        raise S3Error(code, "Expires must be less than a week (in seconds) that is "
                      f"{MAX_PRESIGN_EXPIRES} from now")
    signer = _QuerySigner(Credentials(identity.access_key_id, identity.secret_access_key), expires_at)
    signature = auth["Signature"].encode("utf-8")
    for path in canonical_resources(raw_path, host_bucket):
        # botocore picks the signed sub-resources out of the raw query itself,
        # by their names as sent, exactly as it did when signing.
        split = SplitResult("http", "dwray.invalid", path, raw_query, "")
        expected = signer.get_signature(method.upper(), split, _signed_headers(header_map))
        if hmac.compare_digest(expected.encode("ascii"), signature):
            return AuthResult(identity, True, UNSIGNED_PAYLOAD)
    raise S3Error("SignatureDoesNotMatch", SIGNATURE_MISMATCH)


def canonical_resources(raw_path: str, host_bucket: str | None) -> list[str]:
    """The paths a SigV2 signature may cover for this request: always ``/<bucket>/<key>`` as S3 names it.

    For a bucket-level virtual-hosted request (path ``/``) botocore signs
    ``/<bucket>`` (older releases ``/<bucket>/``); both name the same bucket.
    """
    if host_bucket is None:
        return path_candidates(raw_path)
    check_raw_path(raw_path)
    candidates = path_candidates(f"/{host_bucket}{raw_path}")
    if raw_path == "/":
        candidates.insert(0, f"/{host_bucket}")
    return candidates


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
