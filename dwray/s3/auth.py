"""AWS signature checks for S3 requests: SigV4 header auth and presigned URLs, SigV2 presigned URLs.

:class:`SigV4Verifier` takes a request exactly as it arrived (method, the
percent-encoded path and query from the wire, the header list) and either
returns an :class:`AuthResult` naming the caller's identity and payload mode, or
raises :class:`~dwray.s3.errors.S3Error` with S3's code for what was wrong.

The canonical request, string to sign and signature are computed by botocore's
own S3 signers (``S3SigV4Auth`` / ``S3SigV4QueryAuth``), fed with the values the
client sent, so the gateway agrees with every SDK byte for byte instead of
re-implementing SigV4. Only parsing, policy (scope, clock skew, expiry, S3's
refusal of unsigned x-amz-* headers, for presigned URLs too) and the
constant-time comparison live here.

SigV2 is accepted in one form only: presigned query URLs
(``?AWSAccessKeyId=…&Expires=…&Signature=…``), because botocore presigns S3
URLs with SigV2 unless the client sets ``Config(signature_version="s3v4")``
(``_default_s3_presign_to_sigv2``), and boto3's default presigned GET/PUT must
work unchanged. Those are checked with botocore's ``HmacV1QueryAuth``. SigV2
uses HMAC-SHA1 and signs only the method, Content-MD5, Content-Type, Expires,
x-amz-* headers, the path and S3's sub-resources (``HmacV1Auth.QSAOfInterest``,
response-* overrides included); other query parameters (a list prefix, say)
are not covered, which is acceptable for presigned object GET/PUT/HEAD/DELETE.
So a SigV2 presigned request carrying any other query parameter is refused,
and nothing unsigned can change what it means. SigV2 in the Authorization
header (``AWS AKID:sig``) has no such excuse and stays refused.

Header values are ``str`` as the server decoded them (ASGI header bytes decoded
as latin-1); names are lowercase. Access keys are resolved through the
``lookup`` callable so the gateway can cache identities however it likes.
"""
from __future__ import annotations

import calendar
import datetime
import hashlib
import hmac
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from urllib.parse import SplitResult, quote, unquote_to_bytes

from botocore.auth import HmacV1Auth, HmacV1QueryAuth, S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest, HTTPHeaders
from botocore.credentials import Credentials

from dwray.s3.errors import S3Error

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

ALGORITHM = "AWS4-HMAC-SHA256"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
STREAMING_SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_SIGNED_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
MAX_PRESIGN_EXPIRES = 604800  # one week, S3's limit for presigned URLs
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()

_PAYLOAD_MODES = (UNSIGNED_PAYLOAD, STREAMING_SIGNED, STREAMING_SIGNED_TRAILER, STREAMING_UNSIGNED_TRAILER)
_SIGNED_STREAMING = (STREAMING_SIGNED, STREAMING_SIGNED_TRAILER)
_UNSUPPORTED_MECHANISM = ("The authorization mechanism you have provided is not supported. "
                          "Please use AWS4-HMAC-SHA256 (boto3: Config(signature_version='s3v4')).")
_QUERY_AUTH_PARAMS = ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires",
                      "X-Amz-SignedHeaders", "X-Amz-Signature")
_V2_AUTH_PARAMS = ("AWSAccessKeyId", "Expires", "Signature")
_V2_SIGNED_SUBRESOURCES = frozenset(HmacV1Auth.QSAOfInterest)
# botocore also copies these signed headers into a SigV2 presigned URL's query;
# the copy is harmless when the request sends the same header, which is signed.
_V2_HEADER_COPIES = ("content-type", "content-md5")
_SIGNATURE_MISMATCH = ("The request signature we calculated does not match the signature you provided. "
                       "Check your key and signing method.")
_AMZ_DATE = re.compile(r"\d{8}T\d{6}Z\Z")
_HEX_SHA256 = re.compile(r"[0-9a-fA-F]{64}\Z")
_HEADER_NAME = re.compile(r"[a-z0-9!#$%&'*+.^_`|~-]+\Z")


@dataclass(frozen=True)
class SigningIdentity:
    """An access key and the tenant it belongs to, as the identity service returns it."""

    access_key_id: str
    secret_access_key: str = field(repr=False)
    tenant: str


