"""``dwray://`` on a real Ray cluster: pandas, pyarrow datasets and Ray Data, in-cluster and through the gateway.

The filesystem pickles by its storage options; a Ray task that receives it
connects again in its own worker process (in-cluster: by Ray namespace and
tenant; over the gateway: by URL and access key). Ray Data reads several files,
each in a read task of its own, which the tests check from the tasks' own ids
and processes, not from Ray's plan. ``get_table``'s zero-copy hand-off of the
fetched bytes to Arrow is checked here on Ray too.
"""
from __future__ import annotations

import os
import pickle
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
import ray
from pyarrow.fs import FSSpecHandler, PyFileSystem

from dwray.filesystem import DwrayFileSystem

FILES = 4
ROWS_PER_FILE = 500


@pytest.fixture
def ray_fs(ray_warehouse: Any) -> Iterator[DwrayFileSystem]:
    """A filesystem on the session's Ray warehouse, by options only (no open warehouse), for a fresh tenant."""
    tenant = f"t{uuid.uuid4().hex[:12]}"
    fs = DwrayFileSystem(namespace=ray_warehouse.config.runtime.namespace, tenant=tenant)
    yield fs
    for bucket in fs.ls("", detail=False):
        fs.rm(bucket, recursive=True)


def _frame(part: int) -> pd.DataFrame:
    start = part * ROWS_PER_FILE
    return pd.DataFrame({"part": [part] * ROWS_PER_FILE, "n": range(start, start + ROWS_PER_FILE)})


def _write_parts(fs: DwrayFileSystem, folder: str) -> None:
    options = {**{name: value for name, value in fs._options.items() if value is not None}, "tenant": fs.tenant}
    for part in range(FILES):
        _frame(part).to_parquet(f"dwray://{folder}/part-{part}.parquet", index=False, storage_options=options)


@ray.remote(num_cpus=0)
def _read_in_a_task(fs: DwrayFileSystem, path: str) -> tuple[int, bytes]:
    return os.getpid(), fs.cat_file(path)


def _read_tasks(fs: DwrayFileSystem, folder: str) -> dict[str, set[str]]:
    """Read ``folder`` with Ray Data; the read tasks' ids, each with the files its rows came from."""
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False

    def tag(batch: pa.Table) -> pa.Table:
        # Fused into the read task (Read->MapBatches): this is the task that read the file.
        task = ray.get_runtime_context().get_task_id()
        return batch.append_column("task", pa.array([task] * batch.num_rows))

    dataset = ray.data.read_parquet(f"dwray://{folder}/", filesystem=fs, include_paths=True)
    rows = dataset.map_batches(tag, batch_format="pyarrow", batch_size=None).to_pandas()
    assert sorted(rows["n"]) == list(range(FILES * ROWS_PER_FILE))
    tasks: dict[str, set[str]] = {}
    for task, path in zip(rows["task"], rows["path"], strict=True):
        tasks.setdefault(task, set()).add(path)
    return tasks


