"""Plugin provenance without Ray: plugin folders, Ed25519 signatures, allowlists, refusals audited.

Real folders, real files, real symlinks, real keys; the loader is the one the
plugin host runs (``load_plugin_class`` with a ``PluginTrust``).
"""
from __future__ import annotations

import base64
import json
import logging
import os
import sys
import textwrap
from pathlib import Path

import pytest

from dwray.config import PluginTrustConfig, load_config
from dwray.core.plugin_trust import AUDIT_LOGGER_NAME, SIGNATURE_FILE, PluginRefusal, PluginTrust, set_refusal_hook
from dwray.core.plugin_trust.distributions import distribution_manifest, distribution_named
from dwray.core.plugin_trust.folders import read_folder_plugin
from dwray.core.plugin_trust.importer import import_folder_plugin, package_name
from dwray.core.plugin_trust.operations import discover_plugins, sign_target, verify_target
from dwray.core.plugin_trust.signing import generate_key_pair, load_private_key, sign_manifest
from dwray.core.plugins import Plugin, discover, load_plugin_class
from dwray.errors import ConfigError, InvalidArgument, PluginNotFound, PluginRefused

ECHO = '''
from dwray.core.plugins import Manifest, Plugin
from . import helper


class {cls}(Plugin):
    manifest = Manifest(name="{name}", kind="service", version="{version}")

    def echo(self, value):
        return helper.tag(value)
'''


def make_plugin(folder: Path, name: str = "acme.echo", version: str = "1.0.0", cls: str = "AcmeEcho",
                tag: str = "acme") -> Path:
    """A folder plugin ``name`` at the top level of ``folder``: descriptor, entry module and a helper."""
    root = folder / name
    root.mkdir(parents=True)
    (root / "dwray-plugin.toml").write_text(f'name = "{name}"\nversion = "{version}"\nentry = "echo:{cls}"\n')
    (root / "echo.py").write_text(ECHO.format(cls=cls, name=name, version=version))
    (root / "helper.py").write_text(f"def tag(value):\n    return ({tag!r}, value)\n")
    return root


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    made = {}
    for who in ("alice", "mallory"):
        generate_key_pair(tmp_path / f"{who}.key")
        made[who] = tmp_path / f"{who}.key"
    return made


def public(key: Path) -> str:
    return key.with_name(key.name + ".pub").read_text().strip()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    path = tmp_path / "plugins"
    path.mkdir()
    return path


def signed_trust(folder: Path, *trusted: Path) -> PluginTrust:
    return PluginTrust(folders=(str(folder),), trusted_keys=tuple(public(k) for k in trusted), require_signed=True)


def refusal(name: str, trust: PluginTrust) -> str:
    with pytest.raises(PluginRefused) as caught:
        load_plugin_class(name, trust)
    return str(caught.value)


# -- folders ----------------------------------------------------------------------------


def test_a_folder_plugin_loads_namespaced_and_not_from_sys_path(folder: Path) -> None:
    make_plugin(folder)
    make_plugin(folder, "other.echo", cls="OtherEcho", tag="other")  # same module names: echo, helper
    trust = PluginTrust(folders=(str(folder),))
    acme, other = load_plugin_class("acme.echo", trust), load_plugin_class("other.echo", trust)
    assert issubclass(acme, Plugin) and acme().echo(1) == ("acme", 1) and other().echo(2) == ("other", 2)
    assert acme.__module__ == package_name("acme.echo") + ".echo" != other.__module__
    assert str(folder) not in sys.path and str(folder / "acme.echo") not in sys.path
    assert "helper" not in sys.modules and "echo" not in sys.modules
    assert discover(trust)["acme.echo"] == f"folder:{folder / 'acme.echo'}"


def test_only_the_top_level_is_scanned(folder: Path) -> None:
    make_plugin(folder / "nested")  # folder/nested/acme.echo: not a top-level entry
    (folder / "stray.py").write_text("x = 1\n")
    trust = PluginTrust(folders=(str(folder),))
    assert "acme.echo" not in discover(trust)
    with pytest.raises(PluginNotFound):
        load_plugin_class("acme.echo", trust)