@dataclass(frozen=True)
class ChunkSigner:
    """What verifying an aws-chunked body's chunk and trailer signatures needs.

    botocore signs requests but has no chunk signer, so this HMAC chain is
    written by hand from the S3 "Transferring Payload in Multiple Chunks" and
    "Including Trailing Headers" specifications.
    """

    signing_key: bytes = field(repr=False)
    amz_date: str
    scope: str
    seed_signature: str

    def chunk_signature(self, previous: str, chunk_sha256_hex: str) -> str:
        """The signature of one chunk whose data hashes to ``chunk_sha256_hex``."""
        return self._sign("AWS4-HMAC-SHA256-PAYLOAD", previous, EMPTY_SHA256, chunk_sha256_hex)

    def trailer_signature(self, previous: str, trailer_bytes: bytes) -> str:
        """The signature of the canonical trailer block (``name:value\\n`` per trailer)."""
        return self._sign("AWS4-HMAC-SHA256-TRAILER", previous, hashlib.sha256(trailer_bytes).hexdigest())

    def _sign(self, kind: str, *lines: str) -> str:
        string_to_sign = "\n".join((kind, self.amz_date, self.scope, *lines))
        return hmac.new(self.signing_key, string_to_sign.encode("ascii"), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class AuthResult:
    """Who sent a request and how its body is protected.

    ``content_sha256`` is the x-amz-content-sha256 value: a lowercase hex digest
    the body must match, ``UNSIGNED-PAYLOAD`` (always for presigned URLs unless
    they signed that header) or one of the ``STREAMING-*`` aws-chunked modes.
    ``chunk_signer`` is set for the signed streaming modes.
    """

    identity: SigningIdentity
    presigned: bool
    content_sha256: str
    chunk_signer: ChunkSigner | None = None

    @property
    def streaming(self) -> bool:
        """True when the body is aws-chunked and must go through the chunk decoder."""
        return self.content_sha256.startswith("STREAMING-")

    @property
    def payload_sha256(self) -> str | None:
        """The hex digest the body must hash to, when the client declared one."""
        return None if self.content_sha256 in _PAYLOAD_MODES else self.content_sha256


@dataclass(frozen=True)
class _Scope:
    access_key_id: str
    date: str
    region: str
    service: str

    @property
    def credential_scope(self) -> str:
        return f"{self.date}/{self.region}/{self.service}/aws4_request"


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


class _SigV2QuerySigner(HmacV1QueryAuth):
    """botocore's SigV2 query signer, signing the Expires the client sent rather than now + N."""

    def __init__(self, credentials: Credentials, expires_at: str) -> None:
        super().__init__(credentials)
        self._expires_at = expires_at

    def _get_date(self) -> str:
        return self._expires_at


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
               headers: Sequence[tuple[str, str]]) -> AuthResult:
        """Authenticate one request, or raise the S3Error the client should get."""
        _check_raw_path(raw_path)
        params = _parse_query(raw_query)
        header_map: dict[str, list[str]] = {}
        for name, value in headers:
            header_map.setdefault(name.lower(), []).append(value)
        names = {name for name, _ in params}
        authorization = _single_header(header_map, "authorization")
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
            return self._verify_query_v2(method, raw_path, raw_query, header_map)
        raise S3Error("AccessDenied", "Access Denied: the request carries no credentials")

    # -- header auth ---------------------------------------------------------

    def _verify_header(self, method: str, raw_path: str, params: list[tuple[str, str]],
                       header_map: dict[str, list[str]], authorization: str) -> AuthResult:
        code = "AuthorizationHeaderMalformed"
        fields = _parse_authorization(authorization)
        scope = self._parse_credential(fields["Credential"], code)
        signed_names = _parse_signed_headers(fields["SignedHeaders"], code)
        signature = _parse_signature(fields["Signature"], code)
        timestamp = _header_timestamp(header_map)
        _check_scope_date(scope, timestamp, code, "X-Amz-Date")
        content_sha256 = _single_header(header_map, "x-amz-content-sha256")
        if content_sha256 is None:
            raise S3Error("InvalidRequest", "Missing required header for this request: x-amz-content-sha256")
        content_sha256 = _payload_mode(content_sha256)
        _refuse_unsigned_amz_headers(header_map, signed_names)
        identity = self._identity(scope.access_key_id)
        skew = abs(self._clock() - _epoch(timestamp))
        if skew > self._max_skew:
            raise S3Error("RequestTimeTooSkewed", "The difference between the request time and the "
                          "current time is too large.")
        signed = _signed_headers(header_map, signed_names)
        self._check_signature(_HeaderSigner, identity, scope, timestamp, method, raw_path, params,
                              signed, signature)
        return AuthResult(identity, False, content_sha256, self._chunk_signer(
            identity, scope, timestamp, signature, content_sha256))

    # -- presigned URLs ------------------------------------------------------

    def _verify_query(self, method: str, raw_path: str, params: list[tuple[str, str]],
                      header_map: dict[str, list[str]]) -> AuthResult:
        code = "AuthorizationQueryParametersError"
        auth = _query_auth_params(params)
        algorithm = auth["X-Amz-Algorithm"]
        if algorithm == "AWS4-ECDSA-P256-SHA256":
            raise S3Error("InvalidRequest", _UNSUPPORTED_MECHANISM)
        if algorithm != ALGORITHM:
            raise S3Error(code, 'X-Amz-Algorithm only supports "AWS4-HMAC-SHA256"')
        scope = self._parse_credential(auth["X-Amz-Credential"], code)
        signed_names = _parse_signed_headers(auth["X-Amz-SignedHeaders"], code)
        signature = _parse_signature(auth["X-Amz-Signature"], code)
        # A presigned URL grants exactly what it signs: an added x-amz-copy-source,
        # x-amz-metadata-directive, x-amz-meta-* or checksum header would turn a
        # presigned PUT into a copy or change what is stored, so S3 refuses them.
        _refuse_unsigned_amz_headers(header_map, signed_names)
        timestamp = auth["X-Amz-Date"]
        if not _is_amz_date(timestamp):
            raise S3Error(code, "X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"")
        _check_scope_date(scope, timestamp, code, "X-Amz-Date")
        expires = _parse_expires(auth["X-Amz-Expires"])
        identity = self._identity(scope.access_key_id)
        now, issued = self._clock(), _epoch(timestamp)
        if issued - now > self._max_skew:
            raise S3Error("AccessDenied", "Request is not valid yet")
        if now > issued + expires:
            raise S3Error("AccessDenied", "Request has expired")
        signed = _signed_headers(header_map, signed_names)
        content_sha256 = UNSIGNED_PAYLOAD
        if "x-amz-content-sha256" in signed_names:
            content_sha256 = _payload_mode(signed["x-amz-content-sha256"])
        canonical_params = [(k, v) for k, v in params if k != "X-Amz-Signature"]
        self._check_signature(_QuerySigner, identity, scope, timestamp, method, raw_path,
                              canonical_params, signed, signature)
        return AuthResult(identity, True, content_sha256, self._chunk_signer(
            identity, scope, timestamp, signature, content_sha256))

    def _verify_query_v2(self, method: str, raw_path: str, raw_query: str,
                         header_map: dict[str, list[str]]) -> AuthResult:
        code = "AuthorizationQueryParametersError"
        pairs = _raw_query_pairs(raw_query)
        auth = _v2_auth_params(pairs)
        _refuse_unsigned_v2_params(pairs, header_map)
        expires_at = auth["Expires"]
        if not (expires_at.isascii() and expires_at.isdigit()):
            raise S3Error(code, "Expires must be an integer number of seconds since the epoch")
        identity = self._identity(auth["AWSAccessKeyId"])
        now = self._clock()
        if now > int(expires_at):
            raise S3Error("AccessDenied", "Request has expired")
        if int(expires_at) - now > MAX_PRESIGN_EXPIRES:
            raise S3Error(code, "Expires must be less than a week (in seconds) that is "
                          f"{MAX_PRESIGN_EXPIRES} from now")
        signer = _SigV2QuerySigner(Credentials(identity.access_key_id, identity.secret_access_key), expires_at)
        signature = auth["Signature"].encode("utf-8")
        for path in _path_candidates(raw_path):
            # botocore picks the signed sub-resources out of the raw query itself,
            # by their names as sent, exactly as it did when signing.
            split = SplitResult("http", "dwray.invalid", path, raw_query, "")
            expected = signer.get_signature(method.upper(), split, _v2_signed_headers(header_map))
            if hmac.compare_digest(expected.encode("ascii"), signature):
                return AuthResult(identity, True, UNSIGNED_PAYLOAD)
        raise S3Error("SignatureDoesNotMatch", _SIGNATURE_MISMATCH)

    # -- shared steps --------------------------------------------------------

    def _parse_credential(self, credential: str, code: str) -> _Scope:
        parts = credential.split("/")
        if len(parts) != 5 or not parts[0]:
            raise S3Error(code, "The authorization is malformed; the Credential is mal-formed; expecting "
                          '"<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request".')
        access_key_id, date, region, service, terminator = parts
        if not _is_amz_date(date + "T000000Z"):
            raise S3Error(code, f"The authorization is malformed; invalid credential date {date!r}; "
                          "expecting YYYYMMDD.")
        if region != self._region:
            raise S3Error(code, f"The authorization is malformed; the region {region!r} is wrong; "
                          f"expecting {self._region!r}")
        if service != "s3":
            raise S3Error(code, f"The authorization is malformed; incorrect service {service!r}. "
                          "This endpoint belongs to 's3'.")
        if terminator != "aws4_request":
            raise S3Error(code, f"The authorization is malformed; incorrect terminal {terminator!r}. "
                          "This endpoint uses 'aws4_request'.")
        return _Scope(access_key_id, date, region, service)

    def _identity(self, access_key_id: str) -> SigningIdentity:
        identity = self._lookup(access_key_id)
        if identity is None:
            raise S3Error("InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist in "
                          "our records.")
        return identity

    def _check_signature(self, signer_cls: type[_HeaderSigner | _QuerySigner],
                         identity: SigningIdentity, scope: _Scope, timestamp: str, method: str,
                         raw_path: str, params: list[tuple[str, str]], signed: HTTPHeaders,
                         signature: str) -> None:
        credentials = Credentials(identity.access_key_id, identity.secret_access_key)
        signer = signer_cls(credentials, scope.region, signed)
        for path in _path_candidates(raw_path):
            # botocore reads the path from the URL and, for S3, signs it as is;
            # the host part is never used because headers_to_sign is the client's.
            request = AWSRequest(method=method.upper(), url="http://dwray.invalid" + path,
                                 params=list(params))
            # botocore takes the payload hash from a (signed) X-Amz-Content-SHA256
            # header when there is one, else UNSIGNED-PAYLOAD for presigned URLs.
            request.headers = signed
            request.context["timestamp"] = timestamp
            canonical_request = signer.canonical_request(request)
            string_to_sign = signer.string_to_sign(request, canonical_request)
            expected = signer.signature(string_to_sign, request)
            if hmac.compare_digest(expected.encode("ascii"), signature.encode("ascii")):
                return
        raise S3Error("SignatureDoesNotMatch", _SIGNATURE_MISMATCH)

    def _chunk_signer(self, identity: SigningIdentity, scope: _Scope, timestamp: str, signature: str,
                      content_sha256: str) -> ChunkSigner | None:
        if content_sha256 not in _SIGNED_STREAMING:
            return None
        return ChunkSigner(_signing_key(identity.secret_access_key, scope), timestamp,
                           scope.credential_scope, signature)


def _signing_key(secret: str, scope: _Scope) -> bytes:
    # botocore derives the same key inside SigV4Auth.signature() but does not
    # expose it; the chunk chain needs it, so derive it here (SigV4 spec, step 3).
    key = ("AWS4" + secret).encode("utf-8")
    for part in (scope.date, scope.region, scope.service, "aws4_request"):
        key = hmac.new(key, part.encode("utf-8"), hashlib.sha256).digest()
    return key


def _parse_query(raw_query: str) -> list[tuple[str, str]]:
    """Decoded (name, value) pairs; '+' stays a literal plus, as SigV4 requires."""
    pairs = []
    for piece in raw_query.split("&"):
        if not piece:
            continue
        name, _, value = piece.partition("=")
        try:
            pairs.append((_decode(name), _decode(value)))
        except UnicodeDecodeError:
            raise S3Error("InvalidArgument", "The query string is not valid percent-encoded UTF-8") from None
    return pairs


def _decode(component: str) -> str:
    return unquote_to_bytes(component).decode("utf-8")


def _path_candidates(raw_path: str) -> list[str]:
    """The canonical URIs to try: the path as sent, then S3's own encoding of it.

    SDKs sign the exact path they send; a few clients send characters such as
    '!' or '=' unencoded yet sign them percent-encoded, which S3 accepts. Both
    forms decode to the same key, so accepting either signs the same resource.
    """
    _check_raw_path(raw_path)
    raw = raw_path.encode("latin-1") if max(map(ord, raw_path)) < 0x100 else raw_path.encode("utf-8")
    candidates = [raw_path] if raw_path.isascii() else []
    reencoded = quote(unquote_to_bytes(raw), safe="/~")
    if reencoded not in candidates:
        candidates.append(reencoded)
    return candidates


def _check_raw_path(raw_path: str) -> None:
    """Refuse a path that botocore's signer would read differently from the gateway.

    The signers take the path from ``urlsplit(url)``, which ends it at a '#' (and a
    '?'); a signature for ``/b/k`` would then also cover ``/b/k#x``, which the
    gateway decodes as key ``k#x``. Clients percent-encode both ('?' never gets
    here: the server splits the query off first). Control characters and spaces
    are likewise never sent raw, and urlsplit silently drops some of them.
    """
    for char in "#?":
        if char in raw_path:
            raise S3Error("InvalidURI", f"Couldn't parse the specified URI: the path contains a raw {char!r}; "
                          f"percent-encode it as %{ord(char):02X}.")
    if not raw_path.startswith("/") or any(ord(c) < 0x21 or ord(c) == 0x7F for c in raw_path):
        raise S3Error("InvalidURI", "Couldn't parse the specified URI.")


def _refuse_unsigned_amz_headers(header_map: dict[str, list[str]], signed_names: Sequence[str]) -> None:
    """S3's rule for SigV4: every x-amz-* header sent must be signed (names only in the message)."""
    unsigned = sorted(n for n in header_map if n.startswith("x-amz-") and n not in signed_names)
    if unsigned:
        raise S3Error("AccessDenied", "There were headers present in the request which were not "
                      f"signed: {', '.join(unsigned)}")


def _single_header(header_map: dict[str, list[str]], name: str) -> str | None:
    values = header_map.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise S3Error("InvalidArgument", f"The request carries more than one {name} header")
    return values[0]


def _parse_authorization(authorization: str) -> dict[str, str]:
    algorithm, _, rest = authorization.strip().partition(" ")
    if algorithm in ("AWS", "AWS4-ECDSA-P256-SHA256"):
        raise S3Error("InvalidRequest", _UNSUPPORTED_MECHANISM)
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


def _parse_signed_headers(value: str, code: str) -> list[str]:
    names = value.split(";")
    if not all(_HEADER_NAME.match(n) for n in names) or len(set(names)) != len(names):
        raise S3Error(code, "SignedHeaders must be lowercase header names separated by ';'")
    if "host" not in names:
        raise S3Error(code, "SignedHeaders must include host")
    return names


def _parse_signature(value: str, code: str) -> str:
    if not re.fullmatch(r"[0-9a-f]{64}", value):
        raise S3Error(code, "The signature must be 64 lowercase hex characters")
    return value


def _signed_headers(header_map: dict[str, list[str]], names: Sequence[str]) -> HTTPHeaders:
    signed = HTTPHeaders()
    for name in names:
        values = header_map.get(name)
        if not values:
            raise S3Error("SignatureDoesNotMatch", f"The signed header {name!r} is missing from the request")
        for value in values:  # repeated headers are joined with ',' by the signer
            signed[name] = value
    return signed


def _header_timestamp(header_map: dict[str, list[str]]) -> str:
    amz_date = _single_header(header_map, "x-amz-date")
    if amz_date is not None:
        if _is_amz_date(amz_date):
            return amz_date
        raise S3Error("AccessDenied", "AWS authentication requires a valid Date or x-amz-date header")
    date = _single_header(header_map, "date")
    try:
        parsed = parsedate_to_datetime(date) if date is not None else None
    except (TypeError, ValueError):
        parsed = None
    if parsed is None:
        raise S3Error("AccessDenied", "AWS authentication requires a valid Date or x-amz-date header")
    if parsed.tzinfo is None:  # "-0000" (botocore's own form) means UTC
        parsed = parsed.replace(tzinfo=datetime.UTC)
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(parsed.timestamp()))


