"""S3 bucket notifications through the gateway: boto3's Put/GetBucketNotificationConfiguration, refusals
that name what is wrong, and S3 event JSON delivered to the operator's webhook, as configured.

The session gateway's config declares one webhook (``[events.webhooks]`` in
``tests/integration/gateway/conftest.py``); this module serves it (a real HTTP
server on the port of its URL, checking every signature with the secret its
reference names).
"""
from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from dwray.core.events.notifications import webhook_arn
from tests.integration.events_receiver import WebhookReceiver
from tests.integration.gateway.clients import assert_s3_error, send_signed, sign
from tests.integration.gateway.conftest import GatewayUnderTest

PART = 5 << 20


@pytest.fixture(scope="module")
def webhook(gateway: GatewayUnderTest) -> Iterator[tuple[str, WebhookReceiver]]:
    assert gateway.config.events.webhooks, "the session gateway's config must declare a webhook"
    name = min(gateway.config.events.webhooks)
    target = gateway.config.events.webhooks[name]
    assert target.secret.startswith("secret://file/")
    secret = Path(target.secret.removeprefix("secret://file/")).read_bytes()
    receiver = WebhookReceiver(secret, port=urlsplit(target.url).port)
    yield name, receiver
    receiver.close()


def rule(name: str, *events: str, prefix: str = "", suffix: str = "", rule_id: str = "r1") -> dict[str, Any]:
    filters = [{"Name": n, "Value": v} for n, v in (("prefix", prefix), ("suffix", suffix)) if v]
    config: dict[str, Any] = {"Id": rule_id, "QueueArn": webhook_arn(name), "Events": list(events)}
    if filters:
        config["Filter"] = {"Key": {"FilterRules": filters}}
    return config


def test_configuration_round_trips_and_an_empty_one_removes_it(s3: Any, bucket: str,
                                                               webhook: tuple[str, WebhookReceiver]) -> None:
    name, _ = webhook
    assert "QueueConfigurations" not in s3.get_bucket_notification_configuration(Bucket=bucket)
    queue = rule(name, "s3:ObjectCreated:*", prefix="in/", suffix=".csv")
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={
        "QueueConfigurations": [queue]})
    got = s3.get_bucket_notification_configuration(Bucket=bucket)["QueueConfigurations"]
    assert got == [{"Id": "r1", "QueueArn": webhook_arn(name), "Events": ["s3:ObjectCreated:*"],
                    "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "in/"},
                                                       {"Name": "suffix", "Value": ".csv"}]}}}]
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={})
    assert "QueueConfigurations" not in s3.get_bucket_notification_configuration(Bucket=bucket)


def test_refusals_name_what_is_wrong_and_change_nothing(gateway: GatewayUnderTest, s3: Any, bucket: str,
                                                       webhook: tuple[str, WebhookReceiver]) -> None:
    from botocore.exceptions import ClientError

    name, _ = webhook
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={
        "QueueConfigurations": [rule(name, "s3:ObjectCreated:Put")]})
    bad = {"QueueConfigurations": [{"QueueArn": "arn:aws:sqs:us-east-1:123456789012:elsewhere",
                                    "Events": ["s3:ObjectCreated:*"]}]}
    with pytest.raises(ClientError) as refused:
        s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration=bad)
    error = refused.value.response["Error"]
    assert error["Code"] == "InvalidArgument" and "arn:aws:sqs:us-east-1:123456789012:elsewhere" in error["Message"]
    assert_s3_error("InvalidArgument", 400, s3.put_bucket_notification_configuration, Bucket=bucket,
                    NotificationConfiguration={"LambdaFunctionConfigurations": [{
                        "LambdaFunctionArn": "arn:aws:lambda:us-east-1:1:function:f",
                        "Events": ["s3:ObjectCreated:*"]}]})
    assert_s3_error("InvalidArgument", 400, s3.put_bucket_notification_configuration, Bucket=bucket,
                    NotificationConfiguration={"QueueConfigurations": [rule(name, "s3:ObjectRestore:Post")]})
    garbage = sign(gateway, "PUT", f"/{bucket}?notification", body=b"<NotificationConfiguration><Queue")
    response = send_signed(gateway, garbage)
    assert response.status == 400 and b"InvalidArgument" in response.body and b"not well-formed" in response.body
    # the configuration set before is still the bucket's
    assert s3.get_bucket_notification_configuration(Bucket=bucket)["QueueConfigurations"][0]["Events"] == [
        "s3:ObjectCreated:Put"]
    on_object = send_signed(gateway, sign(gateway, "GET", f"/{bucket}/some-key?notification"))
    assert on_object.status == 501
    assert_s3_error("NoSuchBucket", 404, s3.get_bucket_notification_configuration,
                    Bucket=f"t-{uuid.uuid4().hex[:16]}")


def test_matching_events_reach_the_webhook_in_s3_event_format(s3: Any, bucket: str,
                                                              webhook: tuple[str, WebhookReceiver]) -> None:
    name, receiver = webhook
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={"QueueConfigurations": [
        rule(name, "s3:ObjectCreated:*", "s3:ObjectRemoved:Delete", prefix="in/", suffix=".csv")]})
    s3.put_object(Bucket=bucket, Key="in/a b.csv", Body=b"12345")
    s3.put_object(Bucket=bucket, Key="in/b.txt", Body=b"no: suffix")
    s3.put_object(Bucket=bucket, Key="out/c.csv", Body=b"no: prefix")
    upload = s3.create_multipart_upload(Bucket=bucket, Key="in/m.csv")["UploadId"]
    part = s3.upload_part(Bucket=bucket, Key="in/m.csv", UploadId=upload, PartNumber=1, Body=b"m" * 10)
    s3.complete_multipart_upload(Bucket=bucket, Key="in/m.csv", UploadId=upload, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
    s3.delete_object(Bucket=bucket, Key="in/a b.csv")
    s3.delete_object(Bucket=bucket, Key="in/b.txt")
    expected = {("ObjectCreated:Put", "in/a+b.csv"), ("ObjectCreated:CompleteMultipartUpload", "in/m.csv"),
                ("ObjectRemoved:Delete", "in/a+b.csv")}

    def mine() -> list[dict[str, Any]]:
        return [r for r in receiver.records() if r["s3"]["bucket"]["name"] == bucket]
    assert receiver.wait_for(lambda: {(r["eventName"], r["s3"]["object"]["key"]) for r in mine()} >= expected, 90)
    time.sleep(1.0)  # anything that should not come would have come by now
    assert {(r["eventName"], r["s3"]["object"]["key"]) for r in mine()} == expected
    created = next(r for r in mine() if r["eventName"] == "ObjectCreated:Put")
    assert created["eventVersion"] == "2.1" and created["eventSource"] == "aws:s3"
    assert created["s3"]["configurationId"] == "r1" and created["s3"]["object"]["size"] == 5
    assert created["s3"]["object"]["eTag"] == "827ccb0eea8a706c4c34a16891f84e7b"  # md5 of 12345, unquoted
    assert receiver.bad_signatures == 0
