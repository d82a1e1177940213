"""S3's event message format (``Records``, eventVersion 2.1) for bucket notifications.

What AWS sends to an SQS queue or SNS topic, so code written for S3 events reads
dwray's unchanged: the object key is URL-encoded (form encoding, as S3 does), the
ETag unquoted, and ``sequencer`` orders events of one key (the catalog outbox's
``seq``, as fixed-width hex, so a string comparison orders them too).
"""
from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote_plus

__all__ = ["s3_event", "sequencer"]


def sequencer(seq: int) -> str:
    """The ``sequencer`` of the outbox event numbered ``seq``: 16 hex digits, ordered as the numbers."""
    return f"{int(seq):016X}"


def _event_time(created: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(created * 1000) % 1000:03d}Z"


def s3_event(event: dict[str, Any], configuration_id: str, *, region: str = "us-east-1") -> dict[str, Any]:
    """The S3 event message of one outbox ``event`` (``OutboxEvent.as_dict()``) for the rule ``configuration_id``."""
    obj: dict[str, Any] = {"key": quote_plus(event["key"], safe="/"), "sequencer": sequencer(event["seq"])}
    if event["name"].startswith("ObjectCreated:"):
        obj["size"] = event["size"]
        obj["eTag"] = event["etag"].strip('"')
    if event.get("version_id") and event["version_id"] != "null":
        obj["versionId"] = event["version_id"]
    record = {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": region,
        "eventTime": _event_time(event["created"]),
        "eventName": event["name"],
        "userIdentity": {"principalId": event["tenant"]},
        "requestParameters": {},
        "responseElements": {},
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": configuration_id,
            "bucket": {"name": event["bucket"], "ownerIdentity": {"principalId": event["tenant"]},
                       "arn": f"arn:aws:s3:::{event['bucket']}"},
            "object": obj,
        },
    }
    return {"Records": [record]}
