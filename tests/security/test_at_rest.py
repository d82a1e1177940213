"""No plaintext at rest, private key files, and key material never shown.

Object *data* is sealed before it reaches any file: a random canary put inside
objects (small, multi-frame, compressible, incompressible, spanning frame
boundaries) must never be found in any file under the data dir (blobs, temp
files of a put in progress, the SQLite db and its -wal/-shm, the keyring) in
any common encoding, after puts, overwrites, copies, deletes and a failed put,
before any sweep. Keys and user metadata are catalog metadata, stored in clear
by design, so the canary is only ever in object data.

Key material: the keyring file is 0600 in a 0700 folder and the data dir is not
world-accessible, even under umask 0; KEKs (taken from the keyring object), the
master key and DEKs (unwrapped from the catalog's key headers) never appear in
any repr or error message, DEKs never appear in any file, and KEKs appear in
no file either: the keyring holds them only sealed under the master key.
"""
from __future__ import annotations

import base64
import json
import os
import pickle
import secrets
import stat
import traceback
from collections.abc import Iterator
from pathlib import Path

import pytest

from dwray.core.catalog import ObjectRecord
from dwray.core.frames import (
    FrameOpener,
    FrameSealer,
    KeyHeader,
    ObjectIdentity,
    new_object_keys,
)
from dwray.core.keyring import LocalKeyring
from dwray.core.master_key import load_master_key
from dwray.core.warehouse import Warehouse
from dwray.errors import (
    DwrayError,
    IntegrityError,
    KeyNotFound,
    KeyRetired,
    KeyringError,
)
from tests.conftest import TEST_FRAME_SIZE, make_config

BUCKET = "secret-bucket"
VERSIONED = "secret-versions"
KEK_ID = "tenant:default"


# Encodings -----------------------------------------------------------------

def byte_forms(secret: bytes) -> dict[str, bytes]:
    """Ways ``secret`` could show up in a file: raw, UTF-16, hex, and base64 at every alignment."""
    forms = {"raw": secret, "utf-16-le": secret.decode("latin-1").encode("utf-16-le"),
             "utf-16-be": secret.decode("latin-1").encode("utf-16-be"),
             "hex": secret.hex().encode(), "HEX": secret.hex().upper().encode()}
    for shift in range(3):
        # Whatever the offset of ``secret`` in a base64-encoded stream, one of
        # these three encodes whole 3-byte groups of it and so appears verbatim.
        part = secret[shift:]
        part = part[:len(part) - len(part) % 3]
        forms[f"base64+{shift}"] = base64.b64encode(part)
        forms[f"urlsafe-base64+{shift}"] = base64.urlsafe_b64encode(part)
    return forms


def text_forms(secret: bytes) -> dict[str, str]:
    """Ways ``secret`` could show up in a repr or message."""
    forms = {name: value.decode("latin-1") for name, value in byte_forms(secret).items()
             if not name.startswith("utf-16")}
    forms["bytes-repr"] = repr(secret)[2:-1]
    forms["hex-prefix"] = secret[:12].hex()
    forms["base64-prefix"] = base64.b64encode(secret[:12]).decode()
    return forms


def files_under(root: Path) -> list[Path]:
    return sorted(Path(folder) / name for folder, _, names in os.walk(root) for name in names)


def find_in_files(root: Path, secret: bytes, *, skip: tuple[Path, ...] = ()) -> list[str]:
    """``"<file>: <form>"`` for every form of ``secret`` found in a file under ``root``."""
    hits = []
    forms = byte_forms(secret)
    for path in files_under(root):
        if path in skip:
            continue
        data = path.read_bytes()
        hits += [f"{path.relative_to(root)}: {name}" for name, form in forms.items() if form in data]
    return hits


def find_in_text(text: str, secret: bytes) -> list[str]:
    return [name for name, form in text_forms(secret).items() if form in text]


