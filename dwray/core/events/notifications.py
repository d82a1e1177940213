"""S3 bucket notification configurations: parsed, validated, rendered and matched.

A tenant configures notifications with S3's PutBucketNotificationConfiguration.
Targets are webhooks the operator declared (``[events.webhooks.NAME]``), named
by the ARN ``arn:dwray:webhook::NAME`` in a ``QueueConfiguration`` or
``TopicConfiguration``: a tenant can never make the server POST to a URL of its
choosing. Lambda and EventBridge targets do not exist here and are refused.

A rule is a plain dict (it is stored as JSON in the catalog and crosses actors):
``{"id", "kind": "Queue"|"Topic", "webhook", "events": [...], "prefix", "suffix"}``.
Bad XML, an unknown ARN, an event S3 does not define or a filter S3 would refuse
is ``InvalidArgument`` naming it (the gateway answers S3's InvalidArgument).
"""
from __future__ import annotations

import secrets
import xml.etree.ElementTree as ET
from collections.abc import Collection, Iterable
from typing import Any

import defusedxml
import defusedxml.ElementTree as DET

from dwray.errors import InvalidArgument

__all__ = ["EVENT_NAMES", "MAX_XML_BYTES", "WEBHOOK_ARN_PREFIX", "matches", "notification_xml",
           "parse_notification_xml", "webhook_arn"]

S3_NAMESPACE = "http://s3.amazonaws.com/doc/2006-03-01/"
WEBHOOK_ARN_PREFIX = "arn:dwray:webhook::"
MAX_XML_BYTES = 64 * 1024
MAX_RULES = 100
#: the S3 event names dwray emits (and their wildcards) a rule may ask for
EVENT_NAMES = frozenset({
    "s3:ObjectCreated:*", "s3:ObjectCreated:Put", "s3:ObjectCreated:Post", "s3:ObjectCreated:Copy",
    "s3:ObjectCreated:CompleteMultipartUpload", "s3:ObjectRemoved:*", "s3:ObjectRemoved:Delete",
    "s3:ObjectRemoved:DeleteMarkerCreated"})
_TARGETS = {"QueueConfiguration": ("Queue", "Queue"), "TopicConfiguration": ("Topic", "Topic")}
_REFUSED = {"CloudFunctionConfiguration": "Lambda function", "LambdaFunctionConfiguration": "Lambda function",
            "EventBridgeConfiguration": "EventBridge"}


def webhook_arn(name: str) -> str:
    """The ARN a notification rule names webhook ``name`` by."""
    return WEBHOOK_ARN_PREFIX + name


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _text(element: ET.Element, name: str) -> str | None:
    found = [child for child in element if _local(child.tag) == name]
    if len(found) > 1:
        raise InvalidArgument(f"a notification rule has more than one {name}")
    return (found[0].text or "").strip() if found else None


