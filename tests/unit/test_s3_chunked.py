"""aws-chunked decoding: the AWS documentation's signed examples, boto3's own
unsigned-trailer bodies, tampering, framing errors and byte-at-a-time feeding."""
from __future__ import annotations

import hashlib
import hmac
import io
import random
from collections.abc import Callable, Iterable
from typing import Any

import pytest

from dwray.s3.auth import (
    STREAMING_SIGNED_TRAILER,
    STREAMING_UNSIGNED_TRAILER,
    ChunkSigner,
)
from dwray.s3.checksums import BodyVerifier, Checksum
from dwray.s3.chunked import AwsChunkedDecoder, parse_trailer_names
from dwray.s3.errors import S3Error
from tests.unit.test_s3_auth import (
    DOC_HEADERS,
    DOC_TIME,
    ENDPOINT,
    BotoRecorder,
    make_verifier,
    raises,
    sign_manually,
)

SIG1 = "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648"
SIG2 = "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497"
SIG_FINAL = "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9"
DOC_PAYLOAD = b"a" * 66560
DOC_BODY = (f"10000;chunk-signature={SIG1}\r\n".encode() + b"a" * 65536 + b"\r\n"
            + f"400;chunk-signature={SIG2}\r\n".encode() + b"a" * 1024 + b"\r\n"
            + f"0;chunk-signature={SIG_FINAL}\r\n\r\n".encode())


def doc_decoder() -> AwsChunkedDecoder:
    result = make_verifier(DOC_TIME).verify("PUT", "/examplebucket/chunkObject.txt", "", DOC_HEADERS)
    decoder = AwsChunkedDecoder.for_request(result, dict(DOC_HEADERS))
    assert decoder is not None
    return decoder


def decode(decoder: AwsChunkedDecoder, pieces: Iterable[bytes]) -> tuple[bytes, dict[str, str]]:
    out = bytearray()
    for piece in pieces:
        for part in decoder.feed(piece):
            out += part
    return bytes(out), decoder.finish()


def one_byte_at_a_time(body: bytes) -> list[bytes]:
    return [body[i:i + 1] for i in range(len(body))]


def random_pieces(body: bytes, seed: int) -> list[bytes]:
    rng, pieces, pos = random.Random(seed), [], 0
    while pos < len(body):
        step = rng.randint(1, 9000)
        pieces.append(body[pos:pos + step])
        pos += step
    return pieces


def test_parse_trailer_names() -> None:
    assert parse_trailer_names(None) == ()
    assert parse_trailer_names("X-Amz-Checksum-CRC32, x-amz-checksum-sha256") == (
        "x-amz-checksum-crc32", "x-amz-checksum-sha256")


# -- the AWS documentation's signed example ------------------------------------------


@pytest.mark.parametrize("split", ["whole", "bytes", "random"])
def test_documented_chunk_signatures(split: str) -> None:
    pieces = {"whole": [DOC_BODY], "bytes": one_byte_at_a_time(DOC_BODY),
              "random": random_pieces(DOC_BODY, 7)}[split]
    decoder = doc_decoder()
    assert decode(decoder, pieces) == (DOC_PAYLOAD, {})
    assert decoder.decoded_bytes == 66560


def test_pieces_are_views_not_whole_chunk_copies() -> None:
    decoder = doc_decoder()
    pieces = decoder.feed(DOC_BODY[:1000])
    assert len(pieces) == 1 and len(pieces[0]) == 1000 - DOC_BODY.index(b"\r\n") - 2


@pytest.mark.parametrize("where", [100, 65536 + 500, 66000])
def test_tampered_chunk_data(where: int) -> None:
    start = DOC_BODY.index(b"\r\n") + 2
    if where > 65536:
        start = DOC_BODY.index(b"\r\n", DOC_BODY.index(b"400;")) + 2 - 65536
    body = bytearray(DOC_BODY)
    body[start + where] ^= 0x01
    raises("SignatureDoesNotMatch", lambda: decode(doc_decoder(), [bytes(body)]))


@pytest.mark.parametrize("signature", [SIG1, SIG2, SIG_FINAL])
def test_tampered_chunk_signature(signature: str) -> None:
    forged = signature[:-1] + ("0" if signature[-1] != "0" else "1")
    body = DOC_BODY.replace(signature.encode(), forged.encode())
    decoder = doc_decoder()
    raises("SignatureDoesNotMatch", lambda: decode(decoder, [body]))
    # errors stick: the decoder refuses to go on
    raises("SignatureDoesNotMatch", lambda: decoder.feed(b"0\r\n\r\n"))


