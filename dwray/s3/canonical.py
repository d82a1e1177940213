"""Reading an S3 request the way AWS signers read it, for SigV4 and SigV2 alike.

The pieces of the canonical request a signature covers, taken from the request
exactly as it arrived: the percent-decoded query pairs, the candidate canonical
URIs for a raw path, single headers and the set of signed headers. Also what
both signature versions share: S3's limit on presigned URLs, its reply to a
wrong signature, and its refusal of unsigned ``x-amz-*`` headers.

Header maps are ``{lowercase name: [values as sent]}``; values are ``str`` as
the server decoded them (ASGI header bytes decoded as latin-1).
"""
from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import quote, unquote_to_bytes

from botocore.awsrequest import HTTPHeaders

from dwray.s3.errors import S3Error

__all__ = [
    "MAX_PRESIGN_EXPIRES",
    "SIGNATURE_MISMATCH",
    "check_raw_path",
    "decode",
    "parse_query",
    "path_candidates",
    "refuse_unsigned_amz_headers",
    "signed_headers",
    "single_header",
]

MAX_PRESIGN_EXPIRES = 604800  # one week, S3's limit for presigned URLs
SIGNATURE_MISMATCH = ("The request signature we calculated does not match the signature you provided. "
                      "Check your key and signing method.")


def parse_query(raw_query: str) -> list[tuple[str, str]]:
    """Decoded (name, value) pairs; '+' stays a literal plus, as SigV4 requires."""
    pairs = []
    for piece in raw_query.split("&"):
        if not piece:
            continue
        name, _, value = piece.partition("=")
        try:
            pairs.append((decode(name), decode(value)))
        except UnicodeDecodeError:
            raise S3Error("InvalidArgument", "The query string is not valid percent-encoded UTF-8") from None
    return pairs


def decode(component: str) -> str:
    """One percent-encoded query component as text (raises ``UnicodeDecodeError`` if not UTF-8)."""
    return unquote_to_bytes(component).decode("utf-8")


def path_candidates(raw_path: str) -> list[str]:
    """The canonical URIs to try: the path as sent, then S3's own encoding of it.

    SDKs sign the exact path they send; a few clients send characters such as
    '!' or '=' unencoded yet sign them percent-encoded, which S3 accepts. Both
    forms decode to the same key, so accepting either signs the same resource.
    """
    check_raw_path(raw_path)
    raw = raw_path.encode("latin-1") if max(map(ord, raw_path)) < 0x100 else raw_path.encode("utf-8")
    candidates = [raw_path] if raw_path.isascii() else []
    reencoded = quote(unquote_to_bytes(raw), safe="/~")
    if reencoded not in candidates:
        candidates.append(reencoded)
    return candidates


def check_raw_path(raw_path: str) -> None:
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


def refuse_unsigned_amz_headers(header_map: dict[str, list[str]], signed_names: Sequence[str]) -> None:
    """S3's rule for SigV4: every x-amz-* header sent must be signed (names only in the message)."""
    unsigned = sorted(n for n in header_map if n.startswith("x-amz-") and n not in signed_names)
    if unsigned:
        raise S3Error("AccessDenied", "There were headers present in the request which were not "
                      f"signed: {', '.join(unsigned)}")


def single_header(header_map: dict[str, list[str]], name: str) -> str | None:
    """The one value of header ``name``, ``None`` if absent; sent twice, it is refused."""
    values = header_map.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise S3Error("InvalidArgument", f"The request carries more than one {name} header")
    return values[0]


def signed_headers(header_map: dict[str, list[str]], names: Sequence[str]) -> HTTPHeaders:
    """The headers named in SignedHeaders, as botocore's signer takes them; each must be present."""
    signed = HTTPHeaders()
    for name in names:
        values = header_map.get(name)
        if not values:
            raise S3Error("SignatureDoesNotMatch", f"The signed header {name!r} is missing from the request")
        for value in values:  # repeated headers are joined with ',' by the signer
            signed[name] = value
    return signed
