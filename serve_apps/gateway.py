"""dwray's HTTP gateway on Ray Serve: S3, the admin API, health probes and metrics.

``app`` is the bindable application that ``serve run serve_apps.gateway:app``
and ``cluster/serve_config.yaml`` point at; ``dw up`` deploys the same class
with its own settings (:func:`build_app`). Routes:

- ``/healthz/live``: the replica's event loop answers; contacts nothing.
- ``/healthz/startup``: the supervisor has admitted every required plugin.
- ``/healthz/ready``: catalog and storage answer, the supervisor is ready, no
  breaker of this replica is open for a required plugin, its memory is not
  critical and the gateway is not draining; a 503 names every reason
  (:mod:`serve_apps.health`).
- ``/metrics``: Prometheus exposition of every replica plus warehouse-wide figures
  (tenant names only with ``[gateway] metrics_tenant_labels``; a bearer token
  when ``[gateway] metrics_token`` names one).
- ``/admin/...``: the admin API (bearer token); schema at ``/admin/openapi.json``.
- everything else: the S3 protocol (path style, or virtual-hosted style under
  ``gateway.domain``). Bucket names ``admin``, ``healthz`` and ``metrics`` are
  therefore reserved in path style.

Each replica applies ``[tracing]`` and ``[logging]`` to its process
(:mod:`dwray.core.telemetry`); every S3 request is one trace whose id is its
``x-amz-request-id`` (:mod:`serve_apps.s3_api`).

A source address whose requests keep failing authentication (S3 signatures,
the admin token, the metrics token) is refused with 503 SlowDown before
anything is looked up, for as long as its bucket in ``[gateway]
auth_failures`` stays empty (:class:`dwray.core.ratelimit.AuthFailureLimiter`).
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import ray
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from ray import serve
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from dwray.config import DwrayConfig, load_config
from dwray.core.telemetry import configure_telemetry
from dwray.errors import NotReady
from serve_apps import admin
from serve_apps.context import GatewayContext, current, install
from serve_apps.grpc_gateway import GrpcWarehouse
from serve_apps.s3_api import S3Api
from serve_apps.s3_call import client_address
from serve_apps.serve_patch_grpc import bound_grpc_streams
from serve_apps.serve_patches import bound_request_bodies

__all__ = ["Gateway", "app", "build_app", "fastapi_app", "replica_context"]

log = logging.getLogger("dwray.gateway")

PROBE_TIMEOUT = 3.0
METRICS_CALL_TIMEOUT = 5.0
RESERVED_PATHS = ("/admin", "/healthz", "/metrics")


def _gateway_route(scope: Scope) -> bool:
    """Whether a request is for the gateway's own endpoints rather than S3."""
    path = scope.get("path", "")
    if path.startswith("/admin/"):
        return True
    return scope.get("method") in ("GET", "HEAD") and (path == "/metrics" or path.startswith("/healthz/"))


def _guarded_route(scope: Scope) -> bool:
    """The gateway's own routes that take a credential (admin and metrics tokens)."""
    path = scope.get("path", "")
    return path.startswith("/admin/") or path == "/metrics"


def _virtual_host(scope: Scope, domain: str | None) -> bool:
    if not domain:
        return False
    for name, value in scope.get("headers", ()):
        if name == b"host":
            host = value.decode("latin-1").rsplit(":", 1)[0].lower() if not value.startswith(b"[") else ""
            return host.endswith("." + domain.lower()) and len(host) > len(domain) + 1
    return False


class Dispatch:
    """ASGI middleware: S3 requests to the S3 handler, the rest to FastAPI's routes; and every
    request counted in flight until its response is fully sent (the drain waits on that count)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            ctx = current()
        except RuntimeError:
            await self.app(scope, receive, send)
            return
        ctx.metrics.begin()
        try:
            if _gateway_route(scope) and not _virtual_host(scope, ctx.config.gateway.domain):
                if _guarded_route(scope):
                    await _guarded(ctx, self.app, scope, receive, send)
                else:
                    await self.app(scope, receive, send)
            else:
                # Everything else is S3's, including <bucket>.<domain>/metrics (a key)
                # and PUT /metrics (a bucket name the gateway reserves).
                await s3(scope, receive, send)
        finally:
            ctx.metrics.end()


async def _guarded(ctx: GatewayContext, app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
    """An admin or metrics request: refused while its address's failures are used up; a 401 or 403 spends."""
    source = client_address(scope, forwarded=ctx.forwarded_client)
    wait = ctx.auth_failures.check(source)
    if wait is not None:
        ctx.metrics.rate_limited("source")
        refusal = JSONResponse({"error": {"code": "SlowDown", "message": "too many requests from your address "
                                          "failed authentication; retry later"}}, status_code=503,
                               headers={"Retry-After": str(max(1, int(wait + 0.999)))})
        await refusal(scope, receive, send)
        return
    status: list[int] = []

    async def watching(message: Any) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])
        await send(message)

    await app(scope, receive, watching)
    if status and status[0] in (401, 403):
        ctx.auth_failures.failed(source)


