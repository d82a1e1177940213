"""The catalog: which buckets and objects exist, and where their sealed bytes are.

SQLite in WAL mode. A row in ``objects`` is the moment an object exists: the
warehouse commits it only after the blob it points at is durable. Durability
settings, and why:

- ``journal_mode=WAL``: readers never block the writer, and a commit is one
  append to the WAL rather than a rewrite of pages.
- ``synchronous=FULL`` (default; ``EXTRA`` allowed): every commit fsyncs the WAL
  before it returns, so an acknowledged write survives power loss, not only a
  crash of the process (``NORMAL`` in WAL mode may lose the last commits on
  power loss).
- ``foreign_keys=ON`` and ``busy_timeout``: several processes may open the same
  catalog; writers wait for each other instead of failing.

A multipart object is an ``objects`` row without a placement of its own
(``parts`` > 0) and one ``object_segments`` row per part, each a blob sealed
under its own DEK; the segments go when the object row goes (``ON DELETE
CASCADE``). Uploads in progress are ``multipart_uploads`` with their
``multipart_parts``; ``completed_uploads`` remembers recent completions so a
completion retried after a lost reply gets the same object back. A small
object may be *inline*: its sealed records in its row's ``inline_data``
(backend ``INLINE_BACKEND``, no blob), stored by one commit with no blob to
write or sweep; parts and segments never are.

Every row is scoped by tenant; no query reads across tenants except the
sweeper's ``referenced_blobs``, the key rewrap's ``wrapped_below_page`` (both
read placements and key headers only) and ``tenant_stats``. Tenants themselves
are registered in the identity store alone; the catalog knows a tenant by the
buckets it owns.

Every change the message bus reports (buckets and object versions created or
removed) also writes an ``event_outbox`` row in its own transaction, so an
acknowledged write always has its event (``outbox``); buckets keep their S3
notification rules there too.

Hard quotas (``quotas``) are checked in the transaction that commits each
write: usage per bucket (every stored version, and uploaded parts) is kept by
triggers, so no number of concurrent writers can pass a limit together.

Modules: ``schema`` (migrations), ``records`` (the rows as frozen records, each
blob's ``Placement``), ``paging`` (iteration over paged queries, shared with
the remote proxy), ``quotas`` (limits, usage and their checks), ``store``
(the ``Catalog`` and its queries) and ``reader`` (the catalog read-only, for
callers on its node: no round trip to the catalog service).
"""
from dwray.core.catalog.outbox import OutboxEvent
from dwray.core.catalog.paging import PagedReads
from dwray.core.catalog.reader import CatalogReader, LocalReadUnavailable
from dwray.core.catalog.records import (
    INLINE_BACKEND,
    NULL_VERSION,
    BucketRecord,
    DeleteOutcome,
    ObjectRecord,
    PartRecord,
    Placement,
    SegmentRecord,
    UploadRecord,
    WrappedKey,
    WriteCondition,
)
from dwray.core.catalog.schema import MIGRATIONS, SCHEMA_VERSION
from dwray.core.catalog.store import Catalog

__all__ = [
    "INLINE_BACKEND",
    "MIGRATIONS",
    "NULL_VERSION",
    "SCHEMA_VERSION",
    "BucketRecord",
    "Catalog",
    "CatalogReader",
    "DeleteOutcome",
    "LocalReadUnavailable",
    "ObjectRecord",
    "OutboxEvent",
    "PagedReads",
    "PartRecord",
    "Placement",
    "SegmentRecord",
    "UploadRecord",
    "WrappedKey",
    "WriteCondition",
]
