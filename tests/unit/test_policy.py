"""Access key policies: parsing (and refusing what is not supported), IAM evaluation, storage with
the key, and enforcement by the in-process warehouse itself (no gateway)."""
from __future__ import annotations

import json
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dwray.core.access_keys import AccessKeys
from dwray.core.identity import IdentityStore
from dwray.core.keyring import LocalKeyring
from dwray.core.models import TenantContext
from dwray.core.policy import ACTIONS, MAX_POLICY_BYTES, READ_ACTIONS, AccessPolicy
from dwray.core.warehouse import Warehouse
from dwray.errors import AccessDenied, InvalidArgument
from dwray.s3.errors import from_dwray_error
from tests.conftest import make_config


def doc(*statements: dict[str, Any]) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": list(statements)}


def allow(action: Any, resource: Any, effect: str = "Allow") -> dict[str, Any]:
    return {"Effect": effect, "Action": action, "Resource": resource}


# Parsing ---------------------------------------------------------------------

def test_a_policy_round_trips_through_json_with_its_patterns_as_written() -> None:
    source = doc({"Sid": "Read", **allow(["s3:Get*", "s3:listbucket"], "arn:aws:s3:::logs/2024/*")})
    policy = AccessPolicy.parse(json.dumps(source))
    assert policy.statements[0].actions == (
        "s3:GetBucketAcl", "s3:GetBucketLocation", "s3:GetBucketNotification", "s3:GetBucketVersioning",
        "s3:GetObject", "s3:GetObjectAcl", "s3:GetObjectTagging", "s3:GetObjectVersion", "s3:GetObjectVersionAcl",
        "s3:GetObjectVersionTagging",
        "s3:ListBucket")
    assert json.loads(policy.to_json())["Statement"][0] == {
        "Sid": "Read", "Effect": "Allow", "Action": ["s3:Get*", "s3:listbucket"],
        "Resource": ["arn:aws:s3:::logs/2024/*"]}
    assert AccessPolicy.parse(policy.to_json()) == policy == AccessPolicy.parse(source)
    assert pickle.loads(pickle.dumps(policy)) == policy
    assert hash(TenantContext("acme", policy=policy)) == hash(TenantContext("acme", policy=policy))


def test_a_single_statement_object_and_single_strings_are_accepted() -> None:
    policy = AccessPolicy.parse({"Version": "2012-10-17", "Id": "p1",
                                 "Statement": allow("s3:*", "*")})
    assert policy.policy_id == "p1" and set(policy.statements[0].actions) == set(ACTIONS)


@pytest.mark.parametrize(("source", "named"), [
    ("not json", "must be JSON"),
    ("[]", "JSON object"),
    (doc(allow("s3:GetObject", "*")) | {"Version": "2008-10-17"}, "Version must be '2012-10-17'"),
    (doc(allow("s3:GetObject", "*")) | {"Extra": 1}, "'Extra' is not supported"),
    ({"Version": "2012-10-17", "Statement": []}, "non-empty list"),
    (doc({"Effect": "Allow", "NotAction": "s3:GetObject", "Resource": "*"}), "NotAction is not supported"),
    (doc({"Effect": "Allow", "Action": "s3:GetObject", "NotResource": "*"}), "NotResource is not supported"),
    (doc(allow("s3:GetObject", "*") | {"Principal": "*"}), "Principal is not supported"),
    (doc(allow("s3:GetObject", "*") | {"Condition": {"StringLike": {"s3:prefix": "a/*"}}}),
     "Condition is not supported"),
    (doc(allow("s3:GetObject", "*") | {"Colour": "red"}), "'Colour' is not supported"),
    (doc(allow("s3:GetObject", "*", effect="Maybe")), "Effect must be 'Allow' or 'Deny'"),
    (doc({"Effect": "Allow", "Action": "s3:GetObject"}), "has no Resource"),
    (doc(allow("s3:PutBucketPolicy", "*")), "'s3:PutBucketPolicy' matches no action"),
    (doc(allow("s3:Frob*", "*")), "'s3:Frob*' matches no action"),
    (doc(allow("ec2:StartInstances", "*")), "only S3 actions"),
    (doc(allow([], "*")), "Action must be a non-empty"),
    (doc(allow("s3:GetObject", "arn:aws:s3:us-east-1:123:b")), "is not supported: use '*'"),
    (doc(allow("s3:GetObject", "arn:aws:s3:::")), "is not supported: use '*'"),
    (doc(allow("s3:GetObject", "arn:aws:s3:::b/${aws:username}/*")), "policy variables"),
    (doc(allow("s3:GetObject", "*"), allow("s3:GetObject", 7)), "statement 2 Resource"),
])
def test_what_is_not_supported_is_refused_by_name(source: Any, named: str) -> None:
    with pytest.raises(InvalidArgument, match=None) as refused:
        AccessPolicy.parse(json.dumps(source) if not isinstance(source, str) else source)
    assert named in str(refused.value)


