"""The contract of each service, and the forwarding that implements it once.

Every service is written three ways: in process (the core class), as a plugin
(an adapter in ``dwray.builtins`` that a plugin host runs in an actor) and as a
remote proxy (``actors.remote_services``, the caller's side of that actor). The
Protocols below say what each service is; ``tests/unit/test_contracts.py``
checks all three against them, so a method added to one and not the others
fails the build.

- the catalog: ``Catalog``, ``CatalogPlugin``, ``RemoteCatalog``. The
  plugin serves ``CatalogService``; in a caller's process the catalog is a
  ``PagedCatalog`` (the service, plus iterators over its pages).
- the keys: ``LocalKeyring``, ``LocalKmsPlugin``, ``RemoteKeyring``. Callers
  hold a ``KeyService``; the plugin and its proxy are a ``KmsService`` (the
  key service, plus wraps in batches).
- the identity store: ``IdentityStore``, ``IdentityPlugin``,
  ``RemoteIdentity``, all an ``IdentityService``.

The storage backend's contract is the abstract class
``dwray.backends.base.StorageBackend``: a backend implements five methods and
inherits the rest, so it is a base class rather than a Protocol.

Forwarding is written once: ``delegate`` completes an adapter class with the
contract's methods, each calling the wrapped object; ``actors.remote_services``
does the same over a plugin handle. A class body holds only its special cases.
``idempotent`` marks the calls that are safe to repeat, which a proxy retries
once after the service's actor restarts.
"""
from __future__ import annotations

import abc
import functools
import inspect
from collections.abc import Callable, Iterator
from typing import Any, Protocol, TypeVar

from dwray.core.catalog import (
    BucketRecord,
    DeleteOutcome,
    ObjectRecord,
    OutboxEvent,
    PartRecord,
    SegmentRecord,
    UploadRecord,
    WrappedKey,
    WriteCondition,
)
from dwray.core.identity import AccessKeyInfo, AdminTokenInfo, ShreddedTenant, StoredAccessKey, TenantInfo
from dwray.core.models import PartInfo
from dwray.errors import DwrayError

__all__ = [
    "CatalogService",
    "IdentityService",
    "KeyService",
    "KmsService",
    "PagedCatalog",
    "contract_methods",
    "delegate",
    "forward",
    "idempotent",
    "is_idempotent",
]

C = TypeVar("C", bound=type)
F = TypeVar("F", bound=Callable[..., Any])

_IDEMPOTENT = "_dwray_idempotent"


def idempotent(method: F) -> F:
    """Mark a contract method as safe to repeat: a repeat changes nothing the first call did not.

    A remote proxy retries such a call once on the restarted actor when the
    service died under it; any other call fails instead, saying it was not
    retried, because a repeat might do it twice.
    """
    setattr(method, _IDEMPOTENT, True)
    return method


def is_idempotent(method: Callable[..., Any]) -> bool:
    """Whether the contract marks ``method`` as safe to repeat."""
    return getattr(method, _IDEMPOTENT, False)


def contract_methods(contract: type) -> dict[str, Callable[..., Any]]:
    """The methods ``contract`` declares, its base contracts' included, by name."""
    methods: dict[str, Callable[..., Any]] = {}
    for base in reversed(contract.__mro__):
        # Protocol classes say so in _is_protocol (typing.get_protocol_members arrives in Python 3.13).
        if getattr(base, "_is_protocol", False):
            methods.update((name, value) for name, value in vars(base).items()
                           if not name.startswith("_") and inspect.isfunction(value))
    return methods


def forward(contract: type, make: Callable[[str, Callable[..., Any]], Callable[..., Any]]) -> Callable[[C], C]:
    """A class decorator: the class gets each method of ``contract`` that its body does not define.

    That method is ``make(name, declared)`` and carries the declared method's
    name, signature and documentation.
    """
    def complete(cls: C) -> C:
        for name, declared in contract_methods(contract).items():
            if name in vars(cls):
                continue
            method: Any = functools.update_wrapper(make(name, declared), declared)
            method.__qualname__ = f"{cls.__qualname__}.{name}"
            method.__module__ = cls.__module__
            setattr(cls, name, method)
        # An abstract base may have declared some of them (PagedReads): they exist now.
        abc.update_abstractmethods(cls)
        return cls
    return complete


