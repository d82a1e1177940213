"""``secret://env/NAME``: secrets in environment variables, for containers and orchestrators.

Read-only: the environment is set by whoever starts the process. It keeps no
history, so the version of a value is a keyed fingerprint (see
``dwray.secrets.base.fingerprint``) that changes when the value does.
"""
from __future__ import annotations

import builtins
import os
from collections.abc import Mapping

from dwray.errors import SecretNotFound
from dwray.secret_ref import SecretValue
from dwray.secrets.base import SecretManager, SecretVersion, fingerprint

__all__ = ["EnvSecretManager"]


class EnvSecretManager(SecretManager):
    """Reads secrets from the process environment (or the ``environ`` mapping given, for tests)."""

    scheme = "env"
    read_only = True
    keeps_versions = False
    min_versions_kept = 1
    binary = False
    always_fresh = True

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ

    def _raw(self, name: str) -> bytes:
        self.check_name(name)
        try:
            return self._environ[name].encode("utf-8", "surrogateescape")
        except KeyError:
            raise SecretNotFound(self.ref(name), "the environment variable is not set") from None

    def get(self, name: str, field: str | None = None, version: str | None = None) -> SecretValue:
        self.check_name(name, field)
        raw = self._raw(name)
        current = fingerprint(raw)
        if version is not None and version != current:
            raise SecretNotFound(self.ref(name), f"version {version!r}: the environment keeps no earlier versions")
        return self.value(raw, name, field, current)

    def versions(self, name: str) -> builtins.list[SecretVersion]:
        return [SecretVersion(fingerprint(self._raw(name)), None, True)]

    def current_version(self, name: str) -> str:
        return fingerprint(self._raw(name))

    def list(self, prefix: str = "") -> builtins.list[str]:
        return sorted(name for name in self._environ if name.startswith(prefix) and name.isidentifier())
