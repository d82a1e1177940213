"""The gateway as a service: health probes, metrics, the admin API, tenancy, rate limits, the CLI."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests
from botocore.exceptions import ClientError
from prometheus_client.parser import text_string_to_metric_families

from dwray.core.gateway_files import GatewayFiles
from tests.helpers import wait_until
from tests.integration.gateway.clients import error_of, random_bytes, unique_bucket_name
from tests.integration.gateway.conftest import THROTTLED_TENANT, GatewayUnderTest


def samples(text: str) -> dict[str, list[Any]]:
    """Every sample of a Prometheus exposition, by metric family, parsed by prometheus_client."""
    return {family.name: list(family.samples) for family in text_string_to_metric_families(text)}


# --- health -----------------------------------------------------------------------------

def test_health_probes_answer_with_kubernetes_semantics(gateway: GatewayUnderTest) -> None:
    live = requests.get(f"{gateway.endpoint}/healthz/live", timeout=10)
    assert live.status_code == 200 and live.json() == {"status": "alive"}
    startup = requests.get(f"{gateway.endpoint}/healthz/startup", timeout=10)
    assert startup.status_code == 200 and startup.json()["status"] == "started"
    ready = requests.get(f"{gateway.endpoint}/healthz/ready", timeout=10)
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"plugins": "ok", "catalog": "ok", "storage": "ok", "breakers": "ok",
                                      "memory": "ok"}


# --- metrics ----------------------------------------------------------------------------

def test_metrics_count_requests_bytes_plugins_and_tenants(gateway: GatewayUnderTest, s3: Any, bucket: str) -> None:
    body = random_bytes(70_000, seed=1)
    s3.put_object(Bucket=bucket, Key="m/one", Body=body)
    assert s3.get_object(Bucket=bucket, Key="m/one")["Body"].read() == body
    with pytest.raises(ClientError):
        s3.get_object(Bucket=bucket, Key="m/missing")

    def scrape() -> dict[str, list[Any]]:
        response = requests.get(f"{gateway.endpoint}/metrics", timeout=30)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        return samples(response.text)

    def counted() -> bool:
        found = scrape()
        requests_total = found.get("dwray_s3_requests", [])
        return any(s.labels.get("operation") == "GetObject" and s.labels.get("status") == "404" and s.value >= 1
                   for s in requests_total)

    wait_until(counted, timeout=20, what="the 404 GetObject in /metrics")
    found = scrape()
    put_ok = [s for s in found["dwray_s3_requests"]
              if s.name == "dwray_s3_requests_total" and s.labels["operation"] == "PutObject"
              and s.labels["status"] == "200"]
    assert put_ok and all("replica" in s.labels for s in put_ok)
    assert sum(s.value for s in found["dwray_s3_bytes_received"] if s.name.endswith("_total")
               and s.labels["operation"] == "PutObject") >= len(body)
    assert sum(s.value for s in found["dwray_s3_bytes_sent"] if s.name.endswith("_total")
               and s.labels["operation"] == "GetObject") >= len(body)
    buckets = [s for s in found["dwray_s3_request_duration_seconds"] if s.name.endswith("_bucket")]
    assert buckets and {"le", "operation", "replica"} <= set(buckets[0].labels)
    states = {(s.labels["child"], s.labels["state"]): s.value for s in found["dwray_plugin_state"]}
    assert states[("catalog", "running")] == 1 and states[("identity", "running")] == 1
    assert {s.labels["child"] for s in found["dwray_plugin_restarts"]} >= {"catalog", "storage:local", "kms:local"}
    # Totals only: tenant names appear with metrics_tenant_labels (tests/integration/gateway/test_gateway_tls.py).
    assert found["dwray_stored_objects"][0].value >= 1
    assert found["dwray_stored_bytes"][0].value >= len(body)
    assert "dwray_tenant_objects" not in found and "tenant" not in {k for f in found.values() for s in f
                                                                     for k in s.labels}
    assert found["dwray_gateway_draining"][0].value == 0
    # No label anywhere carries a credential.
    text = requests.get(f"{gateway.endpoint}/metrics", timeout=30).text
    assert gateway.access_key_id not in text and gateway.secret_access_key not in text
    assert gateway.admin_token not in text


# --- admin API --------------------------------------------------------------------------

def test_admin_api_needs_its_token(gateway: GatewayUnderTest) -> None:
    anonymous = requests.get(f"{gateway.endpoint}/admin/tenants", timeout=10)
    assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "Unauthorized"
    wrong = requests.get(f"{gateway.endpoint}/admin/tenants", headers={"Authorization": "Bearer nope"}, timeout=10)
    assert wrong.status_code == 401 and "not valid" in wrong.json()["error"]["message"]
    assert "invalid_token" in wrong.headers["www-authenticate"]
    # An S3 access key is not an admin token.
    s3_key = requests.get(f"{gateway.endpoint}/admin/tenants",
                          headers={"Authorization": f"Bearer {gateway.secret_access_key}"}, timeout=10)
    assert s3_key.status_code == 401


def test_admin_openapi_schema_lists_the_admin_operations(gateway: GatewayUnderTest) -> None:
    schema = requests.get(f"{gateway.endpoint}/admin/openapi.json", timeout=10).json()
    paths = schema["paths"]
    assert {"/admin/tenants", "/admin/keys", "/admin/keys/{access_key_id}", "/admin/plugins",
            "/admin/plugins/{child_id}/restart", "/admin/tenants/{name}/rotate"} <= set(paths)
    assert "post" in paths["/admin/keys"] and "delete" in paths["/admin/keys/{access_key_id}"]


def test_tenants_are_isolated_and_revoked_keys_stop_working(gateway: GatewayUnderTest, s3: Any,
                                                            bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="private", Body=b"default tenant's bytes")
    key_id, secret = gateway.new_key("acme")
    acme = gateway.client(key_id, secret)
    # The other tenant sees none of the default tenant's buckets; bucket names are global, as in S3.
    assert bucket not in [b["Name"] for b in acme.list_buckets()["Buckets"]]
    with pytest.raises(ClientError) as caught:
        acme.get_object(Bucket=bucket, Key="private")
    assert error_of(caught.value) == ("AccessDenied", 403)
    with pytest.raises(ClientError) as caught:
        acme.create_bucket(Bucket=bucket)
    assert error_of(caught.value) == ("BucketAlreadyExists", 409)
    own = unique_bucket_name()
    acme.create_bucket(Bucket=own)
    acme.put_object(Bucket=own, Key="private", Body=b"acme's bytes")
    assert s3.get_object(Bucket=bucket, Key="private")["Body"].read() == b"default tenant's bytes"
    assert acme.get_object(Bucket=own, Key="private")["Body"].read() == b"acme's bytes"

    listed = gateway.admin("GET", "/keys", tenant="acme").json()
    assert key_id in [k["access_key_id"] for k in listed]
    assert all("secret" not in json.dumps(k).lower() or secret not in json.dumps(k) for k in listed)
    assert gateway.admin("DELETE", f"/keys/{key_id}").status_code == 204

    def refused() -> bool:
        try:
            acme.list_buckets()
        except ClientError as error:
            return error_of(error) == ("InvalidAccessKeyId", 403)
        return False

    wait_until(refused, timeout=10, what="the revoked key to be refused")


def test_tenant_admin_errors_are_json_with_the_right_status(gateway: GatewayUnderTest) -> None:
    assert gateway.admin("POST", "/tenants", {"name": "dup-tenant"}).status_code == 201
    again = gateway.admin("POST", "/tenants", {"name": "dup-tenant"})
    assert again.status_code == 409 and again.json()["error"]["code"] == "TenantAlreadyExists"
    bad = gateway.admin("POST", "/tenants", {"name": "Not A Tenant!"})
    assert bad.status_code == 400
    missing = gateway.admin("GET", "/tenants/no-such-tenant")
    assert missing.status_code == 404
    assert gateway.admin("POST", "/keys", {"tenant": "no-such-tenant"}).status_code == 404
    assert gateway.admin("DELETE", "/keys/DWNOSUCHKEY000000000").status_code == 404
    names = [t["name"] for t in gateway.admin("GET", "/tenants").json()]
    assert "dup-tenant" in names and "default" in names


def test_plugin_status_restart_and_key_rotation(gateway: GatewayUnderTest, s3: Any, bucket: str) -> None:
    tree = gateway.admin("GET", "/plugins").json()
    children = {c["id"]: c for c in tree["children"]}
    assert children["settings"]["state"] == "running"
    before = children["settings"]["generation"]
    restarted = gateway.admin("POST", "/plugins/settings/restart")
    assert restarted.status_code == 200 and restarted.json()["generation"] > before
    assert gateway.admin("POST", "/plugins/no-such-child/restart").status_code == 404

    body = random_bytes(10_000, seed=2)
    s3.put_object(Bucket=bucket, Key="rotated", Body=body)
    rotation = gateway.admin("POST", "/tenants/default/rotate", rewrap="true")
    assert rotation.status_code == 200, rotation.text
    result = rotation.json()
    assert result["tenant"] == "default" and result["kek_version"] >= 2 and result["rewrapped"] >= 1
    assert s3.get_object(Bucket=bucket, Key="rotated")["Body"].read() == body


# --- rate limits ------------------------------------------------------------------------

def test_a_tenant_over_its_rate_gets_slow_down_with_retry_after(gateway: GatewayUnderTest) -> None:
    key_id, secret = gateway.new_key(THROTTLED_TENANT)
    client = gateway.client(key_id, secret)
    outcomes = []
    for _ in range(8):
        try:
            client.list_buckets()
            outcomes.append("ok")
        except ClientError as error:
            outcomes.append(error_of(error))
            retry_after = error.response["ResponseMetadata"]["HTTPHeaders"].get("retry-after")
            assert retry_after is not None and int(retry_after) >= 1
    assert outcomes[:3] == ["ok"] * 3  # the burst
    assert ("SlowDown", 503) in outcomes
    # Other tenants are not limited by it.
    default = gateway.client()
    assert all(default.list_buckets() is not None for _ in range(10))


# --- the dw commands against the running gateway -----------------------------------------

def dw(gateway: GatewayUnderTest, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dwray.cli", "--data-dir", str(gateway.data_dir), *args],
                          capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})})


def test_dw_key_create_prints_json_for_scripts_and_finds_the_gateway_by_itself(gateway: GatewayUnderTest) -> None:
    token_file = GatewayFiles(gateway.data_dir / "gateway").admin_token
    assert gateway.data_dir.resolve() not in token_file.parents, "a copy of the data dir must hold no credential"
    assert token_file.stat().st_mode & 0o777 == 0o600
    created = dw(gateway, "tenant", "create", "scripted", "--json")
    assert created.returncode == 0, created.stderr
    result = dw(gateway, "key", "create", "--tenant", "scripted", "--json")
    assert result.returncode == 0, result.stderr
    new = json.loads(result.stdout)
    assert set(new) == {"access_key_id", "secret_access_key", "scope"} and new["scope"] == "full"
    client = gateway.client(new["access_key_id"], new["secret_access_key"])
    client.create_bucket(Bucket="scripted-bucket")
    assert [b["Name"] for b in client.list_buckets()["Buckets"]] == ["scripted-bucket"]
    listed = json.loads(dw(gateway, "key", "list", "--tenant", "scripted", "--json").stdout)
    assert [k["access_key_id"] for k in listed] == [new["access_key_id"]]
    assert new["secret_access_key"] not in json.dumps(listed)
    revoked = dw(gateway, "key", "revoke", new["access_key_id"], "--json")
    assert revoked.returncode == 0, revoked.stderr
    plugins = json.loads(dw(gateway, "plugin", "list", "--json").stdout)
    assert {"catalog", "identity", "storage:local"} <= {c["id"] for c in plugins["children"]}


def test_dw_admin_commands_take_flags_and_fail_cleanly(gateway: GatewayUnderTest, tmp_path: Any) -> None:
    """Elsewhere, the token comes from a 0600 file or DWRAY_ADMIN_TOKEN: never from the command line."""
    token_file = tmp_path / "token"
    token_file.write_text(gateway.admin_token + "\n")
    token_file.chmod(0o600)
    elsewhere = subprocess.run(
        [sys.executable, "-m", "dwray.cli", "--data-dir", str(tmp_path), "tenant", "list", "--json",
         "--endpoint", gateway.endpoint, "--admin-token-file", str(token_file)],
        capture_output=True, text=True, timeout=120)
    assert elsewhere.returncode == 0, elsewhere.stderr
    assert "default" in [t["name"] for t in json.loads(elsewhere.stdout)]
    wrong = subprocess.run(
        [sys.executable, "-m", "dwray.cli", "--data-dir", str(tmp_path), "tenant", "list",
         "--endpoint", gateway.endpoint], env={**os.environ, "DWRAY_ADMIN_TOKEN": "not-the-token"},
        capture_output=True, text=True, timeout=120)
    assert wrong.returncode == 1 and "not valid" in wrong.stderr and "not-the-token" not in wrong.stderr
    nothing = subprocess.run([sys.executable, "-m", "dwray.cli", "--data-dir", str(tmp_path), "key", "list"],
                             capture_output=True, text=True, timeout=120)
    assert nothing.returncode == 1 and "no running gateway" in nothing.stderr


def test_gateway_keeps_serving_after_a_burst_of_bad_requests(gateway: GatewayUnderTest, s3: Any, bucket: str) -> None:
    for _ in range(20):
        assert requests.put(f"{gateway.endpoint}/{bucket}/x", data=b"no auth", timeout=10).status_code == 403
    s3.put_object(Bucket=bucket, Key="after", Body=b"fine")
    assert s3.get_object(Bucket=bucket, Key="after")["Body"].read() == b"fine"
    assert "after" in [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]


# --- virtual-hosted style ----------------------------------------------------------------

def test_virtual_hosted_style_addresses_the_bucket_by_host(gateway: GatewayUnderTest, s3: Any, bucket: str) -> None:
    """``<bucket>.<domain>`` names the bucket. The name does not resolve here, so each request is
    signed for that host by botocore and then sent to the gateway's address, Host header intact."""
    import boto3
    from botocore.config import Config

    from tests.integration.gateway.conftest import VIRTUAL_HOST_DOMAIN

    port = gateway.endpoint.rsplit(":", 1)[1]
    virtual = boto3.client("s3", endpoint_url=f"http://{VIRTUAL_HOST_DOMAIN}:{port}", region_name=gateway.region,
                           aws_access_key_id=gateway.access_key_id, aws_secret_access_key=gateway.secret_access_key,
                           config=Config(s3={"addressing_style": "virtual"}))
    seen_hosts: list[str] = []

    def to_loopback(request: Any, **_: Any) -> None:
        seen_hosts.append(request.url.split("/")[2])
        request.url = request.url.replace(f"{bucket}.{VIRTUAL_HOST_DOMAIN}:{port}", f"127.0.0.1:{port}")

    virtual.meta.events.register("before-send.s3", to_loopback)
    virtual.put_object(Bucket=bucket, Key="dir/virtual key.txt", Body=b"by host")
    assert s3.get_object(Bucket=bucket, Key="dir/virtual key.txt")["Body"].read() == b"by host"
    assert virtual.get_object(Bucket=bucket, Key="dir/virtual key.txt")["Body"].read() == b"by host"
    assert [o["Key"] for o in virtual.list_objects_v2(Bucket=bucket)["Contents"]] == ["dir/virtual key.txt"]
    assert seen_hosts and all(host == f"{bucket}.{VIRTUAL_HOST_DOMAIN}:{port}" for host in seen_hosts)


