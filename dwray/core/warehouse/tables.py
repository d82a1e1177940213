"""Arrow tables stored as Parquet objects."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dwray.core.models import ObjectInfo
from dwray.core.warehouse.access import checked, object_rule, read_rule
from dwray.core.warehouse.base import TenantArg
from dwray.core.warehouse.objects import ObjectWrites
from dwray.core.warehouse.tracing import traced
from dwray.errors import InvalidArgument

__all__ = ["Tables"]


class Tables(ObjectWrites):
    """``put_table``/``get_table``: a table is one object, written and read as any other."""

    @traced("put_table")
    @checked(object_rule("s3:PutObject"))
    def put_table(self, bucket: str, key: str, table: Any, *, metadata: Mapping[str, str] | None = None,
                  compression: str = "zstd", tenant: TenantArg = None) -> ObjectInfo:
        """Store a ``pyarrow.Table`` as a Parquet object."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not isinstance(table, pa.Table):
            raise InvalidArgument(f"put_table takes a pyarrow.Table, not {type(table).__name__}")
        self._refuse_if_critical("a new write (put_table)")  # before the Parquet copy is made
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression=compression)
        buffer = sink.getvalue()
        return self.put(bucket, key, memoryview(buffer), content_type="application/vnd.apache.parquet",
                        metadata=metadata, tenant=tenant)

    @traced("get_table")
    @checked(read_rule())
    def get_table(self, bucket: str, key: str, *, columns: list[str] | None = None,
                  version_id: str | None = None, tenant: TenantArg = None) -> Any:
        """Read a Parquet object back as a ``pyarrow.Table``.

        The object's bytes are wrapped, not copied, as an Arrow buffer; the
        table's columns are decoded from it by Parquet.
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        data = self.get(bucket, key, version_id=version_id, tenant=tenant)
        try:
            return pq.read_table(pa.BufferReader(pa.py_buffer(data)), columns=columns)
        except pa.ArrowInvalid as exc:
            raise InvalidArgument(f"object {key!r} in bucket {bucket!r} is not a Parquet table: {exc}") from None
