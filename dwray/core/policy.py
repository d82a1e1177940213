"""Access key policies: what an S3 access key may do, in the subset of IAM policy JSON dwray supports.

A key without a policy has its tenant's full rights. A key with one may do
only what the policy allows, evaluated as IAM does: an explicit ``Deny`` that
matches wins; otherwise an ``Allow`` must match; otherwise the action is
denied. The kernel checks it on every operation (``dwray.core.warehouse.access``).

The supported subset (anything else is refused when the policy is parsed,
with an error naming the element, never silently ignored)::

    {"Version": "2012-10-17",                      required, exactly this
     "Id": "...",                                  optional, kept
     "Statement": [                                one statement or a list (1 to 100)
       {"Sid": "...",                              optional, kept
        "Effect": "Allow" | "Deny",
        "Action": "s3:GetObject" | [...],          names in ACTIONS; "*" and "?" wildcards
                                                   ("s3:*", "s3:Get*"), case-insensitive as in IAM;
                                                   a pattern that matches no known action is refused
        "Resource": "*" | "arn:aws:s3:::bucket" | "arn:aws:s3:::bucket/prefix*" | [...]}]}
                                                   "*" and "?" wildcards, case-sensitive; "*" spans "/"

Refused: ``NotAction``, ``NotResource``, ``Principal``, ``NotPrincipal``,
``Condition``, policy variables (``${aws:username}``), ARNs of other services,
partitions, regions or accounts, and any other key. At most 20 KiB of JSON.

Resources are matched as IAM matches S3 ARNs: object actions name
``bucket/key``, bucket actions (``s3:ListBucket``, ``s3:CreateBucket``...) name
``bucket``, and ``s3:ListAllMyBuckets`` names ``*`` (only ``"*"`` or
``arn:aws:s3:::*`` match it). ``s3:ListBucket`` is checked on the bucket alone
(IAM's ``s3:prefix`` condition is not supported), so a key whose objects are
limited to a prefix lists the whole bucket only when it is also granted
``s3:ListBucket`` on the bucket ARN.
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from dwray.errors import InvalidArgument

__all__ = ["ACTIONS", "MAX_POLICY_BYTES", "MAX_STATEMENTS", "READ_ACTIONS", "AccessPolicy", "Decision",
           "PolicyStatement"]

#: The S3 actions a policy may name, with IAM's spelling.
ACTIONS: tuple[str, ...] = (
    "s3:AbortMultipartUpload", "s3:CreateBucket", "s3:DeleteBucket", "s3:DeleteObject", "s3:DeleteObjectTagging",
    "s3:DeleteObjectVersion", "s3:DeleteObjectVersionTagging", "s3:GetBucketAcl", "s3:GetBucketLocation",
    "s3:GetBucketNotification", "s3:GetBucketVersioning", "s3:GetObject", "s3:GetObjectAcl", "s3:GetObjectTagging",
    "s3:GetObjectVersion", "s3:GetObjectVersionAcl", "s3:GetObjectVersionTagging", "s3:ListAllMyBuckets",
    "s3:ListBucket", "s3:ListBucketMultipartUploads", "s3:ListBucketVersions", "s3:ListMultipartUploadParts",
    "s3:PutBucketAcl", "s3:PutBucketNotification", "s3:PutBucketVersioning", "s3:PutObject", "s3:PutObjectAcl",
    "s3:PutObjectTagging", "s3:PutObjectVersionAcl", "s3:PutObjectVersionTagging",
)
#: What ``AccessPolicy.read_only`` grants: reads and listings, nothing that changes data.
READ_ACTIONS: tuple[str, ...] = (
    "s3:GetBucketAcl", "s3:GetBucketLocation", "s3:GetBucketVersioning", "s3:GetObject", "s3:GetObjectAcl",
    "s3:GetObjectTagging", "s3:GetObjectVersion", "s3:GetObjectVersionAcl", "s3:GetObjectVersionTagging",
    "s3:ListAllMyBuckets", "s3:ListBucket", "s3:ListBucketMultipartUploads", "s3:ListBucketVersions",
    "s3:ListMultipartUploadParts",
)
VERSION = "2012-10-17"
MAX_POLICY_BYTES = 20 * 1024
MAX_STATEMENTS = 100
MAX_ENTRIES = 100  # actions or resources in one statement
ARN_PREFIX = "arn:aws:s3:::"
_ACTIONS_BY_LOWER = {name.lower(): name for name in ACTIONS}
_POLICY_KEYS = frozenset({"Version", "Id", "Statement"})
_STATEMENT_KEYS = frozenset({"Sid", "Effect", "Action", "Resource"})
_REFUSED_KEYS = {
    "NotAction": "NotAction is not supported: list the allowed actions in Action",
    "NotResource": "NotResource is not supported: list the resources in Resource",
    "Principal": "Principal is not supported: a key policy applies to its own key",
    "NotPrincipal": "NotPrincipal is not supported: a key policy applies to its own key",
    "Condition": "Condition is not supported (no s3:prefix or other condition keys)",
}

Decision = Literal["allow", "deny", "implicit"]


def _pattern(text: str) -> re.Pattern[str]:
    """IAM's wildcards as a regex: ``*`` any run of characters (``/`` included), ``?`` one character,
    everything else literal (not ``fnmatch``, whose ``[...]`` IAM does not have)."""
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in text), re.DOTALL)


def _strings(value: Any, where: str) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(item, str) and item for item in items):
        raise InvalidArgument(f"policy {where} must be a non-empty string or a non-empty list of strings")
    if len(items) > MAX_ENTRIES:
        raise InvalidArgument(f"policy {where} lists {len(items)} entries; at most {MAX_ENTRIES} are allowed")
    return items


def _actions(value: Any, where: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The action names the patterns of ``value`` match, and the patterns as given."""
    found: list[str] = []
    patterns = _strings(value, f"{where} Action")
    for text in patterns:
        if "$" in text:
            raise InvalidArgument(f"policy {where} Action {text!r}: policy variables are not supported")
        if text == "*":
            text = "s3:*"
        if not text.lower().startswith("s3:"):
            raise InvalidArgument(f"policy {where} Action {text!r}: only S3 actions ('s3:...') are supported")
        wanted = _pattern(text.lower())
        matched = [name for lower, name in _ACTIONS_BY_LOWER.items() if wanted.fullmatch(lower)]
        if not matched:
            raise InvalidArgument(f"policy {where} Action {text!r} matches no action dwray supports "
                                  f"(supported: {', '.join(ACTIONS)})")
        found.extend(name for name in matched if name not in found)
    return tuple(found), tuple(patterns)


