"""``dw admin-token create|list|revoke``: named admin tokens, through the running gateway's admin API.

A token is shown once, when it is made, on standard output or (better, since
terminals keep scrollback) written to a new 0600 file with ``--output-file``.
Hand it to a program through that file (``--admin-token-file``) or the
``DWRAY_ADMIN_TOKEN`` variable, never as an argument: any user of the machine
can read another process's command line.
"""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from dwray.cli.app import cli
from dwray.cli.gateway_cmds import _admin, admin_options
from dwray.cli.output import emit, print_table, stdout
from dwray.cli.state import State, command
from dwray.core.identity import validate_token_name
from dwray.errors import InvalidArgument

__all__ = ["admin_token_group"]


@cli.group("admin-token")
def admin_token_group() -> None:
    """Admin tokens for the admin API: several, named, each with an optional expiry."""


@command(admin_token_group, "create")
@click.argument("name")
@click.option("--expires", default=None,
              help="when it stops working: a duration ('12h', '30d', '2w') or an ISO time ('2030-01-31T18:00Z', "
                   "UTC unless it says otherwise); default: never")
@click.option("--description", default="")
@click.option("--replace", is_flag=True, help="revoke the token that has this name now, in the same step")
@click.option("--output-file", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="write the token to this file (created 0600) instead of printing it")
@admin_options
def admin_token_create(state: State, as_json: bool, name: str, expires: str | None, description: str,
                       replace: bool, output_file: Path | None, endpoint: str | None,
                       admin_token_file: Path | None) -> None:
    """Create an admin token; it is shown (or written) once and dwray keeps only its hash."""
    from dwray.core.gateway_files import write_private_file

    validate_token_name(name)
    if output_file is not None and not output_file.parent.is_dir():
        raise InvalidArgument(f"--output-file: folder {output_file.parent} does not exist")
    admin = _admin(state, endpoint, admin_token_file)
    new = admin.post("/admin-tokens", {"name": name, "expires": expires, "description": description,
                                       "replace": replace})
    token = new.pop("token")
    if output_file is not None:
        try:
            write_private_file(output_file, token)
        except OSError as error:
            admin.delete(f"/admin-tokens/{name}")  # a token nobody holds is no use to anyone
            raise InvalidArgument(f"--output-file: cannot write {output_file} ({error.strerror}); "
                                  f"the token {name!r} was revoked again") from None
        new["token_file"] = str(output_file)
    else:
        new["token"] = token
    emit(as_json, new, lambda: _print_created(new))


def _print_created(new: dict[str, Any]) -> None:
    stdout.print(f"admin token {new['name']} (id {new['id']}), expires {_when(new['expires'])}", highlight=False)
    if "token_file" in new:
        stdout.print(f"written to {new['token_file']} (0600); use it with --admin-token-file", highlight=False)
    else:
        stdout.print(f"token  {new['token']}\nshown once: keep it in a 0600 file (--admin-token-file) "
                     "or in DWRAY_ADMIN_TOKEN, never on a command line", highlight=False)


@command(admin_token_group, "list")
@admin_options
def admin_token_list(state: State, as_json: bool, endpoint: str | None, admin_token_file: Path | None) -> None:
    """List admin tokens (names, ids and times; never a token)."""
    tokens = _admin(state, endpoint, admin_token_file).get("/admin-tokens")
    emit(as_json, tokens, lambda: _print_list(tokens))


def _print_list(tokens: list[dict[str, Any]]) -> None:
    table = Table(box=None)
    for column in ("name", "id", "created", "expires", "last used", "description"):
        table.add_column(column)
    for token in tokens:
        expires = _when(token["expires"]) + (" (expired)" if token["expired"] else "")
        table.add_row(token["name"], token["id"], _when(token["created"]), expires,
                      _when(token["last_used"], "never"), token["description"])
    print_table(table)


@command(admin_token_group, "revoke")
@click.argument("name")
@admin_options
def admin_token_revoke(state: State, as_json: bool, name: str, endpoint: str | None,
                       admin_token_file: Path | None) -> None:
    """Revoke an admin token by name, for good (a lost token file: revoke its token)."""
    validate_token_name(name)
    _admin(state, endpoint, admin_token_file).delete(f"/admin-tokens/{name}")
    emit(as_json, {"revoked": name}, lambda: stdout.print(f"revoked admin token {name}", highlight=False))


def _when(moment: float | None, none: str = "never") -> str:
    if moment is None:
        return none
    return datetime.fromtimestamp(moment, timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
