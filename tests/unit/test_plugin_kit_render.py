"""``dw plugin new``'s renderer and ``dw plugin test``'s target finding, without running the rendered tests.

(``tests/integration/test_plugin_kit.py`` installs what is rendered and runs its tests.)
"""
from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

from dwray.errors import InvalidArgument
from dwray.plugin_kit.conformance import find_target
from dwray.plugin_kit.names import KIT_KINDS, plugin_names
from dwray.plugin_kit.render import render_plugin


@pytest.mark.parametrize("kind", KIT_KINDS)
def test_each_kind_renders_a_complete_package(kind: str, tmp_path: Path) -> None:
    folder = render_plugin(kind, "acme-thing", tmp_path)
    assert folder == tmp_path / "dwray-plugin-acme-thing"
    files = sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file())
    assert files == [".gitignore", "README.md", "pyproject.toml", "src/dwray_plugin_acme_thing/__init__.py",
                     "src/dwray_plugin_acme_thing/plugin.py", "tests/test_conformance.py", "tests/test_plugin.py"]
    project = tomllib.loads((folder / "pyproject.toml").read_text())
    class_name = "AcmeThing" + kind.capitalize() + "Plugin"
    assert project["project"]["name"] == "dwray-plugin-acme-thing"
    assert project["project"]["entry-points"]["dwray.core.plugins"] == {
        f"{kind}.acme-thing": f"dwray_plugin_acme_thing.plugin:{class_name}"}
    for path in folder.rglob("*.py"):
        ast.parse(path.read_text(), str(path))  # every placeholder filled, valid Python
    assert f"class {class_name}(" in (folder / "src/dwray_plugin_acme_thing/plugin.py").read_text()
    conformance = (folder / "tests/test_conformance.py").read_text()
    assert "from dwray.testing." in conformance and "Conformance):" in conformance
    readme = (folder / "README.md").read_text()
    assert "dw plugin sign --dist dwray-plugin-acme-thing" in readme and "require_signed_plugins" in readme
    assert "*.key" in (folder / ".gitignore").read_text()


@pytest.mark.parametrize(("name", "wrong"), [
    ("A", "2 to 40 characters"), ("x" * 41, "2 to 40 characters"), ("Acme", "lowercase letters"),
    ("acme_store", "lowercase letters"), ("-acme", "lowercase letters"), ("acme--store", "lowercase letters"),
    ("acme-", "lowercase letters"), ("9lives", "lowercase letters"), ("acme store", "lowercase letters"),
])
def test_bad_names_are_refused_saying_what_is_wrong(name: str, wrong: str, tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match=wrong):
        render_plugin("storage", name, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_name_a_plugin_already_has_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="'kms.local' is already a plugin"):
        plugin_names("kms", "local")
    assert plugin_names("stage", "local").entry_point == "stage.local"  # another kind: free


def test_an_unknown_kind_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="kind 'service' is not one the kit renders"):
        render_plugin("service", "acme", tmp_path)


def test_an_existing_folder_is_never_overwritten(tmp_path: Path) -> None:
    existing = tmp_path / "dwray-plugin-acme"
    existing.mkdir()
    (existing / "mine.txt").write_text("keep")
    with pytest.raises(InvalidArgument, match="already exists"):
        render_plugin("storage", "acme", tmp_path)
    assert [path.name for path in existing.iterdir()] == ["mine.txt"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["dwray-plugin-acme"]  # no staging left


def test_a_missing_parent_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="is not a folder"):
        render_plugin("storage", "acme", tmp_path / "nowhere")


def test_dw_plugin_test_finds_a_rendered_folder_and_an_entry_point(tmp_path: Path) -> None:
    folder = render_plugin("secrets", "acme-vault", tmp_path)
    target = find_target(str(folder))
    assert (target.kind, target.spec) == ("secrets", "dwray_plugin_acme_vault.plugin:AcmeVaultSecretsPlugin")
    assert target.paths == (str(folder / "src"),)
    assert find_target("storage.local").kind == "storage"


def test_dw_plugin_test_refuses_what_it_cannot_test(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="has no pyproject.toml"):
        find_target(str(tmp_path))
    (tmp_path / "pyproject.toml").write_text('[project.entry-points."dwray.core.plugins"]\n'
                                             '"storage.a" = "a:A"\n"storage.b" = "b:B"\n')
    with pytest.raises(InvalidArgument, match="exactly one entry point"):
        find_target(str(tmp_path))
    (tmp_path / "pyproject.toml").write_text("not = [toml")
    with pytest.raises(InvalidArgument, match="not valid TOML"):
        find_target(str(tmp_path))
    with pytest.raises(InvalidArgument, match="kind 'service'"):
        find_target("service.catalog")
