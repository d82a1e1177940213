"""The credentials that open a secret manager: read from ``secret://env/`` or ``secret://file/`` only.

A token or key that opens Vault or AWS cannot be kept in Vault or AWS (nor in
the local store, whose own key comes from a file or the environment too), so
these references are restricted to the two managers that need no credentials.
"""
from __future__ import annotations

from dwray.errors import InvalidArgument, SecretUnavailable
from dwray.secret_ref import SecretRef, parse_secret_ref
from dwray.secrets.env import EnvSecretManager
from dwray.secrets.file import FileSecretManager

__all__ = ["credential_ref", "read_credential"]


def credential_ref(ref_text: str, what: str) -> SecretRef:
    """``ref_text`` parsed, if it is a ``secret://env/`` or ``secret://file/`` reference; else ``InvalidArgument``."""
    ref = parse_secret_ref(ref_text)
    if ref.scheme not in ("env", "file"):
        raise InvalidArgument(f"{what} must be a secret://env/ or secret://file/ reference, not {ref}: "
                              f"the credentials that open a secret manager cannot be kept in one")
    return ref


def read_credential(ref_text: str, what: str) -> str:
    """The text (stripped) a ``secret://env/`` or ``secret://file/`` reference names; other schemes are refused."""
    ref = credential_ref(ref_text, what)
    manager = EnvSecretManager() if ref.scheme == "env" else FileSecretManager()
    value = manager.get(ref.name).reveal().strip()
    if not value:
        raise SecretUnavailable(str(ref), f"{what} is empty")
    return value
