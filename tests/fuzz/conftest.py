"""A gateway of the fuzz tests' own: a fresh data dir, on the session's Ray cluster.

Fuzzers send whatever their strategies make, mutating admin requests included
(tenant delete and shred, key and token revocation, quotas), so they get a
warehouse no other test relies on. Ray Serve runs one HTTP proxy and one
application of this name per cluster, so this gateway can only exist while the
session gateway of ``tests/integration/gateway`` does not: ``tests/fuzz`` sorts
before ``tests/integration``, and this package's gateway is stopped (Serve shut
down) when the package's last test has run, before the session gateway starts.
Run in an order where the session gateway already runs, the fixture says so
rather than replace that gateway under the other tests' feet.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.gateway.conftest import GatewayUnderTest, gateway_on

FUZZ_TENANT = "fuzzed"


@pytest.fixture(scope="package")
def fuzz_gateway(ray_session: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayUnderTest]:
    from ray import serve

    from serve_apps.launch import APP_NAME

    running_apps = serve.status().applications if _serve_running() else {}
    if APP_NAME in running_apps:
        pytest.fail("a gateway already runs on this session's Ray cluster (the gateway tests ran first): run "
                    "tests/fuzz on its own or before tests/integration (the default order)", pytrace=False)
    with gateway_on(tmp_path_factory.mktemp("fuzz-gateway") / "data") as running:
        yield running


def _serve_running() -> bool:
    """Whether Serve's controller runs on the cluster (``serve.status`` would start one otherwise)."""
    import ray
    from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

    try:
        ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
    except ValueError:
        return False
    return True
