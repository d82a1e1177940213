"""The frame format: how an object's bytes are cut, compressed and sealed.

An object of ``plaintext_length`` bytes is cut into frames of ``frame_size``
bytes (the last may be shorter; an empty object has exactly one empty frame).
Each frame is compressed with zstd, or kept raw when that does not shrink it,
then sealed with AES-256-GCM under the object's own random data key (DEK).

A blob is the concatenation of the frame records, in order::

    record = codec (1 byte: 0 raw, 1 zstd) || ciphertext || GCM tag (16 bytes)
    nonce  = nonce_prefix (8 random bytes per object) || frame index (u32 BE)
    AAD    = lp(b"dwray-frame-v1") lp(tenant) lp(bucket) lp(key) lp(version_id)
             || frame index (u64 BE) || last-frame flag (u8) || codec (u8)

where ``lp(x)`` is ``x`` prefixed by its length as a big-endian u32. Binding
the identity, index, last flag and codec into the AAD means a frame cannot be
swapped, reordered, dropped, duplicated, moved to another object, relabelled
as the last one, or have its codec byte flipped without failing to open.

The ``KeyHeader`` (format version, wrapping KEK, wrapped key, nonce prefix,
frame size, plaintext length, MD5, and in version 2 the DEK salt) and the
``FrameTable`` (where each record ends in the blob) are kept beside the blob,
in the catalog. The format version says where the DEK comes from:

- version 1 (``FORMAT_WRAPPED_DEK``): the wrapped key *is* the object's random
  DEK, wrapped by the tenant's KEK; reading it costs one unwrap per object.
- version 2 (``FORMAT_DERIVED_DEK``, what new objects get): the wrapped key is
  a 256-bit *bucket key* shared by many objects (in the spirit of S3 Bucket
  Keys), and the DEK is ``HKDF-SHA256(ikm=bucket key, salt=dek_salt (16
  random bytes per object), info=b"dwray-object-dek-v2")``
  (``dwray.core.data_keys``). Each object still has a DEK of its own; one
  cached unwrap serves every object of the bucket.

Version 1 headers stay readable forever. Frames and their AAD are the same
in both versions.
"""
from __future__ import annotations

import dataclasses
import os
import struct
import sys
import threading
from array import array
from collections.abc import Iterable
from dataclasses import dataclass

import zstandard
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from dwray.errors import IntegrityError, InvalidArgument

__all__ = [
    "CODEC_RAW",
    "CODEC_ZSTD",
    "DEFAULT_FRAME_SIZE",
    "DEFAULT_ZSTD_LEVEL",
    "DEK_SALT_SIZE",
    "DEK_SIZE",
    "FORMAT_DERIVED_DEK",
    "FORMAT_VERSION",
    "FORMAT_WRAPPED_DEK",
    "FRAME_TAG",
    "MAX_FRAMES",
    "MAX_FRAME_SIZE",
    "MIN_RECORD_SIZE",
    "NONCE_PREFIX_SIZE",
    "TAG_SIZE",
    "FrameOpener",
    "FrameSealer",
    "FrameTable",
    "KeyHeader",
    "ObjectIdentity",
    "ObjectKeys",
    "frame_count",
    "frames_for_range",
    "new_object_keys",
]

# Key header format versions (see the module docstring); new objects get FORMAT_VERSION.
FORMAT_WRAPPED_DEK = 1
FORMAT_DERIVED_DEK = 2
FORMAT_VERSION = FORMAT_DERIVED_DEK
_FORMAT_VERSIONS = (FORMAT_WRAPPED_DEK, FORMAT_DERIVED_DEK)
DEFAULT_FRAME_SIZE = 1 << 20
MAX_FRAME_SIZE = 64 << 20
DEFAULT_ZSTD_LEVEL = 1
CODEC_RAW = 0
CODEC_ZSTD = 1

