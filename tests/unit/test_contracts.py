"""Each service's three parts (in process, plugin adapter, remote proxy) against its contract, without Ray.

A method added to one part and not to its contract, or to a contract and not
to every part, fails here.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from actors.remote_services import RemoteCatalog, RemoteIdentity, RemoteKeyring
from actors.remote_storage import RemoteBackend
from dwray.backends import BACKENDS, backend_class
from dwray.backends.base import StorageBackend
from dwray.builtins.kms_transit import VaultTransitKmsPlugin
from dwray.builtins.services import CatalogPlugin, IdentityPlugin, LocalKmsPlugin
from dwray.core.catalog import Catalog
from dwray.core.contracts import (
    CatalogService,
    IdentityService,
    KeyService,
    KmsService,
    PagedCatalog,
    contract_methods,
    is_idempotent,
)
from dwray.core.identity import IdentityStore
from dwray.core.keyring import LocalKeyring
from dwray.core.plugins import Plugin
from dwray.core.transit_keyring import TransitKeyring
from dwray.errors import CatalogError

PARTS = [
    (PagedCatalog, Catalog), (CatalogService, CatalogPlugin), (PagedCatalog, RemoteCatalog),
    (KeyService, LocalKeyring), (KmsService, LocalKmsPlugin), (KmsService, RemoteKeyring),
    (KmsService, TransitKeyring), (KmsService, VaultTransitKmsPlugin),
    (IdentityService, IdentityStore), (IdentityService, IdentityPlugin), (IdentityService, RemoteIdentity),
]
CONTRACTS = [CatalogService, PagedCatalog, KeyService, KmsService, IdentityService]
# Each proxy, its contract, and the methods its class body writes by hand for a reason.
PROXIES = [(CatalogService, RemoteCatalog, {"commit_object", "close"}), (KmsService, RemoteKeyring, {"wrap"}),
           (IdentityService, RemoteIdentity, {"close"})]
# The plugin host's lifecycle hooks belong to the plugin contract, not to a service's.
HOOKS = {name for name, value in vars(Plugin).items() if not name.startswith("_") and callable(value)}


def part_id(part: Any) -> str:
    return part.__name__


def public_methods(cls: type) -> set[str]:
    return {name for name, value in inspect.getmembers(cls) if not name.startswith("_") and callable(value)}


def shape(method: Callable[..., Any]) -> list[tuple[str, Any, Any]]:
    """Name, kind and default of each parameter after ``self``: what a caller may pass."""
    return [(p.name, p.kind, p.default) for p in list(inspect.signature(method).parameters.values())[1:]]


@pytest.mark.parametrize(("contract", "part"), PARTS, ids=[f"{c.__name__}-{p.__name__}" for c, p in PARTS])
def test_every_contract_method_is_there_with_the_contracts_signature(contract: type, part: type) -> None:
    for name, declared in contract_methods(contract).items():
        method = getattr(part, name, None)
        assert callable(method), f"{part.__name__} lacks {contract.__name__}.{name}"
        assert not getattr(method, "__isabstractmethod__", False), f"{part.__name__}.{name} is abstract"
        assert shape(method) == shape(declared), f"{part.__name__}.{name} does not take what the contract says"


@pytest.mark.parametrize(("contract", "part"), PARTS, ids=[f"{c.__name__}-{p.__name__}" for c, p in PARTS])
def test_no_part_offers_a_service_method_outside_its_contract(contract: type, part: type) -> None:
    assert public_methods(part) - HOOKS - set(contract_methods(contract)) == set()


@pytest.mark.parametrize("contract", CONTRACTS, ids=part_id)
def test_contracts_carry_the_documentation(contract: type) -> None:
    assert inspect.getdoc(contract)
    undocumented = [name for name, declared in contract_methods(contract).items() if not inspect.getdoc(declared)]
    assert undocumented == []


def test_the_retry_policy_is_the_contracts() -> None:
    """Only these calls are not retried after an actor restart: a repeat could do them twice or answer wrong."""
    def not_repeatable(contract: type) -> set[str]:
        return {name for name, declared in contract_methods(contract).items() if not is_idempotent(declared)}

    assert not_repeatable(CatalogService) == {"create_bucket", "delete_bucket", "delete_object", "abort_upload",
                                              "close"}
    assert not_repeatable(KmsService) == {"rotate"}
    assert not_repeatable(IdentityService) == {"create_tenant", "delete_tenant", "revoke_admin_token", "bootstrap",
                                                "close"}


class RecordingHandle:
    """The part of ``PluginHandle`` a proxy uses, recording each call instead of making it."""

    child_id = "recorded"

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any], bool]] = []

    def call(self, method: str, *args: Any, idempotent: bool = False, **kwargs: Any) -> Any:
        self.calls.append((method, args, kwargs, idempotent))
        if "_dwray_fanin" in kwargs:  # a grouped call: one result per caller
            return [(method, item) for item in args[0]]
        return method


def sample_arguments(declared: Callable[..., Any]) -> tuple[list[Any], dict[str, Any]]:
    """One distinct argument for every parameter without a default; keyword-only ones by keyword."""
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    for index, param in enumerate(list(inspect.signature(declared).parameters.values())[1:]):
        if param.default is not param.empty:
            continue
        if param.kind is param.KEYWORD_ONLY:
            kwargs[param.name] = f"arg{index}"
        else:
            args.append(f"arg{index}")
    return args, kwargs


@pytest.mark.parametrize(("contract", "proxy", "special"), PROXIES, ids=[p.__name__ for _, p, _ in PROXIES])
def test_a_proxy_calls_the_plugin_method_of_the_same_name_retried_as_the_contract_says(
        contract: type, proxy: type, special: set[str]) -> None:
    forwarded = {name: declared for name, declared in contract_methods(contract).items()
                 if getattr(vars(proxy).get(name), "__wrapped__", None) is declared}
    assert set(contract_methods(contract)) - set(forwarded) == special
    for name, declared in forwarded.items():
        handle = RecordingHandle()
        args, kwargs = sample_arguments(declared)
        assert getattr(proxy(handle), name)(*args, **kwargs) == name
        assert handle.calls == [(name, tuple(args), kwargs, is_idempotent(declared))]


def test_a_wrong_call_fails_in_the_caller_and_never_reaches_the_plugin() -> None:
    handle = RecordingHandle()
    identity = RemoteIdentity(handle)
    with pytest.raises(TypeError, match="name"):
        identity.get_tenant()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        identity.list_access_keys("acme", True)  # type: ignore[misc]
    assert handle.calls == []
    assert identity.list_access_keys("acme", include_revoked=True) == "list_access_keys"
    assert handle.calls == [("list_access_keys", ("acme",), {"include_revoked": True}, True)]


def test_the_proxies_special_cases() -> None:
    handle = RecordingHandle()
    keyring, catalog, identity = RemoteKeyring(handle), RemoteCatalog(handle), RemoteIdentity(handle)
    assert keyring.wrap("tenant:t", b"k" * 32) == ("wrap_many", ("tenant:t", b"k" * 32))
    assert catalog.commit_object("record") == ("commit_many", "record")  # type: ignore[arg-type]
    catalog.close()
    identity.close()
    # Wraps and commits go out grouped (one caller here), with each caller's trace context; close stays local.
    assert [(method, args, sorted(kwargs), idempotent) for method, args, kwargs, idempotent in handle.calls] == [
        ("wrap_many", ([("tenant:t", b"k" * 32)],), ["_dwray_fanin"], True),
        ("commit_many", (["record"],), ["_dwray_fanin"], True),
    ]
    assert repr(catalog) == "RemoteCatalog('recorded')"


def test_an_adapter_forwards_to_its_service_and_closes_it(tmp_path: Path) -> None:
    plugin = IdentityPlugin(path=str(tmp_path / "identity.db"))
    assert plugin.create_tenant("acme", "first").description == "first"
    assert [t.name for t in plugin.store.list_tenants()] == ["acme"]
    assert plugin.epoch() == plugin.store.epoch() == 1
    assert not hasattr(IdentityPlugin, "_read") and not hasattr(IdentityPlugin, "migrations")
    plugin.close()
    with pytest.raises(CatalogError, match="closed database"):
        plugin.store.list_tenants()


@pytest.mark.parametrize("backend", [*(backend_class(name) for name in BACKENDS), RemoteBackend], ids=part_id)
def test_storage_backends_keep_the_base_classes_signatures(backend: type[StorageBackend]) -> None:
    for name, method in vars(backend).items():
        declared = getattr(StorageBackend, name, None)
        if not name.startswith("_") and callable(method) and declared is not None:
            assert shape(method) == shape(declared), f"{backend.__name__}.{name}"


@pytest.mark.parametrize("plugin", ["local", "vault-transit"])
def test_each_key_service_plugin_takes_the_config_the_bootstrap_gives_it(plugin: str, tmp_path: Path) -> None:
    from actors.bootstrap import warehouse_children
    from dwray.config import DwrayConfig, KmsConfig
    from dwray.core.plugins import check_manifest, load_plugin_class

    kms = KmsConfig(plugin=plugin, address="http://127.0.0.1:8200", token="secret://env/BAO_TOKEN")  # type: ignore[arg-type]
    (child,) = [c for c in warehouse_children(DwrayConfig(data_dir=tmp_path, kms=kms)) if c.kind == "kms"]
    assert (child.id, child.plugin) == (f"kms:{plugin}", f"kms.{plugin}")
    check_manifest(child.id, load_plugin_class(child.plugin).manifest, "kms", child.config)