fastapi_app = FastAPI(title="dwray gateway", openapi_url="/admin/openapi.json", docs_url="/admin/docs",
                      redoc_url=None)
fastapi_app.router.redirect_slashes = False  # keys like "metrics/" are S3's, never a redirect
fastapi_app.add_middleware(Dispatch)
fastapi_app.include_router(admin.router)


@fastapi_app.exception_handler(admin.AdminError)
async def _admin_error(request: Request, error: admin.AdminError) -> JSONResponse:
    return admin.admin_error(error)


@fastapi_app.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
    """FastAPI's own refusals (a body that is not JSON, no such admin route) in the admin API's error shape.

    Only admin requests reach FastAPI's routes; the schema documents ``{"error": {code, message}}``.
    """
    code = {400: "MalformedRequest", 404: "NotFound", 405: "MethodNotAllowed"}.get(error.status_code, "HTTPError")
    return admin.admin_error(admin.AdminError(error.status_code, code, str(error.detail), error.headers))


async def _blocking(fn: Any, timeout: float = PROBE_TIMEOUT) -> Any:
    ctx = current()
    loop = asyncio.get_running_loop()
    return await asyncio.wait_for(loop.run_in_executor(ctx.executor, fn), timeout)


@fastapi_app.get("/healthz/live", include_in_schema=False)
async def live() -> JSONResponse:
    return JSONResponse({"status": "alive"})


@fastapi_app.get("/healthz/startup", include_in_schema=False)
async def startup() -> JSONResponse:
    ctx = current()
    try:
        started = await _blocking(lambda: ray.get(ctx.supervisor.started.remote(), timeout=PROBE_TIMEOUT))
    except Exception as error:  # noqa: BLE001 - any failure means "not started"
        return JSONResponse({"status": "starting", "reason": type(error).__name__}, status_code=503)
    if not started:
        return JSONResponse({"status": "starting", "reason": "required plugins not admitted yet"}, status_code=503)
    return JSONResponse({"status": "started"})


@fastapi_app.get("/healthz/ready", include_in_schema=False)
async def ready() -> JSONResponse:
    """200, or 503 naming every reason (:mod:`serve_apps.health`); each remote check has ``PROBE_TIMEOUT``.

    A draining replica asks nothing remote: it is on its way out whatever the plugins say.
    """
    from serve_apps.health import assess

    ctx = current()
    supervisor: tuple[bool, str] | BaseException | None = None
    probes: dict[str, BaseException | None] = {}
    required = None
    if not ctx.draining:
        async def ask_supervisor() -> tuple[bool, str] | BaseException:
            try:
                answer = await _blocking(lambda: ray.get(ctx.supervisor.ready.remote(), timeout=PROBE_TIMEOUT))
                return bool(answer[0]), str(answer[1])
            except Exception as error:  # noqa: BLE001 - any failure is "unreachable", named
                return error

        async def probe(child: str) -> BaseException | None:
            try:
                await _blocking(lambda: ctx.handle(child).call("health", idempotent=True))
                return None
            except Exception as error:  # noqa: BLE001
                return error

        storage = f"storage:{ctx.config.storage.backend}"
        supervisor, catalog, stored, required = await asyncio.gather(
            ask_supervisor(), probe("catalog"), probe(storage), _quiet(_blocking(ctx.required_children)))
        probes = {"catalog": catalog, "storage": stored}
        await asyncio.gather(*(trial_calls(ctx, child) for child in _half_open(ctx)))
    result = assess(draining=ctx.draining, supervisor=supervisor, probes=probes, guards=ctx.guard_snapshot(),
                    required=required if isinstance(required, frozenset) else None, memory=ctx.memory_status())
    return JSONResponse(result.body(), status_code=result.status_code)


