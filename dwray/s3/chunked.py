"""Decoding aws-chunked request bodies (S3's streaming upload framing), sans-IO.

An aws-chunked body is a run of ``<hex size>[;chunk-signature=<sig>]\\r\\n<data>\\r\\n``
chunks ending with a zero-size chunk, then optional trailing headers (such as
``x-amz-checksum-crc32:...``, plus ``x-amz-trailer-signature`` when signed) and
an empty line. :class:`AwsChunkedDecoder` is fed the body as it arrives and
hands back the payload bytes without ever holding a whole chunk; only header
and trailer lines are buffered, with hard limits.

Signed modes chain each chunk's signature from the request's seed signature.
botocore has no chunk signer, so the chain (in :class:`dwray.s3.auth.ChunkSigner`)
is written by hand. A chunk's signature can only be checked once all its data
has been seen, so **data is emitted before the chunk carrying it is verified**:
the gateway must treat everything ``feed`` returns as provisional and must not
commit (store, acknowledge) the object until :meth:`AwsChunkedDecoder.finish`
has returned successfully.
"""
from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence

from dwray.s3.auth import AuthResult, ChunkSigner
from dwray.s3.errors import S3Error
from dwray.s3.numbers import parse_decimal, parse_hex

__all__ = ["MAX_CHUNK_HEADER", "MAX_TRAILER_SECTION", "AwsChunkedDecoder", "parse_trailer_names"]

MAX_CHUNK_HEADER = 4096  # bytes in one "<size>;chunk-signature=..." line
MAX_TRAILER_SECTION = 16384  # bytes in all trailing header lines together
TRAILER_SIGNATURE = "x-amz-trailer-signature"

_SIGNATURE_EXT = re.compile(r"chunk-signature=([0-9a-f]{64})\Z")
_HEADER, _DATA, _DATA_END, _TRAILERS, _DONE = range(5)


def parse_trailer_names(value: str | None) -> tuple[str, ...]:
    """The lowercase header names an ``x-amz-trailer`` header announces."""
    if not value:
        return ()
    return tuple(name.strip().lower() for name in value.split(",") if name.strip())


