"""The admin API: JSON under ``/admin``, behind its own bearer tokens.

Tenants (create, list, delete, crypto-shred), access keys (create, list,
revoke), admin tokens (create, list, revoke), plugin status and restart, key
rotation, and quotas (``/admin/quotas``). FastAPI derives the OpenAPI schema (``/admin/openapi.json``)
from the models here. An access key's secret and an admin token each appear in
exactly one response: the one that creates it.

Every request needs ``Authorization: Bearer <admin token>``; a missing,
unknown, revoked or expired token gets 401 (an expired one says so, naming
the token and when it expired, never the token itself).
"""
from __future__ import annotations

import asyncio
import hmac
import json
from datetime import datetime, timezone
from functools import partial
from typing import Any, Callable

import ray
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from dwray.core.access_keys import parse_expiry
from dwray.core.catalog.quotas import LIMITS, parse_limit
from dwray.core.identity import AdminTokenInfo, TenantHasActiveKeys
from dwray.core.warehouse.tenants import ShredReport, TenantHasBuckets, shred_tenant
from dwray.errors import AlreadyExists, DwrayError, InvalidArgument, NotFound
from serve_apps.context import GatewayContext, current
from serve_apps.edge_audit import AuditedRoute

__all__ = ["router", "admin_error"]


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorOut(BaseModel):
    """The body of every admin error (:func:`admin_error`)."""

    error: ErrorDetail


# Documented on every operation, so the schema names every answer a client can get (the fuzz tests check it).
_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorOut, "description": description} for status, description in (
        (400, "invalid argument"), (401, "no valid admin token"), (404, "not found"),
        (409, "conflict: already exists, or not empty"),
        (503, "the gateway is shutting down, a part of the warehouse does not answer, or too many failed "
              "authentications from the address (SlowDown)"))}
router = APIRouter(prefix="/admin", tags=["admin"], responses=_ERRORS, route_class=AuditedRoute)


