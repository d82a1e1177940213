"""Schemathesis against the admin API's own OpenAPI schema, on a real gateway.

The schema is the one the gateway serves (``/admin/openapi.json``); every
operation in it gets generated requests, valid and invalid (negative data), sent
over HTTP with ``requests``: once with a valid admin token, once with none or a
made-up one. Every answer must be no 5xx, have a status the schema documents,
the content type it documents and a body that matches its schema.

Mutating operations run for real, on the fuzz package's own gateway. Two
things are kept out of the fuzzers' reach, by rewriting the generated value
before the request goes out (see :func:`_protect`): the admin token the test
itself uses (a generated ``DELETE /admin-tokens/{name}`` or ``replace`` of
that name would end the run's authority, not find a bug), and the plugin tree
(``POST /plugins/{child}/restart`` of a real child would restart the catalog
or storage mid-run). The default tenant and a third of the generated tenant
names are redirected to a tenant made for the fuzzing, so success paths (get,
rotate, quotas, delete, shred) run too, never on the default tenant's data.
"""
from __future__ import annotations

from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from serve_apps.gateway import fastapi_app
from tests.fuzz.conftest import FUZZ_TENANT
from tests.integration.gateway.conftest import GatewayUnderTest

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
EXAMPLES = 10
UNAUTHENTICATED_EXAMPLES = 5


# Built from the app object at collection (schemathesis' lazy fixture loader does not run on
# pytest 9); test_the_served_schema_is_the_one_fuzzed checks the gateway serves this very schema.
schema = schemathesis.openapi.from_dict(fastapi_app.openapi())


@pytest.fixture(scope="module")
def fuzz_tenant(fuzz_gateway: GatewayUnderTest) -> str:
    created = fuzz_gateway.admin("POST", "/tenants", {"name": FUZZ_TENANT})
    assert created.status_code in (201, 409), created.text
    return FUZZ_TENANT


def test_the_served_schema_is_the_one_fuzzed(fuzz_gateway: GatewayUnderTest) -> None:
    served = requests.get(f"{fuzz_gateway.endpoint}/admin/openapi.json", timeout=30)
    assert served.status_code == 200
    assert served.json() == fastapi_app.openapi()


def _protect(case: Any, gateway: GatewayUnderTest) -> None:
    """Rewrite generated names that would hit the run's own token, the plugin tree or the default tenant.

    A third of the generated tenant names (chosen by length, so the same each run) become the fuzz
    tenant's, so that the success paths run too, not only 404s.
    """
    parameters = case.path_parameters or {}
    if "child_id" in parameters:
        parameters["child_id"] = f"fuzz-{parameters['child_id']}"
    if case.path.startswith("/admin/admin-tokens") and "name" in parameters:
        parameters["name"] = f"fuzz-{parameters['name']}"[:64]
    if case.path == "/admin/admin-tokens" and isinstance(case.body, dict) and isinstance(case.body.get("name"), str):
        case.body["name"] = f"fuzz-{case.body['name']}"[:64]
    for name in ("tenant", "name"):
        value = parameters.get(name)
        if name == "name" and not case.path.startswith("/admin/tenants"):
            continue
        if isinstance(value, str) and (value == gateway.config.default_tenant or len(value) % 3 == 0):
            parameters[name] = FUZZ_TENANT


@schema.parametrize()
@settings(max_examples=EXAMPLES, derandomize=True, deadline=None,
          suppress_health_check=list(HealthCheck))
def test_admin_api_with_a_valid_token(case: Any, fuzz_gateway: GatewayUnderTest, fuzz_tenant: str) -> None:
    _protect(case, fuzz_gateway)
    case.call_and_validate(base_url=fuzz_gateway.endpoint, checks=CHECKS,
                           headers={"Authorization": f"Bearer {fuzz_gateway.admin_token}"}, timeout=60)


@schema.parametrize()
@settings(max_examples=UNAUTHENTICATED_EXAMPLES, derandomize=True, deadline=None,
          suppress_health_check=list(HealthCheck))
def test_admin_api_without_a_valid_token_is_401_everywhere(case: Any, fuzz_gateway: GatewayUnderTest) -> None:
    _protect(case, fuzz_gateway)
    # Derandomized: the same cases each run; half go without a header, half with a made-up token.
    made_up = len(repr(case.path_parameters)) % 2 == 1
    headers = {"Authorization": "Bearer not-an-admin-token"} if made_up else {}
    response = case.call_and_validate(base_url=fuzz_gateway.endpoint, checks=CHECKS, headers=headers, timeout=60)
    if case.method.upper() != case.operation.method.upper():
        # A method the path does not have: there is no operation to authorize.
        assert response.status_code == 405, (response.status_code, response.text)
    elif response.status_code in (400, 422):
        # FastAPI decodes a JSON body before the token check runs: a body that is not UTF-8 (400) or
        # not JSON (422) is refused first. That reveals nothing the public schema does not say, and
        # runs no operation.
        refusal = response.json()
        assert refusal.get("error", {}).get("code") == "MalformedRequest" or \
            refusal["detail"][0]["type"] == "json_invalid", response.text
    else:
        assert response.status_code == 401, (response.status_code, response.text)
        assert response.json()["error"]["code"] == "Unauthorized"


# --- regressions: what the fuzzing found ---------------------------------------------------------------

@pytest.mark.parametrize("body", [b"\xff\xfe\x00\x07", b"{\"name\": ", b"[]\x00"])
def test_a_body_that_is_not_json_gets_the_documented_error_shape(fuzz_gateway: GatewayUnderTest,
                                                                  body: bytes) -> None:
    """Found by schemathesis: FastAPI answered an undecodable JSON body with its own ``{"detail": ...}``,
    not the ``{"error": {code, message}}`` the schema documents for a 400."""
    response = requests.post(f"{fuzz_gateway.endpoint}/admin/tenants", data=body, timeout=30,
                             headers={"Authorization": f"Bearer {fuzz_gateway.admin_token}",
                                      "Content-Type": "application/json"})
    assert response.status_code in (400, 422), response.text
    if response.status_code == 400:
        assert response.json()["error"]["code"] == "MalformedRequest"


def test_an_unknown_admin_path_gets_the_documented_error_shape(fuzz_gateway: GatewayUnderTest) -> None:
    response = fuzz_gateway.admin("GET", "/no-such-thing")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "NotFound"
