"""Least-privilege access keys through the real gateway: every S3 operation x every kind of caller.

One tenant owns buckets A and B. The callers (boto3, one client each):

- ``full``: a key without a policy (the tenant's full rights);
- ``read_only``: ``dw key create --read-only`` (``AccessPolicy.read_only()``);
- ``bucket``: ``--bucket B``, acting on bucket A (``AccessPolicy.for_bucket``);
- ``prefix_in`` / ``prefix_out``: a key allowed ``s3:*`` on ``A/in/*`` and ``s3:ListBucket`` on A,
  acting on keys under ``in/`` and under ``out/``;
- ``other_tenant``: another tenant's full key (A and B are names it cannot use: bucket names are global);
- ``anonymous``: unsigned requests;
- ``revoked``: a key revoked after it was used (so the gateway had cached it).

The documented answers (``EXPECTED``; ``ok`` unless listed):

================================  ======================================================================
caller                            answer
================================  ======================================================================
full                              everything succeeds; ListBuckets shows A and B
read_only                         reads, listings, HEADs, ListParts, ListMultipartUploads succeed;
                                  every write is 403 AccessDenied; DeleteObjects answers 200 with an
                                  AccessDenied error per key
bucket (scoped to B, acting on A) 403 AccessDenied for everything on A (DeleteObjects: per key) and for
                                  CreateBucket/DeleteBucket; ListBuckets shows B only
prefix_in                         object and multipart operations, ListObjects(V2) and HeadBucket
                                  (s3:ListBucket) succeed; CreateBucket, DeleteBucket, GetBucketLocation,
                                  GetBucketVersioning and ListMultipartUploads (not granted on the bucket
                                  ARN) are 403; ListBuckets shows A only (the policy names no other bucket)
prefix_out                        as prefix_in for bucket-level operations; every object and multipart
                                  operation is 403 AccessDenied (DeleteObjects: per key)
other_tenant                      403 AccessDenied for everything on A (multipart uploads included), as
                                  S3 answers for a bucket another account owns; CreateBucket of a new
                                  name succeeds; ListBuckets shows neither
anonymous                         403 AccessDenied
revoked                           403 InvalidAccessKeyId
================================  ======================================================================

HEAD answers carry no body, so there the code is the bare status. Every refusal
is also checked to have stored, changed or deleted nothing (seen by the full
key). Enforcement is the kernel's: the same refusals by the in-process
``Warehouse``, with no gateway, are in ``tests/unit/test_policy.py``.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError
from click.testing import CliRunner

from tests.helpers import wait_until
from tests.integration.gateway.clients import error_of
from tests.integration.gateway.conftest import GatewayUnderTest

OK = "ok"
DENIED = ("AccessDenied", 403)
DENIED_PER_KEY = ("AccessDenied", "per key")
PRINCIPALS = ("full", "read_only", "bucket", "prefix_in", "prefix_out", "other_tenant", "anonymous", "revoked")
PART = b"p" * 1024


@dataclass
class World:
    gateway: GatewayUnderTest
    tenant: str
    a: str
    b: str
    clients: dict[str, Any]

    @property
    def full(self) -> Any:
        return self.clients["full"]

    def exists(self, key: str) -> bool:
        try:
            self.full.head_object(Bucket=self.a, Key=key)
        except ClientError as error:
            assert error_of(error)[1] == 404, error.response
            return False
        return True

    def uploads(self, key: str) -> list[str]:
        listed = self.full.list_multipart_uploads(Bucket=self.a, Prefix=key)
        return [u["UploadId"] for u in listed.get("Uploads", []) if u["Key"] == key]

    def parts(self, key: str, upload_id: str) -> list[int]:
        return [p["PartNumber"] for p in
                self.full.list_parts(Bucket=self.a, Key=key, UploadId=upload_id).get("Parts", [])]

    def new_bucket(self) -> str:
        name = f"pol-{uuid.uuid4().hex[:16]}"
        self.full.create_bucket(Bucket=name)
        return name


def policy_key(gateway: GatewayUnderTest, tenant: str, policy: dict[str, Any] | None) -> Any:
    response = gateway.admin("POST", "/keys", {"tenant": tenant, "policy": policy})
    assert response.status_code == 201, response.text
    body = response.json()
    return gateway.client(body["access_key_id"], body["secret_access_key"])


@pytest.fixture(scope="module")
def world(gateway: GatewayUnderTest) -> World:
    from dwray.core.policy import AccessPolicy

    tenant = f"pol-{uuid.uuid4().hex[:8]}"
    full = gateway.client(*gateway.new_key(tenant))
    a, b = f"pol-a-{uuid.uuid4().hex[:12]}", f"pol-b-{uuid.uuid4().hex[:12]}"
    full.create_bucket(Bucket=a)
    full.create_bucket(Bucket=b)
    prefix = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "s3:*", "Resource": f"arn:aws:s3:::{a}/in/*"},
        {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": f"arn:aws:s3:::{a}"}]}
    prefix_client = policy_key(gateway, tenant, prefix)
    revoked_id, revoked_secret = gateway.new_key(tenant)
    revoked = gateway.client(revoked_id, revoked_secret)
    revoked.list_buckets()  # now the gateway holds it in its cache
    assert gateway.admin("DELETE", f"/keys/{revoked_id}").status_code == 204

    def refused() -> bool:
        try:
            revoked.list_buckets()
        except ClientError as error:
            return error_of(error) == ("InvalidAccessKeyId", 403)
        return False
    wait_until(refused, timeout=20, what="the revoked key to be refused")
    anonymous = boto3.client("s3", endpoint_url=gateway.endpoint, region_name=gateway.region,
                             config=Config(signature_version=UNSIGNED, s3={"addressing_style": "path"},
                                           retries={"max_attempts": 1}))
    clients = {
        "full": full,
        "read_only": policy_key(gateway, tenant, AccessPolicy.read_only().document()),
        "bucket": policy_key(gateway, tenant, AccessPolicy.for_bucket(b).document()),
        "prefix_in": prefix_client, "prefix_out": prefix_client,
        "other_tenant": gateway.client(*gateway.new_key(f"pol-other-{uuid.uuid4().hex[:8]}")),
        "anonymous": anonymous, "revoked": revoked,
    }
    return World(gateway, tenant, a, b, clients)


def attempt(call: Callable[[], Any]) -> Any:
    try:
        call()
    except ClientError as error:
        return error_of(error)
    return OK


# The operations: each runs once as the caller ``c`` on key ``key`` of bucket A (set up by the
# full key), and returns the answer and a check that a refusal left everything as it was.

Outcome = tuple[Any, Callable[[], None]]


def nothing() -> None:
    """A read: there is nothing it could have changed."""


def list_buckets(w: World, c: Any, key: str) -> Outcome:
    try:
        names = {b["Name"] for b in c.list_buckets()["Buckets"]}
    except ClientError as error:
        return error_of(error), nothing
    return ("listed", "".join(label for label, name in (("A", w.a), ("B", w.b)) if name in names)), nothing


def create_bucket(w: World, c: Any, key: str) -> Outcome:
    name = f"pol-{uuid.uuid4().hex[:16]}"

    def unchanged() -> None:
        assert name not in {b["Name"] for b in w.full.list_buckets()["Buckets"]}
    return attempt(lambda: c.create_bucket(Bucket=name)), unchanged


def delete_bucket(w: World, c: Any, key: str) -> Outcome:
    name = w.new_bucket()
    return attempt(lambda: c.delete_bucket(Bucket=name)), lambda: w.full.head_bucket(Bucket=name)


def bucket_read(method: str) -> Callable[[World, Any, str], Outcome]:
    def run(w: World, c: Any, key: str) -> Outcome:
        return attempt(lambda: getattr(c, method)(Bucket=w.a)), nothing
    return run


def list_objects(method: str) -> Callable[[World, Any, str], Outcome]:
    def run(w: World, c: Any, key: str) -> Outcome:
        w.full.put_object(Bucket=w.a, Key=key, Body=b"listed")
        return attempt(lambda: getattr(c, method)(Bucket=w.a, Prefix=key.split("/")[0] + "/")), nothing
    return run


def put_object(w: World, c: Any, key: str) -> Outcome:
    return attempt(lambda: c.put_object(Bucket=w.a, Key=key, Body=b"new")), lambda: assert_absent(w, key)


def assert_absent(w: World, key: str) -> None:
    assert not w.exists(key), f"{key} was stored by a refused request"


def object_read(method: str) -> Callable[[World, Any, str], Outcome]:
    def run(w: World, c: Any, key: str) -> Outcome:
        w.full.put_object(Bucket=w.a, Key=key, Body=b"stored")
        return attempt(lambda: getattr(c, method)(Bucket=w.a, Key=key)), nothing
    return run


def copy_object(w: World, c: Any, key: str) -> Outcome:
    w.full.put_object(Bucket=w.a, Key=key, Body=b"source")
    target = key + "-copy"
    return (attempt(lambda: c.copy_object(Bucket=w.a, Key=target, CopySource={"Bucket": w.a, "Key": key})),
            lambda: assert_absent(w, target))


def delete_object(w: World, c: Any, key: str) -> Outcome:
    w.full.put_object(Bucket=w.a, Key=key, Body=b"kept")
    return attempt(lambda: c.delete_object(Bucket=w.a, Key=key)), lambda: assert_present(w, key)


def assert_present(w: World, key: str) -> None:
    assert w.exists(key), f"{key} was deleted by a refused request"


def delete_objects(w: World, c: Any, key: str) -> Outcome:
    keys = [key, key + "-2"]
    for name in keys:
        w.full.put_object(Bucket=w.a, Key=name, Body=b"kept")
    try:
        answer = c.delete_objects(Bucket=w.a, Delete={"Objects": [{"Key": k} for k in keys]})
    except ClientError as error:
        outcome: Any = error_of(error)
    else:
        codes = {e["Code"] for e in answer.get("Errors", [])}
        outcome = OK if not codes else (codes.pop(), "per key") if len(codes) == 1 else tuple(codes)

    def unchanged() -> None:
        for name in keys:
            assert_present(w, name)
    return outcome, unchanged


def create_upload(w: World, c: Any, key: str) -> Outcome:
    def unchanged() -> None:
        assert w.uploads(key) == []
    return attempt(lambda: c.create_multipart_upload(Bucket=w.a, Key=key)), unchanged


def upload_part(w: World, c: Any, key: str) -> Outcome:
    upload = w.full.create_multipart_upload(Bucket=w.a, Key=key)["UploadId"]
    return (attempt(lambda: c.upload_part(Bucket=w.a, Key=key, UploadId=upload, PartNumber=1, Body=PART)),
            lambda: _no_parts(w, key, upload))


def _no_parts(w: World, key: str, upload: str) -> None:
    assert w.parts(key, upload) == [], "a refused request stored a part"


def upload_part_copy(w: World, c: Any, key: str) -> Outcome:
    source = key + "-src"
    w.full.put_object(Bucket=w.a, Key=source, Body=PART)
    upload = w.full.create_multipart_upload(Bucket=w.a, Key=key)["UploadId"]
    return (attempt(lambda: c.upload_part_copy(Bucket=w.a, Key=key, UploadId=upload, PartNumber=1,
                                               CopySource={"Bucket": w.a, "Key": source})),
            lambda: _no_parts(w, key, upload))


def _upload_with_part(w: World, key: str) -> tuple[str, str]:
    upload = w.full.create_multipart_upload(Bucket=w.a, Key=key)["UploadId"]
    etag = w.full.upload_part(Bucket=w.a, Key=key, UploadId=upload, PartNumber=1, Body=PART)["ETag"]
    return upload, etag


def complete_upload(w: World, c: Any, key: str) -> Outcome:
    upload, etag = _upload_with_part(w, key)

    def unchanged() -> None:
        assert_absent(w, key)
        assert w.uploads(key) == [upload]
    return attempt(lambda: c.complete_multipart_upload(
        Bucket=w.a, Key=key, UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})), unchanged


def abort_upload(w: World, c: Any, key: str) -> Outcome:
    upload, _ = _upload_with_part(w, key)

    def unchanged() -> None:
        assert w.uploads(key) == [upload] and w.parts(key, upload) == [1]
    return attempt(lambda: c.abort_multipart_upload(Bucket=w.a, Key=key, UploadId=upload)), unchanged


def list_parts(w: World, c: Any, key: str) -> Outcome:
    upload, _ = _upload_with_part(w, key)
    return attempt(lambda: c.list_parts(Bucket=w.a, Key=key, UploadId=upload)), nothing


OPERATIONS: dict[str, Callable[[World, Any, str], Outcome]] = {
    "ListBuckets": list_buckets, "CreateBucket": create_bucket, "HeadBucket": bucket_read("head_bucket"),
    "GetBucketLocation": bucket_read("get_bucket_location"),
    "GetBucketVersioning": bucket_read("get_bucket_versioning"), "DeleteBucket": delete_bucket,
    "ListObjects": list_objects("list_objects"), "ListObjectsV2": list_objects("list_objects_v2"),
    "PutObject": put_object, "GetObject": object_read("get_object"), "HeadObject": object_read("head_object"),
    "CopyObject": copy_object, "DeleteObject": delete_object, "DeleteObjects": delete_objects,
    "CreateMultipartUpload": create_upload, "UploadPart": upload_part, "UploadPartCopy": upload_part_copy,
    "CompleteMultipartUpload": complete_upload, "AbortMultipartUpload": abort_upload, "ListParts": list_parts,
    "ListMultipartUploads": bucket_read("list_multipart_uploads"),
}
BUCKET_READS = ("HeadBucket", "ListObjects", "ListObjectsV2")  # s3:ListBucket on the bucket ARN
OBJECT_WRITES = ("PutObject", "CopyObject", "DeleteObject", "CreateMultipartUpload", "UploadPart",
                 "UploadPartCopy", "CompleteMultipartUpload", "AbortMultipartUpload")
OBJECT_OPERATIONS = (*OBJECT_WRITES, "GetObject", "HeadObject", "ListParts")


def _expected() -> dict[str, dict[str, Any]]:
    table: dict[str, dict[str, Any]] = {op: {} for op in OPERATIONS}
    for op in OPERATIONS:
        row = table[op]
        row["full"] = OK
        row["anonymous"] = DENIED
        row["revoked"] = ("InvalidAccessKeyId", 403)
        row["read_only"] = DENIED if op in (*OBJECT_WRITES, "CreateBucket", "DeleteBucket") else OK
        row["bucket"] = DENIED
        row["prefix_in"] = OK if op in (*OBJECT_OPERATIONS, *BUCKET_READS, "DeleteObjects") else DENIED
        row["prefix_out"] = OK if op in BUCKET_READS else DENIED
        row["other_tenant"] = DENIED
    table["ListBuckets"].update(full=("listed", "AB"), read_only=("listed", "AB"), bucket=("listed", "B"),
                                prefix_in=("listed", "A"), prefix_out=("listed", "A"),
                                other_tenant=("listed", ""))
    table["DeleteObjects"].update(read_only=DENIED_PER_KEY, bucket=DENIED_PER_KEY, prefix_out=DENIED_PER_KEY)
    table["CreateBucket"]["other_tenant"] = OK  # a name nobody has
    for op in ("HeadBucket", "HeadObject"):  # a HEAD answer has no body: botocore names the error by its status
        table[op] = {who: (str(answer[1]), answer[1]) if isinstance(answer, tuple) else answer
                     for who, answer in table[op].items()}
    return table


EXPECTED = _expected()


@pytest.mark.parametrize("principal", PRINCIPALS)
@pytest.mark.parametrize("operation", list(OPERATIONS))
def test_every_operation_for_every_caller_gets_the_documented_answer(world: World, operation: str,
                                                                     principal: str) -> None:
    key = f"{'out' if principal == 'prefix_out' else 'in'}/{operation}-{principal}-{uuid.uuid4().hex[:8]}"
    outcome, unchanged = OPERATIONS[operation](world, world.clients[principal], key)
    assert outcome == EXPECTED[operation][principal], (operation, principal)
    if outcome != OK and not (isinstance(outcome, tuple) and outcome[0] == "listed"):
        unchanged()


def test_invalid_policies_get_400_naming_what_is_unsupported(world: World) -> None:
    for policy, named in (
            ({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:GetObject",
                                                       "Resource": "*", "Condition": {}}]}, "Condition"),
            ({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:Teleport",
                                                       "Resource": "*"}]}, "s3:Teleport"),
            ({"Statement": []}, "Version")):
        response = world.gateway.admin("POST", "/keys", {"tenant": world.tenant, "policy": policy})
        assert response.status_code == 400, response.text
        assert named in response.json()["error"]["message"]
    scopes = {k["scope"] for k in world.gateway.admin("GET", "/keys", tenant=world.tenant).json()
              if not k["revoked"]}
    assert "full" in scopes and "allow read actions on *" in scopes
    assert f"allow s3:*,s3:ListBucket on {world.a}/*,{world.a}" not in scopes  # one statement each
    assert f"allow s3:* on {world.a}/in/*; allow s3:ListBucket on {world.a}" in scopes


def test_dw_key_create_with_a_policy_file_or_bucket_and_read_only(world: World, tmp_path: Path) -> None:
    from dwray.cli import cli

    def dw(*args: str) -> Any:
        """``dw key ...`` in a process of its own (its --json output goes to the real standard output)."""
        return subprocess.run([sys.executable, "-m", "dwray.cli", "--data-dir", str(world.gateway.data_dir), "key",
                               *args], capture_output=True, text=True, timeout=120, env=dict(os.environ))

    def dw_refused(*args: str) -> str:
        """``dw key ...`` refused before it reaches the gateway: in this process, its error message."""
        result = CliRunner().invoke(cli, ["--data-dir", str(world.gateway.data_dir), "key", *args])
        assert result.exit_code != 0
        return result.output

    policy_file = tmp_path / "policy.json"
    policy_file.write_text(json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "s3:PutObject", "Resource": f"arn:aws:s3:::{world.b}/drop/*"}]}))
    writer = dw("create", "--tenant", world.tenant, "--policy", str(policy_file), "--json")
    assert writer.returncode == 0, writer.stderr
    writer_key = json.loads(writer.stdout)
    assert writer_key["scope"] == f"allow s3:PutObject on {world.b}/drop/*"
    reader = dw("create", "--tenant", world.tenant, "--bucket", world.b, "--read-only", "--json")
    assert reader.returncode == 0, reader.stderr
    reader_key = json.loads(reader.stdout)
    assert reader_key["scope"] == f"allow read actions on {world.b},{world.b}/*"
    dropper = world.gateway.client(writer_key["access_key_id"], writer_key["secret_access_key"])
    client = world.gateway.client(reader_key["access_key_id"], reader_key["secret_access_key"])
    dropper.put_object(Bucket=world.b, Key="drop/readable", Body=b"yes")
    assert attempt(lambda: dropper.get_object(Bucket=world.b, Key="drop/readable")) == DENIED
    assert client.get_object(Bucket=world.b, Key="drop/readable")["Body"].read() == b"yes"
    assert attempt(lambda: client.put_object(Bucket=world.b, Key="no", Body=b"no")) == DENIED
    assert attempt(lambda: client.list_objects_v2(Bucket=world.a)) == DENIED
    listed = {k["access_key_id"]: k["scope"] for k in world.gateway.admin("GET", "/keys", tenant=world.tenant).json()}
    assert listed[reader_key["access_key_id"]] == reader_key["scope"]  # what 'dw key list' shows
    assert "not both" in dw_refused("create", "--tenant", world.tenant, "--policy", str(policy_file), "--read-only")
    policy_file.write_text('{"Version": "2012-10-17", "Statement": {"Effect": "Allow", "Action": "s3:*", '
                           '"Resource": "*", "Condition": {"Bool": {"aws:SecureTransport": "true"}}}}')
    assert "Condition is not supported" in dw_refused("create", "--tenant", world.tenant, "--policy", str(policy_file))
