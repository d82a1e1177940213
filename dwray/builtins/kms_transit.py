"""The Vault/OpenBao Transit key service as a plugin (``kms.vault-transit``).

Its config carries the token's ``secret://`` *reference*, never the token:
the actor's arguments are what Ray's dashboard shows. The reference is
resolved inside the actor by the plugin's own ``SecretResolver``, built from
``secret_settings`` (``dwray.secrets.resolver_settings`` of the starting
process; ``env`` and ``file`` references need none). The plugin names the
reference in ``secret_refs()``, so its host watches it and a rotation drops
the cached token: the next Vault call uses the new one, no restart.
"""
from __future__ import annotations

from typing import Any

from dwray.core.contracts import KmsService, delegate
from dwray.core.key_services import open_transit_keyring
from dwray.core.plugins import Manifest, Plugin
from dwray.secrets import SecretResolver

__all__ = ["VaultTransitKmsPlugin"]

_TEXT = {"type": "string", "minLength": 1}
_OPTIONAL_TEXT = {"type": ["string", "null"], "minLength": 1}
_SCHEMA = {
    "type": "object",
    "properties": {
        "address": {"type": "string", "pattern": "^https?://"},
        "token": {"type": "string", "pattern": "^secret://"},
        "mount": _TEXT,
        "key_prefix": {"type": "string", "maxLength": 64},
        "namespace": _OPTIONAL_TEXT,
        "ca_cert": _OPTIONAL_TEXT,
        "timeout": {"type": "number", "exclusiveMinimum": 0},
        "secret_settings": {"type": "object"},
    },
    "required": ["address", "token"],
    "additionalProperties": False,
}


@delegate(KmsService, to="keyring")
class VaultTransitKmsPlugin(Plugin):
    """Key-encryption keys that never leave Vault/OpenBao Transit; writers' wraps go as one Transit batch."""

    manifest = Manifest(name="kms.vault-transit", kind="kms", version="1.0.0",
                        capabilities=("wrap", "unwrap", "rotate", "rewrap", "destroy"), config_schema=_SCHEMA)

    def __init__(self, address: str, token: str, mount: str = "transit", key_prefix: str = "dwray-",
                 namespace: str | None = None, ca_cert: str | None = None, timeout: float = 10.0,
                 secret_settings: dict[str, Any] | None = None) -> None:
        self._token_ref = token
        self.secret_resolver = SecretResolver.from_settings(secret_settings or {})
        self.keyring = open_transit_keyring(address, token, self.secret_resolver, mount=mount,
                                            key_prefix=key_prefix, namespace=namespace, ca_cert=ca_cert,
                                            timeout=timeout)

    def secret_refs(self) -> list[str]:
        return [self._token_ref]
