"""The audit log wired into the warehouse: in one process and on Ray, read and verified by ``dw audit``."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from dwray.cli import cli
from dwray.config import DwrayConfig
from dwray.core.audit import AuditLocations
from dwray.core.audit.reader import AuditReader
from dwray.core.models import TenantContext
from dwray.core.warehouse import Warehouse
from dwray.errors import BucketNotFound, ObjectNotFound
from tests.conftest import make_config


def _dw(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dwray.cli", "--data-dir", str(data_dir), "audit", *args],
                          capture_output=True, text=True, timeout=120)


def _records(config: DwrayConfig, **filters: Any) -> list[dict[str, Any]]:
    with AuditReader(AuditLocations.of(config)) as reader:
        return reader.query(**filters)


def test_driver_operations_land_in_the_log_and_dw_audit_verifies(tmp_path: Path) -> None:
    config = make_config(tmp_path / "data")
    with Warehouse(config) as warehouse:
        warehouse.create_bucket("audited")
        warehouse.put("audited", "a.txt", b"secret payload")
        assert warehouse.get("audited", "a.txt") == b"secret payload"
        warehouse.delete("audited", "a.txt")
        try:
            warehouse.get("audited", "a.txt")
        except ObjectNotFound:
            pass
        ctx = TenantContext(config.default_tenant, principal="alice")
        warehouse.put("audited", "b.txt", b"x", tenant=ctx)
        # the write's record is durable before put returned: readable now, from another connection
        assert _records(config, action="PutObject")[-1]["resource"] == "audited/b.txt"
    records = _records(config, tenant=config.default_tenant)
    assert [(r["action"], r["resource"], r["outcome"], r["error"]) for r in records] == [
        ("s3:CreateBucket", "audited", "allowed", None),
        ("s3:PutObject", "audited/a.txt", "allowed", None),
        ("s3:GetObject", "audited/a.txt", "allowed", None),
        ("s3:DeleteObject", "audited/a.txt", "allowed", None),
        ("s3:GetObject", "audited/a.txt", "error", "ObjectNotFound"),
        ("s3:PutObject", "audited/b.txt", "allowed", None)]
    assert records[-1]["principal"] == "alice"
    assert all(time.time() - 600 < r["time"] <= time.time() for r in records)
    raw = (tmp_path / "data" / "audit" / "log.sqlite").read_bytes()
    assert b"secret payload" not in raw

    verify = _dw(tmp_path / "data", "verify", "--json")
    assert verify.returncode == 0, verify.stderr
    report = json.loads(verify.stdout)
    assert report["ok"] and report["size"] == 6 and report["first_bad_seq"] is None
    proof = _dw(tmp_path / "data", "proof", "1", "--json")
    assert proof.returncode == 0 and json.loads(proof.stdout)["verified"] is True
    runner = CliRunner()
    tail = runner.invoke(cli, ["--data-dir", str(tmp_path / "data"), "audit", "tail", "-n", "2"])
    assert tail.exit_code == 0 and "audited/b.txt" in tail.output and "audited/a.txt" in tail.output
    query = runner.invoke(cli, ["--data-dir", str(tmp_path / "data"), "audit", "query", "--op", "s3:GetObject",
                                "--since", "1h"])
    assert query.exit_code == 0 and "ObjectNotFound" in query.output and "s3:PutObject" not in query.output
    whole = runner.invoke(cli, ["--data-dir", str(tmp_path / "data"), "audit", "tail", "-n", "6"])
    first_row = next(line for line in whole.output.splitlines() if "s3:" in line)
    assert first_row.split()[0] == "0", whole.output  # entry 0 shows its number, not a blank

    # An entry changed behind the log's back: verify fails naming it, exit status 2.
    import sqlite3

    with sqlite3.connect(tmp_path / "data" / "audit" / "log.sqlite") as db:
        db.execute("UPDATE entries SET record = replace(record, 'a.txt', 'z.txt') WHERE seq = 3")
    failed = _dw(tmp_path / "data", "verify")
    assert failed.returncode == 2
    assert "first bad entry: 3" in failed.stdout and "entry 3 does not match its leaf hash" in failed.stdout


def test_ray_warehouse_appends_through_the_audit_plugin(ray_warehouse: Any) -> None:
    warehouse = ray_warehouse.for_test("audit-ray", "caller")
    try:
        warehouse.create_bucket("audit-ray-bkt")
        warehouse.put("audit-ray-bkt", "k", b"v")
        warehouse.get("audit-ray-bkt", "k")
        records = _records(ray_warehouse.config, tenant="audit-ray")  # durable: the put has returned
        assert [r["action"] for r in records][:2] == ["s3:CreateBucket", "s3:PutObject"]
    finally:
        warehouse.close()  # flushes the read's record
    assert [r["action"] for r in _records(ray_warehouse.config, tenant="audit-ray")] == [
        "s3:CreateBucket", "s3:PutObject", "s3:GetObject"]
    verify = _dw(ray_warehouse.config.data_dir, "verify", "--json", "--monitor-state",
                 str(ray_warehouse.config.data_dir.parent / "monitor.json"))
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_a_writes_record_is_written_ahead_and_a_failed_write_adds_its_error(tmp_path: Path) -> None:
    config = make_config(tmp_path / "data")
    with Warehouse(config) as warehouse:
        warehouse.create_bucket("ahead")
        warehouse.put("ahead", "src", b"source")
        with pytest.raises(BucketNotFound):
            warehouse.put("no-such-bucket", "k", b"lost")
        warehouse.copy("ahead", "src", "ahead", "dst")
        with pytest.raises(ObjectNotFound):
            warehouse.copy("ahead", "missing", "ahead", "dst2")
    records = _records(config, tenant=config.default_tenant)
    assert [(r["action"], r["resource"], r["outcome"], r["error"]) for r in records] == [
        ("s3:CreateBucket", "ahead", "allowed", None),
        ("s3:PutObject", "ahead/src", "allowed", None),
        # Allowed, so recorded as it started; then it failed, and that is recorded too.
        ("s3:PutObject", "no-such-bucket/k", "allowed", None),
        ("s3:PutObject", "no-such-bucket/k", "error", "BucketNotFound"),
        # A copy's write is recorded ahead, its read after it ran.
        ("s3:PutObject", "ahead/dst", "allowed", None),
        ("s3:GetObject", "ahead/src", "allowed", None),
        ("s3:PutObject", "ahead/dst2", "allowed", None),
        ("s3:GetObject", "ahead/missing", "error", "ObjectNotFound"),
        ("s3:PutObject", "ahead/dst2", "error", "ObjectNotFound")]