class AdminError(Exception):
    """An admin request that fails: HTTP status, code and message."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(code, message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


def admin_error(error: AdminError) -> JSONResponse:
    return JSONResponse({"error": {"code": error.code, "message": error.message}}, status_code=error.status,
                        headers=error.headers)


def _from_dwray(error: DwrayError) -> AdminError:
    if isinstance(error, (TenantHasBuckets, TenantHasActiveKeys)):
        return AdminError(409, "TenantNotEmpty", str(error))
    if isinstance(error, NotFound):
        return AdminError(404, type(error).__name__, str(error))
    if isinstance(error, AlreadyExists):
        return AdminError(409, type(error).__name__, str(error))
    if isinstance(error, (InvalidArgument, ValueError)):
        return AdminError(400, type(error).__name__, str(error))
    return AdminError(503, type(error).__name__, str(error))


async def _run(ctx: GatewayContext, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    try:
        return await asyncio.get_running_loop().run_in_executor(ctx.executor, partial(fn, *args, **kwargs))
    except DwrayError as error:
        raise _from_dwray(error) from None


async def admin_context(request: Request) -> GatewayContext:
    """The replica's context, once the request's bearer token is an admin token."""
    ctx = current()
    if ctx.draining:
        raise AdminError(503, "ServiceUnavailable", "the gateway is shutting down")
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if not hmac.compare_digest(scheme.lower(), "bearer") or not token.strip():
        raise AdminError(401, "Unauthorized", "send an admin token as 'Authorization: Bearer <token>'",
                         {"WWW-Authenticate": 'Bearer realm="dwray-admin"'})
    info = await asyncio.get_running_loop().run_in_executor(ctx.executor, ctx.find_admin_token, token.strip())
    invalid = {"WWW-Authenticate": 'Bearer realm="dwray-admin", error="invalid_token"'}
    if info is None:
        raise AdminError(401, "Unauthorized", "the admin token is not valid (unknown or revoked)", invalid)
    if info.expired():
        raise AdminError(401, "TokenExpired", f"the admin token {info.name!r} expired at {_iso(info.expires)}; "
                         "ask for a new one ('dw admin-token create')", invalid)
    request.state.admin_token = info.name  # who, for the audit record (serve_apps.edge_audit)
    return ctx


Admin = Depends(admin_context)


class TenantIn(BaseModel):
    name: str = Field(description="tenant name: 3-63 lowercase letters, digits and hyphens")
    description: str = Field("", max_length=256)


class TenantOut(BaseModel):
    name: str
    created: float
    description: str = ""


class KeyIn(BaseModel):
    tenant: str
    description: str = Field("", max_length=256)
    policy: dict[str, Any] | None = Field(None, description="IAM policy JSON limiting the key (the subset in "
                                                            "dwray.core.policy); none: the tenant's full rights")


class KeyOut(BaseModel):
    access_key_id: str
    tenant: str
    created: float
    description: str = ""
    revoked: bool = False
    scope: str = Field("full", description="'full', or a summary of the key's policy")
    policy: dict[str, Any] | None = None


class NewKeyOut(BaseModel):
    access_key_id: str
    secret_access_key: str = Field(description="shown once; dwray keeps it only wrapped under a KEK")
    tenant: str
    scope: str = "full"


class AdminTokenIn(BaseModel):
    name: str = Field(description="1-64 letters, digits, '.', '_', '@' or '-'; unique")
    expires: str | None = Field(None, description="a duration counted by the gateway's clock ('30d', '12h') "
                                                  "or an ISO 8601 time ('2030-01-31T18:00Z'); none: never")
    description: str = Field("", max_length=256)
    replace: bool = Field(False, description="revoke the token that has this name now, in the same step")


class AdminTokenOut(BaseModel):
    name: str
    id: str
    created: float
    expires: float | None = None
    last_used: float | None = Field(None, description="to the minute; none: never used")
    expired: bool = False
    description: str = ""


class NewAdminTokenOut(AdminTokenOut):
    token: str = Field(description="shown once; dwray keeps only its SHA-256")


class ShredOut(BaseModel):
    tenant: str
    kek_id: str
    kek_versions_destroyed: list[int]
    access_keys_removed: int
    buckets_removed: list[str]
    object_versions_removed: int
    blobs_deleted: int


class RotationOut(BaseModel):
    tenant: str
    kek_version: int
    rewrapped: int


def _tenant(info: Any) -> TenantOut:
    return TenantOut(name=info.name, created=info.created, description=getattr(info, "description", "") or "")


def _admin_token(info: AdminTokenInfo) -> dict[str, Any]:
    return {"name": info.name, "id": info.token_id, "created": info.created, "expires": info.expires,
            "last_used": info.last_used, "expired": info.expired(), "description": info.description}


def _iso(moment: float | None) -> str:
    return "never" if moment is None else datetime.fromtimestamp(moment, timezone.utc).isoformat(timespec="seconds")


def _key(info: Any) -> KeyOut:
    policy = getattr(info, "policy", None)
    return KeyOut(access_key_id=info.access_key_id, tenant=info.tenant, created=info.created,
                  description=getattr(info, "description", "") or "", revoked=bool(getattr(info, "revoked", False)),
                  scope=info.scope, policy=None if policy is None else json.loads(policy))


@router.get("/tenants", response_model=list[TenantOut])
async def list_tenants(ctx: GatewayContext = Admin) -> list[TenantOut]:
    return [_tenant(info) for info in await _run(ctx, ctx.identity.list_tenants)]


@router.post("/tenants", response_model=TenantOut, status_code=201)
async def create_tenant(body: TenantIn, ctx: GatewayContext = Admin) -> TenantOut:
    info = await _run(ctx, ctx.identity.create_tenant, body.name, body.description)
    ctx.identities_changed()
    return _tenant(info)


@router.get("/tenants/{name}", response_model=TenantOut)
async def get_tenant(name: str, ctx: GatewayContext = Admin) -> TenantOut:
    return _tenant(await _run(ctx, ctx.identity.get_tenant, name))


@router.delete("/tenants/{name}", status_code=204)
async def delete_tenant(name: str, ctx: GatewayContext = Admin) -> None:
    """Delete a tenant that holds nothing.

    Storage and keys are found by tenant name, so a tenant deleted with data
    left would hand that data to the next tenant created with its name. Hence
    409 ``TenantNotEmpty`` while the tenant owns any bucket (its objects and
    open multipart uploads live in buckets) or has active access keys: empty
    and delete its buckets and revoke its keys first. The default tenant is
    never deleted (409 too). 404 if there is no such tenant.
    """
    if name == ctx.config.default_tenant:
        raise AdminError(409, "TenantNotEmpty", f"tenant {name!r} is the default tenant and cannot be deleted")
    await _run(ctx, ctx.identity.get_tenant, name)
    buckets = await _run(ctx, ctx.warehouse.list_buckets, tenant=name)
    if buckets:
        raise AdminError(409, "TenantNotEmpty", _still_holds(name, [bucket.name for bucket in buckets]))
    # A bucket needs an active key to be created, and the store refuses the delete
    # (atomically) while the tenant has one, so no bucket can appear after the check above
    # unless a key is revoked concurrently with this request.
    await _run(ctx, ctx.identity.delete_tenant, name)  # 409 TenantNotEmpty while it has active keys
    await _run(ctx, ctx.warehouse.set_quota, name, None, max_bytes=None, max_objects=None, max_buckets=None)
    # The tenant's KEK stays in the keyring and a tenant created later with the same
    # name reuses it. That is harmless: no data wrapped under it remains. (A shred
    # destroys the KEK instead, and the name goes with it.)
    ctx.identities_changed()


@router.post("/tenants/{name}/shred", response_model=ShredOut)
async def shred(name: str, force: bool = False, ctx: GatewayContext = Admin) -> ShredOut:
    """Crypto-shred a tenant: remove it and its access keys, destroy every version of its KEK.

    Afterwards none of its data can be decrypted by anyone, from the store or
    from any copy. 409 ``TenantNotEmpty`` while it owns buckets, unless
    ``force=true``: then its buckets go too, with every object version and
    upload in them, and its blobs are deleted. Its name can never be used
    again. 404 if there is no such tenant; 409 for the default tenant. A shred
    that stopped half-way (503 ``ShredIncomplete``) finishes when run again.
    """
    if name == ctx.config.default_tenant:
        raise AdminError(409, "TenantNotEmpty", f"tenant {name!r} is the default tenant and cannot be shredded")
    try:
        report: ShredReport = await _run(ctx, shred_tenant, ctx.warehouse, ctx.identity, name, force=force)
    finally:
        # Whatever part was done, its keys may be gone: no replica may keep them cached.
        ctx.identities_changed()
    return ShredOut(**report.as_json())


def _still_holds(name: str, buckets: list[str]) -> str:
    shown = ", ".join(repr(bucket) for bucket in buckets[:5])
    more = f" and {len(buckets) - 5} more" if len(buckets) > 5 else ""
    return (f"tenant {name!r} still owns {len(buckets)} bucket(s) ({shown}{more}); "
            "delete its objects, uploads and buckets first")


@router.get("/keys", response_model=list[KeyOut])
async def list_keys(tenant: str | None = None, ctx: GatewayContext = Admin) -> list[KeyOut]:
    return [_key(info) for info in await _run(ctx, ctx.access_keys.list, tenant, include_revoked=True)]


@router.post("/keys", response_model=NewKeyOut, status_code=201)
async def create_key(body: KeyIn, ctx: GatewayContext = Admin) -> NewKeyOut:
    new = await _run(ctx, ctx.access_keys.create, body.tenant, body.description, body.policy)  # 400: bad policy
    ctx.identities_changed()
    return NewKeyOut(access_key_id=new.access_key_id, secret_access_key=new.secret_access_key, tenant=new.tenant,
                     scope="full" if new.policy is None else new.policy.summary())


@router.delete("/keys/{access_key_id}", status_code=204)
async def revoke_key(access_key_id: str, ctx: GatewayContext = Admin) -> None:
    await _run(ctx, ctx.access_keys.revoke, access_key_id)
    ctx.identities_changed()


@router.get("/admin-tokens", response_model=list[AdminTokenOut])
async def list_admin_tokens(ctx: GatewayContext = Admin) -> list[dict[str, Any]]:
    """Every admin token, expired ones included: names, ids and times, never a token."""
    return [_admin_token(info) for info in await _run(ctx, ctx.access_keys.list_admin_tokens)]


@router.post("/admin-tokens", response_model=NewAdminTokenOut, status_code=201)
async def create_admin_token(body: AdminTokenIn, ctx: GatewayContext = Admin) -> dict[str, Any]:
    """A new named admin token, shown in this response only. 409 if the name is taken (unless ``replace``)."""
    expires = None
    if body.expires is not None:
        try:
            expires = parse_expiry(body.expires)
        except InvalidArgument as error:
            raise AdminError(400, "InvalidArgument", str(error)) from None
    new = await _run(ctx, ctx.access_keys.create_admin_token, body.name, expires=expires,
                     description=body.description, replace=body.replace)
    if body.replace:
        ctx.identities_changed()
    return {**_admin_token(new.info), "token": new.token}


@router.delete("/admin-tokens/{name}", status_code=204)
async def revoke_admin_token(name: str, ctx: GatewayContext = Admin) -> None:
    """Revoke an admin token for good (this very token may revoke itself). 404 if there is none of that name."""
    await _run(ctx, ctx.access_keys.revoke_admin_token, name)
    ctx.identities_changed()


@router.get("/plugins")
async def list_plugins(ctx: GatewayContext = Admin) -> dict[str, Any]:
    """The supervision tree: each plugin's state, generation, restarts and last failure."""
    return await _run(ctx, lambda: ray.get(ctx.supervisor.status.remote(), timeout=10))


