"""Small objects: kept inline in their catalog row, sealed under keys derived from a bucket key.

Run four ways (``wh``: in process on local disk and memory, and through Ray
with stages in actors or in the caller), since the inline path and the data
keys live in the caller's warehouse in every case.
"""
from __future__ import annotations

import hashlib
import sqlite3

import pytest

from dwray.core.catalog import INLINE_BACKEND
from dwray.core.frames import KeyHeader
from dwray.core.warehouse import Warehouse
from dwray.errors import IntegrityError
from tests.conftest import TEST_FRAME_SIZE


@pytest.fixture
def wh(operator_wh: Warehouse) -> Warehouse:
    """These tests read the catalog's rows: the ``wh`` variants without the gateway's tenant client."""
    return operator_wh


def _row(wh: Warehouse, bucket: str, key: str, version_id: str | None = None):  # noqa: ANN202 - an ObjectRecord
    return wh.catalog.get_object(wh.config.default_tenant, bucket, key, version_id)


def _header(wh: Warehouse, bucket: str, key: str) -> KeyHeader:
    return KeyHeader.from_bytes(_row(wh, bucket, key).placement.key_header)


def test_a_small_object_lives_in_its_row_and_a_larger_one_in_a_blob(wh: Warehouse) -> None:
    # The tests' frames are 4 KiB: an object of one frame is inline, one of two frames is not.
    wh.create_bucket("small-objects")
    bodies = {"empty": b"", "one": b"x", "page": bytes(range(256)) * (TEST_FRAME_SIZE // 256),
              "two-frames": b"y" * (TEST_FRAME_SIZE + 1)}
    for key, body in bodies.items():
        info = wh.put("small-objects", key, body)
        assert info.etag == hashlib.md5(body).hexdigest()
    for key in ("empty", "one", "page"):
        placement = _row(wh, "small-objects", key).placement
        assert (placement.backend, placement.blob_id) == (INLINE_BACKEND, "")
        assert placement.inline and bodies[key] not in (placement.inline,)  # sealed, not the plaintext
    blobbed = _row(wh, "small-objects", "two-frames").placement
    assert blobbed.backend != INLINE_BACKEND and blobbed.inline is None
    tenant_prefix = f"{wh.config.default_tenant}/"
    assert [blob for blob in wh.backend.list_blobs(tenant_prefix)] == [blobbed.blob_id]
    for key, body in bodies.items():
        assert wh.get("small-objects", key) == body
        assert wh.head("small-objects", key).size == len(body)
    page = bodies["page"]
    assert wh.get("small-objects", "page", range=(10, 19)) == page[10:20]
    assert wh.get("small-objects", "page", range=(len(page) - 5, None)) == page[-5:]
    with wh.open("small-objects", "page", range=(100, 10_000)) as reader:
        assert reader.readall() == page[100:]


def test_objects_of_a_bucket_share_its_wrapped_key_with_salts_of_their_own(wh: Warehouse) -> None:
    wh.create_bucket("keys-one")
    wh.create_bucket("keys-two")
    for index in range(3):
        wh.put("keys-one", f"k{index}", f"body {index}".encode())
    wh.put("keys-one", "large", b"z" * (3 * TEST_FRAME_SIZE))
    wh.put("keys-two", "k0", b"other bucket")
    headers = [_header(wh, "keys-one", key) for key in ("k0", "k1", "k2", "large")]
    assert {header.format_version for header in headers} == {2}
    # One bucket key (wrapped once by the tenant's KEK) seals the bucket's objects...
    assert len({header.wrapped_dek for header in headers}) == 1
    # ...each object's own DEK derived with its own salt, under its own nonce prefix.
    assert len({header.dek_salt for header in headers}) == 4
    assert len({header.nonce_prefix for header in headers}) == 4
    assert _header(wh, "keys-two", "k0").wrapped_dek != headers[0].wrapped_dek
    assert [wh.get("keys-one", f"k{index}") for index in range(3)] == [b"body 0", b"body 1", b"body 2"]


def test_versions_copies_and_parts_of_small_objects(wh: Warehouse) -> None:
    wh.create_bucket("small-versions")
    wh.set_bucket_versioning("small-versions", "Enabled")
    first = wh.put("small-versions", "k", b"first")
    second = wh.put("small-versions", "k", b"second")
    assert wh.get("small-versions", "k", version_id=first.version_id) == b"first"
    assert wh.get("small-versions", "k") == b"second"
    assert _row(wh, "small-versions", "k", second.version_id).placement.backend == INLINE_BACKEND
    wh.copy("small-versions", "k", "small-versions", "copy", version_id=first.version_id)
    assert wh.get("small-versions", "copy") == b"first"
    assert _row(wh, "small-versions", "copy").placement.backend == INLINE_BACKEND
    # A part is never inline, however small: parts become segments, which have blobs.
    upload = wh.create_multipart_upload("small-versions", "parts").upload_id
    part = wh.upload_part("small-versions", "parts", upload, 1, b"tiny part")
    wh.complete_multipart_upload("small-versions", "parts", upload, [(1, part.etag)])
    assert wh.get("small-versions", "parts") == b"tiny part"
    assert _row(wh, "small-versions", "parts").placement is None
    wh.delete("small-versions", "k", version_id=second.version_id)
    assert wh.get("small-versions", "k") == b"first"


def test_rotation_reaches_new_small_writes_and_rewrap_keeps_them_readable(wh: Warehouse) -> None:
    wh.create_bucket("small-rotation")
    wh.put("small-rotation", "a", b"before rotation")
    wh.put("small-rotation", "b", b"also before")
    assert wh.rotate_keys() == 2
    wh.put("small-rotation", "c", b"after rotation")
    assert _header(wh, "small-rotation", "c").kek_version == 2
    assert wh.rewrap() == 2
    a, b = _header(wh, "small-rotation", "a"), _header(wh, "small-rotation", "b")
    assert (a.kek_version, b.kek_version) == (2, 2)
    # Sealed under one bucket key, they still share its (rewrapped) bytes.
    assert a.wrapped_dek == b.wrapped_dek
    wh.retire_keys(2)
    assert [wh.get("small-rotation", key) for key in "abc"] == [b"before rotation", b"also before",
                                                                   b"after rotation"]


def test_tampered_or_swapped_inline_records_never_open(local_wh: Warehouse) -> None:
    local_wh.create_bucket("bkt")
    local_wh.put("bkt", "a", b"secret a" * 10)
    local_wh.put("bkt", "b", b"secret b" * 10)
    db = sqlite3.connect(local_wh.config.catalog_path)
    try:
        rows = dict(db.execute("SELECT key, inline_data FROM objects WHERE bucket = 'bkt'").fetchall())
        assert b"secret" not in rows["a"] and b"secret" not in rows["b"]
        flipped = bytearray(rows["a"])
        flipped[len(flipped) // 2] ^= 0x01
        with db:
            db.execute("UPDATE objects SET inline_data = ? WHERE key = 'a'", (bytes(flipped),))
            # b's records under a's row: the AAD binds each frame to its own key and version.
            db.execute("UPDATE objects SET inline_data = ? WHERE key = 'b'", (rows["a"],))
    finally:
        db.close()
    for key in ("a", "b"):
        with pytest.raises(IntegrityError):
            local_wh.get("bkt", key)


def test_inline_max_bytes_zero_gives_every_object_a_blob(tmp_path) -> None:  # noqa: ANN001
    from tests.conftest import make_config

    with Warehouse(make_config(tmp_path / "data", inline_max_bytes=0)) as wh:
        wh.create_bucket("no-inline")
        for key, body in (("empty", b""), ("tiny", b"t")):
            wh.put("no-inline", key, body)
            placement = _row(wh, "no-inline", key).placement
            assert placement.backend != INLINE_BACKEND and placement.inline is None
            assert wh.backend.exists(placement.blob_id) and wh.get("no-inline", key) == body
