"""fsspec's own conformance suites (copy, get, put, open, pipe) run on ``dwray://``.

The suites are fsspec's abstract tests, the ones its backends subclass; here
they run over an in-process warehouse on the memory backend, each test in a
bucket of its own. Directories are implied by keys, as in S3, so the suites'
empty-directory cases take the S3 branch (``supports_empty_directories``).
"""
from __future__ import annotations

import posixpath
import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pytest
from fsspec.tests.abstract import AbstractFixtures
from fsspec.tests.abstract.copy import AbstractCopyTests
from fsspec.tests.abstract.get import AbstractGetTests
from fsspec.tests.abstract.open import AbstractOpenTests
from fsspec.tests.abstract.pipe import AbstractPipeTests
from fsspec.tests.abstract.put import AbstractPutTests

from dwray.core.warehouse import Warehouse
from dwray.filesystem import DwrayFileSystem
from tests.conftest import make_config


class DwrayFixtures(AbstractFixtures):
    @pytest.fixture(scope="class")
    def warehouse(self, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Warehouse]:
        with Warehouse(make_config(tmp_path_factory.mktemp("fs") / "data", "memory")) as warehouse:
            yield warehouse

    @pytest.fixture
    def fs(self, warehouse: Warehouse) -> DwrayFileSystem:
        return fsspec.filesystem("dwray", warehouse=warehouse)

    @pytest.fixture
    def fs_join(self):  # type: ignore[no-untyped-def]
        return posixpath.join

    @pytest.fixture
    def fs_path(self, fs: DwrayFileSystem) -> Iterator[str]:
        bucket = f"fs-{uuid.uuid4().hex[:12]}"
        fs.mkdir(bucket)
        yield bucket
        fs.rm(bucket, recursive=True)

    @pytest.fixture
    def supports_empty_directories(self) -> bool:
        return False

    @pytest.fixture
    def local_path(self, tmp_path: Path) -> str:
        return str(tmp_path)


class TestDwrayCopy(AbstractCopyTests, DwrayFixtures):
    pass


class TestDwrayGet(AbstractGetTests, DwrayFixtures):
    pass


class TestDwrayPut(AbstractPutTests, DwrayFixtures):
    pass


class TestDwrayOpen(AbstractOpenTests, DwrayFixtures):
    pass


class TestDwrayPipe(AbstractPipeTests, DwrayFixtures):
    pass
