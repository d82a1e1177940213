"""The gateway tests' fixtures: boto3 on the session gateway, and a fresh bucket.

The session gateway itself (the ``gateway`` fixture, ``GatewayUnderTest``, its
config) lives in ``tests/gateway_session.py``, a plugin of the whole suite, so
that tests outside this folder share the same one; its names are re-exported
here for the tests that import them from this module.
"""
from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.gateway_session import (
    MAX_HEADER_BYTES,
    MAX_OBJECT_SIZE,
    NOTIFY_WEBHOOK_PORT,
    THROTTLED_TENANT,
    VIRTUAL_HOST_DOMAIN,
    GatewayUnderTest,
    gateway_config,
    gateway_on,
)

__all__ = ["MAX_HEADER_BYTES", "MAX_OBJECT_SIZE", "NOTIFY_WEBHOOK_PORT", "THROTTLED_TENANT", "VIRTUAL_HOST_DOMAIN",
           "GatewayUnderTest", "gateway_config", "gateway_on"]


@pytest.fixture(scope="session")
def s3(gateway: GatewayUnderTest) -> Any:
    """boto3 with its default settings (checksums included), for the default tenant."""
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=gateway.endpoint, region_name=gateway.region,
                        aws_access_key_id=gateway.access_key_id, aws_secret_access_key=gateway.secret_access_key,
                        config=Config(s3={"addressing_style": "path"}))


@pytest.fixture
def bucket(s3: Any) -> str:
    name = f"t-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=name)
    return name
