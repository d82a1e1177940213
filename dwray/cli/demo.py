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
    blob_path = (root / placement.blob_id) if root is not None and placement is not None else None
    stored = blob_path.read_bytes() if blob_path is not None else b""
    found_plaintext = canary in stored
    kek_id, kek_version = (placement.kek_id, placement.kek_version) if placement is not None else (None, None)
    header = wh.keyring.describe(kek_id or "")
    steps.append(f"catalog: {wh.config.catalog_path} (SQLite, WAL, synchronous={wh.config.catalog.synchronous})")
    if blob_path is not None:
        steps.append(f"blob: {blob_path} ({len(stored)} bytes on disk for {info.size} bytes of data)")
        steps.append(f"plaintext found in blob: {'YES (bug!)' if found_plaintext else 'no'}")
    steps.append(f"sealed with AES-256-GCM under a per-object data key, wrapped by KEK "
                 f"{kek_id} version {kek_version} (keyring {wh.config.keyring_path}, mode 0600)")
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