def delegate(contract: type, to: str) -> Callable[[C], C]:
    """Complete an adapter class with ``contract``'s methods, each calling the same method of ``self.<to>``.

    The plugin host calls whatever public method a plugin class has, so the
    adapter exposes the contract's methods and nothing else of the object it
    wraps.
    """
    def make(name: str, declared: Callable[..., Any]) -> Callable[..., Any]:
        def method(self: Any, *args: Any, **kwargs: Any) -> Any:
            return getattr(getattr(self, to), name)(*args, **kwargs)
        return method
    return forward(contract, make)


# The catalog -----------------------------------------------------------------

class CatalogService(Protocol):
    """Which buckets, objects and uploads exist, and where their sealed bytes are.

    Every row is scoped by tenant; only ``referenced_blobs``,
    ``is_referenced``, ``wrapped_below_page``, ``count_wrapped_below`` and
    ``tenant_stats`` read across tenants (placements, key headers and counts
    only). A committed row is the moment an object exists: callers commit only
    after its blob is durable.
    """

    def create_bucket(self, tenant: str, name: str, bucket_id: str, *, versioning: bool = False) -> BucketRecord:
        """Create a bucket. Names are global: ``BucketAlreadyExists`` if another tenant has it,
        ``BucketAlreadyOwnedByYou`` if this one does (so a repeat fails)."""

    @idempotent
    def get_bucket(self, tenant: str, name: str) -> BucketRecord:
        """The tenant's bucket of that name; ``BucketAccessDenied`` if another tenant's, else ``BucketNotFound``.

        Every method naming a tenant's bucket answers a missing one the same way."""

    @idempotent
    def set_versioning(self, tenant: str, name: str, enabled: bool) -> BucketRecord:
        """Enable or suspend the bucket's versioning; return the bucket as it now is."""

    @idempotent
    def list_buckets(self, tenant: str) -> list[BucketRecord]:
        """The tenant's buckets, by name."""

    def delete_bucket(self, tenant: str, name: str) -> None:
        """Delete an empty bucket; ``BucketNotEmpty`` while it holds objects or uploads."""

    @idempotent
    def drop_bucket(self, tenant: str, name: str) -> int:
        """Delete a bucket with everything in it (object versions, segments, uploads, parts); return the
        object versions removed. Blobs are left to the sweeper. For shredding a tenant; a gone bucket gives 0.
        """

    @idempotent
    def commit_object(self, record: ObjectRecord, condition: WriteCondition | None = None) -> ObjectRecord:
        """Make ``record`` the latest version of its key; return it as committed (null version or not).

        By the bucket's versioning, as S3: enabled keeps older versions (no
        longer latest), suspended replaces the null version, never enabled
        removes older versions; their blobs are left for the sweeper, so
        readers still streaming them can finish. With ``condition``, only if it
        holds for the key's current version, decided in the commit's own
        transaction (``PreconditionFailed``, ``ConditionalRequestConflict``,
        ``ObjectNotFound``). Committing a row that is already there changes
        nothing and returns it.
        """

    @idempotent
    def commit_many(self, records: list[ObjectRecord]) -> list[ObjectRecord | DwrayError]:
        """``commit_object`` for each record in one transaction (a group commit: one fsync).

        A record that fails (its bucket was deleted) gets its error in its
        place; the others still commit.
        """

    @idempotent
    def set_quota(self, tenant: str, bucket: str | None, limits: dict[str, int | None]) -> dict[str, Any]:
        """Set some of ``max_bytes``, ``max_objects``, ``max_buckets`` (tenant only) of a tenant's or a
        bucket's quota (``None`` or 0 clears one); return the quota as ``quota`` does. Writes that would
        pass a limit raise ``QuotaExceeded`` in the transaction that would commit them."""

    @idempotent
    def quota(self, tenant: str, bucket: str | None = None) -> dict[str, Any]:
        """A tenant's (with its buckets') or one bucket's limits and usage (``BucketNotFound`` if gone)."""

    @idempotent
    def quota_tenants(self) -> list[str]:
        """Every tenant that owns a bucket or has a quota set."""

    @idempotent
    def recount_usage(self, tenant: str) -> dict[str, int]:
        """A tenant's stored object versions and bytes (parts included), recounted from the rows."""

    @idempotent
    def notification_rules(self, tenant: str, bucket: str) -> list[dict[str, Any]]:
        """The bucket's S3 notification rules (``dwray.core.events.notifications``); ``[]`` when none."""

    @idempotent
    def set_notification_rules(self, tenant: str, bucket: str, rules: list[dict[str, Any]]) -> None:
        """Replace the bucket's notification rules (``[]`` removes them)."""

    @idempotent
    def outbox_page(self, after: int = 0, limit: int = 500) -> list[OutboxEvent]:
        """Up to ``limit`` events of the outbox after ``after``, oldest first (``dwray.core.catalog.outbox``)."""

    @idempotent
    def outbox_trim(self, upto: int) -> int:
        """Delete the outbox's events up to ``upto`` (the message bus has them); how many went."""

    @idempotent
    def outbox_size(self) -> int:
        """How many events wait in the outbox."""

    @idempotent
    def outbox_publish(self, topic: str, key: str, payload: dict[str, Any]) -> None:
        """Add a kernel event (``key.rotated``, say) to the outbox, for the message bus to deliver.
        Retried after a restart: the bus delivers at least once, so a repeat is a duplicate, not a wrong."""

    @idempotent
    def get_object(self, tenant: str, bucket: str, key: str, version_id: str | None = None) -> ObjectRecord:
        """The latest version (``ObjectDeleted`` if it is a delete marker), or the named version (``"null"``:
        the null version; a delete marker is returned as one); ``ObjectNotFound`` otherwise."""

    @idempotent
    def set_tags(self, tenant: str, bucket: str, key: str, version_id: str | None,
                 tags: dict[str, str]) -> ObjectRecord:
        """Replace the tags of the latest or named version (not a delete marker); return that version."""

    @idempotent
    def versions_page(self, tenant: str, bucket: str, prefix: str = "", key_marker: str | None = None,
                      version_marker: str | None = None, inclusive: bool = False,
                      limit: int = 1000) -> list[ObjectRecord]:
        """Up to ``limit`` versions and delete markers under ``prefix``, by key, newest first within a key,
        after the markers (as S3's ListObjectVersions pages)."""

    @idempotent
    def latest_page(self, tenant: str, bucket: str, prefix: str = "", start: str | None = None,
                    inclusive: bool = True, limit: int = 1000) -> list[ObjectRecord]:
        """Up to ``limit`` live latest versions whose key starts with ``prefix``, from ``start`` on.

        Keys come in S3's order (bytewise on UTF-8).
        """

    def delete_object(self, tenant: str, bucket: str, key: str, version_id: str | None,
                      marker: ObjectRecord | None) -> DeleteOutcome:
        """Remove the named version, or add the delete ``marker`` (versioned bucket), or remove the key.

        Not safe to repeat: the outcome says what this call removed or added,
        which a repeat would not.
        """

    @idempotent
    def iter_versions(self, tenant: str, bucket: str, key: str) -> list[ObjectRecord]:
        """Every version of one key, newest first."""

    @idempotent
    def wrapped_below_page(self, kek_id: str, version: int, limit: int = 500) -> list[ObjectRecord | WrappedKey]:
        """Up to ``limit`` DEKs wrapped under ``kek_id`` below ``version``: objects', segments', parts'."""

    @idempotent
    def replace_key_header(self, record: ObjectRecord | WrappedKey, key_header: bytes, kek_version: int) -> bool:
        """Swap a row's key header if it is still the one in ``record`` (compare and set)."""

    @idempotent
    def count_wrapped_below(self, kek_id: str, version: int) -> int:
        """How many DEKs (of objects, segments and parts) are still wrapped below ``version``."""

    @idempotent
    def referenced_blobs(self, backend: str) -> set[str]:
        """Blob ids on ``backend`` that a committed object, segment or uploaded part points at."""

    @idempotent
    def is_referenced(self, backend: str, blob_id: str) -> bool:
        """Whether any committed row points at that blob."""

    @idempotent
    def stats(self, tenant: str) -> dict[str, int]:
        """The tenant's object versions and bytes, and its uploads in progress and their parts' bytes."""

    @idempotent
    def tenant_stats(self) -> dict[str, dict[str, int]]:
        """For every tenant: its live objects (latest versions, delete markers aside) and their bytes.

        Kept as the objects change, never counted on demand: it is read on every
        ``/metrics`` scrape, so its cost grows with tenants, not objects."""

    @idempotent
    def create_upload(self, upload: UploadRecord) -> None:
        """Record a new multipart upload; the same upload id for the same key again changes nothing."""

    @idempotent
    def get_upload(self, tenant: str, bucket: str, key: str, upload_id: str) -> UploadRecord:
        """The upload, if it belongs to this tenant, bucket and key; ``UploadNotFound`` otherwise."""

    @idempotent
    def commit_part(self, tenant: str, bucket: str, key: str, part: PartRecord) -> None:
        """Make ``part`` the upload's part of its number; the replaced part's blob is left for the sweeper."""

    @idempotent
    def list_parts(self, tenant: str, bucket: str, key: str, upload_id: str, marker: int = 0,
                   limit: int = 1000) -> list[PartInfo]:
        """Up to ``limit`` parts numbered above ``marker``, in order (no key material)."""

    @idempotent
    def uploads_page(self, tenant: str, bucket: str, prefix: str = "", key_marker: str | None = None,
                     upload_id_marker: str | None = None, inclusive: bool = False,
                     limit: int = 1000) -> list[UploadRecord]:
        """Up to ``limit`` uploads under ``prefix`` in (key, initiation time) order, after the markers."""

    @idempotent
    def uploads_initiated_before(self, cutoff: float, limit: int = 1000,
                                 tenant: str | None = None) -> list[UploadRecord]:
        """Up to ``limit`` uploads begun before ``cutoff`` (epoch seconds), oldest first, of ``tenant`` or all."""

    def abort_upload(self, tenant: str, bucket: str, key: str, upload_id: str) -> None:
        """Forget an upload and its parts (blobs are left for the sweeper).

        Not safe to repeat: a repeat reports the upload it removed as missing.
        """

    @idempotent
    def complete_upload(self, record: ObjectRecord, upload_id: str, parts: list[tuple[int, str]],
                        condition: WriteCondition | None = None) -> ObjectRecord:
        """Turn an upload into the object ``record`` in one transaction (if ``condition`` holds).

        ``parts`` are the (number, ETag) pairs the caller checked; each must
        still be there with that ETag (``InvalidPart`` otherwise). A repeat
        returns the object the first completion made.
        """

    @idempotent
    def completed_upload(self, tenant: str, bucket: str, key: str, upload_id: str,
                         parts: list[tuple[int, str]]) -> ObjectRecord | None:
        """The object a recent completion of this upload with these same parts made, else ``None``."""

    @idempotent
    def segments_page(self, tenant: str, bucket: str, key: str, version_id: str, start: int = 0,
                      limit: int = 64) -> list[SegmentRecord]:
        """Up to ``limit`` segments of a multipart object, in order, from the one holding byte ``start`` on."""

    def close(self) -> None:
        """Let go of the catalog: the in-process one closes its database, a proxy leaves the actor running."""


