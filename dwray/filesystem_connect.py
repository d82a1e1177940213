"""The warehouse a ``dwray://`` filesystem talks to, found from its storage options.

Storage options name a connection, never hold one, so a filesystem pickles by
them and a Ray Data task that unpickles it connects again in its own process:

- ``endpoint_url`` (+ ``access_key``, ``secret_key``, ``region``, ``verify``):
  the gateway, through ``dwray.connect(url=...)`` (the tenant client). Not
  ``url``: fsspec's ``url_to_fs(url, **storage_options)``, which pandas calls,
  takes that name for the path itself (the filesystem accepts ``url=`` when
  built directly, as ``dwray.connect`` names it);
- no ``endpoint_url``: the warehouse running on this Ray cluster, through
  ``dwray.connect(address, start=False)`` in the Ray namespace ``namespace``
  (default: the config's); a Ray worker is already in the cluster.

``secret_key`` may be a ``secret://`` reference, resolved where the connection
is made: a worker then never receives the secret itself, only where it lives.
Connections are shared by every filesystem of the process with the same
options (opening one costs a few round trips; a Ray Data task must not pay
them per file). A shared connection lives as long as its process: a worker whose
warehouse was stopped and started again needs a new process (Ray Data's are short-lived).
"""
from __future__ import annotations

import hashlib
import threading
from collections.abc import Mapping
from typing import Any

from dwray.errors import InvalidArgument

__all__ = ["CONNECTION_OPTIONS", "check_options", "connection_for"]

#: the storage options that say where the warehouse is (``tenant`` is per call, not per connection)
CONNECTION_OPTIONS = ("endpoint_url", "access_key", "secret_key", "region", "verify", "address", "namespace")
_GATEWAY_ONLY = ("access_key", "secret_key", "region", "verify")
_RAY_ONLY = ("address", "namespace")

_connections: dict[tuple[Any, ...], Any] = {}
_lock = threading.Lock()


def check_options(options: Mapping[str, Any]) -> None:
    """Refuse options that cannot go together, naming them (before anything connects)."""
    if options.get("endpoint_url") is None:
        stray = [name for name in _GATEWAY_ONLY if options.get(name) is not None]
        if stray:
            raise InvalidArgument(f"dwray:// options {', '.join(stray)} need endpoint_url= "
                                  "(the gateway's address)")
    else:
        stray = [name for name in _RAY_ONLY if options.get(name) is not None]
        if stray:
            raise InvalidArgument(f"dwray:// options {', '.join(stray)} are for a warehouse on Ray, "
                                  "not with endpoint_url=")
    for name in ("endpoint_url", "access_key", "address", "namespace"):
        value = options.get(name)
        if value is not None and (not isinstance(value, str) or not value):
            raise InvalidArgument(f"dwray:// option {name} must be a non-empty string")
    secret = options.get("secret_key")
    if secret is not None and not isinstance(secret, str):
        raise InvalidArgument("dwray:// option secret_key must be a string (a value or a secret:// reference)")


def _cache_key(options: Mapping[str, Any]) -> tuple[Any, ...]:
    # The secret takes part only as a digest: the cache must not keep a second copy of it.
    secret = options.get("secret_key")
    digest = hashlib.sha256(secret.encode()).hexdigest() if isinstance(secret, str) else None
    return tuple(digest if name == "secret_key" else repr(options.get(name)) for name in CONNECTION_OPTIONS)


def connection_for(options: Mapping[str, Any]) -> Any:
    """The process's warehouse for these options, connected on first use."""
    key = _cache_key(options)
    with _lock:
        warehouse = _connections.get(key)
        if warehouse is None:
            warehouse = _connect(options)
            _connections[key] = warehouse
        return warehouse


def _connect(options: Mapping[str, Any]) -> Any:
    from dwray.client import connect

    url = options.get("endpoint_url")
    if url is not None:
        secret = options.get("secret_key")
        if isinstance(secret, str) and secret.startswith("secret://"):
            from dwray.secrets import resolve_secret

            secret = resolve_secret(secret).reveal()
        gateway: dict[str, Any] = {"access_key": options.get("access_key"), "secret_key": secret}
        for name in ("region", "verify"):
            if options.get(name) is not None:
                gateway[name] = options[name]
        return connect(url=url, **gateway)  # type: ignore[call-arg]
    from dwray.config import load_config

    config = load_config()
    namespace = options.get("namespace")
    if namespace is not None:
        config = config.model_copy(update={"runtime": config.runtime.model_copy(update={"namespace": namespace})})
    return connect(options.get("address"), config=config, start=False)
