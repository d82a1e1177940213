"""Kill -9 in the middle of audit appends: the log verifies and holds every acknowledged record.

A child process appends from several threads (group commit) and prints each
acknowledgement; the parent SIGKILLs it after a number of them, twice on the
same data dir, then verifies the log read-only and checks every
acknowledged record is there. The ``warehouse`` mode does the same with real
puts: no put the child saw acknowledged lacks its audit record.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from dwray.config import DwrayConfig
from dwray.core.audit import AuditLocations
from dwray.core.audit.checkpoints import CheckpointSigner
from dwray.core.audit.reader import AuditReader
from dwray.core.audit.verify import verify_log

CHILD = Path(__file__).with_name("_audit_crash_child.py")


def _run_and_kill(mode: str, data_dir: Path, config_home: Path, acks: int, tag: int) -> list[tuple[str, str]]:
    """Start the child, SIGKILL it after ``acks`` acknowledgements; every ACK line it printed."""
    proc = subprocess.Popen([sys.executable, str(CHILD), mode, str(data_dir), str(config_home), "6", str(tag)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    seen: list[tuple[str, str]] = []
    try:
        for line in proc.stdout:
            seen.append(tuple(line.split()[1:3]))  # type: ignore[arg-type]
            if len(seen) >= acks:
                proc.send_signal(signal.SIGKILL)
                break
        rest, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGKILL, f"child ended by itself: {proc.returncode}: {stderr[-2000:]}"
    seen += [tuple(line.split()[1:3]) for line in rest.splitlines() if line.startswith("ACK ")]  # type: ignore[misc]
    return seen


@pytest.mark.parametrize("mode", ["log", "warehouse"])
def test_kill9_during_appends_loses_no_acknowledged_record(tmp_path: Path, mode: str) -> None:
    data_dir, config_home = tmp_path / "data", tmp_path / "config"
    acked: list[tuple[str, str]] = []
    for tag, acks in enumerate((150, 120)):  # two crashes on the same log: reopening after a crash appends on
        acked += _run_and_kill(mode, data_dir, config_home, acks, tag)
    locations = _locations(data_dir, config_home)
    public_key = CheckpointSigner(locations.signing_key, create=False).public_key
    with AuditReader(locations) as reader:
        report = verify_log(reader, public_key, copy_dir=locations.copy_dir, monitor_state=None)
        records = reader.query()
    assert report.ok, report.findings
    assert report.size == len(records) >= len(acked)
    by_resource = {record["resource"]: record for record in records}
    for seq, resource in acked:
        assert resource in by_resource, f"acknowledged {resource} has no audit record"
        if seq != "-":
            assert by_resource[resource]["seq"] == int(seq)


def _locations(data_dir: Path, config_home: Path) -> AuditLocations:
    saved = os.environ.get("XDG_CONFIG_HOME")
    os.environ["XDG_CONFIG_HOME"] = str(config_home)
    try:
        return AuditLocations.of(DwrayConfig(data_dir=data_dir))
    finally:
        if saved is None:
            del os.environ["XDG_CONFIG_HOME"]
        else:
            os.environ["XDG_CONFIG_HOME"] = saved
