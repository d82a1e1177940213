"""The secret managers as plugins (kind ``secrets``): each runs in a plugin host actor of its own.

A plugin's config is its actor's arguments, which the Ray dashboard shows, so
it holds settings and ``secret://`` references only (the Vault token, AWS
keys and local passphrase are references the manager resolves in its actor).

A ``SecretValue`` refuses to be pickled, so ``reveal`` hands the value back
as bytes with its version: a caller that gets it over Ray wraps it in a
``SecretValue`` again at once. The other calls are the manager's contract.
"""
from __future__ import annotations

import builtins
from typing import Any, ClassVar

from dwray.config import DwrayConfig
from dwray.core.plugins import Manifest, Plugin
from dwray.secrets.base import SecretInput, SecretManager, SecretVersion
from dwray.secrets.env import EnvSecretManager
from dwray.secrets.file import FileSecretManager
from dwray.secrets.local import LocalSecretStore, default_secret_store_path

__all__ = ["AwsSecretsPlugin", "EnvSecretsPlugin", "FileSecretsPlugin", "LocalSecretsPlugin", "SecretManagerPlugin",
           "VaultSecretsPlugin"]

_REF = {"type": "string", "pattern": "^secret://"}
_OPTIONAL_REF = {"anyOf": [_REF, {"type": "null"}]}
_OPTIONAL_TEXT = {"anyOf": [{"type": "string", "minLength": 1}, {"type": "null"}]}
_NOTHING = {"type": "object", "additionalProperties": False}


def _schema(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(required), "additionalProperties": False}


class SecretManagerPlugin(Plugin):
    """A secret manager behind the plugin contract; subclasses build ``self.manager``."""

    manager: SecretManager
    scheme: ClassVar[str]

    @classmethod
    def config_from(cls, config: DwrayConfig) -> dict[str, Any]:
        """This plugin's config (settings and references) from dwray's ``[secrets]`` sections."""
        return {}

    def health(self) -> dict[str, Any]:
        return {"ok": True, "manager": self.scheme}

    def close(self) -> None:
        self.manager.close()

    def reveal(self, name: str, field: str | None = None, version: str | None = None) -> tuple[bytes, str | None]:
        """The value (bytes) and its version; wrap it in a ``SecretValue`` on arrival."""
        value = self.manager.get(name, field, version)
        return value.reveal_bytes(), None if value.version is None else str(value.version)

    def versions(self, name: str) -> builtins.list[SecretVersion]:
        return self.manager.versions(name)

    def current_version(self, name: str) -> str:
        return self.manager.current_version(name)

    def previous_version(self, name: str) -> SecretVersion | None:
        return self.manager.previous_version(name)

    def list(self, prefix: str = "") -> builtins.list[str]:
        return self.manager.list(prefix)

    def put(self, name: str, value: SecretInput, cas: str | None = None) -> str:
        return self.manager.put(name, value, cas)

    def rotate(self, name: str, value: SecretInput) -> str:
        return self.manager.rotate(name, value)

    def delete(self, name: str) -> None:
        self.manager.delete(name)


class LocalSecretsPlugin(SecretManagerPlugin):
    """The encrypted local store (``secret://local/``)."""

    scheme = "local"
    manifest = Manifest(name="secrets.local", kind="secrets", version="1.0.0", capabilities=("versions", "cas"),
                        config_schema=_schema({"path": {"type": "string", "minLength": 1},
                                               "passphrase": _OPTIONAL_REF, "key_file": _OPTIONAL_TEXT,
                                               "master": _OPTIONAL_REF, "create_key_file": {"type": "boolean"}},
                                              ("path",)))

    def __init__(self, path: str, passphrase: str | None = None, key_file: str | None = None,
                 master: str | None = None, create_key_file: bool = False) -> None:
        self.manager = LocalSecretStore(path, passphrase=passphrase, key_file=key_file, master=master,
                                        create_key_file=create_key_file)

    @classmethod
    def config_from(cls, config: DwrayConfig) -> dict[str, Any]:
        local = config.secrets.local
        return {"path": str((local.path or default_secret_store_path()).resolve()), "passphrase": local.passphrase,
                "key_file": str(local.key_file.resolve()) if local.key_file else None,
                "master": config.master_key_ref, "create_key_file": config.keys.master is None}


