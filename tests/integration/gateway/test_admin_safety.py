"""Safety of two destructive admin actions: deleting a tenant and 'dw down'.

A tenant is deleted only once it holds nothing (its storage and keys are found
by name, so a leftover would pass to the next tenant of that name). 'dw down'
signals only the process that 'dw up' recorded, never an unrelated process
that inherited its pid.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.integration.gateway.conftest import GatewayUnderTest

REPO = Path(__file__).resolve().parents[3]


def _tenant_name() -> str:
    return f"gone-{uuid.uuid4().hex[:12]}"


def test_a_tenant_that_owns_a_bucket_is_not_deleted(gateway: GatewayUnderTest) -> None:
    tenant = _tenant_name()
    key_id, secret = gateway.new_key(tenant)
    s3 = gateway.client(key_id, secret)
    s3.create_bucket(Bucket="keepme")
    s3.put_object(Bucket="keepme", Key="a.txt", Body=b"still here")
    assert gateway.admin("DELETE", f"/keys/{key_id}").status_code == 204

    refused = gateway.admin("DELETE", f"/tenants/{tenant}")

    assert refused.status_code == 409, refused.text
    error = refused.json()["error"]
    assert error["code"] == "TenantNotEmpty"
    assert tenant in error["message"] and "keepme" in error["message"]
    assert gateway.admin("GET", f"/tenants/{tenant}").status_code == 200
    # Its data is untouched: readable again with a fresh key.
    key_id, secret = gateway.new_key(tenant)
    s3 = gateway.client(key_id, secret)
    assert s3.get_object(Bucket="keepme", Key="a.txt")["Body"].read() == b"still here"


def test_an_emptied_tenant_is_deleted_and_its_name_starts_afresh(gateway: GatewayUnderTest) -> None:
    tenant = _tenant_name()
    key_id, secret = gateway.new_key(tenant)
    s3 = gateway.client(key_id, secret)
    s3.create_bucket(Bucket="old-data")
    s3.put_object(Bucket="old-data", Key="secret.txt", Body=b"old tenant's data")
    s3.delete_object(Bucket="old-data", Key="secret.txt")
    s3.delete_bucket(Bucket="old-data")

    with_key = gateway.admin("DELETE", f"/tenants/{tenant}")
    assert with_key.status_code == 409, with_key.text
    assert with_key.json()["error"]["code"] == "TenantNotEmpty"
    assert "active access key" in with_key.json()["error"]["message"]

    assert gateway.admin("DELETE", f"/keys/{key_id}").status_code == 204
    deleted = gateway.admin("DELETE", f"/tenants/{tenant}")
    assert deleted.status_code == 204, deleted.text
    assert gateway.admin("GET", f"/tenants/{tenant}").status_code == 404
    assert gateway.admin("DELETE", f"/tenants/{tenant}").status_code == 404

    key_id, secret = gateway.new_key(tenant)
    assert gateway.client(key_id, secret).list_buckets()["Buckets"] == []


def test_the_default_tenant_is_never_deleted(gateway: GatewayUnderTest) -> None:
    default = gateway.config.default_tenant

    refused = gateway.admin("DELETE", f"/tenants/{default}")

    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["code"] == "TenantNotEmpty"
    assert default in refused.json()["error"]["message"]
    assert gateway.admin("GET", f"/tenants/{default}").status_code == 200


# dw down ---------------------------------------------------------------------


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A live process unrelated to any gateway."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield process
    if process.poll() is None:
        os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


def _record(data_dir: Path, **state: Any) -> Path:
    path = data_dir / "gateway" / "gateway.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"endpoint": "http://127.0.0.1:9", "namespace": "x", "started": 0.0, **state}))
    return path


def _dw_down(data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dwray.cli", "--data-dir", str(data_dir), "down", "--timeout", "20"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)


def test_down_leaves_a_process_that_reused_the_pid_alone(tmp_path: Path,
                                                         sleeper: subprocess.Popen[bytes]) -> None:
    started = psutil.Process(sleeper.pid).create_time()
    state = _record(tmp_path, pid=sleeper.pid, process_started=started - 5.0)

    result = _dw_down(tmp_path)

    assert result.returncode == 1, result.stdout + result.stderr
    assert f"pid {sleeper.pid}, has exited" in result.stderr + result.stdout
    assert sleeper.poll() is None, "dw down signalled an unrelated process"
    assert not state.exists()


def test_down_with_a_record_missing_the_start_time_signals_nothing(tmp_path: Path,
                                                                   sleeper: subprocess.Popen[bytes]) -> None:
    state = _record(tmp_path, pid=sleeper.pid)

    result = _dw_down(tmp_path)

    assert result.returncode == 1, result.stdout + result.stderr
    assert sleeper.poll() is None
    assert not state.exists()


def test_down_with_a_dead_pid_removes_the_stale_record(tmp_path: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(timeout=30)
    state = _record(tmp_path, pid=gone.pid, process_started=1.0)

    result = _dw_down(tmp_path)

    assert result.returncode == 1, result.stdout + result.stderr
    assert "no gateway runs" in result.stderr + result.stdout
    assert not state.exists()


def test_down_stops_the_recorded_process(tmp_path: Path, sleeper: subprocess.Popen[bytes]) -> None:
    _record(tmp_path, pid=sleeper.pid, process_started=psutil.Process(sleeper.pid).create_time())

    result = _dw_down(tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert sleeper.wait(timeout=10) == -signal.SIGTERM
