"""Hard quotas: per tenant and per bucket limits, checked in the transaction that commits a write.

Usage is kept by triggers (schema migration 5, ``bucket_usage``) in the same
transaction as every change to objects and multipart parts. A write takes a
snapshot of the usage of its bucket and tenant, makes its change, and reads the
usage again before the transaction commits: if a limit is now passed and the
write grew what it limits, ``QuotaExceeded`` is raised and the transaction (or
the record's savepoint) rolls back. SQLite's write lock serializes writers, so
no number of concurrent writers can take usage past a limit together. A write
that shrinks usage (a delete, a smaller overwrite) always passes, even while a
lowered limit is still exceeded.
"""
from __future__ import annotations

import sqlite3
from typing import Any

from dwray.core.catalog.outbox import NEAR_LIMIT, publish_in
from dwray.errors import BucketNotFound, InvalidArgument, QuotaExceeded

__all__ = ["LIMITS", "QuotaQueries", "Usage", "check_buckets_in", "check_in", "parse_limit", "usage_in"]

#: the limits a quota may set; ``max_buckets`` only for a tenant
LIMITS = ("max_bytes", "max_objects", "max_buckets")

#: (tenant bytes, tenant objects, bucket bytes, bucket objects)
Usage = tuple[int, int, int, int]


def usage_in(db: sqlite3.Connection, tenant: str, bucket: str) -> Usage:
    tenant_row = db.execute("SELECT COALESCE(SUM(bytes), 0), COALESCE(SUM(objects), 0) FROM bucket_usage "
                            "WHERE tenant = ?", (tenant,)).fetchone()
    bucket_row = db.execute("SELECT bytes, objects FROM bucket_usage WHERE tenant = ? AND bucket = ?",
                            (tenant, bucket)).fetchone() or (0, 0)
    return (tenant_row[0], tenant_row[1], bucket_row[0], bucket_row[1])


def _limits_in(db: sqlite3.Connection, tenant: str, bucket: str) -> dict[str, int | None]:
    row = db.execute("SELECT max_bytes, max_objects, max_buckets FROM quotas WHERE tenant = ? AND bucket = ?",
                     (tenant, bucket)).fetchone()
    return dict(zip(LIMITS, row or (None, None, None), strict=True))


def _scope(tenant: str, bucket: str) -> str:
    return f"bucket {bucket!r} of tenant {tenant!r}" if bucket else f"tenant {tenant!r}"


def check_in(db: sqlite3.Connection, tenant: str, bucket: str, before: Usage) -> None:
    """``QuotaExceeded`` if the change since ``before`` grew a usage past its limit (bucket first).

    A change that takes a usage from below ``NEAR_LIMIT`` of its limit to at or above it (and not
    past it) adds a ``quota.near_limit`` event to the outbox, in the same transaction.
    """
    after = usage_in(db, tenant, bucket)
    near = []
    for scope_bucket, offset in ((bucket, 2), ("", 0)):
        limits = _limits_in(db, tenant, scope_bucket)
        for what, index in (("bytes", offset), ("objects", offset + 1)):
            limit = limits[f"max_{what}"]
            if limit is not None and after[index] > limit and after[index] > before[index]:
                raise QuotaExceeded(_scope(tenant, scope_bucket), what, limit, after[index])
            if limit is not None and before[index] < NEAR_LIMIT * limit <= after[index]:
                near.append({"tenant": tenant, "bucket": scope_bucket or None, "what": what, "limit": limit,
                             "usage": after[index]})
    for payload in near:
        publish_in(db, "quota.near_limit", f"{tenant}/{payload['bucket'] or ''}", payload)


def check_buckets_in(db: sqlite3.Connection, tenant: str) -> None:
    """``QuotaExceeded`` if the tenant now owns more buckets than its quota allows."""
    limit = _limits_in(db, tenant, "")["max_buckets"]
    if limit is not None:
        count = db.execute("SELECT COUNT(*) FROM buckets WHERE tenant = ?", (tenant,)).fetchone()[0]
        if count > limit:
            raise QuotaExceeded(_scope(tenant, ""), "buckets", limit, count)


def parse_limit(name: str, value: Any) -> int | None:
    """A limit as a person writes it (``10MiB``, ``1000``, ``0`` or ``none``: no limit) as stored.

    Sizes take units only for ``max_bytes``; counts are plain integers.
    """
    from dwray.config import parse_size

    if isinstance(value, str):
        text = value.strip()
        if text.lower() in ("none", "0", ""):
            return None
        try:
            value = parse_size(text) if name == "max_bytes" else int(text)
        except ValueError:
            unit = " (a number of bytes, or with a unit: 10MiB, 2GB)" if name == "max_bytes" else ""
            raise InvalidArgument(f"quota {name} must be a non-negative integer{unit} or 'none', "
                                  f"not {value!r}") from None
    return _clean_limit(name, value)


