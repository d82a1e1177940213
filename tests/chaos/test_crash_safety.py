"""kill -9 of a writing process at injected points: acknowledged writes survive, nothing partial shows.

Each run starts ``_crash_child.py`` on a fresh data dir. The child writes objects
(0..40 KiB, 4 KiB frames, overwrites and a few deletes), prints ``ACK`` after each
``put`` returns, and SIGKILLs itself on the NTH call of one injected point (a
wrapped ``os.fsync``/``os.link``/``os.unlink``/``os.write`` under the blob root,
or ``Catalog.commit_object``). The parent then opens the warehouse in-process
and checks DESIGN.md section 3:

- every acknowledged key reads back byte-identical to its last acknowledged
  content; the key whose write was in flight holds the old content if the kill
  came before the catalog commit, the new one if after;
- every listed object reads whole, with the size and ETag of that content;
- ``get`` never raises ``IntegrityError``;
- after ``sweep(grace_seconds=0)`` no temp file and no unreferenced blob
  remains, everything still reads, and the warehouse still takes writes.
"""
from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from dwray.core.warehouse import Warehouse
from dwray.errors import IntegrityError, ObjectNotFound
from tests.chaos import _crash_child as child
from tests.conftest import make_config

CHILD = Path(child.__file__)
ROOT = Path(__file__).resolve().parents[2]
SEEDS_PER_POINT = 4
ASYNC_RUNS = 4

# Kills before the catalog commit must leave the old object; after it, the new one.
COMMITTED_POINTS = {"commit_after"}
# Where the local backend is when each point fires (the product function on the stack).
EXPECTED_CALLER = {
    "fsync_file_before": {"_put_in"},
    "fsync_file_after": {"_put_in"},
    "link_before": {"_put_in"},
    "link_after": {"_put_in"},
    "unlink_temp_after": {"_put_in"},
    "fsync_dir_before": {"_put_in", "_make_folder_at"},
    "fsync_dir_after": {"_put_in", "_make_folder_at"},
    "commit_before": {"_write_object"},
    "commit_after": {"_write_object"},
    "write_mid": {"_write_all"},
}
# Points at which the put's temp file still exists when the process dies.
TEMP_LEFT_POINTS = {"fsync_file_before", "fsync_file_after", "link_before", "link_after", "write_mid"}
# Points that every put passes exactly once (folder fsyncs and writes vary with the put).
ONCE_PER_PUT = {"fsync_file_before", "fsync_file_after", "link_before", "link_after", "unlink_temp_after",
                "commit_before", "commit_after"}


def _nth(point: str, seed: int) -> int:
    # The first run of each point dies on the very first put (new folders, new KEK).
    return 1 if seed == 0 else random.Random(f"nth/{point}/{seed}").randint(2, child.MAX_NTH)


CASES = [(point, seed, _nth(point, seed)) for point in child.POINTS for seed in range(SEEDS_PER_POINT)]


@dataclass
class Run:
    """What the parent learned from one child's stdout."""

    returncode: int
    lines: list[str]
    stderr: str
    kill: tuple[str, int, list[str]] | None = None
    #: last acknowledged content of each key (None: absent)
    state: dict[str, bytes | None] = field(default_factory=dict)
    #: the op in flight at the kill: (key, content it would leave, None for a delete)
    inflight: tuple[str, bytes | None] | None = None


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.pop("DWRAY_CONFIG", None)
    return env


def _replay(lines: list[str], seed: int, base: dict[str, bytes | None], run: Run) -> None:
    """Fold the child's protocol lines into ``run.state`` / ``run.inflight``."""
    state = dict(base)
    inflight: tuple[str, bytes | None] | None = None
    for line in lines:
        words = line.split()
        if not words:
            continue
        if words[0] == "BEGIN":
            assert inflight is None, f"two writes in flight: {lines}"
            if words[1] == "put":
                data = child.content(seed, words[2], int(words[3]))
                assert child.sha(data) == words[4], "parent and child disagree on the content"
                inflight = (words[2], data)
            else:
                inflight = (words[2], None)
        elif words[0] == "ACK":
            assert inflight is not None and inflight[0] == words[2], f"ACK without BEGIN: {line}"
            state[inflight[0]] = inflight[1]
            inflight = None
        elif words[0] == "KILL":
            run.kill = (words[1], int(words[2]), words[3].split(","))
    run.state, run.inflight = state, inflight


def run_child(data_dir: Path, seed: int, point: str, nth: int,
              base: dict[str, bytes | None] | None = None) -> Run:
    proc = subprocess.run([sys.executable, str(CHILD), str(data_dir), str(seed), point, str(nth)],
                          capture_output=True, text=True, timeout=60, env=_env(), cwd=ROOT, check=False)
    run = Run(proc.returncode, proc.stdout.splitlines(), proc.stderr)
    _replay(run.lines, seed, base or {}, run)
    return run


