"""Bucket notification requests are classified as S3 names them; anything else about ``?notification`` is 501."""
from __future__ import annotations

import pytest

from serve_apps.s3_call import classify


@pytest.mark.parametrize(("method", "key", "expected"), [
    ("GET", "", "GetBucketNotificationConfiguration"),
    ("PUT", "", "PutBucketNotificationConfiguration"),
    ("DELETE", "", "Unsupported"),  # S3 has no such operation: an empty configuration removes one
    ("POST", "", "Unsupported"),
    ("GET", "some/key", "Unsupported"),  # never mistaken for GetObject
    ("PUT", "some/key", "Unsupported"),  # nor PutObject (which would store an empty object)
])
def test_notification_requests_are_classified(method: str, key: str, expected: str) -> None:
    assert classify(method, "bkt", key, {"notification": ""}, {}) == expected