class PagedCatalog(CatalogService, Protocol):
    """The catalog as a warehouse holds it: the service, and iterators over its pages.

    The iterators are derived from ``latest_page`` and ``wrapped_below_page``
    in the caller's process (``dwray.core.catalog.PagedReads``); a generator
    cannot cross an actor, so the plugin serves the pages only.
    """

    def iter_latest(self, tenant: str, bucket: str, *, prefix: str = "", start: str | None = None,
                    inclusive: bool = True, batch: int = 1000) -> Iterator[ObjectRecord]:
        """Every live latest version under ``prefix`` from ``start`` on, in key order, page by page."""

    def iter_wrapped_below(self, kek_id: str, version: int, batch: int = 500) -> Iterator[ObjectRecord | WrappedKey]:
        """Rows wrapped below ``version``, re-queried until none is left (callers rewrap them)."""


# Keys ------------------------------------------------------------------------

class KeyService(Protocol):
    """Key-encryption keys (KEKs), which wrap objects' and access keys' data keys (DEKs).

    Each KEK id has versions 1, 2, ...; the *primary* wraps new DEKs and
    versions below the *minimum* may no longer unwrap. Key material never
    leaves the service: callers see wrapped DEKs only.
    """

    @idempotent
    def ensure(self, kek_id: str) -> int:
        """Create version 1 of ``kek_id`` if it has none; return its primary version."""

    @idempotent
    def wrap(self, kek_id: str, dek: bytes) -> tuple[int, bytes]:
        """Wrap ``dek`` under the primary version; return ``(version, wrapped)``.

        Safe to repeat: a repeat is another valid wrapping of the same DEK.
        """

    @idempotent
    def unwrap(self, kek_id: str, version: int, wrapped: bytes) -> bytes:
        """Recover a DEK wrapped under ``kek_id`` ``version``.

        ``KeyNotFound`` if that version is absent, ``KeyRetired`` if it is
        below the minimum, ``IntegrityError`` if ``wrapped`` was altered.
        """

    def rotate(self, kek_id: str) -> int:
        """Add a new version of ``kek_id``, make it primary and return it (a repeat adds another)."""

    @idempotent
    def retire_below(self, kek_id: str, minimum: int) -> None:
        """Set the lowest version that may still unwrap (1..primary); it may be lowered again."""

    @idempotent
    def rewrap(self, kek_id: str, version: int, wrapped: bytes) -> tuple[int, bytes]:
        """Re-wrap a DEK wrapped under ``version`` under the primary version; return ``(primary, wrapped)``.

        The DEK never leaves the service (Vault Transit's rewrap; the local
        keyring unwraps and wraps inside it). Errors as ``unwrap``.
        """

    @idempotent
    def destroy(self, kek_id: str) -> None:
        """Destroy every version of ``kek_id`` for good (crypto-shredding).

        Whatever it wrapped can never be unwrapped again, by anyone: later
        calls for it raise ``KeyShredded``. Destroying a destroyed or unknown
        KEK id is not an error (so a repeat is safe).
        """

    @idempotent
    def describe(self, kek_id: str) -> dict[str, Any]:
        """Versions, primary and minimum of ``kek_id``; never key material."""

    @idempotent
    def kek_ids(self) -> list[str]:
        """Every KEK id, sorted."""