def test_the_descriptor_must_match_its_folder_and_name_an_entry_inside(folder: Path) -> None:
    root = make_plugin(folder)
    trust = PluginTrust(folders=(str(folder),))
    (root / "dwray-plugin.toml").write_text('name = "acme.other"\nversion = "1"\nentry = "echo:AcmeEcho"\n')
    assert "names it 'acme.other' but its folder is 'acme.echo'" in refusal("acme.echo", trust)
    (root / "dwray-plugin.toml").write_text('name = "acme.echo"\nversion = "1"\nentry = "..echo:AcmeEcho"\n')
    assert "entry: Value error, must be 'module:Class'" in refusal("acme.echo", trust)
    (root / "dwray-plugin.toml").write_text('name = "acme.echo"\nversion = "1"\nentry = "gone:AcmeEcho"\n')
    assert "no file gone.py or gone/__init__.py" in refusal("acme.echo", trust)
    (root / "dwray-plugin.toml").write_text('name = "acme.echo"\nversion = "1"\nentry = "echo:A"\nrun = "x"\n')
    assert "run: Extra inputs are not permitted" in refusal("acme.echo", trust)


def test_a_symlink_out_of_the_plugin_folder_is_refused(folder: Path, tmp_path: Path) -> None:
    root = make_plugin(folder)
    secret = tmp_path / "master.key"
    secret.write_text("not for plugins")
    (root / "data.txt").symlink_to(secret)
    message = refusal("acme.echo", PluginTrust(folders=(str(folder),)))
    assert "data.txt is a symbolic link that resolves outside the plugin's folder" in message
    (root / "data.txt").unlink()
    (root / "data.txt").symlink_to("../../master.key")  # '..' climbing out, relative
    assert "resolves outside" in refusal("acme.echo", PluginTrust(folders=(str(folder),)))
    (root / "data.txt").unlink()
    (root / "data.txt").symlink_to("helper.py")  # a link that stays inside is fine
    assert load_plugin_class("acme.echo", PluginTrust(folders=(str(folder),)))().echo(0) == ("acme", 0)


def test_a_symlinked_folder_or_plugin_outside_is_refused(folder: Path, tmp_path: Path) -> None:
    elsewhere = make_plugin(tmp_path / "elsewhere")
    (folder / "acme.echo").symlink_to(elsewhere)
    assert "resolves outside its plugin folder" in refusal("acme.echo", PluginTrust(folders=(str(folder),)))
    (folder / "acme.echo").unlink()
    root = make_plugin(folder)
    (root / "lib").symlink_to(tmp_path, target_is_directory=True)
    assert "lib is a symbolic link that resolves outside" in refusal("acme.echo", PluginTrust(folders=(str(folder),)))


def test_the_checked_bytes_are_the_ones_that_run(folder: Path) -> None:
    root = make_plugin(folder, "swap.echo", cls="SwapEcho")
    snapshot = read_folder_plugin(root, folder)
    (root / "helper.py").write_text("def tag(value):\n    return ('swapped after the check', value)\n")
    (root / "extra.py").write_text("X = 1\n")
    cls = import_folder_plugin(snapshot)
    assert cls().echo(5) == ("acme", 5)
    with pytest.raises(ModuleNotFoundError, match="has no verified module 'extra'"):
        __import__(package_name("swap.echo") + ".extra")


# -- signatures ---------------------------------------------------------------------------


def test_a_signed_plugin_loads_when_signatures_are_required(folder: Path, keys: dict[str, Path]) -> None:
    root = make_plugin(folder)
    where, manifest = sign_target(keys["alice"], folder=root)
    assert where == root.resolve() / SIGNATURE_FILE and oct(where.stat().st_mode & 0o777) == "0o600"
    assert sorted(manifest["files"]) == ["dwray-plugin.toml", "echo.py", "helper.py"]
    assert load_plugin_class("acme.echo", signed_trust(folder, keys["alice"]))().echo(1) == ("acme", 1)
    assert verify_target((public(keys["alice"]),), folder=root).ok