def test_missing_chunk_signature_and_reordered_chunks() -> None:
    raises("SignatureDoesNotMatch", lambda: decode(doc_decoder(), [b"3\r\nabc\r\n"]))
    first = DOC_BODY[:DOC_BODY.index(b"400;")]
    second = DOC_BODY[len(first):DOC_BODY.index(b"\r\n0;chunk") + 2]
    raises("SignatureDoesNotMatch", lambda: decode(doc_decoder(), [second + first]))


def test_truncated_and_overlong_bodies() -> None:
    raises("IncompleteBody", lambda: decode(doc_decoder(), [DOC_BODY[:-3]]))
    raises("IncompleteBody", lambda: decode(doc_decoder(), [DOC_BODY[:DOC_BODY.index(b"0;chunk-signature=b6")]]))
    assert decode(doc_decoder(), [DOC_BODY[:-2]]) == (DOC_PAYLOAD, {})  # only the last empty line missing
    raises("IncompleteBody", lambda: decode(doc_decoder(), [DOC_BODY[:60000]]))
    longer = DOC_BODY.replace(b"400;", b"401;")  # more data than x-amz-decoded-content-length
    decoder = doc_decoder()
    with pytest.raises(S3Error) as info:
        decoder.feed(longer)
    assert info.value.code == "IncompleteBody"
    assert decoder.decoded_bytes == 65536  # refused before emitting the excess chunk


# -- signed trailers (STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER) -------------------

# The trailer example of the AWS docs (sigv4-streaming-trailers): seed signature
# and chunk chain as published. The docs' own trailer signature (63bddb24...)
# does not follow from their inputs, so the trailer value below is the one the
# documented algorithm gives (HMAC over "x-amz-checksum-crc32c:sOO8/Q==\n").
TRAILER_SEED = "106e2a8a18243abcf37539882f36619c00e2dfc72633413f02d3b74544bfeb8e"
TRAILER_CHAIN = ["b474d8862b1487a5145d686f57f013e54db672cee1c953b3010fb58501ef5aa2",
                 "1c1344b170168f8e65b41376b44b20fe354e373826ccbbe2c1d40a8cae51e5c7",
                 "2ca2aba2005185cf7159c6277faf83795951dd77a3a99e6e65d5c9f85863f992"]
TRAILER_SIGNATURE = "d81f82fc3505edab99d459891051a732e8730629a2e4a59689829ca17fe2e435"


def doc_signing_key() -> bytes:
    key = b"AWS4wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    for part in ("20130524", "us-east-1", "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def trailer_signer() -> ChunkSigner:
    return ChunkSigner(doc_signing_key(), "20130524T000000Z", "20130524/us-east-1/s3/aws4_request", TRAILER_SEED)


def signed_trailer_body(crc32c: str = "sOO8/Q==", trailer_signature: str = TRAILER_SIGNATURE,
                        blank_before_trailers: bool = False) -> bytes:
    return (f"10000;chunk-signature={TRAILER_CHAIN[0]}\r\n".encode() + b"a" * 65536 + b"\r\n"
            + f"400;chunk-signature={TRAILER_CHAIN[1]}\r\n".encode() + b"a" * 1024 + b"\r\n"
            + f"0;chunk-signature={TRAILER_CHAIN[2]}\r\n".encode()
            + (b"\r\n" if blank_before_trailers else b"")
            + f"x-amz-checksum-crc32c:{crc32c}\r\n".encode()
            + f"x-amz-trailer-signature:{trailer_signature}\r\n\r\n".encode())


def test_documented_trailer_chain() -> None:
    signer = trailer_signer()
    previous = TRAILER_SEED
    for data, expected in zip((b"a" * 65536, b"a" * 1024, b""), TRAILER_CHAIN):
        previous = signer.chunk_signature(previous, hashlib.sha256(data).hexdigest())
        assert previous == expected
    assert signer.trailer_signature(previous, b"x-amz-checksum-crc32c:sOO8/Q==\n") == TRAILER_SIGNATURE
    crc = Checksum("crc32c")
    crc.update(DOC_PAYLOAD)
    assert crc.b64digest() == "sOO8/Q=="