def _check_scope_date(scope: _Scope, timestamp: str, code: str, name: str) -> None:
    if scope.date != timestamp[:8]:
        raise S3Error(code, f"Invalid credential date {scope.date!r}: it is not the date of {name}.")


def _query_auth_params(params: list[tuple[str, str]]) -> dict[str, str]:
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


def _raw_query_pairs(raw_query: str) -> list[tuple[str, str]]:
    """(name, value) pairs still percent-encoded, as botocore's SigV2 signer reads them."""
    return [(name, value) for name, _, value in (p.partition("=") for p in raw_query.split("&") if p)]


def _v2_auth_params(pairs: list[tuple[str, str]]) -> dict[str, str]:
    found: dict[str, str] = {}
    for name, value in pairs:
        if name in _V2_AUTH_PARAMS:
            if name in found:
                raise S3Error("AuthorizationQueryParametersError", f"{name} appears more than once")
            found[name] = _decode(value)
    if len(found) != len(_V2_AUTH_PARAMS):
        raise S3Error("AuthorizationQueryParametersError", "Query-string authentication requires the "
                      "Signature, Expires and AWSAccessKeyId parameters")
    return found


def _refuse_unsigned_v2_params(pairs: list[tuple[str, str]], header_map: dict[str, list[str]]) -> None:
    """Refuse query parameters a SigV2 signature does not cover (names compared as sent,
    so an encoded sub-resource name cannot slip past botocore's by-name selection)."""
    unsigned = sorted({
        name for name, value in pairs
        if name not in _V2_AUTH_PARAMS and name not in _V2_SIGNED_SUBRESOURCES
        and not ((name in _V2_HEADER_COPIES or name.startswith("x-amz-"))
                 and header_map.get(name) == [_decode(value)])})
    if unsigned:
        raise S3Error("AccessDenied", "A SigV2 presigned URL (AWSAccessKeyId/Signature) does not sign the "
                      f"query parameters {', '.join(unsigned)}; presign with SigV4 (boto3: "
                      "Config(signature_version='s3v4')), or send content-type, content-md5 and x-amz-* "
                      "values as the same request headers.")


