"""``dw events`` on a data dir no warehouse serves: the bus's file, read and replayed in the command's process."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from dwray.core.events import BusStore, Envelope


def dw(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dwray.cli", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "DWRAY_DATA_DIR": str(data_dir)}, check=False)


def dw_json(data_dir: Path, *args: str) -> Any:
    result = dw(data_dir, *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_dead_letters_listed_and_replayed_offline(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    store = BusStore(data_dir / "events" / "bus.db")
    store.enqueue([(None, [Envelope("webhook:ops", "key.rotated", "t1", {"n": n})]) for n in range(3)],
                  queue_max=1, on_full="dead-letter")  # the 2nd and 3rd find the queue full
    store.close()
    letters = dw_json(data_dir, "events", "dead-letters")
    assert [(x["subscription"], x["body"]["n"], x["last_error"]) for x in letters] == [
        ("webhook:ops", 1, "queue full (1 messages)"), ("webhook:ops", 2, "queue full (1 messages)")]
    assert dw_json(data_dir, "events", "status")["queues"] == {"webhook:ops": {"queued": 1, "dead": 2}}
    assert dw_json(data_dir, "events", "replay", "--id", str(letters[0]["id"])) == {"replayed": 1}
    assert dw_json(data_dir, "events", "replay", "--subscription", "webhook:other") == {"replayed": 0}
    assert dw_json(data_dir, "events", "replay", "--all") == {"replayed": 1}
    assert dw_json(data_dir, "events", "dead-letters") == []
    refused = dw(data_dir, "events", "replay")
    assert refused.returncode == 1 and "say what to replay" in refused.stderr
    assert "--all replays every dead letter" in dw(data_dir, "events", "replay", "--all", "--id", "3").stderr


def test_a_bus_that_never_ran_is_said_so(tmp_path: Path) -> None:
    result = dw(tmp_path / "data", "events", "dead-letters")
    assert result.returncode == 1 and "has never run" in result.stderr
