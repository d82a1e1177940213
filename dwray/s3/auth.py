"""AWS signature checks for S3 requests: SigV4 header auth and presigned URLs, SigV2 presigned URLs.

:class:`SigV4Verifier` takes a request exactly as it arrived (method, the
percent-encoded path and query from the wire, the header list) and either
returns an :class:`AuthResult` naming the caller's identity and payload mode, or
raises :class:`~dwray.s3.errors.S3Error` with S3's code for what was wrong.
This module is the package's entry point for authentication: the result types
and payload modes (defined in :mod:`dwray.s3.auth_result`) are imported from here.

The canonical request, string to sign and signature are computed by botocore's
own S3 signers (``S3SigV4Auth`` / ``S3SigV4QueryAuth``), fed with the values the
client sent, so the gateway agrees with every SDK byte for byte instead of
re-implementing SigV4. Only parsing (:mod:`dwray.s3.sigv4`,
:mod:`dwray.s3.canonical`), policy (scope, clock skew, expiry, S3's refusal of
unsigned x-amz-* headers, for presigned URLs too) and the constant-time
comparison live here.

SigV2 is accepted in one form only, presigned query URLs, because that is what
boto3's ``generate_presigned_url`` makes by default (:mod:`dwray.s3.sigv2`).
SigV2 in the Authorization header (``AWS AKID:sig``) has no such excuse and
stays refused.

Header values are ``str`` as the server decoded them (ASGI header bytes decoded
as latin-1); names are lowercase. Access keys are resolved through the
``lookup`` callable so the gateway can cache identities however it likes.
"""
from __future__ import annotations

import hmac
import time
from collections.abc import Callable, Sequence

from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest, HTTPHeaders
from botocore.credentials import Credentials

from dwray.s3.auth_result import (
    SIGNED_STREAMING,
    STREAMING_SIGNED,
    STREAMING_SIGNED_TRAILER,
    STREAMING_UNSIGNED_TRAILER,
    UNSIGNED_PAYLOAD,
    AuthResult,
    ChunkSigner,
    SigningIdentity,
    payload_mode,
)
from dwray.s3.canonical import (
    MAX_PRESIGN_EXPIRES,
    SIGNATURE_MISMATCH,
    check_raw_path,
    parse_query,
    path_candidates,
    refuse_unsigned_amz_headers,
    signed_headers,
    single_header,
)
from dwray.s3.errors import S3Error
from dwray.s3.sigv2 import verify_sigv2_presigned
from dwray.s3.sigv4 import (
    ALGORITHM,
    UNSUPPORTED_MECHANISM,
    Scope,
    check_scope_date,
    epoch,
    header_timestamp,
    is_amz_date,
    parse_authorization,
    parse_credential,
    parse_expires,
    parse_signature,
    parse_signed_headers,
    query_auth_params,
    signing_key,
)

__all__ = [
    "MAX_PRESIGN_EXPIRES",
    "STREAMING_SIGNED",
    "STREAMING_SIGNED_TRAILER",
    "STREAMING_UNSIGNED_TRAILER",
    "UNSIGNED_PAYLOAD",
    "AuthResult",
    "ChunkSigner",
    "SigV4Verifier",
    "SigningIdentity",
]


class _ClientHeaders:
    """Makes a botocore signer sign exactly the headers the client listed in SignedHeaders."""

    def __init__(self, credentials: Credentials, region: str, signed: HTTPHeaders) -> None:
        super().__init__(credentials, "s3", region)  # type: ignore[call-arg]
        self._signed = signed

    def headers_to_sign(self, request: AWSRequest) -> HTTPHeaders:
        return self._signed


class _HeaderSigner(_ClientHeaders, S3SigV4Auth):
    pass


class _QuerySigner(_ClientHeaders, S3SigV4QueryAuth):
    pass


