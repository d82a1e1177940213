"""One real gateway for the session: the warehouse, Serve and the S3 protocol on loopback.

It runs on the session's Ray cluster (started the way ``dw up`` starts one),
in a namespace of its own, on a free port. Tests reach it only over HTTP, with
real clients. A pytest plugin of the whole suite (``tests/conftest.py``'s
``pytest_plugins``), so that the top-level ``wh`` fixture's gateway variant
shares it with the gateway tests (``tests/integration/gateway/``), whose
conftest re-exports these names.
"""
from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from dwray.config import (
    AuthFailureLimit,
    DwrayConfig,
    GatewayConfig,
    LimitsConfig,
    RateLimitConfig,
    RuntimeConfig,
    ScrubConfig,
    SweeperConfig,
    TenantRate,
)
from dwray.config_events import EventsConfig
from dwray.core.ports import free_port

MAX_OBJECT_SIZE = 2 << 30  # above the 1 GiB streaming test, below what the negative tests declare
THROTTLED_TENANT = "throttled"
VIRTUAL_HOST_DOMAIN = "s3.dwray.test"
MAX_HEADER_BYTES = 8 << 10
#: the session gateway's webhook, for bucket notifications: test_bucket_notifications.py serves it on this port
NOTIFY_WEBHOOK_PORT = free_port()


@dataclass
class GatewayUnderTest:
    """The running gateway and the first credentials it printed."""

    endpoint: str
    access_key_id: str
    secret_access_key: str = field(repr=False)
    admin_token: str = field(repr=False)
    data_dir: Path
    config: DwrayConfig
    running: Any = field(repr=False)
    region: str = "us-east-1"

    def admin(self, method: str, path: str, json: Any = None, **params: Any) -> requests.Response:
        return requests.request(method, f"{self.endpoint}/admin{path}", json=json, params=params or None,
                                headers={"Authorization": f"Bearer {self.admin_token}"}, timeout=60)

    def new_key(self, tenant: str) -> tuple[str, str]:
        """A fresh access key for ``tenant`` (created if needed), through the admin API."""
        created = self.admin("POST", "/tenants", {"name": tenant})
        assert created.status_code in (201, 409), created.text
        response = self.admin("POST", "/keys", {"tenant": tenant})
        assert response.status_code == 201, response.text
        body = response.json()
        return body["access_key_id"], body["secret_access_key"]

    def shred(self, tenant: str) -> None:
        """Remove ``tenant`` for good with its buckets, objects and keys (the admin API's forced shred)."""
        response = self.admin("POST", f"/tenants/{tenant}/shred", force="true")
        assert response.status_code == 200, response.text

    def client(self, access_key_id: str | None = None, secret: str | None = None, **config: Any) -> Any:
        """boto3 on this gateway (no retries), as another access key when one is given."""
        from tests.integration.gateway.clients import s3_client

        return s3_client(self, access_key_id, secret, **config)

    def audit_record(self, predicate: Any, wait: float = 10.0) -> dict[str, Any]:
        """The first audit record matching ``predicate``; refusals are batched, so give them a moment."""
        from dwray.core.audit import AuditLocations
        from dwray.core.audit.reader import AuditReader

        deadline = time.monotonic() + wait
        while True:
            with AuditReader(AuditLocations.of(self.config)) as reader:
                found = [record for record in reader.query() if predicate(record)]
            if found or time.monotonic() > deadline:
                assert found, "no such audit record"
                return found[0]
            time.sleep(0.2)


def gateway_config(data_dir: Path, port: int) -> DwrayConfig:
    secret = data_dir.parent / "webhook-secret"
    secret.parent.mkdir(parents=True, exist_ok=True)
    secret.write_bytes(b"gateway-webhook-secret")
    secret.chmod(0o600)
    return DwrayConfig(
        data_dir=data_dir,
        # The kill storm (test_kill_storm.py) escalates: a tree restart waits 4 s at most.
        runtime=RuntimeConfig(namespace=f"dwray-gw-{uuid.uuid4().hex[:8]}", ping_interval=0.5,
                              tree_backoff_max=4.0),
        limits=LimitsConfig(max_object_size=MAX_OBJECT_SIZE),
        sweeper=SweeperConfig(interval=0),  # no housekeeper: not these tests' subject (tests.conftest.make_config)
        # Nor a scrubber: one more worker to start at every tree restart of the kill storm, which
        # heals within 10 s; the scrubber is tested in tests/integration/test_pools_ray.py.
        scrub=ScrubConfig(interval=0),
        gateway=GatewayConfig(
            port=port, drain_timeout=20, domain=VIRTUAL_HOST_DOMAIN, max_header_bytes=MAX_HEADER_BYTES,
            grpc_port=free_port(),  # tests/integration/gateway/test_grpc.py
            server_timing=True,  # test_server_timing.py; the TLS gateway (dw up defaults) checks it off
            rate_limit=RateLimitConfig(tenants={THROTTLED_TENANT: TenantRate(rate=0.5, burst=3)}),
            # The negative tests fail authentication on purpose, all from 127.0.0.1: a limit far
            # above theirs. The limit itself is tested on a gateway of its own (test_gateway_tls.py).
            auth_failures=AuthFailureLimit(rate=100, burst=2000)),
        events=EventsConfig.model_validate({"webhooks": {"gw-hook": {
            "url": f"http://127.0.0.1:{NOTIFY_WEBHOOK_PORT}/hook", "secret": f"secret://file/{secret}"}}}),
    )


@contextlib.contextmanager
def gateway_on(data_dir: Path) -> Iterator[GatewayUnderTest]:
    """A gateway started on a fresh ``data_dir`` (the session's Ray cluster), stopped on exit."""
    from serve_apps.launch import start_gateway, stop_gateway

    running = start_gateway(gateway_config(data_dir, free_port()))
    first = running.first_start
    assert first is not None, "a fresh data dir must bootstrap the first tenant, key and admin token"
    try:
        yield GatewayUnderTest(
            endpoint=running.endpoint, access_key_id=first.access_key.access_key_id,
            secret_access_key=first.access_key.secret_access_key, admin_token=first.admin_token,
            data_dir=running.config.data_dir, config=running.config, running=running)
    finally:
        stop_gateway(running, timeout=10)


@pytest.fixture(scope="session")
def gateway(ray_session: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayUnderTest]:
    with gateway_on(tmp_path_factory.mktemp("gateway") / "data") as running:
        yield running
