"""The gateway's audit records: S3 requests with who and from where, refusals before the warehouse, admin actions."""
from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
import requests
from botocore.exceptions import ClientError

from dwray.core.audit import AuditLocations
from dwray.core.audit.reader import AuditReader


def _find(gateway: Any, predicate: Any, wait: float = 10.0) -> dict[str, Any]:
    """The first record matching ``predicate``; refusals are batched, so give them a moment."""
    deadline = time.monotonic() + wait
    while True:
        with AuditReader(AuditLocations.of(gateway.config)) as reader:
            found = [record for record in reader.query() if predicate(record)]
        if found or time.monotonic() > deadline:
            assert found, "no such audit record"
            return found[0]
        time.sleep(0.2)


def test_s3_requests_and_refusals_are_audited(gateway: Any, s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="audited.txt", Body=b"data")
    put = _find(gateway, lambda r: r["action"] == "s3:PutObject" and r["resource"] == f"{bucket}/audited.txt", 0)
    assert put["outcome"] == "allowed" and put["access_key_id"] == gateway.access_key_id
    assert put["source_address"] == "127.0.0.1" and put["request_id"]

    forged = gateway.client(gateway.access_key_id, "not-the-secret")
    with pytest.raises(ClientError):
        forged.get_object(Bucket=bucket, Key="audited.txt")
    refused = _find(gateway, lambda r: r["error"] == "SignatureDoesNotMatch"
                    and r["resource"] == f"{bucket}/audited.txt")
    assert refused["outcome"] == "denied" and refused["access_key_id"] == gateway.access_key_id


def test_admin_actions_and_refusals_are_audited(gateway: Any) -> None:
    tenant = f"aud-{uuid.uuid4().hex[:8]}"
    assert gateway.admin("POST", "/tenants", {"name": tenant}).status_code == 201
    created = _find(gateway, lambda r: r["action"] == "admin:POST /admin/tenants" and r["outcome"] == "allowed", 0)
    assert created["principal"]  # the admin token's name, never the token
    assert gateway.admin_token not in str(created)
    denied = requests.delete(f"{gateway.endpoint}/admin/tenants/{tenant}",
                             headers={"Authorization": "Bearer wrong"}, timeout=60)
    assert denied.status_code == 401
    record = _find(gateway, lambda r: r["resource"] == f"/admin/tenants/{tenant}" and r["outcome"] == "denied")
    assert record["action"] == "admin:DELETE /admin/tenants/{name}"
