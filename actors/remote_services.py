"""The service actors as a caller sees them: the catalog, the key service, the identity store, the audit log.

Each proxy is its contract (``dwray.core.contracts``) forwarded over a
``PluginHandle``: every contract method that the class body does not define
is a call of the same name on the plugin, retried after an actor restart
when the contract marks it ``idempotent`` (``PluginHandle.call`` carries the
caller's trace context and maps the errors). The class bodies hold what is
special:

- ``RemoteCatalog.commit_object`` and ``RemoteKeyring.wrap`` go through a
  ``Coalescer``: the callers that arrive together share one ``commit_many``
  (a group commit: one transaction, one fsync) or one ``wrap_many``, and each
  caller's trace shows the grouped call;
- ``RemoteCatalog.get_object``, ``get_bucket`` and ``segments_page`` read the
  catalog's database file themselves (``dwray.core.catalog.CatalogReader``)
  when the catalog actor runs on this node and the file is readable here: a
  small GET then makes no catalog round trip. Anything the local read cannot
  answer (a SQLite error, another schema version) goes over Ray as before;
- ``close()`` leaves the actor running: it outlives this client.
"""
from __future__ import annotations

import functools
import inspect
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ray

from actors.coalescer import Coalescer
from actors.handles import PluginHandle
from dwray.core.catalog import (
    SCHEMA_VERSION,
    CatalogReader,
    LocalReadUnavailable,
    ObjectRecord,
    PagedReads,
    WriteCondition,
)
from dwray.core.contracts import (
    CatalogService,
    IdentityService,
    KmsService,
    forward,
    is_idempotent,
)

__all__ = ["RemoteAudit", "RemoteCatalog", "RemoteIdentity", "RemoteKeyring", "local_catalog_reader"]

log = logging.getLogger(__name__)

#: how often a process asks again where the catalog actor and its file are (a restarted actor may run elsewhere)
LOCAL_READ_RECHECK_SECONDS = 10.0
#: how soon it asks again after it could not ask (the actor was restarting)
LOCAL_READ_RETRY_SECONDS = 1.0
#: how long learning where the catalog is may take
_LOCATE_TIMEOUT_SECONDS = 10.0

# Keywords of PluginHandle.call itself: a contract parameter of that name would never reach the plugin.
_HANDLE_KEYWORDS = frozenset({"method", "idempotent", "timeout"})


def _plugin_call(name: str, declared: Callable[..., Any]) -> Callable[..., Any]:
    """The proxy's ``name``: that method of the plugin behind ``self.handle``, called as ``declared`` says."""
    signature = inspect.signature(declared)
    clash = _HANDLE_KEYWORDS & signature.parameters.keys()
    if clash:
        raise TypeError(f"{declared.__qualname__}: PluginHandle.call keeps the parameter names {sorted(clash)}")
    retry = is_idempotent(declared)

    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        # Bound here, so that a wrong call fails at once as the contract says, not after a round trip.
        bound = signature.bind(self, *args, **kwargs)
        return self.handle.call(name, *bound.args[1:], idempotent=retry, **bound.kwargs)
    return method


class _ServiceProxy:
    def __init__(self, handle: PluginHandle) -> None:
        self.handle = handle

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.handle.child_id!r})"


def _local_first(name: str, declared: Callable[..., Any]) -> Callable[..., Any]:
    """The proxy's ``name``: the local reader's answer when there is one, else the plugin's over Ray.

    The catalog's own errors (``ObjectNotFound``, ``BucketAccessDenied``, ...) come
    from the same store code either way and propagate as they are; a read the
    local file cannot answer (``LocalReadUnavailable``) is asked of the plugin.
    """
    remote = _plugin_call(name, declared)
    signature = inspect.signature(declared)

    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        reader = self._local.reader() if self._local is not None else None
        if reader is not None:
            bound = signature.bind(reader, *args, **kwargs)
            try:
                return getattr(reader, name)(*bound.args[1:], **bound.kwargs)
            except LocalReadUnavailable as exc:
                log.debug("catalog %s read locally failed, asking the catalog service: %s", name, exc)
        return remote(self, *args, **kwargs)
    return functools.update_wrapper(method, declared)


