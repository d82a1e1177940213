"""Access keys through the real identity and KMS plugin actors, as a gateway replica uses them.

One supervisor (identity + local KMS, in a namespace of its own) serves the
module; its data folder is a temp folder.
"""
from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import ray

from actors.handles import PluginHandle
from actors.remote_services import RemoteIdentity, RemoteKeyring
from dwray.core.access_keys import AccessKeys, ResolvedKey
from dwray.core.identity import IdentityStore
from dwray.core.supervision import ChildSpec, SupervisorSpec
from dwray.errors import (
    AccessKeyNotFound,
    InvalidArgument,
    PluginUnavailable,
    TenantNotFound,
)


@dataclass
class IdentityService:
    supervisor: Any
    namespace: str
    db_path: Path

    def handle(self, child_id: str) -> PluginHandle:
        return PluginHandle(child_id, supervisor=self.supervisor, namespace=self.namespace)

    def access_keys(self) -> AccessKeys:
        return AccessKeys(RemoteIdentity(self.handle("identity")), RemoteKeyring(self.handle("kms:local")))


@pytest.fixture(scope="module")
def service(ray_session: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[IdentityService]:
    from actors.supervisor import create_supervisor

    data = tmp_path_factory.mktemp("identity-remote")
    namespace = f"dwray-identity-{uuid.uuid4().hex[:8]}"
    spec = SupervisorSpec(ping_interval=0.2, ping_timeout=5.0, backoff_base=0.05, backoff_max=0.2, children=[
        ChildSpec(id="identity", plugin="service.identity", kind="service",
                  config={"path": str(data / "identity.db")}),
        ChildSpec(id="kms:local", plugin="kms.local", kind="kms", config={"path": str(data / "keys" / "keyring.json")}),
    ])
    supervisor = create_supervisor(spec, namespace=namespace)
    ray.get(supervisor.start.remote(), timeout=120)
    yield IdentityService(supervisor, namespace, data / "identity.db")
    ray.get(supervisor.stop.remote(), timeout=60)
    ray.kill(supervisor)


def test_bootstrap_create_lookup_and_revoke_through_the_actors(service: IdentityService) -> None:
    keys = service.access_keys()
    first = keys.bootstrap("default")
    assert first is not None
    assert keys.bootstrap("default") is None  # a second replica, or a restart, gets nothing
    assert keys.lookup(first.access_key.access_key_id) == ResolvedKey(
        first.access_key.access_key_id, first.access_key.secret_access_key, "default")
    assert keys.check_admin_token(first.admin_token)
    assert not keys.check_admin_token(first.admin_token[::-1])

    keys.store.create_tenant("acme")
    epoch = keys.store.epoch()
    new = keys.create("acme", "through Ray")
    assert keys.store.epoch() > epoch
    assert keys.lookup(new.access_key_id).tenant == "acme"  # type: ignore[union-attr]
    assert [k.access_key_id for k in keys.list("acme")] == [new.access_key_id]
    assert not keys.revoke(new.access_key_id).active
    assert keys.lookup(new.access_key_id) is None

    # Errors keep their class across the actor boundary.
    with pytest.raises(TenantNotFound):
        keys.create("ghost")
    with pytest.raises(AccessKeyNotFound):
        keys.revoke("DWNOSUCHKEY000000000")
    with pytest.raises(InvalidArgument, match="active access key"):
        keys.store.delete_tenant("default")

    # The actor writes a real database file: another process sees the same keys.
    local = IdentityStore(service.db_path)
    try:
        assert local.get_access_key(first.access_key.access_key_id) is not None
        assert local.epoch() == keys.store.epoch()
    finally:
        local.close()


def kill_and_await_restart(service: IdentityService, actor: Any, generation: int) -> None:
    """Kill the identity actor and wait until the supervisor runs its successor.

    The handle under test still holds the dead actor, so its next call meets the death for sure.
    """
    ray.kill(actor, no_restart=True)
    ray.get(service.supervisor.handle.remote("identity", 30.0, generation), timeout=60)


def test_keys_survive_a_killed_identity_actor(service: IdentityService) -> None:
    keys = service.access_keys()
    keys.store.create_tenant("durable")
    new = keys.create("durable")
    handle = keys.store.handle  # type: ignore[union-attr]
    actor, generation = handle.current()
    kill_and_await_restart(service, actor, generation)
    # A read is retried once on the restarted actor; the key was on disk all along.
    assert keys.lookup(new.access_key_id) == ResolvedKey(new.access_key_id, new.secret_access_key, "durable")
    assert handle.generation is not None and handle.generation > generation
    # Creating a tenant is not idempotent, so it is never retried blindly.
    kill_and_await_restart(service, *handle.current())
    with pytest.raises(PluginUnavailable, match="not idempotent"):
        keys.store.create_tenant("after-kill")