# Trial calls a readiness probe makes, at most, on one plugin whose breaker is half-open in this replica.
MAX_TRIAL_CALLS = 10


def _half_open(ctx: Any) -> list[str]:
    return [child for child, guard in ctx.guard_snapshot().items() if guard.get("state") == "half_open"]


async def trial_calls(ctx: Any, child: str) -> None:
    """Close (or open again) a breaker that is half-open in this replica, with health calls.

    A half-open breaker waits for its trial calls, and a replica out of rotation
    because of it gets no traffic to make them: a plugin used only now and then
    (identity behind the key cache) would hold the replica out indefinitely. The
    probe makes the trial calls itself: each is a health call through the guard.
    """
    deadline = time.monotonic() + PROBE_TIMEOUT
    for _ in range(MAX_TRIAL_CALLS):
        left = deadline - time.monotonic()
        if left <= 0 or ctx.guard_snapshot().get(child, {}).get("state") != "half_open":
            return
        try:
            await _blocking(lambda: ctx.handle(child).call("health", idempotent=True), timeout=left)
        except Exception:  # noqa: BLE001 - failed trials open the breaker again once they decide: readiness says so
            continue


async def _quiet(awaitable: Any) -> Any:
    """``awaitable``'s result, or ``None`` if it failed or ran out of time."""
    try:
        return await awaitable
    except Exception:  # noqa: BLE001
        return None


@fastapi_app.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    from prometheus_client import CONTENT_TYPE_LATEST

    from serve_apps.metrics import render
    from serve_apps.metrics_storage import gather_storage

    ctx = current()
    gateway = ctx.config.gateway
    if gateway.metrics_token is not None:
        authorization = request.headers.get("authorization")
        try:
            allowed = await _blocking(lambda: ctx.metrics_token_accepts(authorization))
        except Exception as error:  # noqa: BLE001 - the secret manager is down: no page, and no secret in the log
            log.warning("the metrics token could not be resolved (%s)", type(error).__name__)
            return PlainTextResponse("the metrics token cannot be checked right now\n", status_code=503)
        if not allowed:
            return PlainTextResponse("send the metrics token as 'Authorization: Bearer <token>'\n", status_code=401,
                                     headers={"WWW-Authenticate": 'Bearer realm="dwray metrics"'})

    def gather() -> bytes:
        ctx.report()
        try:
            snapshots = ray.get(ctx.coordinator.snapshots.remote(), timeout=METRICS_CALL_TIMEOUT)
        except Exception as error:  # noqa: BLE001 - the coordinator is restarting: this replica's own figures
            log.warning("metrics: the gateway coordinator did not answer (%s)", type(error).__name__)
            snapshots = {ctx.replica_id: ctx.metrics.exposition()}
        try:
            tree = ray.get(ctx.supervisor.status.remote(), timeout=METRICS_CALL_TIMEOUT)
        except Exception as error:  # noqa: BLE001 - the page goes on without the tree
            log.warning("metrics: the supervisor did not answer (%s)", type(error).__name__)
            tree = None
        tenants = ctx.warehouse.catalog.tenant_stats()  # one row per tenant, kept by the catalog: no scan
        scrubber = ctx.handle("scrubber") if ctx.config.scrub.interval > 0 else None
        return render(snapshots, plugins=tree["children"] if tree else [], supervisor=tree, tenants=tenants,
                      draining=ctx.draining, tenant_labels=gateway.metrics_tenant_labels,
                      storage=gather_storage(ctx.warehouse, scrubber))

    body = await _blocking(gather, timeout=10)
    return PlainTextResponse(body, media_type=CONTENT_TYPE_LATEST)


async def s3(scope: Scope, receive: Receive, send: Send) -> None:
    """The S3 protocol, for every request that is not for the gateway's own endpoints.

    Dispatched by the ``Dispatch`` middleware rather than a ``/{path:path}``
    route: a route's pattern would not match keys with line breaks, and S3
    must answer every path (and method) with its own errors, never FastAPI's.
    """
    if scope["type"] != "http":
        return
    response = await current().s3.handle(Request(scope, receive))
    await response(scope, receive, send)