def run_child_killed_by_parent(data_dir: Path, seed: int, after_acks: int, delay: float,
                               base: dict[str, bytes | None] | None = None) -> Run:
    """No injected fault: the parent SIGKILLs the child ``delay`` s after its ``after_acks``-th ACK."""
    proc = subprocess.Popen([sys.executable, str(CHILD), str(data_dir), str(seed), "hang", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(), cwd=ROOT)
    assert proc.stdout is not None
    lines: list[str] = []
    acks = 0
    try:
        deadline = time.monotonic() + 60
        while acks < after_acks and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip("\n"))
            acks += line.startswith("ACK ")
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        # Not communicate(): it reads the raw pipes and would miss what readline() buffered.
        rest, stderr = proc.stdout.read(), proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines += rest.splitlines()
    run = Run(proc.returncode, lines, stderr)
    assert acks == after_acks, f"child stopped early: {lines} {stderr}"
    _replay(lines, seed, base or {}, run)
    return run


def _read(wh: Warehouse, key: str) -> bytes | None:
    try:
        return wh.get(child.BUCKET, key)
    except ObjectNotFound:
        return None
    except IntegrityError as exc:  # corruption is detected, but an acknowledged object must not be corrupt
        pytest.fail(f"get({key!r}) raised IntegrityError after a crash: {exc}")


def _describe(data: bytes | None) -> str:
    return "absent" if data is None else f"{len(data)} bytes sha256 {child.sha(data)[:12]}"


def check_recovered(wh: Warehouse, run: Run, exact: bool | None) -> dict[str, bytes | None]:
    """Check every key against what was acknowledged; return what each key holds.

    ``exact``: True when the in-flight write must be visible, False when it must
    not be, None when either is allowed (asynchronous kill).
    """
    actual: dict[str, bytes | None] = {}
    for key in child.KEYS:
        data = _read(wh, key)
        actual[key] = data
        old = run.state.get(key)
        allowed = [old]
        if run.inflight is not None and run.inflight[0] == key:
            new = run.inflight[1]
            allowed = {True: [new], False: [old], None: [old, new]}[exact]
        assert data in allowed, (
            f"{key}: holds {_describe(data)}, expected one of {[_describe(a) for a in allowed]}; "
            f"child output: {run.lines[-4:]}")
    listed = {}
    for info in wh.iter_objects(child.BUCKET):
        data = _read(wh, info.key)
        assert data is not None, f"{info.key} is listed but cannot be read"
        assert info.size == len(data), f"{info.key}: listed size {info.size}, read {len(data)} bytes"
        assert info.etag == hashlib.md5(data).hexdigest(), f"{info.key}: ETag does not match its bytes"
        listed[info.key] = data
    assert listed == {k: v for k, v in actual.items() if v is not None}, "listing disagrees with get"
    return actual


def blob_files(data_dir: Path) -> tuple[set[str], list[str]]:
    """(blob ids, temp file paths) present under the blob root."""
    root = data_dir / "blobs"
    blobs: set[str] = set()
    temps: list[str] = []
    for folder, _, names in os.walk(root):
        for name in names:
            rel = os.path.relpath(os.path.join(folder, name), root)
            if name.startswith(".tmp-"):
                temps.append(rel)
            else:
                blobs.add(rel)
    return blobs, temps


def check_swept(wh: Warehouse, data_dir: Path, actual: dict[str, bytes | None]) -> None:
    referenced = wh.catalog.referenced_blobs("local")
    blobs, temps = blob_files(data_dir)
    assert referenced <= blobs, f"catalog references missing blobs: {referenced - blobs}"
    orphans = blobs - referenced
    report = wh.sweep(grace_seconds=0)
    assert (report.deleted, report.temp_files) == (len(orphans), len(temps))
    blobs_after, temps_after = blob_files(data_dir)
    assert temps_after == [], f"temp files survived the sweep: {temps_after}"
    assert blobs_after == referenced, f"unreferenced blobs survived the sweep: {blobs_after - referenced}"
    for key, data in actual.items():
        assert _read(wh, key) == data, f"{key} changed across the sweep"
    # Still a working warehouse: a fresh write lands and reads back.
    probe = os.urandom(3 * child.FRAME_SIZE + 5)
    wh.put(child.BUCKET, "after-crash", probe)
    assert wh.get(child.BUCKET, "after-crash") == probe


def assert_killed_at(run: Run, point: str, nth: int) -> None:
    assert run.returncode == -signal.SIGKILL, (
        f"child was not SIGKILLed (returncode {run.returncode}); stdout {run.lines[-3:]} stderr {run.stderr[-2000:]}")
    assert run.kill is not None and run.lines[-1].startswith("KILL "), f"no KILL line: {run.lines[-3:]}"
    assert run.kill[:2] == (point, nth)
    assert EXPECTED_CALLER[point] & set(run.kill[2][:2]), f"{point} fired from {run.kill[2]}"
    # Every injected point is inside a put.
    assert run.inflight is not None and run.inflight[1] is not None, "no put in flight at the kill"