def parse_notification_xml(body: bytes, webhooks: Collection[str]) -> list[dict[str, Any]]:
    """The rules of a NotificationConfiguration body whose targets are among ``webhooks`` (their names).

    An empty configuration (no rules) is ``[]``: putting it removes the bucket's notifications.
    """
    if len(body) > MAX_XML_BYTES:
        raise InvalidArgument(f"the notification configuration is over {MAX_XML_BYTES} bytes")
    if not body.strip():
        raise InvalidArgument("the notification configuration is empty: send <NotificationConfiguration/>")
    try:
        root = DET.fromstring(body, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except (ET.ParseError, defusedxml.DefusedXmlException, ValueError) as exc:
        raise InvalidArgument(f"the notification configuration is not well-formed XML: {exc}") from None
    if _local(root.tag) != "NotificationConfiguration":
        raise InvalidArgument(f"the body's root element is {_local(root.tag)!r}, not NotificationConfiguration")
    rules: list[dict[str, Any]] = []
    for element in root:
        tag = _local(element.tag)
        if tag in _REFUSED:
            raise InvalidArgument(f"{_REFUSED[tag]} notification targets ({tag}) are not supported by dwray: "
                                  f"use a QueueConfiguration naming a webhook ({WEBHOOK_ARN_PREFIX}NAME)")
        if tag not in _TARGETS:
            raise InvalidArgument(f"unknown element {tag!r} in NotificationConfiguration")
        rules.append(_rule(element, *_TARGETS[tag], webhooks))
    if len(rules) > MAX_RULES:
        raise InvalidArgument(f"a bucket takes at most {MAX_RULES} notification rules, not {len(rules)}")
    ids = [rule["id"] for rule in rules]
    if len(set(ids)) != len(ids):
        raise InvalidArgument("two notification rules have the same Id")
    return rules


def _rule(element: ET.Element, kind: str, arn_tag: str, webhooks: Collection[str]) -> dict[str, Any]:
    arn = _text(element, arn_tag)
    if not arn:
        raise InvalidArgument(f"a {kind}Configuration has no {arn_tag} ARN")
    name = arn[len(WEBHOOK_ARN_PREFIX):] if arn.startswith(WEBHOOK_ARN_PREFIX) else None
    if name is None or name not in webhooks:
        raise InvalidArgument(f"the {arn_tag} ARN {arn[:200]!r} names no webhook of this warehouse: targets are "
                              f"{WEBHOOK_ARN_PREFIX}NAME with NAME one the operator declared in [events.webhooks]")
    events = [(child.text or "").strip() for child in element if _local(child.tag) == "Event"]
    if not events:
        raise InvalidArgument(f"the {kind}Configuration for {arn!r} names no Event")
    for event in events:
        if event not in EVENT_NAMES:
            raise InvalidArgument(f"the event {event[:100]!r} is not one dwray notifies: "
                                  f"{', '.join(sorted(EVENT_NAMES))}")
    rule_id = _text(element, "Id") or secrets.token_hex(8)
    if len(rule_id) > 255:
        raise InvalidArgument("a notification rule's Id is over 255 characters")
    prefix, suffix = _filter(element)
    return {"id": rule_id, "kind": kind, "webhook": name, "events": sorted(set(events)),
            "prefix": prefix, "suffix": suffix}


def _filter(element: ET.Element) -> tuple[str, str]:
    found: dict[str, str] = {}
    for filter_element in (child for child in element if _local(child.tag) == "Filter"):
        for s3key in (child for child in filter_element if _local(child.tag) == "S3Key"):
            for rule in (child for child in s3key if _local(child.tag) == "FilterRule"):
                name = (_text(rule, "Name") or "").lower()
                if name not in ("prefix", "suffix"):
                    raise InvalidArgument(f"a filter rule's Name must be 'prefix' or 'suffix', not {name[:50]!r}")
                if name in found:
                    raise InvalidArgument(f"a notification rule has two {name} filter rules")
                value = _text(rule, "Value") or ""
                if len(value.encode()) > 1024:
                    raise InvalidArgument(f"a notification rule's {name} is over 1024 bytes")
                found[name] = value
    return found.get("prefix", ""), found.get("suffix", "")


def notification_xml(rules: Iterable[dict[str, Any]]) -> bytes:
    """GetBucketNotificationConfiguration's answer for ``rules`` (an empty configuration for none)."""
    root = ET.Element("NotificationConfiguration", xmlns=S3_NAMESPACE)
    for rule in rules:
        element = ET.SubElement(root, f"{rule['kind']}Configuration")
        ET.SubElement(element, "Id").text = rule["id"]
        ET.SubElement(element, rule["kind"]).text = webhook_arn(rule["webhook"])
        for event in rule["events"]:
            ET.SubElement(element, "Event").text = event
        if rule.get("prefix") or rule.get("suffix"):
            s3key = ET.SubElement(ET.SubElement(element, "Filter"), "S3Key")
            for name in ("prefix", "suffix"):
                if rule.get(name):
                    filter_rule = ET.SubElement(s3key, "FilterRule")
                    ET.SubElement(filter_rule, "Name").text = name
                    ET.SubElement(filter_rule, "Value").text = rule[name]
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def matches(rule: dict[str, Any], event_name: str, key: str) -> bool:
    """Whether ``rule`` asks for S3 event ``event_name`` (``"ObjectCreated:Put"``) of object ``key``."""
    family = event_name.split(":", 1)[0]
    wanted = f"s3:{event_name}" in rule["events"] or f"s3:{family}:*" in rule["events"]
    return wanted and key.startswith(rule.get("prefix", "")) and key.endswith(rule.get("suffix", ""))
