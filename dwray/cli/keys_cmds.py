"""``dw keys``: key-encryption keys (KEKs) of the configured key service, local or Vault Transit.

- ``rotate`` makes a new primary version (for one tenant, or every KEK with ``--all``);
- ``rewrap`` re-wraps the tenant's data keys under the primary, in batches, touching
  no object data; an interrupted run is simply run again;
- ``retire --below N`` first reports how many data keys each older version still
  wraps, and refuses while any does.
"""
from __future__ import annotations

from typing import Any

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn
from rich.table import Table

from dwray.cli.output import emit, print_table, stderr, stdout
from dwray.cli.state import State, command
from dwray.errors import InvalidArgument, KeyringError

__all__ = ["keys_group"]

_TENANT_HELP = "tenant whose KEK to act on (default: dw's --tenant, else the configured default tenant)"


@click.group("keys")
def keys_group() -> None:
    """Key-encryption keys: rotate, rewrap, retire."""


def _tenant(state: State, tenant: str | None) -> str | None:
    return tenant if tenant is not None else state.tenant


@command(keys_group, "rotate")
@click.option("--tenant", default=None, help=_TENANT_HELP)
@click.option("--all", "all_keks", is_flag=True, help="rotate every KEK of the key service (shredded ones aside)")
def keys_rotate(state: State, as_json: bool, tenant: str | None, all_keks: bool) -> None:
    """New primary KEK version for new writes (Vault Transit: the transit key is rotated)."""
    if all_keks:
        if tenant is not None:
            raise InvalidArgument("give --tenant or --all, not both")
        rotated = state.warehouse.rotate_all_keys()

        def human() -> None:
            for kek_id, version in rotated.items():
                stdout.print(f"{kek_id}: new primary version {version}", highlight=False)
            if not rotated:
                stdout.print("no KEK to rotate", highlight=False)
        emit(as_json, {"rotated": rotated}, human)
        return
    version = state.warehouse.rotate_keys(tenant=_tenant(state, tenant))
    emit(as_json, {"primary": version}, lambda: stdout.print(f"new primary KEK version {version}"))


@command(keys_group, "rewrap")
@click.option("--tenant", default=None, help=_TENANT_HELP)
@click.option("--batch", type=click.IntRange(1, 10_000), default=500, show_default=True,
              help="data keys per catalog page")
@click.option("--progress/--no-progress", default=None, help="progress bar (default: when on a terminal)")
def keys_rewrap(state: State, as_json: bool, tenant: str | None, batch: int, progress: bool | None) -> None:
    """Re-wrap the tenant's data keys under the primary KEK version (data untouched; resumable)."""
    show = (stderr.is_terminal if progress is None else progress) and not as_json
    with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), console=stderr, disable=not show) as bar:
        task = bar.add_task("rewrap", total=None)

        def advance(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)
        count = state.warehouse.rewrap(tenant=_tenant(state, tenant), batch=batch, progress=advance)
    emit(as_json, {"rewrapped": count}, lambda: stdout.print(f"re-wrapped {count} data key(s)"))


@command(keys_group, "retire")
@click.argument("minimum", type=int, required=False)
@click.option("--below", type=int, default=None, help="refuse decryption with KEK versions below this one")
@click.option("--tenant", default=None, help=_TENANT_HELP)
def keys_retire(state: State, as_json: bool, minimum: int | None, below: int | None, tenant: str | None) -> None:
    """Refuse decryption with KEK versions below N (Vault Transit: min_decryption_version).

    Reports first how many data keys each older version still wraps, and
    refuses while any does (run ``dw keys rewrap``).
    """
    given = [version for version in (minimum, below) if version is not None]
    if len(given) != 1:
        raise InvalidArgument("give the version once: --below N (or N as the argument)")
    below = given[0]
    who = _tenant(state, tenant)
    report = state.warehouse.wrapped_by_version(below, tenant=who)
    if not as_json:
        _print_report(report, below)
    remaining = sum(report.values())
    if remaining:
        raise KeyringError(f"{remaining} data key(s) are still wrapped under KEK versions below {below}; "
                           "run rewrap first (dw keys rewrap)")
    state.warehouse.retire_keys(below, tenant=who)
    emit(as_json, {"minimum": below}, lambda: stdout.print(f"KEK versions below {below} retired"))


def _print_report(report: dict[int, Any], below: int) -> None:
    if not report:
        return
    stdout.print(f"data keys still wrapped under KEK versions below {below}:", highlight=False)
    table = Table(box=None)
    table.add_column("version", justify="right")
    table.add_column("data keys", justify="right")
    for version, count in sorted(report.items()):
        table.add_row(str(version), str(count))
    print_table(table)