def test_size_and_statement_limits() -> None:
    with pytest.raises(InvalidArgument, match="at most 100 statements"):
        AccessPolicy.parse(doc(*[allow("s3:GetObject", f"arn:aws:s3:::b{n}") for n in range(101)]))
    with pytest.raises(InvalidArgument, match=f"at most {MAX_POLICY_BYTES} bytes"):
        AccessPolicy.parse(json.dumps(doc(allow("s3:GetObject", ["arn:aws:s3:::b/" + "k" * 300] * 80))))


# Evaluation ------------------------------------------------------------------

def test_evaluation_is_iams_explicit_deny_then_allow_then_implicit_deny() -> None:
    policy = AccessPolicy.parse(doc(
        allow("s3:*", ["arn:aws:s3:::data", "arn:aws:s3:::data/*"]),
        allow(["s3:GetObject", "s3:DeleteObject"], "arn:aws:s3:::data/locked/*", effect="Deny")))
    assert policy.decide("s3:GetObject", "data/open/x") == "allow"
    assert policy.decide("s3:GetObject", "data/locked/x") == "deny"
    assert policy.decide("s3:PutObject", "data/locked/x") == "allow"
    assert policy.decide("s3:GetObject", "other/x") == "implicit"
    assert policy.decide("s3:ListBucket", "data") == "allow"
    assert not policy.allows("s3:ListAllMyBuckets", "*")


def test_wildcards_in_resources_span_slashes_and_question_marks_match_one_character() -> None:
    policy = AccessPolicy.parse(doc(allow("s3:GetObject", ["arn:aws:s3:::log-?/*.csv", "arn:aws:s3:::t*"])))
    assert policy.allows("s3:GetObject", "log-1/a/b/c.csv")
    assert not policy.allows("s3:GetObject", "log-12/a.csv")
    assert not policy.allows("s3:GetObject", "log-1/a.json")
    assert policy.allows("s3:GetObject", "tmp/anything/at/all")  # a '*' in the bucket part spans '/'
    assert not policy.allows("s3:GetObject", "Tmp/x")  # resources are case-sensitive
    assert AccessPolicy.parse(doc(allow("S3:GETOBJECT", "*"))).allows("s3:GetObject", "b/k")  # actions are not
    literal = AccessPolicy.parse(doc(allow("s3:GetObject", "arn:aws:s3:::b/[ab]*")))  # no fnmatch sets in IAM
    assert literal.allows("s3:GetObject", "b/[ab]x") and not literal.allows("s3:GetObject", "b/ax")
    with pytest.raises(InvalidArgument, match="matches no action"):
        AccessPolicy.parse(doc(allow("s3:[GP]utObject", "*")))


def test_list_all_my_buckets_is_matched_only_by_a_star_resource() -> None:
    assert AccessPolicy.parse(doc(allow("s3:ListAllMyBuckets", "arn:aws:s3:::*"))).allows("s3:ListAllMyBuckets", "*")
    assert not AccessPolicy.parse(doc(allow("s3:ListAllMyBuckets", "arn:aws:s3:::b"))).allows(
        "s3:ListAllMyBuckets", "*")


def test_helpers_read_only_and_for_bucket() -> None:
    read = AccessPolicy.read_only()
    assert all(read.allows(a, "any/thing") or read.allows(a, "any") for a in READ_ACTIONS)
    assert not read.allows("s3:PutObject", "b/k") and not read.allows("s3:DeleteBucket", "b")
    scoped = AccessPolicy.for_bucket("mine")
    assert scoped.allows("s3:PutObject", "mine/k") and scoped.allows("s3:ListBucket", "mine")
    assert not scoped.allows("s3:PutObject", "other/k") and not scoped.allows("s3:DeleteBucket", "mine")
    assert scoped.visible_buckets(["mine", "other", "minefield"]) == ["mine"]
    assert read.visible_buckets(["a", "b"]) == ["a", "b"]
    reading = AccessPolicy.for_bucket("mine", read_only=True)
    assert reading.allows("s3:GetObject", "mine/k") and not reading.allows("s3:PutObject", "mine/k")
    assert "read actions" in reading.summary() and "mine" in reading.summary()
    with pytest.raises(InvalidArgument):
        AccessPolicy.for_bucket("Not A Bucket")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.sampled_from(ACTIONS), st.sampled_from(["*", "b", "b/*", "b/x*", "c/*"])),
                min_size=1, max_size=6),
       st.sampled_from(ACTIONS), st.sampled_from(["b", "b/x1", "b/y", "c/z"]))
