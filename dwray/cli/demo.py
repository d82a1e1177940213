"""``dw demo``: a first look at a local warehouse, and proof that nothing lands in plaintext."""
from __future__ import annotations

import os
from typing import Any

from dwray.core.warehouse import Warehouse
from dwray.errors import BucketAlreadyExists

DEMO_BUCKET = "demo"
DEMO_KEY = "hello/greeting.txt"


def run_demo(wh: Warehouse, *, tenant: str | None = None) -> dict[str, Any]:
    """Create a bucket, put and get an object, and report where and how it is stored."""
    steps: list[str] = []
    try:
        wh.create_bucket(DEMO_BUCKET, tenant=tenant)
        steps.append(f"created bucket {DEMO_BUCKET!r}")
    except BucketAlreadyExists:
        steps.append(f"bucket {DEMO_BUCKET!r} already exists")
    canary = f"hello from dwray, canary {os.urandom(8).hex()}\n".encode()
    payload = canary * 2000
    info = wh.put(DEMO_BUCKET, DEMO_KEY, payload, content_type="text/plain", tenant=tenant)
    steps.append(f"put {DEMO_KEY!r}: {info.size} bytes, etag {info.etag}, version {info.version_id}")
    back = wh.get(DEMO_BUCKET, DEMO_KEY, tenant=tenant)
    identical = back == payload
    steps.append(f"got it back: {len(back)} bytes, {'identical' if identical else 'DIFFERENT (bug!)'}")
    ranged = wh.get(DEMO_BUCKET, DEMO_KEY, range=(0, len(canary) - 1), tenant=tenant)
    steps.append(f"range 0-{len(canary) - 1}: {ranged.decode().strip()!r}")
    placement = wh.catalog.get_object(wh._tenant(tenant).tenant, DEMO_BUCKET, DEMO_KEY).placement
    root = wh.storage_path()
    inline = placement is not None and placement.inline is not None
    blob_path = (root / placement.blob_id) if root is not None and placement is not None and not inline else None
    stored = placement.inline if inline else blob_path.read_bytes() if blob_path is not None else b""
    found_plaintext = canary in stored
    kek_id, kek_version = (placement.kek_id, placement.kek_version) if placement is not None else (None, None)
    header = wh.keyring.describe(kek_id or "")
    steps.append(f"catalog: {wh.config.catalog_path} (SQLite, WAL, synchronous={wh.config.catalog.synchronous})")
    if blob_path is not None or inline:
        where = "kept inline in its catalog row" if inline else str(blob_path)
        steps.append(f"blob: {where} ({len(stored)} bytes on disk for {info.size} bytes of data)")
        steps.append(f"plaintext found in blob: {'YES (bug!)' if found_plaintext else 'no'}")
    steps.append("sealed with AES-256-GCM under a per-object data key, "
                 + _how_the_key_is_kept(wh, kek_id, kek_version))
    steps.append(f"frames of {wh.config.pipeline.frame_size} bytes, zstd level {wh.config.pipeline.zstd_level}")
    return {
        "bucket": DEMO_BUCKET,
        "key": DEMO_KEY,
        "size": info.size,
        "etag": info.etag,
        "round_trip_ok": identical,
        "catalog": str(wh.config.catalog_path),
        "blob_path": str(blob_path) if blob_path else None,
        "stored_bytes": len(stored),
        "plaintext_in_blob": found_plaintext,
        "kek": {"id": kek_id, "version": kek_version, "primary": header.get("primary")},
        "steps": steps,
    }


def _how_the_key_is_kept(wh: Warehouse, kek_id: str | None, kek_version: int | None) -> str:
    """How the data key is wrapped, and what keeps the KEK away from the data dir: the master key or Vault."""
    if wh.config.kms.plugin == "vault-transit":
        return (f"wrapped by Vault Transit under KEK {kek_id} version {kek_version}, which never leaves "
                f"Vault at {wh.config.kms.address}")
    return (f"wrapped with AES-KWP by KEK {kek_id} version {kek_version}, kept in {wh.config.keyring_path} "
            f"(mode 0600) only sealed under the master key {wh.config.master_key_ref}, which lives outside "
            f"the data dir")
