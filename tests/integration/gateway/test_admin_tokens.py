"""Named admin tokens and crypto-shredding through the real gateway: its admin API and the ``dw`` commands.

The session's gateway (``conftest.py``); ``dw`` runs as a separate process, as a
user runs it, finding the gateway and its ``dw-up@<host>`` token from the data dir.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import requests

from dwray.core.gateway_files import local_token_name
from tests.helpers import wait_until
from tests.integration.gateway.clients import error_of
from tests.integration.gateway.conftest import GatewayUnderTest


def as_token(gateway: GatewayUnderTest, token: str, method: str = "GET", path: str = "/tenants") -> requests.Response:
    return requests.request(method, f"{gateway.endpoint}/admin{path}", timeout=60,
                            headers={"Authorization": f"Bearer {token}"})


def dw(gateway: GatewayUnderTest, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    # What the test process has in its DWRAY_* variables is not this dw's business (nor its token).
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DWRAY_")}
    return subprocess.run([sys.executable, "-m", "dwray.cli", "--data-dir", str(gateway.data_dir), *args],
                          capture_output=True, text=True, timeout=120, env={**clean, **(env or {})})


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_tokens_are_created_listed_used_and_revoked(gateway: GatewayUnderTest) -> None:
    name = unique("ops")
    created = gateway.admin("POST", "/admin-tokens", {"name": name, "description": "ops laptop"})
    assert created.status_code == 201, created.text
    new = created.json()
    assert set(new) == {"name", "id", "created", "expires", "last_used", "expired", "description", "token"}
    assert new["name"] == name and new["expires"] is None and len(new["token"]) == 43
    assert as_token(gateway, new["token"]).status_code == 200

    listed = gateway.admin("GET", "/admin-tokens")
    assert listed.status_code == 200
    mine = {t["name"]: t for t in listed.json()}
    assert new["token"] not in listed.text and "token" not in mine[name]
    assert mine[name]["id"] == new["id"] and mine[name]["last_used"] is not None  # it was just used
    assert local_token_name() in mine  # the token 'dw up' left for local dw commands is listed too

    assert gateway.admin("DELETE", f"/admin-tokens/{name}").status_code == 204

    def refused() -> bool:
        return as_token(gateway, new["token"]).status_code == 401
    wait_until(refused, timeout=10, what="the revoked token to be refused")
    body = as_token(gateway, new["token"]).json()["error"]
    assert body["code"] == "Unauthorized" and "revoked" in body["message"]
    assert name not in {t["name"] for t in gateway.admin("GET", "/admin-tokens").json()}
    assert gateway.admin("DELETE", f"/admin-tokens/{name}").status_code == 404


def test_an_expired_token_is_refused_with_a_message_that_says_so(gateway: GatewayUnderTest) -> None:
    name = unique("brief")
    created = gateway.admin("POST", "/admin-tokens", {"name": name, "expires": "3s"})
    assert created.status_code == 201, created.text
    new = created.json()
    assert 0 < new["expires"] - time.time() <= 3.5
    assert as_token(gateway, new["token"]).status_code == 200  # cached as valid now ...
    time.sleep(max(0.0, new["expires"] - time.time()) + 0.2)
    expired = as_token(gateway, new["token"])  # ... and refused the moment it expires, cache or not
    assert expired.status_code == 401
    error = expired.json()["error"]
    assert error["code"] == "TokenExpired" and f"{name!r} expired at" in error["message"]
    assert new["token"] not in expired.text
    assert [t["expired"] for t in gateway.admin("GET", "/admin-tokens").json() if t["name"] == name] == [True]
    gateway.admin("DELETE", f"/admin-tokens/{name}")


def test_bad_token_requests_get_clear_errors(gateway: GatewayUnderTest) -> None:
    name = unique("dup")
    assert gateway.admin("POST", "/admin-tokens", {"name": name}).status_code == 201
    again = gateway.admin("POST", "/admin-tokens", {"name": name})
    assert again.status_code == 409 and "exists" in again.json()["error"]["message"]
    replaced = gateway.admin("POST", "/admin-tokens", {"name": name, "replace": True})
    assert replaced.status_code == 201
    for body, words in (({"name": "no spaces"}, "invalid admin token name"),
                        ({"name": unique("x"), "expires": "soon"}, "neither a duration"),
                        ({"name": unique("x"), "expires": "2001-01-01T00:00Z"}, "not in the future"),
                        ({"name": unique("x"), "expires": "99999999999999999999d"}, "neither a duration")):
        response = gateway.admin("POST", "/admin-tokens", body)
        assert response.status_code == 400 and words in response.json()["error"]["message"], response.text
    missing = gateway.admin("POST", "/admin-tokens", {})
    assert missing.status_code == 422 and "name" in missing.text
    gateway.admin("DELETE", f"/admin-tokens/{name}")


def test_dw_admin_token_commands_keep_tokens_off_the_command_line(gateway: GatewayUnderTest, tmp_path: Path) -> None:
    name = unique("robot")
    token_file = tmp_path / "robot.token"
    created = dw(gateway, "admin-token", "create", name, "--expires", "1h", "--output-file", str(token_file), "--json")
    assert created.returncode == 0, created.stderr
    info = json.loads(created.stdout)
    token = token_file.read_text().strip()
    assert token_file.stat().st_mode & 0o777 == 0o600 and token not in created.stdout + created.stderr
    assert info["token_file"] == str(token_file) and 3500 < info["expires"] - time.time() <= 3600

    elsewhere = ["--endpoint", gateway.endpoint]
    with_file = dw(gateway, "admin-token", "list", "--json", "--admin-token-file", str(token_file), *elsewhere)
    assert with_file.returncode == 0, with_file.stderr
    listed = {t["name"]: t for t in json.loads(with_file.stdout)}
    assert listed[name]["id"] == info["id"] and token not in with_file.stdout
    with_env = dw(gateway, "tenant", "list", "--json", *elsewhere, env={"DWRAY_ADMIN_TOKEN": token})
    assert with_env.returncode == 0, with_env.stderr
    with_env_file = dw(gateway, "tenant", "list", "--json", *elsewhere, env={"DWRAY_ADMIN_TOKEN_FILE": str(token_file)})
    assert with_env_file.returncode == 0, with_env_file.stderr

    token_file.chmod(0o644)
    loose = dw(gateway, "tenant", "list", "--admin-token-file", str(token_file), *elsewhere)
    assert loose.returncode == 1 and "chmod 600" in loose.stderr and token not in loose.stderr
    gone = dw(gateway, "tenant", "list", "--admin-token", "not-a-token")
    assert gone.returncode == 2 and "No such option '--admin-token'" in gone.stderr

    revoked = dw(gateway, "admin-token", "revoke", name, "--json")
    assert revoked.returncode == 0 and json.loads(revoked.stdout) == {"revoked": name}, revoked.stderr
    token_file.chmod(0o600)

    def refused() -> subprocess.CompletedProcess | None:
        result = dw(gateway, "tenant", "list", "--admin-token-file", str(token_file), *elsewhere)
        return result if result.returncode == 1 else None
    result = wait_until(refused, timeout=20, what="the revoked token to be refused", interval=0.5)
    assert "not valid" in result.stderr and token not in result.stderr
    printed = dw(gateway, "admin-token", "create", unique("shown"), "--json")
    assert printed.returncode == 0 and len(json.loads(printed.stdout)["token"]) == 43, printed.stderr
    bad = dw(gateway, "admin-token", "create", unique("x"), "--expires", "eventually")
    assert bad.returncode == 1 and "neither a duration" in bad.stderr


def test_tenant_rm_shred_destroys_the_tenant_and_its_key(gateway: GatewayUnderTest) -> None:
    tenant = unique("shred")
    key_id, secret = gateway.new_key(tenant)
    client = gateway.client(key_id, secret)
    bucket = unique("doomed")
    client.create_bucket(Bucket=bucket)
    client.put_object(Bucket=bucket, Key="secret", Body=b"to be shredded")

    refused = dw(gateway, "tenant", "rm", tenant, "--shred")
    assert refused.returncode == 1 and "still owns 1 bucket" in refused.stderr and bucket in refused.stderr
    assert client.get_object(Bucket=bucket, Key="secret")["Body"].read() == b"to be shredded"
    alone = dw(gateway, "tenant", "rm", tenant, "--force")
    assert alone.returncode == 1 and "--force goes with --shred" in alone.stderr

    shred = dw(gateway, "tenant", "rm", tenant, "--shred", "--force", "--json")
    assert shred.returncode == 0, shred.stderr
    report = json.loads(shred.stdout)
    assert report == {"tenant": tenant, "kek_id": f"tenant:{tenant}", "kek_versions_destroyed": [1],
                      "access_keys_removed": 1, "buckets_removed": [bucket], "object_versions_removed": 1,
                      "blobs_deleted": 0}  # the small object's sealed bytes were in its catalog row

    def key_refused() -> bool:
        try:
            client.list_buckets()
        except Exception as error:  # noqa: BLE001 - the error is what we wait for
            return error_of(error) == ("InvalidAccessKeyId", 403)
        return False
    wait_until(key_refused, timeout=40, what="the shredded tenant's key to be refused", interval=0.5)
    assert gateway.admin("GET", f"/tenants/{tenant}").status_code == 404
    again = gateway.admin("POST", "/tenants", {"name": tenant})
    assert again.status_code == 409 and "crypto-shredded" in again.json()["error"]["message"]
    rerun = gateway.admin("POST", f"/tenants/{tenant}/shred")  # a rerun finishes nothing more, and says so
    assert rerun.status_code == 200 and rerun.json()["kek_versions_destroyed"] == []
    assert gateway.admin("POST", "/tenants/no-such-tenant/shred").status_code == 404
    default = gateway.admin("POST", f"/tenants/{gateway.config.default_tenant}/shred", force="true")
    assert default.status_code == 409 and "default tenant" in default.json()["error"]["message"]
    assert gateway.client().list_buckets() is not None  # the default tenant is untouched