def _clean_limit(name: str, value: Any) -> int | None:
    """A limit as stored: a non-negative integer, or ``None`` (no limit) for ``None`` or 0."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidArgument(f"quota {name} must be a non-negative integer or None, not {value!r}")
    return value or None


class QuotaQueries:
    """The catalog's quota operations (a mixin over ``SqliteStore``: ``_write`` and ``_read``)."""

    _write: Any
    _read: Any

    def set_quota(self, tenant: str, bucket: str | None, limits: dict[str, int | None]) -> dict[str, Any]:
        """Set some limits of a tenant's (``bucket`` None) or a bucket's quota; return the quota.

        Limits not named stay as they are; ``None`` or 0 clears one. A bucket
        quota needs the bucket (``BucketNotFound``) and has no ``max_buckets``.
        Setting a limit below the current usage refuses only writes that grow it.
        """
        if not isinstance(limits, dict) or not limits:
            raise InvalidArgument("a quota change must name at least one of " + ", ".join(LIMITS))
        unknown = sorted(set(limits) - set(LIMITS))
        if unknown:
            raise InvalidArgument(f"unknown quota limit(s) {unknown}; known: {', '.join(LIMITS)}")
        if bucket is not None and limits.get("max_buckets") is not None:
            raise InvalidArgument("max_buckets is a tenant limit; a bucket quota cannot set it")
        clean = {name: _clean_limit(name, value) for name, value in limits.items()}
        scope = bucket or ""
        with self._write() as db:
            if bucket is not None and not db.execute("SELECT 1 FROM buckets WHERE tenant = ? AND name = ?",
                                                     (tenant, bucket)).fetchone():
                raise BucketNotFound(bucket)
            current = _limits_in(db, tenant, scope)
            current.update(clean)
            if all(value is None for value in current.values()):
                db.execute("DELETE FROM quotas WHERE tenant = ? AND bucket = ?", (tenant, scope))
            else:
                db.execute("INSERT OR REPLACE INTO quotas (tenant, bucket, max_bytes, max_objects, max_buckets) "
                           "VALUES (?, ?, ?, ?, ?)", (tenant, scope, *(current[name] for name in LIMITS)))
        return self.quota(tenant, bucket)

    def quota(self, tenant: str, bucket: str | None = None) -> dict[str, Any]:
        """A tenant's (or one bucket's) limits and usage; a tenant's also lists its buckets'."""
        if bucket is not None:
            row = self._read("SELECT objects, bytes FROM bucket_usage WHERE tenant = ? AND bucket = ?",
                             (tenant, bucket))
            if not row:
                raise BucketNotFound(bucket)
            return {"tenant": tenant, "bucket": bucket, "limits": self._limits(tenant, bucket),
                    "usage": {"bytes": row[0][1], "objects": row[0][0]}}
        rows = self._read("SELECT bucket, objects, bytes FROM bucket_usage WHERE tenant = ? ORDER BY bucket",
                          (tenant,))
        bucket_limits = {name: dict(zip(LIMITS[:2], limits, strict=True)) for name, *limits in self._read(
            "SELECT bucket, max_bytes, max_objects FROM quotas WHERE tenant = ? AND bucket != ''", (tenant,))}
        return {
            "tenant": tenant, "bucket": None, "limits": self._limits(tenant, ""),
            "usage": {"bytes": sum(row[2] for row in rows), "objects": sum(row[1] for row in rows),
                      "buckets": len(rows)},
            "buckets": {name: {"limits": bucket_limits.get(name, {"max_bytes": None, "max_objects": None}),
                               "usage": {"bytes": size, "objects": count}} for name, count, size in rows},
        }

    def quota_tenants(self) -> list[str]:
        """Every tenant that owns a bucket or has a quota set."""
        return [row[0] for row in self._read("SELECT tenant FROM bucket_usage UNION SELECT tenant FROM quotas "
                                             "ORDER BY 1")]

    def recount_usage(self, tenant: str) -> dict[str, int]:
        """The tenant's usage counted from its object and part rows, not the triggers' tally (for audits)."""
        objects = self._read("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM objects "
                             "WHERE tenant = ? AND delete_marker = 0", (tenant,))[0]
        parts = self._read("SELECT COALESCE(SUM(p.size), 0) FROM multipart_parts p JOIN multipart_uploads u "
                           "ON u.upload_id = p.upload_id WHERE u.tenant = ?", (tenant,))[0]
        return {"objects": objects[0], "bytes": objects[1] + parts[0]}

    def _limits(self, tenant: str, bucket: str) -> dict[str, int | None]:
        row = self._read("SELECT max_bytes, max_objects, max_buckets FROM quotas WHERE tenant = ? AND bucket = ?",
                         (tenant, bucket))
        limits = dict(zip(LIMITS, row[0] if row else (None, None, None), strict=True))
        if bucket:
            limits.pop("max_buckets")
        return limits
