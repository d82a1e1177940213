"""Keeping a warehouse healthy: KEK rotation, rewrap and retirement, the expiry of abandoned
multipart uploads, the sweep of unreferenced blobs, and usage figures."""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dwray.core.catalog import ObjectRecord, WrappedKey
from dwray.core.frames import KeyHeader
from dwray.core.models import SweepReport
from dwray.core.scrubbing import run_pass, save_report
from dwray.core.warehouse.access import operator_only
from dwray.core.warehouse.base import TenantArg, WarehouseBase
from dwray.core.warehouse.tracing import traced
from dwray.errors import (
    BucketNotFound,
    DwrayError,
    InvalidArgument,
    KeyringError,
    KeyShredded,
    UploadNotFound,
)

log = logging.getLogger(__name__)

__all__ = ["EXPIRE_BATCH", "REWRAP_BATCH", "Maintenance"]

# DEKs a rewrap reads per catalog page (and reports progress after).
REWRAP_BATCH = 500
# Expired uploads read per catalog page.
EXPIRE_BATCH = 500


class Maintenance(WarehouseBase):
    """The key and storage maintenance operations of the warehouse."""

    @traced("rotate_keys")
    @operator_only("RotateKeys")
    def rotate_keys(self, *, tenant: TenantArg = None) -> int:
        """Make a new primary KEK version for the tenant's new writes; return it."""
        ctx = self._tenant(tenant)
        self.keyring.ensure(ctx.kek_id)
        version = self.keyring.rotate(ctx.kek_id)
        self.data_keys.forget(ctx.kek_id)  # this process's next writes wrap a bucket key under the new version
        self._key_rotated(ctx.kek_id, version, ctx.tenant)
        return version

    @traced("rotate_all_keys")
    @operator_only("RotateKeys")
    def rotate_all_keys(self) -> dict[str, int]:
        """Rotate every live KEK the key service holds (tenants' and the system's); return each new primary.

        A KEK shredded meanwhile (a tenant removed with ``--shred``) is passed over.
        """
        rotated = {}
        for kek_id in self.keyring.kek_ids():
            try:
                rotated[kek_id] = self.keyring.rotate(kek_id)
            except KeyShredded:
                continue
            self._key_rotated(kek_id, rotated[kek_id])
        self.data_keys.forget()
        return rotated

    def _key_rotated(self, kek_id: str, version: int, tenant: str | None = None) -> None:
        """Report a rotation on the message bus (``key.rotated``, through the catalog's outbox). The rotation
        is done whatever happens here: a failure to report it is logged, not raised."""
        try:
            self.catalog.outbox_publish("key.rotated", kek_id, {"kek_id": kek_id, "version": version,
                                                                **({"tenant": tenant} if tenant else {})})
        except DwrayError as exc:
            log.warning("key %s rotated to version %d, but the key.rotated event was not recorded: %s",
                        kek_id, version, exc)

    @traced("rewrap")
    @operator_only("Rewrap")
    def rewrap(self, *, tenant: TenantArg = None, batch: int = REWRAP_BATCH,
               progress: Callable[[int, int], None] | None = None) -> int:
        """Re-wrap every DEK of the tenant under its primary KEK version; return how many moved.

        Only the DEKs change (``KeyService.rewrap``: inside Vault for Transit),
        never object data. It works ``batch`` rows at a time, each row's new key
        header committed on its own (compare and set, so a row changed meanwhile
        is left to the next pass), so an interrupted run loses nothing and a
        second run continues with the rows still below the primary.
        ``progress(done, total)`` is called after each batch.
        """
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise InvalidArgument(f"rewrap batch must be a positive int, not {batch!r}")
        ctx = self._tenant(tenant)
        primary = self.keyring.ensure(ctx.kek_id)
        total = self.catalog.count_wrapped_below(ctx.kek_id, primary)
        if progress is not None:
            progress(0, total)
        done = 0
        previous: list[bytes] = []
        # Objects sealed under one bucket key share its wrapped bytes: rewrapped once per run, so
        # they keep sharing them (and one cached unwrap) afterwards.
        rewrapped: dict[tuple[int, bytes], tuple[int, bytes]] = {}
        while page := self.catalog.wrapped_below_page(ctx.kek_id, primary, batch):
            headers = [_sealed_header(record) for record in page]
            if headers == previous:
                # The same rows, unchanged, after a whole pass: they cannot be moved.
                raise KeyringError(f"rewrap of tenant {ctx.tenant!r} makes no progress on {len(page)} row(s) "
                                   f"still wrapped below version {primary}")
            previous = headers
            for record, sealed in zip(page, headers, strict=True):
                header = KeyHeader.from_bytes(sealed)
                known = (header.kek_version, header.wrapped_dek)
                if known not in rewrapped:
                    rewrapped[known] = self.keyring.rewrap(header.kek_id, header.kek_version, header.wrapped_dek)
                version, wrapped = rewrapped[known]
                if self.catalog.replace_key_header(record, header.with_wrapped(version, wrapped).to_bytes(), version):
                    done += 1
            if progress is not None:
                progress(done, max(total, done))
        return done

    @operator_only("GetKeyUsage")
    def wrapped_by_version(self, below: int, *, tenant: TenantArg = None) -> dict[int, int]:
        """How many DEKs (of objects, segments and parts) are wrapped under each KEK version below ``below``."""
        if isinstance(below, bool) or not isinstance(below, int) or below < 1:
            raise InvalidArgument(f"a KEK version must be a positive int, not {below!r}")
        ctx = self._tenant(tenant)
        counts, under = {}, 0
        for version in range(1, below):
            # Counts below version+1 include those below version: the difference is this version's.
            up_to = self.catalog.count_wrapped_below(ctx.kek_id, version + 1)
            counts[version] = up_to - under
            under = up_to
        return counts

    @operator_only("RetireKeys")
    def retire_keys(self, minimum: int, *, tenant: TenantArg = None) -> None:
        """Refuse to decrypt with KEK versions below ``minimum`` from now on.

        Refused while any object's DEK is still wrapped under such a version
        (run ``rewrap`` first), so retiring never makes data unreadable; the
        refusal says how many are left under each version.
        """
        ctx = self._tenant(tenant)
        remaining = {version: count for version, count in self.wrapped_by_version(minimum, tenant=ctx).items()
                     if count}
        if remaining:
            where = ", ".join(f"{count} under version {version}" for version, count in sorted(remaining.items()))
            raise KeyringError(f"{sum(remaining.values())} object(s) of tenant {ctx.tenant!r} are still wrapped "
                               f"under KEK versions below {minimum} ({where}); run rewrap first")
        self.keyring.retire_below(ctx.kek_id, minimum)
        self.data_keys.forget(ctx.kek_id)

    @traced("sweep")
    @operator_only("Sweep")
    def sweep(self, *, grace_seconds: float | None = None, tenant: TenantArg | str = "*") -> SweepReport:
        """Delete blobs that no committed row references and that are older than the grace period,
        on every storage target.

        ``tenant="*"`` (default) sweeps the whole backend; a tenant sweeps only its blobs.
        """
        grace = self.config.sweeper.grace_seconds if grace_seconds is None else grace_seconds
        cutoff = time.time() - grace
        prefix = "" if tenant == "*" else f"{self._tenant(tenant).tenant}/"
        deleted = young = referenced_count = temp_files = 0
        for target, backend in self.storages.items():
            referenced = self.catalog.referenced_blobs(target)
            for blob_id in list(backend.list_blobs(prefix)):
                if blob_id in referenced:
                    referenced_count += 1
                    continue
                try:
                    stat = backend.stat_blob(blob_id)
                except DwrayError:
                    continue
                if stat.mtime > cutoff:
                    young += 1
                elif not self.catalog.is_referenced(target, blob_id):
                    backend.delete_blob(blob_id)
                    deleted += 1
            sweep_temp = getattr(backend, "sweep_temp_files", None)
            if sweep_temp is not None:
                temp_files += sweep_temp(grace)
        return SweepReport(deleted, young, referenced_count, temp_files)

    @traced("scrub")
    @operator_only("Scrub")
    def scrub(self, *, rate: int | None = None, stop: threading.Event | None = None,
              on_step: Callable[[str, dict[str, Any]], None] | None = None, tenant: str = "*") -> dict[str, Any]:
        """One scrub pass over every storage target now (``dwray.core.scrubbing``), at most ``rate``
        (default ``[scrub] rate``) bytes per second; the report is also kept for ``dw scrub --report``.
        Storage is scrubbed whole: ``tenant`` is ``"*"`` (it names the resource audited)."""
        _whole_storage(tenant)
        report = run_pass(self.storages, rate=rate or self.config.scrub.rate,
                          grace_seconds=self.config.scrub.grace_seconds, stop=stop, on_step=on_step)
        save_report(self.config.data_dir, report)
        return report

    @operator_only("MoveTiers")
    def move_tiers(self, max_bytes: int | None = None, *, tenant: str = "*") -> dict[str, dict[str, Any]]:
        """Move what is due to the cold tier in every tiered pool now; what each pool moved."""
        _whole_storage(tenant)
        return {target: backend.move_due(max_bytes) for target, backend in self.storages.items()
                if self.config.pools.get(target) is not None and self.config.pools[target].kind == "tiered"}

    @traced("expire_uploads")
    @operator_only("ExpireUploads")
    def expire_uploads(self, older_than: float | None = None, *, tenant: TenantArg | str = "*") -> int:
        """Abort multipart uploads begun more than ``older_than`` seconds ago; return how many.

        ``tenant="*"`` (default) expires every tenant's, as ``sweep`` sweeps every tenant's blobs.

        ``None`` takes ``[limits] multipart_upload_expiry`` (0 there: expire nothing).
        Each goes through ``abort_multipart_upload``, the path a client's abort
        takes, so whatever an abort releases (rows, reservations) is released
        here too, and the parts' blobs are left unreferenced for the next sweep.
        An upload completed or aborted meanwhile is simply passed over.
        """
        if older_than is None:
            older_than = self.config.limits.multipart_upload_expiry
            if older_than == 0:
                return 0
        if isinstance(older_than, bool) or not isinstance(older_than, int | float) or not older_than >= 0:
            raise InvalidArgument(f"older_than must be a number of seconds >= 0, not {older_than!r}")
        cutoff = time.time() - older_than
        only = None if tenant == "*" else self._tenant(tenant).tenant
        abort = getattr(self, "abort_multipart_upload")  # noqa: B009 - a sibling mixin of Warehouse
        expired = 0
        while page := self.catalog.uploads_initiated_before(cutoff, EXPIRE_BATCH, only):
            for upload in page:
                try:
                    abort(upload.bucket, upload.key, upload.upload_id, tenant=upload.tenant)
                    expired += 1
                except (UploadNotFound, BucketNotFound):
                    continue
            if len(page) < EXPIRE_BATCH:
                break
        return expired

    @operator_only("GetStats")
    def stats(self, *, tenant: TenantArg = None) -> dict[str, int]:
        """The tenant's object versions (live and noncurrent) and their bytes, and its uploads in
        progress and their parts' bytes: ``objects``, ``bytes``, ``uploads``, ``upload_bytes``."""
        return self.catalog.stats(self._tenant(tenant).tenant)

    def storage_path(self) -> Path | None:
        """Where a local backend keeps blobs (for ``dw demo``), else ``None``."""
        root = getattr(self.backend, "root", None)
        return Path(root) if root is not None else None


def _whole_storage(tenant: object) -> None:
    if tenant != "*":
        raise InvalidArgument(f"storage is scrubbed and tiered whole: tenant must be '*', not {tenant!r}")


def _sealed_header(record: ObjectRecord | WrappedKey) -> bytes:
    """The key header a row holds: a segment's or part's own, or an object's one blob's."""
    if isinstance(record, WrappedKey):
        return record.key_header
    # An object row wrapped under a KEK holds the one blob of its own.
    if record.placement is None:
        raise KeyringError(f"object {record.bucket}/{record.key} has a KEK but no placement")
    return record.placement.key_header