def test_a_matching_deny_always_wins(statements: list[tuple[bool, str, str]], action: str, resource: str) -> None:
    policy = AccessPolicy.parse(doc(*[allow(a, r if r == "*" else f"arn:aws:s3:::{r}", "Deny" if deny else "Allow")
                                      for deny, a, r in statements]))
    matching = [deny for deny, a, r in statements
                if a == action and (r == "*" or r == resource or (r.endswith("*") and resource.startswith(r[:-1])))]
    expected = "deny" if any(matching) else "allow" if matching else "implicit"
    assert policy.decide(action, resource) == expected


# Storage with the key --------------------------------------------------------

def test_the_policy_is_stored_with_the_key_and_resolved_with_it(tmp_path: Path) -> None:
    store = IdentityStore(tmp_path / "identity.db")
    try:
        keys = AccessKeys(store, LocalKeyring(tmp_path / "keys" / "keyring.json"))
        store.create_tenant("acme")
        full = keys.create("acme")
        scoped = keys.create("acme", "reports", doc(allow("s3:GetObject", "arn:aws:s3:::reports/*")))
        assert keys.lookup(full.access_key_id).policy is None
        resolved = keys.lookup(scoped.access_key_id)
        assert resolved.policy == scoped.policy and resolved.policy.allows("s3:GetObject", "reports/q1")
        listed = {info.access_key_id: info for info in keys.list("acme")}
        assert listed[full.access_key_id].scope == "full"
        assert listed[scoped.access_key_id].scope == "allow s3:GetObject on reports/*"
        with pytest.raises(InvalidArgument, match="Condition is not supported"):
            keys.create("acme", "", doc(allow("s3:GetObject", "*") | {"Condition": {}}))
        assert len(keys.list("acme")) == 2  # the refused key was never made
        with pytest.raises(InvalidArgument, match="NotAction"):  # the store refuses it too
            store.add_access_key("DWRAWKEY000000000000", "acme", "k", 1, b"w" * 60, "",
                                 json.dumps(doc({"Effect": "Allow", "NotAction": "s3:*", "Resource": "*"})))
    finally:
        store.close()


# Enforcement in the kernel ---------------------------------------------------

@pytest.fixture
def kernel(tmp_path: Path) -> Iterator[Warehouse]:
    with Warehouse(make_config(tmp_path / "data", "memory")) as warehouse:
        warehouse.create_bucket("shared")
        warehouse.create_bucket("other")
        warehouse.put("shared", "in/a", b"alpha")
        warehouse.put("other", "b", b"beta")
        yield warehouse


def keyed(policy: AccessPolicy) -> TenantContext:
    return TenantContext("default", access_key_id="DWTESTKEY00000000000", policy=policy, request_id="R1",
                         source_address="127.0.0.1")


def test_a_read_only_context_is_refused_every_write_by_the_warehouse_itself(kernel: Warehouse) -> None:
    ctx = keyed(AccessPolicy.read_only())
    assert kernel.get("shared", "in/a", tenant=ctx) == b"alpha"
    assert kernel.list("shared", tenant=ctx).keys == ["in/a"]
    assert [b.name for b in kernel.list_buckets(tenant=ctx)] == ["other", "shared"]
    refusals = [
        (lambda: kernel.put("shared", "in/a", b"overwritten", tenant=ctx), "s3:PutObject", "shared/in/a"),
        (lambda: kernel.delete("shared", "in/a", tenant=ctx), "s3:DeleteObject", "shared/in/a"),
        (lambda: kernel.copy("shared", "in/a", "shared", "in/b", tenant=ctx), "s3:PutObject", "shared/in/b"),
        (lambda: kernel.create_bucket("newone", tenant=ctx), "s3:CreateBucket", "newone"),
        (lambda: kernel.delete_bucket("other", tenant=ctx), "s3:DeleteBucket", "other"),
        (lambda: kernel.create_multipart_upload("shared", "m", tenant=ctx), "s3:PutObject", "shared/m"),
        (lambda: kernel.put_table("shared", "t", pa.table({"x": [1]}), tenant=ctx), "s3:PutObject", "shared/t"),
        (lambda: kernel.set_quota(ctx, max_bytes=1), "dwray:SetQuota", "default"),
        (lambda: kernel.stats(tenant=ctx), "dwray:GetStats", "default"),
        (lambda: kernel.rotate_keys(tenant=ctx), "dwray:RotateKeys", "default"),
    ]
    for attempt, action, resource in refusals:
        with pytest.raises(AccessDenied) as denied:
            attempt()
        assert (denied.value.action, denied.value.resource) == (action, resource)
        assert action in str(denied.value) and "Statement" not in str(denied.value)
    s3 = from_dwray_error(AccessDenied("s3:PutObject", "shared/in/a"))
    assert (s3.code, s3.status) == ("AccessDenied", 403)
    # Nothing was stored, changed or removed.
    assert kernel.get("shared", "in/a") == b"alpha"
    assert kernel.list("shared").keys == ["in/a"]
    assert [b.name for b in kernel.list_buckets()] == ["other", "shared"]
    assert kernel.list_multipart_uploads("shared").uploads == []


