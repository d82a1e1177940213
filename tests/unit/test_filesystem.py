"""``dwray://`` over an in-process warehouse: paths, listings, ranges, writes, errors, options, pickling.

fsspec's own suites run in ``test_filesystem_conformance.py``; these tests pin
what is particular to dwray (buckets as directories, implied folders, whole-or-
nothing writes, pinned versions, options that pickle without secrets). Ray and
the gateway are in ``tests/integration/test_filesystem.py``.
"""
from __future__ import annotations

import pickle
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pytest
from pyarrow.fs import FSSpecHandler, PyFileSystem

from dwray.core.warehouse import Warehouse
from dwray.errors import InvalidArgument
from dwray.filesystem import DwrayFileSystem
from tests.conftest import make_config


@pytest.fixture
def warehouse(tmp_path: Path) -> Iterator[Warehouse]:
    with Warehouse(make_config(tmp_path / "data", "memory")) as warehouse:
        yield warehouse


@pytest.fixture
def fs(warehouse: Warehouse) -> DwrayFileSystem:
    fs = fsspec.filesystem("dwray", warehouse=warehouse)
    fs.mkdir("sales")
    fs.pipe({"sales/2026/jan.csv": b"a,b\n1,2\n", "sales/2026/q1/feb.csv": b"a,b\n3,4\n", "sales/top": b"t"})
    return fs


def test_the_entry_point_registers_the_protocol() -> None:
    assert fsspec.get_filesystem_class("dwray") is DwrayFileSystem
    fs, path = fsspec.core.url_to_fs("dwray://sales/2026/jan.csv", warehouse=object())
    assert isinstance(fs, DwrayFileSystem) and path == "sales/2026/jan.csv"


def test_buckets_are_the_root_and_folders_are_implied_by_slashes(fs: DwrayFileSystem) -> None:
    assert fs.ls("", detail=False) == ["sales"]
    assert fs.ls("dwray://sales", detail=False) == ["sales/2026", "sales/top"]
    listing = {entry["name"]: entry for entry in fs.ls("sales/2026/")}
    assert listing["sales/2026/q1"]["type"] == "directory"
    jan = listing["sales/2026/jan.csv"]
    assert (jan["type"], jan["size"], jan["mtime"].tzinfo is not None) == ("file", 8, True)
    assert fs.info("sales")["type"] == fs.info("sales/2026")["type"] == "directory"
    assert fs.ls("sales/2026/jan.csv", detail=False) == ["sales/2026/jan.csv"]
    assert fs.find("sales/2026") == ["sales/2026/jan.csv", "sales/2026/q1/feb.csv"]
    assert fs.find("sales", withdirs=True) == ["sales/2026", "sales/2026/jan.csv", "sales/2026/q1",
                                               "sales/2026/q1/feb.csv", "sales/top"]
    assert fs.find("sales/2026", maxdepth=1) == ["sales/2026/jan.csv"]
    assert fs.glob("sales/**/*.csv") == ["sales/2026/jan.csv", "sales/2026/q1/feb.csv"]


def test_a_folder_marker_key_is_the_folder_not_an_entry_of_it(fs: DwrayFileSystem) -> None:
    fs.warehouse.put("sales", "2026/", b"")
    assert fs.ls("sales/2026", detail=False) == ["sales/2026/jan.csv", "sales/2026/q1"]


def test_missing_buckets_and_keys_are_file_not_found_naming_them(fs: DwrayFileSystem) -> None:
    with pytest.raises(FileNotFoundError, match="object 'nope.csv' does not exist in bucket 'sales'"):
        fs.cat("sales/nope.csv")
    with pytest.raises(FileNotFoundError, match="bucket 'nobucket' does not exist"):
        fs.ls("dwray://nobucket/x")
    with pytest.raises(FileNotFoundError, match="dwray://sales/2026/q2"):
        fs.info("sales/2026/q2")
    with pytest.raises(FileNotFoundError):
        fs.open("sales/nope.csv")
    assert not fs.exists("sales/2026/q2") and fs.exists("sales/2026/q1")
    assert fs.find("sales/nothing-here") == []