@pytest.mark.parametrize("blank", [False, True])
def test_signed_trailer_decodes(blank: bool) -> None:
    for pieces in ([signed_trailer_body(blank_before_trailers=blank)],
                   one_byte_at_a_time(signed_trailer_body(blank_before_trailers=blank))):
        decoder = AwsChunkedDecoder(signer=trailer_signer(), trailer_names=["x-amz-checksum-crc32c"],
                                    decoded_length=66560)
        assert decode(decoder, pieces) == (DOC_PAYLOAD, {"x-amz-checksum-crc32c": "sOO8/Q=="})


def test_signed_trailer_tampering() -> None:
    def run(body: bytes) -> Any:
        return decode(AwsChunkedDecoder(signer=trailer_signer(), trailer_names=["x-amz-checksum-crc32c"]), [body])

    raises("SignatureDoesNotMatch", lambda: run(signed_trailer_body(crc32c="AAAAAA==")))
    raises("SignatureDoesNotMatch", lambda: run(signed_trailer_body(trailer_signature="0" * 64)))
    unsigned_tail = signed_trailer_body().replace(f"x-amz-trailer-signature:{TRAILER_SIGNATURE}\r\n".encode(), b"")
    raises("SignatureDoesNotMatch", lambda: run(unsigned_tail))


def test_signed_trailer_mode_end_to_end() -> None:
    """botocore signs the request headers; the body is chunk-signed with the seed it yields."""
    payload = bytes(range(256)) * 100
    req = sign_manually("PUT", ENDPOINT + "/bkt/signed%20trailer", {
        "x-amz-decoded-content-length": str(len(payload)), "x-amz-trailer": "x-amz-checksum-sha256",
        "content-encoding": "aws-chunked"}, payload=STREAMING_SIGNED_TRAILER)
    result = req.verify(make_verifier(req.signed_at))
    signer = result.chunk_signer
    assert signer is not None
    body, previous = bytearray(), signer.seed_signature
    for chunk in (payload[:9000], payload[9000:], b""):
        previous = signer.chunk_signature(previous, hashlib.sha256(chunk).hexdigest())
        body += f"{len(chunk):x};chunk-signature={previous}\r\n".encode() + chunk + (b"\r\n" if chunk else b"")
    sha = Checksum("sha256")
    sha.update(payload)
    trailer = f"x-amz-checksum-sha256:{sha.b64digest()}\n"
    body += trailer.replace("\n", "\r\n").encode()
    body += f"x-amz-trailer-signature:{signer.trailer_signature(previous, trailer.encode())}\r\n\r\n".encode()
    headers = dict(req.headers)
    decoder = AwsChunkedDecoder.for_request(result, headers)
    assert decoder is not None
    data, trailers = decode(decoder, one_byte_at_a_time(bytes(body)))
    verifier = BodyVerifier(headers, content_sha256=result.content_sha256,
                            trailer_names=parse_trailer_names(headers["x-amz-trailer"]))
    verifier.update(data)
    assert data == payload
    assert verifier.verify(trailers) == {"x-amz-checksum-sha256": sha.b64digest()}


# -- boto3's STREAMING-UNSIGNED-PAYLOAD-TRAILER bodies ---------------------------------


def boto3_trailer_put(payload: bytes, algorithm: str) -> Any:
    rec = BotoRecorder("https://127.0.0.1:9443")
    req = rec.last(rec.client.put_object, Bucket="bkt", Key="k", Body=io.BytesIO(payload),
                   ChecksumAlgorithm=algorithm)
    result = req.verify(make_verifier(req.signed_at))
    assert result.content_sha256 == STREAMING_UNSIGNED_TRAILER
    return req, result


def run_request(req: Any, result: Any, pieces: Callable[[bytes], list[bytes]]) -> tuple[bytes, dict[str, str]]:
    headers = dict(req.headers)
    decoder = AwsChunkedDecoder.for_request(result, headers)
    assert decoder is not None
    verifier = BodyVerifier(headers, content_sha256=result.content_sha256,
                            trailer_names=parse_trailer_names(headers.get("x-amz-trailer")))
    data = bytearray()
    for piece in pieces(req.body):
        for part in decoder.feed(piece):
            verifier.update(part)
            data += part
    return bytes(data), verifier.verify(decoder.finish())