def local_catalog_reader(health: Mapping[str, Any], catalog_node: str, this_node: str) -> CatalogReader:
    """A reader of the catalog whose plugin answered ``health`` from ``catalog_node``, for a caller on ``this_node``.

    ``LocalReadUnavailable`` (saying why) unless the actor runs on this node,
    its schema version is this code's, and the path it names is here the very
    file it has open (same device and inode) and opens read-only.
    """
    if catalog_node != this_node:
        raise LocalReadUnavailable(f"the catalog runs on node {catalog_node}, not on this one ({this_node})")
    if health.get("schema_version") != SCHEMA_VERSION:
        raise LocalReadUnavailable(f"the catalog has schema version {health.get('schema_version')}; "
                                   f"this code reads version {SCHEMA_VERSION}")
    where = health.get("file")
    if not isinstance(where, Mapping):
        raise LocalReadUnavailable("the catalog plugin does not say where its database file is")
    path = str(where.get("path", ""))
    try:
        stat = os.stat(path)
    except OSError as exc:
        raise LocalReadUnavailable(f"the catalog file {path!r} is not here: {exc.strerror or exc}") from None
    if (stat.st_dev, stat.st_ino) != (where.get("device"), where.get("inode")):
        raise LocalReadUnavailable(f"{path!r} here is not the file the catalog has open")
    return CatalogReader(path)


