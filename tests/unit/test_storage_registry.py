"""The storage backend registry: names, lazy imports, helpful errors."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from types import MappingProxyType

import pytest

import dwray.backends as storage
from dwray.backends import BACKENDS, backend_class, create_backend
from dwray.backends.base import StorageBackend
from dwray.backends.local import LocalDiskBackend
from dwray.backends.memory import MemoryBackend
from dwray.errors import BackendNotFound, DependencyMissing


def test_registry_is_read_only() -> None:
    assert isinstance(BACKENDS, MappingProxyType)
    with pytest.raises(TypeError):
        BACKENDS["evil"] = "os:system"  # type: ignore[index]
    with pytest.raises(TypeError):
        del BACKENDS["local"]  # type: ignore[attr-defined]
    assert "evil" not in BACKENDS


def test_registered_backends() -> None:
    assert dict(BACKENDS) == {
        "local": "dwray.backends.local:LocalDiskBackend",
        "memory": "dwray.backends.memory:MemoryBackend",
        "s3": "dwray.backends.s3:S3Backend",
        "sqlite": "dwray.backends.sqlite:SqliteBackend",
        "postgres": "dwray.backends.postgres:PostgresBackend",
        "mirror": "dwray.backends.mirror:MirrorBackend",
        "tiered": "dwray.backends.tiered:TieredBackend",
    }
    for name in BACKENDS:
        cls = backend_class(name)
        assert issubclass(cls, StorageBackend)
        assert cls.name == name


def test_create_local(tmp_path: Path) -> None:
    backend = create_backend("local", root=tmp_path / "blobs")
    assert isinstance(backend, LocalDiskBackend)
    backend.put_bytes("a/b", b"data")
    assert (tmp_path / "blobs" / "a" / "b").read_bytes() == b"data"


def test_create_memory_passes_options() -> None:
    backend = create_backend("memory", max_bytes=10)
    assert isinstance(backend, MemoryBackend)
    assert backend.max_bytes == 10


def test_bad_option_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        create_backend("memory", no_such_option=1)


@pytest.mark.parametrize("name", ["nope", "", "Local", "dwray.backends.local:LocalDiskBackend"])
def test_unknown_backend_lists_known_names(name: str) -> None:
    with pytest.raises(BackendNotFound) as raised:
        create_backend(name)
    assert isinstance(raised.value, LookupError)
    assert repr(name) in str(raised.value)
    assert "local, memory" in str(raised.value)


def test_unhashable_name_is_not_found() -> None:
    with pytest.raises(BackendNotFound):
        backend_class(["local"])  # type: ignore[arg-type]


def _fake_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str) -> None:
    (tmp_path / "fake_backend_mod.py").write_text(textwrap.dedent(body))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "fake_backend_mod", raising=False)
    monkeypatch.setitem(storage._BACKENDS, "fake", "fake_backend_mod:FakeBackend")


def test_missing_dependency_names_the_pip_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_backend(tmp_path, monkeypatch, "import dwray_no_such_dependency_xyz\n")
    monkeypatch.setitem(storage._EXTRAS, "fake", "fakeextra")
    with pytest.raises(DependencyMissing) as raised:
        create_backend("fake")
    assert isinstance(raised.value, ImportError)
    assert raised.value.install == "dwray[fakeextra]"
    assert "pip install 'dwray[fakeextra]'" in str(raised.value)
    assert "'fake' storage backend" in str(raised.value)


def test_missing_dependency_without_extra_names_the_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_backend(tmp_path, monkeypatch, "from dwray_no_such_dependency_xyz.sub import thing\n")
    with pytest.raises(DependencyMissing) as raised:
        backend_class("fake")
    assert raised.value.install == "dwray_no_such_dependency_xyz"


def test_broken_dwray_import_is_not_reported_as_a_missing_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_backend(tmp_path, monkeypatch, "import dwray.no_such_module_xyz\n")
    with pytest.raises(ImportError) as raised:
        backend_class("fake")
    assert not isinstance(raised.value, DependencyMissing)


def test_backends_are_imported_lazily() -> None:
    code = (
        "import sys, dwray.backends\n"
        "assert 'dwray.backends.local' not in sys.modules\n"
        "assert 'dwray.backends.memory' not in sys.modules\n"
        "dwray.backends.create_backend('memory')\n"
        "assert 'dwray.backends.memory' in sys.modules\n"
        "assert 'dwray.backends.local' not in sys.modules\n"
    )
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_all_names_resolve() -> None:
    assert all(hasattr(storage, name) for name in storage.__all__)
    assert {"BACKENDS", "create_backend", "backend_class", "StorageBackend"} <= set(storage.__all__)