class KmsService(KeyService, Protocol):
    """The key service as a KMS plugin serves it: with wraps in batches.

    The writers that arrive together share one round trip (``wrap_many``);
    in one process a batch would buy nothing, so the in-process keyring has
    only ``wrap`` and the adapter makes the batch.
    """

    @idempotent
    def wrap_many(self, items: list[tuple[str, bytes]]) -> list[tuple[int, bytes]]:
        """``wrap`` for each ``(kek_id, dek)`` pair, in order."""


# Identity --------------------------------------------------------------------

class IdentityService(Protocol):
    """Tenants, their S3 access keys (secrets stored only wrapped) and named admin tokens (hashes only).

    Every change moves an *epoch* in the same transaction, so gateway replicas
    that cache resolved keys drop their cache when it moves.
    """

    @idempotent
    def epoch(self) -> int:
        """A number that moves with every change."""

    def create_tenant(self, name: str, description: str = "") -> TenantInfo:
        """Create a tenant; ``TenantAlreadyExists`` if it exists (so a repeat fails)."""

    @idempotent
    def get_tenant(self, name: str) -> TenantInfo:
        """The tenant; ``TenantNotFound`` otherwise."""

    @idempotent
    def list_tenants(self) -> list[TenantInfo]:
        """Every tenant, by name."""

    def delete_tenant(self, name: str) -> None:
        """Remove a tenant and its revoked keys; ``TenantHasActiveKeys`` while it has active ones."""

    @idempotent
    def shred_tenant(self, name: str) -> ShreddedTenant:
        """Remove a tenant with all its keys and keep a tombstone that refuses its name from now on.

        A shredded tenant's repeat returns the tombstone; ``TenantNotFound`` if
        there never was such a tenant.
        """

    @idempotent
    def add_access_key(self, access_key_id: str, tenant: str, kek_id: str, kek_version: int,
                       wrapped_secret: bytes, description: str = "", policy: str | None = None) -> AccessKeyInfo:
        """Store a new key, its secret wrapped, with its policy JSON (``None``: full rights); the very
        same key again changes nothing."""

    @idempotent
    def get_access_key(self, access_key_id: str) -> StoredAccessKey | None:
        """The active key of that id, or ``None`` (unknown, revoked, or not an access key id)."""

    @idempotent
    def list_access_keys(self, tenant: str | None = None, *, include_revoked: bool = False) -> list[AccessKeyInfo]:
        """Keys (never secrets), of one tenant or all, by tenant then creation time."""

    @idempotent
    def revoke_access_key(self, access_key_id: str) -> AccessKeyInfo:
        """Revoke a key and erase its wrapped secret; revoking a revoked key changes nothing."""

    @idempotent
    def keys_wrapped_below(self, kek_id: str, version: int, limit: int = 500) -> list[StoredAccessKey]:
        """Up to ``limit`` active keys whose secret is wrapped under ``kek_id`` below ``version``."""

    @idempotent
    def replace_wrapped_secret(self, key: StoredAccessKey, wrapped_secret: bytes, kek_version: int) -> bool:
        """Swap a key's wrapped secret if it is still the one in ``key`` (compare and set)."""

    @idempotent
    def add_admin_token(self, token_hash: str, name: str, expires: float | None = None, description: str = "",
                        *, replace: bool = False) -> AdminTokenInfo:
        """Remember an admin token by its SHA-256 under a unique ``name``, valid until ``expires`` if given.

        ``AdminTokenExists`` if the name is taken, unless ``replace`` (which
        revokes that token in the same transaction); the very same token again
        changes nothing.
        """

    @idempotent
    def find_admin_token(self, token_hash: str) -> AdminTokenInfo | None:
        """The token whose SHA-256 is ``token_hash`` (expired or not), compared in constant time; else ``None``.

        Records the token's last use when it is unexpired.
        """

    @idempotent
    def list_admin_tokens(self) -> list[AdminTokenInfo]:
        """Every admin token by name: never a token or its hash."""

    def revoke_admin_token(self, name: str) -> AdminTokenInfo:
        """Revoke the token ``name`` for good; ``AdminTokenNotFound`` if there is none (so a repeat fails)."""

    @idempotent
    def count_admin_tokens(self) -> int:
        """How many admin tokens exist."""

    def bootstrap(self, tenant: str, access_key_id: str, kek_id: str, kek_version: int, wrapped_secret: bytes,
                  token_hash: str, token_name: str) -> bool:
        """On a store with no admin token and no key: create ``tenant``, this key and this token (named
        ``token_name``); say whether it did.

        Not safe to repeat: after a lost ``True`` a repeat answers ``False``
        and the new secrets would be lost.
        """

    def close(self) -> None:
        """Let go of the store: the in-process one closes its database, a proxy leaves the actor running."""
