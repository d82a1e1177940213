"""``dw``: bucket and object commands on the data dir's warehouse, the demo and the benchmark.

The warehouse is the one running for that data dir (``dw up``, ``dwray.connect()``),
reached through its actors, when one runs; else the data dir is opened in the
command's own process (see ``State.warehouse``).

Every command takes ``--json`` for machine-readable output. Errors print one
line naming what was wrong (or ``{"error": ...}`` with ``--json``) and exit 1;
usage mistakes exit 2.
"""
from __future__ import annotations

import sys
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO

import click
from rich.markup import escape
from rich.table import Table

from dwray.cli.keys_cmds import keys_group
from dwray.cli.output import (
    PROGRESS_THRESHOLD,
    CountingReader,
    emit,
    print_table,
    printable,
    progress_bar,
    stderr,
    stdout,
)
from dwray.cli.secret_cmds import secret_group
from dwray.cli.state import State, command, command_config
from dwray.errors import InvalidArgument


def split_target(target: str, *, key_required: bool) -> tuple[str, str]:
    """``bucket/key`` (an optional ``dw://`` prefix is allowed) -> (bucket, key)."""
    target = target.removeprefix("dw://")
    bucket, _, key = target.partition("/")
    if not bucket:
        raise InvalidArgument(f"{target!r} names no bucket; write BUCKET/KEY")
    if key_required and not key:
        raise InvalidArgument(f"{target!r} names no object key; write BUCKET/KEY")
    return bucket, key


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--data-dir", type=click.Path(path_type=Path), envvar="DWRAY_DATA_DIR",
              help="warehouse data folder (default ./dwray-data; env DWRAY_DATA_DIR)")
@click.option("--config", type=click.Path(path_type=Path, dir_okay=False), envvar="DWRAY_CONFIG",
              help="TOML config file (env DWRAY_CONFIG)")
@click.option("--tenant", default=None, help="tenant to act for (default: the configured default tenant)")
@click.version_option(package_name="dwray")
@click.pass_context
def cli(ctx: click.Context, data_dir: Path | None, config: Path | None, tenant: str | None) -> None:
    """dwray: a secure, multi-tenant data warehouse kernel on Ray."""
    ctx.obj = State(data_dir, config, tenant)


@command(cli, "mb")
@click.argument("bucket")
@click.option("--versioning", is_flag=True, help="keep every version of every key")
def make_bucket(state: State, as_json: bool, bucket: str, versioning: bool) -> None:
    """Create a bucket."""
    info = state.warehouse.create_bucket(bucket.removeprefix("dw://").rstrip("/"), versioning=versioning,
                                         tenant=state.tenant)
    emit(as_json, asdict(info), lambda: stdout.print(f"created bucket {info.name}", highlight=False))


@command(cli, "rb")
@click.argument("bucket")
def remove_bucket(state: State, as_json: bool, bucket: str) -> None:
    """Delete an empty bucket."""
    name = bucket.removeprefix("dw://").rstrip("/")
    state.warehouse.delete_bucket(name, tenant=state.tenant)
    emit(as_json, {"deleted": name}, lambda: stdout.print(f"deleted bucket {name}", highlight=False))


def _shown(name: str) -> str:
    """A key or prefix as a table shows it: control characters escaped, and no rich markup."""
    return escape(printable(name))