@pytest.mark.parametrize("algorithm", ["CRC32", "CRC32C", "SHA256", "SHA1", "CRC64NVME"])
def test_boto3_unsigned_trailer_bodies(algorithm: str) -> None:
    payload = random.Random(1).randbytes(2 * 1024 * 1024 + 12345)  # three aws-chunks of botocore's 1 MiB
    req, result = boto3_trailer_put(payload, algorithm)
    name = f"x-amz-checksum-{algorithm.lower()}"
    assert req.header("x-amz-trailer") == name
    expected = Checksum(algorithm)
    expected.update(payload)
    data, checksums = run_request(req, result, lambda body: [body])
    assert data == payload and checksums == {name: expected.b64digest()}
    assert f"{name}:{expected.b64digest()}".encode() in req.body


def test_boto3_unsigned_trailer_one_byte_at_a_time() -> None:
    payload = b"small object, fed a byte at a time"
    req, result = boto3_trailer_put(payload, "CRC32C")
    data, checksums = run_request(req, result, one_byte_at_a_time)
    assert data == payload and set(checksums) == {"x-amz-checksum-crc32c"}


@pytest.mark.parametrize("algorithm", ["CRC32", "CRC32C", "SHA256"])
def test_boto3_trailer_with_wrong_checksum(algorithm: str) -> None:
    req, result = boto3_trailer_put(b"the right bytes", algorithm)
    tampered = req.body.replace(b"the right bytes", b"the wrong bytes")
    raises("BadDigest", lambda: run_request(req, result, lambda _: [tampered]))
    name = f"x-amz-checksum-{algorithm.lower()}:".encode()
    start = req.body.index(name) + len(name)
    garbled = req.body[:start] + b"!!!" + req.body[start + 3:]
    raises("InvalidRequest", lambda: run_request(req, result, lambda _: [garbled]))


# -- framing errors ----------------------------------------------------------------------


def unsigned(*trailers: str, length: int | None = None) -> AwsChunkedDecoder:
    return AwsChunkedDecoder(signer=None, trailer_names=trailers, decoded_length=length)


@pytest.mark.parametrize("body, code", [
    (b"zz\r\nab\r\n0\r\n\r\n", "InvalidRequest"),                      # size is not hex
    (b"\r\n", "InvalidRequest"),                                        # empty size
    (b"12345678901234567\r\n", "InvalidRequest"),                       # absurd size
    (b"2\r\nabc\r\n0\r\n\r\n", "IncompleteBody"),                       # more data than declared
    (b"3\r\nabc\r\n0\r\nx-amz-checksum-crc32:AAAAAA==\r\n\r\n", "InvalidRequest"),  # not announced
    (b"3\r\nabc\r\n0\r\n\r\nextra", "InvalidRequest"),                  # data after the end
    (b"3\r\nabc\r\n0\r\nx-amz-trailer-signature:" + b"0" * 64 + b"\r\n\r\n", "InvalidRequest"),
    (b"\xff3\r\nabc\r\n", "InvalidRequest"),                            # non-ASCII chunk header
])
def test_malformed_framing(body: bytes, code: str) -> None:
    raises(code, lambda: decode(unsigned(), [body]))


def test_unsigned_chunks_and_trailers() -> None:
    body = b"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-Amz-Checksum-CRC32 : v\r\n\r\n"
    assert decode(unsigned("x-amz-checksum-crc32", length=5), [body]) == (b"abcde", {"x-amz-checksum-crc32": "v"})
    raises("IncompleteBody", lambda: decode(unsigned(length=6), [b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"]))
    raises("InvalidRequest", lambda: decode(unsigned("x-amz-checksum-crc32"), [b"3\r\nabc\r\n0\r\n\r\n"]))
    # a final empty line that never came still ends the body cleanly
    assert decode(unsigned(), [b"3\r\nabc\r\n0\r\n"]) == (b"abc", {})


def test_header_and_trailer_limits() -> None:
    raises("InvalidRequest", lambda: unsigned().feed(b"3;" + b"x" * 5000))  # no line end in sight
    raises("InvalidRequest", lambda: unsigned().feed(b"3;" + b"x" * 4100 + b"\r\n"))
    huge = b"x-amz-checksum-crc32:" + b"A" * 17000 + b"\r\n\r\n"
    raises("InvalidRequest", lambda: decode(unsigned("x-amz-checksum-crc32"), [b"0\r\n" + huge]))
    fits = b"x-amz-checksum-crc32:" + b"A" * 16000 + b"\r\n\r\n"
    assert decode(unsigned("x-amz-checksum-crc32"), [b"0\r\n" + fits])[1] == {"x-amz-checksum-crc32": "A" * 16000}
