"""``dw secret set|get|list|rotate|rm``: secrets in the local store, or in Vault or AWS (``--manager``).

NAME is a name in the chosen manager (``db/password``; the local store by
default), or a whole reference (``secret://vault/dwray/db#password``). A
value is never taken from the command line, where ``ps`` and shell history
would show it: it comes from ``--value-file`` or standard input (a prompt
that does not echo, on a terminal). One trailing newline is dropped, as for
``secret://file/`` values. For Vault, whose secrets are sets of fields, a
value that is a JSON object of text fields is stored as those fields (so
``secret://vault/PATH#FIELD`` reads one); any other value is the one field
``value``.

After ``set``, ``rotate`` or ``rm``, if a warehouse runs for the data dir,
its supervisor is told (``secret_rotated``), and every plugin drops its
cached value at once instead of at its next watch.
"""
from __future__ import annotations

import base64
import json
import sys
from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from dwray.cli.output import emit, print_table, stderr, stdout
from dwray.cli.state import State, command, command_config
from dwray.errors import DwrayError, InvalidArgument

__all__ = ["secret_group"]

_MANAGERS = ("local", "vault", "aws")
manager_option = click.option("--manager", type=click.Choice(_MANAGERS), default=None,
                              help="where the secret lives (default: local, or the scheme of a secret:// NAME)")
value_file_option = click.option("--value-file", type=click.Path(dir_okay=False, allow_dash=True, path_type=str),
                                 default=None, help="read the value from this file (- for standard input)")


@click.group("secret")
def secret_group() -> None:
    """Secrets: the local encrypted store (secret://local/NAME), Vault or AWS (--manager)."""


def _target(name: str, manager: str | None) -> tuple[str, str, str | None]:
    """(scheme, name, field) from NAME and ``--manager``."""
    from dwray.secret_ref import parse_secret_ref

    if name.startswith("secret://"):
        ref = parse_secret_ref(name)
        if manager is not None and manager != ref.scheme:
            raise InvalidArgument(f"--manager {manager} contradicts the reference {ref}")
        return ref.scheme, ref.name, ref.field
    plain, _, field = name.partition("#")
    return manager or "local", plain, field or None


def _manager(state: State, scheme: str) -> Any:
    from dwray.secrets import SecretResolver

    return SecretResolver(command_config(state)).manager(scheme)


def _strip_newline(raw: bytes) -> bytes:
    if raw.endswith(b"\r\n"):
        return raw[:-2]
    return raw[:-1] if raw.endswith(b"\n") else raw


def _read_value(value_file: str | None) -> bytes:
    """The value from ``--value-file``, a hidden prompt on a terminal, or standard input."""
    if value_file not in (None, "-"):
        try:
            raw = Path(value_file).read_bytes()  # type: ignore[arg-type]
        except OSError as exc:
            raise InvalidArgument(f"cannot read --value-file {value_file}: {exc.strerror}") from None
    elif value_file is None and sys.stdin.isatty():
        raw = click.prompt("value", hide_input=True, confirmation_prompt=True, err=True).encode("utf-8")
    else:
        raw = sys.stdin.buffer.read()
    value = _strip_newline(raw)
    if not value:
        raise InvalidArgument("no value given: pipe it on standard input or use --value-file "
                              "(never on the command line)")
    return value


def _as_input(scheme: str, raw: bytes) -> Any:
    """What to store: for Vault, a JSON object of text fields becomes its fields; else the bytes."""
    if scheme == "vault":
        try:
            document = json.loads(raw)
        except ValueError:
            return raw
        if isinstance(document, dict) and document and all(isinstance(v, str) for v in document.values()):
            return document
    return raw


def _tell_warehouse(state: State, ref: str) -> dict[str, Any] | None:
    """Tell the warehouse running for the data dir, if any, that ``ref`` was rotated; its answer or ``None``."""
    from dwray.core.datadir_lock import DataDirLock

    config = command_config(state)
    holder = DataDirLock(config.data_dir).holder()
    if holder is None or holder.ray is None:
        return None
    import ray

    from actors.attach import join_ray, leave_ray

    endpoint = holder.ray
    joined = join_ray(endpoint.address, endpoint.namespace, token_auth=endpoint.token_auth,
                      serving=f"the Ray warehouse serving {config.data_dir}")
    try:
        supervisor = ray.get_actor(endpoint.supervisor, namespace=endpoint.namespace)
        return ray.get(supervisor.secret_rotated.remote(ref), timeout=120)
    finally:
        if joined:
            leave_ray()


