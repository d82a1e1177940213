"""Hard quotas through the gateway: S3 answers 403 QuotaExceeded, the admin API and ``dw quota`` set and show.

16 concurrent S3 clients race a small bucket quota: usage ends at or under
it, equals what the bucket holds, and every loser got 403 QuotaExceeded.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.integration.gateway.clients import unique_bucket_name
from tests.integration.gateway.conftest import GatewayUnderTest

WRITERS = 16
PUTS_EACH = 4
SIZE = 1000
QUOTA = 10 * SIZE + SIZE // 2


def dw(gateway: GatewayUnderTest, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dwray.cli", "--data-dir", str(gateway.data_dir), *args],
                          capture_output=True, text=True, timeout=120, env=dict(os.environ))


def new_tenant(gateway: GatewayUnderTest) -> tuple[str, Any]:
    tenant = f"quota-{uuid.uuid4().hex[:8]}"
    access_key_id, secret = gateway.new_key(tenant)
    return tenant, gateway.client(access_key_id, secret)


def quota_error(call: Any) -> dict[str, Any]:
    with pytest.raises(ClientError) as refused:
        call()
    return {"status": refused.value.response["ResponseMetadata"]["HTTPStatusCode"], **refused.value.response["Error"]}


def test_s3_gets_403_quota_exceeded_and_deletes_release(gateway: GatewayUnderTest) -> None:
    tenant, client = new_tenant(gateway)
    files = unique_bucket_name()  # bucket names are global: each test its own
    client.create_bucket(Bucket=files)
    put = gateway.admin("PUT", f"/quotas/{tenant}", {"max_bytes": "2KiB", "max_buckets": 1})
    assert put.status_code == 200, put.text
    assert put.json()["limits"] == {"max_bytes": 2048, "max_objects": None, "max_buckets": 1}
    client.put_object(Bucket=files, Key="a", Body=b"a" * 2000)
    error = quota_error(lambda: client.put_object(Bucket=files, Key="b", Body=b"b" * 100))
    assert error["status"] == 403 and error["Code"] == "QuotaExceeded"
    assert "at most 2048 bytes" in error["Message"] and "2100" in error["Message"]
    error = quota_error(lambda: client.create_bucket(Bucket="more"))
    assert (error["status"], error["Code"]) == (403, "QuotaExceeded") and "1 buckets" in error["Message"]
    # Multipart parts reserve as they arrive.
    upload = client.create_multipart_upload(Bucket=files, Key="mp")["UploadId"]
    error = quota_error(lambda: client.upload_part(Bucket=files, Key="mp", UploadId=upload, PartNumber=1,
                                                   Body=b"p" * 100))
    assert error["Code"] == "QuotaExceeded"
    client.abort_multipart_upload(Bucket=files, Key="mp", UploadId=upload)
    client.delete_object(Bucket=files, Key="a")
    client.put_object(Bucket=files, Key="b", Body=b"b" * 2048)
    shown = gateway.admin("GET", f"/quotas/{tenant}").json()
    assert shown["usage"] == {"bytes": 2048, "objects": 1, "buckets": 1}
    assert shown["buckets"][files]["usage"] == {"bytes": 2048, "objects": 1}


def test_admin_quota_input_errors_are_clear(gateway: GatewayUnderTest) -> None:
    tenant, client = new_tenant(gateway)
    files = unique_bucket_name()  # bucket names are global: each test its own
    client.create_bucket(Bucket=files)
    bad = gateway.admin("PUT", f"/quotas/{tenant}", {"max_bytes": "lots"})
    assert bad.status_code == 400 and "max_bytes" in bad.json()["error"]["message"]
    bad = gateway.admin("PUT", f"/quotas/{tenant}", {"max_objects": -3})
    assert bad.status_code == 400 and "max_objects" in bad.json()["error"]["message"]
    bad = gateway.admin("PUT", f"/quotas/{tenant}/buckets/{files}", {"max_buckets": 2})
    assert bad.status_code == 400 and "tenant limit" in bad.json()["error"]["message"]
    assert gateway.admin("PUT", f"/quotas/{tenant}/buckets/nothere", {"max_bytes": 5}).status_code == 404
    assert gateway.admin("GET", "/quotas/no-such-tenant-here").status_code == 404
    assert gateway.admin("GET", f"/quotas/{tenant}/buckets/{files}").json()["limits"] == {
        "max_bytes": None, "max_objects": None}


def test_dw_quota_set_and_show(gateway: GatewayUnderTest) -> None:
    tenant, client = new_tenant(gateway)
    files = unique_bucket_name()  # bucket names are global: each test its own
    client.create_bucket(Bucket=files)
    client.put_object(Bucket=files, Key="k", Body=b"k" * 10)
    done = dw(gateway, "quota", "set", tenant, "--max-bytes", "10MiB", "--max-objects", "5", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["limits"] == {"max_bytes": 10 << 20, "max_objects": 5, "max_buckets": None}
    done = dw(gateway, "quota", "set", tenant, "--bucket", files, "--max-objects", "1", "--json")
    assert done.returncode == 0, done.stderr
    error = quota_error(lambda: client.put_object(Bucket=files, Key="second", Body=b"2"))
    assert error["Code"] == "QuotaExceeded" and f"bucket '{files}'" in error["Message"]
    done = dw(gateway, "quota", "set", tenant, "--bucket", files, "--max-objects", "none")
    assert done.returncode == 0, done.stderr
    client.put_object(Bucket=files, Key="second", Body=b"2")
    shown = dw(gateway, "quota", "show", tenant, "--json")
    assert shown.returncode == 0, shown.stderr
    quota = json.loads(shown.stdout)
    assert quota["usage"] == {"bytes": 11, "objects": 2, "buckets": 1}
    assert quota["buckets"][files]["limits"] == {"max_bytes": None, "max_objects": None}
    listed = dw(gateway, "quota", "show", "--json")
    assert tenant in {entry["tenant"] for entry in json.loads(listed.stdout)}
    table = dw(gateway, "quota", "show", tenant)
    assert table.returncode == 0 and "10485760" in table.stdout
    bad = dw(gateway, "quota", "set", tenant, "--max-bytes", "huge")
    assert bad.returncode != 0 and "max_bytes" in bad.stderr
    bad = dw(gateway, "quota", "set", tenant, "--bucket", files, "--max-buckets", "3")
    assert bad.returncode != 0 and "tenant limit" in bad.stderr


def test_sixteen_s3_clients_race_a_small_quota(gateway: GatewayUnderTest) -> None:
    tenant = f"quota-{uuid.uuid4().hex[:8]}"
    access_key_id, secret = gateway.new_key(tenant)
    clients = [gateway.client(access_key_id, secret) for _ in range(WRITERS)]
    clients[0].create_bucket(Bucket="race")
    assert gateway.admin("PUT", f"/quotas/{tenant}/buckets/race", {"max_bytes": QUOTA}).status_code == 200
    outcomes: list[tuple[str, int | str]] = []
    lock = threading.Lock()
    start = threading.Barrier(WRITERS)

    def writer(number: int) -> None:
        start.wait()
        for put in range(PUTS_EACH):
            key = f"w{number:02d}-{put}"
            try:
                clients[number].put_object(Bucket="race", Key=key, Body=bytes([number]) * SIZE)
                outcome: tuple[str, int | str] = ("ok", key)
            except ClientError as error:
                status = error.response["ResponseMetadata"]["HTTPStatusCode"]
                outcome = (error.response["Error"]["Code"], status)
            with lock:
                outcomes.append(outcome)

    threads = [threading.Thread(target=writer, args=(number,)) for number in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not any(thread.is_alive() for thread in threads)
    won = sorted(str(value) for code, value in outcomes if code == "ok")
    lost = [(code, value) for code, value in outcomes if code != "ok"]
    assert len(outcomes) == WRITERS * PUTS_EACH
    assert set(lost) == {("QuotaExceeded", 403)}
    assert len(won) == QUOTA // SIZE
    usage = gateway.admin("GET", f"/quotas/{tenant}/buckets/race").json()["usage"]
    assert usage["bytes"] <= QUOTA
    listed = clients[0].list_objects_v2(Bucket="race")["Contents"]
    assert sorted(entry["Key"] for entry in listed) == won
    assert usage == {"bytes": sum(entry["Size"] for entry in listed), "objects": len(listed)}


def test_deleting_or_shredding_a_tenant_drops_its_quota(gateway: GatewayUnderTest) -> None:
    deleted, shredded = f"quota-{uuid.uuid4().hex[:8]}", f"quota-{uuid.uuid4().hex[:8]}"
    key_id, _ = gateway.new_key(deleted)
    gateway.new_key(shredded)
    for tenant in (deleted, shredded):
        assert gateway.admin("PUT", f"/quotas/{tenant}", {"max_buckets": 3}).status_code == 200
    assert {deleted, shredded} <= {entry["tenant"] for entry in gateway.admin("GET", "/quotas").json()}
    assert gateway.admin("DELETE", f"/keys/{key_id}").status_code == 204
    assert gateway.admin("DELETE", f"/tenants/{deleted}").status_code == 204
    assert gateway.admin("POST", f"/tenants/{shredded}/shred").status_code == 200
    listed = {entry["tenant"] for entry in gateway.admin("GET", "/quotas").json()}
    assert deleted not in listed and shredded not in listed
