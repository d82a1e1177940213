"""A 1 GiB object goes in and comes out as a stream: memory stays bounded, bytes stay exact.

Each phase runs in a fresh interpreter, which samples its own RSS every 10 ms
(not ``ru_maxrss``: Linux carries that over ``exec`` from the parent, so a big
pytest process would show up as the child's peak): one process ``put``s 1 GiB from an iterator of 4 MiB chunks, another
streams it back with ``open()`` and hashes it. Default settings (1 MiB frames).
Each reports its baseline RSS (after imports and opening the warehouse) and its
peak; the growth must stay under 256 MiB, a quarter of the object. A pipeline
that buffered the object, or a good part of it, would blow through that.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOTAL = 1 << 30
CHUNK = 4 << 20
MAX_GROWTH = 256 << 20

CHILD = r'''
import gc, hashlib, json, os, sys, threading, time
from pathlib import Path

import psutil

from dwray.config import DwrayConfig, StorageConfig
from dwray.core.warehouse import Warehouse

phase, data_dir, total, chunk_size = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
process = psutil.Process()
peak = [0]
sampling = threading.Event()


def sample():
    while not sampling.wait(0.01):
        peak[0] = max(peak[0], process.memory_info().rss)


sampler = threading.Thread(target=sample, daemon=True)
wh = Warehouse(DwrayConfig(data_dir=data_dir, storage=StorageConfig(backend="local")))
assert wh.config.pipeline.frame_size == 1 << 20
result = {"phase": phase}

if phase == "put":
    wh.create_bucket("memory-bound")
    # One random 4 MiB block; every chunk is a fresh copy with its number stamped
    # into every 64 KiB, so no two chunks (or 1 MiB frames) are alike.
    block = os.urandom(chunk_size)

    def chunks():
        for number in range(total // chunk_size):
            chunk = bytearray(block)
            for offset in range(0, chunk_size, 1 << 16):
                chunk[offset:offset + 8] = (number * chunk_size + offset).to_bytes(8, "big")
            written.update(chunk)
            yield chunk

    written = hashlib.sha256()
    gc.collect()
    result["baseline"] = process.memory_info().rss
    sampler.start()
    started = time.monotonic()
    info = wh.put("memory-bound", "one-gib", chunks())
    result["seconds"] = time.monotonic() - started
    result["size"] = info.size
    result["sha256"] = written.hexdigest()
else:
    gc.collect()
    result["baseline"] = process.memory_info().rss
    sampler.start()
    started = time.monotonic()
    read = hashlib.sha256()
    count = 0
    with wh.open("memory-bound", "one-gib") as reader:
        result["size"] = reader.info.size
        for piece in reader:
            read.update(piece)
            count += len(piece)
    result["seconds"] = time.monotonic() - started
    result["count"] = count
    result["sha256"] = read.hexdigest()

sampling.set()
sampler.join()
result["peak"] = max(peak[0], process.memory_info().rss)
wh.close()
print(json.dumps(result))
'''


def run_phase(phase: str, data_dir: Path) -> dict[str, int | float | str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.pop("DWRAY_CONFIG", None)
    proc = subprocess.run([sys.executable, "-c", CHILD, phase, str(data_dir), str(TOTAL), str(CHUNK)],
                          capture_output=True, text=True, timeout=300, env=env, cwd=ROOT, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    growth = result["peak"] - result["baseline"]
    print(f"{phase}: baseline RSS {result['baseline'] >> 20} MiB, peak {result['peak'] >> 20} MiB, "
          f"growth {growth >> 20} MiB, {result['seconds']:.1f} s")
    return result


@pytest.mark.slow
def test_one_gib_put_and_get_stay_under_256_mib(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    try:
        put = run_phase("put", data_dir)
        assert put["size"] == TOTAL
        put_growth = put["peak"] - put["baseline"]
        assert put_growth < MAX_GROWTH, f"put grew RSS by {put_growth >> 20} MiB"
        blob_bytes = sum(f.stat().st_size for f in (data_dir / "blobs").rglob("*") if f.is_file())
        assert blob_bytes > TOTAL  # incompressible: really stored, sealed (tags and codec bytes added)

        get = run_phase("get", data_dir)
        assert get["size"] == TOTAL and get["count"] == TOTAL
        assert get["sha256"] == put["sha256"], "what was read back is not what was written"
        get_growth = get["peak"] - get["baseline"]
        assert get_growth < MAX_GROWTH, f"get grew RSS by {get_growth >> 20} MiB"
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)  # do not leave 1 GiB in pytest's kept temp dirs