@pytest.mark.parametrize("change, expected", [
    ("changed", "tampered: file(s) changed since signing: helper.py"),
    ("added", "tampered: file(s) added since signing: extra/evil.py"),
    ("removed", "tampered: file(s) removed since signing: helper.py"),
])
def test_a_tampered_plugin_is_refused_naming_the_file(folder: Path, keys: dict[str, Path], change: str,
                                                      expected: str) -> None:
    root = make_plugin(folder)
    sign_target(keys["alice"], folder=root)
    if change == "changed":
        (root / "helper.py").write_text("def tag(value):\n    return ('evil', value)\n")
    elif change == "added":
        (root / "extra").mkdir()
        (root / "extra" / "evil.py").write_text("import os\n")
    else:
        (root / "helper.py").unlink()
    message = refusal("acme.echo", signed_trust(folder, keys["alice"]))
    assert message.startswith("plugin 'acme.echo' refused: ") and expected in message


def test_bytecode_caches_are_not_part_of_the_manifest(folder: Path, keys: dict[str, Path]) -> None:
    root = make_plugin(folder)
    sign_target(keys["alice"], folder=root)
    (root / "__pycache__").mkdir()
    (root / "__pycache__" / "echo.cpython-311.pyc").write_bytes(b"never read: the loader compiles the source")
    assert load_plugin_class("acme.echo", signed_trust(folder, keys["alice"]))().echo(2) == ("acme", 2)


def test_unsigned_and_wrongly_signed_plugins_are_refused(folder: Path, keys: dict[str, Path]) -> None:
    root = make_plugin(folder)
    assert "unsigned: it has no dwray-plugin.sig" in refusal("acme.echo", signed_trust(folder, keys["alice"]))
    assert load_plugin_class("acme.echo", PluginTrust(folders=(str(folder),)))  # not required: loads
    sign_target(keys["mallory"], folder=root)
    message = refusal("acme.echo", signed_trust(folder, keys["alice"]))
    assert "wrongly signed: signed by key SHA256:" in message and "which is not a trusted key" in message


def test_a_forged_signature_is_refused(folder: Path, keys: dict[str, Path]) -> None:
    root = make_plugin(folder)
    sign_target(keys["alice"], folder=root)
    (root / "helper.py").write_text("def tag(value):\n    return ('evil', value)\n")
    document = json.loads((root / SIGNATURE_FILE).read_text())
    document["manifest"] = read_folder_plugin(root, folder).manifest()  # the new hashes, alice's old signature
    (root / SIGNATURE_FILE).write_text(json.dumps(document))
    assert "the signature does not match its manifest" in refusal("acme.echo", signed_trust(folder, keys["alice"]))


def test_a_signed_manifest_path_climbing_out_is_refused(folder: Path, keys: dict[str, Path]) -> None:
    root = make_plugin(folder)
    manifest = read_folder_plugin(root, folder).manifest()
    manifest["files"]["../outside.py"] = "0" * 64
    (root / SIGNATURE_FILE).write_bytes(sign_manifest(manifest, load_private_key(keys["alice"])))
    message = refusal("acme.echo", signed_trust(folder, keys["alice"]))
    assert "manifest names the path '../outside.py', which is not a plain relative path" in message


def test_refusals_are_audited(folder: Path, keys: dict[str, Path], caplog: pytest.LogCaptureFixture) -> None:
    make_plugin(folder)
    seen: list[PluginRefusal] = []
    set_refusal_hook(seen.append)
    try:
        with caplog.at_level(logging.WARNING, logger=AUDIT_LOGGER_NAME):
            refusal("acme.echo", signed_trust(folder, keys["alice"]))
    finally:
        set_refusal_hook(None)
    assert [(r.plugin, r.source) for r in seen] == [("acme.echo", f"folder {folder / 'acme.echo'}")]
    assert "unsigned" in seen[0].reason
    record = next(r for r in caplog.records if r.name == AUDIT_LOGGER_NAME)
    assert record.dwray_audit["plugin"] == "acme.echo" and "unsigned" in record.dwray_audit["reason"]


# -- where a name comes from ---------------------------------------------------------------


def test_built_ins_are_trusted_as_the_product(folder: Path, keys: dict[str, Path]) -> None:
    trust = signed_trust(folder, keys["alice"])
    assert load_plugin_class("storage.memory", trust).__name__ == "MemoryStoragePlugin"
    assert load_plugin_class("dwray.testing.plugins:Echo", trust).__name__ == "Echo"
    assert "belongs to no installed distribution" in refusal("tests.unit.test_plugin_trust:Plugin", trust)


