"""Keeping a warehouse healthy: KEK rotation, rewrap and retirement, the sweep of unreferenced
blobs, and usage figures."""
from __future__ import annotations

import time
from pathlib import Path

from dwray.core.catalog import WrappedKey
from dwray.core.frames import KeyHeader
from dwray.core.models import SweepReport
from dwray.core.warehouse.base import TenantArg, WarehouseBase
from dwray.core.warehouse.tracing import traced
from dwray.errors import DwrayError, KeyringError

__all__ = ["Maintenance"]


class Maintenance(WarehouseBase):
    """The key and storage maintenance operations of the warehouse."""

    @traced("rotate_keys")
    def rotate_keys(self, *, tenant: TenantArg = None) -> int:
        """Make a new primary KEK version for the tenant's new writes; return it."""
        ctx = self._tenant(tenant)
        self.keyring.ensure(ctx.kek_id)
        return self.keyring.rotate(ctx.kek_id)

    @traced("rewrap")
    def rewrap(self, *, tenant: TenantArg = None) -> int:
        """Re-wrap every DEK under the tenant's primary KEK version, touching no data; return how many."""
        ctx = self._tenant(tenant)
        primary = self.keyring.ensure(ctx.kek_id)
        count = 0
        for record in self.catalog.iter_wrapped_below(ctx.kek_id, primary):
            if isinstance(record, WrappedKey):
                sealed_header = record.key_header
            else:
                # An object row wrapped under a KEK holds the one blob of its own.
                assert record.placement is not None
                sealed_header = record.placement.key_header
            header = KeyHeader.from_bytes(sealed_header)
            dek = self.keyring.unwrap(header.kek_id, header.kek_version, header.wrapped_dek)
            version, wrapped = self.keyring.wrap(ctx.kek_id, dek)
            if self.catalog.replace_key_header(record, header.with_wrapped(version, wrapped).to_bytes(), version):
                count += 1
        return count

    def retire_keys(self, minimum: int, *, tenant: TenantArg = None) -> None:
        """Refuse to decrypt with KEK versions below ``minimum`` from now on.

        Refused while any object's DEK is still wrapped under such a version
        (run ``rewrap`` first), so retiring never makes data unreadable.
        """
        ctx = self._tenant(tenant)
        remaining = self.catalog.count_wrapped_below(ctx.kek_id, minimum)
        if remaining:
            raise KeyringError(f"{remaining} object(s) of tenant {ctx.tenant!r} are still wrapped under KEK "
                               f"versions below {minimum}; run rewrap first")
        self.keyring.retire_below(ctx.kek_id, minimum)

    @traced("sweep")
    def sweep(self, *, grace_seconds: float | None = None, tenant: TenantArg | str = "*") -> SweepReport:
        """Delete blobs that no committed row references and that are older than the grace period.

        ``tenant="*"`` (default) sweeps the whole backend; a tenant sweeps only its blobs.
        """
        grace = self.config.sweeper.grace_seconds if grace_seconds is None else grace_seconds
        cutoff = time.time() - grace
        prefix = "" if tenant == "*" else f"{self._tenant(tenant).tenant}/"
        referenced = self.catalog.referenced_blobs(self.backend_name)
        deleted = young = kept = 0
        for blob_id in list(self.backend.list_blobs(prefix)):
            if blob_id in referenced:
                kept += 1
                continue
            try:
                stat = self.backend.stat_blob(blob_id)
            except DwrayError:
                continue
            if stat.mtime > cutoff:
                young += 1
            elif not self.catalog.is_referenced(self.backend_name, blob_id):
                self.backend.delete_blob(blob_id)
                deleted += 1
        temp_files = 0
        sweep_temp = getattr(self.backend, "sweep_temp_files", None)
        if sweep_temp is not None:
            temp_files = sweep_temp(grace)
        return SweepReport(deleted, young, kept, temp_files)

    def stats(self, *, tenant: TenantArg = None) -> dict[str, int]:
        """The tenant's object versions (live and noncurrent) and their bytes, and its uploads in
        progress and their parts' bytes: ``objects``, ``bytes``, ``uploads``, ``upload_bytes``."""
        return self.catalog.stats(self._tenant(tenant).tenant)

    def storage_path(self) -> Path | None:
        """Where a local backend keeps blobs (for ``dw demo``), else ``None``."""
        root = getattr(self.backend, "root", None)
        return Path(root) if root is not None else None
