"""What every ``dw`` command shares: its options, the warehouse it opens, one error policy."""
from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from dwray.cli.output import claim_stdout_for_json, emit, stderr
from dwray.errors import DwrayError


class State:
    """Options shared by every command, and the warehouse they open lazily."""

    def __init__(self, data_dir: Path | None, config: Path | None, tenant: str | None) -> None:
        self.data_dir, self.config, self.tenant = data_dir, config, tenant
        self._warehouse: Any = None

    @property
    def warehouse(self) -> Any:
        if self._warehouse is None:
            from dwray.core.warehouse import Warehouse

            self._warehouse = Warehouse.load(self.data_dir, self.config)
        return self._warehouse

    def close(self) -> None:
        if self._warehouse is not None:
            self._warehouse.close()


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
                    stderr.print(f"[red]error:[/red] {exc}", markup=True, highlight=False, soft_wrap=True)
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
