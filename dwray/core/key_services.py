"""The key service a warehouse uses, opened in this process from its config.

``[kms] plugin`` chooses it: ``local`` is the keyring sealed under the master
key (``dwray.core.keyring``), ``vault-transit`` keeps every KEK in
Vault/OpenBao Transit (``dwray.core.transit_keyring``). The Ray runtime runs
the same classes in the ``kms:<plugin>`` actor instead (``dwray.builtins``);
both build the Transit one here, so an in-process warehouse and the actor agree.

Secrets reach a key service as ``secret://`` references, resolved where the
service runs, through a ``SecretResolver``: the Transit token is asked of it
for each request (cached there), and forgotten when Vault refuses it, so a
rotated token needs no restart.
"""
from __future__ import annotations

from pathlib import Path

from dwray.config import DwrayConfig
from dwray.core.contracts import KeyService
from dwray.core.keyring import LocalKeyring
from dwray.core.transit_keyring import TransitKeyring
from dwray.errors import ConfigError
from dwray.secrets import SecretResolver, shared_resolver

__all__ = ["open_key_service", "open_transit_keyring"]


def open_key_service(config: DwrayConfig) -> KeyService:
    """The key service ``config`` names, in this process."""
    if config.kms.plugin == "vault-transit":
        kms = config.kms
        if not kms.address or not kms.token:
            raise ConfigError("[kms] plugin = 'vault-transit' needs address and token (a secret:// reference)",
                              "the configuration")
        return open_transit_keyring(kms.address, kms.token, shared_resolver(config), mount=kms.mount,
                                    key_prefix=kms.key_prefix, namespace=kms.namespace, ca_cert=kms.ca_cert,
                                    timeout=kms.timeout)
    return LocalKeyring(config.keyring_path, config.master_key_ref, create_master=config.keys.master is None,
                        config=config)


def open_transit_keyring(address: str, token_ref: str, resolver: SecretResolver, *, mount: str = "transit",
                         key_prefix: str = "dwray-", namespace: str | None = None,
                         ca_cert: str | Path | None = None, timeout: float = 10.0) -> TransitKeyring:
    """A ``TransitKeyring`` whose token is the secret ``token_ref`` names, as ``resolver`` resolves it."""
    return TransitKeyring(address, lambda: resolver.get(token_ref), forget_token=lambda: resolver.invalidate(token_ref),
                          mount=mount, key_prefix=key_prefix, namespace=namespace, ca_cert=ca_cert, timeout=timeout)
