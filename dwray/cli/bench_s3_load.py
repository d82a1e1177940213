"""The load of ``dw bench --mode s3``: boto3 clients in several spawned processes, and their merged figures.

One Python process cannot keep a fast S3 server busy: botocore's signing and
parsing hold the GIL. So a load runs from several client processes of several
threads each, one boto3 client per thread (default checksum behaviour,
standard retries, path-style addressing), all started together on one
barrier; their latencies are merged into one set of figures.
"""
from __future__ import annotations

import math
import multiprocessing
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, Self

from dwray.errors import DwrayError, InvalidArgument

__all__ = [
    "LoadProcesses",
    "LoadResult",
    "ProcessLoad",
    "S3Target",
    "merge_loads",
    "object_key",
    "percentile",
    "run_s3_load",
]

Op = Literal["put", "get"]
READ_CHUNK = 1 << 20  # GET bodies are read in 1 MiB chunks so a 64 MiB object never sits whole in memory


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


@dataclass(frozen=True)
class LoadResult:
    """One timed load, merged over every client process: operations, wall seconds, bytes, latency percentiles.

    ``keys`` are the object indices the load's successful puts wrote (what a get
    load may read); ``server_timing`` pairs each response's client-side latency
    (seconds) with its ``Server-Timing`` header, for the responses that had one.
    """

    ops: int
    seconds: float
    bytes: int
    p50: float
    p99: float
    errors: int
    first_error: str | None = None
    keys: tuple[int, ...] = field(default=(), repr=False)
    server_timing: tuple[tuple[float, str], ...] = field(default=(), repr=False)
    client_cpu_seconds: float = 0.0

    @property
    def client_cpu_ms_per_op(self) -> float:
        """The client processes' CPU (boto3: signing, checksums, parsing) per operation, in milliseconds."""
        return self.client_cpu_seconds / self.ops * 1e3 if self.ops else 0.0

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
                "errors": self.errors, "first_error": self.first_error,
                "client_cpu_s": round(self.client_cpu_seconds, 3),
                "client_cpu_ms_per_op": round(self.client_cpu_ms_per_op, 3)}


@dataclass(frozen=True)
class ProcessLoad:
    """What one client process measured in one load; ``started``/``ended`` are ``time.monotonic()`` readings.

    CLOCK_MONOTONIC is one clock for the whole machine, so the readings of
    several processes can be compared: the load lasted from the first
    process's start to the last one's end.
    """

    started: float
    ended: float
    latencies: tuple[float, ...]
    bytes: int
    errors: int
    first_error: str | None = None
    keys: tuple[int, ...] = ()
    server_timing: tuple[tuple[float, str], ...] = ()
    cpu_seconds: float = 0.0


def merge_loads(parts: list[ProcessLoad]) -> LoadResult:
    """One LoadResult from every process's share: percentiles over all latencies, time from first start to last end."""
    if not parts:
        raise InvalidArgument("no process results to merge")
    ordered = sorted(latency for part in parts for latency in part.latencies)
    first_error = next((part.first_error for part in parts if part.first_error is not None), None)
    return LoadResult(ops=len(ordered), seconds=max(part.ended for part in parts) - min(part.started for part in parts),
                      bytes=sum(part.bytes for part in parts), p50=percentile(ordered, 0.50),
                      p99=percentile(ordered, 0.99), errors=sum(part.errors for part in parts),
                      first_error=first_error, keys=tuple(sorted(key for part in parts for key in part.keys)),
                      server_timing=tuple(sample for part in parts for sample in part.server_timing),
                      client_cpu_seconds=sum(part.cpu_seconds for part in parts))