class AwsChunkedDecoder:
    """Turns an aws-chunked body back into its payload, checking framing and signatures.

    ``signer`` (from the request's :class:`~dwray.s3.auth.AuthResult`) makes every
    chunk signature and the trailer signature mandatory; without it the body is
    an unsigned stream (``STREAMING-UNSIGNED-PAYLOAD-TRAILER``). ``trailer_names``
    are the trailers ``x-amz-trailer`` announced; any other trailer is refused.
    ``decoded_length`` is ``x-amz-decoded-content-length`` when the client sent it.
    """

    def __init__(self, *, signer: ChunkSigner | None, trailer_names: Sequence[str] = (),
                 decoded_length: int | None = None) -> None:
        self._signer = signer
        self._expected_trailers = tuple(n.lower() for n in trailer_names)
        self._decoded_length = decoded_length
        self._previous = signer.seed_signature if signer else ""
        self._state = _HEADER
        self._line = bytearray()
        self._remaining = 0  # data bytes still due in the current chunk
        self._crlf_seen = 0
        self._chunk_sha: hashlib._Hash | None = None  # sha256 of the current chunk (signed mode)
        self._chunk_signature = ""
        self._chunks = 0
        self._decoded = 0
        self._trailer_bytes = 0
        self._trailers: dict[str, str] = {}
        self._trailer_signature: str | None = None
        self._skipped_blank = False
        self._error: S3Error | None = None

    @classmethod
    def for_request(cls, auth: AuthResult, headers: Mapping[str, str]) -> AwsChunkedDecoder | None:
        """The decoder a request's body needs, or None when it is not aws-chunked."""
        if not auth.streaming:
            return None
        length = headers.get("x-amz-decoded-content-length")
        return cls(signer=auth.chunk_signer, trailer_names=parse_trailer_names(headers.get("x-amz-trailer")),
                   decoded_length=None if length is None else parse_decimal(length, "x-amz-decoded-content-length"))

    @property
    def decoded_bytes(self) -> int:
        """Payload bytes emitted so far."""
        return self._decoded

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes | memoryview]:
        """Consume the next piece of the body; return the payload pieces it completes.

        Pieces are views into ``data``; they may belong to a chunk whose
        signature has not been checked yet (see the module docstring).
        """
        if self._error is not None:
            raise self._error
        buf = data if isinstance(data, (bytes, bytearray)) else bytes(data)
        out: list[bytes | memoryview] = []
        try:
            pos = 0
            while pos < len(buf):
                pos = self._step(buf, pos, out)
        except S3Error as error:
            self._error = error
            raise
        return out

    def finish(self) -> dict[str, str]:
        """Declare the body complete; return its trailers (lowercase names).

        Raises IncompleteBody when the body stopped early or its length is not
        the declared one, and the signature errors the last chunk or trailers
        earn. Only after this returns may the gateway commit the object.
        """
        if self._error is not None:
            raise self._error
        try:
            if self._state == _TRAILERS and not self._line:
                self._end_trailers()  # tolerate a body whose final empty line is missing
            if self._state != _DONE:
                raise S3Error("IncompleteBody", "The aws-chunked body ended before its final chunk")
            if self._decoded_length is not None and self._decoded != self._decoded_length:
                raise S3Error("IncompleteBody", f"The body holds {self._decoded} bytes but "
                              f"x-amz-decoded-content-length is {self._decoded_length}")
        except S3Error as error:
            self._error = error
            raise
        return dict(self._trailers)

    # -- the state machine ---------------------------------------------------

    def _step(self, buf: bytes | bytearray, pos: int, out: list[bytes | memoryview]) -> int:
        if self._state == _DATA:
            return self._take_data(buf, pos, out)
        if self._state == _DATA_END:
            return self._take_crlf(buf, pos)
        if self._state == _DONE:
            raise S3Error("InvalidRequest", "The request body continues after the end of the "
                          "aws-chunked body")
        limit = MAX_CHUNK_HEADER if self._state == _HEADER else MAX_TRAILER_SECTION - self._trailer_bytes
        end = buf.find(b"\n", pos)
        stop = len(buf) if end < 0 else end + 1
        if len(self._line) + (stop - pos) > limit:
            what = "chunk header" if self._state == _HEADER else "trailer section"
            raise S3Error("InvalidRequest", f"The aws-chunked {what} is longer than {limit} bytes")
        self._line += buf[pos:stop]
        if end >= 0:
            line = bytes(self._line).rstrip(b"\n").removesuffix(b"\r")
            self._line.clear()
            if self._state == _HEADER:
                self._chunk_header(line)
            else:
                self._trailer_bytes += stop - pos
                self._trailer_line(line)
        return stop

    def _take_data(self, buf: bytes | bytearray, pos: int, out: list[bytes | memoryview]) -> int:
        take = min(self._remaining, len(buf) - pos)
        piece = memoryview(buf)[pos:pos + take]
        if self._chunk_sha is not None:
            self._chunk_sha.update(piece)
        out.append(piece)
        self._remaining -= take
        self._decoded += take
        if self._remaining == 0:
            self._verify_chunk()
            self._state = _DATA_END
        return pos + take

    def _take_crlf(self, buf: bytes | bytearray, pos: int) -> int:
        while pos < len(buf) and self._crlf_seen < 2:
            if buf[pos] != b"\r\n"[self._crlf_seen]:
                raise S3Error("IncompleteBody", f"Chunk {self._chunks} holds more data than its declared size")
            self._crlf_seen += 1
            pos += 1
        if self._crlf_seen == 2:
            self._crlf_seen = 0
            self._state = _HEADER
        return pos

    def _chunk_header(self, line: bytes) -> None:
        self._chunks += 1
        try:
            text = line.decode("ascii")
        except UnicodeDecodeError:
            raise S3Error("InvalidRequest", f"Chunk {self._chunks} has a non-ASCII header") from None
        size_text, _, extension = text.partition(";")
        size = parse_hex(size_text.strip(), f"The size of chunk {self._chunks}", code="InvalidRequest")
        if self._decoded_length is not None and self._decoded + size > self._decoded_length:
            raise S3Error("IncompleteBody", "The body is longer than x-amz-decoded-content-length "
                          f"({self._decoded_length})")
        if self._signer is not None:
            match = _SIGNATURE_EXT.match(extension.strip())
            if match is None:
                raise S3Error("SignatureDoesNotMatch", f"Chunk {self._chunks} carries no valid chunk-signature")
            self._chunk_signature = match.group(1)
            self._chunk_sha = hashlib.sha256()
        # Unsigned streams may carry chunk extensions (RFC 9112); nothing checks them, so they are ignored.
        self._remaining = size
        if size == 0:
            self._verify_chunk()
            self._state = _TRAILERS
        else:
            self._state = _DATA

    def _verify_chunk(self) -> None:
        if self._signer is None or self._chunk_sha is None:
            return
        expected = self._signer.chunk_signature(self._previous, self._chunk_sha.hexdigest())
        self._check(expected, self._chunk_signature, f"chunk {self._chunks}")
        self._previous = expected
        self._chunk_sha = None

    def _trailer_line(self, line: bytes) -> None:
        if not line:
            if not self._trailers and self._trailer_signature is None and self._expected_trailers \
                    and not self._skipped_blank:
                # Some SDKs put an empty line between the final chunk and the trailers.
                self._skipped_blank = True
                return
            self._end_trailers()
            return
        try:
            name, sep, value = line.decode("ascii").partition(":")
        except UnicodeDecodeError:
            raise S3Error("InvalidRequest", "A trailing header is not ASCII") from None
        name, value = name.strip().lower(), value.strip()
        if not sep or not name:
            raise S3Error("InvalidRequest", "A trailing header is malformed")
        if name == TRAILER_SIGNATURE and self._signer is not None and self._trailer_signature is None:
            self._trailer_signature = value
        elif name not in self._expected_trailers:
            raise S3Error("InvalidRequest", f"The trailing header {name} was not announced in x-amz-trailer")
        elif name in self._trailers or self._trailer_signature is not None:
            raise S3Error("InvalidRequest", f"The trailing header {name} is repeated or out of order")
        else:
            self._trailers[name] = value

    def _end_trailers(self) -> None:
        missing = [n for n in self._expected_trailers if n not in self._trailers]
        if missing:
            raise S3Error("InvalidRequest", f"The trailing header {missing[0]} announced in x-amz-trailer "
                          "was not sent")
        if self._signer is not None and self._trailers:
            if self._trailer_signature is None:
                raise S3Error("SignatureDoesNotMatch", "The trailing headers carry no x-amz-trailer-signature")
            canonical = "".join(f"{name}:{value}\n" for name, value in self._trailers.items())
            expected = self._signer.trailer_signature(self._previous, canonical.encode("ascii"))
            self._check(expected, self._trailer_signature, "the trailing headers")
        elif self._trailer_signature is not None:
            raise S3Error("InvalidRequest", "x-amz-trailer-signature was sent without trailing headers")
        self._state = _DONE

    @staticmethod
    def _check(expected: str, provided: str, what: str) -> None:
        if not hmac.compare_digest(expected.encode("ascii"), provided.encode("ascii")):
            raise S3Error("SignatureDoesNotMatch", f"The signature of {what} does not match")