def _resources(value: Any, where: str) -> tuple[str, ...]:
    found: list[str] = []
    for text in _strings(value, f"{where} Resource"):
        if "${" in text:
            raise InvalidArgument(f"policy {where} Resource {text!r}: policy variables are not supported")
        if text == "*":
            pattern = "*"
        elif text.startswith(ARN_PREFIX) and len(text) > len(ARN_PREFIX):
            pattern = text[len(ARN_PREFIX):]
        else:
            raise InvalidArgument(f"policy {where} Resource {text!r} is not supported: use '*', "
                                  f"'{ARN_PREFIX}BUCKET' or '{ARN_PREFIX}BUCKET/KEY-PATTERN'")
        if pattern not in found:
            found.append(pattern)
    return tuple(found)


@dataclass(frozen=True)
class PolicyStatement:
    """One statement: its effect, the actions it names (wildcards resolved), its resource patterns
    (``*``, ``bucket``, ``bucket/prefix*``: the ARN without ``arn:aws:s3:::``) and the action
    patterns as written (kept for ``to_json``; none means ``actions`` themselves)."""

    effect: Literal["Allow", "Deny"]
    actions: tuple[str, ...]
    resources: tuple[str, ...]
    sid: str | None = None
    action_patterns: tuple[str, ...] = ()
    compiled: tuple[re.Pattern[str], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "compiled", tuple(_pattern(r) for r in self.resources))

    def matches(self, action: str, resource: str) -> bool:
        return action in self.actions and any(p.fullmatch(resource) for p in self.compiled)

    def names_bucket(self, bucket: str) -> bool:
        """Whether a resource pattern could match the bucket or an object in it."""
        for resource, compiled in zip(self.resources, self.compiled):
            if compiled.fullmatch(bucket) or _pattern(resource.split("/", 1)[0]).fullmatch(bucket):
                return True
        return False

    def document(self) -> dict[str, Any]:
        out: dict[str, Any] = {"Sid": self.sid} if self.sid else {}
        out["Effect"] = self.effect
        out["Action"] = list(self.action_patterns or self.actions)
        out["Resource"] = [r if r == "*" else ARN_PREFIX + r for r in self.resources]
        return out