def _check_ray_data(fs: DwrayFileSystem, bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Ray Data packs Parquet row groups into read tasks of up to 128 MiB: these files are small,
    # so the bound goes down to one byte, and each file is a read task of its own.
    monkeypatch.setenv("RAY_DATA_PARQUET_BIN_PACKING_BYTES", "1")
    fs.mkdir(bucket)
    _write_parts(fs, f"{bucket}/in")
    tasks = _read_tasks(fs, f"{bucket}/in")
    # Every file was read by a task of its own: FILES tasks, one file each, all files covered.
    assert len(tasks) == FILES, tasks
    assert sorted(path for paths in tasks.values() for path in paths) == [
        f"{bucket}/in/part-{part}.parquet" for part in range(FILES)]
    assert all(len(paths) == 1 for paths in tasks.values())

    ray.data.range(1200, override_num_blocks=3).write_parquet(f"dwray://{bucket}/out/", filesystem=fs)
    written = fs.find(f"{bucket}/out")
    assert len(written) == 3 and all(name.endswith(".parquet") for name in written)
    table = ds.dataset(f"{bucket}/out", format="parquet", filesystem=PyFileSystem(FSSpecHandler(fs))).to_table()
    assert sorted(table.column("id").to_pylist()) == list(range(1200))


def test_pandas_and_pyarrow_on_the_ray_warehouse(ray_fs: DwrayFileSystem) -> None:
    ray_fs.mkdir("frames")
    _write_parts(ray_fs, "frames/sales")
    options = {"namespace": ray_fs._options["namespace"], "tenant": ray_fs.tenant}
    back = pd.read_parquet("dwray://frames/sales/part-2.parquet", storage_options=options)
    pd.testing.assert_frame_equal(back, _frame(2))
    dataset = ds.dataset("frames/sales", format="parquet", filesystem=PyFileSystem(FSSpecHandler(ray_fs)))
    assert dataset.count_rows() == FILES * ROWS_PER_FILE
    assert dataset.to_table(filter=ds.field("n") == 1234).column("part").to_pylist() == [2]


def test_a_task_reconnects_from_the_pickled_options(ray_warehouse: Any) -> None:
    """An fs made over an open RayWarehouse pickles to its namespace and tenant, and a task reads with it."""
    tenant = f"t{uuid.uuid4().hex[:12]}"
    warehouse = ray_warehouse.for_test(tenant, "actors")
    fs = DwrayFileSystem(warehouse=warehouse)
    fs.mkdir("shipped")
    fs.pipe_file("shipped/k", b"read in a worker")
    try:
        pid, data = ray.get(_read_in_a_task.remote(fs, "shipped/k"), timeout=120)
        assert data == b"read in a worker" and pid != os.getpid()
    finally:
        fs.rm("shipped", recursive=True)


def test_ray_data_reads_each_file_in_its_own_task_and_writes(ray_fs: DwrayFileSystem,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    _check_ray_data(ray_fs, "raydata", monkeypatch)


def test_ray_data_through_the_gateway(gateway: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A tenant's access key; the tasks get where its secret lives (a secret:// reference), not the secret."""
    tenant = f"t{uuid.uuid4().hex[:12]}"
    access_key, secret = gateway.new_key(tenant)
    secret_file = tmp_path / "secret-key"
    secret_file.write_text(secret)
    secret_file.chmod(0o600)
    fs = DwrayFileSystem(endpoint_url=gateway.endpoint, access_key=access_key,
                         secret_key=f"secret://file/{secret_file}")
    assert secret.encode() not in pickle.dumps(fs)
    try:
        _check_ray_data(fs, f"raydata-{uuid.uuid4().hex[:8]}", monkeypatch)
    finally:
        for bucket in fs.ls("", detail=False):
            fs.rm(bucket, recursive=True)


def _pool_peak(run: Callable[[], pa.Table]) -> tuple[int, pa.Table]:
    """The most bytes Arrow's memory pool held while ``run`` ran (measured in a pool of its own)."""
    base = pa.default_memory_pool()
    pool = pa.proxy_memory_pool(base)
    pa.set_memory_pool(pool)
    try:
        table = run()
    finally:
        pa.set_memory_pool(base)
    _POOLS.append(pool)  # the table's buffers came from it: it must outlive them
    return pool.max_memory(), table


_POOLS: list[Any] = []


def test_get_table_hands_the_fetched_bytes_to_arrow_without_a_copy(ray_warehouse: Any) -> None:
    """Parquet's decoder allocates the columns; the fetched object's bytes are read in place.

    One incompressible binary column of 4 MiB, stored without compression, so
    a copy of the object in Arrow's memory would cost as much again as the
    decode: ``get_table`` must hold no more than decoding bytes already here,
    and the control (decoding from a copy) shows that the measure sees a copy.
    """
    warehouse = ray_warehouse.for_test(f"t{uuid.uuid4().hex[:12]}", "actors")
    warehouse.create_bucket("zero-copy")
    size = 4 << 20
    table = pa.table({"blob": pa.array([os.urandom(1 << 14) for _ in range(size >> 14)], pa.binary())})

    def from_a_copy() -> pa.Table:
        fetched = pa.py_buffer(warehouse.get("zero-copy", "t.parquet"))
        copy = pa.allocate_buffer(fetched.size)
        memoryview(copy).cast("B")[:] = memoryview(fetched).cast("B")  # a copying reader would do this
        return pq.read_table(pa.BufferReader(copy))

    try:
        warehouse.put_table("zero-copy", "t.parquet", table, compression="none")
        fetched = warehouse.get("zero-copy", "t.parquet")
        in_place, _ = _pool_peak(lambda: pq.read_table(pa.BufferReader(pa.py_buffer(fetched))))
        fetched = b""
        got, back = _pool_peak(lambda: warehouse.get_table("zero-copy", "t.parquet"))
        copied, _ = _pool_peak(from_a_copy)
        assert back.equals(table)
        assert got < in_place + size // 4 < copied, (got, in_place, copied)
    finally:
        warehouse.delete("zero-copy", "t.parquet")
        warehouse.delete_bucket("zero-copy")