def test_the_scanners_find_every_form(tmp_path: Path) -> None:
    """Positive control: each encoding of a secret, at any offset, is found."""
    secret = secrets.token_hex(16).encode()
    encoded = {
        "raw": b"..." + secret + b"...",
        "utf-16-le": ("x" + secret.decode() + "y").encode("utf-16-le"),
        "utf-16-be": ("x" + secret.decode() + "y").encode("utf-16-be"),
        "hex": b"(" + secret.hex().encode() + b")",
        **{f"base64 at {n}": base64.b64encode(b"z" * n + secret + b"!") for n in range(3)},
        **{f"urlsafe at {n}": base64.urlsafe_b64encode(b"z" * n + secret) for n in range(3)},
    }
    for name, data in encoded.items():
        (tmp_path / "probe").write_bytes(data)
        assert find_in_files(tmp_path, secret), f"{name} form not detected"
    (tmp_path / "probe").write_bytes(os.urandom(4096))
    assert find_in_files(tmp_path, secret) == []
    key = os.urandom(32)
    for text in (repr(key), key.hex(), base64.b64encode(key).decode(), f"dek={key!r}"):
        assert find_in_text(text, key), text
    assert find_in_text(repr(os.urandom(32)), key) == []


# Fixtures ------------------------------------------------------------------

