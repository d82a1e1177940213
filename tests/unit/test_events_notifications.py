"""S3 notification configurations, S3 event JSON, webhook signatures and backoff: the bus's pure parts."""
from __future__ import annotations

import random
from pathlib import Path

import pytest

from dwray.core.events.backoff import full_jitter
from dwray.core.events.messages import Message, check_topic
from dwray.core.events.notifications import (
    matches,
    notification_xml,
    parse_notification_xml,
)
from dwray.core.events.routing import route_outbox
from dwray.core.events.s3_records import s3_event, sequencer
from dwray.core.events.signing import sign, signed_headers, verify
from dwray.errors import InvalidArgument

NS = 'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"'
CONFIG = f"""<NotificationConfiguration {NS}>
  <QueueConfiguration><Id>csv</Id><Queue>arn:dwray:webhook::audit</Queue>
    <Event>s3:ObjectCreated:*</Event><Event>s3:ObjectRemoved:Delete</Event>
    <Filter><S3Key><FilterRule><Name>prefix</Name><Value>in/</Value></FilterRule>
      <FilterRule><Name>Suffix</Name><Value>.csv</Value></FilterRule></S3Key></Filter>
  </QueueConfiguration>
  <TopicConfiguration><Topic>arn:dwray:webhook::ops</Topic><Event>s3:ObjectRemoved:*</Event></TopicConfiguration>
</NotificationConfiguration>""".encode()


def test_configuration_parses_renders_and_reparses() -> None:
    rules = parse_notification_xml(CONFIG, {"audit", "ops"})
    assert rules[0] == {"id": "csv", "kind": "Queue", "webhook": "audit", "prefix": "in/", "suffix": ".csv",
                        "events": ["s3:ObjectCreated:*", "s3:ObjectRemoved:Delete"]}
    assert rules[1]["kind"] == "Topic" and rules[1]["webhook"] == "ops" and len(rules[1]["id"]) == 16
    assert parse_notification_xml(notification_xml(rules), {"audit", "ops"}) == rules
    assert parse_notification_xml(f"<NotificationConfiguration {NS}/>".encode(), {"audit"}) == []
    assert b"<NotificationConfiguration" in notification_xml([])


def doc(*inner: str) -> bytes:
    return ("<NotificationConfiguration>" + "".join(inner) + "</NotificationConfiguration>").encode()


def queue(*inner: str, arn: str = "arn:dwray:webhook::audit") -> str:
    return f"<QueueConfiguration><Queue>{arn}</Queue>" + "".join(inner) + "</QueueConfiguration>"


CREATED = "<Event>s3:ObjectCreated:*</Event>"


@pytest.mark.parametrize(("body", "named"), [
    (b"<NotificationConfiguration><QueueConfiguration>", "not well-formed XML"),
    (b"<?xml version='1.0'?><!DOCTYPE x [<!ENTITY a 'b'>]><NotificationConfiguration/>", "not well-formed XML"),
    (b"<Tagging/>", "not NotificationConfiguration"),
    (b"", "is empty"),
    (doc(queue(CREATED, arn="arn:aws:sqs:us-east-1:1:q")), "arn:aws:sqs"),
    (doc(queue(CREATED, arn="arn:dwray:webhook::nope")), "names no webhook"),
    (doc(queue("<Event>s3:ObjectRestore:*</Event>")), "ObjectRestore"),
    (doc(queue()), "names no Event"),
    (doc("<CloudFunctionConfiguration><CloudFunction>x</CloudFunction></CloudFunctionConfiguration>"), "Lambda"),
    (doc("<EventBridgeConfiguration/>"), "EventBridge"),
    (doc(queue(CREATED, "<Filter><S3Key><FilterRule><Name>middle</Name><Value>x</Value></FilterRule></S3Key>"
                        "</Filter>")), "'prefix' or 'suffix'"),
    (doc(queue("<Id>same</Id>", CREATED), queue("<Id>same</Id>", CREATED)), "same Id"),
    (doc("x" * 70_000), "over 65536 bytes"),
])
def test_bad_configurations_are_refused_naming_what_is_wrong(body: bytes, named: str) -> None:
    with pytest.raises(InvalidArgument, match=named.replace("(", r"\(")):
        parse_notification_xml(body, {"audit"})


def test_rules_match_by_event_family_name_and_key_filters() -> None:
    rule = parse_notification_xml(CONFIG, {"audit", "ops"})[0]
    assert matches(rule, "ObjectCreated:Put", "in/a.csv")
    assert matches(rule, "ObjectCreated:CompleteMultipartUpload", "in/b.csv")
    assert matches(rule, "ObjectRemoved:Delete", "in/a.csv")
    assert not matches(rule, "ObjectRemoved:DeleteMarkerCreated", "in/a.csv")
    assert not matches(rule, "ObjectCreated:Put", "out/a.csv")
    assert not matches(rule, "ObjectCreated:Put", "in/a.json")


def outbox_event(**extra: object) -> dict[str, object]:
    event = {"seq": 42, "topic": "object.created", "name": "ObjectCreated:Put", "tenant": "t1", "bucket": "bkt",
             "key": "in/a b+c.csv", "version_id": "null", "size": 5, "etag": '"abc"', "created": 1700000000.25}
    event.update(extra)
    return event


