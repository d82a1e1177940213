"""What every ``dw`` command shares: its options, the warehouse it opens, one error policy."""
from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.markup import escape

from dwray.cli.output import claim_stdout_for_json, emit, stderr
from dwray.errors import DwrayError


class State:
    """Options shared by every command, and the warehouse they open lazily."""

    def __init__(self, data_dir: Path | None, config: Path | None, tenant: str | None) -> None:
        self.data_dir, self.config, self.tenant = data_dir, config, tenant
        self._warehouse: Any = None
        self._joined_ray = False

    @property
    def warehouse(self) -> Any:
        """The data dir's warehouse: the running one when one serves it, else opened here.

        A Ray warehouse (``dw up``, ``dwray.connect()``) holds the data dir's lock and
        says in it where it runs; commands then go through its plugin actors, like a
        driver, so the data dir keeps one writer. With no holder the data dir is
        opened in this process, which takes the lock for the command's duration.
        """
        if self._warehouse is None:
            self._warehouse = self._open(command_config(self))
        return self._warehouse

    def _open(self, config: Any) -> Any:
        from dwray.core.datadir_lock import DataDirLock
        from dwray.core.warehouse import Warehouse
        from dwray.errors import DataDirInUse

        lock = DataDirLock(config.data_dir)
        holder = lock.holder()
        if holder is None:
            try:
                return Warehouse(config)
            except DataDirInUse:
                # Taken between the look and the open: by whom decides what to do.
                holder = lock.holder()
                if holder is None:
                    raise
        if holder.ray is None:
            raise DataDirInUse(str(config.data_dir), holder.describe())
        return self._attach(config, holder.ray)

    def _attach(self, config: Any, ray_endpoint: Any) -> Any:
        """The Ray warehouse at ``ray_endpoint`` (a ``RayEndpoint``), reached as a driver of its cluster."""
        from actors.attach import join_ray
        from dwray.client import connect

        self._joined_ray = join_ray(ray_endpoint.address, ray_endpoint.namespace,
                                    token_auth=ray_endpoint.token_auth,
                                    serving=f"the Ray warehouse serving {config.data_dir}")
        runtime = config.runtime.model_copy(update={"namespace": ray_endpoint.namespace,
                                                    "supervisor_name": ray_endpoint.supervisor})
        return connect(config=config.model_copy(update={"runtime": runtime}), start=False)

    def close(self) -> None:
        try:
            if self._warehouse is not None:
                self._warehouse.close()
        finally:
            if self._joined_ray:
                from actors.attach import leave_ray

                leave_ray()


def command(group: click.Group, name: str | None = None) -> Callable[[Callable[..., Any]], Any]:
    """A subcommand with ``--json``, the shared state, and one error policy."""

    def decorate(func: Callable[..., Any]) -> Any:
        @group.command(name)
        @click.option("--json", "as_json", is_flag=True, help="print JSON instead of text")
        @click.pass_obj
        @functools.wraps(func)
        def run(state: State, as_json: bool, **kwargs: Any) -> None:
            if as_json:
                claim_stdout_for_json()
            try:
                func(state, as_json, **kwargs)
            except DwrayError as exc:
                if as_json:
                    emit(True, {"error": {"type": type(exc).__name__, "message": str(exc)}}, lambda: None)
                else:
                    stderr.print(f"[red]error:[/red] {escape(str(exc))}", markup=True, highlight=False, soft_wrap=True)
                sys.exit(1)
            finally:
                state.close()
        return run
    return decorate


def command_config(state: State, **gateway: Any) -> Any:
    from dwray.config import load_config

    config = load_config(state.config)
    if state.data_dir is not None:
        config = config.model_copy(update={"data_dir": Path(state.data_dir)})
    updates = {name: value for name, value in gateway.items() if value is not None}
    if updates:
        config = config.model_copy(update={"gateway": config.gateway.model_copy(update=updates)})
    # Validate the combination again (model_copy does not).
    return type(config).model_validate(config.model_dump())
