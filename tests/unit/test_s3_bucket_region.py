"""CreateBucket and GetBucketLocation on a gateway outside us-east-1: the handlers over a real local
warehouse and real starlette requests (the session's gateway is in us-east-1, where AWS answers
differently: there an owner's re-create is 200 and the location is empty)."""
from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from starlette.requests import Request

from dwray.core.warehouse import Warehouse
from dwray.errors import BucketAlreadyExists, BucketAlreadyOwnedByYou
from dwray.s3.auth_result import AuthResult, SigningIdentity
from dwray.s3.errors import S3Error
from serve_apps.s3_api import S3Api
from serve_apps.s3_call import S3Call

REGION = "eu-central-1"


def call_for(tenant: str, method: str, path: str, query: str = "", body: bytes = b"") -> S3Call:
    """A real starlette request for ``tenant``, authenticated as the verifier would have found it."""
    scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode(),
             "query_string": query.encode(), "headers": [(b"host", b"127.0.0.1"),
                                                          (b"content-length", str(len(body)).encode())]}
    sent = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        return sent.pop(0) if sent else {"type": "http.disconnect"}

    call = S3Call(Request(scope, receive), domain=None)
    call.auth = AuthResult(SigningIdentity(f"AK-{tenant}", "secret", tenant), presigned=False,
                           content_sha256="UNSIGNED-PAYLOAD")
    return call


def test_outside_us_east_1(local_wh: Warehouse) -> None:
    with ThreadPoolExecutor(2) as executor:
        api = S3Api(local_wh, verifier=None, executor=executor, region=REGION, max_object_size=1 << 20,
                    max_metadata_bytes=2048)

        def run(call: S3Call) -> Any:
            return asyncio.run(api.handlers[call.operation](call))

        location = f"<CreateBucketConfiguration><LocationConstraint>{REGION}</LocationConstraint>" \
                   f"</CreateBucketConfiguration>".encode()
        assert run(call_for("alpha", "PUT", "/regional", body=location)).status_code == 200
        assert run(call_for("alpha", "GET", "/regional", "location")).body.endswith(
            f">{REGION}</LocationConstraint>".encode())
        local_wh.put("regional", "kept", b"x", tenant="alpha")
        # The owner's re-create is 409 BucketAlreadyOwnedByYou outside us-east-1; another tenant's is 409 too.
        with pytest.raises(BucketAlreadyOwnedByYou):
            run(call_for("alpha", "PUT", "/regional"))
        with pytest.raises(BucketAlreadyExists) as caught:
            run(call_for("beta", "PUT", "/regional"))
        assert not isinstance(caught.value, BucketAlreadyOwnedByYou)
        for other in ("us-east-1", "eu-west-1", "EU"):
            with pytest.raises(S3Error) as refused:
                run(call_for("alpha", "PUT", "/elsewhere", body=location.replace(REGION.encode(), other.encode())))
            assert (refused.value.code, refused.value.status) == ("InvalidLocationConstraint", 400)
            assert REGION in refused.value.message and other in refused.value.message
        assert [b.name for b in local_wh.list_buckets(tenant="alpha")] == ["regional"]
        assert local_wh.list("regional", tenant="alpha").keys == ["kept"]