@pytest.mark.slow
@pytest.mark.parametrize(("point", "seed", "nth"), CASES, ids=[f"{p}-s{s}-n{n}" for p, s, n in CASES])
def test_kill_at_injected_point(tmp_path: Path, point: str, seed: int, nth: int) -> None:
    data_dir = tmp_path / "data"
    run = run_child(data_dir, seed, point, nth)
    assert_killed_at(run, point, nth)
    acked_puts = sum(line.startswith("ACK put") for line in run.lines)
    if point in ONCE_PER_PUT:
        assert acked_puts == nth - 1, "the NTH put is the one that died"
    else:
        assert acked_puts <= nth - 1

    temps_at_kill = blob_files(data_dir)[1]
    assert len(temps_at_kill) == (1 if point in TEMP_LEFT_POINTS else 0), temps_at_kill
    with Warehouse(make_config(data_dir)) as wh:
        actual = check_recovered(wh, run, exact=point in COMMITTED_POINTS)
        check_swept(wh, data_dir, actual)
    # And once more from a fresh process's point of view: reopen, everything is as checked.
    with Warehouse(make_config(data_dir)) as wh:
        for key, data in actual.items():
            assert _read(wh, key) == data


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(100, 100 + ASYNC_RUNS))
def test_kill_at_random_moment(tmp_path: Path, seed: int) -> None:
    """The parent kills the child a few ms after an ACK: wherever it is, SQLite included."""
    rng = random.Random(seed)
    data_dir = tmp_path / "data"
    run = run_child_killed_by_parent(data_dir, seed, after_acks=rng.randint(1, 8), delay=rng.uniform(0, 0.004))
    assert run.returncode == -signal.SIGKILL, f"returncode {run.returncode}; stderr {run.stderr[-2000:]}"
    with Warehouse(make_config(data_dir)) as wh:
        actual = check_recovered(wh, run, exact=None)
        check_swept(wh, data_dir, actual)


@pytest.mark.slow
def test_repeated_crashes_on_one_data_dir(tmp_path: Path) -> None:
    """Crash after crash on the same data: leftovers pile up, nothing acknowledged is lost, one sweep clears all."""
    data_dir = tmp_path / "data"
    state: dict[str, bytes | None] = {}
    for seed, point in enumerate(["write_mid", "link_after", "commit_before", "fsync_file_after", "commit_after"],
                                 start=500):
        nth = random.Random(seed).randint(2, child.MAX_NTH)
        run = run_child(data_dir, seed, point, nth, base=state)
        assert_killed_at(run, point, nth)
        with Warehouse(make_config(data_dir)) as wh:
            state = check_recovered(wh, run, exact=point in COMMITTED_POINTS)
            blobs, temps = blob_files(data_dir)
            orphans = blobs - wh.catalog.referenced_blobs("local")
    # Temp files of write_mid, link_after and fsync_file_after; blobs of link_after and commit_before.
    assert len(temps) == 3 and len(orphans) >= 2, (temps, orphans)
    with Warehouse(make_config(data_dir)) as wh:
        check_swept(wh, data_dir, state)


def test_child_runs_to_completion_without_a_fault(tmp_path: Path) -> None:
    """The control: with no injected point the child acknowledges the whole plan and exits 0,
    so the -9 of every other run comes from the injected kill."""
    data_dir = tmp_path / "data"
    run = run_child(data_dir, 7, "none", 0)
    assert run.returncode == 0, run.stderr
    assert run.lines[-1] == "DONE" and run.kill is None and run.inflight is None
    ops = child.plan(7)
    assert sum(line.startswith("ACK ") for line in run.lines) == len(ops)
    expected: dict[str, bytes | None] = {}
    for op, key, version in ops:
        expected[key] = child.content(7, key, version) if op == "put" else None
    assert run.state == expected
    with Warehouse(make_config(data_dir)) as wh:
        assert check_recovered(wh, run, exact=None) == {k: expected.get(k) for k in child.KEYS}


def test_every_point_fires_within_the_plan(tmp_path: Path) -> None:
    """MAX_NTH is reachable for every point: the last NTH kills the child, inside the plan."""
    for point in ("fsync_dir_after", "write_mid", "commit_before"):
        run = run_child(tmp_path / point, 11, point, child.MAX_NTH)
        assert_killed_at(run, point, child.MAX_NTH)
        assert "DONE" not in run.lines


def test_checker_catches_a_lost_acknowledged_write(tmp_path: Path) -> None:
    """The recovery check is not vacuous: losing an acknowledged object makes it fail."""
    data_dir = tmp_path / "data"
    run = run_child(data_dir, 7, "none", 0)
    live = [k for k, v in run.state.items() if v is not None]
    with Warehouse(make_config(data_dir)) as wh:
        wh.delete(child.BUCKET, live[0])
        with pytest.raises(AssertionError, match="holds absent"):
            check_recovered(wh, run, exact=None)
