"""Data-frame-world clients against the gateway: pyarrow's S3 filesystem (Parquet,
datasets; the AWS C++ SDK underneath) and s3fs (fsspec over aiobotocore)."""
from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
import s3fs

from tests.integration.gateway.clients import keys_in, random_bytes


@pytest.fixture
def arrow_fs(gateway: Any) -> pafs.S3FileSystem:
    return pafs.S3FileSystem(access_key=gateway.access_key_id, secret_key=gateway.secret_access_key,
                             endpoint_override=urlsplit(gateway.endpoint).netloc, scheme="http",
                             region=gateway.region)


@pytest.fixture
def fsspec_fs(gateway: Any) -> s3fs.S3FileSystem:
    return s3fs.S3FileSystem(key=gateway.access_key_id, secret=gateway.secret_access_key,
                             client_kwargs={"endpoint_url": gateway.endpoint, "region_name": gateway.region},
                             skip_instance_cache=True, use_listings_cache=False)


def _table(rows: int, offset: int = 0) -> pa.Table:
    return pa.table({
        "id": pa.array(range(offset, offset + rows), pa.int64()),
        "name": [f"row {index} ünï" for index in range(offset, offset + rows)],
        "value": pa.array([index * 0.5 for index in range(offset, offset + rows)], pa.float64()),
        "group": [f"g{index % 3}" for index in range(offset, offset + rows)],
    })


# --- pyarrow -------------------------------------------------------------------------------

def test_parquet_write_and_read_back(arrow_fs: pafs.S3FileSystem, s3: Any, bucket: str) -> None:
    table = _table(50_000)
    pq.write_table(table, f"{bucket}/tables/t.parquet", filesystem=arrow_fs)
    assert "tables/t.parquet" in keys_in(s3, bucket)
    assert pq.read_table(f"{bucket}/tables/t.parquet", filesystem=arrow_fs).equals(table)
    # Column projection reads byte ranges of the file.
    projected = pq.read_table(f"{bucket}/tables/t.parquet", filesystem=arrow_fs, columns=["id", "group"])
    assert projected.equals(table.select(["id", "group"]))


def test_dataset_of_several_files(arrow_fs: pafs.S3FileSystem, bucket: str) -> None:
    table = _table(3000)
    pads.write_dataset(table, f"{bucket}/ds", filesystem=arrow_fs, format="parquet",
                       partitioning=pads.partitioning(pa.schema([("group", pa.string())]), flavor="hive"),
                       max_rows_per_file=400, max_rows_per_group=400)
    written = [info.path for info in arrow_fs.get_file_info(pafs.FileSelector(f"{bucket}/ds", recursive=True))
               if info.type == pafs.FileType.File]
    assert len(written) >= 6
    assert {path.split("/")[2] for path in written} == {"group=g0", "group=g1", "group=g2"}

    dataset = pads.dataset(f"{bucket}/ds", filesystem=arrow_fs, format="parquet", partitioning="hive")
    back = dataset.to_table().sort_by("id").select(table.column_names)
    assert back.equals(table)
    only_g1 = dataset.to_table(filter=pads.field("group") == "g1")
    assert sorted(only_g1.column("id").to_pylist()) == [index for index in range(3000) if index % 3 == 1]


def test_file_info_and_streams(arrow_fs: pafs.S3FileSystem, bucket: str) -> None:
    payload = random_bytes(300_000, seed=40)
    with arrow_fs.open_output_stream(f"{bucket}/dir/blob.bin") as stream:
        stream.write(payload)
    with arrow_fs.open_output_stream(f"{bucket}/dir/sub/note.txt") as stream:
        stream.write(b"note")

    infos = {info.path: info for info in arrow_fs.get_file_info(pafs.FileSelector(f"{bucket}/dir"))}
    assert infos[f"{bucket}/dir/blob.bin"].type == pafs.FileType.File
    assert infos[f"{bucket}/dir/blob.bin"].size == len(payload)
    assert infos[f"{bucket}/dir/sub"].type == pafs.FileType.Directory
    assert arrow_fs.get_file_info(f"{bucket}/dir/missing").type == pafs.FileType.NotFound
    assert arrow_fs.get_file_info(bucket).type == pafs.FileType.Directory

    with arrow_fs.open_input_file(f"{bucket}/dir/blob.bin") as handle:
        assert handle.size() == len(payload)
        handle.seek(1000)
        assert handle.read(500) == payload[1000:1500]
    with arrow_fs.open_input_stream(f"{bucket}/dir/blob.bin") as stream:
        assert stream.read() == payload

    arrow_fs.delete_file(f"{bucket}/dir/blob.bin")
    assert arrow_fs.get_file_info(f"{bucket}/dir/blob.bin").type == pafs.FileType.NotFound


# --- s3fs ----------------------------------------------------------------------------------

def test_s3fs_write_read_list_remove(fsspec_fs: s3fs.S3FileSystem, s3: Any, bucket: str) -> None:
    payload = random_bytes(123_456, seed=41)
    with fsspec_fs.open(f"{bucket}/s3fs/data.bin", "wb") as handle:
        handle.write(payload)
    with fsspec_fs.open(f"{bucket}/s3fs/text.txt", "w", encoding="utf-8") as handle:
        handle.write("grüße\n")
    fsspec_fs.pipe(f"{bucket}/s3fs/nested/piped.txt", b"piped")

    with fsspec_fs.open(f"{bucket}/s3fs/data.bin", "rb") as handle:
        assert handle.read() == payload
        handle.seek(100)
        assert handle.read(10) == payload[100:110]
    with fsspec_fs.open(f"{bucket}/s3fs/text.txt", "r", encoding="utf-8") as handle:
        assert handle.read() == "grüße\n"
    assert fsspec_fs.cat(f"{bucket}/s3fs/nested/piped.txt") == b"piped"

    assert sorted(fsspec_fs.ls(f"{bucket}/s3fs", detail=False)) == [
        f"{bucket}/s3fs/data.bin", f"{bucket}/s3fs/nested", f"{bucket}/s3fs/text.txt"]
    assert fsspec_fs.info(f"{bucket}/s3fs/data.bin")["size"] == len(payload)
    assert fsspec_fs.find(f"{bucket}/s3fs") == [
        f"{bucket}/s3fs/data.bin", f"{bucket}/s3fs/nested/piped.txt", f"{bucket}/s3fs/text.txt"]
    assert not fsspec_fs.exists(f"{bucket}/s3fs/missing")

    fsspec_fs.rm(f"{bucket}/s3fs/data.bin")
    assert keys_in(s3, bucket) == ["s3fs/nested/piped.txt", "s3fs/text.txt"]
    fsspec_fs.rm(f"{bucket}/s3fs", recursive=True)
    assert keys_in(s3, bucket) == []


def test_s3fs_copy_and_move(fsspec_fs: s3fs.S3FileSystem, bucket: str) -> None:
    fsspec_fs.pipe(f"{bucket}/orig.txt", b"original")
    fsspec_fs.copy(f"{bucket}/orig.txt", f"{bucket}/copy.txt")
    fsspec_fs.mv(f"{bucket}/copy.txt", f"{bucket}/moved.txt")
    assert fsspec_fs.cat(f"{bucket}/moved.txt") == b"original"
    assert sorted(fsspec_fs.ls(bucket, detail=False)) == [f"{bucket}/moved.txt", f"{bucket}/orig.txt"]
