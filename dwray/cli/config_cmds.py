"""``dw config``: The running warehouse's configuration: reload it, diff a file against it, its history.

``dw config reload [FILE]`` validates FILE (default: the file ``dw up`` started
with, else the last one reloaded, else ``--config``), diffs it with the running
config and applies it all or nothing (``actors.config_reload``); a refused
reload exits 1 naming the file and why. ``dw config diff FILE`` shows what a
reload would change, and which changes a running warehouse cannot take.
``dw config history`` lists the reloads recorded in the data dir. Values of
secrets never show: the config holds references, and values where secrets go
are shown as ``<redacted>``.
"""
from __future__ import annotations

import getpass
import socket
from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from dwray.cli.app import cli
from dwray.cli.output import emit, print_table, printable, stdout
from dwray.cli.state import State, command, command_config
from dwray.errors import InvalidArgument

__all__ = ["config_group"]


@cli.group("config")
def config_group() -> None:
    """The running warehouse's configuration: reload it, diff a file against it, its history."""


def _running(state: State) -> tuple[Any, Any]:
    """``(running config, supervisor)`` of the Ray warehouse serving the data dir (``InvalidArgument`` if none)."""
    from actors.handles import running_config
    from dwray.core.datadir_lock import DataDirLock

    config = command_config(state)
    holder = DataDirLock(config.data_dir).holder()
    if holder is None or holder.ray is None:
        raise InvalidArgument(f"no running warehouse serves data dir {str(config.data_dir)!r}: "
                              "a config is reloaded into a warehouse started by 'dw up' or dwray.connect()")
    supervisor = state.warehouse.supervisor
    return running_config(config, supervisor), supervisor


def _data_dir(state: State) -> Path | None:
    return None if state.data_dir is None else Path(state.data_dir)


@command(config_group, "reload")
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
def reload_command(state: State, as_json: bool, file: Path | None) -> None:
    """Validate FILE, apply what changed to the running warehouse (all or nothing), record it."""
    from actors.config_reload import default_source, reload_config

    running, supervisor = _running(state)
    source = file or state.config or default_source(running.data_dir)
    if source is None:
        raise InvalidArgument("which file? name one ('dw config reload FILE'), or pass --config: "
                              "no file is recorded for this warehouse's start")
    principal = f"dw config reload ({getpass.getuser()}@{socket.gethostname()})"
    result = reload_config(running, supervisor, source, data_dir=_data_dir(state), principal=principal)
    emit(as_json, result, lambda: _print_result(result))


def _print_result(result: dict[str, Any]) -> None:
    if result["outcome"] == "unchanged":
        stdout.print(f"{printable(result['source'])}: nothing changed", highlight=False)
        return
    _print_changes(result["changes"])
    restarted = ", ".join(result["restarted"]) or "none"
    stdout.print(f"applied (revision {result['revision']}); plugins restarted: {restarted}", highlight=False)


def _print_changes(changes: list[dict[str, Any]]) -> None:
    table = Table(title="changes")
    for column in ("path", "running", "new"):
        table.add_column(column)
    for change in changes:
        old = "" if change["added"] else repr(change["old"])
        new = "" if change["removed"] else repr(change["new"])
        table.add_row(*(escape(printable(text)) for text in (change["path"], old, new)))
    print_table(table)


@command(config_group, "diff")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def diff_command(state: State, as_json: bool, file: Path) -> None:
    """What reloading FILE would change in the running warehouse (secret values never shown)."""
    from actors.config_reload import config_diff

    running, _ = _running(state)
    diff = config_diff(running, file, data_dir=_data_dir(state))

    def human() -> None:
        if not diff["changes"]:
            stdout.print(f"{printable(diff['source'])}: no difference from the running config", highlight=False)
            return
        _print_changes(diff["changes"])
        if diff["frozen"]:
            stdout.print("cannot change while the warehouse runs: " + ", ".join(diff["frozen"]), highlight=False)
    emit(as_json, diff, human)


@command(config_group, "history")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(0, 10_000), help="entries at most")
def history_command(state: State, as_json: bool, limit: int) -> None:
    """The reloads recorded in the data dir (applied or refused) and the starts, oldest first."""
    from actors.config_reload import read_history

    entries = read_history(command_config(state).data_dir, limit)

    def human() -> None:
        import datetime

        table = Table(title="config history")
        for column in ("time", "event", "outcome", "source", "changed", "restarted", "reason"):
            table.add_column(column)
        for entry in entries:
            when = datetime.datetime.fromtimestamp(entry.get("time", 0), datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")
            row = (when, entry.get("event", ""), entry.get("outcome") or "", entry.get("source") or "",
                   ", ".join(c["path"] for c in entry.get("changes", [])), ", ".join(entry.get("restarted", [])),
                   entry.get("reason") or "")
            table.add_row(*(escape(printable(str(text))) for text in row))
        print_table(table)
    emit(as_json, entries, human)
