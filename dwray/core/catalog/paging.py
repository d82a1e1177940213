"""Iteration over the catalog's paged queries, written once for the catalog and its remote proxy."""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator

from dwray.core.catalog.records import ObjectRecord, WrappedKey

__all__ = ["PagedReads"]


class PagedReads(ABC):
    """Iteration built on the two paged queries, shared by ``Catalog`` and its remote proxy."""

    @abstractmethod
    def latest_page(self, tenant: str, bucket: str, prefix: str = "", start: str | None = None,
                    inclusive: bool = True, limit: int = 1000) -> list[ObjectRecord]:
        """Up to ``limit`` live latest versions under ``prefix``, from ``start`` on, in key order."""

    @abstractmethod
    def wrapped_below_page(self, kek_id: str, version: int,
                           limit: int = 500) -> list[ObjectRecord | WrappedKey]:
        """Up to ``limit`` rows whose DEK is wrapped under ``kek_id`` below ``version``."""

    def iter_latest(self, tenant: str, bucket: str, *, prefix: str = "", start: str | None = None,
                    inclusive: bool = True, batch: int = 1000) -> Iterator[ObjectRecord]:
        """Every live latest version under ``prefix`` from ``start`` on, in key order, page by page."""
        while True:
            page = self.latest_page(tenant, bucket, prefix, start, inclusive, batch)
            yield from page
            if len(page) < batch:
                return
            start, inclusive = page[-1].key, False

    def iter_wrapped_below(self, kek_id: str, version: int, batch: int = 500) -> Iterator[ObjectRecord | WrappedKey]:
        """Rows wrapped below ``version``, re-queried until none is left (callers rewrap them)."""
        while page := self.wrapped_below_page(kek_id, version, batch):
            yield from page
