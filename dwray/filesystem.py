"""``dwray://bucket/key``: the warehouse as an fsspec filesystem, for pandas, pyarrow and Ray Data.

Registered by the ``fsspec.specs`` entry point, so ``fsspec.filesystem("dwray", ...)``,
``pd.read_parquet("dwray://sales/2026.parquet", storage_options={...})`` and
``ray.data.read_parquet("dwray://sales/orders/", filesystem=fs)`` find it.
Where the warehouse is comes from the storage options (``dwray.filesystem_connect``):
``endpoint_url``/``access_key``/``secret_key`` for the gateway, none inside the Ray cluster,
or ``warehouse=`` for one this process has open. ``tenant`` is the tenant every
call acts for (``None``: the connection's own; a gateway key acts only as its tenant).

Buckets are the top-level directories; inside one, directories are implied by
``/`` in keys, as in S3: they exist while an object lies under them, ``mkdir`` in
a bucket creates nothing and ``rmdir`` only checks emptiness. Only the
warehouse API is used (``Warehouse`` in process or on Ray, ``GatewayWarehouse``
over S3), so the filesystem behaves the same over every client.

A missing bucket or key raises ``FileNotFoundError`` (fsspec's convention, which
pandas and pyarrow expect), chained from the dwray error that says which.
"""
from __future__ import annotations

import errno
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from fsspec.spec import AbstractFileSystem

from dwray.errors import (
    AlreadyExists,
    DeleteMarkerVersion,
    InvalidArgument,
    InvalidRange,
    NotFound,
    ObjectNotFound,
    PreconditionFailed,
)
from dwray.filesystem_connect import CONNECTION_OPTIONS, check_options, connection_for
from dwray.filesystem_io import DwrayFile

__all__ = ["DwrayFileSystem"]


