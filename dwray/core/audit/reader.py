"""The audit log read-only, as ``dw audit`` reads it while the warehouse keeps writing.

It opens the database with SQLite's ``mode=ro``: nothing here can change the
log, and the writer (the warehouse, or its ``service.audit`` plugin) is not
disturbed. Each method reads one consistent snapshot.
"""
from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from typing import Any

from dwray.core.audit.checkpoints import SignedCheckpoint, canonical_json
from dwray.core.audit.locations import AuditLocations
from dwray.errors import CatalogError

__all__ = ["AuditReader", "StoredCheckpoint"]

StoredCheckpoint = tuple[int, SignedCheckpoint | None]  # (size column, parsed checkpoint or None if malformed)


class AuditReader:
    """Read access to the audit log of ``locations``."""

    def __init__(self, locations: AuditLocations) -> None:
        self.locations = locations
        path = locations.database
        if not path.exists():
            raise CatalogError(f"no audit log at {path} (the warehouse writes one when [audit] enabled = true)")
        try:
            self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
            self._db.execute("SELECT count(*) FROM entries").fetchone()
        except sqlite3.Error as exc:
            raise CatalogError(f"cannot read audit log {path}: {exc}") from None

    def __enter__(self) -> AuditReader:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        try:
            return self._db.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise CatalogError(f"audit log read failed: {exc}") from None

    def size(self) -> int:
        return self._query("SELECT count(*) FROM entries")[0][0]

    def rows(self) -> Iterator[tuple[int, str, bytes]]:
        """Every stored ``(seq, record text, leaf hash)`` in seq order, as stored (for verifying)."""
        cursor = self._db.execute("SELECT seq, record, leaf FROM entries ORDER BY seq")
        while batch := cursor.fetchmany(4096):
            for seq, record, leaf in batch:
                yield int(seq), str(record), bytes(leaf)

    def entry(self, seq: int) -> tuple[str, bytes] | None:
        rows = self._query("SELECT record, leaf FROM entries WHERE seq = ?", (seq,))
        return (str(rows[0][0]), bytes(rows[0][1])) if rows else None

    def leaves(self, size: int) -> list[bytes]:
        return [bytes(leaf) for (leaf,) in self._query("SELECT leaf FROM entries WHERE seq < ? ORDER BY seq", (size,))]

    def tail(self, count: int) -> list[dict[str, Any]]:
        rows = self._query("SELECT record FROM entries ORDER BY seq DESC LIMIT ?", (count,))
        return [json.loads(record) for (record,) in reversed(rows)]

    def query(self, *, tenant: str | None = None, action: str | None = None, since: float | None = None,
              until: float | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """Records matching every filter given, oldest first (``action`` matches ``s3:GetObject`` or ``GetObject``)."""
        where, params = [], []
        if tenant is not None:
            where.append("json_extract(record, '$.tenant') = ?")
            params.append(tenant)
        if action is not None:
            where.append("(json_extract(record, '$.action') = ? OR json_extract(record, '$.action') LIKE ?)")
            params += [action, f"%:{action}"]
        if since is not None:
            where.append("json_extract(record, '$.time') >= ?")
            params.append(since)
        if until is not None:
            where.append("json_extract(record, '$.time') < ?")
            params.append(until)
        sql = "SELECT record FROM entries" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY seq"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [json.loads(record) for (record,) in self._query(sql, tuple(params))]

    def checkpoints(self) -> list[StoredCheckpoint]:
        """The checkpoints stored in the log, smallest first."""
        found: list[StoredCheckpoint] = []
        for size, body, signature, key_id in self._query(
                "SELECT size, body, signature, key_id FROM checkpoints ORDER BY size"):
            try:
                text = canonical_json({"checkpoint": json.loads(body), "signature": bytes(signature).hex(),
                                       "key_id": str(key_id)})
                found.append((int(size), SignedCheckpoint.from_json(text)))
            except (TypeError, ValueError):
                found.append((int(size), None))
        return found
