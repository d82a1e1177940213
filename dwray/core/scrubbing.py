"""Scrubbing: read every blob back at a bounded rate, to find what rotted before a reader does.

A pool (mirror, tiered) verifies each replica against the block CRCs of its
index and repairs a bad one from a good one (its own ``scrub``). A plain
backend keeps no checksums: its step reads every blob end to end, which finds
what the medium can no longer return (a read error, a blob listed but gone);
altered bytes there are still caught when read, by the sealed frames'
authentication (``IntegrityError``), and cannot be repaired without a replica.

``run_pass`` walks every target step by step, each step reading about one
second's worth of bytes at ``rate``, and sleeps between steps so that the
pass never reads faster than ``rate`` on average. The last pass's report is
kept as ``DATA_DIR/scrub/last.json`` (0600: blob ids only, no object data) for
``dw scrub --report`` and ``dw status``.
"""
from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from dwray.core.private_files import fsync_dir, make_private_dir
from dwray.errors import BlobNotFound, DwrayError, StorageError

__all__ = ["COUNTS", "load_report", "report_path", "run_pass", "save_report", "scrub_step"]

READ_CHUNK = 8 << 20
MAX_LISTED = 100  # blob ids kept per list in a report
#: the counters every scrub step returns and a pass adds up
COUNTS = ("blobs", "bytes", "corrupt", "missing", "repaired", "orphans_removed")


def _empty_step() -> dict[str, Any]:
    return {"cursor": "", "done": True, **dict.fromkeys(COUNTS, 0), "unrepairable": []}


def scrub_step(backend: Any, cursor: str = "", max_bytes: int = 64 << 20,
               grace_seconds: float = 3600.0) -> dict[str, Any]:
    """Verify the blobs after ``cursor`` (in id order) until about ``max_bytes`` were read.

    Returns ``cursor`` (where the next step starts; ``""`` when ``done``), the
    counts of ``COUNTS`` and ``unrepairable`` (ids of blobs no good copy is
    left of, or that cannot be read). A backend or proxy with its own ``scrub``
    does the step itself.
    """
    own = getattr(backend, "scrub", None)
    if own is not None:
        return own(cursor, max_bytes, grace_seconds)
    step = _empty_step()
    last = cursor
    for blob_id in backend.list_blobs(""):
        if blob_id <= cursor:
            continue
        if step["bytes"] >= max_bytes:
            step.update(cursor=last, done=False)
            return step
        try:
            size = backend.stat_blob(blob_id).size
            for offset in range(0, size, READ_CHUNK):
                step["bytes"] += len(backend.get_blob(blob_id, offset, min(offset + READ_CHUNK, size)))
        except BlobNotFound:
            continue  # deleted since it was listed
        except StorageError:
            step["missing"] += 1
            step["unrepairable"].append(blob_id)
        step["blobs"] += 1
        last = blob_id
    return step


def run_pass(targets: Mapping[str, Any], *, rate: int, grace_seconds: float = 3600.0,
             stop: threading.Event | None = None, on_step: Callable[[str, dict[str, Any]], None] | None = None,
             clock: Callable[[], float] = time.monotonic) -> dict[str, Any]:
    """One scrub pass over every target, reading at most ``rate`` bytes per second on average.

    A target whose step fails (its backend down, its actor restarting) is
    reported with the error and the pass goes on with the next; ``stop`` ends
    the pass early (reported as not ``complete``).
    """
    stop = stop or threading.Event()
    step_bytes = max(1 << 20, min(rate, 64 << 20))
    started, began = time.time(), clock()
    report: dict[str, Any] = {"started": started, "rate": rate, "targets": {}, "complete": True}
    for name, backend in targets.items():
        totals: dict[str, Any] = {**dict.fromkeys(COUNTS, 0), "unrepairable": [], "complete": False, "error": None}
        report["targets"][name] = totals
        cursor = ""
        while not stop.is_set():
            step_began = clock()
            try:
                step = scrub_step(backend, cursor, step_bytes, grace_seconds)
            except DwrayError as exc:
                totals["error"] = f"{type(exc).__name__}: {exc}"
                break
            for count in COUNTS:
                totals[count] += int(step.get(count, 0))
            room = MAX_LISTED - len(totals["unrepairable"])
            totals["unrepairable"] += list(step.get("unrepairable", []))[:max(room, 0)]
            if on_step is not None:
                on_step(name, step)
            if step.get("done", True):
                totals["complete"] = True
                break
            cursor = step["cursor"]
            # Pace: this step's bytes at the rate take this long; sleep what is left of it.
            stop.wait(max(0.0, step["bytes"] / rate - (clock() - step_began)))
        report["complete"] = report["complete"] and totals["complete"]
    report["finished"] = time.time()
    report["seconds"] = round(clock() - began, 3)
    report["totals"] = {count: sum(t[count] for t in report["targets"].values()) for count in COUNTS}
    report["totals"]["unrepairable"] = sum(len(t["unrepairable"]) for t in report["targets"].values())
    return report


def report_path(data_dir: Path) -> Path:
    return Path(data_dir) / "scrub" / "last.json"


def save_report(data_dir: Path, report: Mapping[str, Any]) -> Path:
    """Write ``report`` as the last pass's, atomically (temp file, fsync, rename), 0600 in a 0700 folder."""
    path = report_path(data_dir)
    make_private_dir(path.parent)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=1, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)
    fsync_dir(path.parent)
    return path


def load_report(data_dir: Path) -> dict[str, Any] | None:
    """The last pass's report, or None if no pass has finished here."""
    try:
        return json.loads(report_path(data_dir).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