class DwrayFileSystem(AbstractFileSystem):
    """fsspec's view of the warehouse: ``bucket/key`` paths, buckets as top-level directories."""

    protocol = "dwray"
    root_marker = ""
    # Instances are cheap (connections are shared per process, dwray.filesystem_connect) and one made
    # over an open warehouse= must never be handed to a caller who named another warehouse.
    cachable = False

    def __init__(self, *, endpoint_url: str | None = None, access_key: str | None = None,
                 secret_key: str | None = None, region: str | None = None, verify: bool | str | None = None,
                 address: str | None = None, namespace: str | None = None, tenant: str | None = None,
                 warehouse: Any = None, url: str | None = None, **kwargs: Any) -> None:
        """Storage options as the module docstring says; ``url`` is ``endpoint_url`` by
        ``dwray.connect``'s name (not usable through pandas); other keyword arguments go to fsspec."""
        super().__init__(**kwargs)
        if url is not None and endpoint_url is not None and url != endpoint_url:
            raise InvalidArgument("dwray:// options url and endpoint_url name the same thing: give one")
        self._options = {"endpoint_url": endpoint_url if endpoint_url is not None else url,
                         "access_key": access_key, "secret_key": secret_key, "region": region,
                         "verify": verify, "address": address, "namespace": namespace}
        check_options(self._options)
        if tenant is not None and (not isinstance(tenant, str) or not tenant):
            raise InvalidArgument("dwray:// option tenant must be a non-empty string")
        self.tenant = tenant
        self._warehouse = warehouse

    @property
    def storage_options(self) -> dict[str, Any]:
        """The options this filesystem was made with, less ``secret_key`` (fsspec shows them in
        ``to_json()`` and elsewhere; the secret goes only to the connection)."""
        return getattr(self, "_storage_options", {})

    @storage_options.setter
    def storage_options(self, value: dict[str, Any]) -> None:
        # fsspec's metaclass sets it to the constructor's keyword arguments after __init__.
        self._storage_options = {key: item for key, item in value.items() if key != "secret_key"}

    def __repr__(self) -> str:
        where = (f"endpoint_url={self._options['endpoint_url']!r}" if self._options["endpoint_url"] is not None
                 else f"warehouse={self._warehouse!r}" if self._warehouse is not None
                 else f"namespace={self._options['namespace']!r}")
        return f"DwrayFileSystem({where}, tenant={self.tenant!r})"

    @property
    def warehouse(self) -> Any:
        """The warehouse this filesystem works on, connected on first use."""
        if self._warehouse is None:
            self._warehouse = connection_for(self._options)
        return self._warehouse

    def __reduce__(self) -> Any:
        """Pickle by storage options: an open warehouse stays here, the copy connects by name."""
        options = {name: value for name, value in self._options.items() if value is not None}
        tenant = self.tenant
        if self._warehouse is not None and not options:
            options, tenant = _ray_options_of(self._warehouse, tenant)
        return _rebuild, (type(self), {**options, "tenant": tenant})

    # -- paths and errors ---------------------------------------------------------------------

    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        if isinstance(path, list):
            return [cls._strip_protocol(one) for one in path]
        return super()._strip_protocol(path).lstrip("/")

    def split_path(self, path: str) -> tuple[str, str]:
        """``(bucket, key)`` of a path; the key is ``""`` for a bucket (or ``("", "")`` for the root)."""
        bucket, _, key = self._strip_protocol(path).partition("/")
        return bucket, key

    @contextmanager
    def translated(self, path: str) -> Iterator[None]:
        """Raise a missing bucket or key as fsspec's ``FileNotFoundError``, an existing one as
        ``FileExistsError``, each naming the path and saying which."""
        try:
            yield
        except (NotFound, DeleteMarkerVersion) as error:
            raise FileNotFoundError(errno.ENOENT, f"{error}", f"dwray://{path}") from error
        except PreconditionFailed as error:
            raise FileExistsError(errno.EEXIST, f"{error}", f"dwray://{path}") from error

    # -- listing ------------------------------------------------------------------------------

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        bucket, key = self.split_path(path)
        if not bucket:
            entries = [_directory(info.name) for info in self.warehouse.list_buckets(tenant=self.tenant)]
        else:
            entries = self._listing(bucket, key)
            if not entries and key:  # a file, an empty bucket's... or nothing
                entries = [self.info(path)]
        return entries if detail else [entry["name"] for entry in entries]

    def _listing(self, bucket: str, key: str) -> list[dict[str, Any]]:
        prefix = f"{key}/" if key else ""
        entries: list[dict[str, Any]] = []
        token = None
        with self.translated(bucket):
            while True:
                page = self.warehouse.list(bucket, prefix=prefix, delimiter="/", continuation_token=token,
                                           tenant=self.tenant)
                entries += [_directory(f"{bucket}/{common.rstrip('/')}") for common in page.common_prefixes]
                # A key ending in '/' (a folder marker some S3 tools write) is the folder itself, not an entry.
                entries += [_file(info) for info in page.objects if info.key != prefix]
                if not page.is_truncated:
                    return sorted(entries, key=lambda entry: entry["name"])
                token = page.next_continuation_token

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        bucket, key = self.split_path(path)
        if not bucket:
            return _directory("")
        with self.translated(path):
            if not key:
                self.warehouse.head_bucket(bucket, tenant=self.tenant)
                return _directory(bucket)
            try:
                return _file(self.warehouse.head(bucket, key, tenant=self.tenant))
            except (ObjectNotFound, DeleteMarkerVersion):
                page = self.warehouse.list(bucket, prefix=f"{key}/", delimiter="/", max_keys=1, tenant=self.tenant)
                if page.objects or page.common_prefixes:
                    return _directory(f"{bucket}/{key}")
                raise

    def find(self, path: str, maxdepth: int | None = None, withdirs: bool = False, detail: bool = False,
             **kwargs: Any) -> Any:
        """Every file under ``path`` from one flat listing (no walk, one directory at a time)."""
        bucket, key = self.split_path(path)
        if not bucket or maxdepth is not None:
            return super().find(path, maxdepth=maxdepth, withdirs=withdirs, detail=detail, **kwargs)
        prefix = f"{key}/" if key else ""
        found: dict[str, dict[str, Any]] = {}
        try:
            with self.translated(path):
                objects = list(self.warehouse.iter_objects(bucket, prefix=prefix, tenant=self.tenant))
        except FileNotFoundError:
            objects = []
        base = f"{bucket}/{key}" if key else bucket
        for info in objects:
            if info.key.endswith("/"):
                continue
            entry = _file(info)
            found[entry["name"]] = entry
            if withdirs:
                parent = self._parent(entry["name"])
                while len(parent) > len(base) and parent not in found:
                    found[parent] = _directory(parent)
                    parent = self._parent(parent)
        if withdirs and found and key:
            found[base] = _directory(base)
        if not found and key:
            try:
                entry = self.info(path)
            except FileNotFoundError:
                entry = None
            if entry is not None and (entry["type"] == "file" or withdirs):
                found[entry["name"]] = entry
        names = sorted(found)
        return {name: found[name] for name in names} if detail else names

    def modified(self, path: str) -> datetime:
        """When the object's current version was written (UTC)."""
        entry = self.info(path)
        if entry["type"] != "file":
            raise IsADirectoryError(errno.EISDIR, "a directory has no modification time", f"dwray://{path}")
        return entry["mtime"]

    # -- buckets and directories --------------------------------------------------------------

    def mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        """A bucket path creates the bucket; a path inside one creates nothing (directories are implied)."""
        bucket, key = self.split_path(path)
        if not bucket:
            raise InvalidArgument("mkdir needs a bucket name (dwray://BUCKET[/...])")
        if key and not create_parents:
            self.info(bucket)  # FileNotFoundError when the bucket is missing
            return
        if key and self.exists(bucket):
            return
        with self.translated(path):
            self.warehouse.create_bucket(bucket, tenant=self.tenant)

    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        try:
            self.mkdir(path, create_parents=True)
        except AlreadyExists:
            if not exist_ok:
                raise

    def rmdir(self, path: str) -> None:
        """Delete an empty bucket; inside one, only check that nothing lies under ``path``."""
        bucket, key = self.split_path(path)
        with self.translated(path):
            if not key:
                self.warehouse.delete_bucket(bucket, tenant=self.tenant)
                return
            page = self.warehouse.list(bucket, prefix=f"{key}/", max_keys=1, tenant=self.tenant)
        if page.objects:
            raise OSError(errno.ENOTEMPTY, "directory not empty", f"dwray://{path}")

    def rm_file(self, path: str) -> None:
        bucket, key = self.split_path(path)
        if not key:
            raise IsADirectoryError(errno.EISDIR, "a bucket is removed by rmdir or rm(recursive=True)",
                                    f"dwray://{path}")
        with self.translated(path):
            self.warehouse.delete(bucket, key, tenant=self.tenant)

    def rm(self, path: Any, recursive: bool = False, maxdepth: int | None = None) -> None:
        """Delete files (and, with ``recursive``, everything under a directory or a whole bucket)."""
        paths = self.expand_path(path, recursive=recursive, maxdepth=maxdepth)
        buckets = []
        for one in paths:
            bucket, key = self.split_path(one)
            if not key:
                buckets.append(bucket)
            elif not self.isdir(one):
                self.rm_file(one)
        for bucket in buckets:
            self.rmdir(bucket)

    # -- bytes --------------------------------------------------------------------------------

    def _open(self, path: str, mode: str = "rb", block_size: Any = None, autocommit: bool = True,
              cache_options: Any = None, **kwargs: Any) -> DwrayFile:
        if mode not in ("rb", "wb", "xb"):
            raise InvalidArgument(f"dwray:// files open as 'rb', 'wb' or 'xb', not {mode!r} "
                                  "(objects are replaced whole, never appended to)")
        bucket, key = self.split_path(path)
        if not key:
            raise IsADirectoryError(errno.EISDIR, "a bucket is not a file", f"dwray://{path}")
        if mode == "rb":
            entry = self.info(path)
            if entry["type"] != "file":
                raise IsADirectoryError(errno.EISDIR, "a directory is not a file", f"dwray://{path}")
            # Pin the version read (when the bucket keeps versions), so every range comes from it.
            version = entry["version_id"] if entry["version_id"] not in (None, "null") else None
            return DwrayFile(self, path, mode, block_size=block_size, cache_options=cache_options,
                             size=entry["size"], version_id=version, **kwargs)
        if mode == "xb" and self.exists(path):  # told at once; the commit checks again (if_none_match)
            raise FileExistsError(errno.EEXIST, "the object exists and 'xb' never replaces one", f"dwray://{path}")
        return DwrayFile(self, path, mode, block_size=block_size, autocommit=autocommit, **kwargs)

    def cat_file(self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any) -> bytes:
        """The object's bytes ``[start, end)``; negative bounds count from the end, as in fsspec."""
        bucket, key = self.split_path(path)
        with self.translated(path):
            if start is None and end is None:
                return self.warehouse.get(bucket, key, tenant=self.tenant)
            if (start is not None and start < 0) or (end is not None and end < 0):
                size = self.warehouse.head(bucket, key, tenant=self.tenant).size
                start = None if start is None else (start if start >= 0 else max(size + start, 0))
                end = None if end is None else (end if end >= 0 else max(size + end, 0))
            first = start or 0
            if end is not None and end <= first:
                return b""
            try:
                return self.warehouse.get(bucket, key, range=(first, None if end is None else end - 1),
                                          tenant=self.tenant)
            except InvalidRange:  # starts at or past the end: nothing there, as for a local file
                self.warehouse.head(bucket, key, tenant=self.tenant)
                return b""

    def pipe_file(self, path: str, value: bytes, mode: str = "overwrite", **kwargs: Any) -> None:
        """Store ``value`` as the object; ``mode="create"`` refuses to replace one (``FileExistsError``)."""
        bucket, key = self.split_path(path)
        if not key:
            raise IsADirectoryError(errno.EISDIR, "a bucket is not a file", f"dwray://{path}")
        with self.translated(path):
            self.warehouse.put(bucket, key, value, content_type=kwargs.get("content_type"),
                               if_none_match=mode == "create", tenant=self.tenant)

    def put_file(self, lpath: str, rpath: str, callback: Any = None, mode: str = "overwrite",
                 **kwargs: Any) -> None:
        """Upload a local file, streamed from disk by the warehouse's own put."""
        import os

        if os.path.isdir(lpath):
            self.makedirs(rpath, exist_ok=True)
            return
        bucket, key = self.split_path(rpath)
        with open(lpath, "rb") as source, self.translated(rpath):
            self.warehouse.put(bucket, key, source, if_none_match=mode == "create", tenant=self.tenant)
        if callback is not None:
            callback.relative_update(os.path.getsize(lpath))

    def cp_file(self, path1: str, path2: str, **kwargs: Any) -> None:
        """Copy on the server side: the bytes never come here."""
        (bucket1, key1), (bucket2, key2) = self.split_path(path1), self.split_path(path2)
        try:
            with self.translated(path1):
                self.warehouse.copy(bucket1, key1, bucket2, key2, tenant=self.tenant)
        except FileNotFoundError:
            if key1 and self.isdir(path1):
                return  # a directory: nothing to copy, it is implied by the keys copied under it
            raise


def _rebuild(cls: type[DwrayFileSystem], options: dict[str, Any]) -> DwrayFileSystem:
    return cls(**options)


def _ray_options_of(warehouse: Any, tenant: str | None) -> tuple[dict[str, Any], str | None]:
    """The options that reach ``warehouse`` again from another process of its Ray cluster."""
    attach = sys.modules.get("actors.attach")
    if attach is None or not isinstance(warehouse, attach.RayWarehouse):
        raise InvalidArgument(f"a DwrayFileSystem over {warehouse!r} cannot be sent to another process: "
                              f"give it storage options ({', '.join(CONNECTION_OPTIONS)}) instead of warehouse=")
    config = warehouse.config
    return {"namespace": config.runtime.namespace}, tenant if tenant is not None else config.default_tenant


def _directory(name: str) -> dict[str, Any]:
    return {"name": name, "size": 0, "type": "directory"}


def _file(info: Any) -> dict[str, Any]:
    return {"name": f"{info.bucket}/{info.key}", "size": info.size, "type": "file", "etag": info.etag,
            "mtime": datetime.fromtimestamp(info.last_modified, UTC), "version_id": info.version_id,
            "content_type": info.content_type}