def test_cat_file_reads_ranges_as_fsspec_counts_them(fs: DwrayFileSystem) -> None:
    fs.pipe_file("sales/digits", b"0123456789")
    assert fs.cat_file("sales/digits", 2, 5) == b"234"
    assert fs.cat_file("sales/digits", start=7) == b"789"
    assert fs.cat_file("sales/digits", end=3) == b"012"
    assert fs.cat_file("sales/digits", -3) == b"789"
    assert fs.cat_file("sales/digits", 1, -8) == b"1"
    assert fs.cat_file("sales/digits", 8, 100) == b"89"
    assert fs.cat_file("sales/digits", 10, 12) == fs.cat_file("sales/digits", 5, 5) == b""
    assert fs.read_block("sales/digits", 3, 4) == b"3456"


def test_reads_fetch_only_the_ranges_asked_for(fs: DwrayFileSystem) -> None:
    fs.pipe_file("sales/big", bytes(range(256)) * 4096)  # 1 MiB
    with fs.open("sales/big", block_size=4096, cache_type="none") as f:
        f.seek(300_000)
        assert f.read(10) == (bytes(range(256)) * 4096)[300_000:300_010]
        assert f.tell() == 300_010 and f.size == 1 << 20


def test_a_reader_keeps_the_version_it_opened_in_a_versioned_bucket(fs: DwrayFileSystem) -> None:
    fs.warehouse.create_bucket("history", versioning=True)
    fs.pipe_file("history/k", b"a" * 10_000)
    with fs.open("history/k", block_size=1000, cache_type="none") as f:
        first = f.read(1000)
        fs.pipe_file("history/k", b"b" * 10_000)
        rest = f.read()
    assert first + rest == b"a" * 10_000
    assert fs.cat("history/k") == b"b" * 10_000


def test_a_large_write_streams_in_blocks_and_commits_on_close(fs: DwrayFileSystem) -> None:
    blocks = [bytes([n]) * 300_000 for n in range(7)]
    with fs.open("sales/stream.bin", "wb", block_size=256 * 1024) as f:
        for block in blocks[:4]:
            f.write(block)
        assert f._putter is not None and f._putter.is_alive()  # the put runs while we write
        assert not fs.exists("sales/stream.bin")  # nothing is visible before the commit
        for block in blocks[4:]:
            f.write(block)
    assert fs.cat("sales/stream.bin") == b"".join(blocks)


def test_a_write_that_fails_commits_nothing_and_keeps_the_old_object(fs: DwrayFileSystem) -> None:
    class Stop(Exception):
        pass

    for size in (10, 3_000_000):  # one block (never sent) and a streaming put (aborted)
        with pytest.raises(Stop), fs.open("sales/top", "wb", block_size=1 << 20) as f:
            f.write(b"x" * size)
            raise Stop
        assert fs.cat("sales/top") == b"t"


def test_a_writer_dropped_without_close_commits_nothing(fs: DwrayFileSystem) -> None:
    import gc

    for size in (10, 3_000_000):  # one block, and a streaming put in progress
        writer = fs.open("sales/top", "wb", block_size=1 << 20)
        writer.write(b"y" * size)
        del writer
        gc.collect()
        assert fs.cat("sales/top") == b"t"


def test_a_write_into_a_missing_bucket_raises_file_not_found(fs: DwrayFileSystem) -> None:
    with pytest.raises(FileNotFoundError, match="bucket 'nobucket'"):
        with fs.open("nobucket/k", "wb", block_size=1 << 16) as f:
            f.write(b"x" * 500_000)
    with pytest.raises(FileNotFoundError, match="bucket 'nobucket'"):
        fs.pipe_file("nobucket/k", b"x")


