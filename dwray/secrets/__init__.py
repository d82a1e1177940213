"""Secret managers and the resolver of ``secret://`` references.

No config field holds a secret value, only a reference (``dwray.secret_ref``);
this package turns references into values::

    from dwray.secrets import resolve_secret
    token = resolve_secret("secret://vault/dwray/metrics#token", config)   # a SecretValue
    token.reveal()

One contract, ``SecretManager`` (``dwray.secrets.base``), five managers
(``MANAGERS``: env, file, local, vault, aws; the vault and aws ones import
hvac and boto3 only when first used), and ``SecretResolver``
(``dwray.secrets.resolver``): caching, rotation grace, invalidation.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dwray.secrets.base import ABSENT, SecretManager, SecretVersion
from dwray.secrets.resolver import (
    MANAGERS,
    SecretResolver,
    invalidate_shared,
    manager_class,
    resolve_secret,
    resolver_settings,
    shared_resolver,
)

if TYPE_CHECKING:
    from dwray.secrets.aws import AwsSecretManager
    from dwray.secrets.env import EnvSecretManager
    from dwray.secrets.file import FileSecretManager
    from dwray.secrets.local import LocalSecretStore
    from dwray.secrets.vault import VaultSecretManager

__all__ = [
    "ABSENT",
    "MANAGERS",
    "AwsSecretManager",
    "EnvSecretManager",
    "FileSecretManager",
    "LocalSecretStore",
    "SecretManager",
    "SecretResolver",
    "SecretVersion",
    "VaultSecretManager",
    "invalidate_shared",
    "manager_class",
    "resolve_secret",
    "resolver_settings",
    "shared_resolver",
]

_CLASSES = {"EnvSecretManager": "env", "FileSecretManager": "file", "LocalSecretStore": "local",
            "VaultSecretManager": "vault", "AwsSecretManager": "aws"}


def __getattr__(name: str) -> Any:
    if name in _CLASSES:
        return manager_class(_CLASSES[name])
    raise AttributeError(f"module 'dwray.secrets' has no attribute {name!r}")