def _v2_signed_headers(header_map: dict[str, list[str]]) -> HTTPHeaders:
    """The headers SigV2 signs: Content-MD5, Content-Type and every x-amz-* header."""
    signed = HTTPHeaders()
    for name in _V2_HEADER_COPIES:
        value = _single_header(header_map, name)
        if value is not None:
            signed[name] = value
    for name, values in header_map.items():
        if name.startswith("x-amz-"):
            for value in values:  # repeated headers are joined with ',' by the signer
                signed[name] = value
    return signed


def _parse_expires(value: str) -> int:
    if not value.isdigit() or not value.isascii():
        raise S3Error("AuthorizationQueryParametersError", "X-Amz-Expires should be a number")
    expires = int(value)
    if expires > MAX_PRESIGN_EXPIRES:
        raise S3Error("AuthorizationQueryParametersError", "X-Amz-Expires must be less than a week "
                      f"(in seconds) that is {MAX_PRESIGN_EXPIRES}")
    return expires


def _payload_mode(value: str) -> str:
    if value in _PAYLOAD_MODES:
        return value
    if _HEX_SHA256.match(value):
        return value.lower()
    if value.startswith("STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD"):
        raise S3Error("InvalidRequest", f"x-amz-content-sha256 {value!r} (SigV4a) is not supported")
    raise S3Error("InvalidArgument", "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, "
                  "STREAMING-UNSIGNED-PAYLOAD-TRAILER, STREAMING-AWS4-HMAC-SHA256-PAYLOAD, "
                  "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER or a valid sha256 value.")


def _is_amz_date(value: str) -> bool:
    """True for a real instant written as ISO 8601 basic (``20130524T000000Z``)."""
    if not _AMZ_DATE.match(value):
        return False
    try:
        _epoch(value)
    except ValueError:
        return False
    return True


def _epoch(amz_date: str) -> float:
    return float(calendar.timegm(time.strptime(amz_date, "%Y%m%dT%H%M%SZ")))
