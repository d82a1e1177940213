"""``dw bench``: dwray's throughput as ratios to the yardstick, measured in the same run.

The yardstick is what one core of this machine does with the same work in one
process, with no warehouse around it. Its definition is
``shared/yardstick/yardstick.py``; the two measures below repeat it exactly
(the same corpus, frames, codec, cipher, fsyncs and SQLite settings) so users
can run ``dw bench`` anywhere without that file.
"""
from __future__ import annotations

import os
import sqlite3
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dwray.config import DwrayConfig

FRAME = 1 << 20


def corpus(size: int) -> bytes:
    """The Python standard library's files, concatenated in a fixed order, repeated to ``size``."""
    root = Path(sysconfig.get_paths()["stdlib"])
    parts, total = [], 0
    for path in sorted(root.rglob("*.py")):
        if "site-packages" in path.parts:
            continue
        try:
            data = path.read_bytes()
        except OSError:
            continue
        parts.append(data)
        total += len(data)
        if total >= size:
            break
    blob = b"".join(parts)
    return (blob * (size // max(len(blob), 1) + 1))[:size]


def yardstick_pipeline(data: bytes, folder: Path) -> tuple[float, float]:
    """Single thread: 1 MiB frames, zstd-1, AES-256-GCM, write, fsync; then read, open, decompress."""
    import zstandard
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    sealer = AESGCM(AESGCM.generate_key(256))
    prefix = os.urandom(8)
    compressor = zstandard.ZstdCompressor(level=1)
    path = folder / "yardstick.blob"
    started = time.perf_counter()
    frames = []
    with open(path, "wb") as out:
        for index, offset in enumerate(range(0, len(data), FRAME)):
            nonce = prefix + index.to_bytes(4, "big")
            sealed = sealer.encrypt(nonce, compressor.compress(data[offset:offset + FRAME]), None)
            out.write(sealed)
            frames.append(len(sealed))
        out.flush()
        os.fsync(out.fileno())
    put_seconds = time.perf_counter() - started
    decompressor = zstandard.ZstdDecompressor()
    started = time.perf_counter()
    restored = 0
    with open(path, "rb") as src:
        for index, length in enumerate(frames):
            nonce = prefix + index.to_bytes(4, "big")
            restored += len(decompressor.decompress(sealer.decrypt(nonce, src.read(length), None)))
    get_seconds = time.perf_counter() - started
    if restored != len(data):
        raise RuntimeError(f"yardstick restored {restored} of {len(data)} bytes")
    path.unlink()
    return len(data) / put_seconds / 1e6, len(data) / get_seconds / 1e6


def yardstick_small_puts(folder: Path, count: int) -> float:
    """4 KiB objects made durable one by one: temp file, fsync, rename, dir fsync, SQLite row."""
    payload = os.urandom(4096)
    db = sqlite3.connect(folder / "yardstick.db", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE objects (key TEXT PRIMARY KEY, size INTEGER)")
    blobs = folder / "blobs"
    blobs.mkdir()
    dir_fd = os.open(blobs, os.O_RDONLY)
    started = time.perf_counter()
    for index in range(count):
        temp, final = blobs / f"{index}.tmp", blobs / str(index)
        with open(temp, "wb") as out:
            out.write(payload)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, final)
        os.fsync(dir_fd)
        db.execute("INSERT INTO objects VALUES (?, ?)", (str(index), len(payload)))
    seconds = time.perf_counter() - started
    os.close(dir_fd)
    db.close()
    return count / seconds


def _bench_config(folder: Path, keys_from: DwrayConfig | None, **sections: Any) -> DwrayConfig:
    """A fresh warehouse in ``folder``, with the key service (``[kms]``, ``[keys]``, ``[secrets]``) of ``keys_from``.

    So ``DWRAY_KMS__PLUGIN=vault-transit dw bench`` measures Transit, and the
    default measures the sealed local keyring.
    """
    from dwray.config import DwrayConfig

    if keys_from is not None:
        sections.update(kms=keys_from.kms, keys=keys_from.keys, secrets=keys_from.secrets)
    return DwrayConfig(data_dir=folder / "dwray", **sections)


def dwray_inprocess(data: bytes, folder: Path, small_count: int,
                    keys_from: DwrayConfig | None = None, *, audit: bool = True,
                    storage: dict[str, Any] | None = None) -> dict[str, float]:
    """The same work through the whole warehouse in this process: catalog, keyring, frames, local disk
    (or the ``storage`` sections' backend), and the audit log, unless ``audit`` is false."""
    from dwray.config import AuditConfig
    from dwray.core.warehouse import Warehouse

    with Warehouse(_bench_config(folder, keys_from, audit=AuditConfig(enabled=audit), **(storage or {}))) as wh:
        return _measure(wh, data, small_count, 1)


def _measure(wh: Any, data: bytes, small_count: int, writers: int) -> dict[str, float]:
    """Put and stream back the corpus, then ``small_count`` 4 KiB puts from ``writers`` threads."""
    wh.create_bucket("bench")
    started = time.perf_counter()
    wh.put("bench", "corpus", data)
    put_seconds = time.perf_counter() - started
    started = time.perf_counter()
    restored = 0
    with wh.open("bench", "corpus") as reader:
        for chunk in reader:
            restored += len(chunk)
    get_seconds = time.perf_counter() - started
    if restored != len(data):
        raise RuntimeError(f"dwray restored {restored} of {len(data)} bytes")
    payload = os.urandom(4096)
    started = time.perf_counter()
    if writers <= 1:
        for index in range(small_count):
            wh.put("bench", f"small/{index}", payload)
    else:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(writers) as pool:
            list(pool.map(lambda i: wh.put("bench", f"small/{i}", payload), range(small_count)))
    small_seconds = time.perf_counter() - started
    return {"put_MBps": len(data) / put_seconds / 1e6, "get_MBps": len(data) / get_seconds / 1e6,
            "small_put_ops": small_count / small_seconds}


def dwray_ray(data: bytes, folder: Path, small_count: int, placement: str, writers: int,
              keys_from: DwrayConfig | None = None, *, audit: bool = True,
              storage: dict[str, Any] | None = None) -> dict[str, float]:
    """The same work from a driver through the supervised plugin actors on a local Ray."""
    import uuid

    from dwray.client import connect
    from dwray.config import AuditConfig, RuntimeConfig

    runtime = RuntimeConfig(namespace=f"dwray-bench-{uuid.uuid4().hex[:8]}", stage_placement=placement)
    config = _bench_config(folder, keys_from, runtime=runtime, audit=AuditConfig(enabled=audit), **(storage or {}))
    with connect(config=config) as wh:
        return _measure(wh, data, small_count, writers)


def run_bench(size: int, *, folder: Path | None = None, small_count: int = 300, repeat: int = 1,
              mode: str = "inprocess", placement: str = "actors", writers: int | None = None,
              keys_from: DwrayConfig | None = None, backend: str = "local") -> dict[str, Any]:
    """Measure the yardstick and dwray alternately, ``repeat`` times each; keep the best of each.

    ``mode="ray"`` drives the warehouse's actors from this process (stages in
    actors, or in this process with ``placement="caller"``); small puts then
    come from ``writers`` threads (default 8). The key service is the one
    ``keys_from`` configures (default: the sealed local keyring). ``backend``
    names the set-up blobs go to (``dwray.cli.bench_backends``).

    Each round also runs dwray once more, under the same load: on the local
    backend with the audit log off, so ``audit_small_put_ratio`` (small puts
    with the audit log / without) is measured in the same run; or, with
    another ``backend``, on the local backend, so ``vs_local`` gives that
    backend's put and get as ratios to a single local disk's.
    """
    from dwray.cli.bench_backends import bench_storage

    data = corpus(size)
    if writers is None:
        writers = 8 if mode == "ray" else 1

    def run_dwray(scratch: Path, storage: dict[str, Any], audit: bool = True) -> dict[str, float]:
        if mode == "ray":
            return dwray_ray(data, scratch, small_count, placement, writers, keys_from, audit=audit, storage=storage)
        return dwray_inprocess(data, scratch, small_count, keys_from, audit=audit, storage=storage)

    best_yard: dict[str, float] = {}
    best_dw: dict[str, float] = {}
    best_other: dict[str, float] = {}
    with bench_storage(backend) as sections:
        for _ in range(max(repeat, 1)):
            with tempfile.TemporaryDirectory(dir=folder) as scratch:
                put, get = yardstick_pipeline(data, Path(scratch))
                small = yardstick_small_puts(Path(scratch), small_count)
                yard = {"put_MBps": put, "get_MBps": get, "small_put_ops": small}
            with tempfile.TemporaryDirectory(dir=folder) as scratch:
                ours = run_dwray(Path(scratch), sections(Path(scratch)))
            with tempfile.TemporaryDirectory(dir=folder) as scratch:
                other = run_dwray(Path(scratch), {}, audit=backend != "local")
            for name, measured in yard.items():
                best_yard[name] = max(best_yard.get(name, 0.0), measured)
                best_dw[name] = max(best_dw.get(name, 0.0), ours[name])
                best_other[name] = max(best_other.get(name, 0.0), other[name])
    result: dict[str, Any] = {"mode": mode, "backend": backend, "size": len(data), "repeat": max(repeat, 1),
                              "writers": writers, "kms": keys_from.kms.plugin if keys_from is not None else "local"}
    if mode == "ray":
        result["placement"] = placement
    result.update({name: round(value, 1) for name, value in best_dw.items()})
    result["yardstick"] = {name: round(value, 1) for name, value in best_yard.items()}
    for name, unit in (("put", "MBps"), ("get", "MBps"), ("small_put", "ops")):
        result[f"{name}_ratio"] = round(best_dw[f"{name}_{unit}"] / best_yard[f"{name}_{unit}"], 3)
    if backend == "local":
        result["small_put_ops_without_audit"] = round(best_other["small_put_ops"], 1)
        result["audit_small_put_ratio"] = round(best_dw["small_put_ops"] / best_other["small_put_ops"], 3)
    else:
        result["local"] = {name: round(value, 1) for name, value in best_other.items()}
        result["vs_local"] = {name: round(best_dw[name] / best_other[name], 3) for name in best_other}
    return result