# --- the S3 benchmark --------------------------------------------------------------------

def test_s3_bench_drives_the_gateway_and_seaweedfs_in_one_run(gateway: GatewayUnderTest) -> None:
    from dwray.cli.bench_s3 import S3Target, run_s3_bench

    key_id, secret = gateway.new_key("bench-test")
    report = run_s3_bench(S3Target("dwray", gateway.endpoint, key_id, secret), threads=2, small_count=20,
                          large_size=1 << 20, large_count=2, compare=True)
    rows = {(row.op, row.size): row for row in report.rows}
    assert set(rows) == {("put", 4096), ("get", 4096), ("put", 1 << 20), ("get", 1 << 20)}
    for row in rows.values():
        assert row.dwray.errors == 0 and row.dwray.ops == (20 if row.size == 4096 else 2)
        assert row.seaweed is not None and row.seaweed.errors == 0
        assert row.ratio == pytest.approx(row.dwray.ops_per_second / row.seaweed.ops_per_second)
    assert json.loads(json.dumps(report.as_json()))["rows"]


# --- secrets stay out of logs ---------------------------------------------------------------

def test_no_credential_reaches_the_ray_logs(gateway: GatewayUnderTest, s3: Any, bucket: str) -> None:
    """Keys created, used, refused and revoked: none of the secrets is in any Ray log file."""
    import ray

    key_id, secret = gateway.new_key("log-check")
    client = gateway.client(key_id, secret)
    client.list_buckets()
    with pytest.raises(ClientError):
        gateway.client(key_id, secret + "x").list_buckets()
    assert gateway.admin("DELETE", f"/keys/{key_id}").status_code == 204
    s3.put_object(Bucket=bucket, Key="logged?", Body=b"x")
    logs = Path(ray._private.worker._global_node.get_logs_dir_path())
    secrets_ = [secret.encode(), gateway.secret_access_key.encode(), gateway.admin_token.encode()]
    scanned = 0
    for path in logs.rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            scanned += 1
            for value in secrets_:
                assert value not in content, f"a secret is in {path}"
    assert scanned > 10