def test_s3_event_json_is_what_aws_sends() -> None:
    record = s3_event(outbox_event(), "csv", region="eu-west-1")["Records"][0]
    assert record["eventVersion"] == "2.1" and record["eventSource"] == "aws:s3"
    assert record["awsRegion"] == "eu-west-1" and record["eventName"] == "ObjectCreated:Put"
    assert record["eventTime"] == "2023-11-14T22:13:20.250Z"
    assert record["s3"]["configurationId"] == "csv" and record["s3"]["bucket"]["name"] == "bkt"
    assert record["s3"]["object"] == {"key": "in/a+b%2Bc.csv", "size": 5, "eTag": "abc",
                                      "sequencer": "000000000000002A"}
    removed = s3_event(outbox_event(topic="object.removed", name="ObjectRemoved:Delete", version_id="v7"), "x")
    assert removed["Records"][0]["s3"]["object"] == {"key": "in/a+b%2Bc.csv", "versionId": "v7",
                                                     "sequencer": "000000000000002A"}
    assert sequencer(9) < sequencer(10) < sequencer(255)


def test_routing_fans_out_to_topic_webhooks_actors_and_matching_rules() -> None:
    rules = parse_notification_xml(CONFIG, {"audit", "ops"})
    envelopes = route_outbox(outbox_event(), rules, {"audit": [], "ops": ["object.created"]},
                             [{"name": "indexer", "topics": ["object.created"]}])
    assert [(e.subscription, e.key) for e in envelopes] == [
        ("webhook:ops", "t1/bkt/in/a b+c.csv"), ("actor:indexer", "t1/bkt/in/a b+c.csv"),
        ("webhook:audit", "t1/bkt/in/a b+c.csv")]
    assert envelopes[0].body["topic"] == "object.created" and envelopes[0].body["payload"]["size"] == 5
    assert "Records" in envelopes[2].body
    # a rule naming a webhook the operator has since removed reaches nobody
    assert route_outbox(outbox_event(), rules, {}, []) == []


def test_messages_refuse_unknown_topics_and_oversized_payloads() -> None:
    assert check_topic("config.reloaded") == "config.reloaded"
    with pytest.raises(InvalidArgument, match="unknown event topic 'nope'"):
        Message("nope", "k")
    with pytest.raises(InvalidArgument, match="over the 65536"):
        Message("key.rotated", "k", {"x": "y" * 70_000})
    with pytest.raises(InvalidArgument, match="not JSON"):
        Message("key.rotated", "k", {"x": object()})


def test_signatures_verify_and_refuse_tampering_and_old_timestamps() -> None:
    headers = signed_headers(b"s3cret", b'{"a":1}', now=1000)
    timestamp, signature = headers["X-Dwray-Timestamp"], headers["X-Dwray-Signature"]
    assert signature == sign(b"s3cret", "1000", b'{"a":1}') and signature.startswith("sha256=")
    assert verify(b"s3cret", timestamp, b'{"a":1}', signature, now=1010)
    assert not verify(b"s3cret", timestamp, b'{"a":2}', signature, now=1010)
    assert not verify(b"other", timestamp, b'{"a":1}', signature, now=1010)
    assert not verify(b"s3cret", "1001", b'{"a":1}', signature, now=1010)
    assert not verify(b"s3cret", timestamp, b'{"a":1}', signature, now=2000)
    assert not verify(b"s3cret", "soon", b'{"a":1}', signature)
    with pytest.raises(InvalidArgument, match="must not be empty"):
        sign(b"", "1", b"")


def test_full_jitter_stays_under_a_growing_capped_ceiling() -> None:
    rng = random.Random(7)
    delays = [[full_jitter(attempt, 0.5, 8.0, rng=rng) for _ in range(200)] for attempt in (1, 2, 3, 10, 100)]
    assert all(0 <= d <= 0.5 for d in delays[0]) and max(delays[0]) > 0.3
    assert all(0 <= d <= 1.0 for d in delays[1]) and max(delays[1]) > 0.6
    assert all(0 <= d <= 8.0 for d in delays[3] + delays[4]) and max(delays[4]) > 6


def test_a_webhook_the_operator_gave_some_tenants_is_unknown_to_the_others(tmp_path: Path) -> None:
    """``[events.webhooks.NAME] tenants``: bucket notifications of other tenants cannot name it."""
    from dwray.config_events import EventsConfig
    from dwray.core.warehouse import Warehouse
    from tests.conftest import make_config

    secret = f"secret://file/{tmp_path / 'hook-secret'}"
    events = EventsConfig.model_validate({"webhooks": {
        "shared": {"url": "http://127.0.0.1:9/hook", "secret": secret},
        "acme-only": {"url": "http://127.0.0.1:9/acme", "secret": secret, "tenants": ["acme"]}}})
    config = make_config(tmp_path / "data").model_copy(update={"events": events})
    rule = {"id": "r", "kind": "Queue", "events": ["s3:ObjectCreated:*"], "prefix": "", "suffix": ""}
    with Warehouse(config) as wh:
        for tenant in ("acme", "beta"):  # bucket names are global: one each
            wh.create_bucket(f"{tenant}-reports", tenant=tenant)
            assert wh.set_bucket_notification(f"{tenant}-reports", [{**rule, "webhook": "shared"}], tenant=tenant)
        assert wh.set_bucket_notification("acme-reports", [{**rule, "webhook": "acme-only"}], tenant="acme")
        with pytest.raises(InvalidArgument, match="acme-only"):
            wh.set_bucket_notification("beta-reports", [{**rule, "webhook": "acme-only"}], tenant="beta")
        assert wh.bucket_notification("beta-reports", tenant="beta")[0]["webhook"] == "shared"
        assert wh.bucket_notification("acme-reports", tenant="acme")[0]["webhook"] == "acme-only"
