"""Access key policies enforced in the kernel: every public warehouse operation checks its caller's policy.

``@checked(rule)`` wraps an operation. ``rule`` maps its arguments to the
(IAM action, resource) pairs it needs: one for most, two for a copy (read the
source, write the destination). Before the operation runs, the caller's
``TenantContext.policy`` must allow each of them (``None``, a driver or a key
without a policy, allows everything: one attribute check); otherwise
``AccessDenied`` names the first refused pair and nothing is done. Then,
allowed or denied, succeeded or failed, each pair goes to the warehouse's
``audit_access(ctx, action, resource, outcome, error)`` hook, if it has one,
before the call returns or raises (``outcome`` ``allowed``, ``denied`` or
``error``; a denial records only the refused pair).

A write's ``allowed`` records are written ahead: the warehouse's
``audit_ahead(ctx, pairs)`` hook starts appending them durably as the
operation starts, and the operation's result waits for both, so the audit
log's round trip overlaps the catalog's instead of following it. A write
that then fails adds an ``error`` record after its ``allowed`` one. Reads are
recorded after they ran, as before.

An operation that calls another (a copy opens its source, ``get_table`` reads
its object) is checked and audited once, as the outer operation: calls made
while one is running on the same thread are not checked again.

Resources as IAM has them for S3: ``bucket/key`` for object actions,
``bucket`` for bucket actions (``s3:ListBucket`` included; see
``dwray.core.policy`` for prefix-scoped keys), ``*`` for ListBuckets. The
actions, as AWS checks them: HeadBucket and listing keys need
``s3:ListBucket``; reads and HEADs ``s3:GetObject`` (``s3:GetObjectVersion``
when a version is named); puts, multipart creation, parts and completion
``s3:PutObject``; deletes ``s3:DeleteObject`` (``s3:DeleteObjectVersion``);
``s3:AbortMultipartUpload``, ``s3:ListMultipartUploadParts``,
``s3:ListBucketMultipartUploads``, ``s3:ListBucketVersions``,
``s3:GetBucketLocation`` and ``s3:GetBucketVersioning`` for their operations.
ListBuckets is refused only by an explicit Deny; without ``s3:ListAllMyBuckets``
it lists the buckets the policy names (``Buckets.list_buckets``).
Administration (KEK rotation, rewrap, retirement, sweeps, stats, quotas) is
for operators: any caller with a policy is refused it (``dwray:<operation>``
on the tenant, or on ``*`` when it spans every tenant).
"""
from __future__ import annotations

import contextvars
import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from dwray.core.models import TenantContext
from dwray.core.names import validate_bucket_name, validate_key
from dwray.errors import AccessDenied

__all__ = ["bucket_rule", "checked", "copy_rule", "delete_rule", "object_rule", "operator_only", "read_rule",
           "within_operation"]

_F = TypeVar("_F", bound=Callable[..., Any])
Check = tuple[str, str]
Rule = Callable[[Mapping[str, Any]], list[Check]]

# Set while a checked operation runs: the calls it makes are its own parts, not new accesses.
_running: contextvars.ContextVar[bool] = contextvars.ContextVar("dwray_operation_running", default=False)


def within_operation() -> bool:
    """Whether a checked operation is running on this thread (its inner calls are not checked again)."""
    return _running.get()


# The rules check the names they build resources from (as the operations would, a moment later),
# so a policy is only ever matched against, and the audit log only ever given, valid names.

def _object(bucket: Any, key: Any) -> str:
    return f"{validate_bucket_name(bucket)}/{validate_key(key)}"


def bucket_rule(action: str) -> Rule:
    """``action`` on the bucket named by the ``bucket`` argument."""
    return lambda args: [(action, validate_bucket_name(args["bucket"]))]


def object_rule(action: str) -> Rule:
    """``action`` on ``bucket/key``."""
    return lambda args: [(action, _object(args["bucket"], args["key"]))]


def read_rule(version_arg: str = "version_id", *, action: str = "s3:GetObject") -> Rule:
    """``action`` on an object (reading it: ``s3:GetObject``), or its version form when a version is named
    (``s3:GetObjectVersion``, ``s3:GetObjectVersionTagging``, ``s3:PutObjectVersionAcl``, as IAM spells them)."""
    versioned = action.replace("Object", "ObjectVersion", 1)
    return lambda args: [(versioned if args.get(version_arg) else action, _object(args["bucket"], args["key"]))]


