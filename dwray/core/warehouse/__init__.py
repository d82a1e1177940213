"""The warehouse core: buckets and objects for tenants, in one process.

Every operation takes a tenant (``TenantContext``, a tenant name, or ``None``
for the configured default tenant). Catalog rows and blob ids are scoped by it:
blob ids start with the tenant's name and each tenant has its own KEK.

``Warehouse`` is composed of one class per concern, each in its own module:

- ``base``: the state (config, backend, catalog, keyring, frame engine), the
  tenant of an operation, and the bucket cache;
- ``buckets``: bucket operations;
- ``reads``: lookups, ranges and ``ObjectReader``;
- ``objects``: put, copy, delete, and sealing (the write path parts share);
- ``multipart``: multipart uploads;
- ``listing`` (over ``rollup``, S3's delimiter roll-up): keys, versions, uploads;
- ``tables``: Arrow tables as Parquet objects;
- ``maintenance``: KEK rotation, rewrap and retirement, sweep, stats;
- ``quotas``: hard quotas of tenants and buckets (the catalog enforces them);
- ``notifications``: S3 bucket notification rules (the message bus applies them);
- ``auditing``: the audit hook every checked operation reports its access to.

They are mixins over ``WarehouseBase`` rather than collaborators: the public
methods stay on one class (the Ray runtime subclasses it), with no forwarding,
and the state they share (a frame engine a test may swap, say) stays in one place.
"""
from __future__ import annotations

from dwray.core.warehouse.auditing import Auditing
from dwray.core.warehouse.buckets import Buckets
from dwray.core.warehouse.listing import Listing
from dwray.core.warehouse.maintenance import Maintenance
from dwray.core.warehouse.multipart import MultipartUploads
from dwray.core.warehouse.notifications import Notifications
from dwray.core.warehouse.quotas import Quotas
from dwray.core.warehouse.reads import ObjectReader
from dwray.core.warehouse.tables import Tables

__all__ = ["ObjectReader", "Warehouse"]


class Warehouse(Buckets, MultipartUploads, Tables, Listing, Maintenance, Quotas, Notifications, Auditing):
    """Buckets and objects of every tenant, stored sealed on one storage backend."""