@router.post("/plugins/{child_id}/restart")
async def restart_plugin(child_id: str, ctx: GatewayContext = Admin) -> dict[str, Any]:
    generation = await _run(ctx, lambda: ray.get(ctx.supervisor.restart_child.remote(child_id), timeout=120))
    return {"child": child_id, "generation": generation}


@router.post("/tenants/{name}/rotate", response_model=RotationOut)
async def rotate_keys(name: str, rewrap: bool = False, ctx: GatewayContext = Admin) -> RotationOut:
    """Start a new KEK version for the tenant; with ``rewrap=true`` also rewrap every DEK under it now."""
    await _run(ctx, ctx.identity.get_tenant, name)
    version = await _run(ctx, ctx.warehouse.rotate_keys, tenant=name)
    count = await _run(ctx, ctx.warehouse.rewrap, tenant=name) if rewrap else 0
    return RotationOut(tenant=name, kek_version=version, rewrapped=count)


@router.get("/status")
async def status(ctx: GatewayContext = Admin) -> dict[str, Any]:
    tree = await _run(ctx, lambda: ray.get(ctx.supervisor.status.remote(), timeout=10))
    return {"supervisor": tree, "gateway": {"replica": ctx.replica_id, "draining": ctx.draining,
                                            "replicas": ctx.config.gateway.replicas}}