@pytest.fixture
def permissive_umask() -> Iterator[None]:
    """umask 0: whatever is private must be made private by dwray, not by the umask."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def canary_objects(canary: bytes) -> dict[str, bytes]:
    """Objects that carry the canary in every shape the pipeline treats differently."""
    frame = TEST_FRAME_SIZE
    noise = bytearray(os.urandom(6 * frame))
    for offset in (0, frame - 10, 3 * frame - 17, len(noise) - len(canary)):  # two straddle frame boundaries
        noise[offset:offset + len(canary)] = canary
    return {
        "small": b"tiny object: " + canary,
        "only-canary": canary,
        "compressible": (b"line of text carrying " + canary + b"\n") * 900,  # ~58 KiB, ~14 frames
        "incompressible": bytes(noise),
        "utf16-text": ("the canary as UTF-16 text: " + canary.decode() + " ") .encode("utf-16-le") * 50,
        "base64-text": base64.b64encode(b"wrapped " + canary + b" in base64") * 10,
        "exactly-one-frame": (canary * (frame // len(canary) + 1))[:frame],
    }


# Plaintext at rest ----------------------------------------------------------

def test_no_object_data_at_rest(tmp_path: Path, permissive_umask: None) -> None:
    canary = secrets.token_hex(16).encode()
    data_dir = tmp_path / "data"
    objects = canary_objects(canary)
    with Warehouse(make_config(data_dir)) as wh:
        wh.create_bucket(BUCKET)
        wh.create_bucket(VERSIONED, versioning=True)
        for key, data in objects.items():
            wh.put(BUCKET, key, data, metadata={"purpose": "canary test"})
        # Overwrites (the old blobs stay until a sweep), copies, deletes.
        wh.put(BUCKET, "small", b"overwritten, still secret: " + canary)
        wh.copy(BUCKET, "compressible", BUCKET, "copy-of-compressible")
        wh.copy(BUCKET, "incompressible", VERSIONED, "copied-across")
        wh.delete(BUCKET, "incompressible")
        for n in range(3):
            wh.put(VERSIONED, "history", canary * (n + 1) + b" version %d" % n)
        wh.delete(VERSIONED, "history")  # a delete marker; the versions and their blobs stay

        # A put that fails part-way: its temp file is removed, nothing is committed.
        def failing() -> Iterator[bytes]:
            for _ in range(5):
                yield canary * 300
            raise RuntimeError("client went away")
        with pytest.raises(RuntimeError, match="went away"):
            wh.put(BUCKET, "failed", failing())

        # A put in progress: scan while its temp file holds the frames sealed so far.
        seen_during_put: list[tuple[list[str], list[str]]] = []

        def streaming() -> Iterator[bytes]:
            for n in range(200):
                if n == 150:
                    temps = [str(p) for p in files_under(data_dir) if p.name.startswith(".tmp-")
                             and p.stat().st_size > 0]
                    seen_during_put.append((temps, find_in_files(data_dir, canary)))
                yield canary + os.urandom(TEST_FRAME_SIZE - len(canary))
        wh.put(BUCKET, "streamed", streaming())

        assert wh.get(BUCKET, "copy-of-compressible") == objects["compressible"]  # the data is really there
        (temps, hits_during_put), = seen_during_put
        assert len(temps) == 1, "expected the in-progress put's temp file"
        assert hits_during_put == [], f"plaintext in files during a put: {hits_during_put}"

        names = {p.name for p in files_under(data_dir)}
        assert {"catalog.db", "catalog.db-wal", "catalog.db-shm", "keyring.json"} <= names
        assert find_in_files(data_dir, canary) == [], "object data found in clear at rest (warehouse open)"
    assert find_in_files(data_dir, canary) == [], "object data found in clear at rest (warehouse closed)"
    # Guard against a vacuous pass: the files hold a lot of sealed bytes.
    assert sum(p.stat().st_size for p in files_under(data_dir / "blobs")) > 200 * TEST_FRAME_SIZE


# Permissions ----------------------------------------------------------------

# Not a word the catalog's own schema holds ("payload" is a column of the event outbox since issue 15).
SENTINEL = b"sealed-sentinel-5f0c9e2a"


def test_keyring_is_private_and_data_dir_not_world_accessible(tmp_path: Path, permissive_umask: None) -> None:
    data_dir = tmp_path / "data"
    with Warehouse(make_config(data_dir)) as wh:
        wh.create_bucket(BUCKET)
        wh.put(BUCKET, "k", SENTINEL)
        wh.rotate_keys()  # rewrites the keyring file
        keyring_path = wh.config.keyring_path
        assert keyring_path.is_file()
        assert stat.S_IMODE(keyring_path.stat().st_mode) == 0o600
        assert stat.S_IMODE(keyring_path.parent.stat().st_mode) & 0o077 == 0, "keyring folder open to others"
        lock = keyring_path.with_name(keyring_path.name + ".lock")
        if lock.exists():
            assert stat.S_IMODE(lock.stat().st_mode) & 0o077 == 0
        mode = stat.S_IMODE(data_dir.stat().st_mode)
        assert mode & 0o007 == 0, f"data dir is world-accessible (mode {mode:o})"
        for path in files_under(data_dir / "blobs"):
            assert stat.S_IMODE(path.stat().st_mode) & 0o007 == 0, f"blob {path} is world-readable"
        assert not find_in_files(data_dir, SENTINEL), "sanity: the object is sealed"


# Key material ---------------------------------------------------------------

def _error_texts(exc: BaseException) -> str:
    rebuilt = pickle.loads(pickle.dumps(exc))
    return "\n".join([str(exc), repr(exc), repr(exc.args), repr(vars(exc)),
                      "".join(traceback.format_exception(exc)), str(rebuilt), repr(rebuilt)])


def test_key_material_never_in_reprs_or_errors(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with Warehouse(make_config(data_dir)) as wh:
        wh.create_bucket(BUCKET)
        wh.put(BUCKET, "one", os.urandom(3 * TEST_FRAME_SIZE))
        wh.put(BUCKET, "two", b"x" * 10_000)
        wh.rotate_keys()
        wh.put(BUCKET, "three", b"after rotation")

        keks = list(wh.keyring._state.keks[KEK_ID].versions.values())
        assert len(keks) == 2 and all(len(k) == 32 for k in keks)
        records = [wh.catalog.get_object("default", BUCKET, key) for key in ("one", "two", "three")]
        headers = [KeyHeader.from_bytes(record.placement.key_header) for record in records]
        # Version 2 headers: each object's DEK is derived from a bucket key shared within the bucket.
        bucket_keys = [wh.keyring.unwrap(h.kek_id, h.kek_version, h.wrapped_dek) for h in headers]
        deks = [wh.data_keys.dek_for(h) for h in headers]
        assert len({*deks}) == 3 and all(len(d) == 32 for d in deks + bucket_keys)
        assert len({*bucket_keys}) == 2  # a new one after the rotation
        master = load_master_key(wh.keyring.master_ref).reveal_bytes()
        secrets_ = keks + deks + bucket_keys + [master]

        texts: dict[str, str] = {
            "warehouse": f"{wh!r} {wh}",
            "catalog": repr(wh.catalog),
            "keyring": repr(wh.keyring) + repr(wh.keyring.describe(KEK_ID)) + repr(wh.keyring.kek_ids()),
            "backend/engine/config": repr(wh.backend) + repr(getattr(wh, "engine", None)) + repr(wh.config),
            "records": repr(records) + str(records),
            "headers": repr(headers) + str(headers),
            "infos": repr([wh.head(BUCKET, k) for k in ("one", "two", "three")]) + repr(wh.list(BUCKET)),
            "reader": repr(wh.open(BUCKET, "one").info),
            "data keys": repr(wh.data_keys) + repr(wh.data_keys.for_sealing(KEK_ID, "any-bucket-id")),
        }
        # Objects that hold a DEK in memory must not show it either.
        identity = ObjectIdentity("default", BUCKET, "one", records[0].version_id)
        texts["sealer/opener"] = repr(FrameSealer(identity, deks[0], headers[0].nonce_prefix,
                                                  frame_size=TEST_FRAME_SIZE))
        texts["sealer/opener"] += repr(FrameOpener(identity, deks[0], headers[0].nonce_prefix,
                                                   frame_size=TEST_FRAME_SIZE))
        fresh = new_object_keys()
        texts["object keys"] = repr(fresh)
        secrets_.append(fresh.dek)

        # Errors around keys and sealed data.
        errors: list[DwrayError] = []
        blob = wh.backend.root / records[0].placement.blob_id
        os.chmod(blob, 0o600)
        raw = bytearray(blob.read_bytes())
        raw[len(raw) // 2] ^= 0x01
        blob.write_bytes(bytes(raw))
        with pytest.raises(IntegrityError) as tampered_frame:
            wh.get(BUCKET, "one")
        errors.append(tampered_frame.value)
        broken = bytearray(headers[1].wrapped_dek)
        broken[-1] ^= 0x01
        with pytest.raises(IntegrityError) as tampered_wrap:
            wh.keyring.unwrap(headers[1].kek_id, headers[1].kek_version, bytes(broken))
        errors.append(tampered_wrap.value)
        with pytest.raises(KeyNotFound) as missing:
            wh.keyring.unwrap(KEK_ID, 99, headers[1].wrapped_dek)
        errors.append(missing.value)
        with pytest.raises(KeyringError) as refused:
            wh.retire_keys(2)  # objects are still wrapped under version 1
        errors.append(refused.value)
        assert wh.rewrap() == 2
        wh.retire_keys(2)
        with pytest.raises(KeyRetired) as retired:
            wh.keyring.unwrap(KEK_ID, 1, headers[1].wrapped_dek)
        errors.append(retired.value)
        with pytest.raises(IntegrityError) as bad_header:
            KeyHeader.from_bytes(records[1].placement.key_header[:-3])
        errors.append(bad_header.value)
        # A keyring file that fails to parse must not quote its contents (the KEKs).
        broken_ring = tmp_path / "broken" / "keyring.json"
        broken_ring.parent.mkdir(mode=0o700)
        text = wh.config.keyring_path.read_bytes()
        broken_ring.write_bytes(text[: len(text) - 40])
        os.chmod(broken_ring, 0o600)
        with pytest.raises(KeyringError) as malformed:
            LocalKeyring(broken_ring)
        errors.append(malformed.value)
        for n, exc in enumerate(errors):
            texts[f"error {n} {type(exc).__name__}"] = _error_texts(exc)

        for where, text in texts.items():
            for n, secret in enumerate(secrets_):
                found = find_in_text(text, secret)
                assert found == [], f"key material #{n} appears in {where} as {found}: {text[:300]}"
        # The records hold wrapped DEKs only; the wrapped bytes are not the DEK.
        assert all(isinstance(r, ObjectRecord) and d not in r.placement.key_header for r, d in zip(records, deks))

    # DEKs are never stored; KEKs and the master key are in no file under the data dir,
    # the keyring included (it holds the KEKs sealed).
    for n, dek in enumerate(deks + bucket_keys + [fresh.dek]):
        assert find_in_files(data_dir, dek) == [], f"DEK or bucket key #{n} is stored in clear"
    for n, key in enumerate(keks + [master]):
        assert find_in_files(data_dir, key) == [], f"key #{n} is in clear under the data dir"
    assert len(json.loads((data_dir / "keys" / "keyring.json").read_bytes())["keks"][KEK_ID]["versions"]) == 2
