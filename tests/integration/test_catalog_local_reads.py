"""Catalog reads without a Ray round trip: a driver on the catalog actor's node reads its SQLite file itself.

Real Ray (the session's plugin tree), real SQLite. A ``RemoteCatalog`` over a
``PluginHandle`` that counts the plugin calls it makes proves which reads
stayed local; a second one with local reads off gives the remote answers to
compare with, errors included.
"""
from __future__ import annotations

import shutil
import sqlite3
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from actors.handles import PluginHandle
from actors.remote_services import RemoteCatalog, local_catalog_reader
from dwray.core.catalog import SCHEMA_VERSION, Catalog, CatalogReader, LocalReadUnavailable
from dwray.errors import BucketAccessDenied, BucketNotFound, DwrayError, ObjectDeleted, ObjectNotFound

LOCAL_READS = ("get_object", "get_bucket", "segments_page")


class CountingHandle(PluginHandle):
    """The real handle of the catalog plugin, counting the plugin calls made through it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: Counter[str] = Counter()

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        self.calls[method] += 1
        return super().call(method, *args, **kwargs)


@pytest.fixture
def tree(ray_warehouse: Any) -> Iterator[dict[str, Any]]:
    """A warehouse of a tenant of its own, a counted local-reading catalog proxy and a remote-only one."""
    shared = ray_warehouse
    tenant = f"t{uuid.uuid4().hex[:12]}"
    wh = shared.for_test(tenant, "caller")
    runtime = shared.config.runtime

    def handle(cls: type[PluginHandle] = PluginHandle) -> Any:
        return cls("catalog", supervisor=shared.supervisor, namespace=runtime.namespace,
                   supervisor_name=runtime.supervisor_name)

    counted = handle(CountingHandle)
    local, remote = RemoteCatalog(counted), RemoteCatalog(handle(), local_reads=False)
    yield {"wh": wh, "tenant": tenant, "local": local, "remote": remote, "calls": counted.calls}
    local.close()
    for owner in wh.catalog.quota_tenants():
        if owner == tenant or owner.startswith(f"{tenant}-"):
            for bucket in wh.catalog.list_buckets(owner):
                wh.catalog.drop_bucket(owner, bucket.name)


def answer(call: Callable[[], Any]) -> Any:
    """What a catalog read answers: its result, or its error as (type, args)."""
    try:
        return call()
    except DwrayError as exc:
        return type(exc), exc.args


def test_reads_are_local_and_answer_as_the_catalog_service_does(tree: dict[str, Any]) -> None:
    wh, tenant, local, remote = tree["wh"], tree["tenant"], tree["local"], tree["remote"]
    bucket, versioned, theirs = f"lr-{tenant}", f"lrv-{tenant}", f"lro-{tenant}"
    wh.create_bucket(bucket)
    wh.create_bucket(versioned, versioning=True)
    wh.create_bucket(theirs, tenant=f"{tenant}-acme")
    wh.put(bucket, "small", b"x" * 4096, metadata={"m": "1"}, tags={"t": "2"})
    first = wh.put(versioned, "gone", b"first")
    wh.delete(versioned, "gone")  # the latest version is now a delete marker
    upload = wh.create_multipart_upload(bucket, "multi")
    part = wh.upload_part(bucket, "multi", upload.upload_id, 1, b"p" * 10_000)
    wh.complete_multipart_upload(bucket, "multi", upload.upload_id, [(1, part.etag)])
    multi = remote.get_object(tenant, bucket, "multi")
    marker = local.get_object(tenant, versioned, "gone", wh.versions(versioned, "gone")[0].version_id)

    reads: list[tuple[str, tuple[Any, ...]]] = [
        ("get_bucket", (tenant, bucket)),
        ("get_bucket", (tenant, versioned)),
        ("get_bucket", (tenant, theirs)),                     # another tenant's: BucketAccessDenied
        ("get_bucket", (tenant, f"none-{tenant}")),           # nobody's: BucketNotFound
        ("get_object", (tenant, bucket, "small")),
        ("get_object", (tenant, bucket, "small", "null")),
        ("get_object", (tenant, bucket, "missing")),          # ObjectNotFound
        ("get_object", (tenant, versioned, "gone")),          # ObjectDeleted
        ("get_object", (tenant, versioned, "gone", first.version_id)),
        ("get_object", (tenant, versioned, "gone", marker.version_id)),  # a named delete marker is returned
        ("get_object", (tenant, theirs, "small")),            # BucketAccessDenied
        ("get_object", (tenant, f"none-{tenant}", "small")),  # BucketNotFound
        ("get_object", (tenant, bucket, "multi")),
        ("segments_page", (tenant, bucket, "multi", multi.version_id)),
        ("segments_page", (tenant, bucket, "multi", multi.version_id, 5000, 1)),
        ("segments_page", (tenant, bucket, "small", "null")),
    ]
    tree["calls"].clear()
    answers = {(name, args): answer(lambda: getattr(local, name)(*args)) for name, args in reads}
    assert not any(tree["calls"][name] for name in LOCAL_READS), tree["calls"]  # none went to the actor
    assert answers == {(name, args): answer(lambda: getattr(remote, name)(*args)) for name, args in reads}

    errors = {args: found[0] for (_, args), found in answers.items() if isinstance(found, tuple)}
    assert errors == {
        (tenant, theirs): BucketAccessDenied, (tenant, f"none-{tenant}"): BucketNotFound,
        (tenant, bucket, "missing"): ObjectNotFound, (tenant, versioned, "gone"): ObjectDeleted,
        (tenant, theirs, "small"): BucketAccessDenied, (tenant, f"none-{tenant}", "small"): BucketNotFound,
    }
    small = answers[("get_object", (tenant, bucket, "small"))]
    assert (small.size, small.metadata, small.tags, small.placement is not None) == (4096, {"m": "1"}, {"t": "2"},
                                                                                     True)
    assert len(answers[("segments_page", (tenant, bucket, "multi", multi.version_id))]) == 1
    # A wrong call fails in the caller, as over Ray.
    with pytest.raises(TypeError):
        local.get_object(tenant, bucket)


def test_a_read_after_an_acknowledged_write_sees_it_from_any_thread(tree: dict[str, Any]) -> None:
    wh, tenant, local = tree["wh"], tree["tenant"], tree["local"]
    bucket = f"lr-{tenant}"
    wh.create_bucket(bucket)
    tree["calls"].clear()
    for round_ in range(5):
        put = wh.put(bucket, "key", f"version {round_}".encode())
        assert local.get_object(tenant, bucket, "key").etag == put.etag
    wh.delete(bucket, "key")
    with pytest.raises(ObjectNotFound):
        local.get_object(tenant, bucket, "key")

    puts = {f"k{n}": wh.put(bucket, f"k{n}", bytes([n]) * 100).etag for n in range(8)}
    with ThreadPoolExecutor(4) as pool:
        found = dict(pool.map(lambda key: (key, local.get_object(tenant, bucket, key).etag), sorted(puts) * 4))
    assert found == puts
    assert not any(tree["calls"][name] for name in LOCAL_READS), tree["calls"]


def test_a_read_the_local_file_cannot_answer_goes_to_the_catalog_service(tree: dict[str, Any]) -> None:
    wh, tenant, local = tree["wh"], tree["tenant"], tree["local"]
    bucket = f"lr-{tenant}"
    wh.create_bucket(bucket)
    put = wh.put(bucket, "key", b"data")
    assert local.get_object(tenant, bucket, "key").etag == put.etag
    assert tree["calls"]["get_object"] == 0
    reader = local._local.reader()
    assert isinstance(reader, CatalogReader)
    reader.close()  # every read of it now fails in SQLite: each is asked of the actor instead
    assert local.get_object(tenant, bucket, "key").etag == put.etag
    with pytest.raises(ObjectNotFound):
        local.get_object(tenant, bucket, "missing")
    assert tree["calls"]["get_object"] == 2


def test_the_reader_is_used_only_for_the_file_the_catalog_has_open_here(ray_warehouse: Any, tmp_path: Path) -> None:
    import ray

    runtime = ray_warehouse.config.runtime
    handle = PluginHandle("catalog", supervisor=ray_warehouse.supervisor, namespace=runtime.namespace,
                          supervisor_name=runtime.supervisor_name)
    actor, _ = handle.current()
    health, node = ray.get([actor.ping.remote(), actor.node_id.remote()])
    here = ray.get_runtime_context().get_node_id()
    assert node == here and health["schema_version"] == SCHEMA_VERSION
    reader = local_catalog_reader(health, node, here)
    assert reader.schema_version == SCHEMA_VERSION
    reader.close()

    copy = tmp_path / "copy.db"
    shutil.copyfile(health["file"]["path"], copy)
    refused = {
        "another node": (health, "f" * len(node), here),
        "another schema": ({**health, "schema_version": SCHEMA_VERSION + 1}, node, here),
        "no file said": ({"ok": True, "schema_version": SCHEMA_VERSION}, node, here),
        "a missing file": ({**health, "file": {**health["file"], "path": str(tmp_path / "none.db")}}, node, here),
        "another file": ({**health, "file": {**health["file"], "path": str(copy)}}, node, here),
    }
    for case, args in refused.items():
        with pytest.raises(LocalReadUnavailable):
            local_catalog_reader(*args)
            pytest.fail(f"a reader for {case}")


def test_a_catalog_of_another_schema_version_is_not_read(tmp_path: Path) -> None:
    path = tmp_path / "catalog.db"
    catalog = Catalog(path)
    catalog.create_bucket("acme", "b", "b-id")
    reader = CatalogReader(path)
    assert reader.get_bucket("acme", "b") == catalog.get_bucket("acme", "b")
    with pytest.raises(LocalReadUnavailable, match="cannot open"):
        CatalogReader(tmp_path / "missing.db")
    assert not (tmp_path / "missing.db").exists()  # never created

    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    with pytest.raises(LocalReadUnavailable, match="schema version"):
        CatalogReader(path)
    # A reader opened before: a thread that connects now refuses too, so its caller asks the actor.
    failures: list[BaseException] = []

    def read() -> None:
        try:
            reader.get_bucket("acme", "b")
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion below
            failures.append(exc)
    thread = threading.Thread(target=read)
    thread.start()
    thread.join()
    assert [type(exc) for exc in failures] == [LocalReadUnavailable]
    with pytest.raises(DwrayError, match="read-only"):
        reader.create_bucket("acme", "c", "c-id")
    reader.close()
    catalog.close()
