"""The service actors as a caller sees them: the catalog, the key service, the identity store, the audit log.

Each proxy is its contract (``dwray.core.contracts``) forwarded over a
``PluginHandle``: every contract method that the class body does not define
is a call of the same name on the plugin, retried once after an actor restart
when the contract marks it ``idempotent`` (``PluginHandle.call`` carries the
caller's trace context and maps the errors). The class bodies hold what is
special:

- ``RemoteCatalog.commit_object`` and ``RemoteKeyring.wrap`` go through a
  ``Coalescer``: the callers that arrive together share one ``commit_many``
  (a group commit: one transaction, one fsync) or one ``wrap_many``, and each
  caller's trace shows the grouped call;
- ``close()`` leaves the actor running: it outlives this client.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from actors.coalescer import Coalescer
from actors.handles import PluginHandle
from dwray.core.catalog import ObjectRecord, PagedReads, WriteCondition
from dwray.core.contracts import (
    CatalogService,
    IdentityService,
    KmsService,
    forward,
    is_idempotent,
)

__all__ = ["RemoteAudit", "RemoteCatalog", "RemoteIdentity", "RemoteKeyring"]

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


@forward(CatalogService, _plugin_call)
class RemoteCatalog(_ServiceProxy, PagedReads):
    """The catalog service actor, as a ``PagedCatalog``."""

    def __init__(self, handle: PluginHandle) -> None:
        super().__init__(handle)
        self._commits = Coalescer(lambda records, contexts: handle.call(
            "commit_many", records, idempotent=True, _dwray_fanin=contexts))

    def close(self) -> None:
        """The catalog actor outlives this client."""

    def commit_object(self, record: ObjectRecord, condition: WriteCondition | None = None) -> ObjectRecord:
        """Commit through the group-commit queue (idempotent, so retried once after a restart).

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
            "wrap_many", items, idempotent=True, _dwray_fanin=contexts))

    def wrap(self, kek_id: str, dek: bytes) -> tuple[int, bytes]:
        return self._wraps((kek_id, dek))


@forward(IdentityService, _plugin_call)
class RemoteIdentity(_ServiceProxy):
    """The identity service actor, as an ``IdentityService``.

    Reads and the writes that are safe to repeat (adding the same key or admin
    token, revoking an access key, shredding a tenant, compare-and-set) are
    retried once after an actor restart; creating or deleting a tenant,
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
            _dwray_fanin=contexts), batches))

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
