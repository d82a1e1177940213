"""The gateway's audit records: S3 requests with who and from where, refusals before the warehouse, admin actions."""
from __future__ import annotations

import uuid
from typing import Any

import pytest
import requests
from botocore.exceptions import ClientError


def test_s3_requests_and_refusals_are_audited(gateway: Any, s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="audited.txt", Body=b"data")
    put = gateway.audit_record(lambda r: r["action"] == "s3:PutObject" and r["resource"] == f"{bucket}/audited.txt", 0)
    assert put["outcome"] == "allowed" and put["access_key_id"] == gateway.access_key_id
    assert put["source_address"] == "127.0.0.1" and put["request_id"]

    forged = gateway.client(gateway.access_key_id, "not-the-secret")
    with pytest.raises(ClientError):
        forged.get_object(Bucket=bucket, Key="audited.txt")
    refused = gateway.audit_record(lambda r: r["error"] == "SignatureDoesNotMatch"
                    and r["resource"] == f"{bucket}/audited.txt")
    assert refused["outcome"] == "denied" and refused["access_key_id"] == gateway.access_key_id


def test_admin_actions_and_refusals_are_audited(gateway: Any) -> None:
    tenant = f"aud-{uuid.uuid4().hex[:8]}"
    assert gateway.admin("POST", "/tenants", {"name": tenant}).status_code == 201
    created = gateway.audit_record(
        lambda r: r["action"] == "admin:POST /admin/tenants" and r["outcome"] == "allowed", 0)
    assert created["principal"]  # the admin token's name, never the token
    assert gateway.admin_token not in str(created)
    denied = requests.delete(f"{gateway.endpoint}/admin/tenants/{tenant}",
                             headers={"Authorization": "Bearer wrong"}, timeout=60)
    assert denied.status_code == 401
    record = gateway.audit_record(lambda r: r["resource"] == f"/admin/tenants/{tenant}" and r["outcome"] == "denied")
    assert record["action"] == "admin:DELETE /admin/tenants/{name}"
