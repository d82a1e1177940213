"""What a plugin written with the kit imports from dwray, in one place.

The kit's templates import their base classes from here rather than from
dwray's internals, so a plugin keeps working when those move:

- ``Plugin``, ``Manifest``: every plugin (``dwray.core.plugins``);
- ``StoragePlugin``: a storage backend behind the plugin contract, with the
  upload sessions the warehouse streams blobs through (the base of dwray's own
  storage plugins); a subclass builds its backend in ``_open(**config)``;
- ``StorageBackend`` and its id checks: the storage contract;
- ``FrameStagePlugin``: the built-in frame stage, for stages that transform
  frames around its sealing;
- ``SecretManager``, ``SecretVersion``, ``SecretInput``, ``ABSENT``: the secret
  manager contract; ``SecretManagerPlugin``: a manager behind the plugin contract;
- ``KmsService``, ``delegate``: the key service contract and its forwarding.
"""
from __future__ import annotations

from dwray.backends.base import BlobStat, StorageBackend, as_byte_view, validate_blob_id, validate_prefix
from dwray.builtins.secret_managers import SecretManagerPlugin
from dwray.builtins.stages import FrameStagePlugin
from dwray.builtins.storage import _StoragePlugin as StoragePlugin
from dwray.core.contracts import KmsService, delegate
from dwray.core.plugins import Manifest, Plugin
from dwray.secrets.base import ABSENT, SecretInput, SecretManager, SecretVersion, encode_value

__all__ = [
    "ABSENT",
    "BlobStat",
    "FrameStagePlugin",
    "KmsService",
    "Manifest",
    "Plugin",
    "SecretInput",
    "SecretManager",
    "SecretManagerPlugin",
    "SecretVersion",
    "StorageBackend",
    "StoragePlugin",
    "as_byte_view",
    "delegate",
    "encode_value",
    "validate_blob_id",
    "validate_prefix",
]
