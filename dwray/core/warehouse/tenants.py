"""Crypto-shredding a tenant: its identity, buckets and key go, and its data can never be decrypted again.

Not a mixin like the other modules here: shredding spans the identity store,
which the warehouse does not hold, so it is a function over both (the admin
API runs it; so can a test, in process).

The steps, each safe to run again if an earlier run stopped half-way:

1. refuse (``TenantHasBuckets``) while the tenant owns buckets, unless forced,
   before anything changes;
2. the identity store removes the tenant and every access key it has, and
   keeps a tombstone that refuses its name from then on (a new tenant of that
   name would get the destroyed KEK's id);
3. each remaining bucket of the tenant is dropped with everything in it
   (``drop_bucket``: rows only, in one catalog transaction each);
4. the key service destroys every version of the tenant's KEK (``destroy``):
   from then on no DEK it wrapped can be unwrapped, so no byte of the
   tenant's data, in the store, in a backup or in a stolen copy, decrypts;
5. the tenant's blobs (under ``<tenant>/``), unreferenced after step 3, are
   deleted at once rather than left to the sweeper: best effort, since they
   are unreadable already; the sweeper takes any left over.

After step 2 a step that fails raises ``ShredIncomplete``, which says to run
the shred again; the tombstone lets the rerun find the tenant it was shredding.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from dwray.core.contracts import IdentityService
from dwray.core.models import TenantContext
from dwray.errors import DwrayError, InvalidArgument, KeyNotFound, KeyringError, KeyShredded, TenantNotFound

if TYPE_CHECKING:
    from dwray.core.warehouse import Warehouse

__all__ = ["ShredIncomplete", "ShredReport", "TenantHasBuckets", "shred_tenant"]


class TenantHasBuckets(InvalidArgument):
    """A tenant that owns buckets is shredded only when forced (its buckets and objects go with it)."""

    fields = ("tenant", "count", "buckets")
    template = ("tenant {tenant!r} still owns {count} bucket(s) ({buckets}); delete them first, or shred "
                "with --force (force=true) to delete them and everything in them")


class ShredIncomplete(KeyringError):
    """A shred stopped after the tenant was removed: run it again to finish."""

    fields = ("tenant", "step", "reason")
    template = ("tenant {tenant!r} is removed but the shred stopped while {step} ({reason}); "
                "run the shred of {tenant!r} again to finish it")


@dataclass(frozen=True)
class ShredReport:
    """What a shred destroyed."""

    tenant: str
    kek_id: str
    #: the KEK versions destroyed by this run (empty if an earlier run destroyed them, or none existed)
    kek_versions_destroyed: list[int] = field(default_factory=list)
    access_keys_removed: int = 0
    buckets_removed: list[str] = field(default_factory=list)
    object_versions_removed: int = 0
    blobs_deleted: int = 0

    def as_json(self) -> dict[str, object]:
        return {"tenant": self.tenant, "kek_id": self.kek_id, "kek_versions_destroyed": self.kek_versions_destroyed,
                "access_keys_removed": self.access_keys_removed, "buckets_removed": self.buckets_removed,
                "object_versions_removed": self.object_versions_removed, "blobs_deleted": self.blobs_deleted}


def shred_tenant(warehouse: Warehouse, identity: IdentityService, name: str, *, force: bool = False) -> ShredReport:
    """Crypto-shred tenant ``name`` (the steps are in the module's docstring) and report what went.

    ``TenantNotFound`` if there is no such tenant and never was one;
    ``InvalidArgument`` for the default tenant, which is never shredded.
    """
    ctx = TenantContext(name)
    if name == warehouse.config.default_tenant:
        raise InvalidArgument(f"tenant {name!r} is the default tenant and cannot be shredded")
    try:
        identity.get_tenant(name)
        resuming = False
    except TenantNotFound:
        resuming = True  # a shred to finish, or no tenant at all: shred_tenant below tells which
    buckets = [bucket.name for bucket in warehouse.list_buckets(tenant=ctx)]
    if buckets and not force and not resuming:
        shown = ", ".join(repr(bucket) for bucket in buckets[:5]) + (" ..." if len(buckets) > 5 else "")
        raise TenantHasBuckets(name, len(buckets), shown)
    tombstone = identity.shred_tenant(name)

    step = "dropping its buckets"
    try:
        removed_versions = 0
        # Listed again: a bucket made in the moment before the tenant's keys went goes too.
        buckets = [bucket.name for bucket in warehouse.list_buckets(tenant=ctx)]
        for bucket in buckets:
            removed_versions += warehouse.catalog.drop_bucket(name, bucket)
        # Its quota goes too: a tenant created later with the name starts without limits.
        warehouse.catalog.set_quota(name, None, {"max_bytes": None, "max_objects": None, "max_buckets": None})
        step = "destroying its key"
        destroyed = _destroy_key(warehouse, tombstone.kek_id)
    except DwrayError as error:
        raise ShredIncomplete(name, step, f"{type(error).__name__}: {error}") from None
    return ShredReport(name, tombstone.kek_id, destroyed, tombstone.access_keys_removed, buckets, removed_versions,
                       _delete_blobs(warehouse, ctx))


def _destroy_key(warehouse: Warehouse, kek_id: str) -> list[int]:
    """Destroy every version of ``kek_id``; return the versions there were (none if already destroyed)."""
    try:
        versions = list(warehouse.keyring.describe(kek_id)["versions"])
    except (KeyShredded, KeyNotFound):
        versions = []  # destroyed by an earlier run, or never made (the tenant stored nothing)
    warehouse.keyring.destroy(kek_id)
    warehouse.data_keys.forget(kek_id)
    return versions


def _delete_blobs(warehouse: Warehouse, ctx: TenantContext) -> int:
    """Delete the tenant's blobs now (none is referenced any more); what fails is left to the sweeper."""
    try:
        return warehouse.sweep(grace_seconds=0, tenant=ctx).deleted
    except DwrayError:
        return 0