class VaultSecretsPlugin(SecretManagerPlugin):
    """Vault/OpenBao KV v2 (``secret://vault/``)."""

    scheme = "vault"
    manifest = Manifest(name="secrets.vault", kind="secrets", version="1.0.0", capabilities=("versions", "cas"),
                        config_schema=_schema({"address": {"type": "string", "minLength": 1},
                                               "mount": {"type": "string", "minLength": 1},
                                               "namespace": _OPTIONAL_TEXT, "ca_cert": _OPTIONAL_TEXT,
                                               "token": _OPTIONAL_REF, "role_id": _OPTIONAL_REF,
                                               "secret_id": _OPTIONAL_REF,
                                               "approle_mount": {"type": "string", "minLength": 1},
                                               "timeout": {"type": "number", "exclusiveMinimum": 0}},
                                              ("address",)))

    def __init__(self, address: str, mount: str = "secret", namespace: str | None = None,
                 ca_cert: str | None = None, token: str | None = None, role_id: str | None = None,
                 secret_id: str | None = None, approle_mount: str = "approle", timeout: float = 10.0) -> None:
        from dwray.secrets.vault import VaultSecretManager  # hvac, only where Vault is used

        self.manager = VaultSecretManager(address, mount=mount, namespace=namespace, ca_cert=ca_cert, token=token,
                                          role_id=role_id, secret_id=secret_id, approle_mount=approle_mount,
                                          timeout=timeout)

    @classmethod
    def config_from(cls, config: DwrayConfig) -> dict[str, Any]:
        vault = config.secrets.vault
        return {"address": vault.address, "mount": vault.mount, "namespace": vault.namespace,
                "ca_cert": str(vault.ca_cert) if vault.ca_cert else None, "token": vault.token,
                "role_id": vault.role_id, "secret_id": vault.secret_id, "approle_mount": vault.approle_mount,
                "timeout": vault.timeout}

    def health(self) -> dict[str, Any]:
        return {**super().health(), "auth": self.manager.auth_status()}  # type: ignore[attr-defined]


class AwsSecretsPlugin(SecretManagerPlugin):
    """AWS Secrets Manager (``secret://aws/``)."""

    scheme = "aws"
    manifest = Manifest(name="secrets.aws", kind="secrets", version="1.0.0", capabilities=("versions", "cas"),
                        config_schema=_schema({"region": _OPTIONAL_TEXT, "endpoint_url": _OPTIONAL_TEXT,
                                               "access_key_id": _OPTIONAL_REF, "secret_access_key": _OPTIONAL_REF,
                                               "recovery_window_days": {"anyOf": [
                                                   {"type": "integer", "minimum": 7, "maximum": 30},
                                                   {"type": "null"}]}}))

    def __init__(self, region: str | None = None, endpoint_url: str | None = None, access_key_id: str | None = None,
                 secret_access_key: str | None = None, recovery_window_days: int | None = 7) -> None:
        from dwray.secrets.aws import AwsSecretManager  # boto3, only where AWS is used

        self.manager = AwsSecretManager(region=region, endpoint_url=endpoint_url, access_key_id=access_key_id,
                                        secret_access_key=secret_access_key,
                                        recovery_window_days=recovery_window_days)

    @classmethod
    def config_from(cls, config: DwrayConfig) -> dict[str, Any]:
        aws = config.secrets.aws
        return {"region": aws.region, "endpoint_url": aws.endpoint_url, "access_key_id": aws.access_key_id,
                "secret_access_key": aws.secret_access_key}

    def delete(self, name: str, force: bool | None = None) -> None:
        """Delete with the recovery window, or at once when ``force``."""
        self.manager.delete(name, force=force)  # type: ignore[call-arg]


class EnvSecretsPlugin(SecretManagerPlugin):
    """The environment of the plugin's own process (``secret://env/``; set it with the child's ``env_vars``)."""

    scheme = "env"
    manifest = Manifest(name="secrets.env", kind="secrets", version="1.0.0", capabilities=("read-only",),
                        config_schema=_NOTHING)

    def __init__(self) -> None:
        self.manager = EnvSecretManager()


class FileSecretsPlugin(SecretManagerPlugin):
    """Private files on the plugin's node (``secret://file/``)."""

    scheme = "file"
    manifest = Manifest(name="secrets.file", kind="secrets", version="1.0.0", capabilities=("read-only",),
                        config_schema=_NOTHING)

    def __init__(self) -> None:
        self.manager = FileSecretManager()