class SigV4Verifier:
    """Checks AWS SigV4 signatures (Authorization header or presigned query) on S3 requests,
    and SigV2 presigned query URLs (boto3's default for ``generate_presigned_url``)."""

    def __init__(self, lookup: Callable[[str], SigningIdentity | None], *, region: str = "us-east-1",
                 max_skew: float = 900.0, clock: Callable[[], float] = time.time) -> None:
        self._lookup = lookup
        self._region = region
        self._max_skew = max_skew
        self._clock = clock

    def verify(self, method: str, raw_path: str, raw_query: str,
               headers: Sequence[tuple[str, str]], *, host_bucket: str | None = None) -> AuthResult:
        """Authenticate one request, or raise the S3Error the client should get.

        ``host_bucket`` is the bucket a virtual-hosted request names in its
        ``Host`` header (None for path style). SigV4 signs the Host header
        itself; SigV2 does not, so its signature is checked over the bucket too
        (:mod:`dwray.s3.sigv2`).
        """
        check_raw_path(raw_path)
        params = parse_query(raw_query)
        header_map: dict[str, list[str]] = {}
        for name, value in headers:
            header_map.setdefault(name.lower(), []).append(value)
        names = {name for name, _ in params}
        authorization = single_header(header_map, "authorization")
        query_v4 = "X-Amz-Algorithm" in names
        query_v2 = "AWSAccessKeyId" in names or "Signature" in names
        if (authorization is not None) + query_v4 + query_v2 > 1:
            raise S3Error("InvalidArgument", "Only one auth mechanism allowed; only the X-Amz-Algorithm "
                          "query parameter, Signature query string parameter or the Authorization header "
                          "should be specified")
        if authorization is not None:
            return self._verify_header(method, raw_path, params, header_map, authorization)
        if query_v4:
            return self._verify_query(method, raw_path, params, header_map)
        if query_v2:
            return verify_sigv2_presigned(method, raw_path, raw_query, header_map, self._identity, self._clock,
                                          host_bucket=host_bucket)
        raise S3Error("AccessDenied", "Access Denied: the request carries no credentials")

    def _verify_header(self, method: str, raw_path: str, params: list[tuple[str, str]],
                       header_map: dict[str, list[str]], authorization: str) -> AuthResult:
        code = "AuthorizationHeaderMalformed"
        fields = parse_authorization(authorization)
        scope = parse_credential(fields["Credential"], code, self._region)
        signed_names = parse_signed_headers(fields["SignedHeaders"], code)
        signature = parse_signature(fields["Signature"], code)
        timestamp = header_timestamp(header_map)
        check_scope_date(scope, timestamp, code, "X-Amz-Date")
        content_sha256 = single_header(header_map, "x-amz-content-sha256")
        if content_sha256 is None:
            raise S3Error("InvalidRequest", "Missing required header for this request: x-amz-content-sha256")
        content_sha256 = payload_mode(content_sha256)
        refuse_unsigned_amz_headers(header_map, signed_names)
        identity = self._identity(scope.access_key_id)
        skew = abs(self._clock() - epoch(timestamp))
        if skew > self._max_skew:
            raise S3Error("RequestTimeTooSkewed", "The difference between the request time and the "
                          "current time is too large.")
        signed = signed_headers(header_map, signed_names)
        _check_signature(_HeaderSigner, identity, scope, timestamp, method, raw_path, params, signed, signature)
        return AuthResult(identity, False, content_sha256,
                          _chunk_signer(identity, scope, timestamp, signature, content_sha256))

    def _verify_query(self, method: str, raw_path: str, params: list[tuple[str, str]],
                      header_map: dict[str, list[str]]) -> AuthResult:
        code = "AuthorizationQueryParametersError"
        auth = query_auth_params(params)
        algorithm = auth["X-Amz-Algorithm"]
        if algorithm == "AWS4-ECDSA-P256-SHA256":
            raise S3Error("InvalidRequest", UNSUPPORTED_MECHANISM)
        if algorithm != ALGORITHM:
            raise S3Error(code, 'X-Amz-Algorithm only supports "AWS4-HMAC-SHA256"')
        scope = parse_credential(auth["X-Amz-Credential"], code, self._region)
        signed_names = parse_signed_headers(auth["X-Amz-SignedHeaders"], code)
        signature = parse_signature(auth["X-Amz-Signature"], code)
        # A presigned URL grants exactly what it signs: an added x-amz-copy-source,
        # x-amz-metadata-directive, x-amz-meta-* or checksum header would turn a
        # presigned PUT into a copy or change what is stored, so S3 refuses them.
        refuse_unsigned_amz_headers(header_map, signed_names)
        timestamp = auth["X-Amz-Date"]
        if not is_amz_date(timestamp):
            raise S3Error(code, "X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"")
        check_scope_date(scope, timestamp, code, "X-Amz-Date")
        expires = parse_expires(auth["X-Amz-Expires"])
        identity = self._identity(scope.access_key_id)
        now, issued = self._clock(), epoch(timestamp)
        if issued - now > self._max_skew:
            raise S3Error("AccessDenied", "Request is not valid yet")
        if now > issued + expires:
            raise S3Error("AccessDenied", "Request has expired")
        signed = signed_headers(header_map, signed_names)
        content_sha256 = UNSIGNED_PAYLOAD
        if "x-amz-content-sha256" in signed_names:
            content_sha256 = payload_mode(signed["x-amz-content-sha256"])
        canonical_params = [(k, v) for k, v in params if k != "X-Amz-Signature"]
        _check_signature(_QuerySigner, identity, scope, timestamp, method, raw_path, canonical_params, signed,
                         signature)
        return AuthResult(identity, True, content_sha256,
                          _chunk_signer(identity, scope, timestamp, signature, content_sha256))

    def _identity(self, access_key_id: str) -> SigningIdentity:
        identity = self._lookup(access_key_id)
        if identity is None:
            raise S3Error("InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist in "
                          "our records.")
        return identity


def _check_signature(signer_cls: type[_HeaderSigner | _QuerySigner], identity: SigningIdentity, scope: Scope,
                     timestamp: str, method: str, raw_path: str, params: list[tuple[str, str]],
                     signed: HTTPHeaders, signature: str) -> None:
    credentials = Credentials(identity.access_key_id, identity.secret_access_key)
    signer = signer_cls(credentials, scope.region, signed)
    for path in path_candidates(raw_path):
        # botocore reads the path from the URL and, for S3, signs it as is;
        # the host part is never used because headers_to_sign is the client's.
        request = AWSRequest(method=method.upper(), url="http://dwray.invalid" + path, params=list(params))
        # botocore takes the payload hash from a (signed) X-Amz-Content-SHA256
        # header when there is one, else UNSIGNED-PAYLOAD for presigned URLs.
        request.headers = signed
        request.context["timestamp"] = timestamp
        canonical_request = signer.canonical_request(request)
        string_to_sign = signer.string_to_sign(request, canonical_request)
        expected = signer.signature(string_to_sign, request)
        if hmac.compare_digest(expected.encode("ascii"), signature.encode("ascii")):
            return
    raise S3Error("SignatureDoesNotMatch", SIGNATURE_MISMATCH)


def _chunk_signer(identity: SigningIdentity, scope: Scope, timestamp: str, signature: str,
                  content_sha256: str) -> ChunkSigner | None:
    if content_sha256 not in SIGNED_STREAMING:
        return None
    return ChunkSigner(signing_key(identity.secret_access_key, scope), timestamp, scope.credential_scope,
                       signature)