def object_key(object_size: int, index: int) -> str:
    """The key of the ``index``-th object of a load: puts and gets of the same size name the same keys."""
    return f"bench/{object_size}/{index:08d}"


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted values (0.0 when there are none)."""
    if not sorted_values:
        return 0.0
    rank = min(max(math.ceil(fraction * len(sorted_values)), 1), len(sorted_values))
    return sorted_values[rank - 1]


@dataclass(frozen=True)
class _LoadSpec:
    """One load as sent to every client process; worker ``w`` of ``workers`` does operations w, w + workers, ..."""

    op: Op
    bucket: str
    object_size: int
    count: int
    keys: tuple[int, ...]
    workers: int
    seconds: float | None


def _one_op(client: Any, op: Op, bucket: str, key: str, body: bytes, object_size: int) -> tuple[int, str | None]:
    """Do one put or get; return the bytes moved and the response's Server-Timing header (None without one).

    A short GET body is an error, not a fast result.
    """
    if op == "put":
        response = client.put_object(Bucket=bucket, Key=key, Body=body)
        return len(body), response["ResponseMetadata"]["HTTPHeaders"].get("server-timing")
    response = client.get_object(Bucket=bucket, Key=key)
    received = 0
    for chunk in response["Body"].iter_chunks(READ_CHUNK):
        received += len(chunk)
    if received != object_size:
        raise DwrayError(f"GET {key} returned {received} bytes, expected {object_size}")
    return received, response["ResponseMetadata"]["HTTPHeaders"].get("server-timing")


def _run_share(spec: _LoadSpec, clients: list[Any], first_worker: int, body: bytes, barrier: Any,
               start_timeout: float) -> ProcessLoad:
    """This process's workers' share of ``spec``: threads ready, then the shared barrier, then the clock."""
    threads = len(clients)
    latencies: list[list[float]] = [[] for _ in range(threads)]
    moved, failed = [0] * threads, [0] * threads
    first_errors: list[str] = []
    written: list[list[int]] = [[] for _ in range(threads)]
    timings: list[list[tuple[float, str]]] = [[] for _ in range(threads)]
    go = threading.Event()
    deadline = [math.inf]

    def worker(slot: int) -> None:
        client = clients[slot]
        go.wait()
        for index in range(first_worker + slot, spec.count, spec.workers):
            if time.monotonic() >= deadline[0]:
                break
            key_index = index if spec.op == "put" else spec.keys[index % len(spec.keys)]
            began = time.perf_counter()
            try:
                count, header = _one_op(client, spec.op, spec.bucket, object_key(spec.object_size, key_index), body,
                                        spec.object_size)
            except Exception as exc:  # noqa: BLE001 - counted and reported; one failure must not end the load
                failed[slot] += 1
                first_errors.append(f"{type(exc).__name__}: {exc}")
                continue
            latency = time.perf_counter() - began
            latencies[slot].append(latency)
            moved[slot] += count
            if spec.op == "put":
                written[slot].append(key_index)
            if header is not None:
                timings[slot].append((latency, header))

    pool = [threading.Thread(target=worker, args=(slot,), name=f"s3-bench-{slot}", daemon=True)
            for slot in range(threads)]
    for thread in pool:
        thread.start()
    try:
        barrier.wait(start_timeout)
    except BaseException:
        deadline[0] = -math.inf  # no operation runs: the threads see the deadline passed and end
        go.set()
        for thread in pool:
            thread.join()
        raise
    started, cpu = time.monotonic(), time.process_time()
    if spec.seconds is not None:
        deadline[0] = started + spec.seconds
    go.set()
    for thread in pool:
        thread.join()
    return ProcessLoad(started=started, ended=time.monotonic(), cpu_seconds=time.process_time() - cpu,
                       latencies=tuple(t for per_thread in latencies for t in per_thread), bytes=sum(moved),
                       errors=sum(failed), first_error=first_errors[0] if first_errors else None,
                       keys=tuple(k for per_thread in written for k in per_thread),
                       server_timing=tuple(s for per_thread in timings for s in per_thread))


def _client_process(target: S3Target, threads: int, first_worker: int, commands: Any, results: Any, barrier: Any,
                    start_timeout: float) -> None:
    """A client process: its boto3 clients (one per thread, made once), then loads until told to stop."""
    try:
        clients = [target.client(max_pool_connections=1) for _ in range(threads)]
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which names it
        results.put((first_worker, "error", f"making boto3 clients: {type(exc).__name__}: {exc}"))
        return
    results.put((first_worker, "ready", None))
    bodies: dict[int, bytes] = {}
    while (spec := commands.get()) is not None:
        try:
            if spec.op == "put" and spec.object_size not in bodies:
                bodies.clear()  # one body at a time: a 64 MiB one is enough to hold
                bodies[spec.object_size] = os.urandom(spec.object_size)  # made outside the timed region
            body = bodies.get(spec.object_size, b"") if spec.op == "put" else b""
            results.put((first_worker, "done", _run_share(spec, clients, first_worker, body, barrier,
                                                          start_timeout)))
        except BaseException as exc:  # noqa: BLE001
            barrier.abort()
            results.put((first_worker, "error", f"{type(exc).__name__}: {exc}"))
    for client in clients:
        client.close()


class LoadProcesses:
    """``processes`` client processes of ``threads`` threads each, every thread with a boto3 client of its own.

    One Python process cannot drive a fast server: botocore's signing and
    parsing hold the GIL. The processes are spawned, never forked (the caller
    may hold Ray, which must not be forked), make their clients once, and run
    each load together: all of them wait on one barrier before the clock
    starts. Use it in a ``with`` block; the processes are stopped on exit.
    """

    def __init__(self, target: S3Target, *, processes: int = 2, threads: int = 4, start_timeout: float = 120.0) -> None:
        if processes < 1 or threads < 1:
            raise InvalidArgument(f"need processes >= 1 and threads >= 1; got processes={processes}, "
                                  f"threads={threads}")
        self.target, self.processes, self.threads = target, processes, threads
        self.start_timeout = start_timeout
        self._context = multiprocessing.get_context("spawn")
        self._barrier: Any = None
        self._results: Any = None
        self._children: list[tuple[Any, Any]] = []  # (process, its command queue)

    @property
    def workers(self) -> int:
        return self.processes * self.threads

    @property
    def pids(self) -> tuple[int, ...]:
        return tuple(process.pid for process, _ in self._children)

    def __enter__(self) -> Self:
        self._barrier = self._context.Barrier(self.processes + 1)
        self._results = self._context.Queue()
        try:
            for index in range(self.processes):
                commands = self._context.Queue()
                process = self._context.Process(
                    target=_client_process, name=f"dw-bench-client-{index}", daemon=True,
                    args=(self.target, self.threads, index * self.threads, commands, self._results, self._barrier,
                          self.start_timeout))
                process.start()
                self._children.append((process, commands))
            for _ in range(self.processes):
                self._collect("ready", self.start_timeout)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    def _collect(self, expected: str, timeout: float | None) -> Any:
        """The next message of a child, checking that the children live while waiting."""
        deadline = math.inf if timeout is None else time.monotonic() + timeout
        while True:
            try:
                _, kind, value = self._results.get(timeout=0.5)
            except queue.Empty:
                dead = [process for process, _ in self._children if process.exitcode is not None]
                if dead:
                    raise DwrayError(f"a benchmark client process ({dead[0].name}) exited with status "
                                     f"{dead[0].exitcode}") from None
                if time.monotonic() > deadline:
                    raise DwrayError(f"the benchmark client processes did not answer within {timeout:.0f}s") from None
                continue
            if kind == "error":
                raise DwrayError(f"S3 target {self.target.name!r}: a benchmark client process failed: {value}")
            if kind != expected:
                raise DwrayError(f"a benchmark client process said {kind!r}, expected {expected!r}")
            return value

    def run(self, op: Op, *, object_size: int, count: int, bucket: str, keys: tuple[int, ...] | None = None,
            seconds: float | None = None) -> LoadResult:
        """Up to ``count`` puts (or gets) of ``object_size``-byte objects, over every worker of every process.

        Gets read ``keys`` (default: the ``count`` keys a put load of that size
        writes), cycling through them. ``seconds``: no operation starts after
        that long (one in flight finishes).
        """
        if op not in ("put", "get"):
            raise InvalidArgument(f"op must be 'put' or 'get', got {op!r}")
        if count < 1 or object_size < 0 or (seconds is not None and seconds <= 0):
            raise InvalidArgument(f"need count >= 1, object_size >= 0, seconds > 0; "
                                  f"got count={count}, object_size={object_size}, seconds={seconds}")
        keys = tuple(range(count)) if keys is None else tuple(keys)
        if op == "get" and not keys:
            raise InvalidArgument("a get load needs keys to read: the put load wrote none")
        if not self._children:
            raise DwrayError("the benchmark client processes are not running: use LoadProcesses in a `with` block")
        spec = _LoadSpec(op, bucket, object_size, count, keys if op == "get" else (), self.workers, seconds)
        for _, commands in self._children:
            commands.put(spec)
        try:
            self._barrier.wait(self.start_timeout)
        except threading.BrokenBarrierError:
            self._collect("done", self.start_timeout)  # raises the child's own error if it sent one
            raise DwrayError("the benchmark client processes did not start the load together") from None
        return merge_loads([self._collect("done", None) for _ in range(self.processes)])

    def close(self) -> None:
        """Tell every process to stop; one that does not within 10 s is terminated (these processes only)."""
        children, self._children = self._children, []
        for process, commands in children:
            if process.is_alive():
                commands.put(None)
        for process, _ in children:
            process.join(10)
            if process.is_alive():
                process.terminate()
                process.join(5)


def run_s3_load(target: S3Target, *, processes: int = 1, threads: int, object_size: int, count: int, op: Op,
                bucket: str, keys: tuple[int, ...] | None = None, seconds: float | None = None) -> LoadResult:
    """One load from ``processes`` client processes started for it (``LoadProcesses.run``)."""
    with LoadProcesses(target, processes=processes, threads=threads) as clients:
        return clients.run(op, object_size=object_size, count=count, bucket=bucket, keys=keys, seconds=seconds)