def _after_change(state: State, as_json: bool, ref: str, report: dict[str, Any], said: str) -> None:
    """Tell a running warehouse, then print what happened (a failure to tell is a warning, not an error)."""
    try:
        told = _tell_warehouse(state, ref)
    except Exception as exc:  # noqa: BLE001 - failing to reach the warehouse must not hide the stored secret
        told = None
        reason = str(exc) if isinstance(exc, DwrayError) else type(exc).__name__
        stderr.print(f"[yellow]warning:[/yellow] the running warehouse was not told ({escape(reason)}); its plugins "
                     f"see the change within \\[secrets] watch_interval", markup=True, highlight=False)
    report = {**report, "warehouse": told}

    def human() -> None:
        stdout.print(said, highlight=False)
        if told is not None:
            stdout.print(f"told the running warehouse: {len(told['told'])} plugin(s), "
                         f"{len(told['using'])} using it", highlight=False)
    emit(as_json, report, human)


@command(secret_group, "set")
@click.argument("name")
@value_file_option
@manager_option
@click.option("--cas", default=None, metavar="VERSION",
              help="write only if VERSION is current (0: only if the secret does not exist)")
def secret_set(state: State, as_json: bool, name: str, value_file: str | None, manager: str | None,
               cas: str | None) -> None:
    """Store a new version of NAME; the value comes from standard input or --value-file."""
    scheme, plain, field = _target(name, manager)
    if field is not None:
        raise InvalidArgument("set stores a whole secret: name it without #FIELD")
    store = _manager(state, scheme)
    version = store.put(plain, _as_input(scheme, _read_value(value_file)), cas=cas)
    ref = store.ref(plain)
    _after_change(state, as_json, ref, {"ref": ref, "version": version}, f"stored {ref} version {version}")


@command(secret_group, "rotate")
@click.argument("name")
@value_file_option
@manager_option
def secret_rotate(state: State, as_json: bool, name: str, value_file: str | None, manager: str | None) -> None:
    """A new version of an existing NAME; the previous one stays readable (for the grace period)."""
    scheme, plain, field = _target(name, manager)
    if field is not None:
        raise InvalidArgument("rotate replaces a whole secret: name it without #FIELD")
    store = _manager(state, scheme)
    previous = store.current_version(plain)
    version = store.rotate(plain, _as_input(scheme, _read_value(value_file)))
    ref = store.ref(plain)
    _after_change(state, as_json, ref, {"ref": ref, "version": version, "previous": previous},
                  f"rotated {ref}: version {previous} -> {version}")


@command(secret_group, "get")
@click.argument("name")
@manager_option
@click.option("--field", default=None, help="one field of a JSON-object secret (or write NAME#FIELD)")
@click.option("--version", "version", default=None, help="an earlier version that is still kept")
def secret_get(state: State, as_json: bool, name: str, manager: str | None, field: str | None,
               version: str | None) -> None:
    """Print the value of NAME (to standard output only)."""
    scheme, plain, named_field = _target(name, manager)
    if field is not None and named_field is not None and field != named_field:
        raise InvalidArgument(f"--field {field} contradicts #{named_field}")
    value = _manager(state, scheme).get(plain, field or named_field, version)
    raw = value.reveal_bytes()
    if as_json:
        try:
            shown: dict[str, str] = {"value": raw.decode("utf-8")}
        except UnicodeDecodeError:
            shown = {"value_base64": base64.b64encode(raw).decode("ascii")}
        emit(True, {"ref": value.ref, "version": value.version, **shown}, lambda: None)
        return
    out = sys.stdout.buffer
    out.write(raw + (b"\n" if sys.stdout.isatty() else b""))
    out.flush()


@command(secret_group, "list")
@click.argument("prefix", required=False, default="")
@manager_option
def secret_list(state: State, as_json: bool, prefix: str, manager: str | None) -> None:
    """Names (under PREFIX) with their current and kept versions; never values."""
    store = _manager(state, manager or "local")
    rows = []
    for name in store.list(prefix):
        kept = store.versions(name)
        rows.append({"name": name, "current": next((v.version for v in kept if v.current), None),
                     "versions": [v.version for v in kept]})

    def human() -> None:
        table = Table(box=None)
        for column in ("name", "current", "versions kept"):
            table.add_column(column)
        for row in rows:
            table.add_row(row["name"], str(row["current"]), str(len(row["versions"])))
        print_table(table)
    emit(as_json, rows, human)


@command(secret_group, "rm")
@click.argument("name")
@manager_option
@click.option("--force", is_flag=True, help="aws: delete at once, without the recovery window")
def secret_remove(state: State, as_json: bool, name: str, manager: str | None, force: bool) -> None:
    """Delete NAME and every version of it."""
    scheme, plain, field = _target(name, manager)
    if field is not None:
        raise InvalidArgument("rm deletes a whole secret: name it without #FIELD")
    store = _manager(state, scheme)
    if scheme == "aws":
        store.delete(plain, force=force)
    elif force:
        raise InvalidArgument("--force is for the aws manager (its recovery window)")
    else:
        store.delete(plain)
    ref = store.ref(plain)
    _after_change(state, as_json, ref, {"deleted": ref}, f"deleted {ref}")