def test_a_name_in_two_places_is_refused(folder: Path, tmp_path: Path) -> None:
    second = tmp_path / "second"
    make_plugin(folder)
    make_plugin(second)
    assert "found in more than one plugin folder" in refusal("acme.echo", PluginTrust(folders=(str(folder),
                                                                                              str(second))))
    make_plugin(folder, "storage.memory", cls="Shadow")
    assert "both the entry point" in refusal("storage.memory", PluginTrust(folders=(str(folder),)))


def test_an_installed_distribution_is_verified_over_its_record(tmp_path: Path, keys: dict[str, Path],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "site"
    package = site / "acmepkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "plug.py").write_text(textwrap.dedent('''
        from dwray.core.plugins import Manifest, Plugin

        class Plug(Plugin):
            manifest = Manifest(name="acmepkg", kind="service", version="2.0")
    '''))
    info = site / "acmepkg-2.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acmepkg\nVersion: 2.0\n")
    (info / "top_level.txt").write_text("acmepkg\n")
    (info / "INSTALLER").write_text("pip\n")
    (info / "RECORD").write_text("acmepkg/__init__.py,,\nacmepkg/plug.py,,\nacmepkg-2.0.dist-info/METADATA,,\n"
                                 "acmepkg-2.0.dist-info/INSTALLER,,\nacmepkg-2.0.dist-info/RECORD,,\n"
                                 "../../bin/acme,,\n")
    monkeypatch.syspath_prepend(str(site))
    assert sorted(distribution_manifest(distribution_named("acmepkg"))["files"]) == [
        "acmepkg-2.0.dist-info/METADATA", "acmepkg/__init__.py", "acmepkg/plug.py"]
    trust = PluginTrust(trusted_keys=(public(keys["alice"]),), require_signed=True)
    assert "no dwray-plugin.sig" in refusal("acmepkg.plug:Plug", trust)
    sign_target(keys["alice"], dist="acmepkg")
    assert load_plugin_class("acmepkg.plug:Plug", trust).__name__ == "Plug"
    (package / "plug.py").write_text((package / "plug.py").read_text() + "\nEVIL = 1\n")
    assert "changed since signing: acmepkg/plug.py" in refusal("acmepkg.plug:Plug", trust)


# -- allowlists --------------------------------------------------------------------------


def test_module_class_specs_obey_the_allowlist(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = "dwray.testing.plugins:Echo"
    monkeypatch.delenv("DWRAY_PLUGINS_ALLOW", raising=False)
    assert load_plugin_class(spec, PluginTrust())  # no allowlist: everything, as before
    message = refusal(spec, PluginTrust(allow=("storage.memory",)))
    assert message == (f"plugin {spec!r} refused: not allowed: {spec!r} is not in [plugin_trust] allow; "
                       "list that exact 'module:Class' spec there to allow it")
    assert "not in [plugin_trust] allow" in refusal(spec, PluginTrust(allow=("dwray.testing.plugins",)))
    assert load_plugin_class(spec, PluginTrust(allow=(spec,)))
    assert load_plugin_class("storage.local", PluginTrust(allow=(spec,)))  # the product's own names need no place
    monkeypatch.setenv("DWRAY_PLUGINS_ALLOW", "storage.memory")
    assert "is not in DWRAY_PLUGINS_ALLOW" in refusal(spec, PluginTrust())
    assert "DWRAY_PLUGINS_ALLOW" in refusal(spec, PluginTrust(allow=(spec,)))  # both lists must allow it
    assert load_plugin_class("storage.memory", PluginTrust())
    assert "storage.local" not in discover(PluginTrust())  # the variable limits built-ins too, as it always did
    assert "not in DWRAY_PLUGINS_ALLOW" in refusal("storage.local", PluginTrust())
    monkeypatch.setenv("DWRAY_PLUGINS_ALLOW", f"storage.memory, {spec}")
    assert load_plugin_class(spec, PluginTrust())


def test_folder_plugins_obey_the_allowlist_and_discover_says_what_would_happen(
        folder: Path, keys: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DWRAY_PLUGINS_ALLOW", raising=False)
    sign_target(keys["alice"], folder=make_plugin(folder))
    make_plugin(folder, "acme.unsigned", cls="Unsigned")
    trust = PluginTrust(folders=(str(folder),), trusted_keys=(public(keys["alice"]),), require_signed=True,
                        allow=("acme.echo",))
    assert load_plugin_class("acme.echo", trust)().echo(3) == ("acme", 3)
    assert "not allowed: 'acme.unsigned' is not in [plugin_trust] allow" in refusal("acme.unsigned", trust)
    rows = {row["name"]: row for row in discover_plugins(trust)}
    assert rows["acme.echo"]["verdict"].startswith("signed by SHA256:") and rows["acme.echo"]["verdict"].endswith(
        "(trusted)")
    assert rows["acme.unsigned"]["verdict"] == "not allowed ([plugin_trust] allow)"
    assert rows["storage.local"]["verdict"] == "built in"
    open_trust = PluginTrust(folders=(str(folder),), require_signed=True)
    rows = {row["name"]: row for row in discover_plugins(open_trust)}
    assert rows["acme.unsigned"]["verdict"] == "refused: unsigned: it has no dwray-plugin.sig"
    assert "which is not a trusted key" in rows["acme.echo"]["verdict"]


# -- config and keys ------------------------------------------------------------------------


def test_trust_settings_come_from_config(tmp_path: Path, folder: Path, keys: dict[str, Path],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "dwray.toml"
    config.write_text(f'[plugin_trust]\nfolders = ["{folder}/../plugins"]\ntrusted_keys = ["{keys["alice"]}.pub",'
                      f' "{public(keys["mallory"])}"]\nrequire_signed_plugins = true\nallow = ["acme.echo"]\n')
    monkeypatch.setenv("DWRAY_PLUGINS_ALLOW", "acme.echo")  # not a config field: must not break loading
    trust = PluginTrust.from_config(load_config(config).plugin_trust)
    assert trust == PluginTrust((str(folder.resolve()),), (public(keys["alice"]), public(keys["mallory"])),
                                True, ("acme.echo",))
    monkeypatch.setenv("DWRAY_PLUGIN_TRUST__FOLDERS", f"{folder}, {tmp_path}")
    assert load_config(config).plugin_trust.folders == [folder, tmp_path]
    with pytest.raises(ConfigError, match=r"plugin_trust.folders.0: .*missing is not a folder"):
        PluginTrust.from_config(PluginTrustConfig(folders=[tmp_path / "missing"]))
    with pytest.raises(ConfigError, match=r"plugin_trust.trusted_keys.0: .*32 bytes, this one is 3"):
        PluginTrust.from_config(PluginTrustConfig(trusted_keys=["ed25519:" + base64.b64encode(b"abc").decode()]))
    with pytest.raises(ConfigError, match=r"plugin_trust.trusted_keys.0: cannot read public key file"):
        PluginTrust.from_config(PluginTrustConfig(trusted_keys=[str(tmp_path / "nope.pub")]))


def test_keys_are_private_and_never_overwritten(tmp_path: Path, keys: dict[str, Path], folder: Path) -> None:
    assert keys["alice"].stat().st_mode & 0o777 == 0o600
    assert public(keys["alice"]).startswith("ed25519:")
    with pytest.raises(InvalidArgument, match="exists; keygen never overwrites a key"):
        generate_key_pair(keys["alice"])
    os.chmod(keys["alice"], 0o644)
    with pytest.raises(InvalidArgument, match=r"readable by others \(mode 0644\); chmod 600 it"):
        sign_target(keys["alice"], folder=make_plugin(folder))
    with pytest.raises(InvalidArgument, match="not an unencrypted PEM private key"):
        load_private_key(keys["alice"].with_name("alice.key.pub"))
    os.chmod(keys["alice"], 0o600)
    with pytest.raises(InvalidArgument, match="nowhere is not a folder"):
        sign_target(keys["alice"], folder=tmp_path / "nowhere")
    with pytest.raises(InvalidArgument, match="name either a plugin folder or --dist NAME"):
        sign_target(keys["alice"])