def test_exclusive_writes_never_replace_an_object(fs: DwrayFileSystem) -> None:
    with pytest.raises(FileExistsError):
        fs.open("sales/top", "xb")
    with pytest.raises(FileExistsError):
        fs.pipe_file("sales/top", b"new", mode="create")
    with fs.open("sales/fresh", "xb") as f:
        f.write(b"first")
    assert fs.cat("sales/top") == b"t" and fs.cat("sales/fresh") == b"first"
    with pytest.raises(InvalidArgument, match="'ab'"):
        fs.open("sales/top", "ab")


def test_buckets_and_directories(fs: DwrayFileSystem) -> None:
    fs.mkdir("sales/new/dir")  # inside a bucket: nothing to create
    assert not fs.exists("sales/new")
    fs.makedirs("reports/2026/q1")  # creates the bucket
    assert fs.ls("", detail=False) == ["reports", "sales"]
    with pytest.raises(FileExistsError):
        fs.makedirs("reports")
    fs.makedirs("reports", exist_ok=True)
    with pytest.raises(FileNotFoundError):
        fs.mkdir("nobucket/dir", create_parents=False)
    with pytest.raises(OSError, match="not empty"):
        fs.rmdir("sales/2026")
    with pytest.raises(OSError, match="sales"):
        fs.rmdir("sales")  # a bucket that holds objects
    fs.rmdir("reports")
    assert not fs.exists("reports")
    with pytest.raises(InvalidArgument, match="bucket name"):
        fs.mkdir("")


def test_rm_and_server_side_copy(fs: DwrayFileSystem) -> None:
    fs.cp("sales/2026", "sales/copy", recursive=True)
    assert fs.find("sales/copy") == ["sales/copy/jan.csv", "sales/copy/q1/feb.csv"]
    assert fs.cat("sales/copy/q1/feb.csv") == b"a,b\n3,4\n"
    fs.rm("sales/copy/jan.csv")
    assert fs.find("sales/copy") == ["sales/copy/q1/feb.csv"]
    fs.rm("sales/2026", recursive=True)
    assert fs.ls("sales", detail=False) == ["sales/copy", "sales/top"]
    with pytest.raises(IsADirectoryError):
        fs.rm_file("sales")
    fs.rm("sales", recursive=True)  # the objects, then the bucket
    assert fs.ls("") == []


def test_modified_is_the_time_the_version_was_written(fs: DwrayFileSystem) -> None:
    info = fs.warehouse.head("sales", "top")
    assert fs.modified("sales/top").timestamp() == pytest.approx(info.last_modified)
    with pytest.raises(IsADirectoryError):
        fs.modified("sales/2026")


def test_upload_and_download_files(fs: DwrayFileSystem, tmp_path: Path) -> None:
    source = tmp_path / "up.bin"
    source.write_bytes(b"z" * 100_000)
    fs.put(str(source), "sales/up.bin")
    fs.get("sales/up.bin", str(tmp_path / "down.bin"))
    assert (tmp_path / "down.bin").read_bytes() == b"z" * 100_000


def test_pandas_and_pyarrow_datasets_read_and_write_through_it(fs: DwrayFileSystem) -> None:
    frame = pd.DataFrame({"city": ["Oslo", "Lima", "Pune"] * 100, "n": range(300)})
    options = {"warehouse": fs.warehouse}
    frame.iloc[:150].to_parquet("dwray://sales/frames/part-0.parquet", storage_options=options)
    frame.iloc[150:].to_parquet("dwray://sales/frames/part-1.parquet", storage_options=options)
    pd.testing.assert_frame_equal(pd.read_parquet("dwray://sales/frames/part-1.parquet", storage_options=options),
                                  frame.iloc[150:])
    for filesystem in (fs, PyFileSystem(FSSpecHandler(fs))):
        dataset = ds.dataset("sales/frames", format="parquet", filesystem=filesystem)
        assert sorted(dataset.files) == ["sales/frames/part-0.parquet", "sales/frames/part-1.parquet"]
        table = dataset.to_table(filter=ds.field("city") == "Lima")
        assert table.num_rows == 100 and table.column("n").to_pylist()[:2] == [1, 4]
    ds.write_dataset(pa.table({"x": [1, 2, 3]}), "sales/written", format="parquet",
                     filesystem=PyFileSystem(FSSpecHandler(fs)))
    assert ds.dataset("sales/written", filesystem=fs).to_table().column("x").to_pylist() == [1, 2, 3]


