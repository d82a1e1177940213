"""``dw status``: the running warehouse's plugin tree, read from its supervisor."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from dwray.config import load_config
from dwray.errors import NotReady

__all__ = ["read_status"]


def read_status(address: str | None = None, *, config_path: str | Path | None = None) -> dict[str, Any]:
    """Status of the warehouse in the configured Ray namespace; ``NotReady`` if none runs."""
    import ray

    from actors.attach import ray_running_locally
    from actors.bootstrap import find_supervisor

    config = load_config(config_path)
    runtime = config.runtime
    if address is None and not os.environ.get("RAY_ADDRESS") and not ray_running_locally():
        raise NotReady("no Ray cluster runs on this machine (start one with cluster/start-local-cluster.sh "
                       "or `ray start --head`), or pass --address")
    ray.init(address=address or "auto", namespace=runtime.namespace, configure_logging=False,
             log_to_driver=False)
    try:
        supervisor = find_supervisor(config)
        if supervisor is None:
            raise NotReady(f"no warehouse supervisor {runtime.supervisor_name!r} in Ray namespace "
                           f"{runtime.namespace!r}")
        report = ray.get(supervisor.status.remote(), timeout=30)
        ready, reason = ray.get(supervisor.ready.remote(), timeout=30)
        report.update({"ready": ready, "reason": reason})
        return report
    finally:
        ray.shutdown()
