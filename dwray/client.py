"""``dwray.connect()``: the warehouse for driver scripts and notebooks, over Ray or over the gateway.

``connect()`` attaches to a warehouse running on the Ray cluster (named
supervisor in the dwray namespace) or, when none runs, starts the embedded one
on this machine: a local Ray, local storage under ``./dwray-data``. It returns
a ``Warehouse`` whose catalog, keyring, storage and frame stages are the
supervised plugin actors, so it offers exactly the in-process core's
operations (and the same tests run against both).

``connect(url=...)`` is for a tenant outside the cluster, holding an access
key rather than a Ray address: a ``dwray.remote.GatewayWarehouse`` with the
tenant-facing operations of the same API, over the gateway's S3 protocol.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

from dwray.config import DwrayConfig
from dwray.errors import InvalidArgument

if TYPE_CHECKING:
    from actors.attach import RayWarehouse
    from dwray.remote import GatewayWarehouse

__all__ = ["connect"]


@overload
def connect(address: str | None = None, *, url: None = None, access_key: None = None, secret_key: None = None,
            region: str = "us-east-1", verify: bool | str = True, data_dir: str | Path | None = None,
            config_path: str | Path | None = None, config: DwrayConfig | None = None,
            stage_placement: str | None = None, start: bool = True) -> RayWarehouse: ...


@overload
def connect(address: None = None, *, url: str, access_key: str | None = None, secret_key: str | None = None,
            region: str = "us-east-1", verify: bool | str = True, data_dir: None = None, config_path: None = None,
            config: None = None, stage_placement: None = None, start: bool = True) -> GatewayWarehouse: ...


def connect(address: str | None = None, *, url: str | None = None, access_key: str | None = None,
            secret_key: str | None = None, region: str = "us-east-1", verify: bool | str = True,
            data_dir: str | Path | None = None, config_path: str | Path | None = None,
            config: DwrayConfig | None = None, stage_placement: str | None = None,
            start: bool = True) -> RayWarehouse | GatewayWarehouse:
    """Attach to the running warehouse, or start the embedded one; with ``url``, a gateway's client.

    ``address``: a Ray address (``"auto"``, ``"ray://host:10001"``, ``"host:6379"``);
    ``None`` attaches to a Ray already running on this machine or starts a
    local one; ``"local"`` always starts a local Ray of its own. A Ray the
    client started (with its dashboard on loopback, ``[runtime] dashboard``)
    is shut down by ``close()``. ``data_dir``/``config_path``/``config`` configure an embedded
    warehouse; an attached client takes the running warehouse's settings.
    ``stage_placement="caller"`` runs the trusted built-in stages on threads in
    this process instead of in stage actors. ``start=False`` refuses to start
    one (``NotReady``) when none is running.

    ``url`` (``"https://gateway:8000"``) connects to a gateway instead, as the
    tenant of ``access_key``/``secret_key`` (default: ``AWS_ACCESS_KEY_ID`` and
    ``AWS_SECRET_ACCESS_KEY``); ``verify`` is True, False or a CA bundle's path.
    """
    if url is None:
        from actors.attach import attach_or_start

        return attach_or_start(address, data_dir=data_dir, config_path=config_path, config=config,
                               stage_placement=stage_placement, start=start)
    return _gateway(url, address=address, access_key=access_key, secret_key=secret_key, region=region,
                    verify=verify, data_dir=data_dir, config_path=config_path, config=config,
                    stage_placement=stage_placement)


def _gateway(url: str, *, access_key: str | None, secret_key: str | None, region: str, verify: bool | str,
             **ray_only: Any) -> GatewayWarehouse:
    from dwray.remote import GatewayWarehouse

    clashing = sorted(name for name, value in ray_only.items() if value is not None)
    if clashing:
        raise InvalidArgument(f"connect(url=...) reaches a gateway and takes no {', '.join(clashing)}: "
                              "those configure a warehouse on Ray (connect without url)")
    access_key = access_key if access_key is not None else os.environ.get("AWS_ACCESS_KEY_ID")
    secret_key = secret_key if secret_key is not None else os.environ.get("AWS_SECRET_ACCESS_KEY")
    missing = [name for name, value in (("access_key", access_key), ("secret_key", secret_key)) if not value]
    if missing:
        raise InvalidArgument(f"connect(url=...) needs {' and '.join(missing)} (or AWS_ACCESS_KEY_ID / "
                              "AWS_SECRET_ACCESS_KEY in the environment)")
    assert access_key is not None and secret_key is not None
    return GatewayWarehouse(url, access_key, secret_key, region=region, verify=verify)
