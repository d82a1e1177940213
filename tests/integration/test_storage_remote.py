"""The storage conformance suite against storage plugin actors, through ``RemoteBackend``.

One supervisor on the session's Ray holds a local-disk plugin, a mirror pool
plugin (two local disks) and an S3 plugin on a real SeaweedFS whose
credentials are secret references resolved in the actor; each test starts
from an empty backend (its blobs are removed afterwards).
"""
from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray

from actors.handles import PluginHandle
from actors.remote_storage import RemoteBackend
from dwray.core.supervision import ChildSpec, SupervisorSpec
from dwray.testing.backend_conformance import BackendConformance
from tests.servers import SeaweedServer


@pytest.fixture(scope="module")
def storage_actor(ray_session: Any, seaweedfs: SeaweedServer,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, str]]:
    from actors.supervisor import create_supervisor

    namespace = f"dwray-storage-{uuid.uuid4().hex[:8]}"
    root = tmp_path_factory.mktemp("remote-blobs")
    keys = tmp_path_factory.mktemp("remote-keys")
    for name, value in (("ak", seaweedfs.access_key), ("sk", seaweedfs.secret_key)):
        (keys / name).write_text(value)
        (keys / name).chmod(0o600)
    seaweedfs.create_bucket("dwray-remote-conformance")
    mirror = {"index": str(root / "pool.db"), "write_quorum": None,
              "members": {"a": {"kind": "local", "root": str(root / "a")},
                          "b": {"kind": "local", "root": str(root / "b")}}}
    s3 = {"bucket": "dwray-remote-conformance", "endpoint": seaweedfs.endpoint, "region": None,
          "prefix": f"{namespace}/", "addressing_style": "path", "access_key": f"secret://file/{keys / 'ak'}",
          "secret_key": f"secret://file/{keys / 'sk'}", "ca_cert": None, "multipart_threshold": 5 << 20,
          "secret_settings": {}}
    spec = SupervisorSpec(children=[
        ChildSpec(id="storage:local", plugin="storage.local", kind="storage", config={"root": str(root / "blobs")},
                  max_concurrency=16),
        ChildSpec(id="storage:safe", plugin="storage.mirror", kind="storage", config=mirror, max_concurrency=16),
        ChildSpec(id="storage:s3", plugin="storage.s3", kind="storage", config=s3, max_concurrency=16)])
    supervisor = create_supervisor(spec, namespace=namespace)
    ray.get(supervisor.start.remote())
    yield supervisor, namespace
    ray.get(supervisor.stop.remote())
    ray.kill(supervisor)


class TestRemoteConformance(BackendConformance):
    large_blob_size = 24 * 1024 * 1024
    child, spec = "storage:local", {"kind": "local"}

    @pytest.fixture
    def backend(self, storage_actor: tuple[Any, str]) -> Iterator[RemoteBackend]:
        supervisor, namespace = storage_actor
        handle = PluginHandle(self.child, supervisor=supervisor, namespace=namespace)
        remote = RemoteBackend(handle, self.child.split(":")[1], spec=self.spec)
        yield remote
        remote.delete_prefix("")


class TestRemoteMirrorConformance(TestRemoteConformance):
    """A mirror pool in its actor: two local disks, a put acknowledged by both."""

    child = "storage:safe"
    spec = {"kind": "mirror", "members": {"a": {"kind": "local"}, "b": {"kind": "local"}}}


class TestRemoteS3Conformance(TestRemoteConformance):
    """An S3 backend in its actor, on a real SeaweedFS, its keys resolved there from secret references."""

    child, spec = "storage:s3", {"kind": "s3"}
    large_blob_size = 12 * 1024 * 1024  # multipart (5 MiB parts), through the actor's upload sessions
    threads, blobs_per_thread = 4, 10


def test_remote_backend_moves_big_blobs_in_several_calls(storage_actor: tuple[Any, str], tmp_path: Path) -> None:
    supervisor, namespace = storage_actor
    remote = RemoteBackend(PluginHandle("storage:local", supervisor=supervisor, namespace=namespace), "local")
    chunks = [bytes([n]) * (3 << 20) for n in range(7)]  # 21 MiB: three upload batches
    assert remote.put_blob("big/blob", iter(chunks)) == 21 << 20
    assert remote.get_blob("big/blob", (3 << 20) - 2, (3 << 20) + 2) == b"\x00\x00\x01\x01"
    assert remote.stat_blob("big/blob").size == 21 << 20
    remote.delete_blob("big/blob")
    assert not remote.exists("big/blob")
