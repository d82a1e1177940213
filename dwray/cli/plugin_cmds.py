"""``dw plugin new|test|keygen|sign|verify|discover``: writing plugins, signing them, checking where they come from.

- ``new --kind storage|stage|secrets|kms NAME [--dir PATH]`` renders a plugin
  package (``dwray.plugin_kit.render``): entry point, a working plugin, tests
  that subclass ``dwray.testing``'s suite of its kind, README, signing set-up;
- ``test TARGET [-- PYTEST ARGS]`` runs the conformance suite of the plugin's
  kind on a package folder or an installed entry point name
  (``dwray.plugin_kit.conformance``); the exit code is pytest's;

- ``keygen OUT`` writes an Ed25519 private key to OUT (0600) and its public
  key to OUT.pub (``ed25519:<base64>``, what ``[plugin_trust] trusted_keys``
  takes, inline or as the file's path);
- ``sign DIR --key KEY`` (or ``sign --dist NAME --key KEY``) writes
  ``dwray-plugin.sig`` into the plugin folder (or the distribution's
  ``.dist-info``);
- ``verify DIR [--trusted-key PUB]...`` says who signed, whether that key is
  trusted (the config's ``trusted_keys`` plus each ``--trusted-key``) and
  which files changed, appeared or disappeared since; exit 1 if any of that
  is wrong;
- ``discover`` lists every plugin the loader can see under the config (entry
  points and plugin folders) and what loading it would decide.

``dw plugin list`` and ``restart`` (the running warehouse's plugins) live in
``dwray.cli.gateway_cmds``; these commands join the same ``plugin`` group.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from dwray.cli.gateway_cmds import plugin_group
from dwray.cli.output import emit, print_table, stderr, stdout
from dwray.cli.state import State, command, command_config
from dwray.errors import DwrayError

__all__ = ["plugin_discover", "plugin_keygen", "plugin_new", "plugin_sign", "plugin_test", "plugin_verify"]

_KINDS = ("storage", "stage", "secrets", "kms")  # dwray.plugin_kit.names.KIT_KINDS, without importing the kit


@command(plugin_group, "new")
@click.option("--kind", required=True, type=click.Choice(_KINDS), help="what the plugin is")
@click.argument("name")
@click.option("--dir", "parent", default=".", show_default=True, type=click.Path(path_type=Path, file_okay=False),
              help="the folder to create the package in (as dwray-plugin-NAME)")
def plugin_new(state: State, as_json: bool, kind: str, name: str, parent: Path) -> None:
    """Render a new plugin package NAME: entry point, plugin, conformance tests, README, signing set-up."""
    from dwray.plugin_kit.render import render_plugin

    folder = render_plugin(kind, name, parent)
    result: dict[str, Any] = {"folder": str(folder), "kind": kind, "entry_point": f"{kind}.{name}"}
    emit(as_json, result, lambda: stdout.print(
        f"wrote {folder} ({kind} plugin {kind}.{name})\nnext: pip install -e '{folder}[test]' && "
        f"python -m pytest {folder}/tests, or dw plugin test {folder}", highlight=False, markup=False,
        soft_wrap=True))


@plugin_group.command("test", context_settings={"ignore_unknown_options": True})
@click.argument("target")
@click.argument("pytest_args", nargs=-1, type=click.UNPROCESSED)
def plugin_test(target: str, pytest_args: tuple[str, ...]) -> None:
    """Run dwray's conformance suite of the plugin's kind on TARGET: a package folder or an entry point name.

    Arguments after TARGET go to pytest (e.g. -- -x -k round_trip); the exit code is pytest's.
    """
    from dwray.plugin_kit.conformance import find_target, run_conformance

    try:
        found = find_target(target)
    except DwrayError as exc:
        stderr.print(f"[red]error:[/red] {escape(str(exc))}", markup=True, highlight=False, soft_wrap=True)
        sys.exit(2)
    stderr.print(f"{found.kind} conformance suite on {found.spec}", markup=False, highlight=False)
    sys.exit(run_conformance(found, pytest_args))

_target_dir = click.argument("folder", required=False, type=click.Path(path_type=Path, file_okay=False))
_dist_option = click.option("--dist", default=None, help="an installed distribution instead of a plugin folder")


@command(plugin_group, "keygen")
@click.argument("out", type=click.Path(path_type=Path, dir_okay=False))
def plugin_keygen(state: State, as_json: bool, out: Path) -> None:
    """Make an Ed25519 signing key: OUT (private, 0600) and OUT.pub (public)."""
    from dwray.core.plugin_trust.signing import fingerprint, generate_key_pair

    pub_path, public = generate_key_pair(out)
    result = {"private_key": str(out), "public_key_file": str(pub_path), "public_key": public,
              "fingerprint": fingerprint(public)}
    emit(as_json, result, lambda: stdout.print(
        f"wrote {out} (private, keep it secret) and {pub_path}\ntrust it with: "
        f'[plugin_trust] trusted_keys = ["{public}"]  # {result["fingerprint"]}',
        highlight=False, markup=False, soft_wrap=True))


@command(plugin_group, "sign")
@_target_dir
@_dist_option
@click.option("--key", "key_file", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="the Ed25519 private key (from dw plugin keygen)")
def plugin_sign(state: State, as_json: bool, folder: Path | None, dist: str | None, key_file: Path) -> None:
    """Sign a plugin folder (or --dist NAME): writes dwray-plugin.sig over the hash of every file."""
    from dwray.core.plugin_trust.operations import sign_target

    where, manifest = sign_target(key_file, folder=folder, dist=dist)
    result = {"signature": str(where), "plugin": manifest["name"], "version": manifest["version"],
              "files": len(manifest["files"])}
    emit(as_json, result, lambda: stdout.print(
        f"signed {manifest['name']} {manifest['version']} ({len(manifest['files'])} files): {where}",
        highlight=False, markup=False, soft_wrap=True))


def _trusted_keys(state: State, extra: tuple[str, ...]) -> tuple[str, ...]:
    from dwray.core.plugin_trust.settings import PluginTrust
    from dwray.core.plugin_trust.signing import read_public_key

    configured = PluginTrust.from_config(command_config(state).plugin_trust).trusted_keys
    return configured + tuple(read_public_key(entry, f"--trusted-key {entry}") for entry in extra)


@command(plugin_group, "verify")
@_target_dir
@_dist_option
@click.option("--trusted-key", "trusted", multiple=True,
              help="a trusted public key (ed25519:<base64> or a .pub file), besides the config's")
def plugin_verify(state: State, as_json: bool, folder: Path | None, dist: str | None,
                  trusted: tuple[str, ...]) -> None:
    """Check a plugin folder's (or --dist NAME's) signature and files; exit 1 if it would be refused."""
    from dwray.core.plugin_trust.operations import verify_target

    found = verify_target(_trusted_keys(state, trusted), folder=folder, dist=dist)

    def human() -> None:
        head = f"{found.plugin} {found.version} ({found.source}, {found.files} files)"
        if found.ok:
            stdout.print(f"verified: {head}: signed by {found.signer}, a trusted key", highlight=False, markup=False)
            return
        stdout.print(f"NOT verified: {head}", highlight=False, markup=False)
        for problem in found.problems:
            stdout.print(f"  - {problem}", highlight=False, markup=False, soft_wrap=True)

    emit(as_json, found.as_dict(), human)
    if not found.ok:
        sys.exit(1)


@command(plugin_group, "discover")
def plugin_discover(state: State, as_json: bool) -> None:
    """Plugins the loader can see (entry points, plugin folders) and what loading each would decide."""
    from dwray.core.plugin_trust.operations import discover_plugins
    from dwray.core.plugin_trust.settings import PluginTrust

    rows = discover_plugins(PluginTrust.from_config(command_config(state).plugin_trust))

    def human() -> None:
        table = Table("name", "source", "verdict")
        for row in rows:
            table.add_row(row["name"], row["source"], row["verdict"])
        print_table(table)

    emit(as_json, rows, human)
