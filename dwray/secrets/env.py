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
from dwray.secrets.base import UnversionedSecretManager

__all__ = ["EnvSecretManager"]


class EnvSecretManager(UnversionedSecretManager):
    """Reads secrets from the process environment (or the ``environ`` mapping given, for tests)."""

    scheme = "env"
    history = "the environment"
    binary = False

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ

    def _raw(self, name: str) -> bytes:
        self.check_name(name)
        try:
            return self._environ[name].encode("utf-8", "surrogateescape")
        except KeyError:
            raise SecretNotFound(self.ref(name), "the environment variable is not set") from None

    def list(self, prefix: str = "") -> builtins.list[str]:
        return sorted(name for name in self._environ if name.startswith(prefix) and name.isidentifier())