@command(cli, "ls")
@click.argument("target", required=False)
@click.option("--recursive", "-r", is_flag=True, help="list every key, not one level")
def list_command(state: State, as_json: bool, target: str | None, recursive: bool) -> None:
    """List buckets, or the keys of BUCKET[/PREFIX]."""
    wh = state.warehouse
    if not target:
        buckets = wh.list_buckets(tenant=state.tenant)
        emit(as_json, [asdict(b) for b in buckets],
             lambda: [stdout.print(b.name, highlight=False) for b in buckets])
        return
    bucket, prefix = split_target(target, key_required=False)
    objects, prefixes, token = [], [], None
    while True:
        page = wh.list(bucket, prefix=prefix, delimiter=None if recursive else "/",
                       continuation_token=token, tenant=state.tenant)
        objects.extend(page.objects)
        prefixes.extend(page.common_prefixes)
        if not page.is_truncated:
            break
        token = page.next_continuation_token

    def human() -> None:
        table = Table(box=None, show_header=True)
        for column in ("size", "modified", "key"):
            table.add_column(column, justify="right" if column == "size" else "left")
        for common in prefixes:
            table.add_row("PRE", "", _shown(common))
        for info in objects:
            modified = datetime.fromtimestamp(info.last_modified, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
            table.add_row(str(info.size), modified, _shown(info.key))
        print_table(table)

    emit(as_json, {"objects": [asdict(o) for o in objects], "common_prefixes": prefixes}, human)


@command(cli, "put")
@click.argument("source", type=click.Path(allow_dash=True, dir_okay=False, path_type=str))
@click.argument("target")
@click.option("--content-type", default=None)
@click.option("--meta", multiple=True, metavar="NAME=VALUE", help="user metadata (repeatable)")
@click.option("--progress/--no-progress", default=None, help="progress bar (default: when on a terminal)")
def put_command(state: State, as_json: bool, source: str, target: str, content_type: str | None,
                meta: tuple[str, ...], progress: bool | None) -> None:
    """Upload a file (or - for standard input) to BUCKET/KEY."""
    bucket, key = split_target(target, key_required=False)
    if not key:
        if source == "-":
            raise InvalidArgument("give a key when reading standard input: BUCKET/KEY")
        key = Path(source).name
    metadata = {}
    for item in meta:
        name, sep, value = item.partition("=")
        if not sep:
            raise InvalidArgument(f"--meta {item!r} must be NAME=VALUE")
        metadata[name] = value
    if source == "-":
        handle: BinaryIO = sys.stdin.buffer
        size = None
    else:
        try:
            handle = open(source, "rb")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise InvalidArgument(f"cannot read {source}: {exc.strerror}") from None
        size = Path(source).stat().st_size
    show = (stderr.is_terminal and (size or 0) > PROGRESS_THRESHOLD) if progress is None else progress
    try:
        with progress_bar(show and not as_json) as bar:
            task = bar.add_task(f"put {key}", total=size)
            info = state.warehouse.put(bucket, key, CountingReader(handle, lambda n: bar.advance(task, n)),
                                       content_type=content_type, metadata=metadata, tenant=state.tenant)
    finally:
        if handle is not sys.stdin.buffer:
            handle.close()
    emit(as_json, asdict(info),
         lambda: stdout.print(f"put {bucket}/{info.key} ({info.size} bytes, etag {info.etag})", highlight=False))


@command(cli, "get")
@click.argument("target")
@click.argument("dest", required=False, type=click.Path(allow_dash=True, dir_okay=True, path_type=str))
@click.option("--range", "byte_range", default=None, metavar="FIRST-LAST", help="inclusive byte range")
@click.option("--version-id", default=None)
@click.option("--progress/--no-progress", default=None, help="progress bar (default: when on a terminal)")
def get_command(state: State, as_json: bool, target: str, dest: str | None, byte_range: str | None,
                version_id: str | None, progress: bool | None) -> None:
    """Download BUCKET/KEY to DEST (a file or folder; - or omitted: standard output)."""
    bucket, key = split_target(target, key_required=True)
    parsed = parse_range(byte_range) if byte_range else None
    reader = state.warehouse.open(bucket, key, range=parsed, version_id=version_id, tenant=state.tenant)
    to_stdout = dest in (None, "-")
    if to_stdout and as_json:
        raise InvalidArgument("--json prints a summary; give a DEST file to write the object to")
    path = None if to_stdout else Path(dest)  # type: ignore[arg-type]
    if path is not None and path.is_dir():
        path = path / Path(key).name
    show = (stderr.is_terminal and reader.length > PROGRESS_THRESHOLD) if progress is None else progress
    written = 0
    with reader, progress_bar(show and not to_stdout and not as_json) as bar:
        task = bar.add_task(f"get {key}", total=reader.length)
        if path is None:
            out = sys.stdout.buffer
            for chunk in reader:
                out.write(chunk)
                written += len(chunk)
            out.flush()
        else:
            partial = path.with_name(f".{path.name}.dwray-partial")
            try:
                with open(partial, "wb") as out:
                    for chunk in reader:
                        out.write(chunk)
                        written += len(chunk)
                        bar.advance(task, len(chunk))
                partial.replace(path)
            except BaseException:
                partial.unlink(missing_ok=True)
                raise
    if path is not None:
        emit(as_json, {**asdict(reader.info), "written": written, "path": str(path)},
             lambda: stdout.print(f"got {bucket}/{key} -> {path} ({written} bytes)", highlight=False))


def parse_range(text: str) -> tuple[int, int | None]:
    first, sep, last = text.removeprefix("bytes=").partition("-")
    try:
        return int(first), (int(last) if last else None)
    except ValueError:
        raise InvalidArgument(f"range {text!r} must look like FIRST-LAST or FIRST-") from None


@command(cli, "head")
@click.argument("target")
@click.option("--version-id", default=None)
def head_command(state: State, as_json: bool, target: str, version_id: str | None) -> None:
    """Show an object's metadata."""
    bucket, key = split_target(target, key_required=True)
    info = state.warehouse.head(bucket, key, version_id=version_id, tenant=state.tenant)

    def human() -> None:
        for name, value in asdict(info).items():
            stdout.print(f"{name:14} {value}", highlight=False)
    emit(as_json, asdict(info), human)


@command(cli, "rm")
@click.argument("target")
@click.option("--version-id", default=None)
def remove_command(state: State, as_json: bool, target: str, version_id: str | None) -> None:
    """Delete BUCKET/KEY (deleting a missing key succeeds, as in S3)."""
    bucket, key = split_target(target, key_required=True)
    result = state.warehouse.delete(bucket, key, version_id=version_id, tenant=state.tenant)
    emit(as_json, asdict(result), lambda: stdout.print(
        f"{'deleted' if result.existed else 'no such key, nothing deleted:'} {bucket}/{key}", highlight=False))


@command(cli, "cp")
@click.argument("source")
@click.argument("target")
def copy_command(state: State, as_json: bool, source: str, target: str) -> None:
    """Copy BUCKET/KEY to BUCKET/KEY inside the warehouse."""
    src_bucket, src_key = split_target(source, key_required=True)
    dst_bucket, dst_key = split_target(target, key_required=False)
    info = state.warehouse.copy(src_bucket, src_key, dst_bucket, dst_key or src_key, tenant=state.tenant)
    emit(as_json, asdict(info), lambda: stdout.print(f"copied to {dst_bucket}/{info.key}", highlight=False))


@command(cli, "sweep")
@click.option("--grace", type=float, default=None, help="seconds an unreferenced blob must age (default: config)")
@click.option("--upload-expiry", type=click.FloatRange(min=0), default=None,
              help="abort multipart uploads begun more than this many seconds ago (default: config; "
                   "0 here aborts every upload in progress)")
def sweep_command(state: State, as_json: bool, grace: float | None, upload_expiry: float | None) -> None:
    """Abort expired multipart uploads, then delete blobs that no committed object references."""
    expired = state.warehouse.expire_uploads(upload_expiry)
    report = state.warehouse.sweep(grace_seconds=grace)
    emit(as_json, {**asdict(report), "expired_uploads": expired}, lambda: stdout.print(
        f"expired {expired} multipart upload(s); deleted {report.deleted} unreferenced blob(s); "
        f"{report.young} too young; {report.temp_files} stale temp file(s) removed", highlight=False))


cli.add_command(keys_group)


@command(cli, "status")
@click.option("--address", default=None, help="Ray address of the cluster (default: RAY_ADDRESS or this machine)")
def status_command(state: State, as_json: bool, address: str | None) -> None:
    """Show the running warehouse on one screen: supervisor, tree restarts, plugins, breakers, memory, readiness."""
    from dwray.cli.status import read_status

    report = read_status(address, config_path=state.config)
    emit(as_json, report, lambda: _print_status(report))


def _print_status(report: dict[str, Any]) -> None:
    from dwray.cli.status import print_status

    print_status(report)


@command(cli, "demo")
def demo_command(state: State, as_json: bool) -> None:
    """Create a bucket, put and get a file, and show where and how it is stored."""
    from dwray.cli.demo import run_demo

    report = run_demo(state.warehouse, tenant=state.tenant)
    emit(as_json, report, lambda: _print_demo(report))


def _print_demo(report: dict[str, Any]) -> None:
    stdout.print("[bold]dwray demo[/bold]: a local warehouse, no setup", highlight=False)
    for line in report["steps"]:
        stdout.print(f"  • {line}", highlight=False)


@command(cli, "bench")
@click.option("--mode", type=click.Choice(["inprocess", "ray", "s3"]), default="inprocess", show_default=True,
              help="inprocess: the core in this process; ray: a driver through the supervised actors; "
                   "s3: boto3 against the gateway, compared with SeaweedFS")
@click.option("--placement", type=click.Choice(["actors", "caller"]), default="actors", show_default=True,
              help="ray mode: stages in their own actors, or trusted built-in stages on threads here")
@click.option("--writers", type=int, default=None, help="threads for small puts (default: 1 inprocess, 8 ray)")
@click.option("--size", default="256MiB", show_default=True, help="corpus size")
@click.option("--dir", "folder", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="folder on the disk to measure (default: a temp dir)")
@click.option("--small-count", type=int, default=None,
              help="4 KiB durable puts to time (default 300; s3 mode: 4 KiB objects per load, default 5000)")
@click.option("--repeat", default=3, show_default=True, help="runs of each measure; the best is kept")
@click.option("--processes", default=2, show_default=True, help="s3 mode: client processes")
@click.option("--threads", default=4, show_default=True, help="s3 mode: client threads per process")
@click.option("--seconds", type=float, default=10.0, show_default=True,
              help="s3 mode: at most this long per load (0: no time cap, only the counts)")
@click.option("--large-count", default=8, show_default=True, help="s3 mode: 64 MiB objects per load")
@click.option("--endpoint", default=None, help="s3 mode: gateway URL (default: the running one, else a temporary one)")
@click.option("--compare/--no-compare", default=True, help="s3 mode: run the same load against SeaweedFS")
@click.option("--backend", default="local", show_default=True,
              help="where blobs go: local, memory, sqlite, mirror (2 local disks), tiered, s3 (a SeaweedFS "
                   "started here), postgres (a PostgreSQL started here); also measures local for the ratio")
def bench_command(state: State, as_json: bool, mode: str, placement: str, writers: int | None, size: str,
                  folder: Path | None, small_count: int | None, repeat: int, processes: int, threads: int,
                  seconds: float, large_count: int, endpoint: str | None, compare: bool, backend: str) -> None:
    """Measure put/get throughput and small puts against the yardstick (or, in s3 mode, SeaweedFS) in the same run."""
    from dwray.cli.bench import run_bench
    from dwray.config import parse_size

    if mode == "s3":
        from dwray.cli.bench_s3 import format_s3_report
        from dwray.cli.gateway_bench import run_gateway_bench

        report = run_gateway_bench(state, endpoint=endpoint, processes=processes, threads=threads,
                                   small_count=5000 if small_count is None else small_count,
                                   large_count=large_count, seconds=seconds or None, compare=compare,
                                   progress=lambda message: stderr.print(message, highlight=False))
        emit(as_json, report.as_json(), lambda: print_table(format_s3_report(report)))
        return

    try:
        size_bytes = parse_size(size)
    except ValueError as exc:
        raise InvalidArgument(f"--size: {exc}") from None
    result = run_bench(size_bytes, folder=folder, small_count=300 if small_count is None else small_count,
                       repeat=repeat, mode=mode,
                       placement=placement, writers=writers, keys_from=command_config(state), backend=backend)

    def human() -> None:
        table = Table(title=f"dw bench ({mode}, {backend}, {size_bytes >> 20} MiB corpus)")
        for column in ("measure", "dwray", "yardstick", "ratio"):
            table.add_column(column, justify="right")
        for name, unit in (("put", "MBps"), ("get", "MBps"), ("small_put", "ops")):
            table.add_row(f"{name} ({unit})", f"{result[f'{name}_{unit}']:.1f}",
                          f"{result['yardstick'][f'{name}_{unit}']:.1f}", f"{result[f'{name}_ratio']:.2f}x")
        print_table(table)
        if backend == "local":
            print(f"small puts with the audit log: {result['small_put_ops']:.1f} ops, without: "
                  f"{result['small_put_ops_without_audit']:.1f} ops ({result['audit_small_put_ratio']:.2f}x)")
        else:
            vs = result["vs_local"]
            print(f"{backend} against one local disk, same run: put {vs['put_MBps']:.2f}x, get {vs['get_MBps']:.2f}x, "
                  f"small puts {vs['small_put_ops']:.2f}x")
    emit(as_json, result, human)


cli.add_command(secret_group)