class _LocalReads:
    """The ``CatalogReader`` this process may use for the catalog behind ``handle``, if any.

    Learned from the plugin host (its node, and the plugin's health: the file)
    at the first read, again when the handle's actor generation changes (a
    restart this process saw) and every ``LOCAL_READ_RECHECK_SECONDS`` (one
    it did not see: the new actor may run on another node, and its file is
    then not the one here). One thread learns while the others read on.
    """

    def __init__(self, handle: PluginHandle, clock: Callable[[], float] = time.monotonic) -> None:
        self._handle = handle
        self._clock = clock
        self._learning = threading.Lock()
        self._reader: CatalogReader | None = None
        self._generation: int | None = None
        self._due = 0.0

    def reader(self) -> CatalogReader | None:
        current = self._reader
        if self._due > self._clock() and (current is None or self._handle.generation == self._generation):
            return current
        if not self._learning.acquire(blocking=False):
            return current if self._handle.generation == self._generation else None
        try:
            self._learn()
        finally:
            self._learning.release()
        return self._reader

    def _learn(self) -> None:
        try:
            actor, generation = self._handle.current()
            health, node = ray.get([actor.ping.remote(), actor.node_id.remote()], timeout=_LOCATE_TIMEOUT_SECONDS)
            reader = local_catalog_reader(health, node, ray.get_runtime_context().get_node_id())
        except LocalReadUnavailable as exc:
            self._use(None, None, LOCAL_READ_RECHECK_SECONDS, f"catalog reads go over Ray: {exc}")
        except Exception as exc:  # noqa: BLE001 - not knowing where the catalog is only means reads go over Ray
            self._use(None, None, LOCAL_READ_RETRY_SECONDS,
                      f"catalog reads go over Ray for now (cannot locate the catalog: {type(exc).__name__})")
        else:
            self._use(reader, generation, LOCAL_READ_RECHECK_SECONDS, f"catalog reads are local: {reader.path}")

    def _use(self, reader: CatalogReader | None, generation: int | None, recheck: float, news: str) -> None:
        old = self._reader
        if reader is not None and old is not None and (reader.path, generation) == (old.path, self._generation):
            reader.close()  # the one in use stays (its connections are warm)
            reader = old
        elif old is not None or reader is not None:
            log.info(news)
        self._reader, self._generation, self._due = reader, generation, self._clock() + recheck
        if old is not None and old is not reader:
            old.close()  # reads in flight on it fall back to Ray

    def close(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()


@forward(CatalogService, _plugin_call)
class RemoteCatalog(_ServiceProxy, PagedReads):
    """The catalog service actor, as a ``PagedCatalog``.

    With ``local_reads`` (the default) its point reads are served from the
    database file when this process shares the actor's node (see the module).
    Consistent with the actor: a commit is durable in the WAL before the actor
    acknowledges it, and each local read is a new SQLite read transaction, so a
    read begun after an acknowledged write sees the write.
    """

    def __init__(self, handle: PluginHandle, *, local_reads: bool = True) -> None:
        super().__init__(handle)
        self._commits = Coalescer(lambda records, contexts: handle.call(
            "commit_many", records, idempotent=True, _dwray_fanin=contexts), phase="catalog")
        self._local = _LocalReads(handle) if local_reads else None

    get_object = _local_first("get_object", CatalogService.get_object)
    get_bucket = _local_first("get_bucket", CatalogService.get_bucket)
    segments_page = _local_first("segments_page", CatalogService.segments_page)

    def close(self) -> None:
        """The catalog actor outlives this client; the local reader's connections are closed."""
        local, self._local = self._local, None
        if local is not None:
            local.close()

    def commit_object(self, record: ObjectRecord, condition: WriteCondition | None = None) -> ObjectRecord:
        """Commit through the group-commit queue (idempotent, so retried after a restart).

        A conditional commit goes on its own: its condition is decided in its own transaction either way.
        """
        if condition is not None:
            return self.handle.call("commit_object", record, condition, idempotent=True)
        return self._commits(record)


@forward(KmsService, _plugin_call)
class RemoteKeyring(_ServiceProxy):
    """The KMS plugin actor, as a ``KmsService``."""

    def __init__(self, handle: PluginHandle) -> None:
        super().__init__(handle)
        self._wraps = Coalescer(lambda items, contexts: handle.call(
            "wrap_many", items, idempotent=True, _dwray_fanin=contexts), phase="kms")

    def wrap(self, kek_id: str, dek: bytes) -> tuple[int, bytes]:
        return self._wraps((kek_id, dek))


@forward(IdentityService, _plugin_call)
class RemoteIdentity(_ServiceProxy):
    """The identity service actor, as an ``IdentityService``.

    Reads and the writes that are safe to repeat (adding the same key or admin
    token, revoking an access key, shredding a tenant, compare-and-set) are
    retried after an actor restart; creating or deleting a tenant,
    revoking an admin token and bootstrapping are not.
    """

    def close(self) -> None:
        """The identity actor outlives this client."""


class RemoteAudit(_ServiceProxy):
    """The ``service.audit`` plugin actor, as an ``AuditSink`` (``dwray.core.audit``).

    Concurrent ``append_many`` calls go through a ``Coalescer``: one remote
    call, and one group commit in the log, for the callers that arrive
    together. Retried once after an actor restart: a record appended twice is
    an access recorded twice, while one lost would be an access unrecorded.
    """

    def __init__(self, handle: PluginHandle) -> None:
        super().__init__(handle)
        self._appends = Coalescer(lambda batches, contexts: _split(handle.call(
            "append_many", [record for batch in batches for record in batch], idempotent=True,
            _dwray_fanin=contexts), batches), phase="audit")

    def append(self, fields: Mapping[str, Any]) -> int:
        return self.append_many([fields])[0]

    def append_many(self, records: Sequence[Mapping[str, Any]]) -> list[int]:
        """Append ``records`` (in order); returns their seqs once they are durable."""
        return self._appends(list(records))

    def close(self) -> None:
        """The audit actor outlives this client."""


def _split(seqs: list[int], batches: list[list[Any]]) -> list[list[int]]:
    """The seqs of one combined append, given back to each caller's batch."""
    result, start = [], 0
    for batch in batches:
        result.append(seqs[start:start + len(batch)])
        start += len(batch)
    return result
