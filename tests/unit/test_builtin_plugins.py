"""dwray's own plugins, exercised in one process (the Ray runtime tests run them in actors)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from dwray.builtins.services import CatalogPlugin, LocalKmsPlugin, SettingsPlugin
from dwray.builtins.stages import FrameStagePlugin
from dwray.builtins.storage import LocalStoragePlugin, MemoryStoragePlugin
from dwray.core.frames import ObjectIdentity, new_object_keys
from dwray.core.pipeline import ObjectCrypto
from dwray.core.plugins import check_manifest, discover, load_plugin_class
from dwray.errors import IntegrityError, InvalidArgument, UploadNotFound


def crypto(frame_size: int = 1024) -> ObjectCrypto:
    keys = new_object_keys()
    return ObjectCrypto(ObjectIdentity("t", "bkt", "k", "v1"), keys.dek, keys.nonce_prefix, frame_size, 1)


def test_builtins_are_registered_by_entry_points() -> None:
    found = discover()
    for name, cls in [("storage.local", LocalStoragePlugin), ("storage.memory", MemoryStoragePlugin),
                      ("stage.frames", FrameStagePlugin), ("service.catalog", CatalogPlugin),
                      ("kms.local", LocalKmsPlugin), ("service.settings", SettingsPlugin)]:
        assert name in found
        assert load_plugin_class(name) is cls
        assert cls.manifest.name == name


def test_manifests_validate_their_configs(tmp_path: Path) -> None:
    check_manifest("storage:local", LocalStoragePlugin.manifest, "storage", {"root": str(tmp_path)})
    with pytest.raises(Exception, match="root"):
        check_manifest("storage:local", LocalStoragePlugin.manifest, "storage", {})
    with pytest.raises(Exception, match="spec expects 'kms'"):
        check_manifest("storage:local", LocalStoragePlugin.manifest, "kms", {"root": "x"})


def test_upload_session_reorders_chunks_and_is_durable(tmp_path: Path) -> None:
    plugin = LocalStoragePlugin(root=str(tmp_path / "blobs"))
    parts = [os.urandom(1000 + i) for i in range(5)]
    upload = plugin.begin_upload("t/b/blob1")
    for seq in [2, 0, 4, 1, 3]:
        assert plugin.append(upload, seq, np.frombuffer(parts[seq], dtype=np.uint8)) == len(parts[seq])
    assert plugin.finish_upload(upload) == sum(map(len, parts))
    listed = plugin.begin_upload("t/b/blob2")
    assert plugin.append(listed, 0, [parts[0], memoryview(parts[1])]) == len(parts[0]) + len(parts[1])
    plugin.finish_upload(listed)
    assert plugin.get_blob("t/b/blob2").tobytes() == parts[0] + parts[1]
    stored = plugin.get_blob("t/b/blob1")
    assert isinstance(stored, np.ndarray) and stored.tobytes() == b"".join(parts)
    assert [p.tobytes() for p in plugin.get_ranges("t/b/blob1", [(0, 10), (1000, 1005)])] == \
        [parts[0][:10], parts[1][:5]]
    with pytest.raises(UploadNotFound):
        plugin.append(upload, 5, b"late")
    plugin.close()


def test_aborted_or_incomplete_upload_leaves_nothing(tmp_path: Path) -> None:
    plugin = LocalStoragePlugin(root=str(tmp_path / "blobs"))
    upload = plugin.begin_upload("t/b/aborted")
    plugin.append(upload, 0, b"partial data")
    plugin.abort_upload(upload)
    gap = plugin.begin_upload("t/b/gap")
    plugin.append(gap, 1, b"chunk one without chunk zero")
    with pytest.raises(InvalidArgument, match="missing chunk 0"):
        plugin.finish_upload(gap)
    assert plugin.list_blobs("") == []
    assert plugin.sweep_temp_files(0) == 0
    assert plugin.health()["uploads"] == 0


def test_stage_seals_and_opens_batches() -> None:
    stage = FrameStagePlugin()
    spec = crypto()
    data = (b"compressible " * 300)[:3000] + os.urandom(1500)
    frames = [np.frombuffer(data[i:i + 1024], dtype=np.uint8) for i in range(0, len(data), 1024)]
    first, lengths_a = stage.seal_batch(spec, 0, False, frames[:2])
    second, lengths_b = stage.seal_batch(spec, 2, True, frames[2:])
    opened = stage.open_batch(spec, 0, 4, first, lengths_a) + stage.open_batch(spec, 2, 4, second, lengths_b)
    assert b"".join(p.tobytes() for p in opened) == data
    assert lengths_a[0] < 1024  # compressible frame shrank
    with pytest.raises(IntegrityError):
        stage.open_batch(spec, 2, 5, second, lengths_b)  # frame 4 is not really the last one
    with pytest.raises(IntegrityError):
        stage.open_batch(crypto(), 0, 4, first, lengths_a)  # another object's key


def test_catalog_and_kms_plugins(tmp_path: Path) -> None:
    catalog = CatalogPlugin(path=str(tmp_path / "c.db"))
    catalog.create_bucket("t", "bkt", "id1")
    assert catalog.get_bucket("t", "bkt").bucket_id == "id1"
    assert catalog.health()["schema_version"] >= 1
    catalog.close()
    kms = LocalKmsPlugin(path=str(tmp_path / "keys" / "keyring.json"))
    assert kms.ensure("tenant:t") == 1
    version, wrapped = kms.wrap("tenant:t", b"k" * 32)
    assert kms.unwrap("tenant:t", version, wrapped) == b"k" * 32
    assert kms.rotate("tenant:t") == 2
    assert kms.describe("tenant:t")["primary"] == 2
