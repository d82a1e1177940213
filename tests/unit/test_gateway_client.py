"""The tenant client without a gateway: ``connect(url=...)``'s arguments, what its repr shows, bad input
refused before any request, and S3 error answers turned back into dwray errors.

Nothing listens on the client's port here (``free_port()``): a call that reached
the network would fail with ``NotReady``, so an error of another class proves the
input was refused before any request went out.
"""
from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

import dwray
from dwray import errors as dw
from dwray.core.ports import free_port
from dwray.remote import GatewayWarehouse
from dwray.remote.errors import Target, from_client_error
from dwray.s3.errors import from_dwray_error

SECRET = "sEcReT/never+shown0123456789abcdefghijkl"


@pytest.fixture
def client() -> GatewayWarehouse:
    return GatewayWarehouse(f"http://127.0.0.1:{free_port()}", "AKTESTKEY", SECRET)


@pytest.mark.parametrize("url", ["gateway:8000", "ftp://gateway", "https://", "http://gw:8000/bucket",
                                 "http://user:pw@gw:8000", "http://gw:99999", "https://gw?x=1"])
def test_a_bad_url_is_refused_naming_it(url: str) -> None:
    with pytest.raises(dw.InvalidArgument, match="url"):
        dwray.connect(url=url, access_key="AK", secret_key=SECRET)


def test_missing_credentials_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    with pytest.raises(dw.InvalidArgument, match="needs access_key and secret_key"):
        dwray.connect(url="https://gw:8000")
    with pytest.raises(dw.InvalidArgument, match="needs secret_key") as caught:
        dwray.connect(url="https://gw:8000", access_key="AK")
    assert "access_key and" not in str(caught.value)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKFROMENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    from_env = dwray.connect(url="https://gw:8000")
    assert isinstance(from_env, GatewayWarehouse) and from_env.access_key == "AKFROMENV"
    from_env.close()


@pytest.mark.parametrize("extra", [{"data_dir": "/tmp/x"}, {"address": "auto"}, {"config_path": "dw.toml"},
                                   {"stage_placement": "caller"}])
def test_url_with_the_ray_only_arguments_is_refused(extra: dict[str, Any]) -> None:
    with pytest.raises(dw.InvalidArgument, match=next(iter(extra))):
        dwray.connect(url="https://gw:8000", access_key="AK", secret_key=SECRET, **extra)


def test_bad_verify_part_size_and_config_are_refused(tmp_path: Any) -> None:
    with pytest.raises(dw.InvalidArgument, match="not a file"):
        GatewayWarehouse("https://gw:8000", "AK", SECRET, verify=str(tmp_path / "missing-ca.pem"))
    with pytest.raises(dw.InvalidArgument, match="verify must be"):
        GatewayWarehouse("https://gw:8000", "AK", SECRET, verify=1)  # type: ignore[arg-type]
    with pytest.raises(dw.InvalidArgument, match="part_size"):
        GatewayWarehouse("https://gw:8000", "AK", SECRET, part_size=1 << 20)
    with pytest.raises(dw.InvalidArgument, match="botocore.config.Config"):
        GatewayWarehouse("https://gw:8000", "AK", SECRET, config={"retries": 1})
    with pytest.raises(dw.InvalidArgument, match="secret_key"):
        GatewayWarehouse("https://gw:8000", "AK", "")


def test_the_repr_and_attributes_never_hold_the_secret(client: GatewayWarehouse) -> None:
    assert "AKTESTKEY" in repr(client) and SECRET not in repr(client)
    assert all(SECRET not in repr(value) for value in vars(client).values())


def test_bad_input_is_refused_before_any_request(client: GatewayWarehouse) -> None:
    with pytest.raises(dw.InvalidBucketName):
        client.create_bucket("Not_A_Bucket")
    with pytest.raises(dw.InvalidObjectKey):
        client.put("bkt", "a/../b", b"x")
    with pytest.raises(dw.InvalidArgument, match="not str"):
        client.put("bkt", "k", "text")
    with pytest.raises(dw.InvalidArgument, match="chunks must be bytes-like"):
        client.put("bkt", "k", iter([b"ok", 42]))
    with pytest.raises(dw.InvalidArgument, match="X-Secret"):
        client.put("bkt", "k", b"", headers={"X-Secret": "1"})
    with pytest.raises(dw.InvalidArgument, match="If-Match or If-None-Match"):
        client.put("bkt", "k", b"", if_match="abc", if_none_match=True)
    with pytest.raises(dw.InvalidArgument, match="finalize"):
        client.put("bkt", "k", b"", finalize=dict)
    with pytest.raises(dw.InvalidArgument, match="range must be"):
        client.get("bkt", "k", range=(1,))  # type: ignore[arg-type]
    with pytest.raises(dw.InvalidArgument, match="max_keys"):
        client.list("bkt", max_keys=-1)
    with pytest.raises(dw.InvalidArgument, match="versioning status"):
        client.set_bucket_versioning("bkt", "On")
    with pytest.raises(dw.InvalidArgument, match="pyarrow.Table"):
        client.put_table("bkt", "t", {"not": "a table"})


