"""The frame format: round trips, tamper evidence, encodings and secrecy."""
from __future__ import annotations

import base64
import os
import random
import struct
from concurrent.futures import ThreadPoolExecutor

import pytest
import zstandard
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dwray.core.frames import (
    CODEC_RAW,
    CODEC_ZSTD,
    DEK_SALT_SIZE,
    FORMAT_DERIVED_DEK,
    FORMAT_VERSION,
    FORMAT_WRAPPED_DEK,
    FrameOpener,
    FrameSealer,
    FrameTable,
    KeyHeader,
    ObjectIdentity,
    ObjectKeys,
    frame_count,
    frames_for_range,
    new_object_keys,
)
from dwray.errors import IntegrityError, InvalidArgument

IDENTITY = ObjectIdentity("tenant:a", "sales", "2026/11/a.csv", "v0001")
KEYS = new_object_keys()
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
WORDS = [b"select", b"tenant", b"bucket", b"frame", b"alpha", b"beta", b"where", b"from", b"\n"]


def make_data(kind: str, length: int, seed: int) -> bytes:
    rng = random.Random(seed)
    if kind == "random":
        return rng.randbytes(length)
    if kind == "zeros":
        return bytes(length)
    text = b" ".join(rng.choice(WORDS) for _ in range(length // 2 + 1))
    return text[:length]


@st.composite
def objects(draw: st.DrawFn) -> tuple[int, str, bytes]:
    """(frame_size, kind, data): 0..4 whole frames plus a tail, often exactly aligned."""
    frame_size = draw(st.integers(16, 4096))
    tail = draw(st.sampled_from([0, 1, frame_size - 1]) | st.integers(0, frame_size - 1))
    length = draw(st.integers(0, 4)) * frame_size + tail
    kind = draw(st.sampled_from(["random", "text", "zeros"]))
    return frame_size, kind, make_data(kind, length, draw(st.integers(0, 2**32)))


def seal_all(
    data: bytes, frame_size: int, identity: ObjectIdentity = IDENTITY, keys: ObjectKeys = KEYS
) -> list[bytes]:
    sealer = FrameSealer(identity, keys.dek, keys.nonce_prefix, frame_size=frame_size)
    count = frame_count(len(data), frame_size)
    view = memoryview(data)
    records = []
    for index in range(count):
        codec, sealed = sealer.seal(index, view[index * frame_size : (index + 1) * frame_size], index == count - 1)
        records.append(codec + sealed)
    return records


def opener(frame_size: int, identity: ObjectIdentity = IDENTITY, keys: ObjectKeys = KEYS) -> FrameOpener:
    return FrameOpener(identity, keys.dek, keys.nonce_prefix, frame_size=frame_size)


def open_all(records: list[bytes], frame_size: int, **kwargs: object) -> bytes:
    reader = opener(frame_size, **kwargs)  # type: ignore[arg-type]
    return b"".join(reader.open(i, record, i == len(records) - 1) for i, record in enumerate(records))


def documented_aad(identity: ObjectIdentity, index: int, last: bool, codec: int) -> bytes:
    """The AAD exactly as the module docstring specifies it."""
    fields = (identity.tenant, identity.bucket, identity.key, identity.version_id)
    parts = [b"dwray-frame-v1"] + [field.encode() for field in fields]
    return b"".join(struct.pack(">I", len(p)) + p for p in parts) + struct.pack(">QBB", index, last, codec)


def forge(index: int, body: bytes, last: bool, codec: int, keys: ObjectKeys = KEYS) -> bytes:
    """An authentic record with any body: what only a DEK holder could write."""
    nonce = keys.nonce_prefix + index.to_bytes(4, "big")
    return bytes([codec]) + AESGCM(keys.dek).encrypt(nonce, body, documented_aad(IDENTITY, index, last, codec))


# Round trips ----------------------------------------------------------------


@FAST
@given(objects(), st.data())
def test_round_trip_and_ranges(obj: tuple[int, str, bytes], data: st.DataObject) -> None:
    frame_size, _, plaintext = obj
    records = seal_all(plaintext, frame_size)
    assert len(records) == frame_count(len(plaintext), frame_size)
    assert open_all(records, frame_size) == plaintext

    blob = b"".join(records)
    table = FrameTable()
    for record in records:
        table.append(len(record))
    assert table.blob_size == len(blob)
    start = data.draw(st.integers(0, len(plaintext)), label="start")
    end = data.draw(st.integers(start, len(plaintext)), label="end")
    frames = frames_for_range(start, end, frame_size)
    if start == end:
        assert len(frames) == 0
        return
    lo, hi = table.byte_range(frames)
    reader = opener(frame_size)
    pieces = []
    for index in frames:
        record_start, record_end = table.record_range(index)
        record = memoryview(blob)[record_start:record_end]
        pieces.append(reader.open(index, record, index == len(records) - 1))
    first_offset = frames.start * frame_size
    assert b"".join(pieces)[start - first_offset : end - first_offset] == plaintext[start:end]
    assert (lo, hi) == (table.record_range(frames.start)[0], table.record_range(frames[-1])[1])


@FAST
@given(objects())
def test_codec_choice(obj: tuple[int, str, bytes]) -> None:
    frame_size, kind, plaintext = obj
    records = seal_all(plaintext, frame_size)
    for index, record in enumerate(records):
        frame_length = len(plaintext[index * frame_size : (index + 1) * frame_size])
        if kind == "random" or frame_length == 0:
            assert record[0] == CODEC_RAW
            assert len(record) == 1 + frame_length + 16
        elif (kind == "zeros" and frame_length >= 18) or (kind == "text" and frame_length >= 256):
            assert record[0] == CODEC_ZSTD
            assert len(record) < 1 + frame_length + 16


def test_empty_object_is_one_empty_raw_frame() -> None:
    records = seal_all(b"", 1024)
    assert len(records) == 1
    assert records[0][0] == CODEC_RAW and len(records[0]) == 17
    assert opener(1024).open(0, records[0], True) == b""


def test_level_is_used() -> None:
    data = make_data("text", 64 * 1024, 7)
    fast = FrameSealer(IDENTITY, KEYS.dek, KEYS.nonce_prefix, frame_size=len(data), level=1)
    strong = FrameSealer(IDENTITY, KEYS.dek, KEYS.nonce_prefix, frame_size=len(data), level=19)
    assert len(strong.seal(0, data, True)[1]) < len(fast.seal(0, data, True)[1])


def test_record_layout_matches_documented_format() -> None:
    data = make_data("text", 3000, 3)
    records = seal_all(data, 1024)
    aead = AESGCM(KEYS.dek)
    out = b""
    for index, record in enumerate(records):
        nonce = KEYS.nonce_prefix + index.to_bytes(4, "big")
        body = aead.decrypt(nonce, record[1:], documented_aad(IDENTITY, index, index == 2, record[0]))
        out += zstandard.ZstdDecompressor().decompress(body) if record[0] == CODEC_ZSTD else body
    assert out == data


def test_concurrent_sealing_and_opening_from_threads() -> None:
    frame_size = 64 * 1024
    data = make_data("text", 48 * frame_size + 100, 11) + os.urandom(3 * frame_size)
    count = frame_count(len(data), frame_size)
    sealer = FrameSealer(IDENTITY, KEYS.dek, KEYS.nonce_prefix, frame_size=frame_size)
    reader = opener(frame_size)
    view = memoryview(data)

    def seal(i: int) -> bytes:
        return b"".join(sealer.seal(i, view[i * frame_size : (i + 1) * frame_size], i == count - 1))

    with ThreadPoolExecutor(4) as pool:
        records = list(pool.map(seal, range(count)))
        opened = list(pool.map(lambda i: reader.open(i, records[i], i == count - 1), range(count)))
    assert b"".join(opened) == data
    assert {r[0] for r in records} == {CODEC_RAW, CODEC_ZSTD}


# Tamper evidence ------------------------------------------------------------


def multi_frame(kind: str = "text") -> tuple[int, bytes, list[bytes]]:
    frame_size = 256
    data = make_data(kind, 4 * frame_size + 77, 5)
    return frame_size, data, seal_all(data, frame_size)


@FAST
@given(st.sampled_from(["text", "random"]), st.data())
def test_any_flipped_bit_is_detected(kind: str, data: st.DataObject) -> None:
    frame_size, _, records = multi_frame(kind)
    index = data.draw(st.integers(0, len(records) - 1), label="frame")
    bit = data.draw(st.integers(0, len(records[index]) * 8 - 1), label="bit")
    damaged = bytearray(records[index])
    damaged[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(IntegrityError, match=f"frame {index}"):
        opener(frame_size).open(index, damaged, index == len(records) - 1)


@FAST
@given(st.data())
def test_frames_out_of_place_are_detected(data: st.DataObject) -> None:
    frame_size, _, records = multi_frame()
    last = len(records) - 1
    source = data.draw(st.integers(0, last), label="source")
    target = data.draw(st.integers(0, last).filter(lambda t: t != source), label="target")
    # A swapped, reordered, duplicated or shifted-by-a-drop frame: record
    # `source` read where frame `target` belongs.
    with pytest.raises(IntegrityError):
        opener(frame_size).open(target, records[source], target == last)


def test_dropped_and_duplicated_frames_fail_the_object() -> None:
    frame_size, _, records = multi_frame()
    for broken in (
        records[:1] + records[2:],  # a middle frame dropped
        records[:2] + records[1:],  # a frame duplicated
        records[:-1],  # the last frame dropped (truncation)
        records[::-1],  # reversed
    ):
        with pytest.raises(IntegrityError):
            open_all(broken, frame_size)


@pytest.mark.parametrize("index", [0, 1, 3])
def test_non_last_frame_treated_as_last_is_detected(index: int) -> None:
    frame_size, _, records = multi_frame()
    with pytest.raises(IntegrityError, match=f"frame {index}"):
        opener(frame_size).open(index, records[index], True)


def test_last_frame_treated_as_not_last_is_detected() -> None:
    frame_size, _, records = multi_frame()
    with pytest.raises(IntegrityError):
        opener(frame_size).open(len(records) - 1, records[-1], False)


@pytest.mark.parametrize(
    "other",
    [
        ObjectIdentity("tenant:b", "sales", "2026/11/a.csv", "v0001"),
        ObjectIdentity("tenant:a", "sales2", "2026/11/a.csv", "v0001"),
        ObjectIdentity("tenant:a", "sales", "2026/11/b.csv", "v0001"),
        ObjectIdentity("tenant:a", "sales", "2026/11/a.csv", "v0002"),
        # Length prefixes keep field boundaries: "sales"+"2026..." != "sales2"+"026...".
        ObjectIdentity("tenant:a", "sales2", "026/11/a.csv", "v0001"),
    ],
)
def test_frame_moved_to_another_object_is_detected(other: ObjectIdentity) -> None:
    frame_size, _, records = multi_frame()
    for index, record in enumerate(records):
        with pytest.raises(IntegrityError):
            opener(frame_size, identity=other).open(index, record, index == len(records) - 1)


def test_wrong_dek_or_nonce_prefix_is_detected() -> None:
    frame_size, _, records = multi_frame()
    other = new_object_keys()
    for keys in (other, ObjectKeys(KEYS.dek, other.nonce_prefix), ObjectKeys(other.dek, KEYS.nonce_prefix)):
        with pytest.raises(IntegrityError, match="authentication failed"):
            opener(frame_size, keys=keys).open(0, records[0], False)


def test_short_and_empty_records_are_rejected() -> None:
    frame_size, _, records = multi_frame()
    for record in (b"", records[0][:16], records[0][:-1]):
        with pytest.raises(IntegrityError, match="frame 0"):
            opener(frame_size).open(0, record, False)


def test_unknown_codec_is_rejected_even_when_authentic() -> None:
    with pytest.raises(IntegrityError, match="unknown codec 2"):
        opener(64).open(0, forge(0, bytes(64), True, codec=2), True)


@pytest.mark.parametrize(
    ("index", "length", "last"),
    [(0, 63, False), (0, 65, True), (2, 0, True), (1, 10, False), (0, 65, False)],
)
def test_authentic_frame_of_wrong_length_is_rejected(index: int, length: int, last: bool) -> None:
    for codec, body in (
        (CODEC_RAW, bytes(length)),
        (CODEC_ZSTD, zstandard.ZstdCompressor().compress(bytes(length))),
    ):
        with pytest.raises(IntegrityError, match="wrong for its place|over the frame size"):
            opener(64).open(index, forge(index, body, last, codec), last)


def test_zstd_bomb_is_never_inflated() -> None:
    bomb = zstandard.ZstdCompressor().compress(bytes(64 << 20))
    with pytest.raises(IntegrityError, match="over the frame size"):
        opener(1 << 20).open(0, forge(0, bomb, True, CODEC_ZSTD), True)
    no_size = zstandard.ZstdCompressor(write_content_size=False).compress(bytes(64 << 20))
    with pytest.raises(IntegrityError, match="does not declare its size"):
        opener(1 << 20).open(0, forge(0, no_size, True, CODEC_ZSTD), True)


def test_authentic_garbage_zstd_body_is_rejected() -> None:
    with pytest.raises(IntegrityError, match="zstd"):
        opener(64).open(0, forge(0, b"not a zstd frame", True, CODEC_ZSTD), True)
    valid = zstandard.ZstdCompressor().compress(bytes(64))
    with pytest.raises(IntegrityError, match="decompression failed"):
        opener(64).open(0, forge(0, valid + b"extra", True, CODEC_ZSTD), True)


# Caller errors ---------------------------------------------------------------


def test_sealer_refuses_misplaced_frame_sizes_and_indexes() -> None:
    sealer = FrameSealer(IDENTITY, KEYS.dek, KEYS.nonce_prefix, frame_size=64)
    for index, size, last in [(0, 63, False), (0, 65, True), (1, 0, True), (0, 0, False)]:
        with pytest.raises(InvalidArgument):
            sealer.seal(index, bytes(size), last)
    for index in (-1, 2**32):
        with pytest.raises(InvalidArgument, match="frame index"):
            sealer.seal(index, bytes(64), False)
    assert sealer.seal(2**32 - 1, bytes(64), True)[0] == b"\x01"
    with pytest.raises(InvalidArgument, match="frame index"):
        opener(64).open(2**32, b"\x00" * 40, True)


def test_bad_keys_and_frame_sizes_are_refused() -> None:
    with pytest.raises(InvalidArgument, match="DEK must be 32 bytes"):
        FrameSealer(IDENTITY, KEYS.dek[:16], KEYS.nonce_prefix)
    with pytest.raises(InvalidArgument, match="nonce prefix"):
        FrameOpener(IDENTITY, KEYS.dek, KEYS.nonce_prefix + b"x")
    for frame_size in (0, -1, (64 << 20) + 1):
        with pytest.raises(InvalidArgument, match="frame size"):
            FrameSealer(IDENTITY, KEYS.dek, KEYS.nonce_prefix, frame_size=frame_size)
    with pytest.raises(InvalidArgument, match="tenant"):
        ObjectIdentity(None, "b", "k", "v")  # type: ignore[arg-type]


def test_new_object_keys_are_fresh() -> None:
    a, b = new_object_keys(), new_object_keys()
    assert len(a.dek) == 32 and len(a.nonce_prefix) == 8
    assert a.dek != b.dek and a.nonce_prefix != b.nonce_prefix


# Frame arithmetic -------------------------------------------------------------


@given(st.integers(0, 10_000), st.integers(1, 700))
def test_frame_count(length: int, frame_size: int) -> None:
    assert frame_count(length, frame_size) == max(1, len({i // frame_size for i in range(length)}))


@given(st.integers(0, 3000), st.integers(0, 3000), st.integers(1, 300))
def test_frames_for_range_covers_exactly_the_needed_frames(a: int, b: int, frame_size: int) -> None:
    start, end = min(a, b), max(a, b)
    assert list(frames_for_range(start, end, frame_size)) == sorted({i // frame_size for i in range(start, end)})


def test_frame_arithmetic_refuses_bad_input() -> None:
    with pytest.raises(InvalidArgument):
        frames_for_range(5, 4, 16)
    with pytest.raises(InvalidArgument):
        frames_for_range(-1, 4, 16)
    with pytest.raises(InvalidArgument):
        frame_count(-1, 16)
    with pytest.raises(InvalidArgument):
        frame_count(10, 0)


# KeyHeader ---------------------------------------------------------------------


def header_strategy(version: int, salt_size: int) -> st.SearchStrategy[KeyHeader]:
    return st.builds(
        KeyHeader,
        format_version=st.just(version),
        kek_id=st.text(min_size=1, max_size=40),
        kek_version=st.integers(1, 2**32 - 1),
        wrapped_dek=st.binary(min_size=1, max_size=80),
        nonce_prefix=st.binary(min_size=8, max_size=8),
        frame_size=st.integers(1, 64 << 20),
        plaintext_length=st.integers(0, 2**32),
        content_md5=st.binary(min_size=16, max_size=16),
        dek_salt=st.binary(min_size=salt_size, max_size=salt_size),
    )


headers = st.one_of(header_strategy(FORMAT_WRAPPED_DEK, 0), header_strategy(FORMAT_DERIVED_DEK, DEK_SALT_SIZE))


def test_new_objects_get_format_version_2() -> None:
    assert FORMAT_VERSION == FORMAT_DERIVED_DEK == 2 and FORMAT_WRAPPED_DEK == 1 and DEK_SALT_SIZE == 16


@FAST
@given(headers)
def test_key_header_round_trip(header: KeyHeader) -> None:
    encoded = header.to_bytes()
    assert encoded[:5] == b"DWKH" + bytes((header.format_version,))
    assert encoded.endswith(header.wrapped_dek + header.dek_salt)
    assert KeyHeader.from_bytes(encoded) == header
    assert KeyHeader.from_bytes(memoryview(encoded)) == header


def spelled_out_header(version: int, wrapped: bytes, salt: bytes) -> bytes:
    """A header encoded by hand, field by field as the KeyHeader docstring spells it out."""
    return (b"DWKH" + bytes((version,)) + struct.pack(">H", 8) + b"tenant:a" + struct.pack(">I", 3) + b"NONCE-8B"
            + struct.pack(">I", 1 << 20) + struct.pack(">Q", 5 << 20) + bytes(range(16))
            + struct.pack(">H", len(wrapped)) + wrapped + salt)


def test_version_1_headers_still_decode_and_re_encode_byte_for_byte() -> None:
    encoded = spelled_out_header(1, b"W" * 40, b"")
    header = KeyHeader.from_bytes(encoded)
    assert (header.format_version, header.kek_id, header.kek_version, header.wrapped_dek, header.dek_salt) == (
        1, "tenant:a", 3, b"W" * 40, b"")
    assert (header.nonce_prefix, header.frame_size, header.plaintext_length) == (b"NONCE-8B", 1 << 20, 5 << 20)
    assert header.to_bytes() == encoded
    rewrapped = header.with_wrapped(4, b"V" * 40)
    assert rewrapped.format_version == 1 and rewrapped.to_bytes()[:5] == b"DWKH\x01"
    assert KeyHeader.from_bytes(rewrapped.to_bytes()) == rewrapped


def test_version_2_headers_carry_the_dek_salt_last() -> None:
    salt = bytes(range(100, 116))
    encoded = spelled_out_header(2, b"B" * 40, salt)
    header = KeyHeader.from_bytes(encoded)
    assert (header.format_version, header.wrapped_dek, header.dek_salt) == (2, b"B" * 40, salt)
    assert header.to_bytes() == encoded
    rewrapped = header.with_wrapped(9, b"C" * 40)
    assert (rewrapped.format_version, rewrapped.kek_version, rewrapped.dek_salt) == (2, 9, salt)
    assert KeyHeader.from_bytes(rewrapped.to_bytes()) == rewrapped
    # A version byte that does not match the layout fails: v1 bytes read as v2 lack the salt, and back.
    with pytest.raises(IntegrityError, match="truncated DEK salt"):
        KeyHeader.from_bytes(spelled_out_header(2, b"B" * 40, b""))
    with pytest.raises(IntegrityError, match="16 unexpected trailing bytes"):
        KeyHeader.from_bytes(spelled_out_header(1, b"B" * 40, salt))


@FAST
@given(headers, st.data())
def test_key_header_rejects_truncation_and_trailing_bytes(header: KeyHeader, data: st.DataObject) -> None:
    encoded = header.to_bytes()
    cut = data.draw(st.integers(0, len(encoded) - 1), label="cut")
    with pytest.raises(IntegrityError, match="key header"):
        KeyHeader.from_bytes(encoded[:cut])
    with pytest.raises(IntegrityError, match="trailing"):
        KeyHeader.from_bytes(encoded + data.draw(st.binary(min_size=1, max_size=8), label="extra"))


def sample_header(**changes: object) -> KeyHeader:
    fields = dict(
        format_version=1, kek_id="tenant:a", kek_version=3, wrapped_dek=os.urandom(60),
        nonce_prefix=KEYS.nonce_prefix, frame_size=1 << 20, plaintext_length=5 << 20, content_md5=bytes(range(16)),
    )
    fields.update(changes)
    return KeyHeader(**fields)  # type: ignore[arg-type]


def test_key_header_rejects_malformed_input() -> None:
    good = sample_header().to_bytes()
    version_at = 5 + 2 + len("tenant:a")
    frame_size_at = version_at + 4 + 8
    cases = {
        "magic": b"XXKH" + good[4:],
        "unsupported format version 3 \\(this dwray reads 1 and 2\\)": good[:4] + b"\x03" + good[5:],
        "unsupported format version 0": good[:4] + b"\x00" + good[5:],
        "UTF-8": good[:5] + b"\x00\x02\xff\xfe" + good[5 + 2 + len("tenant:a") :],
        "frame size": good[:frame_size_at] + bytes(4) + good[frame_size_at + 4 :],
        "kek_version": good[:version_at] + bytes(4) + good[version_at + 4 :],
    }
    for reason, encoded in cases.items():
        with pytest.raises(IntegrityError, match=reason):
            KeyHeader.from_bytes(encoded)


def test_key_header_refuses_invalid_fields() -> None:
    for changes in (
        {"format_version": 3}, {"format_version": 0}, {"format_version": 2}, {"format_version": 2, "dek_salt": b"s"},
        {"dek_salt": bytes(16)}, {"kek_id": ""}, {"kek_version": 0}, {"wrapped_dek": b""},
        {"nonce_prefix": b"1234567"}, {"frame_size": 0}, {"plaintext_length": -1}, {"content_md5": b"x"},
        {"frame_size": 16, "plaintext_length": 16 * 2**32 + 1},
    ):
        with pytest.raises(InvalidArgument, match="invalid key header"):
            sample_header(**changes)
    with pytest.raises(InvalidArgument, match="version 2 header needs a DEK salt of 16 bytes, not 0"):
        sample_header(format_version=2)
    with pytest.raises(InvalidArgument, match="version 1 header needs a DEK salt of 0 bytes, not 16"):
        sample_header(dek_salt=bytes(16))


def test_key_header_with_wrapped_is_a_copy() -> None:
    header = sample_header()
    rewrapped = header.with_wrapped(4, b"new-wrapped")
    assert (rewrapped.kek_version, rewrapped.wrapped_dek) == (4, b"new-wrapped")
    assert header.kek_version == 3 and header.wrapped_dek != b"new-wrapped"
    assert rewrapped.content_md5 == header.content_md5 and rewrapped.plaintext_length == header.plaintext_length
    assert header.frame_count == 5


# FrameTable ---------------------------------------------------------------------


@given(st.lists(st.integers(17, 2**20), min_size=1, max_size=50))
def test_frame_table_round_trip(sizes: list[int]) -> None:
    table = FrameTable()
    for size in sizes:
        table.append(size)
    encoded = table.to_bytes()
    assert len(encoded) == 8 * len(sizes)
    decoded = FrameTable.from_bytes(encoded)
    assert decoded == table and len(decoded) == len(sizes)
    offset = 0
    for index, size in enumerate(sizes):
        assert decoded.record_range(index) == (offset, offset + size)
        offset += size
    assert decoded.blob_size == offset == decoded.byte_range(range(len(sizes)))[1]


def test_frame_table_rejects_malformed_input() -> None:
    for encoded in (
        b"",
        b"\x00" * 7,
        struct.pack("<2Q", 100, 50),  # ends go backwards
        struct.pack("<2Q", 100, 110),  # a record shorter than codec byte + tag
        struct.pack("<Q", 3),
    ):
        with pytest.raises(IntegrityError, match="frame table"):
            FrameTable.from_bytes(encoded)
    for ends in ([-1], [20, 30], [16], ["x"]):
        with pytest.raises(InvalidArgument):
            FrameTable(ends)  # type: ignore[arg-type]
    table = FrameTable([20, 40])
    with pytest.raises(InvalidArgument):
        table.append(16)
    assert len(table) == 2 and table.record_range(1) == (20, 40)
    for index in (-1, 2):
        with pytest.raises(InvalidArgument):
            table.record_range(index)
    with pytest.raises(InvalidArgument):
        table.byte_range(range(0))


# Secrets stay secret ------------------------------------------------------------


def secret_forms(secret: bytes) -> list[str]:
    return [secret.hex(), repr(secret), base64.b64encode(secret).decode(), str(list(secret))]


def test_no_key_material_in_reprs_or_errors() -> None:
    header = sample_header()
    derived = sample_header(format_version=2, dek_salt=os.urandom(16))
    frame_size, _, records = multi_frame()
    reader = opener(frame_size)
    texts = [repr(header), str(header), repr(derived), repr(KEYS), str(KEYS), repr(reader)]
    texts.append(repr(FrameSealer(IDENTITY, KEYS.dek, KEYS.nonce_prefix)))
    with pytest.raises(IntegrityError) as caught:
        reader.open(0, records[1], False)
    texts += [str(caught.value), repr(caught.value)]
    assert "wrapped_dek=<60 bytes>" in repr(header)
    assert "dek_salt=<16 bytes>" in repr(derived) and "dek_salt" not in repr(header)
    for text in texts:
        for secret in (KEYS.dek, header.wrapped_dek, derived.wrapped_dek):
            for form in secret_forms(secret):
                assert form not in text