FRAME_TAG = b"dwray-frame-v1"
DEK_SIZE = 32
DEK_SALT_SIZE = 16
NONCE_PREFIX_SIZE = 8
TAG_SIZE = 16
MAX_FRAMES = 1 << 32
# The smallest record: a codec byte and the GCM tag of an empty frame.
MIN_RECORD_SIZE = 1 + TAG_SIZE

_CODEC_BYTES = (b"\x00", b"\x01")
_FRAME_AAD = struct.Struct(">QBB")
_LENGTH = struct.Struct(">I")


def frame_count(plaintext_length: int, frame_size: int) -> int:
    """Number of frames of an object: at least one, even when it is empty."""
    _check_frame_size(frame_size)
    if plaintext_length < 0:
        raise InvalidArgument(f"plaintext length must be >= 0, not {plaintext_length}")
    return max(1, -(-plaintext_length // frame_size))


def frames_for_range(start: int, end: int, frame_size: int) -> range:
    """Indexes of the frames holding plaintext bytes ``[start, end)``."""
    _check_frame_size(frame_size)
    if start < 0 or end < start:
        raise InvalidArgument(f"byte range [{start}, {end}) is not a valid range")
    if start == end:
        return range(start // frame_size, start // frame_size)
    return range(start // frame_size, (end - 1) // frame_size + 1)


def _check_frame_size(frame_size: int) -> None:
    if not 0 < frame_size <= MAX_FRAME_SIZE:
        raise InvalidArgument(f"frame size must be 1..{MAX_FRAME_SIZE} bytes, not {frame_size}")


def _length_prefixed(value: bytes) -> bytes:
    return _LENGTH.pack(len(value)) + value


@dataclass(frozen=True)
class ObjectIdentity:
    """The object a blob belongs to; bound into every frame's AAD."""

    tenant: str
    bucket: str
    key: str
    version_id: str

    def __post_init__(self) -> None:
        for name in ("tenant", "bucket", "key", "version_id"):
            if not isinstance(getattr(self, name), str):
                raise InvalidArgument(f"object identity {name} must be a str, not {type(getattr(self, name)).__name__}")

    def aad_prefix(self) -> bytes:
        """The constant part of every frame's AAD for this object."""
        parts = (FRAME_TAG, *(s.encode("utf-8") for s in (self.tenant, self.bucket, self.key, self.version_id)))
        return b"".join(_length_prefixed(p) for p in parts)

    def describe(self) -> str:
        """How errors name the object."""
        return f"object {self.tenant}/{self.bucket}/{self.key!r} version {self.version_id}"


@dataclass(frozen=True)
class ObjectKeys:
    """A fresh DEK and nonce prefix for one object. The DEK is never shown."""

    dek: bytes = dataclasses.field(repr=False)
    nonce_prefix: bytes


def new_object_keys() -> ObjectKeys:
    """A random 256-bit DEK and 8-byte nonce prefix for a new object."""
    return ObjectKeys(AESGCM.generate_key(bit_length=256), os.urandom(NONCE_PREFIX_SIZE))


class _ZstdContexts(threading.local):
    """zstd contexts are not thread-safe and cost ~15 us to make: one per thread.

    Measured per 1 MiB frame: a thread-local lookup is ~40 ns, a fresh
    compressor per call ~70 us and a fresh decompressor ~40 us.
    """

    def __init__(self) -> None:
        self.compressors: dict[int, zstandard.ZstdCompressor] = {}
        self.decompressor = zstandard.ZstdDecompressor()

    def compressor(self, level: int) -> zstandard.ZstdCompressor:
        compressor = self.compressors.get(level)
        if compressor is None:
            # write_content_size (the default) lets the opener bound the output.
            compressor = self.compressors[level] = zstandard.ZstdCompressor(level=level)
        return compressor


_zstd = _ZstdContexts()


class _FrameCipher:
    """What sealing and opening share: the AEAD, nonce prefix and AAD prefix."""

    __slots__ = ("_aead", "_aad_prefix", "_nonce_prefix", "frame_size", "identity")

    def __init__(self, identity: ObjectIdentity, dek: bytes, nonce_prefix: bytes, frame_size: int) -> None:
        if len(dek) != DEK_SIZE:
            raise InvalidArgument(f"a DEK must be {DEK_SIZE} bytes, not {len(dek)}")
        if len(nonce_prefix) != NONCE_PREFIX_SIZE:
            raise InvalidArgument(f"a nonce prefix must be {NONCE_PREFIX_SIZE} bytes, not {len(nonce_prefix)}")
        _check_frame_size(frame_size)
        self.identity = identity
        self.frame_size = frame_size
        self._aead = AESGCM(bytes(dek))
        self._nonce_prefix = bytes(nonce_prefix)
        self._aad_prefix = identity.aad_prefix()

    def _nonce_and_aad(self, index: int, last: bool, codec: int) -> tuple[bytes, bytes]:
        if not 0 <= index < MAX_FRAMES:
            raise InvalidArgument(f"frame index must be 0..{MAX_FRAMES - 1}, not {index}")
        return (
            self._nonce_prefix + index.to_bytes(4, "big"),
            self._aad_prefix + _FRAME_AAD.pack(index, 1 if last else 0, codec),
        )

    def _fits(self, index: int, size: int, last: bool) -> bool:
        """Frames before the last are full; the last holds 1..frame_size bytes,
        or none when it is the only frame of an empty object."""
        if size == self.frame_size:
            return True
        return last and size < self.frame_size and (size > 0 or index == 0)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.identity.describe()}, frame_size={self.frame_size})"


class FrameSealer(_FrameCipher):
    """Compresses and seals the frames of one object. Safe to share across threads."""

    __slots__ = ("level",)

    def __init__(
        self,
        identity: ObjectIdentity,
        dek: bytes,
        nonce_prefix: bytes,
        *,
        frame_size: int = DEFAULT_FRAME_SIZE,
        level: int = DEFAULT_ZSTD_LEVEL,
    ) -> None:
        super().__init__(identity, dek, nonce_prefix, frame_size)
        self.level = level

    def seal(self, index: int, plaintext: bytes | bytearray | memoryview, last: bool) -> tuple[bytes, bytes]:
        """Seal frame ``index``; return ``(codec byte, ciphertext||tag)``.

        The record is the two pieces written one after the other; they are
        returned apart so that a 1 MiB frame is never copied to join them.
        """
        size = len(plaintext)
        if not self._fits(index, size, last):
            raise InvalidArgument(
                f"frame {index} of {self.identity.describe()} has {size} bytes; "
                f"frames before the last must be {self.frame_size} and the last 1..{self.frame_size}"
            )
        compressed = _zstd.compressor(self.level).compress(plaintext)
        if len(compressed) < size:
            codec, body = CODEC_ZSTD, compressed
        else:
            codec, body = CODEC_RAW, plaintext
        nonce, aad = self._nonce_and_aad(index, last, codec)
        return _CODEC_BYTES[codec], self._aead.encrypt(nonce, body, aad)


class FrameOpener(_FrameCipher):
    """Authenticates, decrypts and decompresses the frames of one object.

    Safe to share across threads. Every failure is an ``IntegrityError``.
    """

    __slots__ = ()

    def __init__(
        self,
        identity: ObjectIdentity,
        dek: bytes,
        nonce_prefix: bytes,
        *,
        frame_size: int = DEFAULT_FRAME_SIZE,
    ) -> None:
        super().__init__(identity, dek, nonce_prefix, frame_size)

    def open(self, index: int, record: bytes | bytearray | memoryview, last: bool) -> bytes:
        """Return the plaintext of frame ``index`` from its whole record."""
        view = memoryview(record)
        if len(view) < MIN_RECORD_SIZE:
            raise self._broken(index, f"record of {len(view)} bytes is shorter than {MIN_RECORD_SIZE}")
        codec = view[0]
        if codec > CODEC_ZSTD:
            raise self._broken(index, f"unknown codec {codec}")
        nonce, aad = self._nonce_and_aad(index, last, codec)
        try:
            body = self._aead.decrypt(nonce, view[1:], aad)
        except InvalidTag:
            raise self._broken(
                index, "authentication failed (tampered, misplaced or truncated frame, or wrong key)"
            ) from None
        if codec == CODEC_ZSTD:
            body = self._decompress(index, body)
        if not self._fits(index, len(body), last):
            raise self._broken(index, f"frame holds {len(body)} bytes, which is wrong for its place")
        return body

    def _decompress(self, index: int, body: bytes) -> bytes:
        # zstd trusts the content size in the frame header over max_output_size,
        # so the header is checked first: nothing over a frame is ever inflated.
        try:
            declared = zstandard.frame_content_size(body)
        except zstandard.ZstdError as exc:
            raise self._broken(index, f"bad zstd frame header: {exc}") from None
        if declared < 0:
            raise self._broken(index, "zstd frame does not declare its size")
        if declared > self.frame_size:
            raise self._broken(index, f"zstd frame declares {declared} bytes, over the frame size")
        try:
            return _zstd.decompressor.decompress(body, max_output_size=self.frame_size, allow_extra_data=False)
        except zstandard.ZstdError as exc:
            raise self._broken(index, f"decompression failed: {exc}") from None

    def _broken(self, index: int, reason: str) -> IntegrityError:
        return IntegrityError(f"{self.identity.describe()} frame {index}", reason)


_HEADER_MAGIC = b"DWKH"
# kek_version u32, nonce prefix, frame_size u32, plaintext_length u64, md5
_HEADER_FIXED = struct.Struct(">I8sIQ16s")
_SHORT_LENGTH = struct.Struct(">H")
_READS = " and ".join(map(str, _FORMAT_VERSIONS))


@dataclass(frozen=True, repr=False)
class KeyHeader:
    """How to find and check an object's keys; stored with the catalog row.

    Encoded as ``b"DWKH" || format_version (u8) || lp16(kek_id UTF-8) ||
    kek_version (u32) || nonce_prefix (8) || frame_size (u32) ||
    plaintext_length (u64) || content_md5 (16) || lp16(wrapped_dek)``,
    then in version 2 only ``|| dek_salt (16)``; big-endian, ``lp16`` being
    a u16 length prefix. In version 1 ``wrapped_dek`` is the wrapped DEK and
    ``dek_salt`` is empty; in version 2 it is the wrapped bucket key the DEK
    is derived from with ``dek_salt``. A header encodes in its own version,
    so a version 1 header decodes and re-encodes byte for byte.
    """

    format_version: int
    kek_id: str
    kek_version: int
    wrapped_dek: bytes
    nonce_prefix: bytes
    frame_size: int
    plaintext_length: int
    content_md5: bytes
    dek_salt: bytes = b""

    def __post_init__(self) -> None:
        problem = self._problem()
        if problem:
            raise InvalidArgument(f"invalid key header: {problem}")

    def _problem(self) -> str | None:
        if self.format_version not in _FORMAT_VERSIONS:
            return f"unsupported format version {self.format_version} (this dwray reads {_READS})"
        if not self.kek_id or len(self.kek_id.encode("utf-8")) > 0xFFFF:
            return "kek_id must be 1..65535 bytes of UTF-8"
        if not 0 < self.kek_version < 1 << 32:
            return f"kek_version must be 1..{(1 << 32) - 1}, not {self.kek_version}"
        if not 0 < len(self.wrapped_dek) <= 0xFFFF:
            return f"wrapped DEK must be 1..65535 bytes, not {len(self.wrapped_dek)}"
        if len(self.nonce_prefix) != NONCE_PREFIX_SIZE:
            return f"nonce prefix must be {NONCE_PREFIX_SIZE} bytes, not {len(self.nonce_prefix)}"
        if not 0 < self.frame_size <= MAX_FRAME_SIZE:
            return f"frame size must be 1..{MAX_FRAME_SIZE}, not {self.frame_size}"
        if not 0 <= self.plaintext_length <= MAX_FRAMES * self.frame_size:
            return f"plaintext length {self.plaintext_length} needs more than {MAX_FRAMES} frames or is negative"
        if len(self.content_md5) != 16:
            return f"content MD5 must be 16 bytes, not {len(self.content_md5)}"
        salt_size = DEK_SALT_SIZE if self.format_version == FORMAT_DERIVED_DEK else 0
        if len(self.dek_salt) != salt_size:
            return (f"a version {self.format_version} header needs a DEK salt of {salt_size} bytes, "
                    f"not {len(self.dek_salt)}")
        return None

    @property
    def frame_count(self) -> int:
        """Number of frames of the object."""
        return frame_count(self.plaintext_length, self.frame_size)

    def with_wrapped(self, kek_version: int, wrapped_dek: bytes) -> KeyHeader:
        """A copy with the DEK (version 1) or bucket key (version 2) wrapped anew, after a KEK rotation."""
        return dataclasses.replace(self, kek_version=kek_version, wrapped_dek=wrapped_dek)

    def to_bytes(self) -> bytes:
        """The compact, versioned binary encoding, in this header's own version."""
        kek_id = self.kek_id.encode("utf-8")
        return b"".join((
            _HEADER_MAGIC,
            bytes((self.format_version,)),
            _SHORT_LENGTH.pack(len(kek_id)),
            kek_id,
            _HEADER_FIXED.pack(
                self.kek_version, self.nonce_prefix, self.frame_size, self.plaintext_length, self.content_md5
            ),
            _SHORT_LENGTH.pack(len(self.wrapped_dek)),
            self.wrapped_dek,
            self.dek_salt,
        ))

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> KeyHeader:
        """Decode ``to_bytes`` output of either version; anything else raises ``IntegrityError``."""
        data = bytes(data)

        def broken(reason: str) -> IntegrityError:
            return IntegrityError("key header", reason)

        if data[:4] != _HEADER_MAGIC:
            raise broken("does not start with the DWKH magic")
        if len(data) < 5:
            raise broken("ends before the format version")
        version = data[4]
        if version not in _FORMAT_VERSIONS:
            raise broken(f"unsupported format version {version} (this dwray reads {_READS})")
        offset = 5
        try:
            (id_length,) = _SHORT_LENGTH.unpack_from(data, offset)
            offset += _SHORT_LENGTH.size
            kek_id = data[offset : offset + id_length].decode("utf-8")
            if len(kek_id.encode("utf-8")) != id_length:
                raise broken("truncated kek_id")
            offset += id_length
            kek_version, nonce_prefix, frame_size, plaintext_length, md5 = _HEADER_FIXED.unpack_from(data, offset)
            offset += _HEADER_FIXED.size
            (wrapped_length,) = _SHORT_LENGTH.unpack_from(data, offset)
            offset += _SHORT_LENGTH.size
        except struct.error:
            raise broken("truncated") from None
        except UnicodeDecodeError:
            raise broken("kek_id is not UTF-8") from None
        wrapped = data[offset : offset + wrapped_length]
        if len(wrapped) != wrapped_length:
            raise broken("truncated wrapped DEK")
        offset += wrapped_length
        salt_size = DEK_SALT_SIZE if version == FORMAT_DERIVED_DEK else 0
        salt = data[offset : offset + salt_size]
        if len(salt) != salt_size:
            raise broken(f"truncated DEK salt ({len(salt)} of {salt_size} bytes)")
        offset += salt_size
        if offset != len(data):
            raise broken(f"{len(data) - offset} unexpected trailing bytes")
        try:
            return cls(version, kek_id, kek_version, wrapped, nonce_prefix, frame_size, plaintext_length, md5, salt)
        except InvalidArgument as exc:
            raise broken(str(exc)) from None

    def __repr__(self) -> str:
        salt = f", dek_salt=<{len(self.dek_salt)} bytes>" if self.dek_salt else ""
        return (
            f"KeyHeader(format_version={self.format_version}, kek_id={self.kek_id!r}, "
            f"kek_version={self.kek_version}, wrapped_dek=<{len(self.wrapped_dek)} bytes>, "
            f"frame_size={self.frame_size}, plaintext_length={self.plaintext_length}, "
            f"content_md5={self.content_md5.hex()}{salt})"
        )


class FrameTable:
    """Where each frame record ends in the blob, so a range reads only its frames.

    Encoded as a packed array of little-endian u64 end offsets.
    """

    __slots__ = ("_ends",)

    def __init__(self, ends: Iterable[int] = ()) -> None:
        try:
            self._ends = array("Q", ends)
        except (OverflowError, TypeError) as exc:
            raise InvalidArgument(f"frame table ends must be unsigned 64-bit integers: {exc}") from None
        if len(self._ends) > MAX_FRAMES:
            raise InvalidArgument(f"an object has at most {MAX_FRAMES} frames, not {len(self._ends)}")
        previous = 0
        for index, end in enumerate(self._ends):
            if end - previous < MIN_RECORD_SIZE:
                raise self._too_short(index, end, previous)
            previous = end

    def append(self, record_size: int) -> None:
        """Record the next frame's record size (codec byte + sealed bytes)."""
        previous = self.blob_size
        if record_size < MIN_RECORD_SIZE:
            raise self._too_short(len(self._ends), previous + record_size, previous)
        if len(self._ends) >= MAX_FRAMES:
            raise InvalidArgument(f"an object has at most {MAX_FRAMES} frames")
        self._ends.append(previous + record_size)

    @staticmethod
    def _too_short(index: int, end: int, previous: int) -> InvalidArgument:
        return InvalidArgument(
            f"frame record {index} would end at {end}, less than {MIN_RECORD_SIZE} bytes after {previous}"
        )

    def __len__(self) -> int:
        return len(self._ends)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FrameTable) and self._ends == other._ends

    @property
    def blob_size(self) -> int:
        """Size of the whole blob: where the last record ends."""
        return self._ends[-1] if self._ends else 0

    def record_range(self, index: int) -> tuple[int, int]:
        """Blob offsets ``[start, end)`` of frame ``index``'s record."""
        if not 0 <= index < len(self._ends):
            raise InvalidArgument(f"frame {index} is not in a table of {len(self._ends)} frames")
        return (self._ends[index - 1] if index else 0), self._ends[index]

    def byte_range(self, frames: range) -> tuple[int, int]:
        """Blob offsets ``[start, end)`` covering a non-empty run of frames."""
        if not frames or frames.step != 1:
            raise InvalidArgument(f"{frames} is not a non-empty run of consecutive frames")
        return self.record_range(frames.start)[0], self.record_range(frames.stop - 1)[1]

    def to_bytes(self) -> bytes:
        """The end offsets as packed little-endian u64."""
        ends = array("Q", self._ends)
        if sys.byteorder == "big":
            ends.byteswap()
        return ends.tobytes()

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> FrameTable:
        """Decode ``to_bytes`` output; anything else raises ``IntegrityError``."""
        if not data or len(data) % 8:
            raise IntegrityError("frame table", f"{len(data)} bytes is not a non-empty array of u64")
        ends = array("Q")
        ends.frombytes(data)
        if sys.byteorder == "big":
            ends.byteswap()
        try:
            return cls(ends)
        except InvalidArgument as exc:
            raise IntegrityError("frame table", str(exc)) from None

    def __repr__(self) -> str:
        return f"FrameTable({len(self._ends)} frames, {self.blob_size} bytes)"