def test_a_prefix_scoped_context_and_a_copy_needs_both_sides(kernel: Warehouse) -> None:
    ctx = keyed(AccessPolicy.parse(doc(allow("s3:*", "arn:aws:s3:::shared/in/*"),
                                       allow("s3:ListBucket", "arn:aws:s3:::shared"))))
    kernel.put("shared", "in/b", b"bravo", tenant=ctx)
    kernel.copy("shared", "in/b", "shared", "in/c", tenant=ctx)
    with pytest.raises(AccessDenied, match="s3:PutObject"):
        kernel.put("shared", "out/x", b"no", tenant=ctx)
    with pytest.raises(AccessDenied, match="s3:GetObject"):
        kernel.copy("other", "b", "shared", "in/d", tenant=ctx)  # may write there, may not read the source
    with pytest.raises(AccessDenied, match="s3:PutObject"):
        kernel.copy("shared", "in/b", "other", "b2", tenant=ctx)  # may read the source, may not write there
    with pytest.raises(AccessDenied, match="s3:ListBucket"):
        kernel.list("other", tenant=ctx)
    with pytest.raises(AccessDenied, match="s3:GetBucketVersioning"):  # checked as itself, not as a HEAD
        kernel.bucket_versioning("shared", tenant=ctx)
    with pytest.raises(AccessDenied, match="s3:ListBucketMultipartUploads"):
        kernel.list_multipart_uploads("shared", tenant=ctx)
    assert kernel.head_bucket("shared", tenant=ctx).name == "shared"
    assert kernel.list("shared", tenant=ctx).keys == ["in/a", "in/b", "in/c"]
    assert [b.name for b in kernel.list_buckets(tenant=ctx)] == ["shared"]
    assert kernel.list("other").keys == ["b"]
    hidden = keyed(AccessPolicy.parse(doc(allow("s3:*", "*"), allow("s3:ListAllMyBuckets", "*", effect="Deny"))))
    with pytest.raises(AccessDenied, match="s3:ListAllMyBuckets"):  # only an explicit Deny refuses ListBuckets
        kernel.list_buckets(tenant=hidden)
    assert kernel.bucket_location("other", tenant=hidden).name == "other"


def test_every_operation_is_audited_once_allowed_denied_or_failed(kernel: Warehouse) -> None:
    records: list[tuple[str, str, str, str | None]] = []
    kernel.audit_access = lambda ctx, action, resource, outcome, error: records.append(  # type: ignore[attr-defined]
        (ctx.access_key_id, action, resource, outcome, type(error).__name__ if error else None))
    # Every record through the one hook: no write's record goes ahead to the log on its own
    # (test_audit_log covers the records written ahead).
    kernel.audit_ahead = lambda ctx, checks: None  # type: ignore[attr-defined]
    ctx = keyed(AccessPolicy.for_bucket("shared"))
    kernel.copy("shared", "in/a", "shared", "in/z", tenant=ctx)
    with pytest.raises(AccessDenied):
        kernel.get("other", "b", tenant=ctx)
    with pytest.raises(Exception, match="does not exist"):
        kernel.get("shared", "missing", tenant=ctx)
    kernel.put("other", "driver", b"x")
    key = "DWTESTKEY00000000000"
    assert records == [
        (key, "s3:GetObject", "shared/in/a", "allowed", None),  # the copy: once per side, its inner read
        (key, "s3:PutObject", "shared/in/z", "allowed", None),  # not again
        (key, "s3:GetObject", "other/b", "denied", "AccessDenied"),
        (key, "s3:GetObject", "shared/missing", "error", "ObjectNotFound"),
        (None, "s3:PutObject", "other/driver", "allowed", None),
    ]


def test_keys_made_before_policies_keep_full_rights_after_the_migration(tmp_path: Path) -> None:
    import sqlite3

    from dwray.core.identity import MIGRATIONS

    path = tmp_path / "identity.db"
    with sqlite3.connect(path) as db:  # a store as the previous schema (version 2) left it
        for script in MIGRATIONS[:2]:
            db.executescript(script)
        db.execute("INSERT INTO tenants VALUES ('acme', 0, '')")
        db.execute("INSERT INTO access_keys VALUES ('DWOLDKEY000000000000', 'acme', 0, NULL, '', 'k', 1, x'00')")
        db.execute("PRAGMA user_version=2")
    db.close()
    store = IdentityStore(path)
    try:
        assert store.get_access_key("DWOLDKEY000000000000").policy is None
        assert [info.scope for info in store.list_access_keys("acme")] == ["full"]
    finally:
        store.close()