def test_tenant_option_scopes_every_call(warehouse: Warehouse) -> None:
    acme = DwrayFileSystem(warehouse=warehouse, tenant="acme")
    globex = DwrayFileSystem(warehouse=warehouse, tenant="globex")
    acme.mkdir("acme-data")
    acme.pipe_file("acme-data/k", b"acme's")
    assert globex.ls("") == [] and acme.ls("", detail=False) == ["acme-data"]
    with pytest.raises(PermissionError):
        globex.cat("acme-data/k")


def test_options_are_checked_before_anything_connects() -> None:
    with pytest.raises(InvalidArgument, match="access_key, secret_key need endpoint_url="):
        DwrayFileSystem(access_key="AK", secret_key="SK")
    with pytest.raises(InvalidArgument, match="namespace are for a warehouse on Ray"):
        DwrayFileSystem(endpoint_url="http://127.0.0.1:1", namespace="dwray")
    with pytest.raises(InvalidArgument, match="option tenant"):
        DwrayFileSystem(namespace="dwray", tenant="")
    with pytest.raises(InvalidArgument, match="secret_key must be a string"):
        DwrayFileSystem(endpoint_url="http://127.0.0.1:1", access_key="AK", secret_key=b"SK")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="url and endpoint_url name the same thing"):
        DwrayFileSystem(url="http://127.0.0.1:1", endpoint_url="http://127.0.0.1:2")


def test_the_gateway_options_pass_through_fsspec_and_pandas_unchanged() -> None:
    """pandas calls ``url_to_fs(path, **storage_options)``: no option may be called ``url``."""
    options = {"endpoint_url": "http://127.0.0.1:1", "access_key": "AK", "secret_key": "SK", "tenant": "acme"}
    fs, path = fsspec.core.url_to_fs("dwray://sales/k.parquet", **options)
    assert path == "sales/k.parquet" and fs._options["endpoint_url"] == "http://127.0.0.1:1"
    assert DwrayFileSystem(url="http://127.0.0.1:1")._options == DwrayFileSystem(
        endpoint_url="http://127.0.0.1:1")._options  # dwray.connect's name, when built directly


def test_it_pickles_by_its_options_and_never_shows_the_secret() -> None:
    fs = DwrayFileSystem(endpoint_url="http://127.0.0.1:1", access_key="AKEXAMPLE",
                         secret_key="very-secret-value", tenant="acme")
    assert "very-secret-value" not in repr(fs) and "AKEXAMPLE" not in repr(fs)
    assert "secret_key" not in fs.storage_options and "very-secret-value" not in fs.to_json()
    copy = pickle.loads(pickle.dumps(fs))
    assert copy is not fs and copy._warehouse is None  # nothing connected, here or in the copy
    assert copy._options == fs._options and copy.tenant == "acme"
    by_reference = DwrayFileSystem(endpoint_url="http://127.0.0.1:1", access_key="AK",
                                   secret_key="secret://file//run/sk")
    assert b"secret://file//run/sk" in pickle.dumps(by_reference)


def test_an_in_process_warehouse_cannot_be_shipped(fs: DwrayFileSystem) -> None:
    with pytest.raises(InvalidArgument, match="cannot be sent to another process: give it storage options"):
        pickle.dumps(fs)