class QuotaIn(BaseModel):
    """Limits to change: a field left out stays, ``null``, 0 or ``"none"`` clears it.

    ``max_bytes`` takes a number or a size (``"10MiB"``); ``max_buckets`` is for tenants only.
    """

    max_bytes: int | str | None = None
    max_objects: int | str | None = None
    max_buckets: int | str | None = None


def _limits(body: QuotaIn) -> dict[str, int | None]:
    try:
        return {name: parse_limit(name, getattr(body, name)) for name in LIMITS if name in body.model_fields_set}
    except InvalidArgument as error:
        raise AdminError(400, "InvalidArgument", str(error)) from None


@router.get("/quotas")
async def list_quotas(ctx: GatewayContext = Admin) -> list[dict[str, Any]]:
    """Limits and usage of every tenant that owns a bucket or has a quota."""
    tenants = await _run(ctx, ctx.warehouse.catalog.quota_tenants)
    return [await _run(ctx, ctx.warehouse.quota, tenant) for tenant in tenants]


@router.get("/quotas/{tenant}")
async def get_quota(tenant: str, ctx: GatewayContext = Admin) -> dict[str, Any]:
    """A tenant's limits and usage (every stored version and the parts of uploads in progress), with its buckets'."""
    await _run(ctx, ctx.identity.get_tenant, tenant)
    return await _run(ctx, ctx.warehouse.quota, tenant)


@router.put("/quotas/{tenant}")
async def set_quota(tenant: str, body: QuotaIn, ctx: GatewayContext = Admin) -> dict[str, Any]:
    """Change a tenant's limits; writes that would pass them get 403 ``QuotaExceeded``."""
    limits = _limits(body)
    await _run(ctx, ctx.identity.get_tenant, tenant)
    return await _run(ctx, ctx.warehouse.set_quota, tenant, None, **limits)


@router.get("/quotas/{tenant}/buckets/{bucket}")
async def get_bucket_quota(tenant: str, bucket: str, ctx: GatewayContext = Admin) -> dict[str, Any]:
    await _run(ctx, ctx.identity.get_tenant, tenant)
    return await _run(ctx, ctx.warehouse.quota, tenant, bucket)


@router.put("/quotas/{tenant}/buckets/{bucket}")
async def set_bucket_quota(tenant: str, bucket: str, body: QuotaIn, ctx: GatewayContext = Admin) -> dict[str, Any]:
    """Change a bucket's limits (``max_bytes``, ``max_objects``); 404 if the tenant has no such bucket."""
    limits = _limits(body)
    await _run(ctx, ctx.identity.get_tenant, tenant)
    return await _run(ctx, ctx.warehouse.set_quota, tenant, bucket, **limits)
