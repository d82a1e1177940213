"""``dwray.connect()``: the warehouse for driver scripts and notebooks, over Ray.

``connect()`` attaches to a warehouse running on the Ray cluster (named
supervisor in the dwray namespace) or, when none runs, starts the embedded one
on this machine: a local Ray, local storage under ``./dwray-data``. It returns
a ``Warehouse`` whose catalog, keyring, storage and frame stages are the
supervised plugin actors, so it offers exactly the in-process core's
operations (and the same tests run against both).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from dwray.config import DwrayConfig

if TYPE_CHECKING:
    from actors.attach import RayWarehouse

__all__ = ["connect"]


def connect(address: str | None = None, *, data_dir: str | Path | None = None,
            config_path: str | Path | None = None, config: DwrayConfig | None = None,
            stage_placement: str | None = None, start: bool = True) -> RayWarehouse:
    """Attach to the running warehouse, or start the embedded one.

    ``address``: a Ray address (``"auto"``, ``"ray://host:10001"``, ``"host:6379"``);
    ``None`` attaches to a Ray already running on this machine or starts a
    local one. ``data_dir``/``config_path``/``config`` configure an embedded
    warehouse; an attached client takes the running warehouse's settings.
    ``stage_placement="caller"`` runs the trusted built-in stages on threads in
    this process instead of in stage actors. ``start=False`` refuses to start
    one (``NotReady``) when none is running.
    """
    from actors.attach import attach_or_start

    return attach_or_start(address, data_dir=data_dir, config_path=config_path, config=config,
                           stage_placement=stage_placement, start=start)