@dataclass(frozen=True)
class AccessPolicy:
    """A parsed key policy. Frozen and hashable, so it rides in a frozen ``TenantContext``."""

    statements: tuple[PolicyStatement, ...]
    policy_id: str | None = None

    # Parsing ---------------------------------------------------------------------

    @classmethod
    def parse(cls, source: str | bytes | Mapping[str, Any]) -> AccessPolicy:
        """A policy from its JSON text or decoded document; ``InvalidArgument`` naming what is unsupported."""
        if isinstance(source, (str, bytes)):
            size = len(source.encode("utf-8", "surrogatepass") if isinstance(source, str) else source)
            if size > MAX_POLICY_BYTES:
                raise InvalidArgument(f"a policy may be at most {MAX_POLICY_BYTES} bytes of JSON, this one is {size}")
            try:
                document = json.loads(source)
            except (ValueError, UnicodeDecodeError) as error:
                raise InvalidArgument(f"a policy must be JSON: {error}") from None
        else:
            document = source
            if len(json.dumps(document, default=str)) > MAX_POLICY_BYTES:
                raise InvalidArgument(f"a policy may be at most {MAX_POLICY_BYTES} bytes of JSON")
        if not isinstance(document, Mapping):
            raise InvalidArgument("a policy must be a JSON object with Version and Statement")
        unknown = sorted(set(document) - _POLICY_KEYS)
        if unknown:
            raise InvalidArgument(f"policy element {unknown[0]!r} is not supported (supported: Version, Id, "
                                  "Statement)")
        if document.get("Version") != VERSION:
            raise InvalidArgument(f"policy Version must be {VERSION!r}, not {document.get('Version')!r}")
        policy_id = document.get("Id")
        if policy_id is not None and not isinstance(policy_id, str):
            raise InvalidArgument("policy Id must be a string")
        raw = document.get("Statement")
        statements = [raw] if isinstance(raw, Mapping) else raw
        if not isinstance(statements, list) or not statements:
            raise InvalidArgument("policy Statement must be a statement object or a non-empty list of them")
        if len(statements) > MAX_STATEMENTS:
            raise InvalidArgument(f"a policy may have at most {MAX_STATEMENTS} statements, "
                                  f"this one has {len(statements)}")
        return cls(tuple(_statement(s, n) for n, s in enumerate(statements, 1)), policy_id)

    @classmethod
    def read_only(cls) -> AccessPolicy:
        """Reads and listings of every bucket of the tenant."""
        return cls((PolicyStatement("Allow", READ_ACTIONS, ("*",), "ReadOnly"),))

    @classmethod
    def for_bucket(cls, bucket: str, *, read_only: bool = False) -> AccessPolicy:
        """Everything (or, ``read_only``, reads and listings) on one bucket and its objects, nothing elsewhere.

        Creating and deleting the bucket itself are not granted; listing
        buckets shows this one only (``s3:ListAllMyBuckets`` is not granted).
        """
        from dwray.core.names import validate_bucket_name

        validate_bucket_name(bucket)
        actions = READ_ACTIONS if read_only else ACTIONS
        scoped = tuple(a for a in actions if a not in ("s3:ListAllMyBuckets", "s3:CreateBucket", "s3:DeleteBucket"))
        return cls((PolicyStatement("Allow", scoped, (bucket, f"{bucket}/*"),
                                    "ReadOnlyBucket" if read_only else "Bucket"),))

    # Output ----------------------------------------------------------------------

    def document(self) -> dict[str, Any]:
        out: dict[str, Any] = {"Version": VERSION}
        if self.policy_id is not None:
            out["Id"] = self.policy_id
        out["Statement"] = [s.document() for s in self.statements]
        return out

    def to_json(self) -> str:
        """The policy as IAM JSON (actions as written, wildcards included), compact."""
        return json.dumps(self.document(), separators=(",", ":"))

    def summary(self) -> str:
        """One line for key listings: ``allow s3:GetObject,... on b/*; deny ...``."""
        parts = []
        for s in self.statements:
            actions = ",".join(s.action_patterns or s.actions)
            if len(actions) > 60:
                named = set(s.actions)
                actions = ("every action" if named == set(ACTIONS) else
                           "read actions" if named <= set(READ_ACTIONS) else
                           "every action but bucket creation, deletion and listing"
                           if named == set(ACTIONS) - {"s3:CreateBucket", "s3:DeleteBucket", "s3:ListAllMyBuckets"}
                           else f"{len(named)} actions")
            parts.append(f"{s.effect.lower()} {actions} on {','.join(s.resources)}")
        return "; ".join(parts)

    # Evaluation ------------------------------------------------------------------

    def decide(self, action: str, resource: str) -> Decision:
        """IAM's answer: ``deny`` if a Deny matches, else ``allow`` if an Allow matches, else ``implicit``."""
        allowed = False
        for statement in self.statements:
            if statement.matches(action, resource):
                if statement.effect == "Deny":
                    return "deny"
                allowed = True
        return "allow" if allowed else "implicit"

    def allows(self, action: str, resource: str) -> bool:
        return self.decide(action, resource) == "allow"

    def names_bucket(self, bucket: str) -> bool:
        """Whether some Allow statement could grant anything on the bucket or its objects
        (what a key without ``s3:ListAllMyBuckets`` sees in ListBuckets)."""
        return any(s.effect == "Allow" and s.names_bucket(bucket) for s in self.statements)

    def visible_buckets(self, names: Iterable[str]) -> list[str]:
        """``names`` filtered to those ListBuckets shows this key."""
        if self.allows("s3:ListAllMyBuckets", "*"):
            return list(names)
        return [name for name in names if self.names_bucket(name)]


def _statement(raw: Any, number: int) -> PolicyStatement:
    where = f"statement {number}"
    if not isinstance(raw, Mapping):
        raise InvalidArgument(f"policy {where} must be an object")
    for key in raw:
        if key in _REFUSED_KEYS:
            raise InvalidArgument(f"policy {where}: {_REFUSED_KEYS[key]}")
        if key not in _STATEMENT_KEYS:
            raise InvalidArgument(f"policy {where}: element {key!r} is not supported "
                                  "(supported: Sid, Effect, Action, Resource)")
    sid = raw.get("Sid")
    if sid is not None and not isinstance(sid, str):
        raise InvalidArgument(f"policy {where} Sid must be a string")
    effect = raw.get("Effect")
    if effect not in ("Allow", "Deny"):
        raise InvalidArgument(f"policy {where} Effect must be 'Allow' or 'Deny', not {effect!r}")
    for required in ("Action", "Resource"):
        if required not in raw:
            raise InvalidArgument(f"policy {where} has no {required}")
    actions, patterns = _actions(raw["Action"], where)
    return PolicyStatement(effect, actions, _resources(raw["Resource"], where), sid, patterns)
