"""The storage conformance suite against a storage plugin actor, through ``RemoteBackend``.

One local-disk storage plugin on the session's Ray serves every test; each
test starts from an empty backend (its blobs are removed afterwards).
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


@pytest.fixture(scope="module")
def storage_actor(ray_session: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, str]]:
    from actors.supervisor import create_supervisor

    namespace = f"dwray-storage-{uuid.uuid4().hex[:8]}"
    root = tmp_path_factory.mktemp("remote-blobs")
    spec = SupervisorSpec(children=[ChildSpec(id="storage:local", plugin="storage.local", kind="storage",
                                              config={"root": str(root)}, max_concurrency=16)])
    supervisor = create_supervisor(spec, namespace=namespace)
    ray.get(supervisor.start.remote())
    yield supervisor, namespace
    ray.get(supervisor.stop.remote())
    ray.kill(supervisor)


class TestRemoteConformance(BackendConformance):
    large_blob_size = 24 * 1024 * 1024

    @pytest.fixture
    def backend(self, storage_actor: tuple[Any, str]) -> Iterator[RemoteBackend]:
        supervisor, namespace = storage_actor
        remote = RemoteBackend(PluginHandle("storage:local", supervisor=supervisor, namespace=namespace), "local")
        yield remote
        remote.delete_prefix("")


def test_remote_backend_moves_big_blobs_in_several_calls(storage_actor: tuple[Any, str], tmp_path: Path) -> None:
    supervisor, namespace = storage_actor
    remote = RemoteBackend(PluginHandle("storage:local", supervisor=supervisor, namespace=namespace), "local")
    chunks = [bytes([n]) * (3 << 20) for n in range(7)]  # 21 MiB: three upload batches
    assert remote.put_blob("big/blob", iter(chunks)) == 21 << 20
    assert remote.get_blob("big/blob", (3 << 20) - 2, (3 << 20) + 2) == b"\x00\x00\x01\x01"
    assert remote.stat_blob("big/blob").size == 21 << 20
    remote.delete_blob("big/blob")
    assert not remote.exists("big/blob")