def _attach(settings: dict[str, Any] | None) -> tuple[DwrayConfig, Any, Any]:
    """The config, supervisor and coordinator of the warehouse this replica serves.

    With settings (``dw up``) they are the warehouse's; without (``serve run``)
    the config comes from ``DWRAY_CONFIG``/``DWRAY_*`` and a warehouse is started
    if none runs, so the app also works on a bare Ray cluster.
    """
    from actors.bootstrap import bootstrap_identity, find_supervisor, start_supervisor
    from actors.gateway_coordinator import create_coordinator, find_coordinator
    from actors.handles import running_config

    deployed_by_dw_up = bool(settings)
    config = DwrayConfig.model_validate(settings) if settings else load_config()
    runtime = config.runtime
    supervisor = find_supervisor(config)
    if supervisor is None and deployed_by_dw_up:
        # dw up deploys its replicas for the warehouse it started: gone, it is not to be started again here.
        raise NotReady(f"the warehouse this gateway was deployed for ({runtime.supervisor_name!r} in "
                       f"namespace {runtime.namespace!r}) is not running")
    if supervisor is None:
        try:
            supervisor = start_supervisor(config, detached=True, started_by="serve run")
        except ValueError:  # another replica started it first
            supervisor = find_supervisor(config)
    elif not settings:
        config = running_config(config, supervisor)
    if not deployed_by_dw_up:
        from dwray.core.gateway_files import GatewayFiles

        # Started without dw up: the first tenant, key and admin token are made
        # here; only the admin token is kept (0600), for 'dw key create'.
        bootstrap_identity(config, supervisor, GatewayFiles(config.data_dir.resolve() / "gateway"))
    coordinator = find_coordinator(runtime.namespace)
    if coordinator is None:
        try:
            coordinator = create_coordinator(runtime.namespace, detached=True)
        except ValueError:
            coordinator = find_coordinator(runtime.namespace)
    return config, supervisor, coordinator


def replica_context(config: DwrayConfig, supervisor: Any, coordinator: Any) -> GatewayContext:
    """A replica's context with its S3 handler: what ``fastapi_app`` serves once :func:`install` ed."""
    ctx = GatewayContext(config, supervisor, coordinator)
    ctx.s3 = S3Api(ctx.warehouse, ctx.verifier, executor=ctx.executor, body_executor=ctx.body_executor,
                   max_header_bytes=config.gateway.max_header_bytes, limiter=ctx.limiter,
                   metrics=ctx.metrics, domain=config.gateway.domain, region=config.gateway.region,
                   max_object_size=config.limits.max_object_size,
                   max_metadata_bytes=config.limits.max_metadata_bytes, is_draining=lambda: ctx.draining,
                   auth_failures=ctx.auth_failures, forwarded_client=ctx.forwarded_client,
                   server_timing=config.gateway.server_timing, memory=ctx.memory)
    return ctx


# No Serve access log: the warehouse audits every S3 request and the gateway counts each in its
# metrics; Serve's own log line per request cost ~3% of a replica's CPU on small objects.
@serve.deployment(name="gateway", ray_actor_options={"num_cpus": 0}, max_ongoing_requests=256,
                  graceful_shutdown_timeout_s=60, health_check_period_s=5,
                  logging_config={"enable_access_log": False})
@serve.ingress(fastapi_app)
class Gateway(GrpcWarehouse):
    """One gateway replica: S3 and the admin API over HTTP, and dwray.v1.Warehouse over gRPC
    (:mod:`serve_apps.grpc_gateway`)."""

    def __init__(self, settings: dict[str, Any] | None = None) -> None:
        started = time.monotonic()
        bound_request_bodies()
        bound_grpc_streams()
        config, supervisor, coordinator = _attach(settings)
        # Spans exported and log lines shaped as configured, before the replica logs anything of its own.
        configure_telemetry(config.tracing, config.logging, "gateway", config=config, degrade=True)
        self.ctx = ctx = replica_context(config, supervisor, coordinator)
        install(ctx)
        log.info("gateway replica %s ready in %.1f s", ctx.replica_id, time.monotonic() - started)

    def __del__(self) -> None:
        ctx = getattr(self, "ctx", None)
        if ctx is not None:
            ctx.close()


def build_app(config: DwrayConfig) -> Any:
    """The gateway application for ``config`` (``dw up`` and the tests deploy this)."""
    return Gateway.options(num_replicas=config.gateway.replicas).bind(config.model_dump(mode="json"))


app = Gateway.bind()