def delete_rule(args: Mapping[str, Any]) -> list[Check]:
    """Deleting a key (``s3:DeleteObject``) or one of its versions for good (``s3:DeleteObjectVersion``)."""
    return [("s3:DeleteObjectVersion" if args.get("version_id") else "s3:DeleteObject",
             _object(args["bucket"], args["key"]))]


def copy_rule(src_version_arg: str) -> Rule:
    """A copy: read the source (``src_bucket/src_key``), then write the destination (``s3:PutObject``)."""
    def rule(args: Mapping[str, Any]) -> list[Check]:
        dst_bucket, dst_key = (args["dst_bucket"], args["dst_key"]) if "dst_bucket" in args \
            else (args["bucket"], args["key"])
        read = "s3:GetObjectVersion" if args.get(src_version_arg) else "s3:GetObject"
        return [(read, _object(args["src_bucket"], args["src_key"])), ("s3:PutObject", _object(dst_bucket, dst_key))]
    return rule


def _operator_rule(operation: str) -> Rule:
    return lambda args: [(f"dwray:{operation}", str(args["tenant"]))]


def operator_only(operation: str) -> Callable[[_F], _F]:
    """An operator's operation (``dwray:<operation>`` on the tenant, ``*`` for every tenant): refused
    to any caller with a policy, whatever the policy says; audited like the others."""
    return checked(_operator_rule(operation), operator=True)


def _context(warehouse: Any, tenant: Any, operator: bool) -> TenantContext:
    """The context of an operation's ``tenant`` argument. An operator's ``"*"`` (every tenant) is
    audited as the operator acting in the default tenant, on resource ``*``."""
    if operator and tenant == "*":
        return TenantContext(warehouse.config.default_tenant, principal="operator")
    return warehouse._tenant(tenant)


def checked(rule: Rule, *, operator: bool = False, list_buckets: bool = False) -> Callable[[_F], _F]:
    """Check the caller's policy against ``rule``'s (action, resource) pairs, run, audit (see the module).

    ``operator``: any policy refuses. ``list_buckets``: only an explicit Deny
    refuses (the operation filters what it lists).
    """
    def decorate(method: _F) -> _F:
        signature = inspect.signature(method)
        takes_tenant = "tenant" in signature.parameters

        @functools.wraps(method)
        def run(self: Any, *args: Any, **kwargs: Any) -> Any:
            if _running.get():
                return method(self, *args, **kwargs)
            bound = signature.bind(self, *args, **kwargs)
            bound.apply_defaults()
            arguments = bound.arguments
            every_tenant = operator and (not takes_tenant or arguments.get("tenant") == "*")
            ctx = _context(self, "*" if every_tenant else arguments.get("tenant"), operator)
            if not every_tenant:
                arguments["tenant"] = ctx  # resolved once: the operation gets this very context
            checks = rule({**arguments, "tenant": "*" if every_tenant else ctx.tenant})
            audit = getattr(self, "audit_access", None)
            policy = ctx.policy
            if policy is not None:
                for action, resource in checks:
                    if operator:
                        refused = True
                    elif list_buckets:
                        refused = policy.decide(action, resource) == "deny"
                    else:
                        refused = not policy.allows(action, resource)
                    if refused:
                        error = AccessDenied(action, resource)
                        if audit is not None:
                            audit(ctx, action, resource, "denied", error)
                        raise error
            ahead = getattr(self, "audit_ahead", None)
            written_ahead = ahead(ctx, checks) if ahead is not None and audit is not None else None
            token = _running.set(True)
            try:
                result = method(*bound.args, **bound.kwargs)
            except BaseException as error:
                if written_ahead is not None:
                    written_ahead.settle()
                _audit_all(audit, ctx, checks, "error", error)
                raise
            finally:
                _running.reset(token)
            if written_ahead is not None:
                written_ahead.result()  # the write's records are durable before it is acknowledged
                _audit_all(audit, ctx, [pair for pair in checks if pair not in written_ahead.pairs], "allowed", None)
            else:
                _audit_all(audit, ctx, checks, "allowed", None)
            return result
        return run  # type: ignore[return-value]
    return decorate


def _audit_all(audit: Callable[..., Any] | None, ctx: TenantContext, checks: list[Check], outcome: str,
               error: BaseException | None) -> None:
    if audit is None:
        return
    for action, resource in checks:
        audit(ctx, action, resource, outcome, error)
