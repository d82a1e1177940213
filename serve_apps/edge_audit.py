"""Audit records the HTTP edge writes itself: S3 requests refused before the warehouse, and admin actions.

A request the warehouse runs is audited by the warehouse (``dwray.core.warehouse.access``).
One refused earlier (no or bad signature, unknown or revoked key, rate
limited, malformed) never gets there, so the S3 front records it here,
batched like a read's record (a refusal acknowledges nothing). The admin
API's routes are ``AuditedRoute``s: every mutating admin request is recorded
durably before its answer goes out, and every refused one (401) batched.
"""
from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

__all__ = ["AuditedRoute", "audit_refusal"]

log = logging.getLogger("dwray.gateway")

_CREDENTIAL = re.compile(r"Credential=([A-Za-z0-9]{1,128})/")
_CODE = re.compile(rb"<Code>([A-Za-z]{1,64})</Code>")


def _claimed_key(request: Request) -> str | None:
    """The access key id a request names (not proof of anything: it was refused), for the record."""
    found = _CREDENTIAL.search(request.headers.get("authorization", ""))
    if found is None:
        credential = request.query_params.get("X-Amz-Credential", "")
        found = re.match(r"([A-Za-z0-9]{1,128})/", credential)
    return found.group(1) if found else None


def _resource(call: Any) -> str:
    """``bucket/key``, ``bucket`` or ``*``, as the warehouse's records name resources."""
    if call is None or not call.bucket:
        return "*"
    return f"{call.bucket}/{call.key}" if call.key else call.bucket


def audit_refusal(warehouse: Any, request: Request, call: Any, source: str, response: Response) -> None:
    """Record an S3 request answered with an error before it reached the warehouse."""
    if response.status_code < 400 or not hasattr(warehouse, "audit_event"):
        return
    code = _CODE.search(bytes(getattr(response, "body", None) or b""))
    identity = call.auth.identity if call is not None and call.auth is not None else None
    try:
        warehouse.audit_event(
            action=f"s3:{call.operation if call is not None else 'Unknown'}",
            resource=_resource(call), outcome="denied",
            error=code.group(1).decode() if code else f"HTTP{response.status_code}",
            tenant=identity.tenant if identity else None,
            access_key_id=identity.access_key_id if identity else _claimed_key(request),
            request_id=call.request_id if call is not None else None, source_address=source)
    except Exception as exc:  # noqa: BLE001 - a refusal's record must not turn the refusal into a 500
        log.warning("could not audit a refused request: %s", exc)


class AuditedRoute(APIRoute):
    """An admin route whose changes (any method but GET) and refusals go to the audit log."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        path = self.path

        async def audited(request: Request) -> Response:
            try:
                response = await handler(request)
            except Exception as exc:
                status = getattr(exc, "status", 500)
                try:
                    await _record(request, path, "denied" if status in (401, 403) else "error",
                                  getattr(exc, "code", type(exc).__name__), durable=status not in (401, 403))
                except Exception as audit_exc:  # noqa: BLE001 - the request's own error is what the client gets
                    log.warning("could not audit a failed admin request: %s", audit_exc)
                raise
            if request.method != "GET":
                await _record(request, path, "allowed", None, durable=True)
            return response

        return audited


async def _record(request: Request, path: str, outcome: str, error: str | None, *, durable: bool) -> None:
    if request.method == "GET" and outcome == "error":
        return  # a failed read of admin state changes nothing
    from serve_apps.context import current

    ctx = current()
    warehouse = ctx.warehouse
    if not hasattr(warehouse, "audit_event"):
        return
    fields = {"action": f"admin:{request.method} {path}", "resource": request.url.path, "outcome": outcome,
              "error": error, "principal": getattr(request.state, "admin_token", None),
              "source_address": request.client.host if request.client else None}
    if durable:
        await asyncio.get_running_loop().run_in_executor(
            ctx.executor, lambda: warehouse.audit_event(durable=True, **fields))
    else:
        warehouse.audit_event(**fields)