def test_an_unreachable_gateway_is_not_ready_naming_it(client: GatewayWarehouse) -> None:
    with pytest.raises(dw.NotReady, match="cannot be reached") as caught:
        client.list_buckets()
    assert client.url in str(caught.value) and SECRET not in str(caught.value)


def _answer(error: dw.DwrayError, status: int | None = None, **headers: str) -> ClientError:
    """The ClientError botocore raises for the S3 answer the gateway makes of ``error``."""
    s3 = from_dwray_error(error)
    return ClientError({"Error": {"Code": s3.code, "Message": s3.message},
                        "ResponseMetadata": {"HTTPStatusCode": status or s3.status,
                                             "HTTPHeaders": {**s3.headers, **headers}}}, "Op")


@pytest.mark.parametrize("error", [
    dw.BucketNotFound("bkt"), dw.ObjectNotFound("bkt", "k"), dw.ObjectNotFound("bkt", "k", "v1"),
    dw.ObjectDeleted("bkt", "k", "m1"), dw.DeleteMarkerVersion("bkt", "k", "m1", 1_700_000_000.0),
    dw.UploadNotFound("up1"), dw.BucketAlreadyExists("bkt"), dw.BucketAlreadyOwnedByYou("bkt"),
    dw.BucketNotEmpty("bkt"), dw.InvalidRange("bytes=10-12", 10), dw.EntityTooLarge(11, 10),
    dw.EntityTooSmall(1, 5, 10), dw.InvalidPart("up1", 2, "was not uploaded"),
    dw.InvalidPartOrder("up1", "part 1 follows part 2"), dw.InvalidContinuationToken("tok"),
    dw.QuotaExceeded("tenant 't'", "bytes", 100, 150), dw.AccessDenied("s3:PutObject", "bkt/k"),
    dw.BucketAccessDenied("bkt"), dw.PreconditionFailed("bkt", "k", "If-None-Match: *"),
    dw.Backpressure("memory is critical", 3), dw.NotReady("starting"),
], ids=lambda error: type(error).__name__ + ("-v" if getattr(error, "version_id", None) else ""))
def test_each_s3_error_comes_back_as_the_dwray_error_it_was(error: dw.DwrayError) -> None:
    version = getattr(error, "version_id", None) if not isinstance(error, dw.ObjectDeleted) else None
    target = Target("Op", "bkt", "k", version, upload_id="up1")
    back = from_client_error(_answer(error), target)
    assert type(back) is type(error)
    assert str(back) == str(error)


def test_answers_without_a_body_are_told_apart_by_status_and_headers() -> None:
    head = Target("HeadObject", "bkt", "k")
    missing = ClientError({"Error": {"Code": "404", "Message": "Not Found"},
                           "ResponseMetadata": {"HTTPStatusCode": 404, "HTTPHeaders": {}}}, "HeadObject")
    assert type(from_client_error(missing, head)) is dw.ObjectNotFound
    marker = ClientError({"Error": {"Code": "404", "Message": "Not Found"},
                          "ResponseMetadata": {"HTTPStatusCode": 404, "HTTPHeaders": {
                              "x-amz-delete-marker": "true", "x-amz-version-id": "m1"}}}, "HeadObject")
    deleted = from_client_error(marker, head)
    assert type(deleted) is dw.ObjectDeleted and deleted.version_id == "m1"
    signature = ClientError({"Error": {"Code": "SignatureDoesNotMatch", "Message": "no"},
                             "ResponseMetadata": {"HTTPStatusCode": 403, "HTTPHeaders": {}}}, "ListBuckets")
    refused = from_client_error(signature, Target("ListBuckets"))
    assert type(refused) is dw.AccessDenied and "secret key" in str(refused)
    broken = ClientError({"Error": {"Code": "InternalError", "Message": "We encountered an internal error."},
                          "ResponseMetadata": {"HTTPStatusCode": 500, "HTTPHeaders": {}}}, "GetObject")
    assert type(from_client_error(broken, Target("GetObject", "bkt", "k"))) is dw.StorageError


def test_a_url_with_credentials_or_a_query_is_refused_without_echoing_it() -> None:
    import dwray

    for url, said in (("s3://AKID:TOPSECRET@gateway", "must not carry credentials"),
                      ("https://AKID:TOPSECRET@gateway:8000", "must not carry credentials"),
                      ("https://gateway:8000/?X-Amz-Signature=TOPSECRET", "query or fragment")):
        with pytest.raises(dw.InvalidArgument, match=said) as caught:
            dwray.connect(url=url, access_key="AK", secret_key="SK")
        assert "TOPSECRET" not in str(caught.value)
